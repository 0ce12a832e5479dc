/* Privileged: the agent with the Kubernetes API as its cluster source (a stand-in API server; no cluster runs here). */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Agent } from '../../mesh-agent/agent.js';
import { decodeBackend, decodeCgroupId, decodeEndpoint, decodeService, decodeServiceKey } from '../../mesh-agent/datapath/layout.js';
import { helperBinary, repoRoot } from '../../mesh-agent/paths.js';
import { FakeKubeApi } from '../fixtures/fake-kube-api.js';
import { TEST_PIN_DIR, agentEndpoints, testCgroupRoot, testMesh } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';

const pod = (name: string, ip: string, node: string) => ({
  metadata: { name, namespace: 'shop', labels: { app: 'web' } },
  spec: { nodeName: node, containers: [{ name: 'web', image: 'web:1', ports: [{ name: 'http', containerPort: 8080 }] }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});

/** An agent on node-a with the stand-in API as its source; stopped, with the API, at the end. */
async function kubeAgent(t: Test, api: FakeKubeApi, kubernetes: { nodeNetns?: string } = {}): Promise<Agent> {
  const dir = mkdtempSync(join(tmpdir(), 'sm-kube-'));
  const agent = new Agent({
    kubernetes: { kubeConfig: api.kubeConfig(), ...kubernetes }, datapath: { pinDir: TEST_PIN_DIR, cgroupPath: testCgroupRoot() },
    ...agentEndpoints(dir), nodeName: 'node-a',
  });
  await agent.start();
  t.teardown(async () => { await agent.stop(); await api.stop(); rmSync(dir, { recursive: true, force: true }); });
  return agent;
}

/** The stand-in API with namespace shop in the mesh, a client pod (by UID) and a web pod, both on node-a. */
async function shopApi(client: { ip: string; uid: string }, webIp: string): Promise<FakeKubeApi> {
  const api = new FakeKubeApi();
  await api.start();
  api.put('/api/v1/namespaces', { metadata: { name: 'shop', annotations: { 'sockmesh.io/enabled': 'true' } } });
  api.put('/api/v1/pods', { ...pod('client', client.ip, 'node-a'), metadata: { name: 'client', namespace: 'shop', uid: client.uid, labels: { app: 'client' } } });
  api.put('/api/v1/pods', pod('web', webIp, 'node-a'));
  return api;
}

/**
 * Where the kubelet (cgroupfs driver) puts a pod: the directory's path, not
 * made yet. At the end (and now, for a crashed run's) its processes are
 * killed (cgroup.kill) and the directories removed once empty.
 */
async function kubeletCgroup(t: Test, qos: string, uid: string): Promise<string> {
  const podCg = join(testCgroupRoot(), 'kubepods', qos, `pod${uid}`);
  const remove = async () => {
    try { writeFileSync(join(podCg, 'cgroup.kill'), '1'); } catch { /* not there */ }
    for (let i = 0; i < 40 && existsSync(podCg); i++) {
      for (const d of [join(podCg, 'ctr'), podCg]) try { rmdirSync(d); } catch { /* busy or gone */ }
      if (existsSync(podCg)) await sleep(25);
    }
    for (const d of [join(podCg, '..'), join(podCg, '..', '..')]) try { rmdirSync(d); } catch { /* busy or gone */ }
  };
  await remove();
  t.teardown(remove);
  return podCg;
}

if (privileged(t)) {
  t.test('pods, services and EndpointSlices from the API reach the maps', async (t) => {
    const { datapath } = await testMesh(t);
    const api = new FakeKubeApi();
    await api.start();
    api.put('/api/v1/namespaces', { metadata: { name: 'shop', annotations: { 'sockmesh.io/enabled': 'true' } } });
    api.put('/api/v1/pods', pod('web-1', '10.244.0.5', 'node-a'));
    api.put('/api/v1/pods', pod('web-2', '10.244.1.5', 'node-b'));
    api.put('/api/v1/services', { metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } });
    api.put('/apis/discovery.k8s.io/v1/endpointslices', {
      metadata: { name: 'web-x', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: ['10.244.0.5'], conditions: { ready: true } }, { addresses: ['10.244.1.5'], conditions: { ready: true } }],
    });
    const agent = await kubeAgent(t, api);
    const dp = datapath();
    dp.adopt();
    t.teardown(() => dp.stop());
    const services = () => dp.entries('sm_services').map(([k, v]) => ({ ...decodeServiceKey(k), ...decodeService(v) }));
    for (let i = 0; i < 100 && services().length === 0; i++) await sleep(50);
    t.match(services(), [{ vip: '10.96.0.10', port: 80, count: 2, flags: 0 }], 'the cluster\'s clusterIP, both ready endpoints, enrolled clients only (kube-proxy serves the rest)');
    t.same(dp.entries('sm_backends').map(([, v]) => decodeBackend(v).ip).sort(), ['10.244.0.5', '10.244.1.5'], 'backends from the EndpointSlice, on any node');
    const pods = agent.status().cluster!.pods;
    t.match(pods, [{ key: 'shop/web-1', enrolled: true }, { key: 'shop/web-2', enrolled: false, reason: 'not on this node (on node-b)' }]);
    const src = agent.status().cluster!.source;
    t.match(src, { kind: 'kubernetes', server: `http://127.0.0.1:${api.port}` });
    api.delete('/api/v1/services', 'web', 'shop');
    for (let i = 0; i < 100 && services().length > 0; i++) await sleep(50);
    t.same(services(), [], 'a deleted service leaves the maps');
  });
}

if (privileged(t)) {
  t.test('a process in a kubelet-style pod cgroup is seen as its pod: its VIP connects are balanced in the kernel', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const srv = await rt.addPod('srv');
    const cli = await rt.addPod('cli');
    const uid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
    // the pod's cgroup as the kubelet makes it, and its container below
    const podCg = await kubeletCgroup(t, 'burstable', uid);
    mkdirSync(join(podCg, 'ctr'), { recursive: true });
    const api = await shopApi({ ip: cli.ip, uid }, srv.ip);
    api.put('/api/v1/services', { metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '198.19.0.50', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } });
    api.put('/apis/discovery.k8s.io/v1/endpointslices', {
      metadata: { name: 'web-x', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4',
      ports: [{ name: 'http', port: 7000, protocol: 'TCP' }], endpoints: [{ addresses: [srv.ip], conditions: { ready: true } }],
    });
    await kubeAgent(t, api);
    const server = rt.exec('srv', [process.execPath, join(repoRoot(), 'tests', 'fixtures', 'svc-peer.mjs'), 'serve', '7000', 'web'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise((r) => server.stderr!.once('data', r));
    const dp = datapath();
    dp.adopt();
    t.teardown(() => dp.stop());
    const podCgId = statSync(podCg, { bigint: true }).ino;
    for (let i = 0; i < 100 && !dp.entries('sm_cgroups').some(([k]) => decodeCgroupId(k) === podCgId); i++) await sleep(50);
    const entry = dp.entries('sm_cgroups').find(([k]) => decodeCgroupId(k) === podCgId);
    t.ok(entry, 'the pod\'s cgroup, found by its UID, is in sm_cgroups');
    t.equal(entry && decodeEndpoint(entry[1]).flags, dp.layout.cgroupEnrolledFlag, 'as enrolled');
    const before = dp.counters();
    // the container's process: in the pod cgroup's child, in the pod's network namespace
    const out = execFileSync('sh', ['-c', 'echo $$ > "$0" && exec ip netns exec "$@"', join(podCg, 'ctr', 'cgroup.procs'), rt.podNetns('cli'),
      process.execPath, join(repoRoot(), 'tests', 'fixtures', 'svc-peer.mjs'), 'dial', '198.19.0.50', '80', '3', '2000'], { encoding: 'utf8', timeout: 30_000 });
    const replies = out.trim().split('\n').map((l) => JSON.parse(l) as { peer?: string; reply?: string });
    t.ok(replies.every((r) => r.reply?.startsWith('web ') && r.peer === '198.19.0.50:80'), 'the VIP reached the backend, and getpeername shows the VIP');
    const after = dp.counters();
    t.equal(after.svc_translated! - before.svc_translated!, 3, 'translated in the kernel: the process counts as its pod, one cgroup level up');
    t.equal(after.sock_inserted! - before.sock_inserted!, 6, 'and short-circuited (both pods enrolled)');
  });
}

if (privileged(t)) {
  t.test('Kubernetes mode: a pod whose cgroup comes after the API told of it becomes enrolled and guarded; its forged frames are dropped at the CNI\'s veth', async (t) => {
    // the local runtime plays the CNI (a netns and a veth on a bridge per pod); the kubelet's cgroup is made by hand, late
    const { rt, datapath } = await testMesh(t);
    const srv = await rt.addPod('srv');
    const cli = await rt.addPod('cli');
    const uid = '5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d';
    const podCg = await kubeletCgroup(t, 'besteffort', uid);
    const api = await shopApi({ ip: cli.ip, uid }, srv.ip);
    const agent = await kubeAgent(t, api, { nodeNetns: `/run/netns/${rt.nodeNetns}` });
    const dp = datapath();
    dp.adopt();
    t.teardown(() => dp.stop());
    const unguarded = () => agent.status().cluster!.policies.kernel?.unguarded ?? [];
    for (let i = 0; i < 100 && !unguarded().some((u) => u.startsWith('shop/client:')); i++) await sleep(50);
    t.match(unguarded(), [/^shop\/client: the kubelet's cgroup for it is not found yet/], 'status: the pod the API told of, not yet found in the cgroup tree');
    t.same(dp.guards(), [], 'no guard yet');

    // the kubelet makes the pod's cgroup and starts its sandbox in the CNI's namespace
    mkdirSync(join(podCg, 'ctr'), { recursive: true });
    const t0 = performance.now();
    // (ended by the cgroup's removal at the end)
    spawn('sh', ['-c', 'echo $$ > "$0" && exec ip netns exec "$1" sleep 120', join(podCg, 'ctr', 'cgroup.procs'), rt.podNetns('cli')], { stdio: 'ignore' });
    const podCgId = statSync(podCg, { bigint: true }).ino;
    const enrolled = () => dp.entries('sm_cgroups').some(([k]) => decodeCgroupId(k) === podCgId);
    const guarded = () => dp.guards().find((g) => g.ifname === rt.hostVeth('cli'));
    for (let i = 0; i < 200 && !(enrolled() && guarded()); i++) await sleep(25);
    const ms = performance.now() - t0;
    t.ok(enrolled(), `the pod's cgroup is in sm_cgroups without any change in the API (${ms.toFixed(0)} ms after the cgroup was made)`);
    t.match(guarded(), { ifname: rt.hostVeth('cli'), ip: cli.ip }, 'a guard on the node-side end of the pod\'s veth, found from inside the pod, allowing only its address');
    t.same(unguarded(), [], 'status: nothing unguarded');
    t.equal(agent.status().cluster!.policies.kernel?.guards, 1, 'status counts it');

    const probe = (argv: string[]) => execFileSync('ip', ['netns', 'exec', rt.podNetns('cli'), helperBinary('smprobe'), ...argv], { encoding: 'utf8', timeout: 10_000 }).trim();
    const srvMac = (JSON.parse(execFileSync('ip', ['-n', rt.podNetns('srv'), '-j', 'link', 'show', 'eth0'], { encoding: 'utf8' })) as { address: string }[])[0]!.address;
    let before = dp.counters();
    t.match(probe(['spoof-frame', 'eth0', srvMac, cli.ip, srv.ip, '7001']), /^sent /, 'control: a frame with the pod\'s own address');
    await sleep(200);
    t.equal((dp.counters().pol_guard_dropped ?? 0) - (before.pol_guard_dropped ?? 0), 0, 'passes the guard');
    before = dp.counters();
    t.match(probe(['spoof-frame', 'eth0', srvMac, '198.18.255.253', srv.ip, '7001']), /^sent /, 'AF_PACKET sends a frame claiming another address');
    for (let i = 0; i < 100 && (dp.counters().pol_guard_dropped ?? 0) === (before.pol_guard_dropped ?? 0); i++) await sleep(20);
    t.equal((dp.counters().pol_guard_dropped ?? 0) - (before.pol_guard_dropped ?? 0), 1, 'dropped by the guard on the CNI\'s veth');

    api.delete('/api/v1/pods', 'client', 'shop');
    for (let i = 0; i < 100 && guarded(); i++) await sleep(50);
    t.notOk(guarded(), 'the pod deleted from the API: its guard is detached');
  });
}
