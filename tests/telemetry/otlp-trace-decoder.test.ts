/* OTLP export requests read back into flat spans: encoded here with the official opentelemetry-proto definitions (both the current and the older field for a resource's spans). */
import t from 'tap';
import { decodeTraceExport, encodeTraceExportResponse, WIRE_SPAN_KIND } from '../../telemetry/otlp-trace-decoder.js';
import { otlpTypes } from '../fixtures/otlp-receiver.js';

const TRACE = Buffer.from('0af7651916cd43dd8448eb211c80319c', 'hex');
const SPAN = Buffer.from('b7ad6b7169203331', 'hex');
const PARENT = Buffer.from('00f067aa0ba902b7', 'hex');

function span(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    traceId: TRACE, spanId: SPAN, parentSpanId: PARENT, traceState: 'k=v', name: '/api/*', kind: WIRE_SPAN_KIND.server,
    startTimeUnixNano: '1764000000123456789', endTimeUnixNano: '1764000000124456789',
    attributes: [
      { key: 'http.method', value: { stringValue: 'GET' } }, { key: 'n', value: { intValue: 42 } }, { key: 'b', value: { boolValue: false } },
      { key: 'd', value: { doubleValue: 0.5 } }, { key: 'empty', value: { stringValue: '' } }, { key: 'list', value: { arrayValue: { values: [{ stringValue: 'x' }] } } },
    ],
    ...over,
  };
}

const encode = (body: Record<string, unknown>): Uint8Array => {
  const { request } = otlpTypes();
  return request.encode(request.fromObject(body)).finish();
};

t.test('spans of every resource and scope, ids as hex, times as ns, scalar attribute values as strings', async (t) => {
  const bytes = encode({
    resourceSpans: [
      { resource: { attributes: [{ key: 'service.name', value: { stringValue: 'sockmesh-node-proxy' } }] }, scopeSpans: [{ scope: { name: '' }, spans: [span(), span({ parentSpanId: Buffer.alloc(0), kind: WIRE_SPAN_KIND.client })] }] },
      { resource: { attributes: [] }, scopeSpans: [{ spans: [span({ name: 'other' })] }] },
    ],
  });
  const { spans, invalid } = decodeTraceExport(bytes);
  t.equal(invalid, 0);
  t.equal(spans.length, 3);
  const s = spans[0]!;
  t.match(s, { traceId: TRACE.toString('hex'), spanId: SPAN.toString('hex'), parentSpanId: PARENT.toString('hex'), traceState: 'k=v', name: '/api/*', kind: WIRE_SPAN_KIND.server, serviceName: 'sockmesh-node-proxy' });
  t.equal(s.startNs, 1764000000123456789n, 'start to the ns (past 2^53)');
  t.equal(s.endNs - s.startNs, 1_000_000n);
  t.same(Object.fromEntries(s.attributes), { 'http.method': 'GET', n: '42', b: 'false', d: '0.5', empty: '' }, 'an empty string and false are kept; a list is left out');
  t.equal(spans[1]!.parentSpanId, '', 'a root span: no parent');
  t.equal(spans[1]!.kind, WIRE_SPAN_KIND.client);
  t.equal(spans[2]!.serviceName, '', 'a resource without service.name');
});

t.test('an older sender\'s instrumentation_library_spans (field 1000) are read; scope_spans win when both are set', async (t) => {
  const { spans } = decodeTraceExport(encode({ resourceSpans: [{ resource: { attributes: [] }, instrumentationLibrarySpans: [{ instrumentationLibrary: { name: 'envoy' }, spans: [span({ name: 'old' })] }] }] }));
  t.same(spans.map((s) => s.name), ['old']);
  const both = decodeTraceExport(encode({ resourceSpans: [{ scopeSpans: [{ spans: [span({ name: 'new' })] }], instrumentationLibrarySpans: [{ spans: [span({ name: 'old' })] }] }] }));
  t.same(both.spans.map((s) => s.name), ['new']);
});

t.test('spans without proper ids are counted, not returned; bytes that are not a request throw', async (t) => {
  const { spans, invalid } = decodeTraceExport(encode({ resourceSpans: [{ scopeSpans: [{ spans: [span({ traceId: Buffer.alloc(8) }), span({ spanId: Buffer.alloc(0) }), span({ parentSpanId: Buffer.alloc(3) }), span()] }] }] }));
  t.equal(spans.length, 1);
  t.equal(invalid, 3);
  t.throws(() => decodeTraceExport(Buffer.from([0x0a, 0xff, 0xff, 0x01])), 'a truncated message');
});

t.test('the answer: empty when all were taken, else a partial success the official definitions read', async (t) => {
  const { response } = otlpTypes();
  t.equal(encodeTraceExportResponse(0, '').length, 0, 'all taken: an empty response');
  const r = response.toObject(response.decode(encodeTraceExportResponse(2, '2 of 5 spans refused')), { longs: Number }) as { partialSuccess: { rejectedSpans: number; errorMessage: string } };
  t.same(r.partialSuccess, { rejectedSpans: 2, errorMessage: '2 of 5 spans refused' });
});

t.test('only the attributes asked for are read; a field of an unexpected wire type is skipped; a length past the end throws, naming it', async (t) => {
  const bytes = encode({ resourceSpans: [{ scopeSpans: [{ spans: [span()] }] }] });
  const { spans } = decodeTraceExport(bytes, { attributes: new Set(['http.method', 'd', 'missing']) });
  t.same(Object.fromEntries(spans[0]!.attributes), { 'http.method': 'GET', d: '0.5' });
  // field 5 (the name) written as a varint instead of a string: skipped, the span otherwise read
  const odd = Buffer.concat([Buffer.from([0x0a]), lenPrefixed(Buffer.concat([Buffer.from([0x12]), lenPrefixed(Buffer.concat([Buffer.from([0x12]), lenPrefixed(Buffer.concat([
    Buffer.from([0x0a, 16]), TRACE, Buffer.from([0x12, 8]), SPAN, Buffer.from([0x28, 0x07]),
  ]))]))]))]);
  const r = decodeTraceExport(odd);
  t.equal(r.spans.length, 1);
  t.equal(r.spans[0]!.name, '', 'the misfit field left out');
  t.throws(() => decodeTraceExport(Buffer.from([0x0a, 0x05, 0x12, 0x10, 0x00])), /runs past the end of its message/);
});

function lenPrefixed(b: Buffer): Buffer {
  return Buffer.concat([Buffer.from([b.length]), b]);
}

t.test('a field whose length runs past its own message (though not past the buffer) is an error, not the next fields misread', async (t) => {
  // resource_spans { scope_spans (len 2) { spans: a string of 5 bytes } } then more bytes: the inner length overruns scope_spans
  const bytes = Buffer.from([0x0a, 0x09, 0x12, 0x02, 0x12, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00]);
  t.throws(() => decodeTraceExport(bytes), /runs past the end of its message/);
});

t.test('keys asked for are matched by their bytes: same length, other bytes, and UTF-8 keys', async (t) => {
  const attrs = [{ key: 'ab', value: { stringValue: '1' } }, { key: 'ac', value: { stringValue: '2' } }, { key: 'ключ', value: { stringValue: '3' } }, { key: 'клюв', value: { stringValue: '4' } }];
  const { spans } = decodeTraceExport(encode({ resourceSpans: [{ scopeSpans: [{ spans: [span({ attributes: attrs })] }] }] }), { attributes: new Set(['ac', 'ключ', 'zz']) });
  t.same(Object.fromEntries(spans[0]!.attributes), { ac: '2', 'ключ': '3' });
});
