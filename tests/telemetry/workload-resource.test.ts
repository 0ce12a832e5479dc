import t from 'tap';
import { context, trace, TraceFlags } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { ExportQueue } from '../../telemetry/export-queue.js';
import { parentBasedSampler, serviceNameOf, workloadResource } from '../../telemetry/workload-resource.js';

t.test('service.name: app.kubernetes.io/name, app, the owner (a ReplicaSet → its Deployment), else the pod', async (t) => {
  t.equal(serviceNameOf({ 'app.kubernetes.io/name': 'web', app: 'x' }, 'p'), 'web');
  t.equal(serviceNameOf({ app: 'cart' }, 'p'), 'cart');
  t.equal(serviceNameOf({ 'pod-template-hash': '7d9f' }, 'p', { kind: 'ReplicaSet', name: 'loadgen-7d9f' }), 'loadgen');
  t.equal(serviceNameOf({}, 'p', { kind: 'StatefulSet', name: 'db' }), 'db');
  t.equal(serviceNameOf({}, 'p', { kind: 'ReplicaSet', name: 'rs-no-hash' }), 'rs-no-hash');
  t.equal(serviceNameOf({}, 'lonely'), 'lonely');
});

t.test('a workload\'s resource names its service, namespace, pod and node', async (t) => {
  t.same(workloadResource({ namespace: 'a', pod: 'p1', serviceName: 'web' }, 'n1').attributes,
    { 'service.name': 'web', 'service.namespace': 'a', 'k8s.namespace.name': 'a', 'k8s.pod.name': 'p1', 'k8s.node.name': 'n1' });
});

t.test('sampling: parent-based, new traces by the ratio; unsampled spans never reach the exporter through the queue', async (t) => {
  const mem = new InMemorySpanExporter();
  const q = new ExportQueue(mem, { scheduledDelayMs: 0 });
  const tracer = (ratio: number) => new BasicTracerProvider({ sampler: parentBasedSampler(ratio), spanProcessors: [q] }).getTracer('s');
  const off = tracer(0);
  const a = off.startSpan('a');
  t.notOk(a.isRecording(), 'ratio 0: a new trace is not recorded');
  a.end();
  const sampledParent = trace.setSpanContext(context.active(), { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, isRemote: true });
  const b = off.startSpan('b', {}, sampledParent);
  t.equal(b.spanContext().traceFlags, TraceFlags.SAMPLED, 'a sampled caller stays sampled');
  b.end();
  const on = tracer(1);
  const unsampledParent = trace.setSpanContext(context.active(), { traceId: '1af7651916cd43dd8448eb211c80319c', spanId: 'c7ad6b7169203331', traceFlags: TraceFlags.NONE, isRemote: true });
  const c = on.startSpan('c', {}, unsampledParent);
  t.equal(c.spanContext().traceFlags, TraceFlags.NONE, 'an unsampled caller stays unsampled, even at ratio 1');
  t.notOk(c.isRecording());
  c.end();
  on.startSpan('d').end();
  await q.forceFlush();
  t.same(mem.getFinishedSpans().map((x) => x.name), ['b', 'd'], 'only the sampled spans were exported');
});
