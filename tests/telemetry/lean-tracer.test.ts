import t from 'tap';
import { context, SpanKind, SpanStatusCode, trace, TraceFlags, type Tracer } from '@opentelemetry/api';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { LeanTracer, LeanWorkloadTracers } from '../../telemetry/lean-tracer.js';
import { keepTrace } from '../../telemetry/trace-ids.js';

type J = Record<string, unknown>;
class Sink { got: { head: string; json: string }[] = []; pushJson(head: string, json: string) { this.got.push({ head, json }); } }

const remote = (flags: number) => trace.setSpanContext(context.active(), { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: flags, isRemote: true });

function exercise(tr: Tracer): void {
  const s = tr.startSpan('GET', { kind: SpanKind.CLIENT, attributes: { 'http.request.method': 'GET', 'server.port': 80, ok: true, r: 0.5, arr: ['a', 'b'] }, links: [{ context: { traceId: '1'.repeat(32), spanId: '2'.repeat(16), traceFlags: 1 } }] }, remote(TraceFlags.SAMPLED));
  s.updateName('GET /api/*');
  s.setAttribute('http.route', '/api/*');
  s.setAttributes({ 'http.response.status_code': 503 });
  s.addEvent('retry', { attempt: 1 });
  s.recordException(new Error('boom'));
  s.setStatus({ code: SpanStatusCode.ERROR, message: 'UF' });
  s.end();
}

/** ids and times out, the rest as written */
function shape(span: J): J {
  const { traceId: _a, spanId: _b, startTimeUnixNano: _c, endTimeUnixNano: _d, events, ...rest } = span;
  return { ...rest, events: (events as J[]).map(({ timeUnixNano: _t, ...e }) => (e.name === 'exception' ? { ...e, attributes: (e.attributes as J[]).filter((a) => a.key !== 'exception.stacktrace') } : e)) };
}

t.test('a lean span is written as the SDK\'s span is serialized', async (t) => {
  const sink = new Sink();
  exercise(new LeanTracer({ 'service.name': 'web' }, { name: 'sockmesh.node-proxy' }, 1, sink));
  const mem = new InMemorySpanExporter();
  exercise(new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'web' }), spanProcessors: [new SimpleSpanProcessor(mem)] }).getTracer('sockmesh.node-proxy'));
  const sdk = (JSON.parse(new TextDecoder().decode(JsonTraceSerializer.serializeRequest(mem.getFinishedSpans())!)) as { resourceSpans: { resource: J; scopeSpans: { scope: J; spans: J[] }[] }[] }).resourceSpans[0]!;
  const lean = JSON.parse(`${sink.got[0]!.head}${sink.got[0]!.json}]}]}`) as { resource: J; scopeSpans: { scope: J; spans: J[] }[] };
  t.same(lean.resource, sdk.resource, 'the same resource');
  t.same(lean.scopeSpans[0]!.scope, sdk.scopeSpans[0]!.scope, 'the same scope');
  const l = lean.scopeSpans[0]!.spans[0]!;
  const s = sdk.scopeSpans[0]!.spans[0]!;
  t.same(shape(l), shape(s), 'the same span, ids and times aside');
  t.equal(l.traceId, '0af7651916cd43dd8448eb211c80319c', 'the caller\'s trace continues');
  t.match(String(l.spanId), /^[0-9a-f]{16}$/);
  t.ok(BigInt(String(l.endTimeUnixNano)) >= BigInt(String(l.startTimeUnixNano)));
  t.ok(Math.abs(Number(BigInt(String(l.startTimeUnixNano)) / 1_000_000n) - Date.now()) < 5000, 'epoch nanoseconds');
});

t.test('sampling: parent-based; new traces by the ratio, the decision travels', async (t) => {
  const sink = new Sink();
  const none = new LeanTracer({}, { name: 's' }, 0, sink);
  const a = none.startSpan('a');
  t.notOk(a.isRecording(), 'ratio 0: a new trace is not recorded');
  t.equal(a.spanContext().traceFlags, TraceFlags.NONE);
  t.match(a.spanContext().spanId, /^[0-9a-f]{16}$/, 'but it has ids to pass on');
  const b = none.startSpan('b', {}, remote(TraceFlags.SAMPLED));
  t.ok(b.isRecording(), 'a sampled caller is followed');
  b.end();
  const c = new LeanTracer({}, { name: 's' }, 1, sink).startSpan('c', {}, remote(TraceFlags.NONE));
  t.notOk(c.isRecording(), 'an unsampled caller is followed');
  t.equal(c.spanContext().traceId, '0af7651916cd43dd8448eb211c80319c');
  t.equal(sink.got.length, 1, 'only recorded spans are written');
  let kept = 0;
  const half = new LeanTracer({}, { name: 's' }, 0.25, new Sink());
  for (let i = 0; i < 4000; i++) if (half.startSpan('x').isRecording()) kept++;
  t.ok(kept > 800 && kept < 1200, `ratio 0.25 keeps about a quarter (${kept} of 4000)`);
  t.equal(keepTrace('0'.repeat(24) + 'ffffffff', 0.5), false);
  t.equal(keepTrace('0'.repeat(24) + '00000001', 0.5), true);
});

t.test('one resource per workload', async (t) => {
  const sink = new Sink();
  const w = new LeanWorkloadTracers({ sink, node: 'n1', scope: 'sockmesh.node-proxy', fallback: { serviceName: 'proxy' } });
  w.tracer({ namespace: 'shop', pod: 'web-1', serviceName: 'web' }).startSpan('x').end();
  w.tracer(undefined).startSpan('y').end();
  t.same(sink.got.map((g) => (JSON.parse(`${g.head}]}]}`) as { resource: J }).resource), [
    { attributes: [{ key: 'service.name', value: { stringValue: 'web' } }, { key: 'service.namespace', value: { stringValue: 'shop' } }, { key: 'k8s.namespace.name', value: { stringValue: 'shop' } }, { key: 'k8s.pod.name', value: { stringValue: 'web-1' } }, { key: 'k8s.node.name', value: { stringValue: 'n1' } }], droppedAttributesCount: 0 },
    { attributes: [{ key: 'service.name', value: { stringValue: 'proxy' } }, { key: 'k8s.node.name', value: { stringValue: 'n1' } }], droppedAttributesCount: 0 },
  ]);
  t.equal(w.tracer({ namespace: 'shop', pod: 'web-1', serviceName: 'web' }), w.tracer({ namespace: 'shop', pod: 'web-1', serviceName: 'web' }), 'cached');
});
