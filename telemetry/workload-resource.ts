/**
 * Who a span belongs to: one resource per workload, so each span names the
 * pod it belongs to — as if every pod had its own proxy — and the sampler
 * every tracer here shares (parent-based, a ratio for new traces).
 */
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace-base';

/** Who a span belongs to. */
export interface WorkloadIdentity {
  namespace: string;
  pod: string;
  /** the pod's app.kubernetes.io/name or app label, else its owner's name */
  serviceName: string;
}

/** service.name for a pod: its app.kubernetes.io/name or app label, else its owner (a ReplicaSet's Deployment), else the pod. */
export function serviceNameOf(labels: Readonly<Record<string, string>>, podName: string, owner?: { kind: string; name: string }): string {
  const app = labels['app.kubernetes.io/name'] ?? labels.app;
  if (app) return app;
  if (owner) {
    const hash = labels['pod-template-hash'];
    if (owner.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) return owner.name.slice(0, -hash.length - 1);
    return owner.name;
  }
  return podName;
}

/** The resource of a workload's spans. */
export function workloadResource(w: WorkloadIdentity, node: string): Resource {
  return resourceFromAttributes({
    'service.name': w.serviceName,
    'service.namespace': w.namespace,
    'k8s.namespace.name': w.namespace,
    'k8s.pod.name': w.pod,
    'k8s.node.name': node,
  });
}

export function parentBasedSampler(ratio: number): Sampler {
  return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
}
