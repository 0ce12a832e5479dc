/* mesh-proxy against the agent's ADS server and HTTP backends on loopback (the kernel redirect is tested with real pods elsewhere). */
import { request } from 'undici';
import t from 'tap';
import { type RequestRecord, splitHost } from '../../mesh-proxy/proxy.js';
import { asRequestTrace, isOneAttempt, type OneAttemptTrace, type RequestTrace } from '../../telemetry/request-spans.js';
import { backend, freePort, l7Fixture, parseRoutes } from '../fixtures/l7.js';

/** The HTTPRoute "web" in shop, attached to the Service web, with these rules (YAML list items, from a new line). */
const webRoutes = (rules: string) => parseRoutes(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: web }]
  rules:${rules}`);

const split = (w1: number, w2: number) => webRoutes(`
  - matches: [{ headers: [{ name: x-canary, value: "yes" }] }]
    backendRefs: [{ name: web-v2, port: 80 }]
  - backendRefs: [{ name: web-v1, port: 80, weight: ${w1} }, { name: web-v2, port: 80, weight: ${w2} }]
`);

t.test('routing: a 90/10 split within tolerance, header routing, 404 for no match', async (t) => {
  const { publish, log } = await l7Fixture(t);
  const v1 = await backend(t, 'v1');
  const v2 = await backend(t, 'v2');
  const listen = await freePort();
  await publish([{ service: 'shop/web', port: 80, listenerPort: listen }], split(90, 10), { 'shop/web-v1:80': [v1.port], 'shop/web-v2:80': [v2.port], 'shop/web:80': [v1.port] });
  const counts = { v1: 0, v2: 0 } as Record<string, number>;
  for (let i = 0; i < 1000; i++) {
    const r = await request(`http://127.0.0.1:${listen}/items`);
    counts[await r.body.text()]!++;
  }
  t.ok(counts.v2! >= 70 && counts.v2! <= 130, `1000 requests: v1 ${counts.v1}, v2 ${counts.v2} (10% ± 3 points)`);
  const canary = await request(`http://127.0.0.1:${listen}/`, { headers: { 'x-canary': 'yes' } });
  t.equal(await canary.body.text(), 'v2', 'a header match sends to its backend');
  t.equal(log.at(-1)?.route, 'shop/web#0', 'the access log names the route');
});

t.test('a 503 is retried to success; a slow backend gets 504 at the timeout', async (t) => {
  const { publish } = await l7Fixture(t);
  let calls = 0;
  const flaky = await backend(t, 'flaky', (_req, res) => { calls++; res.statusCode = calls % 3 === 0 ? 200 : 503; res.end(calls % 3 === 0 ? 'ok' : 'busy'); });
  const slow = await backend(t, 'slow', (_req, res) => { setTimeout(() => res.end('late'), 1500); });
  const listen = await freePort();
  const routes = webRoutes(`
  - matches: [{ path: { type: PathPrefix, value: /flaky } }]
    backendRefs: [{ name: flaky, port: 80 }]
    retry: { attempts: 3, codes: [503], backoff: 5ms }
  - matches: [{ path: { type: PathPrefix, value: /slow } }]
    backendRefs: [{ name: slow, port: 80 }]
    timeouts: { request: 300ms }
`);
  await publish([{ service: 'shop/web', port: 80, listenerPort: listen }], routes, { 'shop/flaky:80': [flaky.port], 'shop/slow:80': [slow.port], 'shop/web:80': [flaky.port] });
  const r = await request(`http://127.0.0.1:${listen}/flaky`, { method: 'POST', body: 'payload' });
  t.equal(r.statusCode, 200, 'two 503s retried, the third try answers');
  t.equal(await r.body.text(), 'ok');
  t.equal(calls, 3, 'three tries reached the backend');
  const t0 = Date.now();
  const s = await request(`http://127.0.0.1:${listen}/slow`);
  const took = Date.now() - t0;
  t.equal(s.statusCode, 504, 'the slow backend: 504');
  t.ok(took >= 280 && took < 1200, `at the 300 ms timeout (${took} ms)`);
});

t.test('trace context: the backend gets the same trace id and a new parent span', async (t) => {
  const { publish } = await l7Fixture(t);
  const b = await backend(t, 'b');
  const listen = await freePort();
  await publish([{ service: 'shop/b', port: 80, listenerPort: listen }], new Map(), { 'shop/b:80': [b.port] });
  const incoming = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  await (await request(`http://127.0.0.1:${listen}/`, { headers: { traceparent: incoming, tracestate: 'vendor=x' } })).body.text();
  const got = String(b.seen.at(-1)!.headers.traceparent);
  const [, traceId, parent, flags] = got.split('-');
  t.equal(traceId, '0af7651916cd43dd8448eb211c80319c', 'the same trace id');
  t.not(parent, 'b7ad6b7169203331', `a new parent span (${parent})`);
  t.equal(flags, '01', 'still sampled');
  t.equal(b.seen.at(-1)!.headers.tracestate, 'vendor=x', 'tracestate travels along');
  await (await request(`http://127.0.0.1:${listen}/`)).body.text();
  t.match(String(b.seen.at(-1)!.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, 'without one, a trace is started');
  await (await request(`http://127.0.0.1:${listen}/`, { headers: { traceparent: 'garbage', tracestate: 'vendor=x' } })).body.text();
  t.match(String(b.seen.at(-1)!.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, 'an invalid traceparent: a new trace');
  t.equal(b.seen.at(-1)!.headers.tracestate, undefined, 'and no tracestate of the old one');
});

t.test('a sampled request\'s record carries its trace: ids, times, each attempt, the retries', async (t) => {
  const records: RequestRecord[] = [];
  const { publish } = await l7Fixture(t, { onRequest: (r) => records.push(r) });
  let calls = 0;
  const flaky = await backend(t, 'flaky', (_req, res) => { calls++; res.statusCode = calls === 1 ? 503 : 200; res.end('x'); });
  const listen = await freePort();
  await publish([{ service: 'shop/web', port: 80, listenerPort: listen }], webRoutes(`
  - matches: [{ path: { type: PathPrefix, value: /api } }]
    backendRefs: [{ name: flaky, port: 80 }]
    retry: { attempts: 2, codes: [503], backoff: 1ms }
`), { 'shop/flaky:80': [flaky.port], 'shop/web:80': [flaky.port] });
  const before = Date.now() * 1000;
  await (await request(`http://127.0.0.1:${listen}/api/x`, { headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'v=1' } })).body.text();
  const after = Date.now() * 1000;
  const r = records.at(-1)!;
  t.equal(r.traceId, '0af7651916cd43dd8448eb211c80319c');
  t.equal(r.status, 200);
  t.equal(r.route, '/api/*', 'the route template');
  t.ok(r.trace, 'sampled: the record carries a trace');
  t.notOk(isOneAttempt(r.trace!), 'a retry: in the general form');
  const tr = r.trace as RequestTrace;
  t.equal(tr.parentSpanId, 'b7ad6b7169203331', 'the caller\'s span is the parent');
  t.equal(tr.traceState, 'v=1');
  t.equal(tr.protocol, '1.1');
  t.same([tr.serverAddress, tr.serverPort], ['127.0.0.1', listen]);
  t.ok(tr.startUs >= before - 2000 && tr.endUs <= after + 2000 && tr.startUs <= tr.endUs, 'epoch µs around the request');
  t.equal(tr.attempts.length, 2, 'two attempts');
  t.same(tr.attempts.map((a) => [a.peer, a.status]), [[`127.0.0.1:${flaky.port}`, 503], [`127.0.0.1:${flaky.port}`, 200]]);
  t.ok(tr.attempts.every((a) => a.startUs >= tr.startUs && a.endUs <= tr.endUs && a.startUs <= a.endUs), 'attempts within the request');
  t.equal(flaky.seen.at(-1)!.headers.traceparent, `00-0af7651916cd43dd8448eb211c80319c-${tr.attempts[1]!.spanId}-01`, 'the backend\'s parent is its attempt\'s SERVER span');
  t.same(tr.retries.map((e) => [e.attempt, e.status]), [[1, 503]], 'the retry, after a 503');
  await (await request(`http://127.0.0.1:${listen}/api/y`, { headers: { traceparent: '00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00' } })).body.text();
  t.equal(records.at(-1)!.sampled, false, 'an unsampled caller stays unsampled');
  t.equal(records.at(-1)!.trace, undefined, 'and its record carries no trace');
  t.match(String(flaky.seen.at(-1)!.headers.traceparent), /^00-1af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-00$/, 'the decision travels');
});

t.test('a request with one attempt that answered carries the flat trace; no attempt, a flag or an error, the general one', async (t) => {
  const records: RequestRecord[] = [];
  const { publish } = await l7Fixture(t, { onRequest: (r) => records.push(r) });
  const b = await backend(t, 'b', (_req, res) => { res.statusCode = 404; res.end('nope'); });
  const dead = await freePort(); // nothing listens: the attempt fails
  const listen = await freePort();
  await publish([{ service: 'shop/web', port: 80, listenerPort: listen }], webRoutes(`
  - matches: [{ path: { type: PathPrefix, value: /dead } }]
    backendRefs: [{ name: dead, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /b } }]
    backendRefs: [{ name: b, port: 80 }]
`), { 'shop/b:80': [b.port], 'shop/dead:80': [dead], 'shop/web:80': [b.port] });
  const before = Date.now() * 1000;
  await (await request(`http://127.0.0.1:${listen}/b/1`, { headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'v=1' } })).body.text();
  const after = Date.now() * 1000;
  const one = records.at(-1)!;
  t.equal(one.status, 404, 'a backend\'s 404 is an answer (no flag)');
  t.ok(one.trace && isOneAttempt(one.trace), 'one attempt that answered: the flat trace');
  const ot = one.trace as OneAttemptTrace;
  t.match(ot, { parentSpanId: 'b7ad6b7169203331', traceState: 'v=1', protocol: '1.1', serverAddress: '127.0.0.1', serverPort: listen });
  t.equal(b.seen.at(-1)!.headers.traceparent, `00-0af7651916cd43dd8448eb211c80319c-${ot.attemptSpanId}-01`, 'its attempt\'s span is the backend\'s parent');
  t.ok(before - 2000 <= ot.startUs && ot.startUs <= ot.attemptStartUs && ot.attemptStartUs <= ot.attemptEndUs && ot.attemptEndUs <= ot.endUs && ot.endUs <= after + 2000, 'times in order, around the request');
  t.same(asRequestTrace(ot, one.upstream!, one.status), {
    startUs: ot.startUs, endUs: ot.endUs, parentSpanId: 'b7ad6b7169203331', traceState: 'v=1', protocol: '1.1', serverAddress: '127.0.0.1', serverPort: listen, flags: undefined, retries: [],
    attempts: [{ spanId: ot.attemptSpanId, startUs: ot.attemptStartUs, endUs: ot.attemptEndUs, peer: `127.0.0.1:${b.port}`, status: 404, error: undefined }],
  }, 'its general form: the attempt\'s backend and status are the record\'s');

  await (await request(`http://127.0.0.1:${listen}/dead`)).body.text();
  const failed = records.at(-1)!;
  t.equal(failed.status, 503);
  t.notOk(isOneAttempt(failed.trace!), 'an attempt that failed: the general form');
  const ft = failed.trace as RequestTrace;
  t.equal(ft.flags, 'UF', 'with the flag');
  t.match(ft.attempts, [{ peer: `127.0.0.1:${dead}`, status: 0, error: { type: 'ECONNREFUSED' } }], 'and the attempt\'s error');
  t.ok(ft.attempts[0]!.startUs <= ft.attempts[0]!.endUs && ft.attempts[0]!.endUs <= ft.endUs);

  await (await request(`http://127.0.0.1:${listen}/elsewhere`)).body.text();
  const none = records.at(-1)!;
  t.equal(none.status, 404);
  t.match(none.trace, { flags: 'NR', attempts: [], retries: [] }, 'no route: the general form, no attempt');
  t.ok((none.trace as RequestTrace).endUs >= none.trace!.startUs);
});

t.test('a Host split into server.address and server.port', async (t) => {
  const cases: [string, [string, number | undefined]][] = [
    ['web.shop', ['web.shop', undefined]], ['web.shop:8080', ['web.shop', 8080]], ['198.19.0.10', ['198.19.0.10', undefined]], ['198.19.0.10:80', ['198.19.0.10', 80]],
    ['[fd00::1]', ['fd00::1', undefined]], ['[fd00::1]:443', ['fd00::1', 443]], ['', ['', undefined]],
    // not a host, or a host and a port: taken whole
    ['web:', ['web:', undefined]], ['web:8x', ['web:8x', undefined]], ['fd00::1', ['fd00::1', undefined]], ['[fd00::1]x', ['[fd00::1]x', undefined]], ['[fd00::1', ['[fd00::1', undefined]],
    ['[a]:80]', ['[a]:80]', undefined]], ['[a]:', ['[a]:', undefined]],
  ];
  for (const [host, want] of cases) t.same(splitHost(host), want, JSON.stringify(host));
});

t.test('tracing off: a caller\'s traceparent passes through untouched, and none is made', async (t) => {
  const records: RequestRecord[] = [];
  const { publish } = await l7Fixture(t, { tracing: false, onRequest: (r) => records.push(r) });
  const b = await backend(t, 'b');
  const listen = await freePort();
  await publish([{ service: 'shop/b', port: 80, listenerPort: listen }], new Map(), { 'shop/b:80': [b.port] });
  const incoming = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  await (await request(`http://127.0.0.1:${listen}/`, { headers: { traceparent: incoming } })).body.text();
  t.equal(b.seen.at(-1)!.headers.traceparent, incoming);
  await (await request(`http://127.0.0.1:${listen}/`)).body.text();
  t.equal(b.seen.at(-1)!.headers.traceparent, undefined);
  t.same(records.map((r) => [r.traceId, r.sampled, r.trace]), [['', false, undefined], ['', false, undefined]]);
});

t.test('tracing from xDS (Envoy\'s rule): a listener traces when its HCM has tracing, at its random_sampling', async (t) => {
  const records: RequestRecord[] = [];
  const { publish, xds } = await l7Fixture(t, { tracing: 'xds', onRequest: (r) => records.push(r) });
  const b = await backend(t, 'b');
  const listen = await freePort();
  const ports = [{ service: 'shop/b', port: 80, listenerPort: listen }];
  const backends = { 'shop/b:80': [b.port] };
  const incoming = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const call = async (traceparent?: string) => {
    await (await request(`http://127.0.0.1:${listen}/`, { ...(traceparent && { headers: { traceparent } }) })).body.text();
    return { sent: b.seen.at(-1)!.headers.traceparent, record: records.at(-1)! };
  };
  await publish(ports, new Map(), backends);
  let r = await call(incoming);
  t.equal(r.sent, incoming, 'no tracing field: a caller\'s traceparent passes through untouched');
  t.same([r.record.traceId, r.record.sampled, r.record.trace], ['', false, undefined], 'and the request is not traced');
  t.equal((await call()).sent, undefined, 'none is made for a caller without one');

  await publish(ports, new Map(), backends, undefined, { sampleRatio: 1 });
  r = await call();
  t.match(r.sent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, 'tracing at 100 %: a new trace, sampled');
  t.ok(r.record.sampled && r.record.trace, 'its record carries the trace');
  r = await call(incoming);
  t.equal(r.record.traceId, '0af7651916cd43dd8448eb211c80319c', 'a caller\'s trace is continued');

  await publish(ports, new Map(), backends, undefined, { sampleRatio: 0 });
  const fresh = await Promise.all(Array.from({ length: 20 }, () => call()));
  t.ok(fresh.every((x) => /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/.test(String(x.sent))), 'at 0 %: new traces get ids, unsampled, and the decision travels');
  t.equal(records.slice(-20).filter((x) => x.sampled).length, 0, 'no new trace is kept');
  r = await call(incoming);
  t.ok(r.record.sampled && r.record.trace, 'a caller\'s sampled flag is still followed');
  t.equal(xds.nacks, 0, 'every configuration was taken');

  await publish(ports, new Map(), backends);
  r = await call(incoming);
  t.equal(r.sent, incoming, 'the tracing field gone again: pass-through, at runtime, on the same listener');
});

t.test('tracing on (every listener): an HCM\'s random_sampling overrides the start-up ratio', async (t) => {
  const records: RequestRecord[] = [];
  const { publish } = await l7Fixture(t, { tracing: { sampleRatio: 1 }, onRequest: (r) => records.push(r) });
  const b = await backend(t, 'b');
  const listen = await freePort();
  const ports = [{ service: 'shop/b', port: 80, listenerPort: listen }];
  await publish(ports, new Map(), { 'shop/b:80': [b.port] });
  await (await request(`http://127.0.0.1:${listen}/`)).body.text();
  t.equal(records.at(-1)!.sampled, true, 'no tracing field: the start-up ratio (1)');
  await publish(ports, new Map(), { 'shop/b:80': [b.port] }, undefined, { sampleRatio: 0 });
  for (let i = 0; i < 10; i++) await (await request(`http://127.0.0.1:${listen}/`)).body.text();
  t.same(records.slice(-10).map((x) => [x.traceId !== '', x.sampled]), Array.from({ length: 10 }, () => [true, false]), 'random_sampling 0 %: traced, none kept');
});

t.test('a route the proxy cannot run is NACKed and traffic stays on the last good config', async (t) => {
  const { publish, xds } = await l7Fixture(t);
  const v1 = await backend(t, 'v1');
  const v2 = await backend(t, 'v2');
  const listen = await freePort();
  const ports = [{ service: 'shop/web', port: 80, listenerPort: listen }];
  const backends = { 'shop/web-v1:80': [v1.port], 'shop/web-v2:80': [v2.port], 'shop/web:80': [v1.port] };
  await publish(ports, split(100, 0), backends);
  t.equal(await (await request(`http://127.0.0.1:${listen}/`)).body.text(), 'v1');
  // a regex the control plane's check would refuse, put in past it: what a proxy must NACK
  const bad = webRoutes(`
  - matches: [{ path: { type: RegularExpression, value: "/x" } }]
    backendRefs: [{ name: web-v2, port: 80 }]
`);
  (bad.get('shop/web')!.rules[0]!.matches[0]!.path as { value: string }).value = '(';
  await publish(ports, bad, backends);
  t.equal(xds.nacks, 1, 'the proxy NACKed it');
  t.match(xds.status().route.lastNack?.error, /invalid regex "\("/, `with the reason: ${xds.status().route.lastNack?.error}`);
  t.equal(await (await request(`http://127.0.0.1:${listen}/`)).body.text(), 'v1', 'requests keep the last good routes');
});

t.test('a route change under steady load fails no request', async (t) => {
  const { publish } = await l7Fixture(t);
  const v1 = await backend(t, 'v1');
  const v2 = await backend(t, 'v2');
  const listen = await freePort();
  const ports = [{ service: 'shop/web', port: 80, listenerPort: listen }];
  const backends = { 'shop/web-v1:80': [v1.port], 'shop/web-v2:80': [v2.port], 'shop/web:80': [v1.port] };
  await publish(ports, split(100, 0), backends);
  let stop = false;
  let ok = 0;
  let failed = 0;
  const seen = new Set<string>();
  const load = Promise.all(Array.from({ length: 8 }, async () => {
    while (!stop) {
      try {
        const r = await request(`http://127.0.0.1:${listen}/`);
        const body = await r.body.text();
        if (r.statusCode === 200) { ok++; seen.add(body); } else failed++;
      } catch {
        failed++;
      }
    }
  }));
  for (const [a, b] of [[50, 50], [0, 100], [100, 0], [30, 70]] as const) {
    await new Promise((r) => setTimeout(r, 150));
    await publish(ports, split(a, b), backends);
  }
  await new Promise((r) => setTimeout(r, 150));
  stop = true;
  await load;
  t.equal(failed, 0, `${ok} requests under 4 route changes, none failed`);
  t.same([...seen].sort(), ['v1', 'v2'], 'and both versions served as the split moved');
});

t.test('h2c (HTTP/2 with prior knowledge) and HTTP/1.1 on the same listener', async (t) => {
  const { publish } = await l7Fixture(t);
  const b = await backend(t, 'b');
  const listen = await freePort();
  await publish([{ service: 'shop/b', port: 80, listenerPort: listen }], new Map(), { 'shop/b:80': [b.port] });
  const { connect } = await import('node:http2');
  const session = connect(`http://127.0.0.1:${listen}`);
  t.teardown(() => session.close());
  const body = await new Promise<string>((resolve, reject) => {
    const req = session.request({ ':path': '/h2', ':method': 'GET' });
    let data = '';
    req.on('data', (d: Buffer) => { data += d.toString(); });
    req.on('end', () => resolve(data));
    req.on('error', reject);
    req.end();
  });
  t.equal(body, 'b', 'an h2c request is proxied');
  t.equal(b.seen.at(-1)!.url, '/h2');
  t.equal(await (await request(`http://127.0.0.1:${listen}/h1`)).body.text(), 'b', 'and an HTTP/1.1 one on the same port');
});

t.test('least request sends new requests away from a backend that is slow to answer', async (t) => {
  const { publish } = await l7Fixture(t);
  const fast = await backend(t, 'fast');
  const slow = await backend(t, 'slow', (_req, res) => { setTimeout(() => res.end('slow'), 300); });
  const listen = await freePort();
  const ports = [{ service: 'shop/web', port: 80, listenerPort: listen }];
  const spread = async () => {
    const counts: Record<string, number> = { fast: 0, slow: 0 };
    // 4 clients for 1.5 s, each sending again as soon as it has its answer: the slow backend keeps its requests in flight
    const end = Date.now() + 1500;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (Date.now() < end) counts[await (await request(`http://127.0.0.1:${listen}/`)).body.text()]!++;
    }));
    return counts;
  };
  await publish(ports, new Map(), { 'shop/web:80': [fast.port, slow.port] }, 'ROUND_ROBIN');
  const rr = await spread();
  t.ok(Math.abs(rr.slow! - rr.fast!) <= 4, `round robin: as many to each (fast ${rr.fast}, slow ${rr.slow})`);
  await publish(ports, new Map(), { 'shop/web:80': [fast.port, slow.port] }, 'LEAST_REQUEST');
  const lr = await spread();
  t.ok(lr.fast! > 5 * lr.slow!, `least request: most to the fast one (fast ${lr.fast}, slow ${lr.slow})`);
});
