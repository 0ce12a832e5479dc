/*
 * The OTLP/gRPC exporter's parts without a network: RetryInfo decoding, the
 * retry policy (codes, backoff, jitter bounds, cap), and the exporter's loop
 * over a scripted transport and a virtual clock (deadline arithmetic, partial
 * success, shutdown). The real receiver is in span-exporter.test.ts.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { SpanKind } from '@opentelemetry/api';
import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import protobuf from 'protobufjs';
import t from 'tap';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';
import {
  type Clock, type GrpcAttemptResult, type OtlpGrpcAttemptEvent, type OtlpGrpcTransport, OTLP_GRPC_ATTEMPT_CHANNEL, OtlpGrpcExportError,
  OtlpGrpcTraceExporter, RETRY_INFO_TYPE_URL, TRACE_EXPORT_PATH, createGrpcTransport, createRetryPolicy, grpcTarget, isRetryable, retryDelayFromStatusDetails,
} from '../../telemetry/otlp-grpc-exporter.js';
import { statusDetailsWithRetryInfo } from '../fixtures/otlp-receiver.js';

const status = grpc.status;
type status = grpc.status;
const resource = resourceFromAttributes({ 'service.name': 't' });
const spans = (n: number): ReadableSpan[] => Array.from({ length: n }, (_, i) =>
  finishedSpan({ name: `s${i}`, kind: SpanKind.INTERNAL, traceId: randomTraceId(), spanId: randomSpanId(), startNs: 1n, endNs: 2n, attributes: {}, resource, scope: { name: 'test' } }));

// --- hand-built details messages, written with protobufjs's Writer (the fixture's encoder uses reflection)

/** google.protobuf.Any{type_url, value} */
function anyMessage(typeUrl: string, value: Uint8Array): Uint8Array {
  return protobuf.Writer.create().uint32((1 << 3) | 2).string(typeUrl).uint32((2 << 3) | 2).bytes(value).finish();
}
/** RetryInfo{retry_delay: Duration{seconds, nanos}}; undefined: no retry_delay field */
function retryInfo(seconds?: number, nanos?: number): Uint8Array {
  if (seconds === undefined) return new Uint8Array();
  const d = protobuf.Writer.create().uint32((1 << 3) | 0).int64(seconds);
  if (nanos !== undefined) d.uint32((2 << 3) | 0).int32(nanos);
  return protobuf.Writer.create().uint32((1 << 3) | 2).bytes(d.finish()).finish();
}
/** google.rpc.Status{code, message, details} */
function rpcStatus(code: number, message: string, details: Uint8Array[]): Uint8Array {
  const w = protobuf.Writer.create().uint32((1 << 3) | 0).int32(code).uint32((2 << 3) | 2).string(message);
  for (const d of details) w.uint32((3 << 3) | 2).bytes(d);
  return w.finish();
}

t.test('RetryInfo in grpc-status-details-bin', async (t) => {
  const errorInfo = anyMessage('type.googleapis.com/google.rpc.ErrorInfo', protobuf.Writer.create().uint32(10).string('QUOTA').finish());
  const cases: Array<[string, Uint8Array, number | undefined]> = [
    ['the fixture\'s encoding (protobufjs reflection), 1.5 s', statusDetailsWithRetryInfo(status.RESOURCE_EXHAUSTED, 'slow down', 1500), 1500],
    ['the fixture\'s encoding, 250 ms (nanos only)', statusDetailsWithRetryInfo(status.UNAVAILABLE, 'x', 250), 250],
    ['the fixture\'s encoding, 0', statusDetailsWithRetryInfo(status.UNAVAILABLE, 'x', 0), 0],
    ['2 s 500 ms after an ErrorInfo', rpcStatus(8, 'quota', [errorInfo, anyMessage(RETRY_INFO_TYPE_URL, retryInfo(2, 500_000_000))]), 2500],
    ['a RetryInfo without retry_delay is a delay of 0', rpcStatus(8, 'q', [anyMessage(RETRY_INFO_TYPE_URL, retryInfo())]), 0],
    ['a negative delay counts as 0', rpcStatus(8, 'q', [anyMessage(RETRY_INFO_TYPE_URL, retryInfo(-3))]), 0],
    ['only an ErrorInfo', rpcStatus(8, 'quota', [errorInfo]), undefined],
    ['a RetryInfo under another type URL', rpcStatus(8, 'q', [anyMessage('type.googleapis.com/google.rpc.Other', retryInfo(1))]), undefined],
    ['no details', rpcStatus(14, 'down', []), undefined],
    ['empty', new Uint8Array(), undefined],
    ['truncated', statusDetailsWithRetryInfo(8, 'slow down', 1500).subarray(0, 12), undefined],
    ['garbage', Buffer.from('ffffffffffffffffffff', 'hex'), undefined],
  ];
  for (const [name, bytes, want] of cases) t.equal(retryDelayFromStatusDetails(bytes), want, name);
});

t.test('retryable codes: the specification\'s list; RESOURCE_EXHAUSTED only with RetryInfo', async (t) => {
  const retryable = ['CANCELLED', 'DEADLINE_EXCEEDED', 'ABORTED', 'OUT_OF_RANGE', 'UNAVAILABLE', 'DATA_LOSS'];
  for (let code = 0; code <= 16; code++) {
    const name = status[code]!;
    t.equal(isRetryable({ code }), retryable.includes(name), `${name}`);
    t.equal(isRetryable({ code, retryDelayMs: 100 }), retryable.includes(name) || name === 'RESOURCE_EXHAUSTED', `${name} with RetryInfo`);
  }
});

t.test('backoff: 1000 ms ±20%, ×1.5, capped at 5000 ms; the server\'s delay wins; at most maxRetries', async (t) => {
  const unavailable = { code: status.UNAVAILABLE };
  const at = (r: number) => createRetryPolicy({}, () => r);
  // random 0 → −20 %, 0.5 → the base, just under 1 → +20 %
  const table: Array<[number, number, number, number]> = [
    // retry, low, base, high
    [1, 800, 1000, 1200],
    [2, 1200, 1500, 1800],
    [3, 1800, 2250, 2700],
    [4, 2700, 3375, 4050],
    [5, 4000, 5000, 5000], // 5062.5 capped to 5000 before and after jitter
  ];
  for (const [retry, low, base, high] of table) {
    t.equal(at(0).delayMs(unavailable, retry), low, `retry ${retry} at −20 %`);
    t.equal(at(0.5).delayMs(unavailable, retry), base, `retry ${retry} at the base`);
    t.ok(Math.abs(at(0.999999).delayMs(unavailable, retry)! - high) < 0.01, `retry ${retry} at +20 %`);
  }
  t.equal(at(0.5).delayMs(unavailable, 6), undefined, 'no sixth retry by default');
  t.equal(createRetryPolicy({ maxRetries: 8 }, () => 0.5).delayMs(unavailable, 8), 5000, 'maxRetries raised');
  t.equal(at(0.5).delayMs({ code: status.UNAVAILABLE, retryDelayMs: 4321 }, 1), 4321, 'the server\'s RetryInfo delay, unjittered');
  t.equal(at(0.5).delayMs({ code: status.RESOURCE_EXHAUSTED }, 1), undefined);
  t.equal(at(0.5).delayMs({ code: status.RESOURCE_EXHAUSTED, retryDelayMs: 70 }, 1), 70);
  t.equal(at(0.5).delayMs({ code: status.INVALID_ARGUMENT, retryDelayMs: 70 }, 1), undefined, 'RetryInfo does not make any code retryable');
  const small = createRetryPolicy({ initialBackoffMs: 10, maxBackoffMs: 20, backoffMultiplier: 2, jitter: 0 });
  t.same([1, 2, 3].map((r) => small.delayMs(unavailable, r)), [10, 20, 20], 'shrunk for tests');
  // random really varies within the bounds
  const real = createRetryPolicy();
  const seen = Array.from({ length: 200 }, () => real.delayMs(unavailable, 1)!);
  t.ok(Math.min(...seen) >= 800 && Math.max(...seen) <= 1200 && new Set(seen).size > 100, `jitter ${Math.round(Math.min(...seen))}..${Math.round(Math.max(...seen))} ms`);
});

t.test('options are validated', async (t) => {
  const url = 'http://127.0.0.1:4317';
  for (const [opts, re] of [
    [{ timeoutMs: 0 }, /timeoutMs must be positive/],
    [{ initialBackoffMs: -1 }, /initialBackoffMs must not be negative/],
    [{ initialBackoffMs: 100, maxBackoffMs: 50 }, /maxBackoffMs must be at least initialBackoffMs/],
    [{ backoffMultiplier: 0.5 }, /backoffMultiplier must be at least 1/],
    [{ jitter: 1 }, /jitter must be from 0 to below 1/],
    [{ maxRetries: 1.5 }, /maxRetries must be a whole number/],
    [{ timeoutMs: Number.NaN }, /timeoutMs/],
  ] as const) t.throws(() => new OtlpGrpcTraceExporter({ url, ...opts }), re);
  t.throws(() => new OtlpGrpcTraceExporter({ url: 'collector:4317' }), /scheme must be http/);
  t.throws(() => new OtlpGrpcTraceExporter({ url: 'not a url' }), /not a URL/);
  t.same(grpcTarget('http://collector:4317'), { target: 'collector:4317', tls: false });
  t.same(grpcTarget('https://collector.example'), { target: 'collector.example:443', tls: true });
  t.same(grpcTarget('http://[::1]:4317/ignored'), { target: '[::1]:4317', tls: false });
  t.same(grpcTarget('http://collector'), { target: 'collector:80', tls: false });
});

// --- the exporter over a scripted transport and a virtual clock

interface Sent { atMs: number; timeoutMs: number; bytes: number }

/** A transport answering from a script; each answer takes `takesMs` of virtual time. */
function scriptedTransport(clock: { t: number }, answers: Array<GrpcAttemptResult & { takesMs?: number }>) {
  const sent: Sent[] = [];
  let closed = 0;
  const transport: OtlpGrpcTransport = {
    async send(request, timeoutMs) {
      sent.push({ atMs: clock.t, timeoutMs, bytes: request.byteLength });
      const a = answers.shift() ?? { ok: true, response: new Uint8Array() };
      clock.t += Math.min(a.takesMs ?? 0, timeoutMs);
      if ((a.takesMs ?? 0) > timeoutMs) return { ok: false, code: status.DEADLINE_EXCEEDED, message: 'Deadline exceeded' };
      return a;
    },
    close() { closed++; },
  };
  return { transport, sent, closed: () => closed };
}

function virtualClock(): Clock & { t: number; sleeps: number[] } {
  const c = {
    t: 0,
    sleeps: [] as number[],
    now: () => c.t,
    async sleep(ms: number, signal: AbortSignal) {
      c.sleeps.push(ms);
      if (!signal.aborted) c.t += ms;
    },
  };
  return c;
}

const fail = (code: status, extra: Partial<GrpcAttemptResult> = {}): GrpcAttemptResult => ({ ok: false, code, message: status[code]!, ...extra } as GrpcAttemptResult);
const exportOnce = (e: OtlpGrpcTraceExporter, n = 2): Promise<ExportResult> => new Promise((resolve) => e.export(spans(n), resolve));
/** jitter 0 → the base backoff exactly */
const noJitter = { jitter: 0 };

t.test('the exporter\'s loop: retries, deadlines, what it reports', async (t) => {
  const partialResponse = (rejected: number, message: string) => ({ ok: true as const, response: protobuf.Writer.create()
    .uint32((1 << 3) | 2).fork().uint32((1 << 3) | 0).int64(rejected).uint32((2 << 3) | 2).string(message).ldelim().finish() });
  const cases: Array<{
    name: string; opts?: object; answers: Array<GrpcAttemptResult & { takesMs?: number }>;
    result: ExportResultCode; sentAtMs: number[]; timeoutsMs: number[]; stats: object; error?: RegExp;
  }> = [
    { name: 'UNAVAILABLE twice then OK: backoff 1000, 1500', answers: [fail(status.UNAVAILABLE), fail(status.UNAVAILABLE)],
      result: ExportResultCode.SUCCESS, sentAtMs: [0, 1000, 2500], timeoutsMs: [10_000, 9000, 7500], stats: { attempts: 3, retries: 2, succeeded: 1, failed: 0 } },
    { name: 'each attempt gets what remains of the deadline, and slow attempts use it up', opts: { timeoutMs: 3000 },
      answers: [{ ...fail(status.UNAVAILABLE), takesMs: 400 }, { ...fail(status.ABORTED), takesMs: 50 }],
      result: ExportResultCode.SUCCESS, sentAtMs: [0, 1400, 2950], timeoutsMs: [3000, 1600, 50], stats: { attempts: 3, retries: 2 } },
    { name: 'a retry whose wait would pass the deadline is not attempted', opts: { timeoutMs: 2000 }, answers: [fail(status.UNAVAILABLE), fail(status.UNAVAILABLE)],
      result: ExportResultCode.FAILED, sentAtMs: [0, 1000], timeoutsMs: [2000, 1000], stats: { attempts: 2, retries: 1, failed: 1 },
      error: /after 2 attempts: UNAVAILABLE: UNAVAILABLE \(a retry in 1500 ms would pass the 2000 ms deadline\)/ },
    { name: 'a hung attempt uses the whole deadline: DEADLINE_EXCEEDED, no time left to retry', opts: { timeoutMs: 1000 }, answers: [{ ...fail(status.OK), takesMs: 60_000 }],
      result: ExportResultCode.FAILED, sentAtMs: [0], timeoutsMs: [1000], stats: { attempts: 1, retries: 0 }, error: /DEADLINE_EXCEEDED.*would pass the 1000 ms deadline/ },
    { name: 'INVALID_ARGUMENT: one attempt', answers: [fail(status.INVALID_ARGUMENT)],
      result: ExportResultCode.FAILED, sentAtMs: [0], timeoutsMs: [10_000], stats: { attempts: 1, retries: 0, failed: 1 }, error: /after 1 attempt: INVALID_ARGUMENT.*not retryable/ },
    { name: 'RESOURCE_EXHAUSTED without RetryInfo: one attempt', answers: [fail(status.RESOURCE_EXHAUSTED)],
      result: ExportResultCode.FAILED, sentAtMs: [0], timeoutsMs: [10_000], stats: { attempts: 1 }, error: /not retryable/ },
    { name: 'RESOURCE_EXHAUSTED with RetryInfo 300 ms: retried after 300 ms', answers: [fail(status.RESOURCE_EXHAUSTED, { statusDetails: statusDetailsWithRetryInfo(8, 'slow', 300) })],
      result: ExportResultCode.SUCCESS, sentAtMs: [0, 300], timeoutsMs: [10_000, 9700], stats: { attempts: 2, retries: 1 } },
    { name: 'UNAVAILABLE with RetryInfo 2500 ms: the server\'s delay, not the backoff', answers: [fail(status.UNAVAILABLE, { statusDetails: statusDetailsWithRetryInfo(14, 'x', 2500) })],
      result: ExportResultCode.SUCCESS, sentAtMs: [0, 2500], timeoutsMs: [10_000, 7500], stats: { attempts: 2 } },
    { name: 'RetryInfo longer than the deadline: not retried', opts: { timeoutMs: 1000 }, answers: [fail(status.RESOURCE_EXHAUSTED, { statusDetails: statusDetailsWithRetryInfo(8, 'x', 1500) })],
      result: ExportResultCode.FAILED, sentAtMs: [0], timeoutsMs: [1000], stats: { attempts: 1 }, error: /retry in 1500 ms would pass the 1000 ms deadline/ },
    { name: 'retries exhausted (maxRetries 2, shrunk backoff)', opts: { maxRetries: 2, initialBackoffMs: 10, maxBackoffMs: 10 },
      answers: [fail(status.UNAVAILABLE), fail(status.UNAVAILABLE), fail(status.UNAVAILABLE), fail(status.UNAVAILABLE)],
      result: ExportResultCode.FAILED, sentAtMs: [0, 10, 20], timeoutsMs: [10_000, 9990, 9980], stats: { attempts: 3, retries: 2 }, error: /after 3 attempts.*retries exhausted/ },
    { name: 'partial success: a success, counted, never retried', answers: [partialResponse(1, 'too old')],
      result: ExportResultCode.SUCCESS, sentAtMs: [0], timeoutsMs: [10_000], stats: { attempts: 1, retries: 0, rejectedSpans: 1, partialSuccesses: 1 } },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const clock = virtualClock();
      const { transport, sent } = scriptedTransport(clock, [...c.answers]);
      const e = new OtlpGrpcTraceExporter({ url: 'http://127.0.0.1:1', ...noJitter, ...c.opts }, { transport, clock });
      const partials: Array<[number, string]> = [];
      e.onPartialSuccess = (n, m) => partials.push([n, m]);
      const r = await exportOnce(e);
      t.equal(r.code, c.result, r.error?.message ?? 'success');
      t.same(sent.map((s) => s.atMs), c.sentAtMs, 'attempts at (virtual ms)');
      t.same(sent.map((s) => s.timeoutMs), c.timeoutsMs, 'each attempt\'s deadline is what remains');
      t.match(e.stats(), { exports: 1, ...c.stats });
      if (c.error) {
        t.match(r.error?.message, c.error);
        t.type(r.error, OtlpGrpcExportError);
      }
      if (c.name.startsWith('partial')) t.same(partials, [[1, 'too old']], 'onPartialSuccess');
      else t.same(partials, []);
    });
  }
});

t.test('the serializer is ProtobufTraceSerializer; the transport gets its bytes unchanged', async (t) => {
  const clock = virtualClock();
  const got: Uint8Array[] = [];
  const transport: OtlpGrpcTransport = { send: async (b) => { got.push(b); return { ok: true, response: new Uint8Array() }; }, close() {} };
  const e = new OtlpGrpcTraceExporter({ url: 'http://127.0.0.1:1' }, { transport, clock });
  const s = spans(3);
  await new Promise((resolve) => e.export(s, resolve));
  t.same(Buffer.from(got[0]!), Buffer.from(ProtobufTraceSerializer.serializeRequest(s)!));
});

t.test('attempts are published on the diagnostics channel', async (t) => {
  const events: OtlpGrpcAttemptEvent[] = [];
  const onEvent = (m: unknown) => events.push(m as OtlpGrpcAttemptEvent);
  diagnosticsChannel.subscribe(OTLP_GRPC_ATTEMPT_CHANNEL, onEvent);
  t.teardown(() => diagnosticsChannel.unsubscribe(OTLP_GRPC_ATTEMPT_CHANNEL, onEvent));
  const clock = virtualClock();
  const { transport } = scriptedTransport(clock, [fail(status.UNAVAILABLE), fail(status.RESOURCE_EXHAUSTED, { statusDetails: statusDetailsWithRetryInfo(8, 'x', 40) })]);
  await exportOnce(new OtlpGrpcTraceExporter({ url: 'http://127.0.0.1:1', ...noJitter }, { transport, clock }));
  t.same(events, [
    { attempt: 1, status: 'UNAVAILABLE', retryInMs: 1000 },
    { attempt: 2, status: 'RESOURCE_EXHAUSTED', retryInMs: 40, serverDelayMs: 40 },
    { attempt: 3, status: 'OK' },
  ]);
});

t.test('shutdown: a waiting retry ends FAILED at once, no new exports, the channel is closed', async (t) => {
  // real timers: the retry wait is 5 s, shutdown must not wait for it
  let sends = 0;
  let closed = 0;
  const transport: OtlpGrpcTransport = {
    send: async () => { sends++; return fail(status.UNAVAILABLE); },
    close() { closed++; },
  };
  const e = new OtlpGrpcTraceExporter({ url: 'http://127.0.0.1:1', initialBackoffMs: 5000, jitter: 0 }, { transport });
  const result = exportOnce(e);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(sends, 1, 'the first attempt failed; the retry waits');
  const t0 = performance.now();
  await e.shutdown();
  const r = await result;
  t.ok(performance.now() - t0 < 2500, `shutdown took ${Math.round(performance.now() - t0)} ms, not the 5 s retry wait`);
  t.equal(r.code, ExportResultCode.FAILED);
  t.match(r.error?.message, /shut down before the retry/);
  t.equal(sends, 1, 'no retry after shutdown');
  t.equal(closed, 1);
  const after = await exportOnce(e);
  t.equal(after.code, ExportResultCode.FAILED);
  t.match(after.error?.message, /shut down/);
  t.equal(sends, 1);
  await e.shutdown();
  t.equal(closed, 1, 'shutdown is idempotent');
});

t.test('forceFlush waits for exports in flight, retries included', async (t) => {
  const clock = virtualClock();
  const { transport } = scriptedTransport(clock, [fail(status.UNAVAILABLE)]);
  const e = new OtlpGrpcTraceExporter({ url: 'http://127.0.0.1:1', ...noJitter }, { transport, clock });
  let done: ExportResult | undefined;
  e.export(spans(1), (r) => { done = r; });
  t.equal(done, undefined);
  await e.forceFlush();
  t.equal(done?.code, ExportResultCode.SUCCESS);
  t.match(e.stats(), { attempts: 2, retries: 1 });
});

t.test('the grpc-js transport on the wire: path, metadata, gzip, each attempt\'s deadline as grpc-timeout', async (t) => {
  // a bare HTTP/2 server, to see what the (fixture's) gRPC server hides: grpc-encoding and the compressed-flag byte
  const seen: Array<{ headers: http2.IncomingHttpHeaders; body: Buffer }> = [];
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      seen.push({ headers, body: Buffer.concat(chunks) });
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0])); // one uncompressed, empty ExportTraceServiceResponse
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const batch = spans(3);
  const request = Buffer.from(ProtobufTraceSerializer.serializeRequest(batch)!);
  for (const compression of ['gzip', 'none'] as const) {
    seen.length = 0;
    const transport = createGrpcTransport({ url, headers: { 'x-tenant': 'shop', 'x-token-bin': Buffer.from([1, 2, 3]).toString('base64') }, compression });
    const r = await transport.send(request, 4000);
    transport.close();
    t.same(r, { ok: true, response: Buffer.alloc(0) }, `${compression}: OK`);
    const { headers, body } = seen[0]!;
    t.equal(headers[':path'], TRACE_EXPORT_PATH);
    t.equal(headers['content-type'], 'application/grpc');
    t.equal(headers['x-tenant'], 'shop', 'headers → metadata');
    t.equal(headers['x-token-bin'], 'AQID', 'a -bin header travels as binary metadata');
    t.match(headers['user-agent'], /^sockmesh-otlp-grpc-exporter grpc-node-js\//);
    const timeout = /^(\d+)([mu])$/.exec(String(headers['grpc-timeout']));
    const timeoutMs = timeout ? Number(timeout[1]) / (timeout[2] === 'u' ? 1000 : 1) : NaN;
    t.ok(timeoutMs > 3800 && timeoutMs <= 4000, `grpc-timeout ${headers['grpc-timeout']}: the remaining deadline`);
    const flag = body[0];
    const length = body.readUInt32BE(1);
    const payload = body.subarray(5, 5 + length);
    if (compression === 'gzip') {
      t.equal(headers['grpc-encoding'], 'gzip');
      t.equal(flag, 1, 'the message is compressed');
      t.same(gunzipSync(payload), request, 'gunzipped, the serialized request');
    } else {
      t.not(headers['grpc-encoding'], 'gzip');
      t.equal(flag, 0);
      t.same(payload, request);
    }
  }
});

t.test('the grpc-js transport: a closed port is UNAVAILABLE, a closed transport too', async (t) => {
  const server = http2.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const transport = createGrpcTransport({ url: `http://127.0.0.1:${port}` });
  const r = await transport.send(new Uint8Array(), 2000);
  t.match(r, { ok: false, code: status.UNAVAILABLE });
  transport.close();
  t.match(await transport.send(new Uint8Array(), 2000), { ok: false, code: status.UNAVAILABLE, message: /shut down/ });
});
