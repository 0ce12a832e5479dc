import t from 'tap';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { FlowTracker, type FlowRecord, type KernelFlowEvent } from '../../../mesh-agent/telemetry/flow-tracker.js';
import type { WorkloadIdentity } from '../../../telemetry/workload-resource.js';

const PODS: Record<string, WorkloadIdentity> = {
  '198.18.0.2': { namespace: 'shop', pod: 'loadgen-1', serviceName: 'loadgen' },
  '198.18.0.3': { namespace: 'shop', pod: 'web-1', serviceName: 'web' },
};
const A = { ip: '198.18.0.2', port: 40000 };
const B = { ip: '198.18.0.3', port: 8080 };
const VIP = { ip: '198.19.0.5', port: 80 };

function tracker(extra: Partial<ConstructorParameters<typeof FlowTracker>[0]> = {}) {
  const spans: ReadableSpan[] = [];
  const flows: FlowRecord[] = [];
  const tr = new FlowTracker({
    workloadOf: (ip) => PODS[ip], serviceOf: (ip, port) => (ip === VIP.ip && port === VIP.port ? 'shop/web' : undefined),
    resourceOf: (w) => resourceFromAttributes({ 'service.name': w?.serviceName ?? 'node' }),
    emitSpan: (s) => spans.push(s), emitFlow: (f) => flows.push(f),
    toEpochNs: (mono) => 1_700_000_000_000_000_000n + mono, lingerMs: 10, ...extra,
  });
  return { tr, spans, flows };
}

function ev(kind: 'open' | 'close', cookie: bigint, local: { ip: string; port: number }, remote: { ip: string; port: number }, active: boolean, x: Partial<KernelFlowEvent> = {}): KernelFlowEvent {
  return { kind, cookie, tsNs: kind === 'open' ? 1_000_000n : 51_000_000n, local, remote, active, shortCircuited: true, stackSentBytes: 0, stackRecvBytes: 0, redirSentBytes: 0, ...x };
}

const settle = () => new Promise((r) => setTimeout(r, 40));

t.test('a short-circuited connection between two local pods: one CLIENT span for the caller, bytes from both sides', async (t) => {
  const { tr, spans, flows } = tracker();
  tr.onEvents([ev('open', 1n, A, B, true, { service: VIP }), ev('open', 2n, B, A, false)]);
  const link = tr.linkRequest(A, B, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) });
  t.ok(link, 'a request on the open connection gets a link to its span');
  tr.onEvents([ev('close', 2n, B, A, false, { redirSentBytes: 5000 }), ev('close', 1n, A, B, true, { redirSentBytes: 1000, service: VIP })]);
  await settle();
  t.equal(spans.length, 1, 'the server side does not report it twice');
  const s = spans[0]!;
  t.equal(s.kind, 2, 'CLIENT');
  t.equal(s.name, 'TCP shop/web');
  t.equal(s.resource.attributes['service.name'], 'loadgen', 'attributed to the client workload');
  t.match(s.attributes, { 'sockmesh.path': 'kernel', 'sockmesh.short_circuited': true, 'sockmesh.bytes_sent': 1000, 'sockmesh.bytes_received': 5000, 'sockmesh.service.vip': '198.19.0.5:80', 'server.address': VIP.ip, 'network.peer.address': B.ip, 'sockmesh.requests': 1, 'sockmesh.destination.workload': 'shop/web-1' });
  t.equal(s.spanContext().spanId, link!.context.spanId, 'the request\'s link points at this span');
  t.same(s.links.map((l) => l.context.spanId), ['b'.repeat(16)], 'and this span links back to the request');
  t.same([s.startTime, s.endTime], [[1_700_000_000, 1_000_000], [1_700_000_000, 51_000_000]], 'from open to close');
  t.match(flows, [{ type: 'l4', path: 'kernel', service: 'shop/web', bytesSent: 1000, bytesReceived: 5000, durationMs: 50, source: { pod: 'loadgen-1' }, destination: { pod: 'web-1' } }]);
});

t.test('every request on a connection carries the one link to its span; the connection counts them and links back to the first maxLinks', async (t) => {
  const { tr, spans } = tracker({ maxLinks: 2 });
  tr.onEvents([ev('open', 1n, A, B, true), ev('open', 2n, B, A, false)]);
  const got = [0, 1, 2].map((i) => tr.linkRequest(A, B, { traceId: String(i).repeat(32), spanId: String(i).repeat(16) }));
  t.ok(got[0] && got[1] === got[0] && got[2] === got[0], 'the same link object each time');
  tr.onEvents([ev('close', 2n, B, A, false), ev('close', 1n, A, B, true)]);
  await settle();
  t.equal(spans[0]!.spanContext().spanId, got[0]!.context.spanId);
  t.equal(spans[0]!.attributes['sockmesh.requests'], 3);
  t.same(spans[0]!.links.map((l) => l.context.spanId), ['0'.repeat(16), '1'.repeat(16)], 'links back to the first two');
});

t.test('the client closes first: it waits for the server side\'s byte count', async (t) => {
  const { tr, spans } = tracker();
  tr.onEvents([ev('open', 1n, A, B, true), ev('open', 2n, B, A, false)]);
  tr.onEvents([ev('close', 1n, A, B, true, { redirSentBytes: 10 })]);
  await settle();
  t.equal(spans.length, 0, 'not yet: the server side is still open');
  tr.onEvents([ev('close', 2n, B, A, false, { redirSentBytes: 20 })]);
  await settle();
  t.equal(spans.length, 1);
  t.equal(spans[0]!.attributes['sockmesh.bytes_received'], 20);
});

t.test('the stack path, and a caller from outside the node (server side only)', async (t) => {
  const { tr, spans, flows } = tracker();
  const host = { ip: '198.18.0.1', port: 5555 };
  tr.onEvents([ev('open', 3n, B, host, false, { shortCircuited: false }), ev('close', 3n, B, host, false, { shortCircuited: false, stackSentBytes: 300, stackRecvBytes: 100 })]);
  await settle();
  t.equal(spans.length, 1);
  t.equal(spans[0]!.kind, 1, 'SERVER: only the server side is ours');
  t.equal(spans[0]!.resource.attributes['service.name'], 'web');
  t.match(spans[0]!.attributes, { 'sockmesh.path': 'stack', 'sockmesh.bytes_sent': 100, 'sockmesh.bytes_received': 300 }, 'bytes as the client sees them');
  t.match(flows[0], { path: 'stack', source: { address: '198.18.0.1:5555' }, destination: { pod: 'web-1' } });
});

t.test('a close without its open (the agent started later) is still reported; sampling 0 keeps flows but no spans', async (t) => {
  const { tr, spans, flows } = tracker({ sampleRatio: 0 });
  tr.onEvents([ev('close', 9n, A, B, true, { openNs: 500n })]);
  await settle();
  t.equal(tr.stats.unmatchedCloses, 1);
  t.equal(flows.length, 1);
  t.equal(spans.length, 0);
});

t.test('the flow table is bounded', async (t) => {
  const { tr } = tracker({ maxFlows: 3 });
  for (let i = 0; i < 5; i++) tr.onEvents([ev('open', BigInt(i), { ip: A.ip, port: 1000 + i }, B, true)]);
  t.equal(tr.stats.tracked, 3);
  t.equal(tr.stats.evicted, 2);
});

t.test('at the bound, a closed connection still waiting is reported at once, not dropped', async (t) => {
  const { tr, spans, flows } = tracker({ maxFlows: 2, lingerMs: 60_000 });
  tr.onEvents([ev('open', 1n, A, B, true), ev('close', 1n, A, B, true, { shortCircuited: false, stackSentBytes: 7 })]);
  tr.onEvents([ev('open', 2n, { ip: A.ip, port: 2000 }, B, true)]);
  t.equal(spans.length, 0, 'lingering (60 s)');
  tr.onEvents([ev('open', 3n, { ip: A.ip, port: 3000 }, B, true)]);
  t.equal(spans.length, 1, 'the table full: the closed one is reported now');
  t.match(flows, [{ type: 'l4', bytesSent: 7 }], 'with its bytes');
  t.equal(tr.stats.evicted, 0, 'nothing dropped');
  tr.onEvents([ev('open', 4n, { ip: A.ip, port: 4000 }, B, true)]);
  t.equal(tr.stats.evicted, 1, 'an open one is still forgotten, counted');
  t.equal(spans.length, 1);
});

t.test('a closed connection waits for the node proxy\'s late requests while the proxy is busy, so they still link both ways', async (t) => {
  const { tr, spans } = tracker({ lingerMs: 200 });
  tr.requestsSeen(); // the proxy reported a batch a moment ago: it is busy
  tr.onEvents([ev('open', 1n, A, B, true), ev('open', 2n, B, A, false)]);
  tr.onEvents([ev('close', 2n, B, A, false), ev('close', 1n, A, B, true)]);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(spans.length, 0, 'past its linger, no batch since the close: it waits');
  tr.requestsSeen(); // a batch cut before the close, without this connection's request
  await new Promise((r) => setTimeout(r, 100));
  t.equal(spans.length, 0, 'one batch since the close is not enough: it may have been cut before it');
  const link = tr.linkRequest(A, B, { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16) });
  t.ok(link, 'the late request still finds the connection');
  tr.requestsSeen();
  await new Promise((r) => setTimeout(r, 100));
  t.equal(spans.length, 1, 'the second batch came: it finishes (within a quarter linger)');
  t.same(spans[0]!.links.map((l) => l.context.spanId), ['d'.repeat(16)], 'linking back to the late request');
  t.equal(spans[0]!.spanContext().spanId, link!.context.spanId);
});

t.test('a closed connection waits at most 5 lingers for a busy proxy, and not at all for an idle one', async (t) => {
  const idle = tracker({ lingerMs: 200 });
  idle.tr.onEvents([ev('open', 1n, A, B, true), ev('close', 1n, A, B, true, { shortCircuited: false })]);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(idle.spans.length, 1, 'no batch ever came: finished at its linger');

  const busy = tracker({ lingerMs: 200 });
  busy.tr.requestsSeen();
  busy.tr.onEvents([ev('open', 1n, A, B, true), ev('close', 1n, A, B, true, { shortCircuited: false })]);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(busy.spans.length, 0, 'a batch came just before the close: still waiting after 1.5 lingers');
  await new Promise((r) => setTimeout(r, 800));
  t.equal(busy.spans.length, 1, 'none came since: finished by 5 lingers after the close');
});

t.test('a request known by its caller\'s IP alone (Envoy) links to the one client connection from it, none when there are several, and none once it is gone', async (t) => {
  const P = { ip: '198.18.255.254', port: 20000 };
  const req = { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) };
  const byIp = { ip: A.ip, port: 0 };
  const { tr } = tracker({ linkByCallerIp: true, maxFlows: 3 });
  t.equal(tr.linkRequest(byIp, P, req), undefined, 'no connection yet');
  tr.onEvents([ev('open', 1n, A, P, true), ev('open', 2n, P, A, false)]);
  t.ok(tr.linkRequest(byIp, P, req), 'the one client socket from that IP to the listener (the proxy\'s own socket is not a caller)');
  tr.onEvents([ev('open', 3n, { ip: A.ip, port: 40001 }, P, true)]);
  t.equal(tr.linkRequest(byIp, P, req), undefined, 'two: which one is not known');
  t.equal(tr.stats.ambiguousLinks, 1);
  t.equal(tr.linkRequest(byIp, { ip: P.ip, port: 20001 }, req), undefined, 'another listener: none');
  tr.onEvents([ev('close', 3n, { ip: A.ip, port: 40001 }, P, true)]);
  await settle();
  t.ok(tr.linkRequest(byIp, P, req), 'one again once the other is reported');
  // the bound evicts the oldest, never closed: it leaves the index too
  tr.onEvents([ev('open', 4n, B, { ip: '198.18.0.9', port: 1 }, true), ev('open', 5n, B, { ip: '198.18.0.9', port: 2 }, true)]);
  t.equal(tr.stats.evicted, 1, 'the oldest, the caller\'s connection, forgotten');
  t.ok(tr.linkRequest(byIp, P, req), 'the client socket evicted: the server side of the same connection links it');
  tr.onEvents([ev('open', 6n, B, { ip: '198.18.0.9', port: 3 }, true)]);
  t.equal(tr.linkRequest(byIp, P, req), undefined, 'both evicted: not linked to a connection no longer tracked');
  const plain = tracker().tr;
  plain.onEvents([ev('open', 1n, A, P, true)]);
  t.equal(plain.linkRequest(byIp, P, req), undefined, 'without linkByCallerIp, no index');
});

t.test('by caller IP, the request\'s times pick the connection: one opened after it began or closed before it ended is not it', async (t) => {
  const P = { ip: '198.18.255.254', port: 20000 };
  const EPOCH_US = 1_700_000_000_000_000; // toEpochNs adds 1.7e18 ns
  const { tr } = tracker({ linkByCallerIp: true, lingerMs: 5000 });
  const byIp = { ip: A.ip, port: 0 };
  // conn 1: 1 ms to 51 ms, closed (lingering); conn 2: opened at 60 ms, open
  tr.onEvents([ev('open', 1n, A, P, true, { tsNs: 1_000_000n }), ev('close', 1n, A, P, true, { tsNs: 51_000_000n })]);
  tr.onEvents([ev('open', 2n, { ip: A.ip, port: 40001 }, P, true, { tsNs: 60_000_000n })]);
  const link = (startMs: number, endMs: number) => tr.linkRequest(byIp, P, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) }, { startUs: EPOCH_US + startMs * 1000, endUs: EPOCH_US + endMs * 1000 });
  const spanOf = (cookie: bigint) => tr.linkRequest({ ip: A.ip, port: cookie === 1n ? A.port : 40001 }, P, { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16) })!.context.spanId;
  t.equal(link(10, 20)?.context.spanId, spanOf(1n), 'inside the first: the first (the second was not open yet)');
  t.equal(link(70, 80)?.context.spanId, spanOf(2n), 'after the first closed: the second');
  t.equal(link(50, 70), undefined, 'across both: neither was open all along');
  t.equal(tr.stats.ambiguousLinks, 0);
  t.equal(tr.linkRequest(byIp, P, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) }), undefined, 'no times: two candidates, ambiguous');
  t.equal(tr.stats.ambiguousLinks, 1);
});

t.test('a tuple reused while its old flow waits for its peer: the old flow leaves the caller index', async (t) => {
  const P = { ip: '198.18.255.254', port: 20000 };
  const { tr } = tracker({ linkByCallerIp: true });
  const byIp = { ip: A.ip, port: 0 };
  // the old connection closed on the client side while the server side stays open: it waits for its peer
  tr.onEvents([ev('open', 1n, A, P, true), ev('open', 2n, P, A, false), ev('close', 1n, A, P, true)]);
  // the same tuple opened again at once, before the old one's linger (it is put back to wait for its peer, the new one over it)
  tr.onEvents([ev('open', 3n, A, P, true)]);
  const link = tr.linkRequest(byIp, P, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) });
  t.equal(link?.context.spanId, tr.linkRequest(A, P, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) })?.context.spanId, 'the new connection, not ambiguous with the old');
  t.equal(tr.stats.ambiguousLinks, 0);
  tr.onEvents([ev('close', 3n, A, P, true), ev('close', 2n, P, A, false)]);
  await settle();
  await settle();
  t.equal(tr.stats.tracked, 0, 'all reported');
  t.equal(tr.linkRequest(byIp, P, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) }), undefined, 'and none left in the index');
});

t.test('by caller IP, a caller from outside the node: the server socket', async (t) => {
  const P = { ip: '198.18.255.254', port: 20000 };
  const OUT = { ip: '10.1.2.3', port: 5555 };
  const { tr } = tracker({ linkByCallerIp: true });
  tr.onEvents([ev('open', 1n, P, OUT, false)]);
  t.ok(tr.linkRequest({ ip: OUT.ip, port: 0 }, P, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) }), 'linked to the proxy\'s socket of that connection');
});
