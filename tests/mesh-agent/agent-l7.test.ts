/* Privileged end to end: L7 services through the node proxy (mesh-proxy), real pods, real HTTP, both legs in the kernel short-circuit. */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Agent } from '../../mesh-agent/agent.js';
import { repoRoot } from '../../mesh-agent/paths.js';
import { runtimeName } from '../../mesh-agent/runtime/pod-supervisor.js';
import { TEST_PIN_DIR, agentEndpoints, cleanNode } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';
import { until } from '../fixtures/wait.js';

const APP = join(repoRoot(), 'tests', 'fixtures', 'http-app.mjs');
const CLIENT = join(repoRoot(), 'tests', 'fixtures', 'http-client.mjs');
const PREFIX = 'sml';

const backend = (name: string, version: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: shop, labels: { app: web, version: ${version} } }
spec: { containers: [{ name: web, command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(APP)}, ${name}, "8080"], ports: [{ name: http, containerPort: 8080 }] }] }
`;
const service = (name: string, selector: string, http = false) => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec: { selector: ${selector}, ports: [{ port: 80, targetPort: http${http ? ', appProtocol: http' : ''} }] }
`;
const route = (w1: number, w2: number) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: web, port: 80 }]
  rules:
  - matches: [{ headers: [{ name: x-canary, value: "yes" }] }]
    backendRefs: [{ name: web-v2, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /flaky } }]
    backendRefs: [{ name: web-v1, port: 80 }]
    retry: { attempts: 3, codes: [503], backoff: 10ms }
  - matches: [{ path: { type: PathPrefix, value: /slow } }]
    backendRefs: [{ name: web-v1, port: 80 }]
    timeouts: { request: 500ms }
  - backendRefs: [{ name: web-v1, port: 80, weight: ${w1} }, { name: web-v2, port: 80, weight: ${w2} }]
`;
const manifests = (w1: number, w2: number) => [
  'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, annotations: { sockmesh.io/enabled: "true" } }\n',
  backend('web-1', 'v1'), backend('web-2', 'v2'),
  service('web', '{ app: web }', true), service('web-v1', '{ app: web, version: v1 }'), service('web-v2', '{ app: web, version: v2 }'),
  'apiVersion: v1\nkind: Pod\nmetadata: { name: client, namespace: shop }\nspec: { containers: [{ name: c, command: [sleep, infinity] }] }\n',
  route(w1, w2),
].join('---\n');

async function setup(t: Test) {
  const { rt, cgroupPath, clean } = await cleanNode(PREFIX);
  const dir = mkdtempSync(join(tmpdir(), 'sm-l7-'));
  writeFileSync(join(dir, 'app.yaml'), manifests(90, 10));
  const agent = new Agent({
    manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: TEST_PIN_DIR, cgroupPath }, proxy: 'mesh-proxy',
    ...agentEndpoints(dir), nodeName: 'l7-node',
  });
  await agent.start();
  t.teardown(async () => {
    await agent.stop({ removePods: true }).catch(() => undefined);
    await clean();
    rmSync(dir, { recursive: true, force: true });
  });
  await until('pods running and the proxy configured', () => {
    const c = agent.status().cluster!;
    return c.pods.every((p) => p.phase === 'Running') && c.pods.length === 3 && c.l7.proxy?.running
      && agent.status().xds.proxies.some((p) => p.types.route?.ackedVersion && p.types.route.ackedVersion === p.types.route.sentVersion) && c;
  });
  const client = async (args: string[]) => {
    const out = await rt.execOutput(runtimeName('shop/client'), [process.execPath, CLIENT, ...args], { timeoutMs: 120_000 });
    return JSON.parse(out.toString()) as { counts: Record<string, number>; ms: number[]; ok: number; failed: number; bodies: Record<string, number> };
  };
  return { agent, dir, client, rt };
}

if (privileged(t)) {
  t.test('through the node proxy: split, header routing, retries, timeouts, both legs short-circuited', async (t) => {
    const { agent, client } = await setup(t);
    const before = agent.status().datapath.counters!;
    const r = await client(['http://web/', '500']);
    const v1 = r.counts['200 web-1'] ?? 0;
    const v2 = r.counts['200 web-2'] ?? 0;
    t.equal(v1 + v2, 500, `every request answered (${JSON.stringify(r.counts)})`);
    t.ok(v2 >= 25 && v2 <= 80, `a 90/10 split observed: web-1 ${v1}, web-2 ${v2} (10% ± 5 points)`);
    const after = agent.status().datapath.counters!;
    t.ok(after.svc_translated! - before.svc_translated! >= 1, 'the client\'s connect to the VIP went to the node proxy\'s listener');
    t.ok(after.sock_inserted! - before.sock_inserted! >= 4, `client→proxy and proxy→backends entered the short-circuit (${after.sock_inserted! - before.sock_inserted!} sockets)`);
    t.equal(after.bytes_passed! - before.bytes_passed!, 0, 'no byte took the stack');
    t.ok(after.bytes_redirected! - before.bytes_redirected! > 500 * 100, 'the requests and responses went socket to socket');
    // the node proxy writes its access log every second, as Envoy does
    const accessLogPath = join(agent.status().cluster!.l7.proxy!.log, '..', 'node-proxy-access.log');
    let accessLog: string[] = [];
    for (let i = 0; i < 60 && accessLog.length === 0; i++) {
      // the text after the last newline is a line still being written: left out
      accessLog = existsSync(accessLogPath) ? readFileSync(accessLogPath, 'utf8').split('\n').slice(0, -1).filter((l) => l !== '') : [];
      if (accessLog.length === 0) await sleep(50);
    }
    t.match(JSON.parse(accessLog.at(-1)!), { listener: 'shop/web:80', source: 'shop/client', status: 200 }, 'the node proxy names the calling pod (from its address)');
    const canary = await client(['http://web/', '20', 'x-canary=yes']);
    t.same(canary.counts, { '200 web-2': 20 }, 'a header match routes to web-2');
    const flaky = await client(['http://web/flaky', '6']);
    t.same(flaky.counts, { '200 web-1': 6 }, 'each 503 is retried to success');
    const traced = await client(['http://web/headers', '1', 'traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01']);
    const seen = JSON.parse(Object.keys(traced.counts)[0]!.slice(4)) as Record<string, string>;
    const [, traceId, parentId] = seen.traceparent!.split('-');
    t.equal(traceId, '0af7651916cd43dd8448eb211c80319c', 'traceparent reaches the backend with the same trace id');
    t.not(parentId, 'b7ad6b7169203331', `and a new parent span (${parentId})`);
    const slow = await client(['http://web/slow', '2']);
    t.same(Object.keys(slow.counts), ['504 upstream request timeout\n'], 'a slow backend: 504');
    t.ok(slow.ms.every((ms) => ms >= 450 && ms < 1500), `at the 500 ms timeout (${slow.ms.join(', ')} ms)`);
  });

  t.test('a route change under load fails nothing; the proxy killed and restarted; a NACK keeps the last good config', async (t) => {
    const { agent, dir, client, rt } = await setup(t);
    const load = client(['--load', 'http://web/', '6', '4']);
    for (const [a, b] of [[50, 50], [0, 100], [100, 0]] as const) {
      await sleep(1000);
      writeFileSync(join(dir, 'app.yaml'), manifests(a, b));
    }
    const l = await load;
    t.equal(l.failed, 0, `${l.ok} requests under 3 route changes, none failed (${JSON.stringify(l.bodies)})`);
    t.ok((l.bodies['web-2'] ?? 0) > 0 && (l.bodies['web-1'] ?? 0) > 0, 'both versions served as the split moved');
    // the proxy dies: the agent restarts it and clients recover
    const restartsBefore = agent.status().cluster!.l7.proxy!.restarts;
    await rt.stopNodeProcess('node-proxy', 'SIGKILL');
    await until('the proxy restarted', () => agent.status().cluster!.l7.proxy!.running && agent.status().cluster!.l7.proxy!.restarts > restartsBefore);
    let recovered = false;
    for (let i = 0; i < 50 && !recovered; i++) {
      const r = await client(['http://web/', '1']);
      recovered = r.counts['200 web-1'] === 1;
      if (!recovered) await sleep(200);
    }
    t.ok(recovered, `the proxy restarted (restarts ${agent.status().cluster!.l7.proxy!.restarts}) and requests are served again`);
    // a configuration the proxy cannot run: NACKed, traffic stays on the last good one
    const bad = agent.l7Resources();
    (bad.routes[0] as { virtual_hosts: { routes: { match: Record<string, unknown> }[] }[] }).virtual_hosts[0]!.routes[0]!.match = { safe_regex: { regex: '(' } };
    agent.publish(bad);
    await until('the NACK', () => agent.status().xds.nacks.length > 0);
    t.match(agent.status().xds.nacks.at(-1), { typeUrl: /RouteConfiguration/, error: /invalid regex/ }, `NACKed: ${agent.status().xds.nacks.at(-1)?.error}`);
    const still = await client(['http://web/', '10']);
    t.same(still.counts, { '200 web-1': 10 }, 'requests keep flowing on the last good routes');
  });
}
