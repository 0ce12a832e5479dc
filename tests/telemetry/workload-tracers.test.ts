import t from 'tap';
import { context, trace, TraceFlags } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ExportQueue } from '../../telemetry/export-queue.js';
import { WorkloadTracers, serviceNameOf } from '../../telemetry/workload-tracers.js';

t.test('service.name: app.kubernetes.io/name, app, the owner (a ReplicaSet → its Deployment), else the pod', async (t) => {
  t.equal(serviceNameOf({ 'app.kubernetes.io/name': 'web', app: 'x' }, 'p'), 'web');
  t.equal(serviceNameOf({ app: 'cart' }, 'p'), 'cart');
  t.equal(serviceNameOf({ 'pod-template-hash': '7d9f' }, 'p', { kind: 'ReplicaSet', name: 'loadgen-7d9f' }), 'loadgen');
  t.equal(serviceNameOf({}, 'p', { kind: 'StatefulSet', name: 'db' }), 'db');
  t.equal(serviceNameOf({}, 'p', { kind: 'ReplicaSet', name: 'rs-no-hash' }), 'rs-no-hash');
  t.equal(serviceNameOf({}, 'lonely'), 'lonely');
});

t.test('one resource per workload, one processor for all', async (t) => {
  const mem = new InMemorySpanExporter();
  const tr = new WorkloadTracers({ processor: new SimpleSpanProcessor(mem), node: 'n1', scope: 's', fallback: { serviceName: 'proxy' } });
  tr.tracer({ namespace: 'a', pod: 'p1', serviceName: 'web' }).startSpan('x').end();
  tr.tracer({ namespace: 'b', pod: 'p2', serviceName: 'db' }).startSpan('y').end();
  tr.tracer(undefined).startSpan('z').end();
  t.same(mem.getFinishedSpans().map((s) => s.resource.attributes), [
    { 'service.name': 'web', 'service.namespace': 'a', 'k8s.namespace.name': 'a', 'k8s.pod.name': 'p1', 'k8s.node.name': 'n1' },
    { 'service.name': 'db', 'service.namespace': 'b', 'k8s.namespace.name': 'b', 'k8s.pod.name': 'p2', 'k8s.node.name': 'n1' },
    { 'service.name': 'proxy', 'k8s.node.name': 'n1' },
  ]);
  t.equal(tr.size, 2);
  tr.retain(new Set(['a/p1']));
  t.equal(tr.size, 1, 'workloads gone are forgotten');
});

t.test('sampling: parent-based; with recordUnsampled the unsampled spans still reach the processor, marked unsampled', async (t) => {
  const mem = new InMemorySpanExporter();
  const q = new ExportQueue(mem, { includeUnsampled: true, scheduledDelayMs: 0 });
  const off = new WorkloadTracers({ processor: new SimpleSpanProcessor(mem), node: 'n', scope: 's', fallback: { serviceName: 'f' }, sampleRatio: 0 }).tracer(undefined);
  t.notOk(off.startSpan('a').isRecording(), 'ratio 0: a new trace is not recorded');
  const sampledParent = trace.setSpanContext(context.active(), { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, isRemote: true });
  t.equal(off.startSpan('b', {}, sampledParent).spanContext().traceFlags, TraceFlags.SAMPLED, 'a sampled caller stays sampled');
  const rec = new WorkloadTracers({ processor: q, node: 'n', scope: 's', fallback: { serviceName: 'f' }, sampleRatio: 0, recordUnsampled: true }).tracer(undefined);
  const s = rec.startSpan('c');
  t.ok(s.isRecording(), 'recorded');
  t.equal(s.spanContext().traceFlags, TraceFlags.NONE, 'but not sampled: the decision travels in traceparent');
  s.end();
  const unsampledParent = trace.setSpanContext(context.active(), { traceId: '1af7651916cd43dd8448eb211c80319c', spanId: 'c7ad6b7169203331', traceFlags: TraceFlags.NONE, isRemote: true });
  const child = rec.startSpan('d', {}, unsampledParent);
  t.equal(child.spanContext().traceFlags, TraceFlags.NONE, 'an unsampled caller stays unsampled');
  child.end();
  await q.forceFlush();
  t.same(mem.getFinishedSpans().map((x) => x.name).filter((n) => n === 'c' || n === 'd'), ['c', 'd'], 'both reached the exporter through the queue');
});
