import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  bpffsCovers, cgroup2MountIn, checkPrivileges, effectiveCaps, ensureBpffs, findCgroup2, missingCaps, parseMounts,
} from '../../../mesh-agent/datapath/host-checks.js';
import { CLI } from '../../fixtures/cli.js';
import { privileged } from '../../fixtures/privileged.js';

const HYBRID = `sysfs /sys sysfs rw,nosuid 0 0
tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
bpf /sys/fs/bpf bpf rw 0 0
`;

t.test('cgroup v2 is found wherever /proc/mounts puts it', async (t) => {
  t.equal(cgroup2MountIn(parseMounts(HYBRID)), '/sys/fs/cgroup/unified');
  t.equal(findCgroup2('cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n'), '/sys/fs/cgroup');
  t.equal(cgroup2MountIn(parseMounts('none /mnt/with\\040space cgroup2 rw 0 0\n')), '/mnt/with space');
  t.throws(() => findCgroup2('cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n'), { code: 'SOCKMESH_NO_CGROUP2', message: /no cgroup v2/ });
});

t.test('bpffs coverage of a pin directory', async (t) => {
  const m = parseMounts(HYBRID);
  t.ok(bpffsCovers(m, '/sys/fs/bpf/sockmesh'));
  t.ok(bpffsCovers(m, '/sys/fs/bpf'));
  t.notOk(bpffsCovers(m, '/sys/fs/bpfx/sockmesh'));
  t.notOk(bpffsCovers(parseMounts('sysfs /sys sysfs rw 0 0\n'), '/sys/fs/bpf/sockmesh'));
  t.throws(() => ensureBpffs('/tmp/not-bpffs/sockmesh'), { code: 'SOCKMESH_NO_BPFFS', message: /not on a bpf filesystem/ });
});

t.test('privileges: root or CAP_BPF + CAP_NET_ADMIN', async (t) => {
  t.equal(effectiveCaps('Name:\tnode\nCapEff:\t000001ffffffffff\n'), 0x1ffffffffffn);
  t.same(missingCaps(0x1ffffffffffn), []);
  t.same(missingCaps(0n), ['CAP_BPF', 'CAP_NET_ADMIN']);
  t.same(missingCaps((1n << 39n) | (1n << 12n)), [], 'CAP_BPF + CAP_NET_ADMIN is enough');
  t.same(missingCaps(1n << 21n), ['CAP_NET_ADMIN'], 'CAP_SYS_ADMIN stands in for CAP_BPF');
  t.throws(() => checkPrivileges('CapEff:\t0000000000000000\n'), {
    code: 'SOCKMESH_NOT_PRIVILEGED', message: /lacks CAP_BPF, CAP_NET_ADMIN/,
  });
});

// Privileged: in a private mount namespace without bpffs, the datapath mounts it itself.
t.test('bpffs not mounted: up mounts it, and down cleans up', async (t) => {
  if (!privileged(t)) return;
  const pinDir = '/sys/fs/bpf/sockmesh-test-nobpffs';
  const cgroup = join(findCgroup2(), 'sockmesh-test-nobpffs');
  const script = [
    'umount /sys/fs/bpf',
    'echo "bpffs before: $(grep -c " bpf " /proc/mounts)"',
    `"$0" "$1" up --pin-dir ${pinDir} --cgroup ${cgroup}`,
    'echo "bpffs after: $(grep -c " bpf " /proc/mounts)"',
    `"$0" "$1" down --pin-dir ${pinDir}`,
  ].join(' && ');
  const out = execFileSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, process.execPath, CLI]).toString();
  t.match(out, /bpffs before: 0\n/, 'the namespace had no bpffs');
  t.match(out, /datapath up: pinned in \/sys\/fs\/bpf\/sockmesh-test-nobpffs/, 'up worked');
  t.match(out, /bpffs after: 1\n/, 'up mounted bpffs');
  t.match(out, /datapath down: removed/, 'down worked');
  t.notOk(existsSync(cgroup), 'the cgroup up created is gone');
});
