/**
 * OTLP/JSON written straight from span fields, as the SDK's JSON serializer
 * writes the same span (a test compares them): the trace file's lines are
 * written this way without building SDK span objects first.
 */
import type { AttributeValue, Attributes, SpanStatus } from '@opentelemetry/api';
import type { SpanData } from './finished-span.js';

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

/** The start of a group in a request: `{"resource":…,"scopeSpans":[{"scope":…,"spans":[` (attributesJson: attributes() of the resource). */
export function groupHead(attributesJson: string, scope: { name: string; version?: string }): string {
  const scopeJson = scope.version ? `{"name":${JSON.stringify(scope.name)},"version":${JSON.stringify(scope.version)}}` : `{"name":${JSON.stringify(scope.name)}}`;
  return `{"resource":{"attributes":${attributesJson},"droppedAttributesCount":0},"scopeSpans":[{"scope":${scopeJson},"spans":[`;
}

const OPEN = Buffer.from('{"resourceSpans":[');
const GROUP_END = Buffer.from(']}]}');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']}');

/**
 * An ExportTraceServiceRequest written span by span, grouped by resource:
 * each span's JSON goes into its group's buffer as soon as it is written (a
 * string that dies young: no long string joins, little garbage), and the
 * request is the groups' buffers in order, ready for a writev.
 */
export class RequestJsonWriter {
  readonly #groups = new Map<string, { buf: Buffer; n: number }>();
  /** spans written */
  count = 0;

  /** Adds a span under its group (head: groupHead() of its resource and scope; the same string for the same group). */
  add(head: string, span: SpanData): void {
    const json = spanJson(span);
    let g = this.#groups.get(head);
    if (!g) this.#groups.set(head, g = { buf: Buffer.allocUnsafe(Math.max(16 << 10, 4 * json.length)), n: 0 });
    const need = g.n + 1 + 3 * json.length; // UTF-8: at most 3 bytes per UTF-16 unit
    if (need > g.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, 2 * g.buf.length));
      g.buf.copy(bigger, 0, 0, g.n);
      g.buf = bigger;
    }
    if (g.n > 0) g.buf[g.n++] = 0x2c; // ,
    g.n += g.buf.write(json, g.n);
    this.count++;
  }

  /** The request's bytes, in pieces (none when no span was added). */
  pieces(): Buffer[] {
    if (this.count === 0) return [];
    const out: Buffer[] = [OPEN];
    let first = true;
    for (const [head, g] of this.#groups) {
      if (!first) out.push(COMMA);
      first = false;
      out.push(Buffer.from(head), g.buf.subarray(0, g.n), GROUP_END);
    }
    out.push(CLOSE);
    return out;
  }
}

/** One finished, sampled span as an OTLP/JSON Span. */
export function spanJson(s: SpanData): string {
  const flags = (s.sampled === false ? 0 : 1) | 0x100 | (s.parentSpanId && s.parentRemote !== false ? 0x200 : 0);
  const end = s.endNs < s.startNs ? s.startNs : s.endNs;
  let events = '';
  for (const e of s.events ?? []) events += `${events ? ',' : ''}{"attributes":${attributes(e.attributes ?? {})},"name":${JSON.stringify(e.name)},"timeUnixNano":"${e.timeNs}","droppedAttributesCount":0}`;
  let links = '';
  for (const l of s.links ?? []) links += `${links ? ',' : ''}{"attributes":${attributes(l.attributes ?? {})},"spanId":"${l.context.spanId}","traceId":"${l.context.traceId}","droppedAttributesCount":0,"flags":${(l.context.traceFlags & 0xff) | 0x100 | (l.context.isRemote ? 0x200 : 0)}}`;
  const st: SpanStatus = s.status ?? { code: 0 };
  const status = st.message !== undefined ? `{"code":${st.code},"message":${JSON.stringify(st.message)}}` : `{"code":${st.code}}`;
  return `{"traceId":"${s.traceId}","spanId":"${s.spanId}"${s.parentSpanId ? `,"parentSpanId":"${s.parentSpanId}"` : ''}${s.traceState ? `,"traceState":${JSON.stringify(s.traceState)}` : ''},"name":${JSON.stringify(s.name)},"kind":${s.kind + 1},`
    + `"startTimeUnixNano":"${s.startNs}","endTimeUnixNano":"${end}","attributes":${attributes(s.attributes)},"droppedAttributesCount":0,`
    + `"events":[${events}],"droppedEventsCount":0,"status":${status},"links":[${links}],"droppedLinksCount":0,"flags":${flags}}`;
}
