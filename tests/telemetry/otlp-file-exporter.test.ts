import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SpanKind } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';
import { OtlpFileExporter } from '../../telemetry/otlp-file-exporter.js';

const resource = resourceFromAttributes({ 'service.name': 'web' });
const span = (name: string) => finishedSpan({ name, kind: SpanKind.SERVER, traceId: randomTraceId(), spanId: randomSpanId(), startNs: 1n, endNs: 2n, attributes: {}, resource, scope: { name: 's' } });
const names = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { resourceSpans: { scopeSpans: { spans: { name: string }[] }[] }[] }).resourceSpans[0]!.scopeSpans[0]!.spans.map((s) => s.name).join(','));

t.test('one OTLP/JSON request per line, serialized here or handed over in pieces, in order; rotated to .1 at the cap', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-file-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'sub', 'traces.otlp.jsonl');
  const ex = new OtlpFileExporter({ file, maxBytes: 4096 });
  const r1 = new Promise<ExportResult>((res) => ex.export([span('a'), span('b')], res));
  const piece = Buffer.from(JsonTraceSerializer.serializeRequest([span('c')])!);
  const r2 = ex.appendSerialized([piece.subarray(0, 10), piece.subarray(10)]);
  const r3 = new Promise<ExportResult>((res) => ex.export([span('d')], res));
  t.equal((await r1).code, ExportResultCode.SUCCESS);
  await r2;
  t.equal((await r3).code, ExportResultCode.SUCCESS);
  t.same(names(file), ['a,b', 'c', 'd'], 'the directory is made; lines in the order given');
  for (let i = 0; i < 10; i++) await ex.appendSerialized(piece);
  await ex.shutdown();
  t.ok(existsSync(`${file}.1`), 'past 4096 bytes the file was rotated');
  t.ok(readFileSync(file).length <= 4096, 'the live file stays under its cap');
  const all = [...names(`${file}.1`), ...names(file)];
  t.equal(all.filter((n) => n === 'c').length >= 5, true, 'lines survive rotation whole');
});
