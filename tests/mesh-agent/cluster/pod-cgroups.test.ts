import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { PodCgroupFinder } from '../../../mesh-agent/cluster/pod-cgroups.js';

t.test('pods found by UID in both kubelet layouts; the tree is scanned again only when due', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'sm-cgroups-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const a = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
  const b = '11111111-2222-3333-4444-555555555555';
  // cgroupfs driver: kubepods/burstable/pod<uid>/<container>
  const pa = join(root, 'kubepods', 'burstable', `pod${a}`);
  mkdirSync(join(pa, 'c0ffee'), { recursive: true });
  // systemd driver: kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-….scope
  const pb = join(root, 'kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${b.replace(/-/g, '_')}.slice`);
  mkdirSync(join(pb, 'cri-containerd-abc.scope'), { recursive: true });
  const f = new PodCgroupFinder({ root, rescanMs: 60_000 });
  t.equal(f.lookup(a), statSync(pa, { bigint: true }).ino, 'cgroupfs layout');
  t.equal(f.lookup(b), statSync(pb, { bigint: true }).ino, 'systemd layout (underscores in the UID)');
  const c = '99999999-8888-7777-6666-555555555555';
  mkdirSync(join(root, 'kubepods', `pod${c}`), { recursive: true });
  t.equal(f.lookup(c), undefined, 'a pod made after the last scan waits for the next one');
  const soon = new PodCgroupFinder({ root, rescanMs: 0 });
  t.equal(soon.lookup(c), statSync(join(root, 'kubepods', `pod${c}`), { bigint: true }).ino, 'which comes once due');
  t.equal(f.peek(c), undefined, 'peek never scans');
  f.scan();
  t.equal(f.peek(c), statSync(join(root, 'kubepods', `pod${c}`), { bigint: true }).ino, 'scan() reads the tree at once');
  t.equal(f.dir(b), pb, 'the directory of a pod found (where its processes are)');
  rmSync(join(root, 'kubepods', `pod${c}`), { recursive: true });
  f.scan();
  t.equal(f.dir(c), undefined, 'a pod whose cgroup went is forgotten by the next scan');
});
