import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import t from 'tap';
import { InvalidArgumentError } from '../../../mesh-agent/errors.js';
import { groupTraces, type Trace, type TraceSpan } from '../../../mesh-agent/telemetry/trace-file.js';
import { barCells, formatMs, renderWaterfall, spanSuffix, treeRows } from '../../../mesh-agent/telemetry/waterfall.js';
import { workload } from '../../fixtures/sdk-traces.js';

/** A request through two workloads (a retried call, a failing query), and the L4 connection it rode on, linked to it. */
function scenario(): { request: Trace; connection: Trace; orphaned: Trace } {
  const frontend = workload({ 'service.name': 'frontend', 'k8s.namespace.name': 'shop' });
  const catalog = workload({ 'service.name': 'catalog', 'k8s.namespace.name': 'shop' });
  const node = workload({ 'service.name': 'sockmesh-agent' });
  const call = frontend.span('GET /catalog', SpanKind.CLIENT, 0, 10, { events: [['retry', 1], ['retry', 3]] });
  const served = catalog.span('GET /catalog', SpanKind.SERVER, 5, 10, { parent: call });
  catalog.span('SELECT items', SpanKind.CLIENT, 6, 9, { parent: served, error: 'boom' });
  frontend.span('render', SpanKind.INTERNAL, 1, 2, { parent: call });
  node.span('tcp 198.18.0.2 → 198.18.0.3:80', SpanKind.INTERNAL, 0, 12, { links: [{ context: call.spanContext() }] });
  const remote = trace.setSpanContext(ROOT_CONTEXT, { traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), traceFlags: 1, isRemote: true });
  const billing = workload({ 'service.name': 'billing', 'k8s.namespace.name': 'pay' });
  const s = billing.span('POST /charge', SpanKind.SERVER, 100, 150, { parent: trace.getSpan(remote)! });
  billing.span('charge card', SpanKind.INTERNAL, 110, 140, { parent: s });
  const traces = groupTraces([...frontend.spans(), ...catalog.spans(), ...node.spans(), ...billing.spans()]);
  const request = traces.find((x) => x.spans.some((sp) => sp.name === 'render'))!;
  const connection = traces.find((x) => x.spans.some((sp) => sp.name.startsWith('tcp')))!;
  const orphaned = traces.find((x) => x.traceId === 'ab'.repeat(16))!;
  return { request, connection, orphaned };
}

const BAR = /[·█]+$/;
function bar(line: string): { start: number; filledFrom: number; filledTo: number; cells: number } {
  const m = BAR.exec(line)!;
  const b = m[0];
  return { start: m.index, filledFrom: b.indexOf('█'), filledTo: b.lastIndexOf('█') + 1, cells: [...b].length };
}

t.test('spans come in tree order: children under their parent by start, orphans at the root level', async (t) => {
  const { request, orphaned } = scenario();
  t.same(treeRows(request).map((r) => [r.depth, r.span.name, r.orphan]), [
    [0, 'GET /catalog', false],
    [1, 'render', false],
    [1, 'GET /catalog', false],
    [2, 'SELECT items', false],
  ]);
  t.same(treeRows(orphaned).map((r) => [r.depth, r.span.name, r.orphan]), [[0, 'POST /charge', true], [1, 'charge card', false]]);
});

t.test('a cycle of parents still shows every span once', async (t) => {
  const { request } = scenario();
  const [a, b] = request.spans;
  const looped: Trace = { ...request, spans: [{ ...a!, parentSpanId: b!.spanId }, { ...b!, parentSpanId: a!.spanId }] };
  t.same(treeRows(looped).map((r) => [r.depth, r.span.spanId, r.orphan]), [[0, a!.spanId, true], [1, b!.spanId, false]]);
});

t.test('the waterfall at 80 columns', async (t) => {
  const { request } = scenario();
  const lines = renderWaterfall([request], { widthColumns: 80 });
  t.comment(`\n${lines.join('\n')}`);
  for (const l of lines) t.ok([...l].length <= 80, `fits in 80 columns: ${l}`);
  t.match(lines[0], new RegExp(`^trace ${request.traceId}  GET /catalog$`), 'header: trace id and root span');
  t.match(lines[1], /^ {2}2026-11-\d\dT\d\d:\d\d:57\.000Z {2}10\.0 ms {2}4 spans {2}1 error$/, 'header: start, duration, spans, errors');
  t.equal(lines[2], '  services: shop/frontend, shop/catalog', 'and the services, on their own line when they do not fit after the rest');
  const spans = lines.slice(3);
  t.equal(spans.length, 4);
  for (const l of spans) t.equal([...l].length, 80, 'span lines use the whole width');
  t.match(spans[0], /^GET \/catalog \[retry ×2\] +shop\/frontend +CLIENT +10\.0 ms /, 'root: name and events, ns/service, kind, duration');
  t.match(spans[1], /^ {2}render +shop\/frontend +INTERNAL +1\.00 ms /, 'a child is indented by two');
  t.match(spans[2], /^ {2}GET \/catalog +shop\/catalog +SERVER +5\.00 ms /);
  t.match(spans[3], /^ {4}SELECT items ! +shop\/catalog +CLIENT +3\.00 ms /, 'a grandchild by four, with the error marker');

  const bars = spans.map(bar);
  t.ok(bars.every((b) => b.start === bars[0]!.start && b.cells === bars[0]!.cells), 'the bars are aligned');
  t.ok(bars[0]!.cells >= 16, `the bar has room (${bars[0]!.cells} cells)`);
  t.same([bars[0]!.filledFrom, bars[0]!.filledTo], [0, bars[0]!.cells], 'the root fills the bar');
  const half = bars[0]!.cells / 2;
  t.ok(Math.abs(bars[2]!.filledFrom - half) <= 1, `the server span, starting halfway, starts its bar mid-way (${bars[2]!.filledFrom} of ${bars[0]!.cells})`);
  t.equal(bars[2]!.filledTo, bars[0]!.cells, 'and ends with the trace');
  t.ok(Math.abs(bars[3]!.filledFrom - bars[0]!.cells * 0.6) <= 1 && Math.abs(bars[3]!.filledTo - bars[0]!.cells * 0.9) <= 1, 'the query sits at 60-90%');
  t.ok(bars[1]!.filledTo - bars[1]!.filledFrom >= 1, 'a short span still gets a cell');
  t.notMatch(lines.join(''), /\x1b\[/, 'no colour unless asked');
});

t.test('wider terminals get wider bars, narrow ones still fit', async (t) => {
  const { request, connection, orphaned } = scenario();
  const wide = renderWaterfall([request], { widthColumns: 160 });
  t.match(wide[1], /^ {2}2026\S+ {2}10\.0 ms {2}4 spans {2}1 error {2}shop\/frontend, shop\/catalog$/, 'services after the rest when they fit');
  for (const l of wide.slice(2)) t.equal([...l].length, 160);
  const b80 = bar(renderWaterfall([request], { widthColumns: 80 })[3]!).cells;
  t.equal(bar(wide[2]!).cells, b80 + 80, 'all 80 extra columns go to the bar');
  for (const width of [40, 57, 80, 123]) {
    const lines = renderWaterfall([request, connection, orphaned], { widthColumns: width });
    t.ok(lines.every((l) => [...l].length <= width), `every line fits in ${width}`);
    t.ok(lines.filter((l) => BAR.test(l)).every((l) => bar(l).cells >= 10), `bars keep at least 10 cells at ${width}`);
  }
  const narrow = renderWaterfall([request], { widthColumns: 40 });
  t.comment(`\n${narrow.join('\n')}`);
  t.match(narrow.find((l) => l.includes('!')), / CLI +3\.00 ms ·+█+·+$/, 'kinds shrink to three letters at 40 columns');
});

t.test('links, orphans, several traces', async (t) => {
  const { request, connection, orphaned } = scenario();
  const lines = renderWaterfall([connection, orphaned, request], { widthColumns: 120 });
  t.comment(`\n${lines.join('\n')}`);
  t.match(lines[2], /^tcp 198\.18\.0\.2 → 198\.18\.0\.3:80 ↔ 1 link +sockmesh-agent +INTERNAL +12\.0 ms █+$/, 'a link is a suffix; no namespace: just the service');
  t.equal(lines[3], '', 'a blank line between traces');
  t.match(lines[4], /^trace abab.*  … POST \/charge$/, 'a trace whose root is elsewhere: its top span, marked');
  t.match(lines[6], /^… POST \/charge +pay\/billing +SERVER +50\.0 ms █+$/, 'the orphan at the root level, marked');
  t.match(lines[7], /^ {2}charge card +pay\/billing +INTERNAL +30\.0 ms ·+█+·+$/);
  t.match(lines[8], /^ {2}… = its parent span is not in the file$/, 'the mark is explained');
  const names = lines.filter((l) => BAR.test(l)).map((l) => l.slice(0, 10));
  t.equal(names.length, 7, 'seven spans in three traces');
  const starts = lines.filter((l) => BAR.test(l)).map((l) => bar(l).start);
  t.ok(starts.every((s) => s === starts[0]), 'columns align across traces');
});

t.test('suffixes: error, events by name, links', async (t) => {
  const { request } = scenario();
  const base = request.spans[0]!;
  const ev = (name: string) => ({ name, timeNs: base.startNs, attributes: {} });
  const cases: [string, Partial<TraceSpan>, string][] = [
    ['nothing', { events: [], links: [], status: { code: 'OK' } }, ''],
    ['error', { events: [], links: [], status: { code: 'ERROR', message: 'x' } }, '!'],
    ['one event', { events: [ev('retry')], links: [] }, '[retry]'],
    ['events by name', { events: [ev('retry'), ev('timeout'), ev('retry')], links: [] }, '[retry ×2, timeout]'],
    ['many names', { events: [ev('a'), ev('b'), ev('c'), ev('d')], links: [] }, '[a, b, +2]'],
    ['two links', { events: [], links: [{ traceId: base.traceId, spanId: base.spanId, attributes: {} }, { traceId: base.traceId, spanId: base.spanId, attributes: {} }] }, '↔ 2 links'],
    ['all', { events: [ev('retry')], links: [{ traceId: base.traceId, spanId: base.spanId, attributes: {} }], status: { code: 'ERROR' } }, '! [retry] ↔ 1 link'],
  ];
  for (const [name, patch, want] of cases) t.equal(spanSuffix({ ...base, status: { code: 'UNSET' }, ...patch }), want, name);
});

t.test('a long name is cut, its suffix kept', async (t) => {
  const { request } = scenario();
  const root = request.spans[0]!;
  const long: Trace = { ...request, spans: [{ ...root, name: 'GET /a/very/long/path/that/goes/on/and/on/for/ever?with=query&and=more' }] };
  const [, , line] = renderWaterfall([long], { widthColumns: 80 });
  t.match(line, /^GET \/a\/very\/\S+… \[retry ×2\] +shop\/frontend/);
  t.equal([...line!].length, 80);
});

t.test('control characters from the file cannot reach the terminal', async (t) => {
  const { request } = scenario();
  const root = request.spans[0]!;
  const evil: Trace = { ...request, spans: [{ ...root, name: 'GET /\x1b[2J\x1b]0;pwned\x07x\ny', resource: { 'service.name': 'a\x1b[31mb' }, events: [{ name: 'e\rf', timeNs: root.startNs, attributes: {} }] }] };
  const out = renderWaterfall([evil], { widthColumns: 100 }).join('\n');
  t.notMatch(out, /[\x00-\x09\x0b-\x1f\x7f]/, 'no control character but the newlines between lines');
  t.equal(out.split('\n').length, 3, 'a newline in a name does not add a line');
  t.match(out, /GET \/\ufffd\[2J\ufffd\]0;pwned\ufffdx\ufffdy \[e\ufffdf\] +a\ufffd\[31mb /);
});

t.test('a large, deep trace renders without blowing the stack', async (t) => {
  const { request } = scenario();
  const root = request.spans[0]!;
  const hex = (n: number) => n.toString(16).padStart(16, '0');
  const spans: TraceSpan[] = [{ ...root, spanId: hex(1) }];
  for (let i = 2; i <= 50_000; i++) {
    // a chain 2000 deep, the rest flat under the root
    spans.push({ ...root, spanId: hex(i), parentSpanId: hex(i <= 2000 ? i - 1 : 1), startNs: root.startNs + BigInt(i), events: [], links: [] });
  }
  const big: Trace = { ...request, spans };
  const rows = treeRows(big);
  t.equal(rows.length, spans.length);
  t.equal(Math.max(...rows.slice(0, 3000).map((r) => r.depth)), 1999);
  const lines = renderWaterfall([big], { widthColumns: 80 });
  t.equal(lines.length, spans.length + 2, 'two header lines, a line per span');
  t.ok(lines.every((l) => [...l].length <= 80), 'deep indentation is capped within the name column');
});

t.test('durations: 2-3 significant digits, in ms', async (t) => {
  const cases: [bigint, string][] = [
    [0n, '0 ms'], [-5n, '0 ms'], [1n, '0.0000010 ms'], [354_684n, '0.35 ms'], [999_600n, '1.00 ms'], [4_200_000n, '4.20 ms'],
    [9_996_000n, '10.0 ms'], [12_345_678n, '12.3 ms'], [99_960_000n, '100 ms'], [1_234_567_890n, '1235 ms'],
  ];
  for (const [ns, want] of cases) t.equal(formatMs(ns), want, `${ns} ns`);
});

t.test('bar cells: placed and scaled in the trace, at least one cell', async (t) => {
  const tr = { startNs: 1000n, endNs: 2000n };
  const cases: [bigint, bigint, number, [number, number]][] = [
    [1000n, 2000n, 20, [0, 20]],
    [1500n, 2000n, 20, [10, 20]],
    [1000n, 1500n, 20, [0, 10]],
    [1250n, 1750n, 40, [10, 30]],
    [1990n, 2000n, 20, [19, 20]],
    [2000n, 2000n, 20, [19, 20]],
    [1500n, 1500n, 20, [10, 11]],
  ];
  for (const [s, e, cells, want] of cases) t.same(barCells({ startNs: s, endNs: e }, tr, cells), want, `${s}-${e} in ${cells}`);
  t.same(barCells({ startNs: 5n, endNs: 5n }, { startNs: 5n, endNs: 5n }, 10), [0, 1], 'a zero-length trace');
});

t.test('colour only when asked', async (t) => {
  const { request } = scenario();
  const lines = renderWaterfall([request], { widthColumns: 80, color: true });
  t.match(lines.join('\n'), /\x1b\[31m +SELECT items ! +\x1b\[0m/, 'error spans in red');
  t.match(lines.join('\n'), /\x1b\[31m█+\x1b\[0m/, 'and their bars');
  const plain = lines.map((l) => l.replace(/\x1b\[\d+m/g, ''));
  t.same(plain, renderWaterfall([request], { widthColumns: 80 }), 'the same text without the escapes');
});

t.test('options are validated', async (t) => {
  for (const widthColumns of [39, 0, 80.5, NaN]) {
    t.throws(() => renderWaterfall([], { widthColumns }), InvalidArgumentError, `width ${widthColumns}`);
  }
  t.same(renderWaterfall([]), [], 'no traces, no lines');
});
