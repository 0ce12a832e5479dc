/* Privileged: socket-level service load balancing in the kernel, through the reconciler. */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { DesiredState, ServiceFrontend } from '../../../mesh-agent/compiler/compile.js';
import { encodeCgroupId, encodePolicySubject } from '../../../mesh-agent/datapath/layout.js';
import { repoRoot } from '../../../mesh-agent/paths.js';
import { MapReconciler } from '../../../mesh-agent/reconciler/map-reconciler.js';
import type { NodeRuntime } from '../../../mesh-agent/runtime/node-runtime.js';
import { testMesh } from '../../fixtures/mesh.js';
import { privileged } from '../../fixtures/privileged.js';

const PEER = join(repoRoot(), 'tests', 'fixtures', 'svc-peer.mjs');

async function serve(rt: NodeRuntime, pod: string, port: number): Promise<void> {
  const child = rt.exec(pod, [process.execPath, PEER, 'serve', String(port), pod], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    child.stderr!.once('data', () => resolve());
    child.once('close', (c) => reject(new Error(`server in ${pod} exited ${c}`)));
  });
}

async function dial(rt: NodeRuntime, pod: string, host: string, port: number, count: number, timeoutMs = 2000): Promise<{ peer?: string; reply?: string; error?: string }[]> {
  const out = await rt.execOutput(pod, [process.execPath, PEER, 'dial', host, String(port), String(count), String(timeoutMs)], { timeoutMs: 60_000 });
  return out.toString().trim().split('\n').map((l) => JSON.parse(l) as { peer?: string; reply?: string; error?: string });
}

const VIP = '198.19.0.10';

if (privileged(t)) {
  t.test('connect to a VIP reaches a ready backend, short-circuited; getpeername shows the VIP', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const [a, b, c, d] = [await rt.addPod('a'), await rt.addPod('b'), await rt.addPod('c'), await rt.addPod('d')];
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    const r = new MapReconciler(dp, { endpointEnrolled: dp.layout.endpointEnrolledFlag, cgroupEnrolled: dp.layout.cgroupEnrolledFlag, serviceAnyClient: dp.layout.serviceAnyClientFlag });
    const cg = (pod: string) => statSync(rt.podCgroup(pod), { bigint: true }).ino;
    const fe = (vip: string, port: number, ips: string[], anyClient = true): ServiceFrontend => ({ vip, port, anyClient, service: 'test', backends: ips.map((ip) => ({ ip, port: 7000 })) });
    const state = (frontends: ServiceFrontend[]): DesiredState => ({
      endpoints: new Map<string, { identity: number; enrolled: boolean }>([
        ...[a, b, c].map((p) => [p.ip, { identity: 300, enrolled: true }] as [string, { identity: number; enrolled: boolean }]),
        [d.ip, { identity: 301, enrolled: false }],
      ]),
      cgroups: new Map([[cg('a'), { identity: 300, enrolled: true }], [cg('d'), { identity: 301, enrolled: false }]]),
      services: new Map(frontends.map((f) => [`${f.vip}:${f.port}`, f])), pods: [], serviceViews: [],
    });
    await serve(rt, 'b', 7000);
    await serve(rt, 'c', 7000);
    r.reconcile(state([fe(VIP, 80, [b.ip, c.ip]), fe('198.19.0.11', 80, [b.ip], false)]));
    const before = dp.counters();
    const replies = await dial(rt, 'a', VIP, 80, 40);
    t.ok(replies.every((x) => x.peer === `${VIP}:80`), 'getpeername() reports the VIP the client dialled');
    const names = replies.map((x) => x.reply?.split(' ')[0]);
    t.ok(names.every((n) => n === 'b' || n === 'c'), 'every connect reached a backend');
    t.ok(names.includes('b') && names.includes('c'), `spread over both: b ${names.filter((n) => n === 'b').length}, c ${names.filter((n) => n === 'c').length}`);
    t.ok(replies.every((x) => x.reply?.endsWith(` ${a.ip}`)), 'backends see the client\'s own address (no NAT)');
    const after = dp.counters();
    t.equal(after.svc_translated! - before.svc_translated!, 40, '40 connects translated in the kernel');
    t.equal(after.sock_inserted! - before.sock_inserted!, 80, 'and every one short-circuited (2 sockets each)');
    t.ok(after.bytes_redirected! > before.bytes_redirected!, 'bytes took the redirect');

    // a dual-stack client (an AF_INET6 socket, as Java's are by default) dials ::ffff:VIP: connect6 translates it
    const mapped = await dial(rt, 'a', `::ffff:${VIP}`, 80, 10);
    t.ok(mapped.every((x) => x.reply?.startsWith('b ') || x.reply?.startsWith('c ')), `a dual-stack connect to the v4-mapped VIP reaches a backend (${JSON.stringify(mapped[0])})`);
    t.ok(mapped.every((x) => x.peer === `::ffff:${VIP}:80`), 'getpeername() reports the v4-mapped VIP it dialled');
    const after6 = dp.counters();
    t.equal(after6.svc_translated! - after.svc_translated!, 10, 'translated in the kernel');
    t.equal(after6.sock_inserted! - after.sock_inserted!, 20, 'and short-circuited');

    r.reconcile(state([fe(VIP, 80, [b.ip]), fe('198.19.0.11', 80, [b.ip], false)]));
    t.ok((await dial(rt, 'a', VIP, 80, 20)).every((x) => x.reply?.startsWith('b ')), 'a removed backend is never picked again');

    r.reconcile(state([fe(VIP, 80, []), fe('198.19.0.11', 80, [b.ip], false)]));
    const t0 = Date.now();
    const refused = await dial(rt, 'a', VIP, 80, 3);
    t.same(refused.map((x) => x.error), ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED'], 'no backends: ECONNREFUSED');
    // refused by connect4 before any packet: an unanswered SYN would run to the dial's 2 s timeout
    t.ok(Date.now() - t0 < 2500, `at once (${Date.now() - t0} ms for 3 connects and a node start)`);
    t.equal(dp.counters().svc_no_backend! - after.svc_no_backend!, 3, 'counted');

    const c1 = dp.counters();
    const outsider = await dial(rt, 'd', '198.19.0.11', 80, 1, 700);
    t.notOk(outsider[0]?.reply, `a client that is not enrolled is left alone (${outsider[0]?.error})`);
    t.equal(dp.counters().svc_not_enrolled! - c1.svc_not_enrolled!, 1, 'and counted as such');
    const enrolled = await dial(rt, 'a', '198.19.0.11', 80, 1);
    t.match(enrolled[0]?.reply, /^b /, 'while an enrolled client of the same service is served');
    // a pod under NetworkPolicy (a subject of the policy maps) is translated, enrolled or not: policy judges the backend
    dp.put('sm_pol_cgroups', encodeCgroupId(cg('d')), encodePolicySubject({ subject: 16, peer: 17, flags: dp.layout.policy.flagPod, ip: d.ip }));
    const subject = await dial(rt, 'd', '198.19.0.11', 80, 1);
    t.match(subject[0]?.reply, /^b /, 'a pod that is a policy subject is served by the kernel\'s translation though not enrolled');
  });
}
