import t from 'tap';
import type { Link } from '@opentelemetry/api';
import { attributes, groupHead, RequestJsonWriter } from '../../telemetry/otlp-json-write.js';
import { MAX_SHAPES, PER_KEY, shapeCount, writeRequestSpans } from '../../telemetry/request-spans-json.js';
import { requestSpans, type AttemptTrace, type TracedRequest } from '../../telemetry/request-spans.js';

const US = 1_764_000_000_000_000;
const heads = new Map(['198.18.0.3', '198.18.0.4', '198.18.0.5', 'fd00::5'].map((ip) => [ip, groupHead(attributes({ 'service.name': `w-${ip}` }), { name: 'sockmesh.node-proxy' })]));
const headOf = (ip: string): string => heads.get(ip) ?? groupHead(attributes({ 'service.name': 'node' }), { name: 'sockmesh.node-proxy' });

const base = (): TracedRequest => ({
  method: 'GET', path: '/a', route: '/a', status: 200, caller: '198.18.0.3', callerPort: 40000, local: '198.18.0.1', localPort: 15001,
  traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'aaaaaaaaaaaaaaaa',
  trace: { startUs: US, endUs: US + 800, protocol: '1.1', serverAddress: 'web.shop', serverPort: 80, retries: [], attempts: [{ spanId: '1111111111111111', startUs: US + 100, endUs: US + 700, peer: '198.18.0.4:8080', status: 200 }] },
});
const attempt = (o: Partial<AttemptTrace>): AttemptTrace => ({ spanId: '2222222222222222', startUs: US + 10, endUs: US + 20, peer: '198.18.0.5:8080', status: 200, ...o });

/** Every shape a record takes: what the generic path (span objects, then writeSpan) writes is what the direct one writes. */
const shapes: [string, (r: TracedRequest) => void][] = [
  ['a plain request', () => undefined],
  ['no route: the method is the name', (r) => { delete r.route; }],
  ['a caller\'s trace continued, with its tracestate', (r) => { r.trace.parentSpanId = 'b7ad6b7169203331'; r.trace.traceState = 'v=1,w="2"'; }],
  ['retries after a status and after an error', (r) => {
    r.trace.retries = [{ timeUs: US + 300, attempt: 1, status: 503 }, { timeUs: US + 400, attempt: 2, error: 'connect ECONNREFUSED' }, { timeUs: US + 450, attempt: 3 }];
    r.trace.attempts = [attempt({ status: 503 }), attempt({ status: 0, error: { type: 'ECONNREFUSED', message: 'connect "refused"', exception: 'Error' } }), attempt({ status: 0, error: { type: 'timeout', message: 'timeout', exception: 'AbortError' } }), ...r.trace.attempts];
  }],
  ['a failed request with the proxy\'s flags', (r) => { r.status = 504; r.trace.flags = 'UT'; r.trace.attempts[0]!.status = 0; }],
  ['a 4xx with no flags', (r) => { r.status = 404; }],
  ['denied by a policy: no backend, an event', (r) => { r.status = 403; r.deniedBy = 'shop/deny-all/rule-0'; r.trace.attempts = []; }],
  ['denied after retries (both kinds of event)', (r) => { r.status = 403; r.deniedBy = 'none'; r.trace.retries = [{ timeUs: US + 5, attempt: 1, status: 500 }]; }],
  ['text to escape, and UTF-8', (r) => { r.path = '/caf\u00e9/"q"\\\u0001\u2028'; r.route = '/caf\u00e9/*'; r.method = 'PÖST'; r.trace.serverAddress = 'b\u00fccher.example'; }],
  ['an IPv6 backend and caller', (r) => { r.caller = 'fd00::3'; r.trace.attempts[0]!.peer = '[fd00::5]:8080'; }],
  ['a 5xx from the backend', (r) => { r.status = 502; r.trace.attempts[0]!.status = 502; }],
  ['an end before the start (a clock step): the start', (r) => { r.trace.endUs = US - 5; r.trace.attempts[0]!.endUs = US; }],
  ['times that are fractions, and zero', (r) => { r.trace.startUs = 0; r.trace.endUs = US + 0.5; r.trace.attempts[0]!.startUs = US + 0.4999; }],
  ['odd numbers: a port that is not an integer, a NaN port', (r) => { r.trace.serverPort = 80.5; r.trace.attempts[0]!.peer = '198.18.0.4:x'; }],
  // what a shape cannot hold: written the long way
  ['a caller\'s port that is not an integer', (r) => { r.callerPort = 40000.5; }],
  ['a negative caller\'s port', (r) => { r.callerPort = -1; }],
  ['a caller\'s port not known (0, from Envoy\'s spans): its attributes left out', (r) => { r.callerPort = 0; }],
  ['a status that is not an integer', (r) => { r.status = 200.5; r.trace.attempts[0]!.status = 200.25; }],
  ['an empty span id', (r) => { r.spanId = ''; }],
  ['an empty parent span id and tracestate', (r) => { r.trace.parentSpanId = ''; r.trace.traceState = ''; }],
];

const links: [string, Link | undefined][] = [
  ['no link', undefined],
  ['the connection\'s link', { context: { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16), traceFlags: 1 }, attributes: { 'sockmesh.link': 'connection' } }],
  ['a link with values of every type', { context: { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16), traceFlags: 0, isRemote: true }, attributes: { s: 'x', i: 2, d: 0.5, b: false, nan: NaN, arr: ['a', 'b'], none: undefined } }],
];

for (const [what, shape] of shapes) {
  t.test(`${what}: the same bytes as the span objects written`, async (t) => {
    for (const [how, link] of links) {
      const r = base();
      shape(r);
      const generic = new RequestJsonWriter();
      for (const o of requestSpans(r, link)) generic.add(headOf(o.owner), o.span);
      const direct = new RequestJsonWriter();
      writeRequestSpans(direct, r, link, headOf);
      const want = Buffer.concat(generic.pieces()).toString();
      t.equal(Buffer.concat(direct.pieces()).toString(), want, how);
      t.equal(direct.count, generic.count, `${how}: spans counted`);
      t.doesNotThrow(() => JSON.parse(want), `${how}: JSON`);
      // again, with what each request has of its own changed: a common request's shape is kept from the first
      const again = base();
      shape(again);
      Object.assign(again, { traceId: '1'.repeat(32), spanId: 'b'.repeat(16), callerPort: 41234, path: `${again.path}/more` });
      again.trace.startUs += 1_000_001;
      again.trace.endUs += 2_000_003;
      for (const a of again.trace.attempts) { a.spanId = 'e'.repeat(16); a.startUs += 1_000_500; a.endUs += 1_999_999; }
      const generic2 = new RequestJsonWriter();
      for (const o of requestSpans(again, link)) generic2.add(headOf(o.owner), o.span);
      const direct2 = new RequestJsonWriter();
      writeRequestSpans(direct2, again, link, headOf);
      t.equal(Buffer.concat(direct2.pieces()).toString(), Buffer.concat(generic2.pieces()).toString(), `${how}: a second request of the shape`);
    }
  });
}

/** The generic path's bytes and the direct path's for each record, in one line each. */
function both(records: TracedRequest[]): [string, string] {
  const generic = new RequestJsonWriter();
  const direct = new RequestJsonWriter();
  for (const r of records) {
    for (const o of requestSpans(r)) generic.add(headOf(o.owner), o.span);
    writeRequestSpans(direct, r, undefined, headOf);
  }
  return [Buffer.concat(direct.pieces()).toString(), Buffer.concat(generic.pieces()).toString()];
}

t.test('a common request\'s shape is made once and used again', async (t) => {
  const r = base();
  r.route = '/made-once';
  const before = shapeCount();
  const [d1, g1] = both([r]);
  t.equal(d1, g1, 'the first request');
  t.equal(shapeCount(), before + 1, 'made its shape');
  const again = base();
  again.route = '/made-once';
  Object.assign(again, { traceId: '2'.repeat(32), callerPort: 40001, path: '/other' });
  const [d2, g2] = both([again]);
  t.equal(d2, g2, 'the second');
  t.equal(shapeCount(), before + 1, 'from the same shape');
});

t.test('common requests that differ in one field each are not taken for one another', async (t) => {
  const changes: ((r: TracedRequest) => void)[] = [
    (r) => { r.method = 'POST'; }, (r) => { r.route = '/b'; }, (r) => { delete r.route; }, (r) => { r.trace.serverAddress = 'api.shop'; }, (r) => { r.trace.serverPort = 8080; },
    (r) => { r.caller = '198.18.0.5'; }, (r) => { r.local = '198.18.0.9'; }, (r) => { r.localPort = 15002; }, (r) => { r.trace.protocol = '2'; },
    (r) => { r.trace.attempts[0]!.peer = '198.18.0.4:8081'; }, (r) => { r.status = 204; }, (r) => { r.trace.attempts[0]!.status = 0; }, (r) => { r.status = 302; r.trace.attempts[0]!.status = 503; },
    // the same caller, backend and route: the key they share
    (r) => { r.route = 'undefined'; },
  ];
  const records = [base(), ...changes.map((c) => { const r = base(); c(r); return r; }), base()];
  const [direct, generic] = both([...records, ...records]);
  t.equal(direct, generic, `${records.length} shapes, each written twice`);
});

t.test('more shapes than are kept under one key, and more than are kept at all: the bytes stay right, the count bounded', async (t) => {
  const sameKey = Array.from({ length: 20 }, (_, i) => { const r = base(); r.route = '/many-statuses'; r.status = 200 + i; r.trace.attempts[0]!.status = 200 + i; return r; });
  const before = shapeCount();
  const [d1, g1] = both([...sameKey, ...sameKey.reverse()]);
  t.equal(d1, g1, '20 statuses of one caller, backend and route, twice');
  t.equal(shapeCount() - before, PER_KEY, `${PER_KEY} of them kept, the rest written the long way`);
  const many = Array.from({ length: MAX_SHAPES + 300 }, (_, i) => { const r = base(); r.route = `/r${i}`; return r; });
  const [d2, g2] = both(many);
  t.equal(d2, g2, `${many.length} routes`);
  t.ok(shapeCount() <= MAX_SHAPES, `${shapeCount()} shapes kept, at most ${MAX_SHAPES}`);
  t.ok(shapeCount() >= 300, 'the latest ones kept');
});

t.test('many requests into one line: grouped by owner as the span objects are, across buffer growth', async (t) => {
  const generic = new RequestJsonWriter();
  const direct = new RequestJsonWriter();
  for (let i = 0; i < 300; i++) {
    const r = base();
    r.callerPort = 40000 + i;
    r.path = `/item/${'x'.repeat(i % 50)}\u00e9`;
    if (i % 3 === 0) r.trace.attempts[0]!.peer = '198.18.0.5:8080';
    if (i % 7 === 0) shapes[3]![1](r);
    for (const o of requestSpans(r)) generic.add(headOf(o.owner), o.span);
    writeRequestSpans(direct, r, undefined, headOf);
  }
  const want = Buffer.concat(generic.pieces());
  t.ok(want.length > 128 << 10, 'larger than one buffer');
  t.ok(Buffer.concat(direct.pieces()).equals(want), 'the same bytes');
  t.equal(direct.count, generic.count);
});
