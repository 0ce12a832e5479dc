/* Privileged end to end: the agent's traces in a real OTLP receiver — the node proxy's request spans per workload, the kernel's connection spans linked to them, the agent's own spans — and the flows in observe and /metrics. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createRequire } from 'node:module';
import { Agent } from '../../mesh-agent/agent.js';
import { adminGet, adminPost } from '../../mesh-agent/admin/admin-client.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../mesh-agent/paths.js';
import { runtimeName } from '../../mesh-agent/runtime/pod-supervisor.js';
import { telemetryOptions } from '../../telemetry/telemetry-options.js';
import { cliAsync } from '../fixtures/cli.js';
import { TEST_PIN_DIR, agentEndpoints, cleanNode } from '../fixtures/mesh.js';
import { OtlpReceiver, type ReceivedSpan } from '../fixtures/otlp-receiver.js';
import { privileged } from '../fixtures/privileged.js';
import { until } from '../fixtures/wait.js';

const APP = join(repoRoot(), 'tests', 'fixtures', 'http-app.mjs');
const CLIENT = join(repoRoot(), 'tests', 'fixtures', 'http-client.mjs');
const PREFIX = 'smt';

const MANIFESTS = `apiVersion: v1
kind: Namespace
metadata: { name: shop, annotations: { sockmesh.io/enabled: "true" } }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, namespace: shop, labels: { app.kubernetes.io/name: web } }
spec: { containers: [{ name: web, command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(APP)}, web-1, "8080"], ports: [{ name: http, containerPort: 8080 }] }] }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { selector: { app.kubernetes.io/name: web }, ports: [{ port: 80, targetPort: http, appProtocol: http }] }
---
apiVersion: v1
kind: Pod
metadata:
  name: loadgen-7d9f-x2k
  namespace: shop
  labels: { pod-template-hash: 7d9f }
  ownerReferences: [{ apiVersion: apps/v1, kind: ReplicaSet, name: loadgen-7d9f, uid: u1, controller: true }]
spec: { containers: [{ name: c, command: [sleep, infinity] }] }
`;

type Family = { name: string; metrics: { labels?: Record<string, string>; value?: string; buckets?: Record<string, string> }[] };
const parsePrometheusTextFormat = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];
const attr = (s: ReceivedSpan, k: string) => s.attributes[k];

/** An agent exporting to a real OTLP receiver, its pods running and its node proxy configured. */
async function start(t: Test) {
  const receiver = await OtlpReceiver.start();
  const { rt, cgroupPath, clean } = await cleanNode(PREFIX);
  const dir = mkdtempSync(join(tmpdir(), 'sm-tel-'));
  writeFileSync(join(dir, 'app.yaml'), MANIFESTS);
  const agent = new Agent({
    manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: TEST_PIN_DIR, cgroupPath }, proxy: 'mesh-proxy',
    ...agentEndpoints(dir), nodeName: 'tel-node',
    telemetry: telemetryOptions({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpUrl, OTEL_BSP_SCHEDULE_DELAY: '100' }),
  });
  await agent.start();
  t.teardown(async () => {
    await agent.stop({ removePods: true }).catch(() => undefined);
    await clean();
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await until('pods running and the proxy configured', () => {
    const c = agent.status().cluster!;
    return c.pods.length === 2 && c.pods.every((p) => p.phase === 'Running') && c.l7.proxy?.running
      && agent.status().xds.proxies.some((p) => p.types.route?.ackedVersion && p.types.route.ackedVersion === p.types.route.sentVersion) && c;
  });
  return { receiver, rt, agent };
}

if (privileged(t)) {
  t.test('traces: per-workload request spans across the node proxy, the agent\'s spans, flows and metrics', async (t) => {
    const { receiver, rt, agent } = await start(t);
    const incoming = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const out = await rt.execOutput(runtimeName('shop/loadgen-7d9f-x2k'), [process.execPath, CLIENT, 'http://web/headers', '3', `traceparent=${incoming}`], { timeoutMs: 60_000 });
    const r = JSON.parse(out.toString()) as { counts: Record<string, number> };
    const seen = JSON.parse(Object.keys(r.counts)[0]!.slice(4)) as Record<string, string>;
    const backendParent = seen.traceparent!.split('-')[2]!;

    const spans = await until('the request spans at the receiver', () => {
      const all = receiver.spans().filter((s) => s.traceId === '0af7651916cd43dd8448eb211c80319c');
      return all.length >= 6 && all;
    });
    const clientSpans = spans.filter((s) => s.kind === 'CLIENT');
    const serverSpans = spans.filter((s) => s.kind === 'SERVER');
    t.equal(clientSpans.length, 3, 'one CLIENT span per request');
    t.equal(serverSpans.length, 3, 'one SERVER span per request (no retries)');
    const c = clientSpans[0]!;
    t.match(c.resource, { 'service.name': 'loadgen', 'service.namespace': 'shop', 'k8s.namespace.name': 'shop', 'k8s.pod.name': 'loadgen-7d9f-x2k', 'k8s.node.name': 'tel-node' },
      'the CLIENT span belongs to the caller; its service.name is the owner (ReplicaSet → Deployment name)');
    t.ok(c.endNs > c.startNs && c.startNs > BigInt(Date.now() - 60_000) * 1_000_000n, 'epoch times, from start to end');
    t.equal(c.parentSpanId, 'b7ad6b7169203331', 'it continues the caller\'s traceparent');
    t.match(c.attributes, { 'http.request.method': 'GET', 'url.path': '/headers', 'http.route': '/*', 'server.address': 'web', 'server.port': 80, 'http.response.status_code': 200 }, 'HTTP semantic conventions');
    const web1 = agent.status().cluster!.pods.find((p) => p.name === 'web-1')!.ip!;
    t.equal(attr(c, 'network.peer.address'), web1, 'network.peer.address: the backend chosen');
    const s = serverSpans.find((x) => x.parentSpanId === c.spanId)!;
    t.ok(s, 'the SERVER span is the CLIENT span\'s child');
    t.match(s.resource, { 'service.name': 'web', 'k8s.pod.name': 'web-1', 'k8s.namespace.name': 'shop' }, 'the SERVER span belongs to the backend (app.kubernetes.io/name)');
    t.equal(attr(s, 'http.response.status_code'), 200);
    t.equal(attr(s, 'client.address'), agent.status().cluster!.pods.find((p) => p.name === 'loadgen-7d9f-x2k')!.ip, 'the SERVER span names the caller\'s address');
    t.ok(serverSpans.some((x) => x.spanId === backendParent), 'the backend got a SERVER span as its parent in traceparent');

    const l4 = await until('the caller\'s connection span (after the client closed it)', () => receiver.spans().find((x) => x.name.startsWith('TCP ') && x.resource['k8s.pod.name'] === 'loadgen-7d9f-x2k'), 20_000);
    t.equal(l4.kind, 'CLIENT', 'the connection belongs to the caller');
    t.equal(l4.name, 'TCP shop/web', 'named by the service it dialled');
    t.match(l4.attributes, { 'sockmesh.path': 'kernel', 'sockmesh.short_circuited': true, 'sockmesh.service': 'shop/web', 'sockmesh.service.vip': /^198\.19\.\d+\.\d+:80$/, 'network.transport': 'tcp' }, 'short-circuited, through the VIP');
    t.ok(Number(attr(l4, 'sockmesh.bytes_sent')) > 0 && Number(attr(l4, 'sockmesh.bytes_received')) > 0, `bytes both ways (${String(attr(l4, 'sockmesh.bytes_sent'))} sent, ${String(attr(l4, 'sockmesh.bytes_received'))} received)`);
    t.ok(l4.endNs > l4.startNs, 'from open to close');
    t.ok(l4.links.some((l) => clientSpans.some((x) => x.spanId === l.spanId)), 'the connection span links to the requests it carried');
    const toConnection = clientSpans.filter((x) => x.links.some((l) => l.spanId === l4.spanId && l.traceId === l4.traceId && l.attributes['sockmesh.link'] === 'connection'));
    t.ok(toConnection.length >= 1, `and the request spans link to the connection span they rode (${toConnection.length} of ${clientSpans.length})`);
    const l4flows = (await adminGet(agent.adminSocket, '/flows?type=l4&pod=shop/loadgen-7d9f-x2k')).text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.match(l4flows.at(-1), { type: 'l4', path: 'kernel', service: 'shop/web', source: { pod: 'loadgen-7d9f-x2k' } }, 'observe shows the connection, short-circuited');

    const agentSpans = await until('the agent\'s own spans', () => {
      const a = receiver.spans().filter((x) => x.resource['service.name'] === 'sockmesh-agent');
      return a.some((x) => x.name === 'xds push' && x.parentSpanId) && a;
    });
    const push = agentSpans.find((x) => x.name === 'xds push' && x.parentSpanId)!;
    const reconcile = agentSpans.find((x) => x.spanId === push.parentSpanId);
    t.equal(reconcile?.name, 'reconcile', 'an xDS push is a child of the reconcile pass that caused it');
    t.match(reconcile?.attributes, { 'sockmesh.reconcile.kind': /full|incremental/ });

    const flows = (await adminGet(agent.adminSocket, '/flows?type=l7&last=10')).text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.ok(flows.length >= 3, `observe sees the requests (${flows.length})`);
    t.match(flows.at(-1), { type: 'l7', path: 'proxy', method: 'GET', urlPath: '/headers', status: 200, source: { namespace: 'shop', pod: 'loadgen-7d9f-x2k', service: 'loadgen' }, destination: { pod: 'web-1', service: 'web' } });
    const cli = await cliAsync(['observe', '--admin-socket', agent.adminSocket, '--type', 'l7', '--last', '1']);
    t.match(cli.stdout, /shop\/loadgen-7d9f-x2k \(loadgen\) -> shop\/web-1 \(web\).*FORWARDED.*L7 proxy\s+GET \/headers 200/, 'observe renders a line per flow');
    const filtered = await cliAsync(['observe', '--admin-socket', agent.adminSocket, '--type', 'l7', '--namespace', 'elsewhere', '--json']);
    t.equal(filtered.stdout, '', 'the namespace filter leaves nothing for another namespace');

    const metrics = parsePrometheusTextFormat((await adminGet(agent.adminSocket, '/metrics')).text);
    const req = metrics.find((m) => m.name === 'sockmesh_requests_total')!;
    t.ok(req.metrics.some((m) => m.labels?.source_workload === 'shop/loadgen' && m.labels.destination_workload === 'shop/web' && m.labels.status_class === '2xx' && Number(m.value) >= 3), 'requests by workload pair');
    const lat = metrics.find((m) => m.name === 'sockmesh_request_duration_seconds')!;
    t.ok(lat.metrics.some((m) => Number(m.buckets?.['+Inf']) >= 3), 'a latency histogram by workload pair');
    t.ok(metrics.some((m) => m.name === 'sockmesh_spans_dropped_total'), 'exporter drops are a metric');
    t.ok(metrics.some((m) => m.name === 'sockmesh_reconcile_duration_seconds'), 'reconcile duration is a histogram');
    const tel = agent.status().telemetry as { queue: { exported: number; droppedQueueFull: number }; relay: { spans: number } };
    t.ok(tel.queue.exported >= 6 && tel.relay.spans >= 6, `status shows the export (${tel.queue.exported} exported, ${tel.relay.spans} relayed)`);
  });

  t.test('tracing switched at runtime (mesh-agent tracing): the node proxy through xDS, the kernel\'s and the agent\'s spans at once', async (t) => {
    const { receiver, rt, agent } = await start(t);
    const sock = agent.adminSocket;
    const listenerVersion = () => agent.status().xds.proxies[0]?.types.listener;
    /** runs `mesh-agent tracing ARGS`, then waits until the node proxy ACKed the listeners that change sent */
    const tracing = async (args: string[]) => {
      const sent = listenerVersion()?.sentVersion;
      const r = await cliAsync(['tracing', '--admin-socket', sock, ...args]);
      if (r.code === 0 && args.length > 0) await until('the node proxy took the new listeners', () => { const v = listenerVersion(); return v?.sentVersion !== sent && v?.ackedVersion === v?.sentVersion; });
      return r;
    };
    const call = async (traceparent?: string) => {
      const out = await rt.execOutput(runtimeName('shop/loadgen-7d9f-x2k'), [process.execPath, CLIENT, 'http://web/headers', '1', ...(traceparent ? [`traceparent=${traceparent}`] : [])], { timeoutMs: 60_000 });
      const r = JSON.parse(out.toString()) as { counts: Record<string, number> };
      return (JSON.parse(Object.keys(r.counts)[0]!.slice(4)) as Record<string, string>).traceparent;
    };
    const connectionSpans = () => receiver.spans().filter((x) => x.name.startsWith('TCP ') && x.resource['k8s.pod.name'] === 'loadgen-7d9f-x2k').length;
    const pushes = () => receiver.spans().filter((x) => x.name === 'xds push').length;
    t.same(await tracing([]), { code: 0, stdout: 'on, sampling 1\n', stderr: '' }, 'on at start, every new trace kept');
    await until('the start-up push spans exported', () => pushes() > 0);

    const pushesBefore = pushes();
    t.same(await tracing(['off']), { code: 0, stdout: 'off, sampling 1\n', stderr: '' }, 'tracing off');
    const connBefore = connectionSpans();
    const l4Flows = () => agent.telemetry.recentFlows({ type: 'l4', pod: 'shop/loadgen-7d9f-x2k' }, 1000).length;
    const l4Before = l4Flows();
    const off = '00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    t.equal(await call(off), off, 'off: a caller\'s traceparent reaches the backend untouched (the proxy no longer traces)');
    t.equal(await call(), undefined, 'and none is made');
    // the connections' flows are reported where their spans would be, a linger (1 s or more) after they closed
    await until('both connections reported as flows', () => l4Flows() >= l4Before + 2, 20_000);
    await sleep(500); // and what the exporter's 100 ms schedule would have sent
    t.equal(receiver.spans().filter((x) => x.traceId === '1af7651916cd43dd8448eb211c80319c').length, 0, 'no request span');
    t.equal(connectionSpans(), connBefore, 'no connection span');
    t.equal(pushes(), pushesBefore, 'no span of the agent\'s own (the push that turned tracing off)');
    t.match(agent.status().telemetry, { tracing: false, sampleRatio: 1, export: 'off' }, 'status says so');
    const flows = (await adminGet(sock, '/flows?type=l7&last=2')).text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.equal(flows.length, 2, 'the requests are still flows (observe, metrics)');

    t.same(await tracing(['on', '--sample-ratio', '0']), { code: 0, stdout: 'on, sampling 0\n', stderr: '' }, 'on, keeping no new trace');
    t.match(await call(), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, 'a new trace, unsampled: the decision travels to the backend');
    const sampledParent = '00-2af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await call(sampledParent);
    await until('a caller\'s sampled trace is still kept', () => receiver.spans().filter((x) => x.traceId === '2af7651916cd43dd8448eb211c80319c').length === 2);

    t.same(await tracing(['--sample-ratio', '1', '--json']), { code: 0, stdout: '{"enabled":true,"sampleRatio":1}\n', stderr: '' }, 'every new trace again');
    const connAgain = connectionSpans();
    const tp = await call();
    t.match(tp, /-01$/, 'sampled');
    await until('its spans exported', () => receiver.spans().filter((x) => x.traceId === tp!.split('-')[1]).length === 2);
    await until('and the connection\'s span', () => connectionSpans() > connAgain, 20_000);

    t.match(await tracing(['maybe']), { code: 2, stderr: /"maybe": must be on or off/ }, 'a bad state is refused');
    t.match(await tracing(['--sample-ratio', '1.5']), { code: 2, stderr: /--sample-ratio "1.5": must be a number from 0 to 1/ }, 'so is a bad ratio');
    t.match(await adminPost(sock, '/tracing', { enabled: 'yes' }).catch((e: unknown) => e), { status: 400, message: 'POST /tracing: enabled: "yes" is not true or false' }, 'the API names the field');
    t.match(await adminPost(sock, '/tracing', { ratio: 1 }).catch((e: unknown) => e), { status: 400, message: /unknown field "ratio"/ });
    t.same((await adminGet(sock, '/tracing')).body, { enabled: true, sampleRatio: 1 }, 'and nothing changed');
  });
}
