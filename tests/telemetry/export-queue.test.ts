import t from 'tap';
import { SpanKind } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ExportQueue } from '../../telemetry/export-queue.js';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';

const resource = resourceFromAttributes({ 'service.name': 't' });
function span(i: number, sampled = true): ReadableSpan {
  return finishedSpan({ name: `s${i}`, kind: SpanKind.INTERNAL, traceId: randomTraceId(), spanId: randomSpanId(), sampled, startNs: 1n, endNs: 2n, attributes: {}, resource, scope: { name: 'test' } });
}

/** An exporter the test answers by hand: each export waits until the test settles it. */
class ManualExporter implements SpanExporter {
  calls: { spans: ReadableSpan[]; done: (r: ExportResult) => void }[] = [];
  shutdowns = 0;
  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void { this.calls.push({ spans, done }); }
  async shutdown(): Promise<void> { this.shutdowns++; }
}

t.test('a full queue drops and counts; one export at a time; batches as sized', async (t) => {
  const ex = new ManualExporter();
  const q = new ExportQueue(ex, { maxQueueSize: 100, maxExportBatchSize: 40, scheduledDelayMs: 60_000 });
  for (let i = 0; i < 1000; i++) q.push(span(i));
  // the first 40 went out at once (a full batch), the queue then filled to 100
  t.equal(ex.calls.length, 1);
  t.equal(ex.calls[0]!.spans.length, 40);
  t.same({ ...q.stats(), batches: undefined }, { enqueued: 140, exported: 0, droppedQueueFull: 860, failed: 0, droppedAtShutdown: 0, queued: 100, inFlight: 40, maxQueueSize: 100, batches: undefined });
  ex.calls[0]!.done({ code: ExportResultCode.FAILED, error: new Error('collector down') });
  await new Promise((r) => setImmediate(r));
  t.equal(ex.calls.length, 2, 'the next batch starts when the last ends');
  t.equal(ex.calls[1]!.spans.length, 40);
  ex.calls[1]!.done({ code: ExportResultCode.SUCCESS });
  await new Promise((r) => setImmediate(r));
  const s = q.stats();
  t.equal(s.failed, 40);
  t.equal(s.exported, 40);
  t.equal(s.enqueued + s.droppedQueueFull, 1000, 'every span is either queued or counted dropped');
});

t.test('unsampled spans are not exported; a partial batch waits for the delay', async (t) => {
  const ex = new ManualExporter();
  const q = new ExportQueue(ex, { maxQueueSize: 10, maxExportBatchSize: 5, scheduledDelayMs: 30 });
  q.onEnd(span(1, false));
  q.onEnd(span(2));
  t.equal(ex.calls.length, 0);
  await new Promise((r) => setTimeout(r, 80));
  t.equal(ex.calls.length, 1);
  t.equal(ex.calls[0]!.spans.length, 1);
  t.equal(q.stats().enqueued, 1);
  ex.calls[0]!.done({ code: ExportResultCode.SUCCESS });
});

t.test('an exporter that never answers is cut at the export timeout', async (t) => {
  const ex = new ManualExporter();
  const q = new ExportQueue(ex, { maxQueueSize: 10, maxExportBatchSize: 2, exportTimeoutMs: 50 });
  q.push(span(1)); q.push(span(2)); q.push(span(3)); q.push(span(4));
  t.equal(ex.calls.length, 1);
  await new Promise((r) => setTimeout(r, 75));
  t.equal(ex.calls.length, 2, 'the second batch went out after the first timed out');
  t.equal(q.stats().failed, 2);
});

t.test('shutdown flushes what is queued, then stops taking spans', async (t) => {
  const ex = new ManualExporter();
  const q = new ExportQueue(ex, { maxQueueSize: 10, maxExportBatchSize: 5, scheduledDelayMs: 60_000, shutdownTimeoutMs: 1000 });
  q.push(span(1)); q.push(span(2));
  const done = q.shutdown();
  await new Promise((r) => setImmediate(r));
  t.equal(ex.calls.length, 1);
  ex.calls[0]!.done({ code: ExportResultCode.SUCCESS });
  await done;
  t.equal(q.stats().exported, 2);
  t.equal(ex.shutdowns, 1);
  q.push(span(3));
  t.equal(q.stats().droppedQueueFull, 1, 'a span after shutdown is counted dropped');
});

t.test('shutdown gives up at its deadline when the exporter hangs', async (t) => {
  const ex = new ManualExporter();
  const q = new ExportQueue(ex, { maxQueueSize: 100, maxExportBatchSize: 5, scheduledDelayMs: 60_000, shutdownTimeoutMs: 100 });
  for (let i = 0; i < 12; i++) q.push(span(i));
  const t0 = performance.now();
  await q.shutdown();
  const took = performance.now() - t0;
  t.ok(took >= 90 && took < 600, `shutdown returned after ${took.toFixed(0)} ms`);
  t.equal(q.stats().droppedAtShutdown, 7, 'what never left the queue is counted');
});

t.test('bad options are refused', async (t) => {
  t.throws(() => new ExportQueue(new ManualExporter(), { maxQueueSize: 0 }), /maxQueueSize/);
});
