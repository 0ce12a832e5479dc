/**
 * An OTLP/gRPC trace exporter that retries as the OTLP specification says
 * (the official 0.223 gRPC exporter sends every batch once and reports any
 * non-OK status as a failure).
 *
 * Three injected parts, so tests swap the transport and keep the logic:
 * - a serializer (ProtobufTraceSerializer: spans → ExportTraceServiceRequest
 *   bytes, response bytes → partial success);
 * - a transport (one unary TraceService/Export call through @grpc/grpc-js
 *   with raw bytes; headers as metadata; gzip; insecure for http:// URLs,
 *   TLS for https://);
 * - a retry policy: the retryable codes are CANCELLED, DEADLINE_EXCEEDED,
 *   ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS, and RESOURCE_EXHAUSTED
 *   only when the server sent a RetryInfo in `grpc-status-details-bin`;
 *   the wait is the server's RetryInfo delay when there is one, else
 *   exponential backoff with jitter.
 *
 * Every attempt of one export fits in its `timeoutMs`: each attempt's gRPC
 * deadline is what remains of it, and a retry whose wait would pass it is not
 * attempted. A partial success is a success (never retried); its rejected
 * spans are counted and handed to `onPartialSuccess`.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { ProtobufTraceSerializer, type IExportTraceServiceResponse, type ISerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import protobuf from 'protobufjs';

/** The TraceService's one method, as gRPC names it on the wire. */
export const TRACE_EXPORT_PATH = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';

/** The trailer carrying a google.rpc.Status with details (gRPC richer error model). */
export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';

export const RETRY_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.RetryInfo';

/**
 * Published on `OTLP_GRPC_ATTEMPT_CHANNEL` (node:diagnostics_channel) after
 * every attempt, so status pages and tests can follow retries without polling.
 */
export interface OtlpGrpcAttemptEvent {
  /** 1 for the first attempt of an export */
  attempt: number;
  /** the gRPC status name: 'OK', 'UNAVAILABLE', … */
  status: string;
  /** the wait before the next attempt; absent when there is none */
  retryInMs?: number;
  /** the server's RetryInfo delay, when it sent one */
  serverDelayMs?: number;
}

export const OTLP_GRPC_ATTEMPT_CHANNEL = 'sockmesh:otlp:grpc-attempt';
const attemptChannel = diagnosticsChannel.channel(OTLP_GRPC_ATTEMPT_CHANNEL);

// ---------------------------------------------------------------------------
// The transport

/** What one Export call came to: the response bytes, or a non-OK status. */
export type GrpcAttemptResult =
  | { ok: true; response: Uint8Array }
  | { ok: false; code: grpc.status; message: string; /** the grpc-status-details-bin trailer, if sent */ statusDetails?: Uint8Array };

/** Sends one unary Export call. */
export interface OtlpGrpcTransport {
  /** Never rejects: every failure (connection, deadline, server) is a status. */
  send(request: Uint8Array, timeoutMs: number): Promise<GrpcAttemptResult>;
  /** Closes the channel; calls in flight end with their own deadlines. */
  close(): void;
}

export interface GrpcTransportOptions {
  /** http://host[:port] (plaintext, port 80 by default) or https://host[:port] (TLS, 443); a path is ignored */
  url: string;
  /** sent as gRPC metadata on every call (a key ending -bin takes a base64 value); default none */
  headers?: Readonly<Record<string, string>>;
  /** default none */
  compression?: 'gzip' | 'none';
}

/** The gRPC target ('host:port') and whether to use TLS, from an http(s) URL. */
export function grpcTarget(url: string): { target: string; tls: boolean } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RangeError(`OTLP/gRPC: ${JSON.stringify(url)} is not a URL (e.g. http://collector:4317)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RangeError(`OTLP/gRPC: ${JSON.stringify(url)}: the scheme must be http (plaintext) or https (TLS)`);
  const tls = u.protocol === 'https:';
  return { target: `${u.hostname}:${u.port || (tls ? '443' : '80')}`, tls };
}

const raw = (b: Buffer): Buffer => b;

/** The @grpc/grpc-js transport: one channel, opened on the first call. */
export function createGrpcTransport(opts: GrpcTransportOptions): OtlpGrpcTransport {
  const { target, tls } = grpcTarget(opts.url);
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.headers ?? {})) {
    if (k.endsWith('-bin')) metadata.set(k, Buffer.from(v, 'base64'));
    else metadata.set(k, v);
  }
  const channelOptions: grpc.ChannelOptions = {
    'grpc.primary_user_agent': 'sockmesh-otlp-grpc-exporter',
    ...(opts.compression === 'gzip' && { 'grpc.default_compression_algorithm': grpc.compressionAlgorithms.gzip }),
  };
  let client: grpc.Client | undefined;
  let closed = false;
  return {
    send(request, timeoutMs) {
      if (closed) return Promise.resolve({ ok: false, code: grpc.status.UNAVAILABLE, message: 'the exporter is shut down' });
      client ??= new grpc.Client(target, tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure(), channelOptions);
      const c = client;
      return new Promise((resolve) => {
        c.makeUnaryRequest(TRACE_EXPORT_PATH, raw, raw, Buffer.from(request.buffer, request.byteOffset, request.byteLength), metadata.clone(),
          { deadline: Date.now() + Math.max(0, timeoutMs) },
          (err, response) => {
            if (!err) {
              resolve({ ok: true, response: response ?? new Uint8Array() });
              return;
            }
            const details = err.metadata?.get(STATUS_DETAILS_KEY)[0];
            resolve({
              ok: false,
              code: err.code,
              message: err.details || err.message,
              ...(Buffer.isBuffer(details) && { statusDetails: details }),
            });
          });
      });
    },
    close() {
      closed = true;
      client?.close();
      client = undefined;
    },
  };
}

// ---------------------------------------------------------------------------
// RetryInfo

/**
 * The RetryInfo delay in a `grpc-status-details-bin` trailer, in ms; undefined
 * when the google.rpc.Status carries none (or is not one). Decoded by field
 * number: Status{code=1, message=2, details=3 repeated Any{type_url=1,
 * value=2}}, RetryInfo{retry_delay=1 Duration{seconds=1, nanos=2}}.
 */
export function retryDelayFromStatusDetails(bytes: Uint8Array): number | undefined {
  try {
    let delayMs: number | undefined;
    forEachField(bytes, (field, wire, r) => {
      if (field !== 3 || wire !== 2) return false;
      const any = r.bytes();
      let typeUrl = '';
      let value: Uint8Array | undefined;
      forEachField(any, (f, w, ar) => {
        if (f === 1 && w === 2) typeUrl = ar.string();
        else if (f === 2 && w === 2) value = ar.bytes();
        else return false;
        return true;
      });
      if (typeUrl === RETRY_INFO_TYPE_URL && value) delayMs = retryInfoDelayMs(value);
      return true;
    });
    return delayMs;
  } catch {
    return undefined; // malformed details: as if none were sent
  }
}

/** RetryInfo{retry_delay: Duration} → ms (an absent delay is 0, as proto3 defaults say); negative counts as 0. */
function retryInfoDelayMs(bytes: Uint8Array): number {
  let seconds = 0;
  let nanos = 0;
  forEachField(bytes, (field, wire, r) => {
    if (field !== 1 || wire !== 2) return false;
    forEachField(r.bytes(), (f, w, dr) => {
      if (f === 1 && w === 0) seconds = protobuf.util.LongBits.from(dr.int64()).toNumber();
      else if (f === 2 && w === 0) nanos = dr.int32();
      else return false;
      return true;
    });
    return true;
  });
  return Math.max(0, seconds * 1000 + nanos / 1e6);
}

/** Calls fn for each field's tag; fn reads the value and returns true, or returns false to have it skipped. */
function forEachField(bytes: Uint8Array, fn: (field: number, wire: number, r: protobuf.Reader) => boolean): void {
  const r = protobuf.Reader.create(bytes);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (!fn(tag >>> 3, tag & 7, r)) r.skipType(tag & 7);
  }
}

// ---------------------------------------------------------------------------
// The retry policy

/** The codes the OTLP specification calls retryable (RESOURCE_EXHAUSTED only with RetryInfo). */
export const RETRYABLE_GRPC_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.ABORTED,
  grpc.status.OUT_OF_RANGE, grpc.status.UNAVAILABLE, grpc.status.DATA_LOSS,
]);

/** One failed attempt, as the retry policy sees it. */
export interface GrpcFailure {
  code: grpc.status;
  /** the server's RetryInfo delay, when it sent one */
  retryDelayMs?: number;
}

export function isRetryable(f: GrpcFailure): boolean {
  return RETRYABLE_GRPC_CODES.has(f.code) || (f.code === grpc.status.RESOURCE_EXHAUSTED && f.retryDelayMs !== undefined);
}

export interface RetryOptions {
  /** the wait before the first retry, before jitter; default 1000 */
  initialBackoffMs?: number;
  /** no wait is longer; default 5000 */
  maxBackoffMs?: number;
  /** each wait is the last one times this; default 1.5 */
  backoffMultiplier?: number;
  /** each wait varies by up to this fraction either way; default 0.2 */
  jitter?: number;
  /** retries per export at most (the deadline usually ends them first); default 5 */
  maxRetries?: number;
}

export interface RetryPolicy {
  /** The wait before retry number `retry` (1 = the first) after this failure; undefined: do not retry. */
  delayMs(failure: GrpcFailure, retry: number): number | undefined;
}

/** Validated, frozen retry settings with their defaults filled in. */
export function retryOptions(opts: RetryOptions = {}): Readonly<Required<RetryOptions>> {
  const o = {
    initialBackoffMs: opts.initialBackoffMs ?? 1000,
    maxBackoffMs: opts.maxBackoffMs ?? 5000,
    backoffMultiplier: opts.backoffMultiplier ?? 1.5,
    jitter: opts.jitter ?? 0.2,
    maxRetries: opts.maxRetries ?? 5,
  };
  check('initialBackoffMs', o.initialBackoffMs, (n) => n >= 0, 'must not be negative');
  check('maxBackoffMs', o.maxBackoffMs, (n) => n >= o.initialBackoffMs, 'must be at least initialBackoffMs');
  check('backoffMultiplier', o.backoffMultiplier, (n) => n >= 1, 'must be at least 1');
  check('jitter', o.jitter, (n) => n >= 0 && n < 1, 'must be from 0 to below 1');
  check('maxRetries', o.maxRetries, (n) => Number.isInteger(n) && n >= 0, 'must be a whole number, 0 or more');
  return Object.freeze(o);
}

/**
 * The specification's policy: retryable codes only; the server's RetryInfo
 * delay when sent, else min(initial × multiplier^(retry−1), max) varied by
 * ±jitter and capped at max. `random` returns [0, 1) (injected for tests).
 */
export function createRetryPolicy(opts: RetryOptions = {}, random: () => number = Math.random): RetryPolicy {
  const o = retryOptions(opts);
  return {
    delayMs(failure, retry) {
      if (retry > o.maxRetries || !isRetryable(failure)) return undefined;
      if (failure.retryDelayMs !== undefined) return failure.retryDelayMs;
      const base = Math.min(o.initialBackoffMs * o.backoffMultiplier ** (retry - 1), o.maxBackoffMs);
      return Math.min(base * (1 + o.jitter * (2 * random() - 1)), o.maxBackoffMs);
    },
  };
}

// ---------------------------------------------------------------------------
// The exporter

/** Time for the exporter: a monotonic clock and an abortable wait (injected for tests). */
export interface Clock {
  now(): number;
  /** Resolves after ms, or at once when signal aborts (never rejects). */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => new Promise<void>((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  }),
};

export interface OtlpGrpcExporterOptions extends RetryOptions, GrpcTransportOptions {
  /** one export's deadline, every attempt and wait included; default 10000 */
  timeoutMs?: number;
}

export interface OtlpGrpcExporterParts {
  /** default: createGrpcTransport(options) */
  transport?: OtlpGrpcTransport;
  /** default: ProtobufTraceSerializer */
  serializer?: ISerializer<ReadableSpan[], IExportTraceServiceResponse>;
  /** default: createRetryPolicy(options) */
  retry?: RetryPolicy;
  /** default: performance.now() and setTimeout */
  clock?: Clock;
}

export interface OtlpGrpcExporterStats {
  /** export() calls */
  exports: number;
  /** exports the collector accepted (partial successes included) */
  succeeded: number;
  /** exports that ended FAILED */
  failed: number;
  /** Export calls sent, first attempts and retries */
  attempts: number;
  /** of those, retries */
  retries: number;
  /** spans the collector said it rejected in partial successes */
  rejectedSpans: number;
  /** exports answered with a partial success */
  partialSuccesses: number;
}

/** Why an export failed: the last attempt's gRPC status and what the retry policy made of it. */
export class OtlpGrpcExportError extends Error {
  /** the last attempt's gRPC status code */
  readonly grpcCode: grpc.status;
  readonly attempts: number;
  constructor(grpcCode: grpc.status, message: string, attempts: number) {
    super(message);
    this.name = 'OtlpGrpcExportError';
    this.grpcCode = grpcCode;
    this.attempts = attempts;
  }
}

const statusName = (code: number): string => grpc.status[code] ?? String(code);

export class OtlpGrpcTraceExporter implements SpanExporter {
  readonly #transport: OtlpGrpcTransport;
  readonly #serializer: ISerializer<ReadableSpan[], IExportTraceServiceResponse>;
  readonly #retry: RetryPolicy;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #pending = new Set<Promise<void>>();
  readonly #stopping = new AbortController();
  #shutdown: Promise<void> | undefined;
  readonly #stats: OtlpGrpcExporterStats = { exports: 0, succeeded: 0, failed: 0, attempts: 0, retries: 0, rejectedSpans: 0, partialSuccesses: 0 };
  /** called for every partial success (rejected spans, or a warning with 0 rejected); default none */
  onPartialSuccess: ((rejectedSpans: number, errorMessage: string) => void) | undefined;

  constructor(opts: OtlpGrpcExporterOptions, parts: OtlpGrpcExporterParts = {}) {
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    check('timeoutMs', this.#timeoutMs, (n) => n > 0, 'must be positive');
    const retry = retryOptions(opts); // validated even when a policy is injected
    this.#transport = parts.transport ?? createGrpcTransport(opts);
    this.#serializer = parts.serializer ?? ProtobufTraceSerializer;
    this.#retry = parts.retry ?? createRetryPolicy(retry);
    this.#clock = parts.clock ?? realClock;
  }

  stats(): OtlpGrpcExporterStats {
    return { ...this.#stats };
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    if (this.#shutdown) {
      resultCallback({ code: ExportResultCode.FAILED, error: new Error('OTLP/gRPC exporter is shut down') });
      return;
    }
    this.#stats.exports++;
    const p = this.#send(spans).catch((err: unknown) => ({
      code: ExportResultCode.FAILED, error: err instanceof Error ? err : new Error(String(err)),
    })).then((result: ExportResult) => {
      this.#pending.delete(p);
      if (result.code === ExportResultCode.SUCCESS) this.#stats.succeeded++;
      else this.#stats.failed++;
      resultCallback(result);
    });
    this.#pending.add(p);
  }

  async #send(spans: ReadableSpan[]): Promise<ExportResult> {
    const deadline = this.#clock.now() + this.#timeoutMs;
    let body: Uint8Array | undefined;
    try {
      body = this.#serializer.serializeRequest(spans);
    } catch (err) {
      return { code: ExportResultCode.FAILED, error: err as Error };
    }
    if (!body) return { code: ExportResultCode.FAILED, error: new Error('spans could not be serialized') };
    for (let attempt = 1; ; attempt++) {
      this.#stats.attempts++;
      if (attempt > 1) this.#stats.retries++;
      const r = await this.#transport.send(body, deadline - this.#clock.now());
      if (r.ok) {
        attemptChannel.publish({ attempt, status: 'OK' } satisfies OtlpGrpcAttemptEvent);
        this.#accepted(r.response);
        return { code: ExportResultCode.SUCCESS };
      }
      const serverDelayMs = r.statusDetails && retryDelayFromStatusDetails(r.statusDetails);
      const failure: GrpcFailure = { code: r.code, ...(serverDelayMs !== undefined && { retryDelayMs: serverDelayMs }) };
      const what = `${statusName(r.code)}: ${r.message}`;
      const fail = (why: string) => {
        attemptChannel.publish({ attempt, status: statusName(r.code), ...(serverDelayMs !== undefined && { serverDelayMs }) } satisfies OtlpGrpcAttemptEvent);
        return { code: ExportResultCode.FAILED, error: new OtlpGrpcExportError(r.code, `OTLP/gRPC export failed after ${attempt} attempt${attempt > 1 ? 's' : ''}: ${what} (${why})`, attempt) };
      };
      if (this.#stopping.signal.aborted) return fail('the exporter is shutting down');
      const waitMs = this.#retry.delayMs(failure, attempt);
      if (waitMs === undefined) return fail(isRetryable(failure) ? 'retries exhausted' : 'not retryable');
      const remainingMs = deadline - this.#clock.now();
      if (waitMs >= remainingMs) return fail(`a retry in ${Math.round(waitMs)} ms would pass the ${this.#timeoutMs} ms deadline`);
      attemptChannel.publish({ attempt, status: statusName(r.code), retryInMs: waitMs, ...(serverDelayMs !== undefined && { serverDelayMs }) } satisfies OtlpGrpcAttemptEvent);
      await this.#clock.sleep(waitMs, this.#stopping.signal);
      if (this.#stopping.signal.aborted) return fail('the exporter shut down before the retry');
    }
  }

  /** A success, possibly partial: count and report what was rejected. */
  #accepted(response: Uint8Array): void {
    if (response.byteLength === 0) return;
    let partial: IExportTraceServiceResponse['partialSuccess'];
    try {
      partial = this.#serializer.deserializeResponse(response).partialSuccess;
    } catch {
      return; // the server said OK; an unreadable response body does not undo that
    }
    if (!partial) return;
    const rejected = Number(partial.rejectedSpans ?? 0);
    const message = partial.errorMessage ?? '';
    if (rejected === 0 && message === '') return;
    this.#stats.partialSuccesses++;
    this.#stats.rejectedSpans += rejected;
    this.onPartialSuccess?.(rejected, message);
  }

  /** Resolves when every export in flight has ended, retries included. */
  async forceFlush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending);
  }

  /**
   * Takes no more exports and starts no more retries (an export waiting to
   * retry ends FAILED now); waits for the attempts in flight, each bounded by
   * its deadline, then closes the channel.
   */
  shutdown(): Promise<void> {
    this.#shutdown ??= (async () => {
      this.#stopping.abort();
      await this.forceFlush();
      this.#transport.close();
    })();
    return this.#shutdown;
  }
}

function check(name: string, n: number, ok: (n: number) => boolean, what: string): void {
  if (typeof n !== 'number' || !Number.isFinite(n) || !ok(n)) throw new RangeError(`OTLP/gRPC exporter: ${name} ${what}, got ${n}`);
}
