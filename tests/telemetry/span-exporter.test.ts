/*
 * What the OTLP specification asks of an exporter, checked against the
 * scripted receiver (tests/fixtures/otlp-receiver.ts) through the real
 * wiring: telemetryOptions(OTEL_* env) → createSpanExporter → ExportQueue.
 *
 * - retryable answers are retried with backoff (HTTP 429/503 honouring
 *   Retry-After; the retryable gRPC codes, RESOURCE_EXHAUSTED only with
 *   RetryInfo), the rest never; a partial success is never retried;
 * - a hung collector costs one export its timeout, then the queue moves on;
 * - a dead collector never blocks the code that ends spans, and every span
 *   is accounted for;
 * - SIGTERM flushes within the shutdown deadline.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { SpanKind } from '@opentelemetry/api';
import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import t from 'tap';
import { ExportQueue, type ExportQueueStats } from '../../telemetry/export-queue.js';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';
import { OtlpGrpcTraceExporter } from '../../telemetry/otlp-grpc-exporter.js';
import { createSpanExporter } from '../../telemetry/span-exporter.js';
import { type TelemetryOptions, telemetryOptions } from '../../telemetry/telemetry-options.js';
import { OtlpReceiver, type Scripted } from '../fixtures/otlp-receiver.js';

const status = grpc.status;
const resource = resourceFromAttributes({ 'service.name': 'span-exporter-test' });
let serial = 0;
/** n finished spans named p0, p1, … (prefix unique per call) */
function spans(n: number): ReadableSpan[] {
  const prefix = `b${serial++}-`;
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  return Array.from({ length: n }, (_, i) => finishedSpan({
    name: `${prefix}${i}`, kind: SpanKind.INTERNAL, traceId: randomTraceId(), spanId: randomSpanId(),
    startNs: nowNs, endNs: nowNs + 1000n, attributes: {}, resource, scope: { name: 'test' },
  }));
}

/** The queue as the agent builds it from the options. */
function queueFor(exporter: SpanExporter, tel: TelemetryOptions): ExportQueue {
  return new ExportQueue(exporter, {
    maxQueueSize: tel.maxQueueSize, maxExportBatchSize: tel.maxExportBatchSize, scheduledDelayMs: tel.scheduledDelayMs,
    exportTimeoutMs: tel.timeoutMs + 2000, shutdownTimeoutMs: tel.shutdownTimeoutMs,
  });
}

interface Outcome { spans: number; result: ExportResult; tookMs: number }

/** Watches a queue's exports: each one's size, result and duration (from the start of the export before it). */
function watch(q: ExportQueue): Outcome[] {
  const out: Outcome[] = [];
  let since = performance.now();
  q.onExport = (n, result) => {
    const now = performance.now();
    out.push({ spans: n, result, tookMs: now - since });
    since = now;
  };
  return out;
}

const gaps = (r: OtlpReceiver): number[] => r.requests.slice(1).map((q, i) => Math.round(q.atMs - r.requests[i]!.atMs));
const fmt = (s: ExportQueueStats): string => `enqueued ${s.enqueued}, exported ${s.exported}, failed ${s.failed}, droppedQueueFull ${s.droppedQueueFull}, droppedAtShutdown ${s.droppedAtShutdown}, queued ${s.queued}, inFlight ${s.inFlight}`;

const receiver = await OtlpReceiver.start({ http: true, grpc: true });
t.teardown(() => receiver.close());

t.test('retries as the specification says, through OTEL_* configuration and the export queue', async (t) => {
  const http = (extra: Record<string, string> = {}) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpUrl, ...extra });
  const grpcEnv = (extra: Record<string, string> = {}) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.grpcUrl, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', ...extra });
  /** our gRPC exporter with the backoff shrunk 10× and jitter ±10 % (the defaults are exercised by the createSpanExporter rows) */
  const fastGrpc = (tel: TelemetryOptions) => new OtlpGrpcTraceExporter({ url: tel.endpoint!, headers: tel.headers, timeoutMs: tel.timeoutMs, initialBackoffMs: 100, maxBackoffMs: 500, jitter: 0.1 });

  const cases: Array<{
    name: string; env: Record<string, string>; script: Scripted[]; make?: (tel: TelemetryOptions) => SpanExporter;
    answered: Array<number | string>; delivered: boolean; gapsMs?: Array<[number, number]>; growing?: boolean;
    error?: RegExp; tookMs?: [number, number]; headers?: Record<string, string | RegExp>; partial?: boolean;
  }> = [
    { name: 'http 429 with Retry-After: 1 → retried ≥ 1 s later, delivered once', env: http(), script: [{ status: 429, retryAfter: '1' }],
      answered: [429, 200], delivered: true, gapsMs: [[990, 1500]] },
    { name: 'http 503 twice then 200 → three requests, growing gaps (1000 then 1500 ms ±20 %)', env: http(), script: [{ status: 503 }, { status: 503 }],
      answered: [503, 503, 200], delivered: true, gapsMs: [[780, 1300], [1170, 1900]], growing: true },
    { name: 'http 400 → one request, FAILED, counted failed', env: http(), script: [{ status: 400, body: 'bad request body' }],
      answered: [400], delivered: false, error: /bad request body|Bad Request/ },
    { name: 'http partial success → one request, a success', env: http(), script: [{ partialSuccess: { rejectedSpans: 2, errorMessage: 'too old' } }],
      answered: [200], delivered: true },
    { name: 'http hung collector, OTEL_EXPORTER_OTLP_TIMEOUT=1000 → FAILED after ~1 s, not retried', env: http({ OTEL_EXPORTER_OTLP_TIMEOUT: '1000' }), script: [{ hang: true }],
      answered: ['hang'], delivered: false, error: /timed out/, tookMs: [950, 2000] },
    { name: 'grpc UNAVAILABLE once then OK (default backoff) → retried after ~1 s; metadata from OTEL_EXPORTER_OTLP_HEADERS, gzip on',
      env: grpcEnv({ OTEL_EXPORTER_OTLP_HEADERS: 'x-tenant=shop', OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip' }), script: [{ grpcCode: status.UNAVAILABLE }],
      answered: ['UNAVAILABLE', 'OK'], delivered: true, gapsMs: [[780, 1300]], headers: { 'x-tenant': 'shop', 'user-agent': /^sockmesh-otlp-grpc-exporter / } },
    { name: 'grpc UNAVAILABLE twice then OK (backoff shrunk to 100 ms ±10 %, ×1.5) → three requests, growing gaps', env: grpcEnv(), make: fastGrpc,
      script: [{ grpcCode: status.UNAVAILABLE }, { grpcCode: status.UNAVAILABLE }],
      answered: ['UNAVAILABLE', 'UNAVAILABLE', 'OK'], delivered: true, gapsMs: [[88, 200], [132, 250]], growing: true },
    { name: 'grpc INVALID_ARGUMENT → one request', env: grpcEnv(), script: [{ grpcCode: status.INVALID_ARGUMENT, grpcMessage: 'bad span' }],
      answered: ['INVALID_ARGUMENT'], delivered: false, error: /after 1 attempt: INVALID_ARGUMENT: bad span \(not retryable\)/ },
    { name: 'grpc RESOURCE_EXHAUSTED without RetryInfo → one request', env: grpcEnv(), script: [{ grpcCode: status.RESOURCE_EXHAUSTED }],
      answered: ['RESOURCE_EXHAUSTED'], delivered: false, error: /RESOURCE_EXHAUSTED.*not retryable/ },
    { name: 'grpc RESOURCE_EXHAUSTED with RetryInfo 300 ms → retried after the server\'s delay, not the 1 s backoff', env: grpcEnv(),
      script: [{ grpcCode: status.RESOURCE_EXHAUSTED, retryDelayMs: 300 }],
      answered: ['RESOURCE_EXHAUSTED', 'OK'], delivered: true, gapsMs: [[290, 600]] },
    { name: 'grpc partial success → one request, a success', env: grpcEnv(), script: [{ partialSuccess: { rejectedSpans: 2, errorMessage: 'too old' } }],
      answered: ['OK'], delivered: true, partial: true },
    { name: 'grpc hung collector, OTEL_EXPORTER_OTLP_TIMEOUT=1000 → DEADLINE_EXCEEDED after ~1 s, not retried', env: grpcEnv({ OTEL_EXPORTER_OTLP_TIMEOUT: '1000' }), script: [{ hang: true }],
      answered: ['hang'], delivered: false, error: /DEADLINE_EXCEEDED.*would pass the 1000 ms deadline/, tookMs: [950, 2000] },
  ];

  for (const c of cases) {
    await t.test(c.name, async (t) => {
      receiver.reset();
      receiver.script(...c.script);
      const tel = telemetryOptions(c.env);
      t.equal(tel.target, 'otlp');
      const exporter = c.make?.(tel) ?? createSpanExporter(tel);
      if (tel.protocol === 'grpc') t.type(exporter, OtlpGrpcTraceExporter, 'gRPC goes through our exporter');
      const q = queueFor(exporter, tel);
      const outcomes = watch(q);
      const batch = spans(3);
      for (const s of batch) q.push(s);
      await q.forceFlush();

      t.same(receiver.requests.map((r) => r.answered), c.answered, `requests answered ${JSON.stringify(receiver.requests.map((r) => r.answered))}`);
      t.ok(receiver.requests.every((r) => r.spanCount === 3), 'every attempt carried the batch');
      t.equal(outcomes.length, 1, 'one export');
      const o = outcomes[0]!;
      t.equal(o.result.code, c.delivered ? ExportResultCode.SUCCESS : ExportResultCode.FAILED, o.result.error?.message ?? 'SUCCESS');
      t.match(q.stats(), c.delivered ? { exported: 3, failed: 0 } : { exported: 0, failed: 3 }, fmt(q.stats()));
      const names = receiver.spans().map((s) => s.name).sort();
      t.same(names, c.delivered ? batch.map((s) => s.name).sort() : [], c.delivered ? 'delivered once' : 'nothing delivered');
      if (c.error) t.match(o.result.error?.message, c.error);
      const g = gaps(receiver);
      if (c.gapsMs) {
        t.equal(g.length, c.gapsMs.length);
        c.gapsMs.forEach(([lo, hi], i) => t.ok(g[i]! >= lo && g[i]! <= hi, `retry ${i + 1} after ${g[i]} ms (expected ${lo}..${hi})`));
      }
      if (c.growing) t.ok(g.every((x, i) => i === 0 || x > g[i - 1]!), `gaps grow: ${g.join(' < ')} ms`);
      if (c.tookMs) t.ok(o.tookMs >= c.tookMs[0] && o.tookMs <= c.tookMs[1], `the export ended after ${Math.round(o.tookMs)} ms (expected ${c.tookMs[0]}..${c.tookMs[1]})`);
      if (c.headers) t.match(receiver.requests[0]!.headers, c.headers, 'metadata from OTEL_EXPORTER_OTLP_HEADERS');
      if (c.partial) t.match((exporter as OtlpGrpcTraceExporter).stats(), { rejectedSpans: 2, partialSuccesses: 1, attempts: 1, retries: 0 }, 'the rejected spans are counted');
      if (!c.delivered && c.script[0]?.hang) {
        // the queue moves on: the next span goes out (the receiver answers normally now)
        const next = spans(1);
        q.push(next[0]!);
        await q.forceFlush();
        t.same(receiver.spans().map((s) => s.name), [next[0]!.name], 'the queue moves on: the next batch is delivered');
        t.match(q.stats(), { exported: 1, failed: 3 });
      }
      const t0 = performance.now();
      await q.shutdown();
      t.ok(performance.now() - t0 < 1500, `shutdown took ${Math.round(performance.now() - t0)} ms: nothing left to wait for`);
      t.comment(`${c.name}: gaps ${JSON.stringify(g)} ms, export ${Math.round(o.tookMs)} ms, ${fmt(q.stats())}`);
    });
  }
});

t.test('a dead collector: pushing 10,000 spans never blocks; every span is accounted for', async (t) => {
  const dead = await OtlpReceiver.start({ http: true, grpc: true });
  const urls = { http: dead.httpUrl, grpc: dead.grpcUrl };
  await dead.close(); // nothing listens on these ports now
  const rows = [
    { name: 'http/protobuf, 500 ms export timeout: every batch fails fast (ECONNREFUSED, the ~1 s retry would pass the deadline)',
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: urls.http, OTEL_EXPORTER_OTLP_TIMEOUT: '500', SOCKMESH_TRACES_SHUTDOWN_TIMEOUT: '5000' } },
    { name: 'http/protobuf, 2000 ms export timeout, 1500 ms shutdown: each batch retries once (~1 s), shutdown drops the rest',
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: urls.http, OTEL_EXPORTER_OTLP_TIMEOUT: '2000', SOCKMESH_TRACES_SHUTDOWN_TIMEOUT: '1500' }, dropsAtShutdown: true },
    { name: 'grpc, 500 ms export timeout: UNAVAILABLE, not retried past the deadline',
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: urls.grpc, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TIMEOUT: '500', SOCKMESH_TRACES_SHUTDOWN_TIMEOUT: '5000' } },
  ];
  for (const row of rows) {
    await t.test(row.name, async (t) => {
      const tel = telemetryOptions({ ...row.env, OTEL_BSP_MAX_QUEUE_SIZE: '2048', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '512' });
      const q = queueFor(createSpanExporter(tel), tel);
      const all = spans(10_000);
      let maxQueued = 0;
      const t0 = performance.now();
      for (const s of all) {
        q.push(s);
        const queued = q.stats().queued;
        if (queued > maxQueued) maxQueued = queued;
      }
      const pushMs = performance.now() - t0;
      // a push never waits for the exporter (a dead collector here, a 500 ms timeout in one row)
      t.ok(pushMs < 2000, `10,000 pushes (and queue-length samples) took ${pushMs.toFixed(1)} ms`);
      t.ok(maxQueued <= 2048, `the queue never held more than 2048 (at most ${maxQueued})`);
      const afterPush = q.stats();
      t.ok(afterPush.queued <= 2048, `queued ${afterPush.queued} ≤ 2048`);
      t.equal(afterPush.enqueued + afterPush.droppedQueueFull, 10_000, `after the loop: ${fmt(afterPush)}`);
      t.equal(afterPush.inFlight, 512, 'one batch went out as soon as it was full');
      t.equal(afterPush.enqueued, 2048 + 512, 'the queue filled behind it');
      const s0 = performance.now();
      await q.shutdown();
      const shutdownMs = performance.now() - s0;
      t.ok(shutdownMs <= tel.shutdownTimeoutMs + 400, `shutdown took ${Math.round(shutdownMs)} ms (deadline ${tel.shutdownTimeoutMs})`);
      const atShutdown = q.stats();
      t.equal(atShutdown.queued, 0, 'nothing left queued');
      t.equal(atShutdown.exported + atShutdown.failed + atShutdown.droppedAtShutdown + atShutdown.inFlight, atShutdown.enqueued, `at shutdown: ${fmt(atShutdown)}`);
      // a batch still in flight when the deadline passed ends by its own export timeout
      const w0 = performance.now();
      while (q.stats().inFlight > 0 && performance.now() - w0 < tel.timeoutMs + 2500) await new Promise((r) => setTimeout(r, 20));
      const s = q.stats();
      t.equal(s.inFlight, 0, 'the in-flight batch settled');
      t.equal(s.enqueued + s.droppedQueueFull, 10_000, 'enqueued + droppedQueueFull = 10000');
      t.equal(s.exported + s.failed + s.droppedAtShutdown, s.enqueued, 'exported + failed + droppedAtShutdown = enqueued');
      t.equal(s.exported, 0, 'nothing exported');
      if ('dropsAtShutdown' in row) t.ok(s.droppedAtShutdown > 0 && s.failed > 0, 'both failed and dropped at shutdown');
      else t.same([s.failed, s.droppedAtShutdown], [s.enqueued, 0], 'every batch failed within the shutdown deadline');
      t.comment(`${row.name}: push loop ${pushMs.toFixed(1)} ms, shutdown ${Math.round(shutdownMs)} ms, final ${fmt(s)}`);
    });
  }
});

// --- SIGTERM in a child process

const CHILD = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'fixtures', 'span-flush-child.ts');
/** how this test file itself runs TypeScript: tap's loader (ts-node, transpile only) */
const TS_LOADER = ['--import', import.meta.resolve('@tapjs/typescript/import')];

interface ChildRun { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; exitMs: number; stats: ExportQueueStats; shutdownMs: number }

/**
 * Starts the child and waits until it has pushed `count` spans; `stop()` then SIGTERMs it and
 * times its exit from the signal.
 */
async function startChild(env: Record<string, string>, count: number, prefix: string): Promise<{ stop(): Promise<ChildRun> }> {
  const childEnv: Record<string, string | undefined> = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1', ...env };
  for (const k of Object.keys(childEnv)) if (k.startsWith('OTEL_') && !(k in env)) delete childEnv[k];
  const child: ChildProcess = spawn(process.execPath, [...TS_LOADER, CHILD, String(count), prefix], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  try {
    await new Promise<void>((resolve, reject) => {
      const onData = (): void => { if (/^ready \d+$/m.test(stdout)) { child.stdout!.off('data', onData); resolve(); } };
      child.stdout!.on('data', onData);
      void exited.then(([code]) => reject(new Error(`the child exited (${code}) before it was ready: ${stdout} ${stderr}`)));
    });
  } catch (err) {
    clearTimeout(killer);
    throw err;
  }
  return {
    async stop() {
      try {
        const t0 = performance.now();
        child.kill('SIGTERM');
        const [code, signal] = await exited;
        const exitMs = performance.now() - t0;
        const stats = JSON.parse(/^stats (.*)$/m.exec(stdout)?.[1] ?? 'null') as ExportQueueStats;
        const shutdownMs = Number(/^shutdownMs (\d+)$/m.exec(stdout)?.[1] ?? NaN);
        return { code, signal, stdout, stderr, exitMs, stats, shutdownMs };
      } finally {
        clearTimeout(killer);
      }
    },
  };
}

t.test('SIGTERM flushes within the shutdown deadline (child processes, HTTP and gRPC)', async (t) => {
  const hung = await OtlpReceiver.start({ http: true, grpc: true });
  t.teardown(() => hung.close());
  hung.script(...Array.from({ length: 20 }, () => ({ hang: true })));
  const live = await OtlpReceiver.start({ http: true, grpc: true });
  t.teardown(() => live.close());
  const grpcEnv = { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' };
  const hungEnv = { OTEL_EXPORTER_OTLP_TIMEOUT: '700', SOCKMESH_TRACES_SHUTDOWN_TIMEOUT: '1000' };
  // the export schedule far away: a ready child waits for its siblings (seconds, in a busy run), and
  // a 1 s schedule would send its spans before SIGTERM (the hung ones: all three batches out and
  // nothing left to drop at shutdown, as a CI run saw)
  const scheduleEnv = { OTEL_BSP_SCHEDULE_DELAY: '600000' };
  // all four start at once (their TypeScript start-up is most of the time); none is signalled
  // before every one is ready, so no child's shutdown is timed while another compiles
  const started = await Promise.all([
    // a live collector: the 300 queued spans wait for the schedule; SIGTERM flushes them at once
    startChild({ OTEL_EXPORTER_OTLP_ENDPOINT: live.httpUrl, ...scheduleEnv }, 300, 'h'),
    startChild({ OTEL_EXPORTER_OTLP_ENDPOINT: live.grpcUrl, ...grpcEnv, ...scheduleEnv }, 300, 'g'),
    // a hung one: 1500 spans (batches of 512), 700 ms export timeout, 1000 ms shutdown deadline
    startChild({ OTEL_EXPORTER_OTLP_ENDPOINT: hung.httpUrl, ...hungEnv, ...scheduleEnv }, 1500, 'h'),
    startChild({ OTEL_EXPORTER_OTLP_ENDPOINT: hung.grpcUrl, ...grpcEnv, ...hungEnv, ...scheduleEnv }, 1500, 'g'),
  ]);
  const [liveHttp, liveGrpc, hungHttp, hungGrpc] = await Promise.all(started.map((c) => c.stop()));

  for (const [transport, a, prefix] of [['http', liveHttp, 'h'], ['grpc', liveGrpc, 'g']] as const) {
    t.test(`${transport}, live collector: every span arrives, exit 0, quickly`, async (t) => {
      t.equal(a.code, 0, `exit code (stderr: ${a.stderr.trim()})`);
      t.same(a.stats && { enqueued: a.stats.enqueued, exported: a.stats.exported, failed: a.stats.failed, droppedAtShutdown: a.stats.droppedAtShutdown, droppedQueueFull: a.stats.droppedQueueFull },
        { enqueued: 300, exported: 300, failed: 0, droppedAtShutdown: 0, droppedQueueFull: 0 }, a.stdout.trim());
      const names = live.spans().map((s) => s.name).filter((n) => n.startsWith(prefix));
      t.equal(names.length, 300, 'all 300 spans arrived');
      t.equal(new Set(names).size, 300, 'once each');
      t.same(live.requests.filter((r) => r.transport === transport).map((r) => r.answered), [transport === 'http' ? 200 : 'OK'], 'in one batch, sent at SIGTERM');
      // the flush is timed in the child; the exit, seen from here, also holds the process's teardown
      t.ok(a.shutdownMs < 500, `flushed ${a.shutdownMs} ms after SIGTERM, not at the schedule`);
      t.ok(a.exitMs < 2500, `exited ${Math.round(a.exitMs)} ms after SIGTERM`);
    });
  }

  for (const [transport, b] of [['http', hungHttp], ['grpc', hungGrpc]] as const) {
    t.test(`${transport}, hung collector, shutdown deadline 1000 ms: exits by ~1.5 s anyway, saying what it lost`, async (t) => {
      t.equal(b.code, 0, `exit code (stderr: ${b.stderr.trim()})`);
      const s = b.stats;
      t.ok(s, b.stdout.trim());
      t.equal(s.enqueued, 1500);
      t.ok(b.shutdownMs >= 1000 && b.shutdownMs < 1300, `shutdown ended at its 1000 ms deadline (${b.shutdownMs} ms), not after the three batches' 700 ms timeouts`);
      t.ok(b.exitMs < 3000, `exited ${Math.round(b.exitMs)} ms after SIGTERM: nothing held the process once the shutdown ended`);
      t.ok(s.droppedAtShutdown > 0, `droppedAtShutdown ${s.droppedAtShutdown}`);
      t.ok(s.failed > 0, `failed ${s.failed} (a batch timed out after 700 ms)`);
      t.equal(s.exported, 0);
      t.equal(s.exported + s.failed + s.droppedAtShutdown + s.inFlight, s.enqueued, `reported: ${fmt(s)}`);
      const reqs = hung.requests.filter((r) => r.transport === transport);
      t.ok(reqs.length >= 1 && reqs.every((r) => r.answered === 'hang'), `requests ${JSON.stringify(reqs.map((r) => r.answered))}`);
    });
  }
  t.same(hung.spans(), [], 'the hung collector accepted nothing');
});
