/* The agent's OTLP/gRPC trace receiver on a unix socket, fed by the official OTLP/gRPC exporter (through the Envoy tracer stand-in) and by a raw gRPC client. */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { OtlpGrpcReceiver } from '../../telemetry/otlp-grpc-receiver.js';
import { TRACE_EXPORT_PATH } from '../../telemetry/otlp-grpc-exporter.js';
import { WIRE_SPAN_KIND, type OtlpSpan } from '../../telemetry/otlp-trace-decoder.js';
import { EnvoyTracerStandIn } from '../fixtures/envoy-tracer-stand-in.js';
import { otlpTypes } from '../fixtures/otlp-receiver.js';

async function receiver(t: Test, onSpans: (s: OtlpSpan[]) => string[]): Promise<OtlpGrpcReceiver> {
  const dir = mkdtempSync(join(tmpdir(), 'sm-otlp-recv-'));
  const r = new OtlpGrpcReceiver({ socketPath: join(dir, 'envoy-spans.sock'), onSpans });
  await r.start();
  t.teardown(async () => { await r.stop(); rmSync(dir, { recursive: true, force: true }); });
  return r;
}

/** One Export call with these bytes: the answer's bytes, or the gRPC error. */
function rawExport(socketPath: string, body: Buffer): Promise<{ response?: Buffer; error?: grpc.ServiceError }> {
  const client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(TRACE_EXPORT_PATH, (b: Buffer) => b, (b: Buffer) => b, body, (error, response) => {
      client.close();
      resolve({ ...(error && { error }), ...(response && { response }) });
    });
  });
}

t.test('the official exporter\'s spans arrive whole: ids, parentage, kinds, string tags, the resource\'s service.name', async (t) => {
  const got: OtlpSpan[] = [];
  const r = await receiver(t, (s) => { got.push(...s); return []; });
  const envoy = new EnvoyTracerStandIn(r.socketPath, { batch: true });
  t.teardown(() => envoy.shutdown());
  const ids = envoy.request({ caller: '198.18.0.2', listener: '198.18.255.254:20000', service: 'shop/web:80', route: '/api/*', status: 200, attempts: [{ backend: '198.18.0.3:8080', status: 503 }, { backend: '198.18.0.4:8080', status: 200 }] });
  await envoy.flush();
  t.equal(got.length, 3);
  const [a0, a1, req] = got;
  t.match(req, { traceId: ids.traceId, spanId: ids.spanId, parentSpanId: '', name: '/api/*', kind: WIRE_SPAN_KIND.server, serviceName: 'sockmesh-node-proxy' });
  t.match([a0, a1], [{ spanId: ids.attemptSpanIds[0], parentSpanId: ids.spanId, kind: WIRE_SPAN_KIND.client, name: 'router shop/web:80 egress' }, { spanId: ids.attemptSpanIds[1], parentSpanId: ids.spanId }]);
  t.equal(req!.attributes.get('peer.address'), '198.18.0.2');
  t.equal(a1!.attributes.get('retry.count'), '1');
  t.same(r.stats, { exports: 1, spans: 3, refused: 0, invalid: 0 });
  t.equal(statSync(r.socketPath).mode & 0o777, 0o666, 'a proxy running as another user can connect');
});

t.test('refused spans come back as a partial success (count and first reason); bytes that are not a request get INVALID_ARGUMENT', async (t) => {
  const r = await receiver(t, (s) => s.slice(1).map((x) => `span ${x.spanId}: no good`));
  const { request, response } = otlpTypes();
  const span = (id: string) => ({ traceId: Buffer.alloc(16, 1), spanId: Buffer.from(id, 'hex'), name: 'x', startTimeUnixNano: '1', endTimeUnixNano: '2' });
  const body = Buffer.from(request.encode(request.fromObject({ resourceSpans: [{ scopeSpans: [{ spans: [span('0000000000000001'), span('0000000000000002'), span('0000000000000003'), { ...span('0000000000000004'), traceId: Buffer.alloc(3) }] }] }] })).finish());
  const ok = await rawExport(r.socketPath, body);
  t.notOk(ok.error);
  const answer = response.toObject(response.decode(ok.response!), { longs: Number }) as { partialSuccess?: { rejectedSpans: number; errorMessage: string } };
  t.equal(answer.partialSuccess?.rejectedSpans, 3, 'two refused by the handler, one without proper ids');
  t.match(answer.partialSuccess?.errorMessage, /^3 of 4 spans refused; first: span 0000000000000002: no good$/);
  const bad = await rawExport(r.socketPath, Buffer.from([0x0a, 0xff, 0xff, 0x01]));
  t.equal(bad.error?.code, grpc.status.INVALID_ARGUMENT);
  t.match(bad.error?.details, new RegExp(`${r.socketPath}: not an ExportTraceServiceRequest`));
  t.match(r.stats, { exports: 2, invalid: 1, refused: 3 });
});

t.test('a handler that throws refuses the whole export, named; stop removes the socket and a start after a crash takes over a stale one', async (t) => {
  const r = await receiver(t, () => { throw new Error('the agent is stopping'); });
  const envoy = new EnvoyTracerStandIn(r.socketPath, { batch: true });
  envoy.request({ caller: '198.18.0.2', listener: '198.18.255.254:20000', service: 'shop/web:80', status: 200, attempts: [] });
  await envoy.flush();
  await envoy.shutdown();
  t.equal(r.stats.refused, 1);
  await r.stop();
  t.notOk(existsSync(r.socketPath), 'the socket is gone');
  const again = new OtlpGrpcReceiver({ socketPath: r.socketPath, onSpans: () => [] });
  const { writeFileSync } = await import('node:fs');
  writeFileSync(r.socketPath, ''); // left by a crashed agent
  await again.start();
  t.teardown(() => again.stop());
  t.ok((await rawExport(r.socketPath, Buffer.alloc(0))).response !== undefined, 'serving on it again (an empty request is a valid one)');
  t.throws(() => new OtlpGrpcReceiver({ socketPath: 'relative.sock', onSpans: () => [] }), /absolute path/);
});
