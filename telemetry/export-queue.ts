/**
 * The span processor between the code that ends spans and the exporter: a
 * bounded queue that never blocks its callers. A span that finds the queue
 * full is dropped and counted; batches go to the exporter one at a time
 * (the exporter does the retrying); shutdown flushes for at most its
 * deadline and then gives up, counting what it could not send.
 *
 * The same processor serves every workload's tracer provider, so one queue
 * bound holds for the whole process.
 */
import type { Context } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, Span, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';

export interface ExportQueueOptions {
  /** spans held at most; default 2048 */
  maxQueueSize?: number;
  /** spans per export; default 512 */
  maxExportBatchSize?: number;
  /** how long a partial batch waits for more spans; default 1000 */
  scheduledDelayMs?: number;
  /**
   * how long one export may take before the queue stops waiting for it and
   * counts its spans failed (the exporter's own timeout should come first);
   * default 30000
   */
  exportTimeoutMs?: number;
  /** how long shutdown() may spend flushing; default 5000 */
  shutdownTimeoutMs?: number;
}

export interface ExportQueueStats {
  /** spans accepted into the queue */
  enqueued: number;
  /** spans the exporter took (success) */
  exported: number;
  /** spans dropped because the queue was full */
  droppedQueueFull: number;
  /** spans in batches the exporter gave up on (non-retryable error, retries exhausted, timeout) */
  failed: number;
  /** spans still queued when shutdown's deadline passed */
  droppedAtShutdown: number;
  /** spans waiting now */
  queued: number;
  /** spans in the export in flight */
  inFlight: number;
  /** exports started */
  batches: number;
  maxQueueSize: number;
}

export class ExportQueue implements SpanProcessor {
  readonly #exporter: SpanExporter;
  readonly #maxQueue: number;
  readonly #maxBatch: number;
  readonly #delayMs: number;
  readonly #exportTimeoutMs: number;
  readonly #shutdownTimeoutMs: number;
  #queue: ReadableSpan[] = [];
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #inFlightCount = 0;
  #closed = false;
  #shutdown: Promise<void> | undefined;
  readonly #stats = { enqueued: 0, exported: 0, droppedQueueFull: 0, failed: 0, droppedAtShutdown: 0, batches: 0 };
  /** called after each export with its outcome (metrics, status) */
  onExport: ((spans: number, result: ExportResult) => void) | undefined;

  constructor(exporter: SpanExporter, opts: ExportQueueOptions = {}) {
    this.#exporter = exporter;
    this.#maxQueue = positive('maxQueueSize', opts.maxQueueSize ?? 2048);
    this.#maxBatch = Math.min(positive('maxExportBatchSize', opts.maxExportBatchSize ?? 512), this.#maxQueue);
    this.#delayMs = nonNegative('scheduledDelayMs', opts.scheduledDelayMs ?? 1000);
    this.#exportTimeoutMs = positive('exportTimeoutMs', opts.exportTimeoutMs ?? 30_000);
    this.#shutdownTimeoutMs = nonNegative('shutdownTimeoutMs', opts.shutdownTimeoutMs ?? 5000);
  }

  stats(): ExportQueueStats {
    return { ...this.#stats, queued: this.#queue.length, inFlight: this.#inFlightCount, maxQueueSize: this.#maxQueue };
  }

  onStart(_span: Span, _parentContext: Context): void {}

  onEnd(span: ReadableSpan): void {
    if ((span.spanContext().traceFlags & 1) === 0) return; // recorded, not sampled
    this.push(span);
  }

  /** Enqueues a finished span that no SDK span processor saw (relayed or built from kernel events). */
  push(span: ReadableSpan): void {
    if (this.#closed || this.#queue.length >= this.#maxQueue) {
      this.#stats.droppedQueueFull++;
      return;
    }
    this.#queue.push(span);
    this.#stats.enqueued++;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#inFlight) return; // the export in flight picks up what is queued when it ends
    if (this.#queue.length >= this.#maxBatch) {
      this.#clearTimer();
      this.#exportNext();
      return;
    }
    if (this.#timer || this.#queue.length === 0) return;
    this.#timer = setTimeout(() => { this.#timer = undefined; this.#exportNext(); }, this.#delayMs);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Sends one batch; when it ends, schedules the rest. */
  #exportNext(): Promise<void> {
    if (this.#inFlight) return this.#inFlight;
    if (this.#queue.length === 0) return Promise.resolve();
    const batch = this.#queue.length <= this.#maxBatch ? this.#queue : this.#queue.slice(0, this.#maxBatch);
    this.#queue = batch === this.#queue ? [] : this.#queue.slice(this.#maxBatch);
    this.#inFlightCount = batch.length;
    this.#stats.batches++;
    const done = new Promise<void>((resolve) => {
      let settled = false;
      const settle = (result: ExportResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(guard);
        if (result.code === ExportResultCode.SUCCESS) this.#stats.exported += batch.length;
        else this.#stats.failed += batch.length;
        this.onExport?.(batch.length, result);
        resolve();
      };
      const guard = setTimeout(() => settle({ code: ExportResultCode.FAILED, error: new Error(`export took longer than ${this.#exportTimeoutMs} ms`) }), this.#exportTimeoutMs);
      guard.unref();
      try {
        this.#exporter.export(batch, settle);
      } catch (err) {
        settle({ code: ExportResultCode.FAILED, error: err as Error });
      }
    });
    this.#inFlight = done.then(() => {
      this.#inFlight = undefined;
      this.#inFlightCount = 0;
      if (!this.#closed || this.#draining) this.#schedule();
    });
    return this.#inFlight;
  }

  #draining = false;

  /** Exports everything queued now (used by forceFlush and shutdown). */
  async #drain(): Promise<void> {
    this.#clearTimer();
    while (this.#queue.length > 0 || this.#inFlight) {
      await (this.#inFlight ?? this.#exportNext());
    }
  }

  async forceFlush(): Promise<void> {
    await this.#drain();
  }

  /**
   * Stops taking spans, flushes for at most shutdownTimeoutMs, then shuts the
   * exporter down within what is left of it; resolves by the deadline even
   * when the collector hangs.
   */
  shutdown(): Promise<void> {
    this.#shutdown ??= (async () => {
      this.#closed = true;
      this.#draining = true;
      const endsAt = performance.now() + this.#shutdownTimeoutMs;
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), this.#shutdownTimeoutMs); });
      const outcome = await Promise.race([this.#drain().then(() => 'done' as const), deadline]);
      clearTimeout(timer);
      this.#draining = false;
      if (outcome === 'late') {
        this.#stats.droppedAtShutdown += this.#queue.length;
        this.#queue = [];
        this.#clearTimer();
      }
      // the exporter's shutdown waits for its in-flight request: it gets what is left of the
      // deadline, at most 200 ms, and nothing once the deadline has passed (it still closes)
      const closing = this.#exporter.shutdown().catch(() => undefined);
      const left = Math.min(200, endsAt - performance.now());
      if (left > 0) await Promise.race([closing, new Promise<void>((r) => setTimeout(r, left).unref())]);
    })();
    return this.#shutdown;
  }
}

function positive(name: string, n: number): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`ExportQueue: ${name} must be positive, got ${n}`);
  return n;
}

function nonNegative(name: string, n: number): number {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`ExportQueue: ${name} must not be negative, got ${n}`);
  return n;
}
