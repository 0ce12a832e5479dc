/* mesh-agent traces, run from dist/ (npm run build) on a trace file written with the real SDK. */
import { join } from 'node:path';
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import t, { type Test } from 'tap';
import { cli } from '../../fixtures/cli.js';
import { BASE_S, workload } from '../../fixtures/sdk-traces.js';

/**
 * FILE.1: an old health check. FILE: a request from shop/frontend to
 * shop/catalog (10 ms, retried, a failing query) and the L4 connection it
 * rode on (linked), a billing call whose caller is on another node (60 ms),
 * a corrupt line, and a last line still being written.
 */
function traceFiles() {
  const frontend = workload({ 'service.name': 'frontend', 'k8s.namespace.name': 'shop' });
  const catalog = workload({ 'service.name': 'catalog', 'k8s.namespace.name': 'shop' });
  const node = workload({ 'service.name': 'sockmesh-agent' });
  const billing = workload({ 'service.name': 'billing', 'k8s.namespace.name': 'pay' });
  const health = frontend.span('GET /healthz', SpanKind.SERVER, -60_000, -59_999);
  const old = frontend.line();
  const call = frontend.span('GET /catalog', SpanKind.CLIENT, 0, 10, { events: [['retry', 1], ['retry', 3]] });
  const served = catalog.span('GET /catalog', SpanKind.SERVER, 5, 10, { parent: call });
  catalog.span('SELECT items', SpanKind.CLIENT, 6, 9, { parent: served, error: true });
  const conn = node.span('tcp 198.18.0.2 → 198.18.0.3:80', SpanKind.INTERNAL, -1, 12, { links: [{ context: call.spanContext() }] });
  const remote = trace.setSpanContext(ROOT_CONTEXT, { traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), traceFlags: 1, isRemote: true });
  const charge = billing.span('POST /charge', SpanKind.SERVER, 100, 160, { parent: trace.getSpan(remote)! });
  const lines = [frontend.line(), catalog.line(), '{"resourceSpans": [{"scopeSpans": tru', node.line(), billing.line()];
  const beingWritten = lines[0]!.slice(0, 100);
  return {
    files: { 'traces.otlp.jsonl.1': `${old}\n`, 'traces.otlp.jsonl': `${lines.join('\n')}\n${beingWritten}` },
    ids: { health: health.spanContext().traceId, request: call.spanContext().traceId, connection: conn.spanContext().traceId, charge: charge.spanContext().traceId },
  };
}

/** The two files in a fresh directory; FILE's path and the trace ids. */
function setup(t: Test): { file: string; ids: ReturnType<typeof traceFiles>['ids'] } {
  const { files, ids } = traceFiles();
  return { file: join(t.testdir(files), 'traces.otlp.jsonl'), ids };
}

const SPAN_LINE = /[·█]+$/;
const headers = (out: string): string[] => out.split('\n').filter((l) => l.startsWith('trace '));

t.test('--help exits 0', async (t) => {
  const r = cli(['traces', '--help']);
  t.equal(r.code, 0);
  t.match(r.stdout, /^usage: mesh-agent traces \[flags\]/);
  for (const flag of ['--file', '--limit', '--trace', '--service', '--namespace', '--min-ms', '--json', '--width']) t.match(r.stdout, flag);
  t.match(cli(['--help']).stdout, /\n {2}traces {5}recent traces from the trace file, as a waterfall\n/, 'listed in mesh-agent --help');
});

t.test('every trace from FILE.1 and FILE, oldest first, as a waterfall', async (t) => {
  const { file, ids } = setup(t);
  const r = cli(['traces', '--file', file, '--width', '80']);
  t.comment(`\n${r.stdout}`);
  t.equal(r.code, 0, r.stderr);
  t.same(headers(r.stdout).map((h) => h.split(/ +/)[1]), [ids.health, ids.connection, ids.request, ids.charge], 'four traces, by start');
  t.ok(r.stdout.split('\n').every((l) => [...l].length <= 80), 'nothing wider than 80 columns');
  t.match(r.stdout, /\nGET \/catalog \[retry ×2\] +shop\/frontend +CLIENT +10\.0 ms █+\n {2}GET \/catalog +shop\/catalog +SERVER +5\.00 ms ·+█+\n {4}SELECT items ! +shop\/catalog +CLIENT +3\.00 ms ·+█+·+\n/, 'the request, in tree order, indented');
  t.match(r.stdout, /\ntcp 198\.18\.0\.2 → \S*… ↔ 1 link +sockmesh-agent +INTERNAL +13\.0 ms █+\n/, 'the connection, with its link');
  t.match(r.stdout, /\n… POST \/charge +pay\/billing +SERVER +60\.0 ms █+\n {2}… = its parent span is not in the file\n/, 'the call from another node at the root level, marked');
  const server = r.stdout.split('\n').find((l) => / SERVER +5\.00 ms/.test(l))!;
  const bar = SPAN_LINE.exec(server)![0];
  const cells = [...bar].length;
  t.ok(Math.abs(bar.indexOf('█') - cells / 2) <= 1, `the child starting halfway starts its bar mid-way (${bar.indexOf('█')} of ${cells})`);
  t.match(r.stderr, /^mesh-agent: skipped 1 corrupt line \(first: \S+traces\.otlp\.jsonl line 3: not JSON\)\n$/, 'the corrupt line, counted at the end; the line being written, not');
});

t.test('--limit, --trace, --service, --namespace, --min-ms select traces', async (t) => {
  const { file, ids } = setup(t);
  const cases: [string, string[], string[]][] = [
    ['the most recent', ['--limit', '1'], [ids.charge]],
    ['the two most recent', ['--limit', '2'], [ids.request, ids.charge]],
    ['one trace', ['--trace', ids.request], [ids.request]],
    ['one trace, by a prefix, any case', ['--trace', ids.request.slice(0, 12).toUpperCase()], [ids.request]],
    ['a service in any span', ['--service', 'catalog'], [ids.request]],
    ['a service, more than one trace', ['--service', 'frontend'], [ids.health, ids.request]],
    ['a namespace', ['--namespace', 'pay'], [ids.charge]],
    ['at least 12.5 ms', ['--min-ms', '12.5'], [ids.connection, ids.charge]],
    ['all the filters at once', ['--namespace', 'shop', '--min-ms', '5', '--limit', '5'], [ids.request]],
  ];
  for (const [name, flags, want] of cases) {
    const r = cli(['traces', '--file', file, ...flags]);
    t.equal(r.code, 0, `${name}: ${r.stderr}`);
    t.same(headers(r.stdout).map((h) => h.split(/ +/)[1]), want, name);
  }
  const none = cli(['traces', '--file', file, '--service', 'nobody']);
  t.equal(none.code, 0);
  t.match(none.stdout, /^none of the 4 traces in \S+ and \S+ match the filters\n$/, 'no match is said, not an error');
  const unknown = cli(['traces', '--file', file, '--trace', 'ffff']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /no trace ffff in the trace file \[SOCKMESH_NOT_FOUND\]/);
});

t.test('--json: the selected traces, nanoseconds as strings', async (t) => {
  const { file, ids } = setup(t);
  const r = cli(['traces', '--file', file, '--json', '--service', 'catalog']);
  t.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { traceId: string; startNs: string; endNs: string; durationMs: number; spans: { name: string; kind: string; parentSpanId: string | null; startNs: string; endNs: string; resource: Record<string, string>; events: { name: string; timeNs: string }[]; status: { code: string } }[] }[];
  t.equal(out.length, 1);
  const [tr] = out;
  t.equal(tr!.traceId, ids.request);
  t.equal(tr!.durationMs, 10);
  t.equal(tr!.startNs, `${BASE_S}000000000`);
  t.same(tr!.spans.map((s) => [s.name, s.kind, s.resource['service.name']]), [['GET /catalog', 'CLIENT', 'frontend'], ['GET /catalog', 'SERVER', 'catalog'], ['SELECT items', 'CLIENT', 'catalog']]);
  t.equal(tr!.spans[0]!.parentSpanId, null);
  t.equal(tr!.spans[1]!.startNs, `${BASE_S}005000000`);
  t.equal(tr!.spans[1]!.endNs, `${BASE_S}010000000`);
  t.same(tr!.spans[0]!.events.map((e) => [e.name, e.timeNs]), [['retry', `${BASE_S}001000000`], ['retry', `${BASE_S}003000000`]]);
  t.equal(tr!.spans[2]!.status.code, 'ERROR');
  t.match(r.stderr, /skipped 1 corrupt line/, 'the count goes to stderr, the JSON stays clean');
  t.same(JSON.parse(cli(['traces', '--file', file, '--json', '--namespace', 'none']).stdout), [], 'no match: an empty array');
});

t.test('--width: the full width is used', async (t) => {
  const { file } = setup(t);
  const r = cli(['traces', '--file', file, '--width', '150', '--trace', 'abab']);
  t.equal(r.code, 0, r.stderr);
  const spans = r.stdout.split('\n').filter((l) => SPAN_LINE.test(l));
  t.equal(spans.length, 1);
  t.equal([...spans[0]!].length, 150);
});

t.test('the file from SOCKMESH_TRACES_FILE, as the agent writes it', async (t) => {
  const { file, ids } = setup(t);
  const was = process.env.SOCKMESH_TRACES_FILE;
  process.env.SOCKMESH_TRACES_FILE = file;
  t.teardown(() => { if (was === undefined) delete process.env.SOCKMESH_TRACES_FILE; else process.env.SOCKMESH_TRACES_FILE = was; });
  const r = cli(['traces', '--limit', '1']);
  t.equal(r.code, 0, r.stderr);
  t.same(headers(r.stdout).map((h) => h.split(/ +/)[1]), [ids.charge]);
});

t.test('a missing file: exit 1, the file named, and how traces get there', async (t) => {
  const dir = t.testdir();
  const missing = join(dir, 'nope.jsonl');
  const r = cli(['traces', '--file', missing]);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, `mesh-agent: no trace file: ${missing} does not exist [SOCKMESH_NOT_FOUND]`);
  t.match(r.stderr, /hint: .*mesh-agent run.*OTEL_EXPORTER_OTLP_ENDPOINT/);
});

t.test('an empty file: nothing yet, exit 0', async (t) => {
  const dir = t.testdir({ 'traces.otlp.jsonl': '' });
  const r = cli(['traces', '--file', join(dir, 'traces.otlp.jsonl')]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^no traces in \S+traces\.otlp\.jsonl yet\n$/);
});

t.test('bad flags: a clear error and exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--width', '10'], /--width must be a whole number ≥ 40, got "10" \[SOCKMESH_INVALID_ARGUMENT\]/],
    [['--limit', '0'], /--limit must be a whole number ≥ 1, got "0"/],
    [['--min-ms', 'soon'], /--min-ms must be a number ≥ 0, got "soon"/],
    [['--trace', 'not-hex'], /--trace must be a hex trace id \(or a prefix of one\), got "not-hex"/],
    [['--colour'], /Unknown option '--colour'/],
    [['extra'], /Unexpected argument 'extra'/],
  ];
  for (const [args, message] of cases) {
    const r = cli(['traces', ...args]);
    t.equal(r.code, 2, `${args.join(' ')} exits 2`);
    t.match(r.stderr, message, `${args.join(' ')}: ${r.stderr.split('\n')[0]}`);
  }
});
