import t from 'tap';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { asRequestTrace, decodeTrace, encodeTrace, epochUs, requestSpans, type OneAttemptTrace, type TracedRequest } from '../../telemetry/request-spans.js';

const US = 1_764_000_000_000_000; // an epoch µs

/** a request retried once after a 503, then once after a connection error, served on the third try */
const traced = (): TracedRequest => ({
  method: 'POST', path: '/api/items', route: '/api/*', status: 200, caller: '198.18.0.3', callerPort: 40123, local: '198.18.0.1', localPort: 15001,
  traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'aaaaaaaaaaaaaaaa',
  trace: {
    startUs: US, endUs: US + 9000, parentSpanId: 'b7ad6b7169203331', traceState: 'v=1', protocol: '1.1', serverAddress: 'web.shop', serverPort: 80,
    retries: [{ timeUs: US + 2100, attempt: 1, status: 503 }, { timeUs: US + 4100, attempt: 2, error: 'connect ECONNREFUSED' }],
    attempts: [
      { spanId: '1111111111111111', startUs: US + 100, endUs: US + 2000, peer: '198.18.0.4:8080', status: 503 },
      { spanId: '2222222222222222', startUs: US + 3000, endUs: US + 4000, peer: '198.18.0.5:8080', status: 0, error: { type: 'ECONNREFUSED', message: 'connect ECONNREFUSED', exception: 'Error' } },
      { spanId: '3333333333333333', startUs: US + 5000, endUs: US + 8900, peer: '198.18.0.4:8080', status: 200 },
    ],
  },
});

t.test('the caller\'s CLIENT span for the whole request, the retries its events, linked to its connection', async (t) => {
  const link = { context: { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16), traceFlags: 1 }, attributes: { 'sockmesh.link': 'connection' } };
  const [client] = requestSpans(traced(), link);
  t.equal(client!.owner, '198.18.0.3', 'owned by the caller');
  const s = client!.span;
  t.match(s, { name: 'POST /api/*', kind: SpanKind.CLIENT, traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'aaaaaaaaaaaaaaaa', parentSpanId: 'b7ad6b7169203331', parentRemote: true, traceState: 'v=1' });
  t.same([s.startNs, s.endNs], [BigInt(US) * 1000n, BigInt(US + 9000) * 1000n], 'µs → ns');
  t.same(s.attributes, {
    'http.request.method': 'POST', 'url.path': '/api/items', 'server.address': 'web.shop', 'server.port': 80, 'client.address': '198.18.0.3', 'client.port': 40123,
    'network.local.address': '198.18.0.1', 'network.local.port': 15001, 'network.protocol.version': '1.1', 'http.route': '/api/*',
    'network.peer.address': '198.18.0.4', 'network.peer.port': 8080, 'http.response.status_code': 200, 'http.request.resend_count': 2,
  }, 'semantic conventions; the peer is the backend that answered');
  t.same(s.events!.map((e) => [e.name, e.attributes]), [['retry', { 'http.response.status_code': 503, attempt: 1 }], ['retry', { 'error.type': 'connect ECONNREFUSED', attempt: 2 }]]);
  t.same(s.links, [link]);
  t.same(s.status, { code: SpanStatusCode.UNSET });
});

t.test('a SERVER span per attempt, owned by the backend tried, the CLIENT span its parent', async (t) => {
  const [, ...servers] = requestSpans(traced());
  t.same(servers.map((o) => o.owner), ['198.18.0.4', '198.18.0.5', '198.18.0.4']);
  t.ok(servers.every((o) => o.span.kind === SpanKind.SERVER && o.span.parentSpanId === 'aaaaaaaaaaaaaaaa' && o.span.parentRemote === false && o.span.name === 'POST /api/*'));
  t.same(servers.map((o) => o.span.spanId), ['1111111111111111', '2222222222222222', '3333333333333333'], 'the ids the backends saw as their parent');
  t.same(servers[0]!.span.attributes, {
    'http.request.method': 'POST', 'url.path': '/api/items', 'http.route': '/api/*', 'server.address': '198.18.0.4', 'server.port': 8080,
    'client.address': '198.18.0.3', 'network.peer.address': '198.18.0.3', 'network.peer.port': 40123, 'http.response.status_code': 503,
  });
  t.same(servers[0]!.span.status, { code: SpanStatusCode.ERROR }, 'a 5xx answer is an error on the server side');
  t.match(servers[1]!.span, { attributes: { 'error.type': 'ECONNREFUSED', 'http.request.resend_count': 1 }, status: { code: SpanStatusCode.ERROR, message: 'connect ECONNREFUSED' } }, 'no response: the error');
  t.notOk('http.response.status_code' in servers[1]!.span.attributes);
  t.same(servers[1]!.span.events!.map((e) => [e.name, e.attributes]), [['exception', { 'exception.type': 'Error', 'exception.message': 'connect ECONNREFUSED' }]]);
  t.match(servers[2]!.span, { attributes: { 'http.response.status_code': 200, 'http.request.resend_count': 2 }, status: { code: SpanStatusCode.UNSET } });
});

t.test('a failed request: an error with the proxy\'s flags; no route: no SERVER span, the method its name', async (t) => {
  const r = traced();
  const failed = requestSpans({ ...r, status: 504, trace: { ...r.trace, flags: 'UT', attempts: r.trace.attempts.slice(0, 1), retries: [] } })[0]!.span;
  t.match(failed, { attributes: { 'error.type': '504', 'http.response.status_code': 504 }, status: { code: SpanStatusCode.ERROR, message: 'UT' } });
  const { route: _r, ...noRoute } = r;
  const spans = requestSpans({ ...noRoute, status: 404, trace: { ...r.trace, flags: 'NR', attempts: [], retries: [] } });
  t.equal(spans.length, 1);
  t.equal(spans[0]!.span.name, 'POST');
  t.notOk('network.peer.address' in spans[0]!.span.attributes);
});

t.test('on the wire: arrays both ways, malformed ones named', async (t) => {
  const tr = traced().trace;
  t.same(decodeTrace(JSON.parse(JSON.stringify(encodeTrace(tr))), 'x'), tr);
  const bare = { startUs: 1, endUs: 2, protocol: '2', serverAddress: 'a', serverPort: 80, retries: [], attempts: [] };
  t.same(decodeTrace(JSON.parse(JSON.stringify(encodeTrace(bare))), 'x'), bare, 'no parent, state or flags');
  t.throws(() => decodeTrace([1], 'records[3].trace'), /^records\[3\]\.trace: not a request trace$/);
  const w = encodeTrace(tr);
  w[2] = 'XYZ';
  t.throws(() => decodeTrace(w, 'r'), /r: parent span id: not 16 hex digits/);
  const w2 = encodeTrace(tr) as unknown[][][];
  w2[9]![1]![3] = 'no-port';
  t.throws(() => decodeTrace(w2, 'r'), /r: attempts\[1\]: not an attempt/);
  const w3 = encodeTrace(tr) as unknown[][][];
  w3[8]![0]![0] = Number.NaN;
  t.throws(() => decodeTrace(w3, 'r'), /r: retries\[0\]: not a retry/);
});

t.test('a one-attempt trace on the wire: one flat array, read back in the general form with the record\'s backend and status', async (t) => {
  const one: OneAttemptTrace = {
    startUs: 1_700_000_000_000_000, endUs: 1_700_000_000_000_900, parentSpanId: 'b7ad6b7169203331', traceState: 'v=1', protocol: '1.1', serverAddress: 'web', serverPort: 80,
    attemptSpanId: '00f067aa0ba902b7', attemptStartUs: 1_700_000_000_000_100, attemptEndUs: 1_700_000_000_000_800,
  };
  const w = JSON.parse(JSON.stringify(encodeTrace(one))) as unknown[];
  t.same(w, [one.startUs, one.endUs, 'b7ad6b7169203331', 'v=1', '1.1', 'web', 80, '00f067aa0ba902b7', one.attemptStartUs, one.attemptEndUs], 'flat: no list of attempts or retries');
  const general = decodeTrace(w, 'x', '198.18.0.3:8080', 201);
  t.same(general, asRequestTrace(one, '198.18.0.3:8080', 201), 'the same as its general form made in the proxy');
  t.same(general, {
    startUs: one.startUs, endUs: one.endUs, parentSpanId: 'b7ad6b7169203331', traceState: 'v=1', protocol: '1.1', serverAddress: 'web', serverPort: 80, flags: undefined, retries: [],
    attempts: [{ spanId: '00f067aa0ba902b7', startUs: one.attemptStartUs, endUs: one.attemptEndUs, peer: '198.18.0.3:8080', status: 201, error: undefined }],
  });
  const bare = { ...one, parentSpanId: undefined, traceState: undefined };
  t.same(decodeTrace(JSON.parse(JSON.stringify(encodeTrace(bare))), 'x', '198.18.0.3:8080', 200), asRequestTrace(bare, '198.18.0.3:8080', 200), 'no parent or state');
  t.same(asRequestTrace({ ...one, attemptSpanId: '' }, '', 0).attempts, [], 'an attempt never started: none');
  t.throws(() => decodeTrace(w, 'records[2].trace'), /^records\[2\]\.trace: one attempt, but the record names no backend$/);
  t.throws(() => decodeTrace(w, 'r', ['198.18.0.3:8080'], 200), /^r: one attempt, but the record names no backend$/, 'a backend that is not a string');
  for (const bad of ['198.18.0.3', '198.18.0.3:', '198.18.0.3:80x', ':']) t.throws(() => decodeTrace(w, 'r', bad, 200), /^r: one attempt, but the record names no backend$/, `backend ${JSON.stringify(bad)}: no port`);
  t.same(decodeTrace(w, 'r', '[fd00::1]:8080', 200).attempts[0]!.peer, '[fd00::1]:8080', 'an IPv6 backend with its port');
  t.throws(() => decodeTrace(w, 'r', '198.18.0.3:8080', '200'), /^r: one attempt, but the record's status is not a number$/);
  t.throws(() => decodeTrace(Object.assign([...w], { 7: 'xyz' }), 'r', '198.18.0.3:8080', 200), /^r: attempt span id: not 16 hex digits$/);
  t.throws(() => decodeTrace(Object.assign([...w], { 9: '5' }), 'r', '198.18.0.3:8080', 200), /^r: attempt times: not numbers$/);
});

t.test('epochUs: Unix µs from the monotonic clock', async (t) => {
  // bracketed by the wall clock; its origin was read to the ms, hence 2 ms either side
  const wallBefore = Date.now();
  const a = epochUs();
  const wallAfter = Date.now();
  t.ok(a / 1000 >= wallBefore - 2 && a / 1000 <= wallAfter + 2, `${a} is now (${wallBefore}..${wallAfter} ms)`);
  t.ok(epochUs() >= a, 'never backwards');
  t.ok(Number.isInteger(a), 'whole µs');
});

t.test('a request a policy denied: an event on the CLIENT span names the rule', async (t) => {
  const r = traced();
  const [client] = requestSpans({ ...r, status: 403, deniedBy: 'shop/deny-post/rule-0', trace: { ...r.trace, retries: [], attempts: [] } });
  t.same(client!.span.events!.map((e) => [e.name, e.attributes, e.timeNs]), [['sockmesh.policy.denied', { 'sockmesh.policy': 'shop/deny-post/rule-0', 'sockmesh.policy.layer': 'proxy-l7' }, BigInt(US + 9000) * 1000n]]);
  t.match(client!.span, { status: { code: SpanStatusCode.ERROR }, attributes: { 'error.type': '403', 'http.response.status_code': 403 } });
});
