/**
 * Reads the agent's trace file back: OTLP/JSON lines (one
 * ExportTraceServiceRequest per line, as JsonTraceSerializer writes them),
 * the rotated FILE.1 first, then FILE. A partially written last line is
 * ignored; a line that is not an ExportTraceServiceRequest is skipped and
 * reported, never fatal. Spans are grouped into traces.
 */
import { readFile } from 'node:fs/promises';
import { NotFoundError, NotPrivilegedError } from '../errors.js';

/** An OTLP AnyValue as plain JSON: int64 beyond 2^53 stays a decimal string, bytes are base64. */
export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue };
export type Attributes = Readonly<Record<string, AttributeValue>>;

export type SpanKindName = 'UNSPECIFIED' | 'INTERNAL' | 'SERVER' | 'CLIENT' | 'PRODUCER' | 'CONSUMER';
export type StatusCodeName = 'UNSET' | 'OK' | 'ERROR';

export interface SpanEvent {
  readonly name: string;
  readonly timeNs: bigint;
  readonly attributes: Attributes;
}

export interface SpanLink {
  readonly traceId: string;
  readonly spanId: string;
  readonly attributes: Attributes;
}

export interface SpanStatus {
  readonly code: StatusCodeName;
  readonly message?: string;
}

/** One span as read from the file; ids are lowercase hex. */
export interface TraceSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** undefined for a root span */
  readonly parentSpanId: string | undefined;
  readonly name: string;
  readonly kind: SpanKindName;
  readonly startNs: bigint;
  readonly endNs: bigint;
  readonly attributes: Attributes;
  /** the resource's attributes (service.name, k8s.namespace.name, ...) */
  readonly resource: Attributes;
  /** the instrumentation scope's name */
  readonly scope: string;
  readonly events: readonly SpanEvent[];
  readonly links: readonly SpanLink[];
  readonly status: SpanStatus;
}

/** The spans of one trace id, sorted by start time. */
export interface Trace {
  readonly traceId: string;
  readonly spans: readonly TraceSpan[];
  /** the earliest span start */
  readonly startNs: bigint;
  /** the latest span end */
  readonly endNs: bigint;
}

/** A line that was skipped: where, and why. */
export interface CorruptLine {
  readonly file: string;
  /** 1-based */
  readonly line: number;
  readonly reason: string;
}

export interface TraceFileContents {
  /** the files read, in order (FILE.1 when present, then FILE when present) */
  readonly files: readonly string[];
  /** every span, in file order, each (traceId, spanId) once */
  readonly spans: readonly TraceSpan[];
  readonly corrupt: readonly CorruptLine[];
  /** unterminated last lines ignored as still being written (0 or 1) */
  readonly partialLines: number;
}

const KINDS: readonly SpanKindName[] = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
const STATUS_CODES: readonly StatusCodeName[] = ['UNSET', 'OK', 'ERROR'];

class Corrupt extends Error {}

function fail(reason: string): never {
  throw new Corrupt(reason);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function arrayOf(v: unknown, what: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(`${what} is not an array`);
  return v;
}

/** Hex as OTLP/JSON writes ids; base64 (the protobuf JSON mapping) is accepted too. */
function id(v: unknown, bytes: number, what: string): string {
  if (typeof v !== 'string') fail(`${what} is missing`);
  if (v.length === bytes * 2 && /^[0-9a-fA-F]+$/.test(v)) return v.toLowerCase();
  if (/^[A-Za-z0-9+/]+={0,2}$/.test(v)) {
    const b = Buffer.from(v, 'base64');
    if (b.length === bytes) return b.toString('hex');
  }
  fail(`${what} ${JSON.stringify(v.slice(0, 40))} is not a ${bytes}-byte id`);
}

function optionalId(v: unknown, bytes: number, what: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const s = id(v, bytes, what);
  return /^0+$/.test(s) ? undefined : s;
}

function nanos(v: unknown, what: string): bigint {
  if (typeof v === 'string' && /^\d+$/.test(v)) return BigInt(v);
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return BigInt(Math.round(v));
  fail(`${what} is not a time in nanoseconds`);
}

function enumName<T extends string>(v: unknown, names: readonly T[], prefix: string, dflt: T, what: string): T {
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'number' && Number.isInteger(v) && names[v] !== undefined) return names[v]!;
  if (typeof v === 'string') {
    const n = v.startsWith(prefix) ? v.slice(prefix.length) : v;
    if ((names as readonly string[]).includes(n)) return n as T;
  }
  fail(`${what} ${JSON.stringify(v)} is unknown`);
}

function anyValue(v: unknown): AttributeValue {
  if (!isObject(v)) return null;
  if ('stringValue' in v) return String(v.stringValue);
  if ('boolValue' in v) return Boolean(v.boolValue);
  if ('intValue' in v) {
    const n = Number(v.intValue);
    return Number.isSafeInteger(n) ? n : String(v.intValue);
  }
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('bytesValue' in v) return String(v.bytesValue);
  if ('arrayValue' in v) return arrayOf(isObject(v.arrayValue) ? v.arrayValue.values : undefined, 'arrayValue').map(anyValue);
  if ('kvlistValue' in v) return attributes(isObject(v.kvlistValue) ? v.kvlistValue.values : undefined);
  return null;
}

function attributes(v: unknown): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of arrayOf(v, 'attributes')) {
    if (!isObject(kv) || typeof kv.key !== 'string') fail('an attribute has no key');
    out[kv.key] = anyValue(kv.value);
  }
  return out;
}

function span(s: unknown, resource: Attributes, scope: string): TraceSpan {
  if (!isObject(s)) fail('a span is not an object');
  if (typeof s.name !== 'string') fail('a span has no name');
  const status = isObject(s.status) ? s.status : {};
  return {
    traceId: id(s.traceId, 16, 'traceId'),
    spanId: id(s.spanId, 8, 'spanId'),
    parentSpanId: optionalId(s.parentSpanId, 8, 'parentSpanId'),
    name: s.name,
    kind: enumName(s.kind, KINDS, 'SPAN_KIND_', 'UNSPECIFIED', 'kind'),
    startNs: nanos(s.startTimeUnixNano, 'startTimeUnixNano'),
    endNs: nanos(s.endTimeUnixNano, 'endTimeUnixNano'),
    attributes: attributes(s.attributes),
    resource,
    scope,
    events: arrayOf(s.events, 'events').map((e) => {
      if (!isObject(e)) fail('an event is not an object');
      return { name: typeof e.name === 'string' ? e.name : '', timeNs: nanos(e.timeUnixNano, 'timeUnixNano'), attributes: attributes(e.attributes) };
    }),
    links: arrayOf(s.links, 'links').map((l) => {
      if (!isObject(l)) fail('a link is not an object');
      return { traceId: id(l.traceId, 16, 'link traceId'), spanId: id(l.spanId, 8, 'link spanId'), attributes: attributes(l.attributes) };
    }),
    status: {
      code: enumName(status.code, STATUS_CODES, 'STATUS_CODE_', 'UNSET', 'status code'),
      ...(typeof status.message === 'string' && status.message !== '' && { message: status.message }),
    },
  };
}

/**
 * Parses one line (one ExportTraceServiceRequest in OTLP/JSON). Returns its
 * spans, or why it is not one; never throws.
 */
export function parseTraceLine(line: string): { spans: TraceSpan[] } | { error: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return { error: 'not JSON' };
  }
  try {
    if (!isObject(doc) || !Array.isArray(doc.resourceSpans)) fail('no resourceSpans');
    const spans: TraceSpan[] = [];
    for (const rs of doc.resourceSpans) {
      if (!isObject(rs)) fail('a resourceSpans entry is not an object');
      const resource = Object.freeze(attributes(isObject(rs.resource) ? rs.resource.attributes : undefined));
      for (const ss of arrayOf(rs.scopeSpans, 'scopeSpans')) {
        if (!isObject(ss)) fail('a scopeSpans entry is not an object');
        const scope = isObject(ss.scope) && typeof ss.scope.name === 'string' ? ss.scope.name : '';
        for (const s of arrayOf(ss.spans, 'spans')) spans.push(span(s, resource, scope));
      }
    }
    return { spans };
  } catch (err) {
    if (err instanceof Corrupt) return { error: err.message };
    throw err;
  }
}

/**
 * Parses a file's text. `live` is the file still being written: its
 * unterminated last line, unless it already parses, is a write in progress
 * and is ignored (in a rotated file it counts as corrupt).
 */
export function parseTraceText(text: string, file: string, live: boolean): { spans: TraceSpan[]; corrupt: CorruptLine[]; partialLines: number } {
  const lines = text.split('\n');
  const last = lines.pop()!; // '' when the text ends with a newline
  const spans: TraceSpan[] = [];
  const corrupt: CorruptLine[] = [];
  let partialLines = 0;
  const take = (line: string, n: number): void => {
    if (line.trim() === '') return;
    const r = parseTraceLine(line);
    if ('spans' in r) for (const s of r.spans) spans.push(s);
    else corrupt.push({ file, line: n, reason: r.error });
  };
  lines.forEach((l, i) => take(l, i + 1));
  if (last.trim() !== '') {
    const r = parseTraceLine(last);
    if ('spans' in r) for (const s of r.spans) spans.push(s);
    else if (live) partialLines++;
    else corrupt.push({ file, line: lines.length + 1, reason: `unterminated last line: ${r.error}` });
  }
  return { spans, corrupt, partialLines };
}

async function readIfPresent(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new NotPrivilegedError(`cannot read the trace file ${file}: permission denied`, 'run as root (the agent writes it as root), or copy the file and pass --file');
    }
    throw err;
  }
}

/**
 * Reads FILE.1 (if present) then FILE. Throws NotFoundError when neither
 * exists; a corrupt line is reported in the result, not thrown.
 */
export async function readTraceFiles(file: string): Promise<TraceFileContents> {
  const rotated = `${file}.1`;
  const older = await readIfPresent(rotated);
  const current = await readIfPresent(file);
  if (older === undefined && current === undefined) {
    throw new NotFoundError(
      `no trace file: ${file} does not exist`,
      'traces appear there while `mesh-agent run` runs with no OTLP endpoint set (set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector instead); or pass --file',
    );
  }
  const files: string[] = [];
  const spans: TraceSpan[] = [];
  const corrupt: CorruptLine[] = [];
  let partialLines = 0;
  const seen = new Set<string>();
  for (const [f, text, live] of [[rotated, older, false], [file, current, true]] as const) {
    if (text === undefined) continue;
    files.push(f);
    const r = parseTraceText(text, f, live);
    for (const c of r.corrupt) corrupt.push(c);
    partialLines += r.partialLines;
    for (const s of r.spans) {
      // a span read twice (the file rotated between the two reads) counts once
      const key = `${s.traceId}/${s.spanId}`;
      if (seen.has(key)) continue;
      seen.add(key);
      spans.push(s);
    }
  }
  return { files, spans, corrupt, partialLines };
}

function byStart(a: TraceSpan, b: TraceSpan): number {
  return a.startNs < b.startNs ? -1 : a.startNs > b.startNs ? 1 : a.spanId < b.spanId ? -1 : a.spanId > b.spanId ? 1 : 0;
}

/** Groups spans by trace id; traces sorted by start (oldest first), spans in each by start. */
export function groupTraces(spans: readonly TraceSpan[]): Trace[] {
  const byTrace = new Map<string, TraceSpan[]>();
  for (const s of spans) {
    const list = byTrace.get(s.traceId);
    if (list) list.push(s);
    else byTrace.set(s.traceId, [s]);
  }
  const traces: Trace[] = [];
  for (const [traceId, list] of byTrace) {
    list.sort(byStart);
    let startNs = list[0]!.startNs;
    let endNs = list[0]!.endNs;
    for (const s of list) {
      if (s.startNs < startNs) startNs = s.startNs;
      if (s.endNs > endNs) endNs = s.endNs;
    }
    traces.push({ traceId, spans: list, startNs, endNs });
  }
  return traces.sort((a, b) => (a.startNs < b.startNs ? -1 : a.startNs > b.startNs ? 1 : a.traceId < b.traceId ? -1 : 1));
}

/** The span's service.name, if its resource has one. */
export function serviceName(span: TraceSpan): string | undefined {
  const v = span.resource['service.name'];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The span's k8s.namespace.name, if its resource has one. */
export function namespaceName(span: TraceSpan): string | undefined {
  const v = span.resource['k8s.namespace.name'];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The trace's true root (no parent), else its earliest span. */
export function rootSpan(trace: Trace): TraceSpan {
  return trace.spans.find((s) => s.parentSpanId === undefined) ?? trace.spans[0]!;
}

export interface SpanJson extends Omit<TraceSpan, 'parentSpanId' | 'startNs' | 'endNs' | 'events'> {
  /** null for a root span */
  readonly parentSpanId: string | null;
  readonly startNs: string;
  readonly endNs: string;
  readonly events: readonly { name: string; timeNs: string; attributes: Attributes }[];
}

export interface TraceJson {
  readonly traceId: string;
  readonly startNs: string;
  readonly endNs: string;
  readonly durationMs: number;
  readonly spans: readonly SpanJson[];
}

/** A trace as plain JSON: nanoseconds as decimal strings, a root's parentSpanId null. */
export function traceToJson(trace: Trace): TraceJson {
  return {
    traceId: trace.traceId,
    startNs: String(trace.startNs),
    endNs: String(trace.endNs),
    durationMs: Number(trace.endNs - trace.startNs) / 1e6,
    spans: trace.spans.map((s) => ({
      ...s,
      parentSpanId: s.parentSpanId ?? null,
      startNs: String(s.startNs),
      endNs: String(s.endNs),
      events: s.events.map((e) => ({ name: e.name, timeNs: String(e.timeNs), attributes: e.attributes })),
    })),
  };
}
