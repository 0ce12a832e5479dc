import t from 'tap';
import { SpanKind } from '@opentelemetry/api';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { decodeOtlpJson } from '../../telemetry/otlp-json-decode.js';

function sdkSpans() {
  const mem = new InMemorySpanExporter();
  const p = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'web', 'k8s.pod.name': 'web-1' }), spanProcessors: [new SimpleSpanProcessor(mem)] });
  const tr = p.getTracer('scope-x', '1.2');
  const parent = tr.startSpan('GET /*', { kind: SpanKind.CLIENT, attributes: { 'http.request.method': 'GET', 'server.port': 80, ok: true, ratio: 0.5, tags: ['a', 'b'] } });
  parent.addEvent('retry', { attempt: 1 });
  parent.end();
  return mem.getFinishedSpans();
}

t.test('decoding OTLP/JSON gives back what the SDK made', async (t) => {
  const spans = sdkSpans();
  const body = JSON.parse(new TextDecoder().decode(JsonTraceSerializer.serializeRequest(spans)!)) as unknown;
  const [d] = decodeOtlpJson(body);
  const s = spans[0]!;
  t.equal(d!.name, s.name);
  t.equal(d!.kind, SpanKind.CLIENT);
  t.same(d!.spanContext(), { traceId: s.spanContext().traceId, spanId: s.spanContext().spanId, traceFlags: 1 });
  t.same(d!.attributes, s.attributes);
  t.same(d!.startTime, s.startTime);
  t.same(d!.endTime, s.endTime);
  t.same(d!.resource.attributes, { 'service.name': 'web', 'k8s.pod.name': 'web-1' });
  t.same(d!.instrumentationScope, { name: 'scope-x', version: '1.2' });
  t.same(d!.events.map((e) => [e.name, e.attributes]), [['retry', { attempt: 1 }]]);
  // and re-encoding it gives the same request
  t.same(JSON.parse(new TextDecoder().decode(JsonTraceSerializer.serializeRequest([d!])!)), body, 're-encoded unchanged');
});

t.test('malformed input names the span and field', async (t) => {
  t.throws(() => decodeOtlpJson({}), /resourceSpans: missing/);
  t.throws(() => decodeOtlpJson({ resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: 'xyz', spanId: '0102030405060708', name: 'a', startTimeUnixNano: '1', endTimeUnixNano: '2' }] }] }] }),
    /resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]: traceId must be 32 lowercase hex digits/);
});
