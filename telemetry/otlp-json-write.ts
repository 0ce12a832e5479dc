/**
 * OTLP/JSON written straight from span fields into bytes, as the SDK's JSON
 * serializer writes the same span (a test compares them). The trace file's
 * request spans are written this way: no SDK span objects, no intermediate
 * strings (string ropes built per span and flattened later cost several
 * times the writing itself, mostly in garbage), just bytes in chunks ready
 * for a writev.
 */
import type { AttributeValue, Attributes, Link, SpanStatus } from '@opentelemetry/api';
import type { SpanData } from './finished-span.js';

const CHUNK = 64 << 10;
const enc = (s: string): Uint8Array => Buffer.from(s, 'latin1');
const EMPTY = Buffer.alloc(0);

/** Bytes appended in chunks (never copied to grow). */
export class ByteWriter {
  readonly #done: Buffer[] = [];
  readonly #first: number;
  /** empty until the first write after reset() */
  #buf: Buffer;
  #n = 0;
  #size = 0;

  constructor(first = 16 << 10) {
    this.#first = first;
    this.#buf = Buffer.allocUnsafe(first);
  }

  /**
   * Empties the writer for reuse: what pieces() gave out stays the caller's
   * (the next write goes into a new buffer). A writer kept and reset keeps its
   * hidden class alive, so the code optimized for it is not thrown away when
   * the garbage collector clears the classes of objects that all died.
   */
  reset(): void {
    this.#done.length = 0;
    this.#buf = EMPTY;
    this.#n = 0;
    this.#size = 0;
  }

  /** bytes written */
  get size(): number {
    return this.#size + this.#n;
  }

  #room(k: number): void {
    if (this.#n + k <= this.#buf.length) return;
    if (this.#n > 0) this.#done.push(this.#buf.subarray(0, this.#n));
    this.#size += this.#n;
    this.#buf = Buffer.allocUnsafe(Math.max(this.#size === 0 ? this.#first : CHUNK, k));
    this.#n = 0;
  }

  raw(b: Uint8Array): void {
    this.#room(b.length);
    this.#buf.set(b, this.#n);
    this.#n += b.length;
  }

  byte(c: number): void {
    this.#room(1);
    this.#buf[this.#n++] = c;
  }

  /** A string known to need no escaping and to be ASCII (hex ids, digits). */
  ascii(s: string): void {
    const len = s.length;
    this.#room(len);
    const b = this.#buf;
    let n = this.#n;
    for (let i = 0; i < len; i++) b[n++] = s.charCodeAt(i);
    this.#n = n;
  }

  /** A JSON string literal: printable ASCII byte by byte, anything else through JSON.stringify and UTF-8. */
  string(s: string): void {
    const len = s.length;
    this.#room(len + 2);
    const b = this.#buf;
    const start = this.#n;
    let n = start;
    b[n++] = 0x22;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
        this.#n = start;
        const j = JSON.stringify(s);
        this.#room(3 * j.length);
        this.#n += this.#buf.write(j, this.#n);
        return;
      }
      b[n++] = c;
    }
    b[n++] = 0x22;
    this.#n = n;
  }

  /**
   * A non-negative safe integer's decimal digits, as String(v) writes them,
   * without making the string: in two halves of up to 8 digits (span times
   * have 16), each with 32-bit integer arithmetic.
   */
  uint(v: number): void {
    if (v < 1e8) {
      this.#upTo8(v);
      return;
    }
    let hi = Math.floor(v / 1e8);
    let lo = v - hi * 1e8;
    if (lo < 0) { hi--; lo += 1e8; } else if (lo >= 1e8) { hi++; lo -= 1e8; } // the division rounded
    this.#upTo8(hi);
    this.#room(8);
    const b = this.#buf;
    let n = this.#n + 8;
    this.#n = n;
    let x = lo | 0;
    for (let i = 0; i < 8; i++) {
      const q = (x / 10) | 0;
      b[--n] = 0x30 + x - q * 10;
      x = q;
    }
  }

  /** 0 <= v < 1e8 */
  #upTo8(v: number): void {
    const digits = v < 10 ? 1 : v < 100 ? 2 : v < 1e3 ? 3 : v < 1e4 ? 4 : v < 1e5 ? 5 : v < 1e6 ? 6 : v < 1e7 ? 7 : 8;
    this.#room(digits);
    const b = this.#buf;
    let n = this.#n + digits;
    this.#n = n;
    let x = v | 0;
    while (x >= 10) {
      const q = (x / 10) | 0;
      b[--n] = 0x30 + x - q * 10;
      x = q;
    }
    b[--n] = 0x30 + x;
  }

  /** The bytes written, in pieces. */
  pieces(): Buffer[] {
    return this.#n > 0 ? [...this.#done, this.#buf.subarray(0, this.#n)] : [...this.#done];
  }

  toString(): string {
    return Buffer.concat(this.pieces()).toString();
  }
}

const keys = new Map<string, Uint8Array>();
/** `{"key":"k","value":` */
function keyBytes(k: string): Uint8Array {
  let b = keys.get(k);
  if (b === undefined) {
    b = Buffer.from(`{"key":${JSON.stringify(k)},"value":`);
    if (keys.size < 4096) keys.set(k, b);
  }
  return b;
}

const B = {
  stringValue: enc('{"stringValue":'), intValue: enc('{"intValue":'), doubleValue: enc('{"doubleValue":'), boolTrue: enc('{"boolValue":true}'), boolFalse: enc('{"boolValue":false}'),
  arrayValue: enc('{"arrayValue":{"values":['), arrayEnd: enc(']}}'), close2: enc('}}'),
  traceId: enc('{"traceId":"'), spanId: enc('","spanId":"'), parentSpanId: enc('","parentSpanId":"'), traceState: enc('","traceState":'), name: enc(',"name":'),
  kind: enc(',"kind":'), start: enc(',"startTimeUnixNano":"'), end: enc('","endTimeUnixNano":"'), attributes: enc('","attributes":['),
  afterAttributes: enc('],"droppedAttributesCount":0,"events":['), afterEvents: enc('],"droppedEventsCount":0,"status":{"code":'), message: enc(',"message":'),
  afterStatus: enc('},"links":['), afterLinks: enc('],"droppedLinksCount":0,"flags":'),
  eventStart: enc('{"attributes":['), eventName: enc('],"name":'), eventTime: enc(',"timeUnixNano":"'), eventEnd: enc('","droppedAttributesCount":0}'),
  linkStart: enc('{"attributes":['), linkSpan: enc('],"spanId":"'), linkTrace: enc('","traceId":"'), linkFlags: enc('","droppedAttributesCount":0,"flags":'),
  quote: enc('"'),
};

/** An AnyValue: `{"stringValue":…}` and the like. */
export function writeValue(w: ByteWriter, v: AttributeValue): void {
  switch (typeof v) {
    case 'string': w.raw(B.stringValue); w.string(v); w.byte(0x7d); return;
    case 'boolean': w.raw(v ? B.boolTrue : B.boolFalse); return;
    case 'number':
      if (Number.isInteger(v)) { w.raw(B.intValue); w.ascii(String(v)); w.byte(0x7d); return; }
      w.raw(B.doubleValue);
      if (Number.isFinite(v)) w.ascii(String(v));
      else w.string(String(v)); // NaN, Infinity: as the SDK's serializer writes them
      w.byte(0x7d);
      return;
    default:
      if (Array.isArray(v)) {
        w.raw(B.arrayValue);
        let first = true;
        for (const x of v as unknown[]) {
          if (x === null || x === undefined) continue;
          if (!first) w.byte(0x2c);
          first = false;
          writeValue(w, x as AttributeValue);
        }
        w.raw(B.arrayEnd);
        return;
      }
      w.raw(B.stringValue); w.string(String(v)); w.byte(0x7d);
  }
}

/** Attributes as an OTLP/JSON KeyValue list's elements (without the brackets). */
function writeAttributes(w: ByteWriter, a: Attributes): void {
  let first = true;
  for (const k in a) {
    const v = a[k];
    if (v === undefined || v === null) continue;
    if (!first) w.byte(0x2c);
    first = false;
    w.raw(keyBytes(k));
    writeValue(w, v);
    w.byte(0x7d);
  }
}

/** Attributes as an OTLP/JSON KeyValue list. */
export function attributes(a: Attributes): string {
  const w = new ByteWriter(256);
  w.byte(0x5b);
  writeAttributes(w, a);
  w.byte(0x5d);
  return w.toString();
}

/** The start of a group in a request: `{"resource":…,"scopeSpans":[{"scope":…,"spans":[` (attributesJson: attributes() of the resource). */
export function groupHead(attributesJson: string, scope: { name: string; version?: string }): string {
  const scopeJson = scope.version ? `{"name":${JSON.stringify(scope.name)},"version":${JSON.stringify(scope.version)}}` : `{"name":${JSON.stringify(scope.name)}}`;
  return `{"resource":{"attributes":${attributesJson},"droppedAttributesCount":0},"scopeSpans":[{"scope":${scopeJson},"spans":[`;
}

/** One finished, sampled span as an OTLP/JSON Span. */
export function writeSpan(w: ByteWriter, s: SpanData): void {
  const flags = (s.sampled === false ? 0 : 1) | 0x100 | (s.parentSpanId && s.parentRemote !== false ? 0x200 : 0);
  const end = s.endNs < s.startNs ? s.startNs : s.endNs;
  w.raw(B.traceId); w.ascii(s.traceId); w.raw(B.spanId); w.ascii(s.spanId);
  if (s.parentSpanId) { w.raw(B.parentSpanId); w.ascii(s.parentSpanId); }
  if (s.traceState) { w.raw(B.traceState); w.string(s.traceState); } else w.raw(B.quote);
  w.raw(B.name); w.string(s.name);
  w.raw(B.kind); w.ascii(String(s.kind + 1));
  w.raw(B.start); w.ascii(s.startNs.toString()); w.raw(B.end); w.ascii(end.toString());
  w.raw(B.attributes); writeAttributes(w, s.attributes);
  w.raw(B.afterAttributes);
  let first = true;
  for (const e of s.events ?? []) {
    if (!first) w.byte(0x2c);
    first = false;
    w.raw(B.eventStart); writeAttributes(w, e.attributes ?? {}); w.raw(B.eventName); w.string(e.name); w.raw(B.eventTime); w.ascii(e.timeNs.toString()); w.raw(B.eventEnd);
  }
  const st: SpanStatus = s.status ?? { code: 0 };
  w.raw(B.afterEvents); w.ascii(String(st.code));
  if (st.message !== undefined) { w.raw(B.message); w.string(st.message); }
  w.raw(B.afterStatus);
  first = true;
  for (const l of s.links ?? []) {
    if (!first) w.byte(0x2c);
    first = false;
    writeLink(w, l);
  }
  w.raw(B.afterLinks); w.ascii(String(flags)); w.byte(0x7d);
}

/** One OTLP/JSON Span.Link. */
export function writeLink(w: ByteWriter, l: Link): void {
  w.raw(B.linkStart); writeAttributes(w, l.attributes ?? {}); w.raw(B.linkSpan); w.ascii(l.context.spanId); w.raw(B.linkTrace); w.ascii(l.context.traceId);
  w.raw(B.linkFlags); w.ascii(String((l.context.traceFlags & 0xff) | 0x100 | (l.context.isRemote ? 0x200 : 0))); w.byte(0x7d);
}

/** One finished, sampled span as an OTLP/JSON Span (a string). */
export function spanJson(s: SpanData): string {
  const w = new ByteWriter(1024);
  writeSpan(w, s);
  return w.toString();
}

const OPEN = Buffer.from('{"resourceSpans":[');
const GROUP_END = Buffer.from(']}]}');
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']}');
/** group writers kept without a span before the idle ones are let go */
const IDLE_GROUPS = 256;

/**
 * An ExportTraceServiceRequest written span by span, grouped by resource:
 * each span's bytes go into its group's writer, and the request is the
 * groups' pieces in order, ready for a writev.
 */
export class RequestJsonWriter {
  /** the groups' writers, kept across take() (the node's workloads come back batch after batch) */
  readonly #groups = new Map<string, ByteWriter>();
  /** the groups with spans in this request, in the order they came */
  readonly #used: [string, ByteWriter][] = [];
  /** spans written */
  count = 0;

  /** the group writers kept for the next requests */
  get groups(): number {
    return this.#groups.size;
  }

  /** Adds a span under its group (head: groupHead() of its resource and scope; the same string for the same group). */
  add(head: string, span: SpanData): void {
    writeSpan(this.next(head), span);
  }

  /** The writer of a group, ready for one more span (its separator written, the span counted): the caller writes one Span into it. */
  next(head: string): ByteWriter {
    let g = this.#groups.get(head);
    if (!g) this.#groups.set(head, g = new ByteWriter());
    if (g.size === 0) this.#used.push([head, g]);
    else g.byte(0x2c);
    this.count++;
    return g;
  }

  /** The request's bytes, in pieces (none when no span was added). */
  pieces(): Buffer[] {
    if (this.count === 0) return [];
    const out: Buffer[] = [OPEN];
    let first = true;
    for (const [head, g] of this.#used) {
      if (!first) out.push(COMMA);
      first = false;
      out.push(Buffer.from(head), ...g.pieces(), GROUP_END);
    }
    out.push(CLOSE);
    return out;
  }

  /**
   * The request's pieces (pieces()), and the writer emptied for the next
   * request: the pieces stay the caller's. Groups that had no span this time
   * are forgotten once more than IDLE_GROUPS are kept.
   */
  take(): Buffer[] {
    const out = this.pieces();
    const prune = this.#groups.size > IDLE_GROUPS;
    for (const [head, g] of this.#groups) {
      if (prune && g.size === 0) this.#groups.delete(head);
      else g.reset();
    }
    this.#used.length = 0;
    this.count = 0;
    return out;
  }
}
