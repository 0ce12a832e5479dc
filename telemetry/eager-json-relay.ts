/**
 * The node proxy's span processor towards the agent: each span is written as
 * OTLP/JSON the moment it ends (a string; the span object dies young, which
 * keeps the proxy's garbage collector out of the old generation), grouped by
 * resource, and every flushMs the groups go to the agent's relay socket as
 * one ExportTraceServiceRequest (POST /v1/traces, x-sockmesh-spans: N).
 * Bounded by bytes: a span that finds the buffer full is dropped and counted.
 * Never blocks the request that ended the span.
 */
import { request } from 'node:http';
import type { AttributeValue, Attributes, Context, HrTime } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace-base';

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

const hex = /^[0-9a-f]+$/;

function nanos(t: HrTime): string {
  return t[1] === 0 ? `${t[0]}000000000` : `${t[0]}${String(t[1]).padStart(9, '0')}`;
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

/** One span as OTLP/JSON (the encoding of JsonTraceSerializer, hex ids, string nanos). */
export function spanJson(s: ReadableSpan): string {
  const c = s.spanContext();
  if (!hex.test(c.traceId) || !hex.test(c.spanId)) throw new Error('span ids must be hex');
  const parent = s.parentSpanContext?.spanId;
  const flags = (c.traceFlags & 0xff) | 0x100 | (s.parentSpanContext?.isRemote ? 0x200 : 0);
  const events = s.events.map((e) => `{"timeUnixNano":"${nanos(e.time)}","name":${JSON.stringify(e.name)},"attributes":${attributes(e.attributes ?? {})},"droppedAttributesCount":${e.droppedAttributesCount ?? 0}}`).join(',');
  const links = s.links.map((l) => `{"traceId":"${l.context.traceId}","spanId":"${l.context.spanId}","attributes":${attributes(l.attributes ?? {})},"droppedAttributesCount":${l.droppedAttributesCount ?? 0},"flags":${(l.context.traceFlags & 0xff) | 0x100}}`).join(',');
  const status = s.status.message ? `{"code":${s.status.code},"message":${JSON.stringify(s.status.message)}}` : `{"code":${s.status.code}}`;
  return `{"traceId":"${c.traceId}","spanId":"${c.spanId}"${parent ? `,"parentSpanId":"${parent}"` : ''},"name":${JSON.stringify(s.name)},"kind":${s.kind + 1},`
    + `"startTimeUnixNano":"${nanos(s.startTime)}","endTimeUnixNano":"${nanos(s.endTime)}","attributes":${attributes(s.attributes)},"droppedAttributesCount":${s.droppedAttributesCount},`
    + `"events":[${events}],"droppedEventsCount":${s.droppedEventsCount},"status":${status},"links":[${links}],"droppedLinksCount":${s.droppedLinksCount},"flags":${flags}}`;
}

export class EagerJsonRelay implements SpanProcessor {
  readonly #o: Required<EagerJsonRelayOptions>;
  /** spans written, by their group's head */
  #groups = new Map<string, string[]>();
  /** group heads of SDK spans, by resource and scope (a provider's resource lives as long as its workload) */
  readonly #heads = new WeakMap<Resource, Map<object, string>>();
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

  onStart(_span: Span, _ctx: Context): void {}

  onEnd(span: ReadableSpan): void {
    if ((span.spanContext().traceFlags & 1) === 0) return;
    if (this.#full()) return;
    let head = this.#heads.get(span.resource)?.get(span.instrumentationScope);
    if (!head) {
      head = groupHead(attributes(span.resource.attributes), span.instrumentationScope);
      let byScope = this.#heads.get(span.resource);
      if (!byScope) this.#heads.set(span.resource, byScope = new Map());
      byScope.set(span.instrumentationScope, head);
    }
    this.#add(head, spanJson(span));
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
    this.#inFlight = new Promise<void>((resolve) => {
      const done = (ok: boolean) => {
        if (ok) this.#stats.exported += count;
        else this.#stats.failed += count;
        this.#inFlight = undefined;
        resolve();
        if (this.#count > 0 && !this.#timer && !this.#closed) void this.#flush();
      };
      const req = request({ socketPath: this.#o.socketPath, path: '/v1/traces', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length, 'x-sockmesh-spans': count } }, (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode === 200));
        res.on('error', () => done(false));
      });
      req.setTimeout(this.#o.timeoutMs, () => req.destroy(new Error('timeout')));
      req.on('error', () => done(false));
      req.end(body);
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
