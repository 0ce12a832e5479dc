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
  const values = [0, 1, 9, 10, 99, 100, 8080, 65535, 1_764_000_000_000_000, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - 1, 10 ** 15, 10 ** 15 - 1];
  for (let i = 0; i < 2000; i++) values.push(Math.floor(Math.random() * 10 ** (1 + (i % 16))));
  const w = new ByteWriter(8);
  for (const v of values) { w.uint(v); w.byte(0x20); }
  t.equal(w.toString(), values.map((v) => `${String(v)} `).join(''), `${values.length} integers, across buffer growth`);
});
