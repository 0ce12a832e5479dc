import t from 'tap';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { attributes, ByteWriter, groupHead, RequestJsonWriter } from '../../telemetry/otlp-json-write.js';
import { requestSpans, type TracedRequest } from '../../telemetry/request-spans.js';

type J = Record<string, unknown>;
const US = 1_764_000_000_000_000;
const req: TracedRequest = {
  method: 'GET', path: '/a', route: '/a', status: 503, caller: '198.18.0.3', callerPort: 40000, local: '198.18.0.1', localPort: 15001,
  traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'aaaaaaaaaaaaaaaa',
  trace: {
    startUs: US, endUs: US + 5000.4, parentSpanId: 'b7ad6b7169203331', traceState: 'v=1,w=2', protocol: '2', serverAddress: 'web', serverPort: 80, flags: 'UF',
    retries: [{ timeUs: US + 2000, attempt: 1, error: 'timeout' }],
    attempts: [
      { spanId: '1111111111111111', startUs: US + 10, endUs: US + 1990, peer: '198.18.0.4:8080', status: 0, error: { type: 'timeout', message: 'timeout', exception: 'AbortError' } },
      { spanId: '2222222222222222', startUs: US + 2010, endUs: US + 4990, peer: '198.18.0.5:8080', status: 503 },
    ],
  },
};

t.test('a span is written as the SDK\'s JSON serializer writes the same span', async (t) => {
  const link = { context: { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16), traceFlags: 1 }, attributes: { 'sockmesh.link': 'connection', n: 1.5, ok: true, list: ['a', 'b'] } };
  const resource = resourceFromAttributes({ 'service.name': 'web', 'k8s.pod.name': 'web-1' });
  const scope = { name: 'sockmesh.node-proxy' };
  const spans = requestSpans(req, link).map((o) => o.span);
  t.equal(spans.length, 3);
  const sdk = JSON.parse(new TextDecoder().decode(JsonTraceSerializer.serializeRequest(spans.map((s) => finishedSpan({ ...s, resource, scope })))!)) as J;
  const w = new RequestJsonWriter();
  for (const s of spans) w.add(groupHead(attributes(resource.attributes), scope), s);
  const ours = JSON.parse(Buffer.concat(w.pieces()).toString()) as J;
  t.same(ours, sdk, 'the whole request: resource, scope, spans with ids, times, flags, events, links, status, tracestate');
});

t.test('spans grouped by their resource\'s head, in buffers that grow; attribute values of every type', async (t) => {
  const w = new RequestJsonWriter();
  t.same(w.pieces(), [], 'nothing written: no request');
  const span = (name: string) => ({ ...requestSpans(req)[0]!.span, name, attributes: { big: 'x'.repeat(10_000), utf8: 'é→' } });
  const heads = ['a', 'b'].map((n) => groupHead(attributes({ 'service.name': n }), { name: 's' }));
  for (let i = 0; i < 10; i++) w.add(heads[i % 3 === 0 ? 1 : 0]!, span(`s${i}`));
  t.equal(w.count, 10);
  const line = Buffer.concat(w.pieces()).toString();
  const got = JSON.parse(line) as { resourceSpans: { resource: { attributes: { value: { stringValue: string } }[] }; scopeSpans: { spans: { name: string; attributes: { key: string; value: { stringValue: string } }[] }[] }[] }[] };
  t.same(got.resourceSpans.map((g) => [g.resource.attributes[0]!.value.stringValue, g.scopeSpans[0]!.spans.map((x) => x.name)]),
    [['b', ['s0', 's3', 's6', 's9']], ['a', ['s1', 's2', 's4', 's5', 's7', 's8']]], 'one group per resource, in the order they came, spans in order');
  t.equal(got.resourceSpans[1]!.scopeSpans[0]!.spans[5]!.attributes[1]!.value.stringValue, 'é→', 'UTF-8 kept across buffer growth');
  t.notOk(line.includes('\n'), 'one line');
  t.same(JSON.parse(attributes({ s: 'q"uote', i: 3, d: 0.25, b: false, arr: [1, 2], skip: undefined })), [
    { key: 's', value: { stringValue: 'q"uote' } }, { key: 'i', value: { intValue: 3 } }, { key: 'd', value: { doubleValue: 0.25 } },
    { key: 'b', value: { boolValue: false } }, { key: 'arr', value: { arrayValue: { values: [{ intValue: 1 }, { intValue: 2 }] } } },
  ]);
});

t.test('integers written digit by digit, as String writes them', async (t) => {
  const values = [0, 1, 9, 10, 99, 100, 8080, 65535, 1_764_000_000_000_000, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - 1];
  // every length's first and last value, and the two halves' edges (1e8: a second half of zeros)
  for (let k = 1; k <= 15; k++) values.push(10 ** k, 10 ** k - 1, 10 ** k + 1);
  values.push(1e8 * 12_345 + 7, 89_999_999 * 1e8 + 99_999_999, 90_071_992_54_740_990);
  for (let i = 0; i < 2000; i++) values.push(Math.min(Number.MAX_SAFE_INTEGER, Math.floor(Math.random() * 10 ** (1 + (i % 16)))));
  const w = new ByteWriter(8);
  for (const v of values) { w.uint(v); w.byte(0x20); }
  t.equal(w.toString(), values.map((v) => `${String(v)} `).join(''), `${values.length} integers, across buffer growth`);
});

t.test('one writer, batch after batch: take() hands the pieces over and starts empty; the pieces stay as they were', async (t) => {
  const heads = ['a', 'b', 'c'].map((n) => groupHead(attributes({ 'service.name': n }), { name: 's' }));
  const span = (name: string, size: number) => ({ ...requestSpans(req)[0]!.span, name, attributes: { pad: 'p'.repeat(size) } });
  const w = new RequestJsonWriter();
  const fresh = (adds: [number, string, number][]) => {
    const f = new RequestJsonWriter();
    for (const [h, n, size] of adds) f.add(heads[h]!, span(n, size));
    return Buffer.concat(f.pieces()).toString();
  };
  const batches: [number, string, number][][] = [
    [[0, 'x1', 10], [1, 'x2', 70_000], [0, 'x3', 10]], // group b past its first buffer
    [[1, 'y1', 5]], // a group without spans this time is left out
    [[2, 'z1', 5], [0, 'z2', 20_000], [2, 'z3', 5]],
    [],
  ];
  const taken: Buffer[][] = [];
  for (const b of batches) {
    for (const [h, n, size] of b) w.add(heads[h]!, span(n, size));
    t.equal(w.count, b.length, 'spans counted in this batch only');
    taken.push(w.take());
    t.equal(w.count, 0, 'emptied');
  }
  batches.forEach((b, i) => {
    t.equal(Buffer.concat(taken[i]!).toString(), b.length ? fresh(b) : '', `batch ${i + 1}: the bytes a fresh writer writes, after later batches were written`);
  });
  const names = (JSON.parse(Buffer.concat(taken[1]!).toString()) as { resourceSpans: { scopeSpans: { spans: { name: string }[] }[] }[] }).resourceSpans.map((g) => g.scopeSpans[0]!.spans.map((s) => s.name));
  t.same(names, [['y1']], 'only the group with a span');
});

t.test('a kept writer lets go of groups that had no span once it holds more than 256', async (t) => {
  const w = new RequestJsonWriter();
  const span = requestSpans(req)[0]!.span;
  for (let i = 0; i < 300; i++) w.add(groupHead(attributes({ 'service.name': `w${i}` }), { name: 's' }), span);
  t.equal((JSON.parse(Buffer.concat(w.take()).toString()) as { resourceSpans: unknown[] }).resourceSpans.length, 300, '300 groups in one batch');
  t.equal(w.groups, 300, 'all kept: each had a span');
  const last = groupHead(attributes({ 'service.name': 'w299' }), { name: 's' });
  w.add(last, span);
  t.equal((JSON.parse(Buffer.concat(w.take()).toString()) as { resourceSpans: unknown[] }).resourceSpans.length, 1, 'the next batch has one');
  t.equal(w.groups, 1, 'the 299 groups without a span in it were let go, the one with a span kept');
  w.add(groupHead(attributes({ 'service.name': 'w0' }), { name: 's' }), span);
  w.take();
  t.equal(w.groups, 2, 'under the bound, idle groups are kept');
});

t.test('ByteWriter.reset: what pieces() gave out is not written over', async (t) => {
  const w = new ByteWriter(4);
  w.ascii('abcdef');
  const before = w.pieces();
  w.reset();
  t.equal(w.size, 0);
  w.ascii('XYZ');
  t.equal(Buffer.concat(before).toString(), 'abcdef');
  t.equal(w.toString(), 'XYZ');
});
