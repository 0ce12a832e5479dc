/* An Envoy node proxy's spans read back into request records: the shapes its tracer writes (see tests/fixtures/envoy-tracer-stand-in.ts for where they come from). */
import t from 'tap';
import { EnvoySpanJoiner, isAttemptSpan } from '../../../mesh-agent/telemetry/envoy-spans.js';
import { WIRE_SPAN_KIND, type OtlpSpan } from '../../../telemetry/otlp-trace-decoder.js';

const TRACE = 'aa'.repeat(16);
const REQ = 'bb'.repeat(8);
const T0 = 1_764_000_000_000_000_000n; // ns
const LISTENER = { 'sockmesh.listener': '198.18.255.254:20000', 'sockmesh.service': 'shop/web:80' };

function request(tags: Record<string, string>, over: Partial<OtlpSpan> = {}): OtlpSpan {
  return {
    traceId: TRACE, spanId: REQ, parentSpanId: '', traceState: '', name: '/api/*', kind: WIRE_SPAN_KIND.server, startNs: T0, endNs: T0 + 9_000_000n,
    attributes: new Map(Object.entries({
      'http.method': 'GET', 'http.url': 'http://web.shop/api/items?limit=5', 'http.protocol': 'HTTP/1.1', 'http.status_code': '200', response_flags: '-',
      'peer.address': '198.18.0.2', upstream_cluster: 'shop/web:80', ...LISTENER, ...tags,
    })),
    serviceName: 'sockmesh-node-proxy', ...over,
  };
}

function attempt(i: number, backend: string, status: number, flags = '-', over: Partial<OtlpSpan> = {}): OtlpSpan {
  return {
    traceId: TRACE, spanId: `${i}`.padStart(16, 'c'), parentSpanId: REQ, traceState: '', name: 'router shop/web:80 egress', kind: WIRE_SPAN_KIND.client,
    startNs: T0 + BigInt(1 + i * 3) * 1_000_000n, endNs: T0 + BigInt(3 + i * 3) * 1_000_000n,
    attributes: new Map(Object.entries({ upstream_address: backend, 'peer.address': backend, 'http.status_code': String(status), response_flags: flags, 'http.protocol': 'HTTP/1.1', ...(i > 0 && { 'retry.count': String(i) }), ...LISTENER })),
    serviceName: 'sockmesh-node-proxy', ...over,
  };
}

t.test('one attempt that answered: the record mesh-proxy would send, its trace in the general form', async (t) => {
  const j = new EnvoySpanJoiner();
  const { records, refused } = j.add([attempt(0, '198.18.0.3:8080', 200), request({})], 1000);
  t.same(refused, []);
  t.equal(records.length, 1);
  const r = records[0]!;
  t.match(r, {
    method: 'GET', path: '/api/items', route: '/api/*', status: 200, caller: '198.18.0.2', callerPort: 0, local: '198.18.255.254', localPort: 20000,
    upstream: '198.18.0.3:8080', host: 'web.shop', attempts: 1, traceId: TRACE, spanId: REQ, sampled: true, deniedBy: undefined,
    endMs: Number((T0 + 9_000_000n) / 1_000_000n), durationMs: 9,
  });
  t.same(r.trace, {
    startUs: Number(T0 / 1000n), endUs: Number(T0 / 1000n) + 9000, parentSpanId: undefined, traceState: undefined, protocol: '1.1', serverAddress: 'web.shop', serverPort: 80,
    flags: undefined, retries: [], attempts: [{ spanId: '0'.padStart(16, 'c'), startUs: Number(T0 / 1000n) + 1000, endUs: Number(T0 / 1000n) + 3000, peer: '198.18.0.3:8080', status: 200, error: undefined }],
  }, 'the service port from the sockmesh.service tag when the Host has none; the query left out of the path');
  t.same(j.stats, { requests: 1, attempts: 1, orphaned: 0, refused: 0 });
  t.equal(j.waiting, 0);
});

t.test('a caller\'s traceparent and tracestate, a port in peer.address and in the Host, Envoy\'s own span name', async (t) => {
  const j = new EnvoySpanJoiner();
  const parent = 'dd'.repeat(8);
  const { records } = j.add([attempt(0, '198.18.0.3:8080', 200), request({ 'peer.address': '198.18.0.2:41234', 'http.url': 'http://web.shop:8080/x', 'http.protocol': 'HTTP/2' }, { parentSpanId: parent, traceState: 'k=v', name: 'ingress' })], 1000);
  t.match(records[0], { caller: '198.18.0.2', callerPort: 41234, route: undefined, host: 'web.shop:8080', path: '/x' });
  t.match(records[0]!.trace, { parentSpanId: parent, traceState: 'k=v', serverAddress: 'web.shop', serverPort: 8080, protocol: '2' });
});

t.test('retries: every attempt in order, a retry event after each failed one (a status, or the flags of one that got none)', async (t) => {
  const j = new EnvoySpanJoiner();
  // attempts out of order across exports, the request's span last
  t.same(j.add([attempt(1, '198.18.0.4:8080', 0, 'UF')], 1000).records, [], 'an attempt waits for its request');
  t.equal(j.waiting, 1);
  const { records } = j.add([attempt(2, '198.18.0.3:8080', 200), attempt(0, '198.18.0.3:8080', 503), request({})], 1100);
  const tr = records[0]!.trace!;
  t.same(tr.attempts.map((a) => [a.peer, a.status, a.error?.type]), [['198.18.0.3:8080', 503, undefined], ['198.18.0.4:8080', 0, 'UF'], ['198.18.0.3:8080', 200, undefined]]);
  t.equal(tr.attempts[1]!.error!.message, 'upstream connection failure', 'the flag in words');
  t.same(tr.retries.map((e) => [e.attempt, e.status, e.error]), [[1, 503, undefined], [2, undefined, 'UF']]);
  t.equal(tr.retries[0]!.timeUs, tr.attempts[0]!.endUs, 'a retry at the failed attempt\'s end');
  t.match(records[0], { attempts: 3, upstream: '198.18.0.3:8080' });
  t.equal(j.waiting, 0);
});

t.test('no attempt: no route (404, NR), an RBAC denial (403, no flag: Envoy does not say which policy), a failure with its flags', async (t) => {
  const j = new EnvoySpanJoiner();
  const nr = j.add([request({ 'http.status_code': '404', response_flags: 'NR' }, { spanId: '1'.repeat(16) })], 1000).records[0]!;
  t.match(nr, { status: 404, attempts: 0, upstream: undefined, deniedBy: undefined });
  t.equal(nr.trace!.flags, 'NR');
  t.same(nr.trace!.attempts, []);
  const rbac = request({ 'http.status_code': '403' }, { spanId: '2'.repeat(16) });
  rbac.attributes.delete('upstream_cluster'); // denied before the router chose a cluster
  const denied = j.add([rbac], 1000).records[0]!;
  t.match(denied, { status: 403, attempts: 0, deniedBy: 'unknown' });
  const lost = j.add([request({ 'http.status_code': '403' }, { spanId: '5'.repeat(16) })], 1000).records[0]!;
  t.equal(lost.deniedBy, undefined, 'a backend\'s 403 whose attempt span was lost: a cluster was chosen, not a denial');
  const backend403 = j.add([attempt(0, '198.18.0.3:8080', 403, '-', { parentSpanId: '3'.repeat(16) }), request({ 'http.status_code': '403' }, { spanId: '3'.repeat(16) })], 1000).records[0]!;
  t.equal(backend403.deniedBy, undefined, 'a backend\'s own 403 is not a denial');
  const uf = j.add([attempt(0, '198.18.0.3:8080', 0, 'UF', { parentSpanId: '4'.repeat(16) }), request({ 'http.status_code': '503', response_flags: 'UF,URX' }, { spanId: '4'.repeat(16) })], 1000).records[0]!;
  t.equal(uf.trace!.flags, 'UF,URX');
  t.same(uf.trace!.attempts[0]!.error, { type: 'UF', message: 'upstream connection failure', exception: 'envoy.response_flags' });
});

t.test('attempts whose request never comes are dropped waitMs after the last of them came, or when too many wait (the oldest), and counted', async (t) => {
  const j = new EnvoySpanJoiner({ waitMs: 1000, maxWaiting: 2 });
  const lone = (parent: string, i = 0) => attempt(i, '198.18.0.3:8080', 503, '-', { parentSpanId: parent.repeat(16) });
  j.add([lone('5')], 0);
  j.add([lone('6'), lone('7')], 500);
  t.equal(j.waiting, 2);
  t.equal(j.stats.orphaned, 1, 'the room full: the oldest (5) pushed out');
  j.add([lone('6', 1)], 900); // a retry of 6: its request waits on, from now
  t.equal(j.stats.orphaned, 2, 'the room full again: 7, now the oldest, pushed out');
  t.equal(j.expire(1800), 0, '6 waits waitMs from its last attempt');
  t.equal(j.expire(1900), 2, 'then both its attempts go');
  t.equal(j.waiting, 0);
  const late = j.add([request({}, { spanId: '5'.repeat(16) })], 2000).records[0]!;
  t.equal(late.attempts, 0, 'a request come too late has no attempt');
  j.add([lone('8')], 2000);
  t.equal(j.drain(), 1, 'at the end, what still waits is dropped');
  t.equal(j.stats.orphaned, 5, 'and counted');
});

t.test('a request and its attempts in one export are joined before anything waits, even with the waiting room full', async (t) => {
  const j = new EnvoySpanJoiner({ maxWaiting: 1 });
  j.add([attempt(0, '198.18.0.3:8080', 200, '-', { parentSpanId: '9'.repeat(16) })], 0);
  const { records } = j.add([attempt(0, '198.18.0.3:8080', 503), attempt(1, '198.18.0.3:8080', 200), request({})], 10);
  t.equal(records[0]!.trace!.attempts.length, 2, 'both attempts with their request');
  t.equal(j.stats.orphaned, 0, 'nothing pushed out');
  t.equal(j.waiting, 1);
});

t.test('addresses and URLs: IPv6 (bracketed with a port), IPv4-mapped, a query without a path; a reset without flags; times', async (t) => {
  const j = new EnvoySpanJoiner();
  const one = (tags: Record<string, string>, attemptTags: Record<string, string> = {}, over: Partial<OtlpSpan> = {}) => {
    const at = attempt(0, '198.18.0.3:8080', 200);
    for (const [k, v] of Object.entries(attemptTags)) at.attributes.set(k, v);
    return j.add([at, request(tags, over)], 0);
  };
  t.match(one({ 'peer.address': 'fd00::1' }).records[0], { caller: 'fd00::1', callerPort: 0 }, 'a bare IPv6 caller');
  t.match(one({ 'peer.address': '[fd00::1]:4000' }).records[0], { caller: 'fd00::1', callerPort: 4000 });
  t.match(one({ 'peer.address': '::ffff:198.18.0.2' }).records[0], { caller: '198.18.0.2' }, 'IPv4-mapped: the IPv4 address');
  t.match(one({ 'peer.address': 'fd00::1:80' }).records[0], { caller: 'fd00::1:80', callerPort: 0 }, 'unbracketed, it is all address');
  t.match(one({ 'peer.address': '198.18.0.2:99999' }).refused[0], /peer\.address: missing or not an address/, 'a port out of range');
  t.match(one({ 'peer.address': 'web:80' }).refused[0], /peer\.address: missing or not an address/, 'a name');
  t.match(one({}, { upstream_address: '[fd00::3]:8080' }).records[0], { upstream: 'fd00::3:8080' });
  t.match(one({ 'http.url': 'http://web?x=1' }).records[0], { host: 'web', path: '/' }, 'a query without a path');
  t.match(one({ 'http.url': 'http://web.shop:8080#top' }).records[0], { host: 'web.shop:8080', path: '/' });
  const reset = one({}, { 'http.status_code': '0', 'error.reason': 'remote reset' }).records[0]!;
  t.same(reset.trace!.attempts[0]!.error, { type: 'reset', message: 'remote reset', exception: 'envoy.upstream_reset' }, 'no response and no flag: the reset\'s reason');
  t.match(one({}, {}, { startNs: 0n }).refused[0], /: times: start 0 ns/);
  t.match(one({}, {}, { endNs: T0 - 1n }).refused[0], /: times: /, 'an end before the start');
});

t.test('spans that are not a sockmesh listener\'s request are refused, the span and the field named; their attempts are counted orphaned', async (t) => {
  const j = new EnvoySpanJoiner();
  const cases: [string, OtlpSpan, RegExp][] = [
    ['no listener tag', request({}, { attributes: new Map([['http.method', 'GET'], ['http.url', 'http://a/'], ['peer.address', '198.18.0.2']]) }), /sockmesh\.listener: missing/],
    ['no method', request({ 'http.method': '' }), /http\.method: missing/],
    ['a URL without a scheme', request({ 'http.url': '/x' }), /http\.url: "\/x" is not a URL/],
    ['no caller', request({ 'peer.address': '' }), /peer\.address: missing or not an address/],
    ['a bad status', request({ 'http.status_code': 'abc' }), /http\.status_code: "abc" is not a status/],
  ];
  for (const [name, span, want] of cases) {
    const r = j.add([span], 0);
    t.same(r.records, [], name);
    t.match(r.refused[0], new RegExp(`^span ${REQ} \\(/api/\\*\\): ${want.source}`), name);
  }
  const bad = j.add([attempt(0, 'nowhere', 200), request({})], 0);
  t.match(bad.refused[0], /attempt span c+0: upstream_address: missing or not ip:port/, 'an attempt without its backend');
  t.equal(j.stats.orphaned, 1, 'its attempt with it');
  t.match(j.add([attempt(0, '198.18.0.3:8080', 200, '-', { parentSpanId: '' })], 0).refused[0], /an attempt's span without a parent/);
  t.equal(j.stats.refused, 7);
  t.equal(j.waiting, 0, 'nothing left waiting');
});

t.test('an attempt span is a CLIENT span named router <cluster> egress', async (t) => {
  t.ok(isAttemptSpan(attempt(0, '198.18.0.3:8080', 200)));
  t.notOk(isAttemptSpan(attempt(0, '198.18.0.3:8080', 200, '-', { kind: WIRE_SPAN_KIND.server })), 'not a SERVER span');
  t.notOk(isAttemptSpan(request({}, { kind: WIRE_SPAN_KIND.client, name: 'egress web.shop' })), 'not Envoy\'s egress request span');
});
