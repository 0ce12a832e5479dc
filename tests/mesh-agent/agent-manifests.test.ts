/* Privileged end to end: the agent runs a manifest directory; services by name and VIP, enrollment, reloads, restarts. */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { renderPrometheus } from '../../mesh-agent/admin/prometheus.js';
import { Agent } from '../../mesh-agent/agent.js';
import { repoRoot, STATE_DIR } from '../../mesh-agent/paths.js';
import { NodeRuntime } from '../../mesh-agent/runtime/node-runtime.js';
import { runtimeName } from '../../mesh-agent/runtime/pod-supervisor.js';
import { TEST_PIN_DIR, cleanNode } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';
import { until } from '../fixtures/wait.js';

const PEER = join(repoRoot(), 'tests', 'fixtures', 'svc-peer.mjs');
const PREFIX = 'smm';

const ns = (name: string, enrolled: boolean) => `apiVersion: v1
kind: Namespace
metadata:
  name: ${name}
${enrolled ? '  annotations: { sockmesh.io/enabled: "true" }\n' : ''}`;

const server = (namespace: string, name: string, app: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${namespace}, labels: { app: ${app} } }
spec:
  containers:
  - name: main
    command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(PEER)}, serve, "7000", ${name}]
    ports: [{ name: peer, containerPort: 7000 }]
`;

const idle = (namespace: string, name: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${namespace} }
spec:
  containers: [{ name: main, command: [sleep, infinity] }]
`;

const service = (namespace: string, name: string, app: string) => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${namespace} }
spec:
  selector: { app: ${app} }
  ports: [{ port: 80, targetPort: peer }]
`;

const docs = (...d: string[]) => d.join('---\n');

function manifestLoad(agent: Agent) {
  const src = agent.status().cluster!.source;
  return src.kind === 'manifests' ? src.last : undefined;
}

interface Dialed { peer?: string; reply?: string; error?: string }

async function dial(rt: NodeRuntime, pod: string, host: string, count: number, timeoutMs = 2000): Promise<Dialed[]> {
  const out = await rt.execOutput(runtimeName(pod), [process.execPath, PEER, 'dial', host, '80', String(count), String(timeoutMs)], { timeoutMs: 60_000 });
  return out.toString().trim().split('\n').map((l) => JSON.parse(l) as Dialed);
}

async function setup(t: Test) {
  const { rt, cgroupPath, clean } = await cleanNode(PREFIX);
  const dir = mkdtempSync(join(tmpdir(), 'sm-manifests-'));
  const adminDir = mkdtempSync(join(tmpdir(), 'sm-admin-'));
  const agents: Agent[] = [];
  const start = async () => {
    const agent = new Agent({
      manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: TEST_PIN_DIR, cgroupPath },
      adminSocket: join(adminDir, 'agent.sock'), adminAddress: null, xdsAddress: '127.0.0.1:0', xdsSocket: join(adminDir, 'xds.sock'), nodeName: 'test-node',
    });
    await agent.start();
    agents.push(agent);
    return agent;
  };
  t.teardown(async () => {
    for (const a of agents) await a.stop({ removePods: true }).catch(() => undefined);
    await clean();
    rmSync(dir, { recursive: true, force: true });
    rmSync(adminDir, { recursive: true, force: true });
  });
  const write = (file: string, text: string) => writeFileSync(join(dir, file), text);
  const running = (agent: Agent, keys: string[]) => until(`pods ${keys.join(', ')} running`, () => {
    const pods = agent.status().cluster!.pods;
    return keys.every((k) => pods.find((p) => p.key === k)?.phase === 'Running') && pods;
  });
  return { rt, dir, write, start, running };
}

if (privileged(t)) {
  t.test('services by name and by VIP, spread, removal; a non-enrolled namespace is left alone', async (t) => {
    const { rt, write, start, running } = await setup(t);
    write('app.yaml', docs(ns('shop', true), server('shop', 'web-1', 'web'), server('shop', 'web-2', 'web'), service('shop', 'web', 'web'),
      idle('shop', 'client'), ns('legacy', false), idle('legacy', 'old'), server('legacy', 'inv', 'inv'), service('legacy', 'inv', 'inv')));
    const agent = await start();
    await running(agent, ['shop/web-1', 'shop/web-2', 'shop/client', 'legacy/old', 'legacy/inv']);
    const st = agent.status();
    const vip = st.cluster!.services.find((s) => s.key === 'shop/web')!.vip!;
    t.match(vip, /^198\.19\./, `shop/web has VIP ${vip}`);
    const c0 = st.datapath.counters!;

    const byName = await dial(rt, 'shop/client', 'web', 30);
    t.ok(byName.every((r) => r.peer === `${vip}:80`), 'by short name: /etc/hosts gives the VIP, getpeername() shows it');
    const names = byName.map((r) => r.reply?.split(' ')[0]);
    t.ok(names.includes('web-1') && names.includes('web-2'), `spread over both backends (web-1 ${names.filter((n) => n === 'web-1').length}, web-2 ${names.filter((n) => n === 'web-2').length})`);
    t.match((await dial(rt, 'shop/client', 'web.shop.svc.cluster.local', 1))[0], { peer: `${vip}:80`, reply: /^web-\d/ }, 'by full name');
    t.match((await dial(rt, 'legacy/old', 'web.shop', 1))[0], { reply: /^web-\d/ }, 'by <svc>.<ns> from another namespace');
    t.match((await dial(rt, 'shop/client', vip, 1))[0], { reply: /^web-\d/ }, 'by VIP');
    const c1 = agent.status().datapath.counters!;
    t.equal(c1.sock_inserted! - c0.sock_inserted!, 2 * 32, 'every in-mesh connection was short-circuited (2 sockets each)');
    t.equal(c1.sock_skipped! - c0.sock_skipped!, 2, 'the one from legacy was not (one skip per end)');

    const before = agent.status().datapath.counters!;
    const legacy = await dial(rt, 'legacy/old', 'inv', 5);
    t.ok(legacy.every((r) => r.reply?.startsWith('inv ')), 'legacy to legacy works');
    const after = agent.status().datapath.counters!;
    t.equal(after.sock_inserted! - before.sock_inserted!, 0, 'and is never short-circuited');
    t.equal(after.bytes_redirected! - before.bytes_redirected!, 0, 'no byte of it took the redirect');

    // a backend goes away: never picked again
    write('app.yaml', docs(ns('shop', true), server('shop', 'web-1', 'web'), service('shop', 'web', 'web'),
      idle('shop', 'client'), ns('legacy', false), idle('legacy', 'old'), server('legacy', 'inv', 'inv'), service('legacy', 'inv', 'inv')));
    await until('web-2 gone', () => !agent.status().cluster!.pods.some((p) => p.key === 'shop/web-2'));
    await until('one backend', () => agent.status().cluster!.services.find((s) => s.key === 'shop/web')!.ports[0]!.backends === 1);
    t.ok((await dial(rt, 'shop/client', 'web', 20)).every((r) => r.reply?.startsWith('web-1 ')), 'a removed backend is never picked');
    t.equal(agent.status().cluster!.services.find((s) => s.key === 'shop/web')!.vip, vip, 'and the VIP stays');
  });

  t.test('enrollment toggled under live traffic; an invalid manifest keeps the last good state; a restart converges', async (t) => {
    const { rt, write, start, running } = await setup(t);
    const app = (enrolled: boolean, extra = '') => docs(ns('shop', enrolled), server('shop', 'web-1', 'web'), service('shop', 'web', 'web'), idle('shop', 'client')) + extra;
    write('app.yaml', app(false));
    const agent = await start();
    await running(agent, ['shop/web-1', 'shop/client']);
    t.ok(agent.status().cluster!.pods.every((p) => !p.enrolled), 'not annotated: nobody enrolled');
    // a long-lived connection opened before enrollment
    const live = rt.exec(runtimeName('shop/client'), [process.execPath, join(repoRoot(), 'tests', 'fixtures', 'tcp-peer.mjs'), 'connect', 'web', '80'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let got = '';
    live.stdout!.on('data', (d: Buffer) => { got += d.toString(); });
    live.stdin!.write('x');
    await until('the live connection answered', () => got.includes('web-1'));
    const c0 = agent.status().datapath.counters!;
    t.equal((await dial(rt, 'shop/client', 'web', 3)).filter((r) => r.reply).length, 3);
    t.equal(agent.status().datapath.counters!.sock_inserted! - c0.sock_inserted!, 0, 'not enrolled: connections take the stack');

    write('app.yaml', app(true));
    await until('enrolled', () => agent.status().cluster!.pods.every((p) => p.enrolled));
    const c1 = agent.status().datapath.counters!;
    t.equal((await dial(rt, 'shop/client', 'web', 3)).filter((r) => r.reply).length, 3);
    t.equal(agent.status().datapath.counters!.sock_inserted! - c1.sock_inserted!, 6, 'annotated: new connections are short-circuited at once, no pod restarted');
    t.equal(live.exitCode, null, 'the connection opened before is still open (not reset)');
    t.ok(agent.status().cluster!.pods.every((p) => p.restarts === 0), 'no pod was restarted');

    write('app.yaml', app(true).replace('sockmesh.io/enabled: "true"', 'sockmesh.io/enabled: "true"\n    bad: [1') + '---\napiVersion: v1\nkind: Pod\nmetadata: { name: Bad_Name }\n');
    await until('the bad set reported', () => manifestLoad(agent)?.ok === false);
    const bad = agent.status().cluster!;
    t.match(manifestLoad(agent)!.errors.join('\n'), /app\.yaml: document/, `the problem names the file and document: ${manifestLoad(agent)!.errors[0]}`);
    t.ok(bad.pods.every((p) => p.enrolled && p.phase === 'Running'), 'the last good set keeps running, enrolled');
    const m = renderPrometheus(agent.metrics());
    t.match(m, /^sockmesh_manifests_valid 0$/m, '/metrics says the manifests were not applied');
    t.match(m, /^sockmesh_pods\{enrolled="true"\} 2$/m, 'and counts the enrolled pods');
    t.equal((await dial(rt, 'shop/client', 'web', 1))[0]?.reply?.split(' ')[0], 'web-1', 'and serving');

    write('app.yaml', app(true));
    await until('good again', () => manifestLoad(agent)?.ok === true);

    // the agent restarts: pods and connections carry on, the maps are already right
    const vip = agent.status().cluster!.services[0]!.vip;
    await agent.stop();
    live.stdin!.write('y');
    const next = await start();
    const pods = await running(next, ['shop/web-1', 'shop/client']);
    await sleep(200);
    next.reconcileNow();
    const totals = next.status().cluster!.reconcile;
    t.ok(totals.passes >= 2, `${totals.passes} passes since the restart`);
    t.same([totals.writes, totals.deletes], [0, 0], 'a restarted agent writes and deletes nothing: the pinned maps were right (no flapping)');
    t.ok(pods.every((p) => p.restarts === 0), 'the pods were adopted, not restarted');
    t.equal(next.status().cluster!.services[0]!.vip, vip, 'the VIP is the same');
    t.equal(live.exitCode, null, 'the live connection survived the restart');
    t.equal((await dial(rt, 'shop/client', 'web', 1))[0]?.reply?.split(' ')[0], 'web-1', 'and the service still answers');
    live.kill();
    // stopped for good: the pods and the node proxy go, and their records and logs with them
    // (the agent's last passes, as each pod goes, must not write the proxy's workloads file again)
    const state = [join(STATE_DIR, `pods-${PREFIX}`), join(STATE_DIR, `proxy-${PREFIX}`)];
    for (const d of state) t.ok(existsSync(d), `${d} while the pods run`);
    await next.stop({ removePods: true });
    await sleep(100);
    for (const d of state) t.notOk(existsSync(d), `${d} removed with them`);
  });
}
