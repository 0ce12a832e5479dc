import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SpanKind } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { RelayExporter, decodeOtlpJson } from '../../telemetry/otlp-json-relay.js';

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

t.test('the relay exporter posts to a unix socket and reports the answer', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-relay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'otlp.sock');
  const got: unknown[] = [];
  let status = 200;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { got.push({ path: req.url, type: req.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString()) }); res.statusCode = status; res.end('{}'); });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const ex = new RelayExporter({ socketPath: sock });
  const result = (spans: ReturnType<typeof sdkSpans>) => new Promise<ExportResult>((r) => ex.export(spans, r));
  t.equal((await result(sdkSpans())).code, ExportResultCode.SUCCESS);
  t.match(got[0], { path: '/v1/traces', type: 'application/json', body: { resourceSpans: [{ scopeSpans: [{ spans: [{ name: 'GET /*' }] }] }] } });
  status = 400;
  t.equal((await result(sdkSpans())).code, ExportResultCode.FAILED, 'a refusal is a failure');
  const gone = new RelayExporter({ socketPath: join(dir, 'nothing.sock') });
  const r = await new Promise<ExportResult>((res) => gone.export(sdkSpans(), res));
  t.equal(r.code, ExportResultCode.FAILED, 'no agent: a failure, not a hang');
});
