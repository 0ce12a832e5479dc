/**
 * One tracer provider per workload, so each span's resource names the pod
 * it belongs to — as if every pod had its own proxy. The providers share one
 * sampler (parent-based with a ratio for new traces) and one span processor
 * (one bounded queue for the process).
 */
import type { Tracer } from '@opentelemetry/api';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { BasicTracerProvider, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler, type SpanProcessor } from '@opentelemetry/sdk-trace-base';

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

export interface WorkloadTracersOptions {
  processor: SpanProcessor;
  /** the ratio of new traces sampled; default 1 */
  sampleRatio?: number;
  /** k8s.node.name */
  node: string;
  /** the instrumentation scope, e.g. "sockmesh.node-proxy" */
  scope: string;
  /** the resource of spans that belong to no known workload (e.g. the proxy itself) */
  fallback: { serviceName: string };
}

export class WorkloadTracers {
  readonly #opts: WorkloadTracersOptions;
  readonly #sampler: Sampler;
  readonly #byKey = new Map<string, { tracer: Tracer; service: string }>();
  #fallback: Tracer | undefined;

  constructor(opts: WorkloadTracersOptions) {
    this.#opts = opts;
    this.#sampler = parentBasedSampler(opts.sampleRatio ?? 1);
  }

  #provider(resource: Resource): BasicTracerProvider {
    return new BasicTracerProvider({ resource, sampler: this.#sampler, spanProcessors: [this.#opts.processor] });
  }

  /** The tracer whose spans carry w's resource (the fallback's for undefined). */
  tracer(w: WorkloadIdentity | undefined): Tracer {
    if (!w) {
      this.#fallback ??= this.#provider(resourceFromAttributes({ 'service.name': this.#opts.fallback.serviceName, 'k8s.node.name': this.#opts.node })).getTracer(this.#opts.scope);
      return this.#fallback;
    }
    const key = `${w.namespace}/${w.pod}`;
    const got = this.#byKey.get(key);
    if (got && got.service === w.serviceName) return got.tracer;
    const tracer = this.#provider(workloadResource(w, this.#opts.node)).getTracer(this.#opts.scope);
    this.#byKey.set(key, { tracer, service: w.serviceName });
    return tracer;
  }

  /** Drops the providers of workloads no longer present. */
  retain(keys: ReadonlySet<string>): void {
    for (const k of this.#byKey.keys()) if (!keys.has(k)) this.#byKey.delete(k);
  }

  get size(): number {
    return this.#byKey.size;
  }
}
