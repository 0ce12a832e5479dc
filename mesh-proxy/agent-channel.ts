/**
 * The node proxy's request records to the agent: every finished request
 * (sampled or not) in batches over the agent's socket (POST /v1/requests),
 * for its metrics by workload pair, observe, the kernel connections' links,
 * and the spans of the sampled ones (their records carry a trace). Bounded: records that find the buffer full are dropped
 * and counted; a batch the agent does not take is counted failed. Never
 * blocks a request.
 */
import { postToRelay } from '../telemetry/relay-post.js';
import { decodeTrace, encodeTrace, type RequestTrace, type WireTrace } from '../telemetry/request-spans.js';
import { isHexId } from '../telemetry/trace-ids.js';
import type { RequestRecord } from './proxy.js';

/**
 * A record on the wire: an array in this order (a quarter of the bytes of an
 * object, and faster to parse); element 16 is the trace of a sampled
 * request (the agent writes its spans), else null; element 17 the RBAC
 * policy that denied the request (RequestRecord.deniedBy), else null.
 * Records of earlier builds have 16 or 17 elements.
 */
type WireRecord = [number, number, string, string, string | null, number, string, number, string, number, string | null, string, number, string, string, 0 | 1, WireTrace | null, string | null];

export function encodeRecord(r: RequestRecord): WireRecord {
  return [r.endMs, r.durationMs, r.method, r.path, r.route ?? null, r.status, r.caller, r.callerPort, r.local, r.localPort, r.upstream ?? null, r.host, r.attempts, r.traceId, r.spanId, r.sampled ? 1 : 0, r.trace ? encodeTrace(r.trace) : null, r.deniedBy ?? null];
}

/** A record as the agent reads it: its trace always in the general form. */
export type ReceivedRecord = Omit<RequestRecord, 'trace'> & { trace?: RequestTrace };

/** Throws naming the record when it is not one. */
export function decodeRecords(body: unknown): ReceivedRecord[] {
  const recs = (body as { records?: unknown })?.records;
  if (!Array.isArray(recs)) throw new Error('records: missing');
  return recs.map((a: unknown, i) => {
    // 16 or 17 elements: a proxy of an earlier build (no traces, no RBAC), adopted across an upgrade
    if (!Array.isArray(a) || a.length < 16 || a.length > 18 || typeof a[0] !== 'number' || typeof a[2] !== 'string' || typeof a[6] !== 'string') throw new Error(`records[${i}]: not a request record`);
    const w = a as WireRecord;
    const trace = w[16] === undefined || w[16] === null ? undefined : recordTrace(w[16], i, w[10] ?? undefined, w[5]);
    // a traced record's ids go into the trace file as they are: they must be ids
    if (trace && (typeof w[13] !== 'string' || !isHexId(w[13], 32) || typeof w[14] !== 'string' || !isHexId(w[14], 16))) throw new Error(`records[${i}]: trace and span ids: not 32 and 16 hex digits`);
    // every field set, absent ones undefined: one hidden class for every record, kept alive by the literal
    return {
      endMs: w[0], durationMs: w[1], method: w[2], path: w[3], route: w[4] ?? undefined, status: w[5], caller: w[6], callerPort: w[7],
      local: w[8], localPort: w[9], upstream: w[10] ?? undefined, host: w[11], attempts: w[12], traceId: w[13], spanId: w[14], sampled: w[15] === 1,
      trace, deniedBy: typeof w[17] === 'string' ? w[17] : undefined,
    };
  });
}

/** A record's trace; the error names the record (its name is made only then). */
function recordTrace(w: unknown, i: number, upstream: unknown, status: unknown): RequestTrace {
  try {
    return decodeTrace(w, 'trace', upstream, status);
  } catch (err) {
    throw new Error(`records[${i}].${(err as Error).message}`);
  }
}

export interface AgentChannelOptions {
  socketPath: string;
  /** how often a batch goes; default 500 (observe shows requests within that; bigger batches cost less per request) */
  flushMs?: number;
  /** records held at most; default 20000 */
  maxRecords?: number;
  /** one POST's deadline; default 5000 */
  timeoutMs?: number;
}

export interface AgentChannelStats {
  sent: number;
  dropped: number;
  failed: number;
}

export class AgentChannel {
  readonly #o: Required<AgentChannelOptions>;
  /** records written as JSON when they come: one flat string each waits for the batch, not a tree of small objects that outlives the young generation */
  #buf: string[] = [];
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  readonly #stats: AgentChannelStats = { sent: 0, dropped: 0, failed: 0 };

  constructor(opts: AgentChannelOptions) {
    this.#o = { flushMs: 500, maxRecords: 20_000, timeoutMs: 5000, ...opts };
    if (!this.#o.socketPath.startsWith('/')) throw new RangeError(`the agent's relay socket must be an absolute path, got ${this.#o.socketPath}`);
  }

  stats(): AgentChannelStats {
    return { ...this.#stats };
  }

  record(r: RequestRecord): void {
    if (this.#buf.length >= this.#o.maxRecords) {
      this.#stats.dropped++;
      return;
    }
    this.#buf.push(JSON.stringify(encodeRecord(r)));
  }

  start(): void {
    this.#timer = setInterval(() => { void this.#flush(); }, this.#o.flushMs);
    this.#timer.unref();
  }

  #flush(): Promise<void> {
    if (this.#inFlight || this.#buf.length === 0) return this.#inFlight ?? Promise.resolve();
    const batch = this.#buf;
    this.#buf = [];
    const body = Buffer.from(`{"records":[${batch.join(',')}]}`);
    this.#inFlight = postToRelay(this.#o.socketPath, '/v1/requests', body, {}, this.#o.timeoutMs).then((ok) => {
      if (ok) this.#stats.sent += batch.length;
      else this.#stats.failed += batch.length;
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  /** Stops the timer and sends what is left (one attempt). */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
    await this.#flush();
  }
}
