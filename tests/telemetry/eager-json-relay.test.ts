import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { context, SpanKind, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { EagerJsonRelay, spanJson } from '../../telemetry/eager-json-relay.js';
import { decodeOtlpJson } from '../../telemetry/otlp-json-relay.js';

function spans() {
  const mem = new InMemorySpanExporter();
  const p = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'web' }), spanProcessors: [new SimpleSpanProcessor(mem)] });
  const tr = p.getTracer('sockmesh.node-proxy', '1.0');
  const parent = trace.setSpanContext(context.active(), { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, isRemote: true });
  const a = tr.startSpan('GET /api/*', { kind: SpanKind.CLIENT, attributes: { s: 'x"y\n', i: 80, d: 0.25, b: false, arr: ['p', 'q'], n: [1, 2] }, links: [{ context: { traceId: '1'.repeat(32), spanId: '2'.repeat(16), traceFlags: 1 }, attributes: { 'sockmesh.link': 'connection' } }] }, parent);
  a.addEvent('retry', { attempt: 1, 'error.type': 'timeout' });
  a.setStatus({ code: SpanStatusCode.ERROR, message: 'UT' });
  a.end();
  tr.startSpan('plain').end();
  return mem.getFinishedSpans();
}

t.test('each span written as the official serializer writes it', async (t) => {
  const ss = spans();
  const official = JSON.parse(new TextDecoder().decode(JsonTraceSerializer.serializeRequest(ss)!)) as { resourceSpans: { scopeSpans: { spans: unknown[] }[] }[] };
  const theirs = official.resourceSpans[0]!.scopeSpans[0]!.spans;
  t.same(ss.map((s) => JSON.parse(spanJson(s)) as unknown), theirs);
});

t.test('to the agent: grouped by resource, sampled only, counted; bounded', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-eager-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'otlp.sock');
  const got: { count: string | string[] | undefined; body: unknown }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { got.push({ count: req.headers['x-sockmesh-spans'], body: JSON.parse(Buffer.concat(chunks).toString()) }); res.end('{}'); });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const relay = new EagerJsonRelay({ socketPath: sock, flushMs: 10 });
  const mk = (svc: string) => new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': svc }), spanProcessors: [relay] }).getTracer('s');
  const web = mk('web');
  const db = mk('db');
  web.startSpan('w1').end();
  db.startSpan('d1').end();
  web.startSpan('w2').end();
  const unsampled = trace.setSpanContext(context.active(), { traceId: '3'.repeat(32), spanId: '4'.repeat(16), traceFlags: TraceFlags.NONE, isRemote: true });
  web.startSpan('not sampled', {}, unsampled).end();
  await new Promise((r) => setTimeout(r, 60));
  t.equal(got.length, 1, 'one request for the batch');
  t.equal(got[0]!.count, '3', 'x-sockmesh-spans counts them');
  const decoded = decodeOtlpJson(got[0]!.body);
  t.same(decoded.map((s) => `${String(s.resource.attributes['service.name'])}:${s.name}`).sort(), ['db:d1', 'web:w1', 'web:w2']);
  t.match(relay.stats(), { exported: 3, droppedQueueFull: 0, failed: 0, queued: 0 });
  const tiny = new EagerJsonRelay({ socketPath: sock, flushMs: 10_000, maxBytes: 1 });
  const tt = new BasicTracerProvider({ spanProcessors: [tiny] }).getTracer('s');
  tt.startSpan('a').end();
  tt.startSpan('b').end();
  t.match(tiny.stats(), { queued: 1, droppedQueueFull: 1 }, 'past maxBytes spans are dropped and counted');
  await tiny.shutdown();
  t.match(tiny.stats(), { exported: 1, queued: 0 }, 'shutdown sends what is held');
  const gone = new EagerJsonRelay({ socketPath: join(dir, 'none.sock'), flushMs: 5, shutdownTimeoutMs: 500 });
  new BasicTracerProvider({ spanProcessors: [gone] }).getTracer('s').startSpan('x').end();
  await gone.shutdown();
  t.match(gone.stats(), { exported: 0, failed: 1 }, 'no agent: counted failed, shutdown returns');
});
