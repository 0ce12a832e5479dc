import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { type IpLink, netnsOfCgroupDir, nodeEnd, podEnd } from '../../../mesh-agent/cluster/pod-veth.js';

// what `ip -j -d addr show` prints, trimmed: a pod with a veth to the node (bridged or routed CNI)
const podLinks: IpLink[] = [
  { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1' }] },
  { ifindex: 2, ifname: 'eth0', link_index: 17, link_netnsid: 0, linkinfo: { info_kind: 'veth' }, addr_info: [{ family: 'inet', local: '198.18.0.7' }, { family: 'inet6', local: 'fe80::1' }] },
];
const nodeLinks: IpLink[] = [
  { ifindex: 1, ifname: 'lo' },
  { ifindex: 5, ifname: 'cni0', linkinfo: { info_kind: 'bridge' }, addr_info: [{ family: 'inet', local: '198.18.0.1' }] },
  { ifindex: 16, ifname: 'veth1111', link_index: 2, link_netnsid: 3, linkinfo: { info_kind: 'veth' } },
  { ifindex: 17, ifname: 'veth2222', link_index: 2, link_netnsid: 4, linkinfo: { info_kind: 'veth' } },
];

t.test('the pod\'s end is the veth holding its address; the node\'s end is the peer index', async (t) => {
  const pod = podEnd(podLinks, '198.18.0.7');
  t.match(pod, { ifname: 'eth0', link_index: 17 });
  t.match(nodeEnd(nodeLinks, pod as IpLink), { ifname: 'veth2222' }, 'by index, not by the route (which names the bridge)');
});

t.test('each way of not finding it says why', async (t) => {
  t.match(podEnd(podLinks, '198.18.0.8'), /no interface in the pod's namespace holds 198\.18\.0\.8/);
  t.match(podEnd([{ ifindex: 2, ifname: 'eth0', linkinfo: { info_kind: 'ipvlan' }, addr_info: [{ family: 'inet', local: '198.18.0.7' }] }], '198.18.0.7'), /eth0, which holds 198\.18\.0\.7, is not a veth \(ipvlan\)/);
  t.match(podEnd([{ ifindex: 2, ifname: 'eth0', link_index: 3, linkinfo: { info_kind: 'veth' }, addr_info: [{ family: 'inet', local: '198.18.0.7' }] }], '198.18.0.7'), /peer is in the pod's own namespace/);
  const pod = podEnd(podLinks, '198.18.0.7') as IpLink;
  t.match(nodeEnd(nodeLinks.filter((l) => l.ifindex !== 17), pod), /index 17\) is not in the node's namespace/);
  t.match(nodeEnd([{ ifindex: 17, ifname: 'dummy0', linkinfo: { info_kind: 'dummy' } }], pod), /index 17 in the node's namespace \(dummy0\) is not the peer/);
});

t.test('the pod\'s namespace is a running process\'s, found in the pod cgroup or a container below it', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'sm-podveth-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const cg = join(root, 'cg', 'pod1');
  mkdirSync(join(cg, 'ctr'), { recursive: true });
  writeFileSync(join(cg, 'cgroup.procs'), '');
  writeFileSync(join(cg, 'ctr', 'cgroup.procs'), '41\n42\n');
  const proc = join(root, 'proc');
  mkdirSync(join(proc, '42', 'ns'), { recursive: true });
  symlinkSync('/proc/self/ns/net', join(proc, '42', 'ns', 'net'));
  t.equal(netnsOfCgroupDir(cg, proc), join(proc, '42', 'ns', 'net'), 'process 41 has exited; 42 in the container\'s cgroup is taken');
  writeFileSync(join(cg, 'ctr', 'cgroup.procs'), '');
  t.equal(netnsOfCgroupDir(cg, proc), undefined, 'no process yet: none');
  t.equal(netnsOfCgroupDir(join(root, 'gone'), proc), undefined, 'a cgroup gone: none');
});
