/**
 * What the host must offer before the datapath can come up: privileges,
 * a cgroup v2 hierarchy, bpffs, and a kernel with sockmap and cgroup BPF.
 * Parsers are pure (tested without root); the checks read /proc.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { KernelUnsupportedError, NoBpffsError, NoCgroup2Error, NotPrivilegedError } from '../errors.js';
import { BPF, kernelHasMapType, kernelHasProgType } from './libbpf.js';

export interface MountEntry {
  source: string;
  mountPoint: string;
  fsType: string;
}

/** Parses /proc/mounts text (octal escapes such as \040 decoded). */
export function parseMounts(text: string): MountEntry[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [source = '', mountPoint = '', fsType = ''] = l.split(' ');
      return { source: unescape(source), mountPoint: unescape(mountPoint), fsType };
    });
}

/** The mount point of the first cgroup2 hierarchy, or undefined. */
export function cgroup2MountIn(mounts: MountEntry[]): string | undefined {
  return mounts.find((m) => m.fsType === 'cgroup2')?.mountPoint;
}

/** The cgroup2 mount point on this host; throws a clear error without one. */
export function findCgroup2(mountsText = readFileSync('/proc/mounts', 'utf8')): string {
  const mp = cgroup2MountIn(parseMounts(mountsText));
  if (!mp) {
    throw new NoCgroup2Error(
      'no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/mounts)',
      'mount one: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified',
    );
  }
  return mp;
}

/** True when a bpf filesystem is mounted at dir or at one of its ancestors. */
export function bpffsCovers(mounts: MountEntry[], dir: string): boolean {
  return mounts.some((m) => m.fsType === 'bpf' && (dir === m.mountPoint || dir.startsWith(m.mountPoint.replace(/\/$/, '') + '/')));
}

/**
 * Makes sure the pin directory lives on bpffs: mounts /sys/fs/bpf when it is
 * not mounted (as systemd would), or explains what to do.
 */
export function ensureBpffs(pinDir: string): void {
  if (bpffsCovers(parseMounts(readFileSync('/proc/mounts', 'utf8')), pinDir)) return;
  const root = '/sys/fs/bpf';
  if (!pinDir.startsWith(root + '/')) {
    throw new NoBpffsError(`${pinDir} is not on a bpf filesystem`, `mount one there: mount -t bpf bpf ${pinDir}`);
  }
  try {
    execFileSync('mount', ['-t', 'bpf', 'bpf', root], { stdio: 'pipe' });
  } catch (err) {
    throw new NoBpffsError(
      `bpffs is not mounted at ${root} and mounting it failed: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`,
      `mount it: mount -t bpf bpf ${root}`,
    );
  }
}

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

/** The effective capability set from /proc/self/status text. */
export function effectiveCaps(statusText: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(statusText);
  return m ? BigInt('0x' + m[1]) : 0n;
}

/** Names of the capabilities the datapath needs and this set lacks. */
export function missingCaps(caps: bigint): string[] {
  const has = (c: bigint) => (caps >> c) & 1n;
  const missing: string[] = [];
  if (!has(CAP_BPF) && !has(CAP_SYS_ADMIN)) missing.push('CAP_BPF');
  if (!has(CAP_NET_ADMIN)) missing.push('CAP_NET_ADMIN');
  return missing;
}

/** Throws NotPrivilegedError when this process cannot load and attach BPF. */
export function checkPrivileges(statusText = readFileSync('/proc/self/status', 'utf8')): void {
  const missing = missingCaps(effectiveCaps(statusText));
  if (missing.length > 0) {
    throw new NotPrivilegedError(
      `the datapath needs root or ${missing.join(' + ')}; this process (uid ${process.getuid?.()}) lacks ${missing.join(', ')}`,
      'run mesh-agent as root (sudo mesh-agent ...) or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON',
    );
  }
}

/** Throws KernelUnsupportedError when sockmap, sk_msg, sockops or ring buffers are missing. */
export function checkKernel(): void {
  const lacks: string[] = [];
  if (!kernelHasMapType(BPF.MAP_TYPE_SOCKHASH)) lacks.push('BPF_MAP_TYPE_SOCKHASH (CONFIG_BPF_STREAM_PARSER)');
  if (!kernelHasProgType(BPF.PROG_TYPE_SK_MSG)) lacks.push('BPF_PROG_TYPE_SK_MSG (CONFIG_NET_SOCK_MSG)');
  if (!kernelHasProgType(BPF.PROG_TYPE_SOCK_OPS)) lacks.push('BPF_PROG_TYPE_SOCK_OPS (CONFIG_CGROUP_BPF)');
  if (!kernelHasMapType(BPF.MAP_TYPE_RINGBUF)) lacks.push('BPF_MAP_TYPE_RINGBUF (5.8 or newer)');
  if (lacks.length > 0) {
    throw new KernelUnsupportedError(
      `this kernel lacks ${lacks.join(', ')}`,
      'use a kernel built with CONFIG_BPF_STREAM_PARSER, CONFIG_NET_SOCK_MSG and CONFIG_CGROUP_BPF (5.10 or newer)',
    );
  }
}
