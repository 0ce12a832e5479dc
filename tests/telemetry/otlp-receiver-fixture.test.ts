/*
 * The OTLP receiver fixture (tests/fixtures/otlp-receiver.ts) against the real
 * OpenTelemetry exporters: OTLP/HTTP protobuf and OTLP/gRPC (plain and gzip),
 * OTLP/JSON as JsonTraceSerializer writes it, scripted failures and the
 * exporters' retries, and decodeOtlpJsonLines.
 */
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  type DiagLogger, type Span, type SpanContext, type Tracer, DiagLogLevel, SpanKind, SpanStatusCode, context, diag, trace,
} from '@opentelemetry/api';
import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import { OTLPTraceExporter as GrpcTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as ProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  type ReadableSpan, type SpanExporter, BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import t, { type Test } from 'tap';
import { OtlpReceiver, type ReceivedSpan, decodeOtlpJsonLines } from '../fixtures/otlp-receiver.js';

const RESOURCE = { 'service.name': 'catalog', 'service.version': '1.2.3', 'k8s.namespace.name': 'shop' };
const LINKED: SpanContext = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 };
const PARENT_ATTRIBUTES = {
  'http.request.method': 'GET', 'http.response.status_code': 503, 'sampling.ratio': 0.25, 'cache.hit': false,
  'catalog.tags': ['new', 'sale'], 'catalog.ids': [7, 8],
};

/** Warnings the exporters log through the OpenTelemetry diag API (partial success lands here). */
const warnings: string[] = [];
const logger: DiagLogger = {
  error: (...a: unknown[]) => warnings.push(a.map(String).join(' ')),
  warn: (...a: unknown[]) => warnings.push(a.map(String).join(' ')),
  info: () => {}, debug: () => {}, verbose: () => {},
};
diag.setLogger(logger, DiagLogLevel.WARN);

/** A SERVER span with an event, attributes of several types and an error; its CLIENT child with a link. */
function runScenario(tracer: Tracer): { parent: Span; child: Span } {
  const parent = tracer.startSpan('GET /catalog', { kind: SpanKind.SERVER, attributes: PARENT_ATTRIBUTES });
  parent.addEvent('retry', { 'retry.attempt': 2 });
  parent.setStatus({ code: SpanStatusCode.ERROR, message: 'upstream reset' });
  const child = tracer.startSpan(
    'SELECT items',
    { kind: SpanKind.CLIENT, links: [{ context: LINKED, attributes: { 'link.reason': 'batch' } }] },
    trace.setSpan(context.active(), parent),
  );
  child.end();
  parent.end();
  return { parent, child };
}

function provider(exporter: SpanExporter): BasicTracerProvider {
  return new BasicTracerProvider({ resource: resourceFromAttributes(RESOURCE), spanProcessors: [new SimpleSpanProcessor(exporter)] });
}

/** The scenario's spans as the SDK finished them. */
async function scenarioSpans(): Promise<{ spans: ReadableSpan[]; parent: Span; child: Span }> {
  const memory = new InMemorySpanExporter();
  const p = provider(memory);
  const { parent, child } = runScenario(p.getTracer('sockmesh-test', '0.1.0'));
  await p.forceFlush();
  const spans = [...memory.getFinishedSpans()];
  await p.shutdown();
  return { spans, parent, child };
}

function exportWith(exporter: SpanExporter, spans: ReadableSpan[]): Promise<ExportResult> {
  return new Promise((resolve) => exporter.export(spans, resolve));
}

const ns = ([s, n]: [number, number]): bigint => BigInt(s) * 1_000_000_000n + BigInt(n);

/** What the scenario must decode to, whatever the transport. */
function checkScenario(t: Test, got: ReceivedSpan[], ids: { parent: Span; child: Span }): void {
  t.equal(got.length, 2, 'two spans');
  const parent = got.find((s) => s.name === 'GET /catalog');
  const child = got.find((s) => s.name === 'SELECT items');
  if (!parent || !child) {
    t.fail(`spans by name: ${JSON.stringify(got.map((s) => s.name))}`);
    return;
  }
  t.equal(parent.traceId, ids.parent.spanContext().traceId, 'trace id as hex');
  t.equal(parent.spanId, ids.parent.spanContext().spanId, 'span id as hex');
  t.equal(parent.parentSpanId, '', 'a root span has no parent');
  t.equal(child.traceId, parent.traceId, 'same trace');
  t.equal(child.spanId, ids.child.spanContext().spanId);
  t.equal(child.parentSpanId, parent.spanId, 'the child points at its parent');
  t.equal(parent.kind, 'SERVER');
  t.equal(child.kind, 'CLIENT');
  t.same(parent.attributes, PARENT_ATTRIBUTES, 'string, int, double, bool and array attributes');
  t.same(child.attributes, {});
  for (const s of [parent, child]) {
    t.match(s.resource, RESOURCE, 'resource attributes');
    t.same(s.scope, { name: 'sockmesh-test', version: '0.1.0' });
    t.equal(s.flags, 0x101, 'flags: sampled, has-is-remote (local parent)');
  }
  // the SDK's spans are ReadableSpans: their times, to the nanosecond
  const sdkParent = ids.parent as unknown as ReadableSpan;
  const sdkChild = ids.child as unknown as ReadableSpan;
  t.equal(parent.startNs, ns(sdkParent.startTime), 'start time in ns since the epoch');
  t.equal(parent.endNs, ns(sdkParent.endTime));
  t.equal(child.startNs, ns(sdkChild.startTime));
  t.equal(child.endNs, ns(sdkChild.endTime));
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  t.ok(nowNs - parent.startNs < 60_000_000_000n && parent.startNs <= parent.endNs, 'a recent, non-negative span');
  t.equal(parent.events.length, 1);
  t.equal(parent.events[0]?.name, 'retry');
  t.equal(parent.events[0]?.timeNs, ns(sdkParent.events[0]!.time));
  t.same(parent.events[0]?.attributes, { 'retry.attempt': 2 });
  t.same(child.links, [{ traceId: LINKED.traceId, spanId: LINKED.spanId, attributes: { 'link.reason': 'batch' } }]);
  t.same(parent.links, []);
  t.same(parent.status, { code: 'ERROR', message: 'upstream reset' });
  t.same(child.status, { code: 'UNSET' });
}

t.test('the real exporters, over every transport, decode to the same spans', async (t) => {
  const r = await OtlpReceiver.start({ http: true, grpc: true });
  t.teardown(() => r.close());
  const cases = [
    { name: 'http/protobuf', transport: 'http', make: () => new ProtoTraceExporter({ url: `${r.httpUrl}/v1/traces`, headers: { 'x-tenant': 'shop' } }) },
    { name: 'http/protobuf gzip', transport: 'http', make: () => new ProtoTraceExporter({ url: `${r.httpUrl}/v1/traces`, compression: CompressionAlgorithm.GZIP }) },
    { name: 'grpc', transport: 'grpc', make: () => new GrpcTraceExporter({ url: r.grpcUrl }) },
    { name: 'grpc gzip', transport: 'grpc', make: () => new GrpcTraceExporter({ url: r.grpcUrl, compression: CompressionAlgorithm.GZIP }) },
  ] as const;
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      r.reset();
      const p = provider(c.make());
      const ids = runScenario(p.getTracer('sockmesh-test', '0.1.0'));
      await p.forceFlush();
      checkScenario(t, await r.waitForSpans(2), ids);
      await p.shutdown();
      // SimpleSpanProcessor exports each span as it ends: child first
      t.same(r.requests.map((q) => [q.transport, q.answered, q.spanCount]), [[c.transport, c.transport === 'http' ? 200 : 'OK', 1], [c.transport, c.transport === 'http' ? 200 : 'OK', 1]]);
      const q = r.requests[0]!;
      t.match(q.headers['user-agent'], /OTel-OTLP-Exporter-JavaScript\/0\.223/);
      if (c.transport === 'http') {
        t.equal(q.contentType, 'application/x-protobuf');
        t.equal(q.path, '/v1/traces');
        t.equal(q.headers['content-encoding'], c.name.endsWith('gzip') ? 'gzip' : undefined);
        if (c.name === 'http/protobuf') t.equal(q.headers['x-tenant'], 'shop', 'configured headers are recorded');
      }
    });
  }
});

t.test('every path decodes the same ReadableSpans identically: protobuf, gRPC, JSON (plain, gzip), JSON lines', async (t) => {
  const { spans, parent, child } = await scenarioSpans();
  const r = await OtlpReceiver.start({ grpc: true });
  t.teardown(() => r.close());
  const proto = new ProtoTraceExporter({ url: `${r.httpUrl}/v1/traces` });
  const grpcExporter = new GrpcTraceExporter({ url: r.grpcUrl });
  t.teardown(() => Promise.all([proto.shutdown(), grpcExporter.shutdown()]));

  t.equal((await exportWith(proto, spans)).code, ExportResultCode.SUCCESS);
  const viaProto = r.spans();
  checkScenario(t, viaProto, { parent, child });
  r.reset();
  t.equal((await exportWith(grpcExporter, spans)).code, ExportResultCode.SUCCESS);
  t.same(r.spans(), viaProto, 'gRPC = HTTP protobuf');

  const json = JsonTraceSerializer.serializeRequest(spans)!;
  for (const gzip of [false, true]) {
    r.reset();
    const res = await fetch(`${r.httpUrl}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(gzip ? { 'content-encoding': 'gzip' } : {}) },
      body: gzip ? gzipSync(json) : json,
    });
    t.equal(res.status, 200);
    t.equal(res.headers.get('content-type'), 'application/json', 'a JSON request gets a JSON response');
    t.same(JsonTraceSerializer.deserializeResponse(new Uint8Array(await res.arrayBuffer())), {});
    t.same(r.spans(), viaProto, `JSON${gzip ? ' gzip' : ''} = protobuf`);
    t.equal(r.requests[0]?.contentType, 'application/json');
  }

  const line = Buffer.from(json).toString('utf8');
  t.notOk(line.includes('\n'), 'one request per line');
  t.same(decodeOtlpJsonLines(`${line}\n\n${line}\n`), [...viaProto, ...viaProto], 'JSON lines: two requests, blank line skipped');
  t.throws(() => decodeOtlpJsonLines(`${line}\n{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}\n`),
    /line 2: resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.traceId is not a hex string/);
  t.throws(() => decodeOtlpJsonLines('{"resourceSpans": ['), /line 1:/);
});

t.test('scripted answers and how the real exporters react', async (t) => {
  const { spans } = await scenarioSpans();
  const one = spans.filter((s) => s.name === 'SELECT items');
  const r = await OtlpReceiver.start({ grpc: true });
  t.teardown(() => r.close());
  const http = (timeoutMillis = 10_000) => new ProtoTraceExporter({ url: `${r.httpUrl}/v1/traces`, timeoutMillis });
  const grpc = (timeoutMillis = 10_000) => new GrpcTraceExporter({ url: r.grpcUrl, timeoutMillis });

  const cases: Array<{
    name: string; exporter: () => SpanExporter; script: Parameters<OtlpReceiver['script']>;
    result: ExportResultCode; answered: Array<number | string>; spans: number;
    gapMs?: [number, number]; warning?: RegExp; error?: RegExp;
  }> = [
    { name: 'http 503 then 200: retried after the ~1 s backoff, spans kept once', exporter: http, script: [{ status: 503 }],
      result: ExportResultCode.SUCCESS, answered: [503, 200], spans: 1, gapMs: [700, 1500] },
    { name: 'http 429 with Retry-After: 0: retried at once', exporter: http, script: [{ status: 429, retryAfter: '0' }],
      result: ExportResultCode.SUCCESS, answered: [429, 200], spans: 1, gapMs: [0, 300] },
    { name: 'http 400: not retried', exporter: http, script: [{ status: 400, body: 'bad' }],
      result: ExportResultCode.FAILED, answered: [400], spans: 0, error: /bad|Bad Request/ },
    { name: 'http hang: the exporter times out and does not retry past its deadline', exporter: () => http(300), script: [{ hang: true }],
      result: ExportResultCode.FAILED, answered: ['hang'], spans: 0, error: /timed out/ },
    { name: 'http partial success: a success, logged', exporter: http, script: [{ partialSuccess: { rejectedSpans: 1, errorMessage: 'too old' } }],
      result: ExportResultCode.SUCCESS, answered: [200], spans: 1, warning: /Partial Success.*rejectedSpans.*1.*too old/ },
    { name: 'grpc UNAVAILABLE: not retried', exporter: grpc, script: [{ grpcCode: 14, grpcMessage: 'try later' }],
      result: ExportResultCode.FAILED, answered: ['UNAVAILABLE'], spans: 0, error: /try later/ },
    { name: 'grpc RESOURCE_EXHAUSTED: not retried', exporter: grpc, script: [{ grpcCode: 8 }],
      result: ExportResultCode.FAILED, answered: ['RESOURCE_EXHAUSTED'], spans: 0, error: /RESOURCE_EXHAUSTED/ },
    { name: 'grpc partial success: a success, logged', exporter: grpc, script: [{ partialSuccess: { rejectedSpans: 1, errorMessage: 'too old' } }],
      result: ExportResultCode.SUCCESS, answered: ['OK'], spans: 1, warning: /Partial Success.*rejectedSpans.*1.*too old/ },
    { name: 'grpc hang: deadline exceeded', exporter: () => grpc(300), script: [{ hang: true }],
      result: ExportResultCode.FAILED, answered: ['hang'], spans: 0, error: /DEADLINE_EXCEEDED|Deadline/i },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      r.reset();
      warnings.length = 0;
      r.script(...c.script);
      const exporter = c.exporter();
      const result = await exportWith(exporter, one);
      await exporter.shutdown();
      t.equal(result.code, c.result, `export ${result.code === ExportResultCode.SUCCESS ? 'succeeded' : `failed: ${result.error?.message}`}`);
      t.same(r.requests.map((q) => q.answered), c.answered);
      t.ok(r.requests.every((q) => q.spanCount === 1), 'every attempt carried the span');
      t.equal(r.spans().length, c.spans);
      if (c.gapMs) {
        const gap = r.requests[1]!.atMs - r.requests[0]!.atMs;
        t.ok(gap >= c.gapMs[0] && gap <= c.gapMs[1], `retry after ${Math.round(gap)} ms, expected ${c.gapMs[0]}..${c.gapMs[1]}`);
      }
      if (c.warning) t.match(warnings.join('\n'), c.warning);
      if (c.error) t.match(result.error?.message ?? '', c.error);
    });
  }
});

t.test('requests the receiver refuses, waitForSpans, reset, close with a hung request', async (t) => {
  const r = await OtlpReceiver.start();
  let closed = false;
  t.teardown(() => (closed ? undefined : r.close()));
  const post = (path: string, type: string, body: string | Uint8Array) =>
    fetch(`${r.httpUrl}${path}`, { method: 'POST', headers: { 'content-type': type }, body });

  t.equal((await post('/v1/traces', 'application/x-protobuf', Buffer.from([0x0a, 0x05, 0x01]))).status, 400, 'truncated protobuf');
  t.equal((await post('/v1/traces', 'application/json', '{"resourceSpans":')).status, 400, 'broken JSON');
  t.equal((await post('/v1/traces', 'text/plain', 'hi')).status, 415);
  t.equal((await post('/v1/metrics', 'application/x-protobuf', '')).status, 404);
  t.equal((await fetch(`${r.httpUrl}/v1/traces`)).status, 405);
  t.same(r.requests.map((q) => q.answered), [400, 400, 415, 404, 405]);
  t.match(r.requests[0]?.error, /not an ExportTraceServiceRequest/);
  await t.rejects(r.waitForSpans(1, 100), /waited 100 ms for 1 spans; received 0 spans \[\] in 5 requests \[http 400 .*not an ExportTraceServiceRequest/);

  // an empty request is a valid one
  const empty = await post('/v1/traces', 'application/x-protobuf', new Uint8Array());
  t.equal(empty.status, 200);
  t.equal((await empty.arrayBuffer()).byteLength, 0, 'an empty ExportTraceServiceResponse');

  // waitForSpans resolves on arrival
  const { spans } = await scenarioSpans();
  const waiting = r.waitForSpans(2, 5000);
  t.equal((await post('/v1/traces', 'application/json', JsonTraceSerializer.serializeRequest(spans)!)).status, 200);
  t.equal((await waiting).length, 2);

  r.script({ status: 503 });
  r.reset();
  t.same(r.requests, []);
  t.same(r.spans(), []);
  t.equal((await post('/v1/traces', 'application/x-protobuf', new Uint8Array())).status, 200, 'reset drops the script');

  // close() ends a hung request and resolves
  r.script({ hang: true });
  const hung = post('/v1/traces', 'application/x-protobuf', new Uint8Array());
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(r.requests.at(-1)?.answered, 'hang');
  const cutOff = t.rejects(hung, /fetch failed/, 'the hung request is cut off');
  const pending = t.rejects(r.waitForSpans(1, 5000), /closed while waiting for 1 spans/, 'a pending waitForSpans rejects');
  const t0 = performance.now();
  await r.close();
  closed = true;
  t.ok(performance.now() - t0 < 3000, `close() does not wait for the hung request (${Math.round(performance.now() - t0)} ms)`);
  await Promise.all([cutOff, pending]);
});

t.test('HTTP on a unix socket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'otlp-receiver-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'otlp.sock');
  const r = await OtlpReceiver.start({ socketPath });
  t.teardown(() => r.close());
  t.equal(r.socketPath, socketPath);
  t.equal(r.httpUrl, 'http://localhost');
  t.throws(() => r.grpcUrl, /gRPC is not served/);
  const { spans } = await scenarioSpans();
  const body = Buffer.from(JsonTraceSerializer.serializeRequest(spans)!);
  const status = await new Promise<number>((resolve, reject) => {
    const req = request({ socketPath, path: '/v1/traces', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
  t.equal(status, 200);
  t.same((await r.waitForSpans(2)).map((s) => s.name).sort(), ['GET /catalog', 'SELECT items']);
});
