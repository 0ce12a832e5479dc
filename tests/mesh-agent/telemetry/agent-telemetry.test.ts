/* The agent's telemetry over its real relay socket: the node proxy's request records linked to the kernel's connections; an Envoy node proxy's spans over OTLP/gRPC (from a stand-in for Envoy's tracer) handled alike. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { AgentTelemetry } from '../../../mesh-agent/telemetry/agent-telemetry.js';
import type { KernelFlowEvent } from '../../../mesh-agent/telemetry/flow-tracker.js';
import { encodeRecord } from '../../../mesh-proxy/agent-channel.js';
import type { RequestRecord } from '../../../mesh-proxy/proxy.js';
import { postToRelay } from '../../../telemetry/relay-post.js';
import { telemetryOptions } from '../../../telemetry/telemetry-options.js';
import { epochUs } from '../../../telemetry/request-spans.js';
import { readTraceFiles, serviceName, type TraceSpan } from '../../../mesh-agent/telemetry/trace-file.js';
import { EnvoyTracerStandIn } from '../../fixtures/envoy-tracer-stand-in.js';
import { accessLogMessage, httpEntry, streamAccessLogs } from '../../fixtures/envoy-access-log-stand-in.js';

const CALLER = { ip: '198.18.0.2', port: 40000 };
const PROXY = { ip: '198.19.0.10', port: 80 };
const WORKLOADS = { '198.18.0.2': { namespace: 'shop', pod: 'loadgen-1', serviceName: 'loadgen' }, '198.18.0.3': { namespace: 'shop', pod: 'web-1', serviceName: 'web' } } as const;

function record(i: number): RequestRecord {
  const now = epochUs();
  return {
    endMs: Date.now(), durationMs: 0.25, method: 'GET', path: '/', status: 200, caller: CALLER.ip, callerPort: CALLER.port, local: PROXY.ip, localPort: PROXY.port,
    upstream: '198.18.0.3:8080', host: 'web', attempts: 1, traceId: `${i}`.padStart(32, 'a'), spanId: `${i}`.padStart(16, 'b'), sampled: true,
    trace: { startUs: now - 250, endUs: now, protocol: '1.1', serverAddress: 'web', serverPort: 80, retries: [], attempts: [{ spanId: `${i}`.padStart(16, 'c'), startUs: now - 200, endUs: now - 10, peer: '198.18.0.3:8080', status: 200 }] },
  } as RequestRecord;
}

const kernel = (kind: 'open' | 'close', tsNs: bigint): KernelFlowEvent => ({ kind, cookie: 7n, tsNs, local: CALLER, remote: PROXY, active: true, shortCircuited: false, stackSentBytes: 10, stackRecvBytes: 20, redirSentBytes: 0 });

t.test('each batch of the node proxy\'s records is linked after the kernel\'s events waiting to be read (beforeRequests), and a closed connection waits for the batch', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-agent-tel-'));
  const pending: KernelFlowEvent[] = [];
  let drained = 0;
  const tel: AgentTelemetry = new AgentTelemetry({
    telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: join(dir, 'traces.jsonl') }), node: 'n1', relaySocket: join(dir, 'relay.sock'),
    workloadOf: (ip) => WORKLOADS[ip as keyof typeof WORKLOADS], serviceOf: () => 'shop/web', flowLingerMs: 200,
    // as the agent does: the flow ring drained before a batch (here: the events the "kernel" wrote since the last poll)
    beforeRequests: () => { drained++; tel.onFlowEvents(pending.splice(0)); },
  });
  await tel.start();
  t.teardown(async () => { await tel.stop(); rmSync(dir, { recursive: true, force: true }); });
  const post = async (records: RequestRecord[]) => t.ok(await postToRelay(tel.relaySocket, '/v1/requests', Buffer.from(JSON.stringify({ records: records.map(encodeRecord) })), {}, 5000), 'the relay took the batch');
  const linked = () => (tel.status().relay as { linked: number }).linked;

  pending.push(kernel('open', 1_000_000n)); // opened, not yet polled when the records come
  await post([record(1)]);
  t.equal(drained, 1, 'the kernel\'s events were drained first');
  t.equal(linked(), 1, 'so the request links to the connection it rode');

  pending.push(kernel('close', 9_000_000n));
  await post([]); // a batch the proxy cut before the close: it drains the close, but cannot hold the close's last requests
  t.equal(drained, 2);
  await new Promise((r) => setTimeout(r, 300)); // the wait ends 5 lingers (1 s) after the close at the latest
  t.equal(tel.recentFlows({ type: 'l4' }).length, 0, 'closed, its linger over, the proxy busy and only the batch that drained the close since: it waits for late requests');
  await post([record(2)]);
  t.equal(linked(), 2, 'the late request links too');
  await new Promise((r) => setTimeout(r, 100)); // it looks again every quarter linger
  t.match(tel.recentFlows({ type: 'l4' }), [{ type: 'l4', source: { pod: 'loadgen-1' } }], 'after the second batch the connection is reported');
});

t.test('an Envoy node proxy\'s spans: read back into requests, given to their workloads, linked to the connection by the caller\'s IP, counted as flows', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-agent-envoy-'));
  const file = join(dir, 'traces.jsonl');
  const pending: KernelFlowEvent[] = [];
  const tel: AgentTelemetry = new AgentTelemetry({
    telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: file }), node: 'n1', relaySocket: join(dir, 'relay.sock'), envoySpansSocket: join(dir, 'envoy-spans.sock'),
    workloadOf: (ip) => WORKLOADS[ip as keyof typeof WORKLOADS], serviceOf: () => 'shop/web', flowLingerMs: 200,
    beforeRequests: () => { tel.onFlowEvents(pending.splice(0)); },
  });
  await tel.start();
  const envoy = new EnvoyTracerStandIn(join(dir, 'envoy-spans.sock'), { batch: true });
  t.teardown(async () => { await envoy.shutdown(); await tel.stop(); rmSync(dir, { recursive: true, force: true }); });
  const LISTENER = { ip: '198.18.255.254', port: 20000 };
  const conn = (kind: 'open' | 'close', port: number, cookie: bigint, tsNs: bigint): KernelFlowEvent => ({
    kind, cookie, tsNs, local: { ip: CALLER.ip, port }, remote: LISTENER, active: true, shortCircuited: true, stackSentBytes: 0, stackRecvBytes: 0, redirSentBytes: 100,
  });
  const stats = () => tel.status().envoySpans as Record<string, number>;
  const until = async (what: string, ok: () => boolean) => {
    for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 25));
    t.ok(ok(), what);
  };

  pending.push(conn('open', 40000, 11n, 1_000_000n));
  const req = { caller: CALLER.ip, listener: `${LISTENER.ip}:${LISTENER.port}`, service: 'shop/web:80', route: '/api/*', url: 'http://web.shop/api/items?x=1', status: 200 };
  const ids = envoy.request({ ...req, attempts: [{ backend: '198.18.0.3:8080', status: 503 }, { backend: '198.18.0.3:8080', status: 200 }] });
  await envoy.flush();
  await until('the request was read from its spans', () => stats().requests === 1);
  t.match(stats(), { exports: 1, spans: 3, requests: 1, attempts: 2, orphaned: 0, refused: 0, waiting: 0 });
  t.equal((tel.status().relay as { linked: number }).linked, 1, 'linked to the one connection from the caller\'s IP to the listener');
  t.match(tel.recentFlows({ type: 'l7' }), [{ source: { pod: 'loadgen-1', address: CALLER.ip }, destination: { pod: 'web-1' }, method: 'GET', urlPath: '/api/items', route: '/api/*', status: 200, path: 'proxy', traceId: ids.traceId }],
    'a flow (the caller\'s port not known: its address alone)');

  // a second connection from the same caller: which one a request rode is no longer known
  pending.push(conn('open', 40001, 12n, 2_000_000n));
  envoy.request({ ...req, attempts: [{ backend: '198.18.0.3:8080', status: 200 }] });
  await envoy.flush();
  await until('the second request was read', () => stats().requests === 2);
  t.equal((tel.status().relay as { linked: number }).linked, 1, 'two connections it may have ridden: not linked');
  t.equal((tel.status().flows as { ambiguousLinks: number }).ambiguousLinks, 1, 'and counted');

  pending.push(conn('close', 40000, 11n, 9_000_000n), conn('close', 40001, 12n, 9_500_000n));
  envoy.request({ ...req, status: 404, route: undefined, flags: 'NR', attempts: [] }); // an export after the closes drains them
  await envoy.flush();
  await until('both connections reported', () => tel.recentFlows({ type: 'l4' }).length === 2);
  await tel.stop();
  const spans = (await readTraceFiles(file)).spans;
  const mine = (id: string) => spans.filter((s: TraceSpan) => s.traceId === id);
  const trace1 = mine(ids.traceId);
  const client = trace1.find((s) => s.spanId === ids.spanId)!;
  t.match(client, { kind: 'CLIENT', name: 'GET /api/*', attributes: { 'http.request.method': 'GET', 'url.path': '/api/items', 'http.route': '/api/*', 'http.response.status_code': 200, 'server.address': 'web.shop', 'server.port': 80, 'http.request.resend_count': 1, 'client.address': CALLER.ip } },
    'Envoy\'s request span, now the caller\'s CLIENT span, in the current HTTP conventions');
  t.equal(serviceName(client), 'loadgen', 'owned by the caller\'s workload');
  t.notOk('client.port' in client.attributes, 'no client.port: Envoy does not say it');
  t.same(client.events.map((e) => [e.name, e.attributes['http.response.status_code']]), [['retry', 503]], 'the retry as an event');
  const servers = trace1.filter((s) => s.kind === 'SERVER');
  t.same(servers.map((s) => s.spanId), ids.attemptSpanIds, 'each attempt\'s span, its id kept (the backend\'s traceparent names it), now the backend\'s SERVER span');
  t.ok(servers.every((s) => s.parentSpanId === ids.spanId && serviceName(s) === 'web'), 'children of the request, owned by the backend');
  t.ok(servers.every((s) => s.attributes['network.peer.address'] === CALLER.ip && !('network.peer.port' in s.attributes)), 'their peer the caller, by its IP');
  const connection = spans.find((s) => s.name.startsWith('TCP') && s.attributes['network.local.port'] === 40000)!;
  t.same(client.links.map((l) => l.spanId), [connection.spanId], 'the request links to the kernel connection it rode');
  t.same(connection.links.map((l) => l.spanId), [ids.spanId], 'and the connection back to it');
});

t.test('with Envoy\'s access log too: every request\'s flow comes from it (traced or not, the caller\'s port, the denying policy), its spans make spans and links only', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-agent-als-'));
  const file = join(dir, 'traces.jsonl');
  const tel: AgentTelemetry = new AgentTelemetry({
    telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: file }), node: 'n1', relaySocket: join(dir, 'relay.sock'),
    envoySpansSocket: join(dir, 'envoy-spans.sock'), envoyAccessLogSocket: join(dir, 'envoy-als.sock'), routeTemplateOf: (n) => (n === 'shop/web#0' ? '/api/*' : undefined),
    workloadOf: (ip) => WORKLOADS[ip as keyof typeof WORKLOADS], serviceOf: () => 'shop/web',
  });
  await tel.start();
  const envoy = new EnvoyTracerStandIn(join(dir, 'envoy-spans.sock'), { batch: true });
  t.teardown(async () => { await envoy.shutdown(); await tel.stop(); rmSync(dir, { recursive: true, force: true }); });
  const listener: [string, number] = ['198.18.255.254', 20000];
  const entry = { caller: [CALLER.ip, 41234] as [string, number], listener, upstream: ['198.18.0.3', 8080] as [string, number], routeName: 'shop/web#0', path: '/api/x' };
  const r = await streamAccessLogs(join(dir, 'envoy-als.sock'), [accessLogMessage([
    httpEntry(entry), httpEntry({ ...entry, path: '/api/y' }),
    httpEntry({ ...entry, upstream: undefined, status: 403, details: 'rbac_access_denied_matched_policy[shop/deny-all/rule-0]' }),
  ], true)]);
  t.notOk(r.error);
  // the first request was also sampled: Envoy's spans for it
  envoy.request({ caller: CALLER.ip, listener: listener.join(':'), service: 'shop/web:80', route: '/api/*', url: 'http://web.shop/api/x', status: 200, attempts: [{ backend: '198.18.0.3:8080', status: 200 }] });
  await envoy.flush();
  const flows = tel.recentFlows({ type: 'l7' });
  t.same(flows.map((f) => [f.urlPath, f.verdict, f.policy, f.source.address, f.route]), [
    ['/api/x', 'forwarded', undefined, `${CALLER.ip}:41234`, '/api/*'], ['/api/y', 'forwarded', undefined, `${CALLER.ip}:41234`, '/api/*'], ['/api/x', 'denied', 'shop/deny-all/rule-0', `${CALLER.ip}:41234`, undefined],
  ], 'a flow per logged request (sampled or not), none more for the spans');
  t.equal((tel.status().relay as { requests: number }).requests, 3, 'three requests counted, not four');
  t.match(tel.status().envoyAccessLog, { streams: 1, entries: 3, refused: 0, invalid: 0 });
  t.match(tel.status().envoySpans, { requests: 1 }, 'the sampled one\'s spans read');
  await tel.stop();
  const spans = (await readTraceFiles(file)).spans;
  t.equal(spans.filter((s) => s.kind === 'CLIENT' && serviceName(s) === 'loadgen').length, 1, 'its spans written');
});
