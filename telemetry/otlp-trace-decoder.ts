/**
 * OTLP trace export requests (ExportTraceServiceRequest, protobuf) read into
 * flat spans, for a receiver of another proxy's spans (the Envoy node
 * proxy's: envoy-spans.ts). Read field by field off the wire (protobufjs's
 * Reader), by the field numbers of opentelemetry-proto (trace_service.proto,
 * trace.proto, common.proto, resource.proto): only the fields a receiver
 * uses are read, and only the attributes it asks for are made into strings;
 * everything else is skipped. Both ResourceSpans.scope_spans and
 * instrumentation_library_spans (field 1000, which older senders, Envoy
 * among them, still write) are read; scope_spans win when both are set, as
 * the specification tells receivers.
 */
import protobuf from 'protobufjs';

/** SpanKind on the wire */
export const WIRE_SPAN_KIND = { unspecified: 0, internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

/** A received span, its attribute values as strings (Envoy's tags are strings). */
export interface OtlpSpan {
  /** 32 and 16 lowercase hex digits */
  traceId: string;
  spanId: string;
  /** '' for a root span */
  parentSpanId: string;
  traceState: string;
  name: string;
  /** WIRE_SPAN_KIND */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  /** string, bool, int and double values as strings; lists, maps and bytes left out */
  attributes: Map<string, string>;
  /** the service.name of the span's resource, '' when it has none */
  serviceName: string;
}

export interface DecodeOptions {
  /** the attributes to read (others are skipped unread); default all */
  attributes?: ReadonlySet<string>;
}

// wire types
const VARINT = 0;
const I64 = 1;
const LEN = 2;

type Reader = protobuf.Reader;

/** The end of the length-delimited field at the reader (its length read), which must be within its message's (limit). */
function lengthEnd(r: Reader, limit: number): number {
  const n = r.uint32();
  const end = r.pos + n;
  if (end > limit) throw new RangeError(`a field of ${n} bytes at ${r.pos} runs past the end of its message (${limit})`);
  return end;
}

/** Throws when the last field read ran past its message's end. */
function within(r: Reader, end: number): void {
  if (r.pos > end) throw new RangeError(`a field ending at ${r.pos} runs past the end of its message (${end})`);
}

/** Skips a field of this wire type, or throws when it is not one. */
function skip(r: Reader, wire: number): void {
  r.skipType(wire);
}

/** Bytes as hex (the reader reads a Buffer: decodeTraceExport makes sure). */
function hex(r: Reader, limit: number): string {
  const end = lengthEnd(r, limit);
  const s = (r.buf as Buffer).toString('hex', r.pos, end);
  r.pos = end;
  return s;
}

function fixed64(r: Reader): bigint {
  const lo = r.fixed32();
  const hi = r.fixed32();
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** An AnyValue's scalar as a string; undefined for a list, a map, bytes or none. */
function anyValue(r: Reader, end: number): string | undefined {
  let v: string | undefined;
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === LEN) v = r.string();
    else if (field === 2 && wire === VARINT) v = String(r.bool());
    else if (field === 3 && wire === VARINT) v = r.int64().toString();
    else if (field === 4 && wire === I64) v = String(r.double());
    else skip(r, wire);
  }
  within(r, end);
  return v;
}

/** The keys asked for, by their UTF-8 bytes' length: [key, bytes]. */
type KeyTable = Map<number, [string, Buffer][]>;

const keyTables = new WeakMap<ReadonlySet<string>, KeyTable>();

/** A set's key table, made once per set. */
function keyTable(keep: ReadonlySet<string>): KeyTable {
  let table = keyTables.get(keep);
  if (!table) {
    table = new Map();
    for (const k of keep) {
      const b = Buffer.from(k, 'utf8');
      const list = table.get(b.length);
      if (list) list.push([k, b]);
      else table.set(b.length, [[k, b]]);
    }
    keyTables.set(keep, table);
  }
  return table;
}

/** The key asked for whose bytes are buf[start, end), if any. */
function keyAt(buf: Buffer, start: number, end: number, table: KeyTable): string | undefined {
  const candidates = table.get(end - start);
  if (!candidates) return undefined;
  for (const [k, b] of candidates) {
    let i = 0;
    while (i < b.length && buf[start + i] === b[i]) i++;
    if (i === b.length) return k;
  }
  return undefined;
}

/** A KeyValue into out, when its key is one asked for. */
function keyValue(r: Reader, end: number, keep: KeyTable | undefined, out: Map<string, string>): void {
  let key: string | undefined;
  let value: string | undefined;
  while (r.pos < end) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === LEN) {
      if (keep) {
        // matched by its bytes against the keys asked for: no string is made for a key skipped
        const kend = lengthEnd(r, end);
        key = keyAt(r.buf as Buffer, r.pos, kend, keep);
        r.pos = kend;
        if (key === undefined) {
          r.pos = end; // not asked for: its value is not read
          return;
        }
      } else {
        key = r.string();
      }
    } else if (field === 2 && wire === LEN) {
      value = anyValue(r, lengthEnd(r, end));
    } else {
      skip(r, wire);
    }
  }
  within(r, end);
  if (key !== undefined && value !== undefined) out.set(key, value);
}

/** A Resource's service.name ('' when none). */
function serviceNameOf(r: Reader, end: number): string {
  const attrs = new Map<string, string>();
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag >>> 3 === 1 && (tag & 7) === LEN) keyValue(r, lengthEnd(r, end), SERVICE_NAME, attrs);
    else skip(r, tag & 7);
  }
  within(r, end);
  return attrs.get('service.name') ?? '';
}
const SERVICE_NAME = keyTable(new Set(['service.name']));

/** A Span, or undefined (counted by the caller) when its ids are not 16 and 8 bytes. */
function span(r: Reader, end: number, keep: KeyTable | undefined): OtlpSpan | undefined {
  let traceId = '';
  let spanId = '';
  let parentSpanId = '';
  let traceState = '';
  let name = '';
  let kind = 0;
  let startNs = 0n;
  let endNs = 0n;
  const attributes = new Map<string, string>();
  while (r.pos < end) {
    const tag = r.uint32();
    const wire = tag & 7;
    switch (wire === LEN || wire === VARINT || wire === I64 ? tag >>> 3 : 0) {
      case 1: if (wire === LEN) { traceId = hex(r, end); continue; } break;
      case 2: if (wire === LEN) { spanId = hex(r, end); continue; } break;
      case 3: if (wire === LEN) { traceState = r.string(); continue; } break;
      case 4: if (wire === LEN) { parentSpanId = hex(r, end); continue; } break;
      case 5: if (wire === LEN) { name = r.string(); continue; } break;
      case 6: if (wire === VARINT) { kind = r.int32(); continue; } break;
      case 7: if (wire === I64) { startNs = fixed64(r); continue; } break;
      case 8: if (wire === I64) { endNs = fixed64(r); continue; } break;
      case 9: if (wire === LEN) { keyValue(r, lengthEnd(r, end), keep, attributes); continue; } break;
      default: break;
    }
    skip(r, wire);
  }
  within(r, end);
  if (traceId.length !== 32 || spanId.length !== 16 || (parentSpanId.length !== 0 && parentSpanId.length !== 16)) return undefined;
  return { traceId, spanId, parentSpanId, traceState, name, kind, startNs, endNs, attributes, serviceName: '' };
}

/** A ScopeSpans (or an InstrumentationLibrarySpans: the same numbers) into out. */
function scopeSpans(r: Reader, end: number, keep: KeyTable | undefined, out: OtlpSpan[], bad: { n: number }): void {
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag >>> 3 === 2 && (tag & 7) === LEN) {
      const s = span(r, lengthEnd(r, end), keep);
      if (s) out.push(s);
      else bad.n++;
    } else {
      skip(r, tag & 7);
    }
  }
  within(r, end);
}

/**
 * The spans of one ExportTraceServiceRequest. Throws (a RangeError naming
 * where) when the bytes are not one; a span without a 16-byte trace id and
 * an 8-byte span id is not returned but counted in `invalid`.
 */
export function decodeTraceExport(bytes: Uint8Array, opts: DecodeOptions = {}): { spans: OtlpSpan[]; invalid: number } {
  const r = protobuf.Reader.create(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const keep = opts.attributes && keyTable(opts.attributes);
  const spans: OtlpSpan[] = [];
  const bad = { n: 0 };
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag >>> 3 !== 1 || (tag & 7) !== LEN) {
      skip(r, tag & 7);
      continue;
    }
    const end = lengthEnd(r, r.len);
    let serviceName = '';
    const current: OtlpSpan[] = [];
    const older: OtlpSpan[] = [];
    const olderBad = { n: 0 };
    let hasCurrent = false;
    while (r.pos < end) {
      const t = r.uint32();
      const field = t >>> 3;
      if ((t & 7) !== LEN) skip(r, t & 7);
      else if (field === 1) serviceName = serviceNameOf(r, lengthEnd(r, end));
      else if (field === 2) { hasCurrent = true; scopeSpans(r, lengthEnd(r, end), keep, current, bad); }
      else if (field === 1000) scopeSpans(r, lengthEnd(r, end), keep, older, olderBad);
      else skip(r, LEN);
    }
    within(r, end);
    if (!hasCurrent) bad.n += olderBad.n;
    // the resource may come after its spans on the wire
    for (const s of hasCurrent ? current : older) {
      s.serviceName = serviceName;
      spans.push(s);
    }
  }
  return { spans, invalid: bad.n };
}

/** An ExportTraceServiceResponse: empty, or a partial success naming the spans refused and why. */
export function encodeTraceExportResponse(rejected: number, message: string): Buffer {
  if (rejected === 0 && message === '') return Buffer.alloc(0);
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | LEN).fork();
  if (rejected !== 0) w.uint32((1 << 3) | VARINT).int64(rejected);
  if (message !== '') w.uint32((2 << 3) | LEN).string(message);
  w.ldelim();
  return Buffer.from(w.finish());
}
