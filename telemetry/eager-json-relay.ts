/**
 * The node proxy's spans on their way to the agent: each span arrives already
 * written as OTLP/JSON (the lean tracer writes it when the span ends, so the
 * span object dies young), grouped by resource and scope, and every flushMs
 * the groups go to the agent's relay socket as one ExportTraceServiceRequest
 * (POST /v1/traces, x-sockmesh-spans: N). Bounded by bytes: a span that finds
 * the buffer full is dropped and counted. Never blocks the request that ended
 * the span.
 */
import type { AttributeValue, Attributes } from '@opentelemetry/api';
import { postToRelay } from './relay-post.js';

export interface EagerJsonRelayOptions {
  socketPath: string;
  /** how often a batch goes; default 200 */
  flushMs?: number;
  /** bytes of span JSON held at most; default 8 MiB */
  maxBytes?: number;
  /** one POST's deadline; default 5000 */
  timeoutMs?: number;
  /** how long shutdown may take; default 2000 */
  shutdownTimeoutMs?: number;
}

export interface EagerJsonRelayStats {
  /** spans the agent took */
  exported: number;
  /** spans dropped because the buffer was full */
  droppedQueueFull: number;
  /** spans in batches the agent did not take */
  failed: number;
  /** spans waiting now */
  queued: number;
}

/** The start of a group in a request: `{"resource":…,"scopeSpans":[{"scope":…,"spans":[` (attributesJson: attributes() of the resource). */
export function groupHead(attributesJson: string, scope: { name: string; version?: string }): string {
  const scopeJson = scope.version ? `{"name":${JSON.stringify(scope.name)},"version":${JSON.stringify(scope.version)}}` : `{"name":${JSON.stringify(scope.name)}}`;
  return `{"resource":{"attributes":${attributesJson},"droppedAttributesCount":0},"scopeSpans":[{"scope":${scopeJson},"spans":[`;
}

function anyValue(v: AttributeValue): string {
  switch (typeof v) {
    case 'string': return `{"stringValue":${JSON.stringify(v)}}`;
    case 'boolean': return `{"boolValue":${v}}`;
    case 'number': return Number.isInteger(v) ? `{"intValue":${v}}` : `{"doubleValue":${Number.isFinite(v) ? v : JSON.stringify(String(v))}}`;
    default:
      if (Array.isArray(v)) return `{"arrayValue":{"values":[${(v as unknown[]).filter((x) => x !== null && x !== undefined).map((x) => anyValue(x as AttributeValue)).join(',')}]}}`;
      return `{"stringValue":${JSON.stringify(String(v))}}`;
  }
}

/** Attributes as an OTLP/JSON KeyValue list. */
export function attributes(a: Attributes): string {
  let out = '';
  for (const k in a) {
    const v = a[k];
    if (v === undefined || v === null) continue;
    out += `${out ? ',' : ''}{"key":${JSON.stringify(k)},"value":${anyValue(v)}}`;
  }
  return `[${out}]`;
}

export class EagerJsonRelay {
  readonly #o: Required<EagerJsonRelayOptions>;
  /** spans written, by their group's head */
  #groups = new Map<string, string[]>();
  #bytes = 0;
  #count = 0;
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #closed = false;
  readonly #stats = { exported: 0, droppedQueueFull: 0, failed: 0 };

  constructor(opts: EagerJsonRelayOptions) {
    this.#o = { flushMs: 200, maxBytes: 8 * 1024 * 1024, timeoutMs: 5000, shutdownTimeoutMs: 2000, ...opts };
    if (!this.#o.socketPath.startsWith('/')) throw new RangeError(`the agent's relay socket must be an absolute path, got ${this.#o.socketPath}`);
  }

  stats(): EagerJsonRelayStats {
    return { ...this.#stats, queued: this.#count };
  }

  /** Whether a span is to be dropped (counted) for lack of room. */
  #full(): boolean {
    if (this.#closed || this.#bytes >= this.#o.maxBytes) {
      this.#stats.droppedQueueFull++;
      return true;
    }
    return false;
  }

  /**
   * Adds a span already written as OTLP/JSON under its group (groupHead() of
   * its resource and scope; the same string for the same group). Dropped and
   * counted when full.
   */
  pushJson(head: string, json: string): void {
    if (this.#full()) return;
    this.#add(head, json);
  }

  #add(head: string, json: string): void {
    let g = this.#groups.get(head);
    if (!g) this.#groups.set(head, g = []);
    g.push(json);
    this.#bytes += json.length;
    this.#count++;
    if (!this.#timer) {
      this.#timer = setTimeout(() => { this.#timer = undefined; void this.#flush(); }, this.#o.flushMs);
      this.#timer.unref();
    }
  }

  #flush(): Promise<void> {
    if (this.#inFlight) return this.#inFlight;
    if (this.#count === 0) return Promise.resolve();
    const groups = this.#groups;
    const count = this.#count;
    this.#groups = new Map();
    this.#bytes = 0;
    this.#count = 0;
    const parts: string[] = [];
    for (const [head, spans] of groups) parts.push(`${head}${spans.join(',')}]}]}`);
    const body = Buffer.from(`{"resourceSpans":[${parts.join(',')}]}`);
    this.#inFlight = postToRelay(this.#o.socketPath, '/v1/traces', body, { 'x-sockmesh-spans': count }, this.#o.timeoutMs).then((ok) => {
      if (ok) this.#stats.exported += count;
      else this.#stats.failed += count;
      this.#inFlight = undefined;
      if (this.#count > 0 && !this.#timer && !this.#closed) void this.#flush();
    });
    return this.#inFlight;
  }

  async forceFlush(): Promise<void> {
    await this.#inFlight;
    await this.#flush();
  }

  /** Sends what is held (once), for at most shutdownTimeoutMs; what is left is counted failed. */
  async shutdown(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      (async () => { await this.#inFlight; await this.#flush(); })(),
      new Promise<void>((r) => { timer = setTimeout(r, this.#o.shutdownTimeoutMs); }),
    ]);
    clearTimeout(timer);
    this.#closed = true;
    this.#stats.failed += this.#count;
    this.#count = 0;
  }
}
