/**
 * The local node runtime: realises pods on this machine for the demo, tests
 * and benchmarks. A pod is a network namespace with an eth0 (one end of a
 * veth pair whose other end sits on a bridge in the runtime's own "node"
 * namespace), an address from 198.18.0.0/16, and a cgroup v2 directory under
 * the mesh's cgroup root; its commands run in both.
 *
 * Everything it creates carries the runtime's prefix, so cleanup() can remove
 * what a crashed run left behind. Pod addresses are one address space per
 * node, as in Kubernetes: runtimes of different prefixes that share a
 * datapath must not hand out the same address (the endpoints map is keyed by
 * address). Nothing is created in the host's network
 * namespace: pods reach each other only through the node namespace's bridge.
 */
import { type ChildProcess, type SpawnOptions, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { InvalidArgumentError, RuntimeError } from '../errors.js';
import { findCgroup2 } from '../datapath/host-checks.js';
import { intToIp, ipToInt } from '../ipv4.js';

const execFileP = promisify(execFile);

/** The pod network: 198.18.0.0/16 (RFC 2544 benchmarking range); the bridge is .0.1. */
export const POD_NETWORK = Object.freeze({ base: '198.18.0.0', prefixLength: 16, gateway: '198.18.0.1' });

export interface NodeRuntimeOptions {
  /**
   * Prefix of every netns, link and cgroup this runtime creates: 1–4
   * lowercase letters or digits. cleanup() of one prefix never touches
   * another's pods. Default: "sm".
   */
  prefix?: string;
  /** cgroup v2 directory holding the pods' cgroups. Default: `<cgroup2 mount>/sockmesh`. */
  cgroupRoot?: string;
}

export interface PodInfo {
  name: string;
  ip: string;
  netns: string;
  cgroup: string;
}

const POD_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Whether ip is a usable pod address (inside 198.18.0.0/16, not network, gateway or broadcast). */
export function isPodAddress(ip: string): boolean {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) || ip.split('.').some((o) => Number(o) > 255)) return false;
  const n = ipToInt(ip);
  const base = ipToInt(POD_NETWORK.base);
  const size = 2 ** (32 - POD_NETWORK.prefixLength);
  return n > base + 1 && n < base + size - 1;
}

/** The lowest free pod address, given the ones in use. */
export function nextPodAddress(used: Iterable<string>): string {
  const taken = new Set(used);
  const base = ipToInt(POD_NETWORK.base);
  for (let n = base + 2; n < base + 2 ** (32 - POD_NETWORK.prefixLength) - 1; n++) {
    const ip = intToIp(n);
    if (!taken.has(ip)) return ip;
  }
  throw new RuntimeError('the pod network 198.18.0.0/16 is full');
}

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new RuntimeError(`${cmd} ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`, undefined, { cause: err });
  }
}

function cgroupPopulated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

export class NodeRuntime {
  readonly prefix: string;
  readonly #cgroupRootOpt: string | undefined;
  #cgroupRoot: string | undefined;

  constructor(opts: NodeRuntimeOptions = {}) {
    const prefix = opts.prefix ?? 'sm';
    if (!/^[a-z0-9]{1,4}$/.test(prefix)) {
      throw new InvalidArgumentError(`runtime prefix must be 1-4 lowercase letters or digits, got ${JSON.stringify(prefix)}`);
    }
    if (opts.cgroupRoot !== undefined && !opts.cgroupRoot.startsWith('/')) {
      throw new InvalidArgumentError(`cgroupRoot must be absolute, got ${opts.cgroupRoot}`);
    }
    this.prefix = prefix;
    this.#cgroupRootOpt = opts.cgroupRoot;
  }

  /** The cgroup directory holding the pods (the datapath attaches here). */
  get cgroupRoot(): string {
    this.#cgroupRoot ??= this.#cgroupRootOpt ?? join(findCgroup2(), 'sockmesh');
    return this.#cgroupRoot;
  }

  get nodeNetns(): string {
    return `${this.prefix}-node`;
  }

  get bridge(): string {
    return `${this.prefix}br0`;
  }

  podNetns(name: string): string {
    return `${this.prefix}-pod-${name}`;
  }

  podCgroup(name: string): string {
    return join(this.cgroupRoot, `${this.prefix}-pod-${name}`);
  }

  /** The node-side end of a pod's veth (in the node namespace): where the anti-spoof guard sits. */
  hostVeth(name: string): string {
    return this.#vethNames(name).node;
  }

  #vethNames(name: string): { node: string; pod: string } {
    const h = createHash('sha256').update(`${this.prefix}/${name}`).digest('hex').slice(0, 8);
    return { node: `${this.prefix}v${h}`, pod: `${this.prefix}p${h}` };
  }

  async #netnsList(): Promise<string[]> {
    const out = await run('ip', ['netns', 'list']);
    return out.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
  }

  /** Creates the node namespace and its bridge, if absent. Idempotent. */
  async start(): Promise<void> {
    const ns = this.nodeNetns;
    mkdirSync(this.cgroupRoot, { recursive: true });
    if (!(await this.#netnsList()).includes(ns)) {
      await run('ip', ['netns', 'add', ns]);
    }
    const links = await run('ip', ['-n', ns, '-o', 'link', 'show']);
    if (!links.includes(` ${this.bridge}:`)) {
      await run('ip', ['-n', ns, 'link', 'add', this.bridge, 'type', 'bridge']);
      await run('ip', ['-n', ns, 'addr', 'add', `${POD_NETWORK.gateway}/${POD_NETWORK.prefixLength}`, 'dev', this.bridge]);
    }
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', this.bridge, 'up']);
  }

  /** Pods of this runtime that exist now, with their addresses. */
  async pods(): Promise<PodInfo[]> {
    const prefix = `${this.prefix}-pod-`;
    const names = (await this.#netnsList()).filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length));
    const out: PodInfo[] = [];
    for (const name of names.sort()) {
      const ns = this.podNetns(name);
      let ip = '';
      try {
        const j = JSON.parse(await run('ip', ['-n', ns, '-j', '-4', 'addr', 'show', 'dev', 'eth0'])) as
          { addr_info?: { local?: string }[] }[];
        ip = j[0]?.addr_info?.[0]?.local ?? '';
      } catch {
        ip = ''; // half-created pod: listed without an address, cleanup() removes it
      }
      out.push({ name, ip, netns: ns, cgroup: this.podCgroup(name) });
    }
    return out;
  }

  /**
   * Creates a pod. With the same name and address already present it does
   * nothing; a half-created pod of that name is removed first.
   */
  async addPod(name: string, opts: { ip?: string } = {}): Promise<PodInfo> {
    if (!POD_NAME.test(name)) {
      throw new InvalidArgumentError(`pod name ${JSON.stringify(name)} is not a DNS label (a-z, 0-9, '-', at most 63)`);
    }
    if (opts.ip !== undefined && !isPodAddress(opts.ip)) {
      throw new InvalidArgumentError(`pod address ${opts.ip} is outside 198.18.0.2-198.18.255.254`);
    }
    await this.start();
    const existing = await this.pods();
    const same = existing.find((p) => p.name === name);
    if (same && same.ip && (opts.ip === undefined || opts.ip === same.ip)) return same;
    if (same) await this.removePod(name);
    const clash = existing.find((p) => p.name !== name && p.ip === opts.ip);
    if (clash) throw new InvalidArgumentError(`address ${opts.ip} is already pod ${clash.name}'s`);
    const ip = opts.ip ?? nextPodAddress(existing.map((p) => p.ip));
    const ns = this.podNetns(name);
    const veth = this.#vethNames(name);
    try {
      await run('ip', ['netns', 'add', ns]);
      await run('ip', ['link', 'add', veth.node, 'netns', this.nodeNetns, 'type', 'veth', 'peer', 'name', veth.pod, 'netns', ns]);
      await run('ip', ['-n', this.nodeNetns, 'link', 'set', veth.node, 'master', this.bridge, 'up']);
      await run('ip', ['-n', ns, 'link', 'set', veth.pod, 'name', 'eth0']);
      await run('ip', ['-n', ns, 'addr', 'add', `${ip}/${POD_NETWORK.prefixLength}`, 'dev', 'eth0']);
      await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', POD_NETWORK.gateway]);
      mkdirSync(this.podCgroup(name), { recursive: true });
    } catch (err) {
      await this.removePod(name).catch(() => undefined);
      throw err;
    }
    return { name, ip, netns: ns, cgroup: this.podCgroup(name) };
  }

  /**
   * Runs argv inside the pod: in its network namespace (through `ip netns
   * exec`, so /etc/netns/<netns>/ files apply) and in its cgroup, which the
   * process joins before it enters the namespace, so every socket it opens
   * belongs to the pod.
   */
  exec(name: string, argv: string[], options: SpawnOptions = {}): ChildProcess {
    if (argv.length === 0) throw new InvalidArgumentError('exec needs a command');
    const procs = join(this.podCgroup(name), 'cgroup.procs');
    if (!existsSync(procs)) throw new RuntimeError(`pod ${name} does not exist (no ${this.podCgroup(name)})`);
    // join the cgroup first: `ip netns exec` mounts a fresh /sys, hiding the cgroup tree
    return spawn(
      'sh',
      ['-c', 'echo $$ > "$0" && exec ip netns exec "$@"', procs, this.podNetns(name), ...argv],
      options,
    );
  }

  /**
   * Starts argv in the pod as a process of its own session that outlives
   * this one (a pod's main process: the agent may restart while it runs),
   * with stdout and stderr appended to logPath. Resolves with the child
   * (its 'exit' fires while this process lives).
   */
  spawnDetached(name: string, argv: string[], logPath: string, cwd?: string): ChildProcess {
    mkdirSync(dirname(logPath), { recursive: true });
    const fd = openSync(logPath, 'a');
    try {
      const child = this.exec(name, argv, { detached: true, stdio: ['ignore', fd, fd], ...(cwd !== undefined && { cwd }) });
      child.unref();
      return child;
    } finally {
      closeSync(fd);
    }
  }

  /** The cgroup of a node process (the node proxy): under the pods' root, so the datapath sees its sockets. */
  nodeProcessCgroup(name: string): string {
    return join(this.cgroupRoot, `${this.prefix}-${name}`);
  }

  /**
   * Starts a node process (the node proxy) in the node namespace, where the
   * bridge is (the pods' gateway address), in a cgroup of its own under the
   * pods' root; detached, logging to logPath.
   */
  spawnInNode(name: string, argv: string[], logPath: string): ChildProcess {
    const cg = this.nodeProcessCgroup(name);
    mkdirSync(cg, { recursive: true });
    mkdirSync(dirname(logPath), { recursive: true });
    const fd = openSync(logPath, 'a');
    try {
      const child = spawn('sh', ['-c', 'echo $$ > "$0" && exec ip netns exec "$@"', join(cg, 'cgroup.procs'), this.nodeNetns, ...argv], {
        detached: true, stdio: ['ignore', fd, fd],
      });
      child.unref();
      return child;
    } finally {
      closeSync(fd);
    }
  }

  /** Whether a node process runs. */
  nodeProcessRunning(name: string): boolean {
    return cgroupPopulated(this.nodeProcessCgroup(name));
  }

  /** Signals every process of a node process's cgroup; with SIGKILL, waits until they are gone and removes the cgroup. */
  async stopNodeProcess(name: string, signal: 'SIGTERM' | 'SIGKILL', waitMs = 5000): Promise<boolean> {
    const cg = this.nodeProcessCgroup(name);
    if (!existsSync(cg)) return true;
    for (const pid of readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), signal);
      } catch {
        // gone meanwhile
      }
    }
    for (let i = 0; i < waitMs / 20 && cgroupPopulated(cg); i++) await sleep(20);
    if (cgroupPopulated(cg)) return false;
    await this.#removeCgroup(cg);
    return true;
  }

  /** Whether any process runs in the pod's cgroup (zombies not yet reaped count). */
  podRunning(name: string): boolean {
    return cgroupPopulated(this.podCgroup(name));
  }

  /** Kills every process of the pod (the pod itself stays). */
  async killPodProcesses(name: string): Promise<void> {
    const dir = this.podCgroup(name);
    if (!existsSync(dir)) return;
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    for (let i = 0; i < 300 && this.podRunning(name); i++) await sleep(10);
  }

  /** The pod's cgroup id (its directory's inode number), as BPF sees it. */
  podCgroupId(name: string): bigint {
    return statSync(this.podCgroup(name), { bigint: true }).ino;
  }

  /**
   * Writes the pod's /etc/hosts (what \`ip netns exec\` mounts over the host's).
   * Rewritten in place, never replaced: processes already running see the
   * file they were started with, so it must stay the same inode.
   */
  writePodHosts(name: string, content: string): void {
    const dir = join('/etc/netns', this.podNetns(name));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'hosts'), content);
  }

  /** Runs argv in the pod to completion; resolves with its stdout, rejects on a non-zero exit. */
  async execOutput(name: string, argv: string[], opts: { input?: Buffer | string; timeoutMs?: number } = {}): Promise<Buffer> {
    const child = this.exec(name, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    const [code, signal] = (await new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c, s) => resolve([c, s]));
    })) as [number | null, NodeJS.Signals | null];
    if (timer) clearTimeout(timer);
    if (code !== 0) {
      throw new RuntimeError(`in pod ${name}, ${argv.join(' ')} exited with ${code ?? signal}: ${Buffer.concat(err).toString().trim()}`);
    }
    return Buffer.concat(out);
  }

  /** Kills the pod's processes and removes its cgroup, netns and veth. Idempotent. */
  async removePod(name: string): Promise<void> {
    await this.#removeCgroup(this.podCgroup(name));
    if ((await this.#netnsList()).includes(this.podNetns(name))) {
      await run('ip', ['netns', 'del', this.podNetns(name)]);
    }
    rmSync(join('/etc/netns', this.podNetns(name)), { recursive: true, force: true });
  }

  async #removeCgroup(dir: string): Promise<void> {
    if (!existsSync(dir)) return;
    // killed processes leave cgroup.procs at once, but keep the cgroup populated until their parent reaps them
    const populated = () => /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
    if (populated()) {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
      for (let i = 0; i < 300 && populated(); i++) await sleep(10);
    }
    for (let i = 0; ; i++) {
      try {
        rmdirSync(dir);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EBUSY' && i < 100) {
          await sleep(20);
          continue;
        }
        throw new RuntimeError(`cannot remove cgroup ${dir}: ${(err as Error).message}`, 'some process in it did not exit');
      }
    }
  }

  /**
   * Removes every pod, the bridge and the node namespace of this prefix,
   * including leftovers of a crashed run. Idempotent.
   */
  async cleanup(): Promise<void> {
    const ours = (await this.#netnsList()).filter((n) => n.startsWith(`${this.prefix}-pod-`));
    for (const ns of ours) await this.removePod(ns.slice(`${this.prefix}-pod-`.length));
    if (existsSync(this.cgroupRoot)) {
      for (const d of readdirSync(this.cgroupRoot)) {
        if (d.startsWith(`${this.prefix}-`)) await this.#removeCgroup(join(this.cgroupRoot, d)); // pods and node processes
      }
    }
    if ((await this.#netnsList()).includes(this.nodeNetns)) await run('ip', ['netns', 'del', this.nodeNetns]);
    this.removeCgroupRootIfEmpty();
  }

  /**
   * Removes the pods' cgroup root when no pod and no BPF program is in it.
   * (The kernel would let it go with programs attached, silently detaching
   * the datapath, so attached programs keep it.)
   */
  removeCgroupRootIfEmpty(): void {
    if (!existsSync(this.cgroupRoot)) return;
    try {
      const attached = JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', this.cgroupRoot]).toString().trim() || '[]') as unknown[];
      if (attached.length > 0) return;
      rmdirSync(this.cgroupRoot);
    } catch {
      // not empty, or bpftool could not tell: left alone
    }
  }
}
