/* An Envoy node proxy's access log read into request records: entries built and encoded with Envoy's own protos (a stand-in for its gRPC access logger: tests/fixtures/envoy-access-log-stand-in.ts). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { EnvoyAccessLogReceiver, entryRecord } from '../../../mesh-agent/telemetry/envoy-access-log.js';
import type { ReceivedRecord } from '../../../mesh-proxy/agent-channel.js';
import { envoyRoot } from '../../../xds/envoy-protos.js';
import { accessLogMessage, httpEntry, streamAccessLogs, type StandInEntry } from '../../fixtures/envoy-access-log-stand-in.js';

const templates = new Map([['shop/web#0', '/api/*']]);
const BASE: StandInEntry = { caller: ['198.18.0.2', 41234], listener: ['198.18.255.254', 20000], upstream: ['198.18.0.3', 8080], routeName: 'shop/web#0', path: '/api/items?x=1', startMs: 1_764_000_000_123.5, durationMs: 2.25 };

/** An entry as the receiver decodes it off the wire. */
function decoded(e: StandInEntry): Parameters<typeof entryRecord>[0] {
  const type = envoyRoot().lookupType('envoy.service.accesslog.v3.StreamAccessLogsMessage');
  const m = type.decode(accessLogMessage([httpEntry(e)], false)) as unknown as { http_logs: { log_entry: Parameters<typeof entryRecord>[0][] } };
  return m.http_logs.log_entry[0]!;
}

t.test('an entry is the record mesh-proxy would send, untraced: the caller with its port, the route\'s template, the time', async (t) => {
  const r = entryRecord(decoded(BASE), (n) => templates.get(n));
  t.same(r, {
    endMs: Math.round(1_764_000_000_123.5 + 2.25), durationMs: 2.25, method: 'GET', path: '/api/items', route: '/api/*', status: 200,
    caller: '198.18.0.2', callerPort: 41234, local: '198.18.255.254', localPort: 20000, upstream: '198.18.0.3:8080', host: 'web.shop',
    attempts: 1, traceId: '', spanId: '', sampled: false, trace: undefined, deniedBy: undefined,
  } satisfies ReceivedRecord);
});

t.test('entries of every outcome', async (t) => {
  const cases: [string, StandInEntry, Partial<ReceivedRecord>][] = [
    ['an RBAC denial names its policy', { ...BASE, upstream: undefined, status: 403, details: 'rbac_access_denied_matched_policy[shop/deny-all/rule-0]' }, { status: 403, deniedBy: 'shop/deny-all/rule-0', upstream: undefined, attempts: 0 }],
    ['no policy allowed it', { ...BASE, upstream: undefined, status: 403, details: 'rbac_access_denied_matched_policy[none]' }, { deniedBy: 'none' }],
    ['a backend\'s 403 is not a denial', { ...BASE, status: 403 }, { deniedBy: undefined }],
    ['no route', { ...BASE, upstream: undefined, routeName: undefined, status: 404, details: 'route_not_found' }, { route: undefined, status: 404, attempts: 0 }],
    ['a route the agent does not know', { ...BASE, routeName: 'gone#3' }, { route: undefined }],
    ['retried', { ...BASE, attempts: 3, status: 503 }, { attempts: 3, status: 503 }],
    ['a POST, an IPv4-mapped caller', { ...BASE, method: 'POST', caller: ['::ffff:198.18.0.2', 5] }, { method: 'POST', caller: '198.18.0.2', callerPort: 5 }],
    ['a path with a fragment', { ...BASE, path: '/a#b' }, { path: '/a' }],
    ['no path at all', { ...BASE, path: '' }, { path: '/' }],
    ['a method Envoy has no name for (METHOD_UNSPECIFIED)', { ...BASE, method: 'METHOD_UNSPECIFIED' }, { method: '_OTHER' }],
    ['X-Forwarded-For names someone else: the peer is the caller', { ...BASE, forwardedFor: ['10.9.9.9', 0] }, { caller: '198.18.0.2', callerPort: 41234 }],
    ['no attempt count, a backend: one attempt', { ...BASE, attempts: null }, { attempts: 1 }],
    ['the route\'s template from the entry\'s tag, before its name', { ...BASE, routeTag: '/health' }, { route: '/health' }],
    ['the tag as a JSON string', { ...BASE, routeTag: '"/x/*"' }, { route: '/x/*' }],
    ['a denial has no route (as with mesh-proxy, whose RBAC runs before routing)', { ...BASE, upstream: undefined, status: 403, routeTag: '/api/*', details: 'rbac_access_denied_matched_policy[none]' }, { route: undefined, deniedBy: 'none' }],
    ['a sampled traceparent: the trace id for the flow (no span: the request is still untraced here)', { ...BASE, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: '', sampled: false, trace: undefined }],
    ['an unsampled one: none', { ...BASE, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00' }, { traceId: '' }],
  ];
  for (const [what, e, want] of cases) t.match(entryRecord(decoded(e), (n) => templates.get(n)), want, what);
});

t.test('an entry without what a record needs is refused, the field named', async (t) => {
  const type = envoyRoot().lookupType('envoy.service.accesslog.v3.StreamAccessLogsMessage');
  const refused = (change: (e: { common_properties: Record<string, unknown>; request: Record<string, unknown> }) => void) => {
    const e = httpEntry(BASE) as { common_properties: Record<string, unknown>; request: Record<string, unknown> };
    change(e);
    const m = type.decode(accessLogMessage([e], false)) as unknown as { http_logs: { log_entry: Parameters<typeof entryRecord>[0][] } };
    return () => entryRecord(m.http_logs.log_entry[0]!, () => undefined);
  };
  t.throws(refused((e) => { delete e.common_properties.downstream_remote_address; delete e.common_properties.downstream_direct_remote_address; }), /downstream_direct_remote_address: missing/);
  t.throws(refused((e) => { delete e.common_properties.downstream_local_address; }), /downstream_local_address: missing/);
  t.throws(refused((e) => { delete e.common_properties.start_time; }), /start_time: missing/);
});

t.test('the receiver: streams of entries over its unix socket; what is refused and what is unreadable counted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-als-'));
  const got: ReceivedRecord[] = [];
  const refusals: string[] = [];
  const rx = new EnvoyAccessLogReceiver({ socketPath: join(dir, 'envoy-als.sock'), routeTemplateOf: (n) => templates.get(n), onRecords: (r, refused) => { got.push(...r); refusals.push(...refused); } });
  await rx.start();
  t.teardown(async () => { await rx.stop(); rmSync(dir, { recursive: true, force: true }); });
  const bad = httpEntry(BASE);
  delete (bad.common_properties as Record<string, unknown>).downstream_local_address;
  const r = await streamAccessLogs(rx.socketPath, [
    accessLogMessage([httpEntry(BASE), httpEntry({ ...BASE, status: 503 })], true),
    accessLogMessage([httpEntry({ ...BASE, path: '/b' }), bad], false),
    Buffer.from([0x12, 0xff, 0x01]),
  ]);
  t.notOk(r.error, 'the stream ends with an answer');
  t.same(got.map((x) => [x.path, x.status]), [['/api/items', 200], ['/api/items', 503], ['/b', 200]]);
  t.match(refusals, [/^http_logs\.log_entry\[1\]\.common_properties\.downstream_local_address: missing$/]);
  t.same(rx.stats, { streams: 1, messages: 3, entries: 4, refused: 1, invalid: 1 });
  t.match(rx.lastRefusal, /not a StreamAccessLogsMessage/);
});

t.test('stop answers the streams still open (Envoy keeps one open for good), so it does not wait for them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-als-stop-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const rx = new EnvoyAccessLogReceiver({ socketPath: join(dir, 'envoy-als.sock'), routeTemplateOf: () => undefined, onRecords: () => undefined });
  await rx.start();
  const { Client, credentials } = await import('@grpc/grpc-js');
  const client = new Client(`unix:${rx.socketPath}`, credentials.createInsecure());
  const answered = new Promise<unknown>((resolve) => {
    const call = client.makeClientStreamRequest('/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs', (b: Buffer) => b, (b: Buffer) => b, (err) => resolve(err));
    call.write(accessLogMessage([httpEntry(BASE)], true)); // and never ended
  });
  await new Promise((r) => setTimeout(r, 100));
  t.equal(rx.stats.entries, 1);
  const t0 = performance.now();
  await rx.stop();
  t.ok(performance.now() - t0 < 1500, `stopped without the 2 s cut (${Math.round(performance.now() - t0)} ms)`);
  t.equal(await answered, null, 'the open stream got its answer');
  client.close();
});
