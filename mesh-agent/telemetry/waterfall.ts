/**
 * Renders traces as a terminal waterfall: a header per trace, then one line
 * per span in tree order (children under their parent, by start time) with
 * its service, kind, duration and a bar placed and scaled within the
 * trace's time span. Pure: traces and a width in, lines out.
 */
import { InvalidArgumentError } from '../errors.js';
import { namespaceName, rootSpan, serviceName, type SpanKindName, type Trace, type TraceSpan } from './trace-file.js';

export interface WaterfallOptions {
  /** the terminal's width in columns, at least 40; lines never exceed it; default 100 */
  readonly widthColumns?: number;
  /** ANSI colours (error spans red, the bar's empty part dim); default false */
  readonly color?: boolean;
}

export const MIN_WIDTH_COLUMNS = 40;

/** Validates and fills in the defaults; the result is frozen. */
export function waterfallOptions(o: WaterfallOptions = {}): Readonly<Required<WaterfallOptions>> {
  const widthColumns = o.widthColumns ?? 100;
  if (!Number.isInteger(widthColumns) || widthColumns < MIN_WIDTH_COLUMNS) {
    throw new InvalidArgumentError(`the waterfall width must be a whole number of columns ≥ ${MIN_WIDTH_COLUMNS}, got ${widthColumns}`);
  }
  return Object.freeze({ widthColumns, color: o.color ?? false });
}

/** One line of the tree: a span, how deep it sits, and whether its parent is missing from the file. */
export interface TreeRow {
  readonly span: TraceSpan;
  readonly depth: number;
  /** its parentSpanId names a span not in the file; shown at the root level */
  readonly orphan: boolean;
}

/**
 * The trace's spans in tree order: each root-level span (a root, or an
 * orphan) followed by its subtree, depth first, siblings by start time.
 */
export function treeRows(trace: Trace): TreeRow[] {
  const ids = new Set(trace.spans.map((s) => s.spanId));
  const children = new Map<string, TraceSpan[]>();
  const top: TraceSpan[] = [];
  for (const s of trace.spans) { // sorted by start, so each list is too
    if (s.parentSpanId === undefined || !ids.has(s.parentSpanId) || s.parentSpanId === s.spanId) top.push(s);
    else {
      const list = children.get(s.parentSpanId);
      if (list) list.push(s);
      else children.set(s.parentSpanId, [s]);
    }
  }
  const rows: TreeRow[] = [];
  const visited = new Set<string>();
  const walk = (root: TraceSpan, orphan: boolean): void => {
    const stack: { span: TraceSpan; depth: number }[] = [{ span: root, depth: 0 }];
    while (stack.length > 0) {
      const { span, depth } = stack.pop()!;
      if (visited.has(span.spanId)) continue;
      visited.add(span.spanId);
      rows.push({ span, depth, orphan: depth === 0 && orphan });
      const kids = children.get(span.spanId) ?? [];
      for (let i = kids.length - 1; i >= 0; i--) stack.push({ span: kids[i]!, depth: depth + 1 });
    }
  };
  for (const s of top) walk(s, s.parentSpanId !== undefined);
  // spans whose parents form a cycle reach no root: show them as orphans
  for (const s of trace.spans) if (!visited.has(s.spanId)) walk(s, true);
  return rows;
}

/** A duration in milliseconds with 2-3 significant digits: "0.35 ms", "4.20 ms", "12.3 ms", "1234 ms". */
export function formatMs(ns: bigint): string {
  if (ns <= 0n) return '0 ms';
  const ms = Number(ns) / 1e6;
  if (ms >= 99.95) return `${Math.round(ms)} ms`;
  if (ms >= 9.995) return `${ms.toFixed(1)} ms`;
  if (ms >= 0.9995) return `${ms.toFixed(2)} ms`;
  return `${ms.toPrecision(2)} ms`;
}

/** The cells [from, to) a span fills in a bar of `cells` standing for the trace's span of time. */
export function barCells(span: { startNs: bigint; endNs: bigint }, trace: { startNs: bigint; endNs: bigint }, cells: number): [number, number] {
  const total = Number(trace.endNs - trace.startNs) || 1;
  const at = (ns: bigint): number => Math.min(cells, Math.max(0, Math.round((Number(ns - trace.startNs) / total) * cells)));
  const from = Math.min(at(span.startNs), cells - 1);
  return [from, Math.max(from + 1, at(span.endNs))];
}

const KIND_LABEL: Record<SpanKindName, string> = {
  UNSPECIFIED: '-', INTERNAL: 'INTERNAL', SERVER: 'SERVER', CLIENT: 'CLIENT', PRODUCER: 'PRODUCER', CONSUMER: 'CONSUMER',
};

/** "ns/service", "service", or "?" when the resource names no service. */
export function serviceLabel(span: TraceSpan): string {
  const svc = serviceName(span) ?? '?';
  const ns = namespaceName(span);
  return printable(ns === undefined ? svc : `${ns}/${svc}`);
}

/** The compact annotations after a span's name: "!" for an error, "[retry ×2]" for events, "↔ 1 link". */
export function spanSuffix(span: TraceSpan): string {
  const parts: string[] = [];
  if (span.status.code === 'ERROR') parts.push('!');
  if (span.events.length > 0) {
    const counts = new Map<string, number>();
    for (const e of span.events) counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
    const names = [...counts].map(([name, n]) => (n > 1 ? `${name} ×${n}` : name));
    parts.push(`[${names.length > 2 ? [...names.slice(0, 2), `+${names.length - 2}`].join(', ') : names.join(', ')}]`);
  }
  if (span.links.length > 0) parts.push(`↔ ${span.links.length} link${span.links.length === 1 ? '' : 's'}`);
  return printable(parts.join(' '));
}

const KIND_SHORT: Record<SpanKindName, string> = {
  UNSPECIFIED: '-', INTERNAL: 'INT', SERVER: 'SRV', CLIENT: 'CLI', PRODUCER: 'PRO', CONSUMER: 'CON',
};

const ORPHAN_MARK = '… ';
const INDENT = '  ';

/**
 * Text from the file made safe for a terminal: names come from workloads
 * (an HTTP path can carry an escape sequence), so control characters
 * become "�" and cannot move the cursor or change colours.
 */
function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '\ufffd');
}

/** The largest of the values, at least `min` (no spread: a trace may hold many spans). */
function maxOf(values: readonly number[], min: number): number {
  return values.reduce((a, b) => (b > a ? b : a), min);
}

function len(s: string): number {
  return [...s].length;
}

/** s cut to w columns, with "…" when cut. */
function fit(s: string, w: number): string {
  const cps = [...s];
  if (cps.length <= w) return s;
  return w <= 0 ? '' : cps.slice(0, w - 1).join('') + '…';
}

function pad(s: string, w: number): string {
  return s + ' '.repeat(Math.max(0, w - len(s)));
}

function padStart(s: string, w: number): string {
  return ' '.repeat(Math.max(0, w - len(s))) + s;
}

interface Layout {
  name: number;
  service: number;
  kind: number;
  /** three-letter kinds (SRV, CLI, ...) on a narrow terminal */
  shortKinds: boolean;
  duration: number;
  bar: number;
}

function nameCell(row: TreeRow, w: number): string {
  const indent = INDENT.repeat(row.depth);
  const head = (len(indent) + 8 > w ? indent.slice(0, Math.max(0, w - 8)) : indent) + (row.orphan ? ORPHAN_MARK : '');
  const name = printable(row.span.name);
  const suffix = spanSuffix(row.span);
  const tail = suffix === '' ? '' : ` ${suffix}`;
  const room = w - len(head) - len(tail);
  if (room >= Math.min(6, len(name))) return pad(head + fit(name, room) + tail, w);
  return pad(fit(head + name + tail, w), w);
}

function kindLabel(kind: SpanKindName, short: boolean): string {
  return short ? KIND_SHORT[kind] : KIND_LABEL[kind];
}

function layout(rows: readonly TreeRow[], width: number): Layout {
  const nameNeed = maxOf(rows.map((r) => {
    const suffix = spanSuffix(r.span);
    return INDENT.length * r.depth + (r.orphan ? ORPHAN_MARK.length : 0) + len(r.span.name) + (suffix ? 1 + len(suffix) : 0);
  }), 4);
  const serviceNeed = maxOf(rows.map((r) => len(serviceLabel(r.span))), 1);
  const duration = maxOf(rows.map((r) => formatMs(r.span.endNs - r.span.startNs).length), 4);
  const gaps = 5; // two spaces after the name, one between the others
  let name = Math.min(nameNeed, Math.max(20, Math.floor(width * 0.34)));
  let service = Math.min(serviceNeed, Math.max(10, Math.floor(width * 0.2)));
  let shortKinds = false;
  let kind = maxOf(rows.map((r) => kindLabel(r.span.kind, false).length), 1);
  const minBar = Math.max(10, Math.floor(width * 0.2));
  // a narrow terminal: give up name, then service columns, then long kinds, until the bar has its minimum
  let over = name + service + kind + duration + gaps + minBar - width;
  const cut = (have: number, keep: number): number => {
    const c = Math.min(Math.max(0, over), Math.max(0, have - keep));
    over -= c;
    return c;
  };
  name -= cut(name, 14);
  service -= cut(service, 6);
  if (over > 0) {
    shortKinds = true;
    const short = maxOf(rows.map((r) => kindLabel(r.span.kind, true).length), 1);
    over -= kind - short;
    kind = short;
    name -= cut(name, 8);
  }
  return { name, service, kind, shortKinds, duration, bar: Math.max(1, width - name - service - kind - duration - gaps) };
}

const RED = '\x1b[31m';
const DIM = '\x1b[2m';
const BOLD = '\x1b[1m';
const RESET = '\x1b[0m';

function spanLine(row: TreeRow, trace: Trace, l: Layout, color: boolean): string {
  const s = row.span;
  const error = s.status.code === 'ERROR';
  const name = nameCell(row, l.name);
  const cols = [
    color && error ? RED + name + RESET : name,
    pad(fit(serviceLabel(s), l.service), l.service),
    pad(kindLabel(s.kind, l.shortKinds), l.kind),
    padStart(formatMs(s.endNs - s.startNs), l.duration),
  ];
  const [from, to] = barCells(s, trace, l.bar);
  const paint = (code: string, text: string): string => (color && code && text ? code + text + RESET : text);
  const bar = paint(DIM, '·'.repeat(from)) + paint(error ? RED : '', '█'.repeat(to - from)) + paint(DIM, '·'.repeat(l.bar - to));
  return `${cols[0]}  ${cols.slice(1).join(' ')} ${bar}`;
}

function header(trace: Trace, width: number, color: boolean): string[] {
  const root = rootSpan(trace);
  const services: string[] = [];
  for (const s of trace.spans) {
    const label = serviceLabel(s);
    if (!services.includes(label)) services.push(label);
  }
  const errors = trace.spans.filter((s) => s.status.code === 'ERROR').length;
  const rootName = (root.parentSpanId === undefined ? '' : ORPHAN_MARK) + printable(root.name);
  const first = fit(`trace ${trace.traceId}  ${rootName}`, width);
  const start = new Date(Number(trace.startNs / 1_000_000n)).toISOString();
  const n = trace.spans.length;
  const facts = `  ${start}  ${formatMs(trace.endNs - trace.startNs)}  ${n} span${n === 1 ? '' : 's'}${errors > 0 ? `  ${errors} error${errors === 1 ? '' : 's'}` : ''}`;
  const withServices = `${facts}  ${services.join(', ')}`;
  // the services on a line of their own when they do not fit after the facts
  const rest = len(withServices) <= width ? [withServices] : [fit(facts, width), fit(`  services: ${services.join(', ')}`, width)];
  return [color ? BOLD + first + RESET : first, ...rest];
}

/**
 * The waterfall, one string per line, none wider than widthColumns. Columns
 * are aligned across all the traces; each trace's bars span its own time.
 * A span whose parent is not in the file starts with "…" at the root level.
 */
export function renderWaterfall(traces: readonly Trace[], options: WaterfallOptions = {}): string[] {
  const { widthColumns, color } = waterfallOptions(options);
  const rowsOf = traces.map((t) => treeRows(t));
  const l = layout(rowsOf.flat(), widthColumns);
  const lines: string[] = [];
  traces.forEach((trace, i) => {
    if (i > 0) lines.push('');
    lines.push(...header(trace, widthColumns, color));
    const rows = rowsOf[i]!;
    for (const row of rows) lines.push(spanLine(row, trace, l, color));
    if (rows.some((r) => r.orphan)) lines.push(fit(`  ${ORPHAN_MARK}= its parent span is not in the file`, widthColumns));
  });
  return lines;
}
