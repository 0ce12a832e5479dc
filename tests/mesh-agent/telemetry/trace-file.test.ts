import { join } from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import t from 'tap';
import { NotFoundError } from '../../../mesh-agent/errors.js';
import {
  groupTraces, namespaceName, parseTraceLine, parseTraceText, readTraceFiles, rootSpan, serviceName, traceToJson, type TraceSpan,
} from '../../../mesh-agent/telemetry/trace-file.js';
import { ns, workload } from '../../fixtures/sdk-traces.js';

/** A caller's CLIENT span, the backend's SERVER child, an L4 connection span linked to the call; an older trace for FILE.1. */
function lines() {
  const frontend = workload({ 'service.name': 'frontend', 'k8s.namespace.name': 'shop' });
  const catalog = workload({ 'service.name': 'catalog', 'k8s.namespace.name': 'shop' });
  const node = workload({ 'service.name': 'sockmesh-agent', 'host.name': 'node-a' });
  const health = frontend.span('GET /health', SpanKind.SERVER, -5000, -4999.5);
  const old = frontend.line();
  const call = frontend.span('GET /catalog', SpanKind.CLIENT, 0, 10, { events: [['retry', 1, { attempt: 1 }], ['retry', 3, { attempt: 1 }]], attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200, ok: true, sizes: [1, 2] } });
  const served = catalog.span('GET /catalog', SpanKind.SERVER, 5, 10, { parent: call, error: 'upstream reset' });
  node.span('tcp 198.18.0.2 → 198.18.0.3:80', SpanKind.INTERNAL, -1, 12, { links: [{ context: call.spanContext() }] });
  return { old, frontend: frontend.line(), catalog: catalog.line(), node: node.line(), ids: { health: health.spanContext(), call: call.spanContext(), served: served.spanContext() } };
}

t.test('a line from JsonTraceSerializer parses into spans', async (t) => {
  const l = lines();
  const frontend = parseTraceLine(l.frontend);
  const catalog = parseTraceLine(l.catalog);
  const node = parseTraceLine(l.node);
  if (!('spans' in frontend) || !('spans' in catalog) || !('spans' in node)) throw new Error('did not parse');
  const [call] = frontend.spans;
  t.same(call, {
    traceId: l.ids.call.traceId,
    spanId: l.ids.call.spanId,
    parentSpanId: undefined,
    name: 'GET /catalog',
    kind: 'CLIENT',
    startNs: ns(0),
    endNs: ns(10),
    attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200, ok: true, sizes: [1, 2] },
    resource: { 'service.name': 'frontend', 'k8s.namespace.name': 'shop' },
    scope: 'sockmesh-test',
    events: [{ name: 'retry', timeNs: ns(1), attributes: { attempt: 1 } }, { name: 'retry', timeNs: ns(3), attributes: { attempt: 1 } }],
    links: [],
    status: { code: 'UNSET' },
  });
  const [served] = catalog.spans;
  t.equal(served!.parentSpanId, l.ids.call.spanId, 'the server span is the call\'s child');
  t.equal(served!.kind, 'SERVER');
  t.same(served!.status, { code: 'ERROR', message: 'upstream reset' });
  t.equal(serviceName(served!), 'catalog');
  t.equal(namespaceName(served!), 'shop');
  const [conn] = node.spans;
  t.same(conn!.links, [{ traceId: l.ids.call.traceId, spanId: l.ids.call.spanId, attributes: {} }], 'the connection links to the call');
  t.not(conn!.traceId, l.ids.call.traceId, 'in a trace of its own');
  t.equal(namespaceName(conn!), undefined, 'no namespace on the node');
});

t.test('the protobuf JSON mapping (base64 ids, enum names, string int64) is read too', async (t) => {
  const traceId = '5b8efff798038103d269b633813fc60c';
  const spanId = 'eee19b7ec3c1b174';
  const line = JSON.stringify({
    resourceSpans: [{
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'x' } }, { key: 'big', value: { intValue: '9007199254740993' } }, { key: 'n', value: { intValue: '42' } }, { key: 'kv', value: { kvlistValue: { values: [{ key: 'a', value: { doubleValue: 0.5 } }] } } }, { key: 'empty', value: {} }] },
      scopeSpans: [{
        scope: { name: 's' },
        spans: [{
          traceId: Buffer.from(traceId, 'hex').toString('base64'), spanId: Buffer.from(spanId, 'hex').toString('base64'), parentSpanId: '',
          name: 'op', kind: 'SPAN_KIND_PRODUCER', startTimeUnixNano: 1000, endTimeUnixNano: '3000', status: { code: 'STATUS_CODE_OK' },
        }],
      }],
    }],
  });
  const r = parseTraceLine(line);
  if (!('spans' in r)) throw new Error(r.error);
  const [s] = r.spans;
  t.equal(s!.traceId, traceId);
  t.equal(s!.spanId, spanId);
  t.equal(s!.parentSpanId, undefined, 'an empty parent is a root');
  t.equal(s!.kind, 'PRODUCER');
  t.same(s!.status, { code: 'OK' });
  t.equal(s!.startNs, 1000n);
  t.equal(s!.endNs, 3000n);
  t.same(s!.resource, { 'service.name': 'x', big: '9007199254740993', n: 42, kv: { a: 0.5 }, empty: null }, 'an int64 past 2^53 stays exact, as a string');
});

t.test('lines that are not ExportTraceServiceRequests say why', async (t) => {
  const good = lines().frontend;
  const cases: [string, string, RegExp][] = [
    ['not JSON', '{"resourceSpans":[', /not JSON/],
    ['another document', '{"resourceMetrics":[]}', /no resourceSpans/],
    ['an array', '[1,2]', /no resourceSpans/],
    ['a bad trace id', good.replace(/"traceId":"[0-9a-f]{32}"/, '"traceId":"xyz"'), /traceId "xyz" is not a 16-byte id/],
    ['no start time', good.replace(/"startTimeUnixNano":"\d+",/, ''), /startTimeUnixNano is not a time/],
    ['an unknown kind', good.replace(/"kind":3/, '"kind":9'), /kind 9 is unknown/],
    ['spans not an array', '{"resourceSpans":[{"scopeSpans":[{"spans":{}}]}]}', /spans is not an array/],
  ];
  for (const [name, line, why] of cases) {
    const r = parseTraceLine(line);
    t.ok('error' in r && why.test(r.error), `${name}: ${'error' in r ? r.error : 'parsed'}`);
  }
  t.same(parseTraceLine('{"resourceSpans":[]}'), { spans: [] }, 'an empty request is fine');
});

t.test('a partial last line is ignored, a corrupt line counted, blank lines skipped', async (t) => {
  const l = lines();
  const cut = l.node.slice(0, Math.floor(l.node.length / 2));
  const text = [l.frontend, '', '{"this is": not json', l.catalog, ''].join('\n') + cut;
  const live = parseTraceText(text, 'f', true);
  t.equal(live.spans.length, 2, 'the two whole lines');
  t.same(live.corrupt, [{ file: 'f', line: 3, reason: 'not JSON' }], 'the corrupt line, by number');
  t.equal(live.partialLines, 1, 'the line being written, ignored');
  const rotated = parseTraceText(text, 'f.1', false);
  t.same(rotated.corrupt.map((c) => c.line), [3, 5], 'in a rotated file nothing is still being written: a cut line is corrupt');
  t.match(rotated.corrupt[1]!.reason, /^unterminated last line: not JSON$/);
  t.equal(parseTraceText(l.frontend, 'f', true).spans.length, 1, 'a whole last line without its newline is read');
  t.same(parseTraceText('', 'f', true), { spans: [], corrupt: [], partialLines: 0 }, 'an empty file');
});

t.test('FILE.1 then FILE, each span once; grouped into traces', async (t) => {
  const l = lines();
  const dir = t.testdir({
    'traces.otlp.jsonl.1': `${l.old}\n${l.frontend}\n`,
    // the file rotated between the two reads: the frontend line is in both
    'traces.otlp.jsonl': `${l.frontend}\nnot json\n${l.catalog}\n${l.node}\n${l.node.slice(0, 40)}`,
  });
  const file = join(dir, 'traces.otlp.jsonl');
  const r = await readTraceFiles(file);
  t.same(r.files, [`${file}.1`, file]);
  t.same(r.spans.map((s) => s.name), ['GET /health', 'GET /catalog', 'GET /catalog', 'tcp 198.18.0.2 → 198.18.0.3:80'], 'in file order, the duplicate once');
  t.same(r.corrupt, [{ file, line: 2, reason: 'not JSON' }]);
  t.equal(r.partialLines, 1);

  const traces = groupTraces(r.spans);
  t.same(traces.map((x) => x.spans.length), [1, 1, 2], 'three traces, oldest first');
  const [health, connection, request] = traces;
  t.equal(health!.spans[0]!.name, 'GET /health');
  t.equal(request!.traceId, l.ids.call.traceId);
  t.same(request!.spans.map((s) => s.kind), ['CLIENT', 'SERVER'], 'spans by start');
  t.equal(request!.startNs, ns(0));
  t.equal(request!.endNs, ns(10));
  t.equal(rootSpan(request!).spanId, l.ids.call.spanId);
  t.equal(connection!.endNs - connection!.startNs, 13_000_000n);
  t.equal(health!.endNs - health!.startNs, 500_000n, 'a span half a millisecond long');
});

t.test('only FILE.1 (rotated, the new file not yet made) is read; neither is NOT_FOUND', async (t) => {
  const l = lines();
  const dir = t.testdir({ 'tr.jsonl.1': `${l.old}\n` });
  const r = await readTraceFiles(join(dir, 'tr.jsonl'));
  t.same(r.files, [join(dir, 'tr.jsonl.1')]);
  t.equal(r.spans.length, 1);
  const missing = join(dir, 'nothing.jsonl');
  await t.rejects(readTraceFiles(missing), NotFoundError);
  const err = (await readTraceFiles(missing).then(() => undefined, (e: unknown) => e)) as NotFoundError;
  t.equal(err.code, 'SOCKMESH_NOT_FOUND');
  t.match(err.message, missing, 'names the file');
  t.match(err.hint, /mesh-agent run.*OTEL_EXPORTER_OTLP_ENDPOINT/, 'says how traces get there, and the alternative');
});

t.test('traceToJson: nanoseconds as strings, JSON-safe', async (t) => {
  const l = lines();
  const spans = [l.frontend, l.catalog].flatMap((x) => (parseTraceLine(x) as { spans: TraceSpan[] }).spans);
  const [tr] = groupTraces(spans);
  const j = JSON.parse(JSON.stringify(traceToJson(tr!))) as Record<string, unknown> & { spans: Record<string, unknown>[] };
  t.equal(j.startNs, String(ns(0)));
  t.equal(j.durationMs, 10);
  t.equal(j.spans[0]!.startNs, String(ns(0)));
  t.equal(j.spans[0]!.endNs, String(ns(10)));
  t.equal(j.spans[0]!.parentSpanId, null, 'a root has a null parent');
  t.equal(j.spans[1]!.parentSpanId, l.ids.call.spanId);
  t.same((j.spans[0]!.events as { timeNs: string }[]).map((e) => e.timeNs), [String(ns(1)), String(ns(3))]);
  t.same(j.spans[1]!.resource, { 'service.name': 'catalog', 'k8s.namespace.name': 'shop' });
});
