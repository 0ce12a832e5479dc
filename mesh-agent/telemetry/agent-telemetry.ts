/**
 * The agent's telemetry, put together: one export queue and exporter for the
 * node (OTLP, or the OTLP/JSON lines file); the span relay the node proxy
 * sends its request spans to; the kernel's connection spans; the agent's own
 * spans (service sockmesh-agent); flow records for metrics and `observe`.
 *
 * Nothing here blocks the datapath, the reconciler or xDS: spans are queued
 * (or dropped and counted) and exported in the background.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname } from 'node:path';
import { context as otelContext, propagation, ROOT_CONTEXT, trace, type Context, type Link, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BasicTracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { ExportQueue } from '../../telemetry/export-queue.js';
import { decodeOtlpJson } from '../../telemetry/otlp-json-relay.js';
import { createSpanExporter, describeExport } from '../../telemetry/span-exporter.js';
import type { TelemetryOptions } from '../../telemetry/telemetry-options.js';
import { parentBasedSampler, workloadResource, type WorkloadIdentity } from '../../telemetry/workload-tracers.js';
import type { MetricFamily } from '../admin/prometheus.js';
import { FlowMetrics } from './flow-metrics.js';
import { FlowTracker, type FlowRecord, type KernelFlowEvent } from './flow-tracker.js';

export const DEFAULT_RELAY_SOCKET = '/run/sockmesh/otlp.sock';

export interface AgentTelemetryOptions {
  telemetry: TelemetryOptions;
  /** k8s.node.name */
  node: string;
  /** where the node proxy sends its spans (unix socket); default /run/sockmesh/otlp.sock */
  relaySocket?: string;
  workloadOf: (ip: string) => WorkloadIdentity | undefined;
  serviceOf: (ip: string, port: number) => string | undefined;
  /** kernel monotonic ns → epoch ns; default from process.hrtime */
  toEpochNs?: (mono: bigint) => bigint;
  /**
   * register the agent's tracer provider, context manager and propagator
   * globally through the OpenTelemetry Node SDK (the `run` command does);
   * default false: a private provider (tests run several agents in a process)
   */
  registerGlobal?: boolean;
  /** flow records kept for `observe` to show first; default 1000 */
  recentFlows?: number;
  /** how long a closed connection waits for its peer and late request spans; default 1000 */
  flowLingerMs?: number;
}

export interface FlowFilter {
  namespace?: string;
  pod?: string;
  service?: string;
  type?: 'l4' | 'l7';
}

export function flowMatches(f: FlowRecord, q: FlowFilter): boolean {
  if (q.type && f.type !== q.type) return false;
  const ends = [f.source, f.destination];
  if (q.namespace && !ends.some((e) => e.namespace === q.namespace)) return false;
  if (q.pod) {
    const [ns, pod] = q.pod.includes('/') ? q.pod.split('/', 2) : [undefined, q.pod];
    if (!ends.some((e) => e.pod === pod && (ns === undefined || e.namespace === ns))) return false;
  }
  if (q.service) {
    const want = q.service;
    const svcOk = f.service === want || f.service?.endsWith(`/${want}`) || ends.some((e) => e.service === want || `${e.namespace}/${e.service}` === want);
    if (!svcOk) return false;
  }
  return true;
}

function monoToEpoch(): (mono: bigint) => bigint {
  return (mono) => BigInt(Date.now()) * 1_000_000n - (process.hrtime.bigint() - mono);
}

export class AgentTelemetry {
  readonly options: TelemetryOptions;
  readonly queue: ExportQueue;
  readonly flows: FlowTracker;
  readonly metrics = new FlowMetrics();
  readonly relaySocket: string;
  readonly #o: AgentTelemetryOptions;
  readonly #resources = new Map<string, Resource>();
  readonly #decodeCache = new Map<string, Resource>();
  #provider: BasicTracerProvider | undefined;
  #sdk: NodeSDK | undefined;
  #tracer: Tracer | undefined;
  #server: Server | undefined;
  readonly #recent: FlowRecord[] = [];
  readonly #subscribers = new Set<(f: FlowRecord) => void>();
  #relay = { requests: 0, spans: 0, rejected: 0, linked: 0 };
  /** the span of the agent's work under way (reconcile), so the xDS push it triggers is its child */
  #current: Context = ROOT_CONTEXT;

  constructor(opts: AgentTelemetryOptions) {
    this.#o = opts;
    this.options = opts.telemetry;
    this.relaySocket = opts.relaySocket ?? DEFAULT_RELAY_SOCKET;
    const t = opts.telemetry;
    this.queue = new ExportQueue(createSpanExporter(t), {
      maxQueueSize: t.maxQueueSize, maxExportBatchSize: t.maxExportBatchSize, scheduledDelayMs: t.scheduledDelayMs,
      exportTimeoutMs: t.timeoutMs + 2000, shutdownTimeoutMs: t.shutdownTimeoutMs,
    });
    this.flows = new FlowTracker({
      workloadOf: opts.workloadOf, serviceOf: opts.serviceOf, resourceOf: (w) => this.resourceOf(w),
      emitSpan: (s) => { if (this.options.enabled) this.queue.push(s); },
      emitFlow: (f) => this.#flow(f),
      toEpochNs: opts.toEpochNs ?? monoToEpoch(),
      sampleRatio: t.sampleRatio,
      ...(opts.flowLingerMs !== undefined && { lingerMs: opts.flowLingerMs }),
    });
  }

  /** The resource of a workload's spans (the node's own for undefined). */
  resourceOf(w: WorkloadIdentity | undefined): Resource {
    const key = w ? `${w.namespace}/${w.pod}/${w.serviceName}` : '';
    let r = this.#resources.get(key);
    if (!r) {
      r = w ? workloadResource(w, this.#o.node) : resourceFromAttributes({ 'service.name': 'sockmesh-node', 'k8s.node.name': this.#o.node });
      if (this.#resources.size > 50_000) this.#resources.clear();
      this.#resources.set(key, r);
    }
    return r;
  }

  /** The tracer of the agent's own spans (service.name sockmesh-agent). */
  get tracer(): Tracer {
    return this.#tracer ?? trace.getTracer('sockmesh-agent');
  }

  /** The context the agent's spans started now are children of. */
  get current(): Context {
    return this.#current;
  }

  /** Runs fn with span as the agent's current span (synchronous work only). */
  within<T>(ctx: Context, fn: () => T): T {
    const prev = this.#current;
    this.#current = ctx;
    try {
      return otelContext.with(ctx, fn);
    } finally {
      this.#current = prev;
    }
  }

  async start(): Promise<void> {
    const t = this.options;
    const resource = resourceFromAttributes({ 'service.name': 'sockmesh-agent', 'service.namespace': 'sockmesh', 'k8s.node.name': this.#o.node });
    const processor = t.enabled ? this.queue : { onStart() {}, onEnd() {}, forceFlush: async () => {}, shutdown: async () => {} };
    if (this.#o.registerGlobal) {
      this.#sdk = new NodeSDK({
        resource, autoDetectResources: false, spanProcessors: [processor], sampler: parentBasedSampler(t.sampleRatio),
        textMapPropagator: new W3CTraceContextPropagator(), instrumentations: [], metricReaders: [], logRecordProcessors: [],
      });
      this.#sdk.start();
      this.#tracer = trace.getTracer('sockmesh-agent');
    } else {
      propagation.setGlobalPropagator(new W3CTraceContextPropagator());
      this.#provider = new BasicTracerProvider({ resource, sampler: parentBasedSampler(t.sampleRatio), spanProcessors: [processor] });
      this.#tracer = this.#provider.getTracer('sockmesh-agent');
    }
    await this.#startRelay();
  }

  async #startRelay(): Promise<void> {
    const path = this.relaySocket;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) unlinkSync(path);
    const server = createServer((req, res) => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.statusCode = 404;
        res.end();
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.#relay.requests++;
        let spans: ReadableSpan[];
        try {
          spans = decodeOtlpJson(JSON.parse(Buffer.concat(chunks).toString('utf8')), this.#decodeCache);
        } catch (err) {
          this.#relay.rejected++;
          res.statusCode = 400;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ error: `${path}: ${(err as Error).message}` }));
          return;
        }
        for (const s of spans) this.#relayed(s);
        res.setHeader('content-type', 'application/json');
        res.end('{}');
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => { server.off('error', reject); resolve(); });
    });
    chmodSync(path, 0o666); // the node proxy may run as another user
    this.#server = server;
  }

  /** A span from the node proxy: linked to its connection, counted, streamed, queued. */
  #relayed(s: ReadableSpan): void {
    this.#relay.spans++;
    const a = s.attributes;
    const sampled = (s.spanContext().traceFlags & 1) === 1;
    if (s.kind === 2 /* CLIENT: the caller's request */ && typeof a['client.address'] === 'string' && typeof a['network.local.address'] === 'string') {
      // every request is counted and streamed; only sampled ones are linked and exported
      const linked: Link | false | undefined = sampled && this.flows.linkRequest(
        { ip: a['client.address'], port: Number(a['client.port']) },
        { ip: a['network.local.address'], port: Number(a['network.local.port']) },
        { traceId: s.spanContext().traceId, spanId: s.spanContext().spanId },
      );
      if (linked) {
        this.#relay.linked++;
        (s.links as Link[]).push(linked);
      }
      const callerIp = a['client.address'];
      const backendIp = String(a['network.peer.address'] ?? '');
      const src = this.#o.workloadOf(callerIp);
      const dst = backendIp ? this.#o.workloadOf(backendIp) : undefined;
      const status = Number(a['http.response.status_code'] ?? 0);
      const startNs = BigInt(s.startTime[0]) * 1_000_000_000n + BigInt(s.startTime[1]);
      const durNs = BigInt(s.duration[0]) * 1_000_000_000n + BigInt(s.duration[1]);
      this.#flow({
        type: 'l7', time: new Date(Number((startNs + durNs) / 1_000_000n)).toISOString(),
        source: { address: `${callerIp}:${String(a['client.port'])}`, ...(src && { namespace: src.namespace, pod: src.pod, service: src.serviceName }) },
        destination: { address: backendIp ? `${backendIp}:${String(a['network.peer.port'])}` : '', ...(dst && { namespace: dst.namespace, pod: dst.pod, service: dst.serviceName }) },
        service: String(a['server.address'] ?? ''),
        verdict: status >= 500 || status === 0 ? 'error' : 'forwarded', path: 'proxy',
        durationMs: Math.round(Number(durNs) / 1000) / 1000,
        method: String(a['http.request.method'] ?? ''), urlPath: String(a['url.path'] ?? ''),
        ...(a['http.route'] !== undefined && { route: String(a['http.route']) }),
        ...(status > 0 && { status }),
        traceId: s.spanContext().traceId, spanId: s.spanContext().spanId,
      });
    }
    if (this.options.enabled && sampled) this.queue.push(s);
  }

  /** Kernel events from the datapath's ring buffer. */
  onFlowEvents(events: readonly KernelFlowEvent[]): void {
    this.flows.onEvents(events);
  }

  #flow(f: FlowRecord): void {
    this.metrics.record(f);
    this.#recent.push(f);
    if (this.#recent.length > (this.#o.recentFlows ?? 1000)) this.#recent.shift();
    for (const s of this.#subscribers) s(f);
  }

  /** The flows kept, newest last, matching q. */
  recentFlows(q: FlowFilter = {}, limit = 20): FlowRecord[] {
    return this.#recent.filter((f) => flowMatches(f, q)).slice(-limit);
  }

  /** Calls fn for every new flow matching q until the returned function is called. */
  subscribe(q: FlowFilter, fn: (f: FlowRecord) => void): () => void {
    const sub = (f: FlowRecord) => { if (flowMatches(f, q)) fn(f); };
    this.#subscribers.add(sub);
    return () => { this.#subscribers.delete(sub); };
  }

  status(): Record<string, unknown> {
    return {
      export: describeExport(this.options), sampleRatio: this.options.sampleRatio,
      queue: this.queue.stats(), relay: { socket: this.relaySocket, ...this.#relay }, flows: { ...this.flows.stats },
    };
  }

  metricFamilies(): MetricFamily[] {
    const q = this.queue.stats();
    return [
      ...this.metrics.families(),
      { name: 'sockmesh_spans_exported_total', help: 'Spans the exporter delivered.', type: 'counter', samples: [{ value: q.exported }] },
      { name: 'sockmesh_spans_dropped_total', help: 'Spans lost, by reason: the queue was full, the export failed (after its retries), or they were still queued at shutdown.', type: 'counter', samples: [
        { labels: { reason: 'queue_full' }, value: q.droppedQueueFull }, { labels: { reason: 'export_failed' }, value: q.failed }, { labels: { reason: 'shutdown' }, value: q.droppedAtShutdown },
      ] },
      { name: 'sockmesh_span_queue_size', help: 'Spans waiting for export.', type: 'gauge', samples: [{ value: q.queued }] },
      { name: 'sockmesh_span_queue_capacity', help: 'The export queue bound.', type: 'gauge', samples: [{ value: q.maxQueueSize }] },
      { name: 'sockmesh_relay_spans_total', help: 'Spans the node proxy handed to the agent.', type: 'counter', samples: [{ value: this.#relay.spans }] },
    ];
  }

  /** Stops the relay, reports connections still lingering, flushes the queue within its deadline. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server) {
      await new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); });
      if (existsSync(this.relaySocket)) unlinkSync(this.relaySocket);
    }
    this.flows.flush();
    this.#subscribers.clear();
    if (this.#sdk) await this.#sdk.shutdown();
    else if (this.#provider) await this.#provider.shutdown();
    else await this.queue.shutdown();
  }
}
