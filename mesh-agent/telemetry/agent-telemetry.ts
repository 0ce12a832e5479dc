/**
 * The agent's telemetry, put together: one export queue and exporter for the
 * node (OTLP, or the OTLP/JSON lines file); the socket the node proxy reports
 * every request to (metrics, flows, and the sampled requests' spans, written
 * here off the proxy's hot path); the kernel's connection spans; the agent's
 * own spans (service sockmesh-agent); flow records for metrics and `observe`.
 *
 * Nothing here blocks the datapath, the reconciler or xDS: spans are queued
 * (or dropped and counted) and exported in the background.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { dirname } from 'node:path';
import { context as otelContext, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BasicTracerProvider, SamplingDecision, type ReadableSpan, type Sampler, type Span, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ExportQueue } from '../../telemetry/export-queue.js';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { OtlpFileExporter } from '../../telemetry/otlp-file-exporter.js';
import { attributes, groupHead, RequestJsonWriter } from '../../telemetry/otlp-json-write.js';
import { requestSpans, type TracedRequest } from '../../telemetry/request-spans.js';
import { writeRequestSpans } from '../../telemetry/request-spans-json.js';
import { decodeRecords, type ReceivedRecord } from '../../mesh-proxy/agent-channel.js';
import { createSpanExporter, describeExport } from '../../telemetry/span-exporter.js';
import type { TelemetryOptions } from '../../telemetry/telemetry-options.js';
import { parentBasedSampler, workloadResource, type WorkloadIdentity } from '../../telemetry/workload-resource.js';
import type { MetricFamily } from '../admin/prometheus.js';
import { FlowMetrics } from './flow-metrics.js';
import { EnvoyAccessLogReceiver } from './envoy-access-log.js';
import { ENVOY_SPAN_ATTRIBUTES, EnvoySpanJoiner } from './envoy-spans.js';
import { FlowTracker, type FlowRecord, type KernelFlowEvent } from './flow-tracker.js';
import { OtlpGrpcReceiver } from '../../telemetry/otlp-grpc-receiver.js';
import type { OtlpSpan } from '../../telemetry/otlp-trace-decoder.js';
import type { PolicyEventRecord } from '../datapath/layout.js';
import { type PolicyEventContext, policyEventRecords } from './policy-events.js';
import { SecurityDetector, describeSecurityEvent } from './security-events.js';
import { keepTrace, randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';

export const DEFAULT_RELAY_SOCKET = '/run/sockmesh/otlp.sock';
/** the node proxy's request spans: their instrumentation scope */
const PROXY_SCOPE = { name: 'sockmesh.node-proxy' };
const KERNEL_POLICY_SCOPE = { name: 'sockmesh.kernel.policy' };
/** bytes of request spans waiting for the trace file at most (more are dropped, counted) */
const FORWARD_MAX_PENDING_BYTES = 16 * 1024 * 1024;

export interface AgentTelemetryOptions {
  telemetry: TelemetryOptions;
  /** k8s.node.name */
  node: string;
  /** where the node proxy reports its requests (unix socket); default /run/sockmesh/otlp.sock */
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
  /** how long a closed connection waits for its peer and late request spans; default 1000 (2000 with envoySpansSocket) */
  flowLingerMs?: number;
  /**
   * called before each batch of the node proxy's records is linked: the
   * agent drains the kernel's flow events there, so a connection opened
   * since the last poll is known to the requests that rode it
   */
  beforeRequests?: () => void;
  /**
   * the node proxy is Envoy: its tracer exports its spans over OTLP/gRPC to
   * this unix socket (its bootstrap's sockmesh-otlp cluster), where the
   * agent reads them back into request records (envoy-spans.ts) and treats
   * them as mesh-proxy's; default none (mesh-proxy reports on relaySocket)
   */
  envoySpansSocket?: string;
  /**
   * the node proxy is Envoy: its access log streams every request here
   * (gRPC, its bootstrap's sockmesh-als cluster), read into the flows and
   * metrics; Envoy's spans then make spans and links only. Default none.
   */
  envoyAccessLogSocket?: string;
  /** a route's template (http.route) by its name, for Envoy's access log entries; default none */
  routeTemplateOf?: (routeName: string) => string | undefined;
}

/** Whether spans are made, and the ratio of new traces kept: the start-up options, changed at runtime by setTracing. */
export interface TracingState {
  enabled: boolean;
  /** 0..1 */
  sampleRatio: number;
}

export interface FlowFilter {
  namespace?: string;
  pod?: string;
  service?: string;
  type?: 'l4' | 'l7' | 'security';
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
  /** scans, repeated denials and spoofing, from the kernel's policy events */
  readonly security = new SecurityDetector();
  readonly relaySocket: string;
  readonly #o: AgentTelemetryOptions;
  readonly #resources = new Map<string, Resource>();
  /** the OTLP/JSON group heads of workloads' resources (the trace file's request spans), by the agent's workload object (a changed workload is a new object) */
  readonly #heads = new WeakMap<WorkloadIdentity, string>();
  #nodeHead: string | undefined;
  #provider: BasicTracerProvider | undefined;
  #sdk: NodeSDK | undefined;
  #tracer: Tracer | undefined;
  #server: Server | undefined;
  readonly #recent: FlowRecord[] = [];
  readonly #subscribers = new Set<(f: FlowRecord) => void>();
  #relay = { requests: 0, spans: 0, rejected: 0, linked: 0 };
  /** the node proxy's request spans written to the trace file */
  readonly #forwarded = { exported: 0, dropped: 0, failed: 0, pendingBytes: 0 };
  /** the trace file, when it is the target */
  readonly #file: OtlpFileExporter | undefined;
  /** the trace file's request spans, batch after batch (one writer, emptied by take()); undefined when the exporter is not the file */
  readonly #line: RequestJsonWriter | undefined;
  /** the span of the agent's work under way (reconcile), so the xDS push it triggers is its child */
  #current: Context = ROOT_CONTEXT;
  /** tracing now (the options at start, then setTracing) */
  #tracing: TracingState;
  #sampler: Sampler;
  /** the Envoy node proxy's spans: their receiver, and the requests read from them */
  readonly #envoy: { receiver: OtlpGrpcReceiver; joiner: EnvoySpanJoiner; timer?: NodeJS.Timeout } | undefined;
  /** the Envoy node proxy's access log: every request's flow (then its spans make no flows) */
  readonly #envoyLog: EnvoyAccessLogReceiver | undefined;

  constructor(opts: AgentTelemetryOptions) {
    this.#o = opts;
    this.options = opts.telemetry;
    this.relaySocket = opts.relaySocket ?? DEFAULT_RELAY_SOCKET;
    const t = opts.telemetry;
    this.#tracing = { enabled: t.enabled, sampleRatio: t.sampleRatio };
    this.#sampler = parentBasedSampler(t.sampleRatio);
    const exporter = createSpanExporter(t);
    this.#file = exporter instanceof OtlpFileExporter ? exporter : undefined;
    this.#line = t.target === 'file' && this.#file ? new RequestJsonWriter() : undefined;
    this.queue = new ExportQueue(exporter, {
      maxQueueSize: t.maxQueueSize, maxExportBatchSize: t.maxExportBatchSize, scheduledDelayMs: t.scheduledDelayMs,
      exportTimeoutMs: t.timeoutMs + 2000, shutdownTimeoutMs: t.shutdownTimeoutMs,
    });
    this.flows = new FlowTracker({
      workloadOf: opts.workloadOf, serviceOf: opts.serviceOf, resourceOf: (w) => this.resourceOf(w),
      emitSpan: (s) => { if (this.#tracing.enabled) this.queue.push(s); },
      emitFlow: (f) => this.#flow(f),
      toEpochNs: opts.toEpochNs ?? monoToEpoch(),
      sampleRatio: t.enabled ? t.sampleRatio : 0,
      // Envoy's workers export their spans each on its own second: a closed connection waits two for its requests
      ...(opts.flowLingerMs !== undefined ? { lingerMs: opts.flowLingerMs } : opts.envoySpansSocket !== undefined && { lingerMs: 2000 }),
      // Envoy names a request's caller by its IP alone
      linkByCallerIp: opts.envoySpansSocket !== undefined,
    });
    this.#envoy = opts.envoySpansSocket === undefined ? undefined : {
      receiver: new OtlpGrpcReceiver({ socketPath: opts.envoySpansSocket, attributes: ENVOY_SPAN_ATTRIBUTES, onSpans: (spans) => this.#envoySpans(spans) }),
      joiner: new EnvoySpanJoiner(),
    };
    this.#envoyLog = opts.envoyAccessLogSocket === undefined ? undefined : new EnvoyAccessLogReceiver({
      socketPath: opts.envoyAccessLogSocket, routeTemplateOf: opts.routeTemplateOf ?? (() => undefined),
      onRecords: (records) => {
        for (const r of records) {
          this.#relay.requests++;
          this.#l7Flow(r);
        }
      },
    });
  }

  /** Opens the trace file's path again after what was written so far (it was moved from outside); nothing without a trace file. */
  async reopenTraceFile(): Promise<void> {
    await this.#file?.reopen();
  }

  /** Tracing now: on or off, and the ratio of new traces kept. */
  get tracing(): TracingState {
    return { ...this.#tracing };
  }

  /**
   * Changes tracing at runtime: the agent's own spans, the kernel's connection
   * spans (connections opened from now on) and the request spans written
   * here. The node proxy's part is the agent's (Agent.setTracing pushes it
   * the listeners' new tracing over xDS). Unset fields keep their value.
   */
  setTracing(next: Partial<TracingState>): TracingState {
    if (next.sampleRatio !== undefined && !(next.sampleRatio >= 0 && next.sampleRatio <= 1)) throw new RangeError(`sample ratio ${next.sampleRatio}: must be a number from 0 to 1`);
    const t = { ...this.#tracing, ...next };
    if (t.enabled === this.#tracing.enabled && t.sampleRatio === this.#tracing.sampleRatio) return this.tracing;
    if (t.sampleRatio !== this.#tracing.sampleRatio) this.#sampler = parentBasedSampler(t.sampleRatio);
    this.#tracing = t;
    this.flows.setSampleRatio(t.enabled ? t.sampleRatio : 0);
    return this.tracing;
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
    const resource = resourceFromAttributes({ 'service.name': 'sockmesh-agent', 'service.namespace': 'sockmesh', 'k8s.node.name': this.#o.node });
    // the agent's own spans follow tracing as it is now (setTracing): the sampler and the processor ask each time
    const queue = this.queue;
    const live = (): TracingState => this.#tracing;
    const processor: SpanProcessor = {
      onStart(span: Span, parent: Context) { if (live().enabled) queue.onStart(span, parent); },
      onEnd(span: ReadableSpan) { if (live().enabled) queue.onEnd(span); },
      forceFlush: () => queue.forceFlush(),
      shutdown: () => queue.shutdown(),
    };
    const sampler: Sampler = {
      // off: no span is even recorded
      shouldSample: (...args) => (this.#tracing.enabled ? this.#sampler.shouldSample(...args) : { decision: SamplingDecision.NOT_RECORD }),
      toString: () => `sockmesh-runtime{${this.#sampler.toString()}}`,
    };
    if (this.#o.registerGlobal) {
      this.#sdk = new NodeSDK({
        resource, autoDetectResources: false, spanProcessors: [processor], sampler,
        textMapPropagator: new W3CTraceContextPropagator(), instrumentations: [], metricReaders: [], logRecordProcessors: [],
      });
      this.#sdk.start();
      this.#tracer = trace.getTracer('sockmesh-agent');
    } else {
      propagation.setGlobalPropagator(new W3CTraceContextPropagator());
      this.#provider = new BasicTracerProvider({ resource, sampler, spanProcessors: [processor] });
      this.#tracer = this.#provider.getTracer('sockmesh-agent');
    }
    await this.#startRelay();
    await this.#envoyLog?.start();
    if (this.#envoy) {
      await this.#envoy.receiver.start();
      // attempts whose request never comes expire while Envoy is quiet too
      const e = this.#envoy;
      e.timer = setInterval(() => e.joiner.expire(performance.now()), 5000);
      e.timer.unref();
    }
  }

  async #startRelay(): Promise<void> {
    const path = this.relaySocket;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) unlinkSync(path);
    const server = createServer((req, res) => {
      const route = req.method === 'POST' ? req.url : undefined;
      if (route !== '/v1/requests') {
        res.statusCode = 404;
        res.end();
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const answer = (status: number, error?: string) => {
          res.statusCode = status;
          res.setHeader('content-type', 'application/json');
          res.end(error ? JSON.stringify({ error: `${path}: ${error}` }) : '{}');
        };
        try {
          this.#requests(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
          answer(200);
        } catch (err) {
          this.#relay.rejected++;
          answer(400, (err as Error).message);
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => { server.off('error', reject); resolve(); });
    });
    chmodSync(path, 0o666); // the node proxy may run as another user
    this.#server = server;
  }

  /** The OTLP/JSON group head of the spans of the workload at an address. */
  readonly #headOfAddress = (ip: string): string => this.#headOf(this.#o.workloadOf(ip));

  /** The OTLP/JSON group head of a workload's spans (its resource, the proxy's scope). */
  #headOf(w: WorkloadIdentity | undefined): string {
    if (!w) return this.#nodeHead ??= groupHead(attributes(this.resourceOf(undefined).attributes), PROXY_SCOPE);
    let h = this.#heads.get(w);
    if (h === undefined) this.#heads.set(w, h = groupHead(attributes(this.resourceOf(w).attributes), PROXY_SCOPE));
    return h;
  }

  /**
   * The node proxy's records of finished requests (every one, sampled or
   * not): flows for metrics and observe; a sampled request's spans (its
   * caller's CLIENT span, linked to the kernel connection it rode, and its
   * backends' SERVER spans), written to the trace file directly or queued
   * for the exporter.
   */
  #requests(body: Buffer): void {
    this.#ingest(() => decodeRecords(JSON.parse(body.toString('utf8'))));
  }

  /**
   * The Envoy node proxy's spans (one OTLP export): the requests whose spans
   * have all come are handled as mesh-proxy's records; attempts wait for
   * their request. The reasons of the spans refused.
   */
  #envoySpans(spans: OtlpSpan[]): string[] {
    const joiner = this.#envoy!.joiner;
    let refused: string[] = [];
    this.#ingest(() => {
      const r = joiner.add(spans, performance.now());
      refused = r.refused;
      return r.records;
    }, this.#envoyLog === undefined);
    return refused;
  }

  /**
   * A batch of request records (read by read, which throws to refuse the
   * batch): linked, their spans made, and their flows unless flows is false
   * (an Envoy whose access log gives every request's).
   */
  #ingest(read: () => ReceivedRecord[], flows = true): void {
    const line = this.#line;
    let count = 0;
    try {
      const records = read();
      this.#o.beforeRequests?.();
      count = this.#each(records, line, flows);
    } catch (err) {
      line?.take(); // the spans written before the failure are dropped with the refused batch
      throw err;
    } finally {
      this.flows.requestsSeen(); // these records will not come again: closed connections need not wait for them
    }
    this.#relay.spans += count;
    if (line && line.count > 0) {
      const n = line.count;
      this.#forward(line.take(), n);
    }
  }

  /** The records' flows and spans (the spans written into line, or queued for the exporter); the spans made. */
  #each(records: ReceivedRecord[], line: RequestJsonWriter | undefined, flows: boolean): number {
    let count = 0;
    for (const r of records) {
      if (flows) this.#relay.requests++;
      if (r.sampled && r.traceId) {
        // a caller known by its IP alone (Envoy's spans): the trace's times pick the connection
        const link = this.flows.linkRequest({ ip: r.caller, port: r.callerPort }, { ip: r.local, port: r.localPort }, { traceId: r.traceId, spanId: r.spanId }, r.trace);
        if (link) this.#relay.linked++;
        if (r.trace && this.#tracing.enabled) {
          const traced = r as TracedRequest; // it has its trace (not copied to say so)
          if (line) {
            // written straight into the line, the same bytes as the spans' (no span objects)
            writeRequestSpans(line, traced, link, this.#headOfAddress);
            count += 1 + r.trace.attempts.length;
          } else {
            for (const o of requestSpans(traced, link)) {
              this.queue.push(finishedSpan({ ...o.span, resource: this.resourceOf(this.#o.workloadOf(o.owner)), scope: PROXY_SCOPE }));
              count++;
            }
          }
        }
      }
      if (flows) this.#l7Flow(r);
    }
    return count;
  }

  /** A request's flow (metrics, observe). */
  #l7Flow(r: ReceivedRecord): void {
    const up = r.upstream; // "ip:port" of the last backend tried
    const src = this.#o.workloadOf(r.caller);
    const dst = up ? this.#o.workloadOf(up.slice(0, up.lastIndexOf(':'))) : undefined;
    this.#flow({
      type: 'l7', time: new Date(r.endMs).toISOString(),
      source: { address: r.callerPort !== 0 ? `${r.caller}:${r.callerPort}` : r.caller, ...(src && { namespace: src.namespace, pod: src.pod, service: src.serviceName }) },
      destination: { address: up || '', ...(dst && { namespace: dst.namespace, pod: dst.pod, service: dst.serviceName }) },
      service: r.host.replace(/:\d+$/, ''),
      verdict: r.deniedBy !== undefined ? 'denied' : r.status >= 500 || r.status === 0 ? 'error' : 'forwarded', ...(r.deniedBy !== undefined && { policy: r.deniedBy }), path: 'proxy', durationMs: r.durationMs,
      method: r.method, urlPath: r.path, ...(r.route !== undefined && { route: r.route }), ...(r.status > 0 && { status: r.status }),
      ...(r.traceId && { traceId: r.traceId, spanId: r.spanId }),
    });
  }

  /** Appends a batch to the trace file in order; bounded by bytes waiting (drops counted). */
  #forward(body: Buffer[], count: number): void {
    const f = this.#forwarded;
    const bytes = body.reduce((a, b) => a + b.length, 0);
    if (f.pendingBytes + bytes > FORWARD_MAX_PENDING_BYTES) {
      f.dropped += count;
      return;
    }
    f.pendingBytes += bytes;
    // the file exporter keeps the order; no chain here (a chain per batch would hold every batch until the last)
    this.#file!.appendSerialized(body).then(
      () => { f.exported += count; },
      () => { f.failed += count; },
    ).finally(() => { f.pendingBytes -= bytes; });
  }

  /**
   * The kernel's policy events: each a denied flow (observe, metrics) with
   * the evaluator's reason, a span on the calling workload's resource (an
   * error span named sockmesh.policy.denied, so a backend shows who was
   * refused what), and input to the security detectors, whose findings are
   * flows of type security.
   */
  onPolicyEvents(events: readonly PolicyEventRecord[], ctx: PolicyEventContext): void {
    for (const ev of events) {
      const { flow, event } = policyEventRecords(ev, ctx);
      this.#flow(flow);
      if (this.#tracing.enabled && keepTrace(randomTraceId(), this.#tracing.sampleRatio)) this.#denialSpan(ev, flow, ctx);
      for (const s of this.security.observe(event)) {
        this.#flow({
          type: 'security', time: new Date(event.atMs).toISOString(), securityType: s.type, reason: describeSecurityEvent(s),
          source: { address: 'source' in s ? s.source.ip : (s.sender ?? '?') }, destination: { address: 'destination' in s ? `${s.destination.ip}:${s.destination.port}` : '' },
          verdict: 'denied', path: 'kernel', durationMs: 0,
        });
      }
    }
  }

  #denialSpan(ev: PolicyEventRecord, flow: FlowRecord, ctx: PolicyEventContext): void {
    const owner = flow.source.pod !== undefined ? ctx.workloadOf(ev.srcIp!) : flow.destination.pod !== undefined ? ctx.workloadOf(ev.dstIp) : undefined;
    const ns = BigInt(Math.round(ctx.toEpochMs(ev.tsNs) * 1e6));
    this.queue.push(finishedSpan({
      name: 'sockmesh.policy.denied', kind: SpanKind.INTERNAL, traceId: randomTraceId(), spanId: randomSpanId(), startNs: ns, endNs: ns,
      attributes: {
        'sockmesh.policy': flow.policy ?? 'unknown', 'sockmesh.policy.reason': flow.reason ?? '', 'sockmesh.policy.layer': 'kernel-l4',
        'sockmesh.policy.action': flow.kernelEvent ?? 'refused', 'sockmesh.policy.direction': ev.direction,
        'network.transport': ev.proto === 17 ? 'udp' : 'tcp', 'server.address': ev.dstIp, 'server.port': ev.dstPort,
        ...(ev.srcIp !== undefined && { 'client.address': ev.srcIp }), ...(ev.srcPort && { 'client.port': ev.srcPort }),
      },
      status: { code: SpanStatusCode.ERROR, message: flow.reason ?? 'denied by policy' },
      resource: this.resourceOf(owner), scope: KERNEL_POLICY_SCOPE,
    }));
  }

  /** Kernel events from the datapath's ring buffer. */
  onFlowEvents(events: readonly KernelFlowEvent[]): void {
    this.flows.onEvents(events);
  }

  #flow(f: FlowRecord): void {
    this.metrics.record(f);
    // a ring: the oldest half goes at once, not one element per flow
    this.#recent.push(f);
    const keep = this.#o.recentFlows ?? 1000;
    if (this.#recent.length > 2 * keep) this.#recent.splice(0, this.#recent.length - keep);
    for (const s of this.#subscribers) s(f);
  }

  /** The flows kept, newest last, matching q. */
  recentFlows(q: FlowFilter = {}, limit = 20): FlowRecord[] {
    return this.#recent.slice(-(this.#o.recentFlows ?? 1000)).filter((f) => flowMatches(f, q)).slice(-limit);
  }

  /** Calls fn for every new flow matching q until the returned function is called. */
  subscribe(q: FlowFilter, fn: (f: FlowRecord) => void): () => void {
    const sub = (f: FlowRecord) => { if (flowMatches(f, q)) fn(f); };
    this.#subscribers.add(sub);
    return () => { this.#subscribers.delete(sub); };
  }

  status(): Record<string, unknown> {
    return {
      export: describeExport({ ...this.options, enabled: this.#tracing.enabled }), tracing: this.#tracing.enabled, sampleRatio: this.#tracing.sampleRatio,
      queue: this.queue.stats(), relay: { socket: this.relaySocket, ...this.#relay, forwarded: { ...this.#forwarded } }, flows: { ...this.flows.stats },
      ...(this.#envoy && { envoySpans: this.envoySpanStats() }),
      ...(this.#envoyLog && { envoyAccessLog: { socket: this.#envoyLog.socketPath, ...this.#envoyLog.stats, ...(this.#envoyLog.lastRefusal && { lastRefusal: this.#envoyLog.lastRefusal }) } }),
    };
  }

  /** The Envoy node proxy's spans: exports and spans received, requests and attempts read, attempts waiting, orphaned, refused; undefined without Envoy. */
  envoySpanStats(): Record<string, number | string> | undefined {
    const e = this.#envoy;
    if (!e) return undefined;
    const r = e.receiver.stats;
    return {
      socket: e.receiver.socketPath, exports: r.exports, spans: r.spans, invalidExports: r.invalid,
      // refused: every span refused, by the decoder (no proper ids) or here
      ...e.joiner.stats, refused: r.refused, waiting: e.joiner.waiting,
    };
  }

  metricFamilies(): MetricFamily[] {
    const q = this.queue.stats();
    const f = this.#forwarded;
    return [
      ...this.metrics.families(),
      { name: 'sockmesh_spans_exported_total', help: 'Spans delivered (the exporter\'s, and the node proxy\'s appended to the trace file).', type: 'counter', samples: [{ value: q.exported + f.exported }] },
      { name: 'sockmesh_spans_dropped_total', help: 'Spans lost, by reason: the queue was full, the export failed (after its retries), or they were still queued at shutdown.', type: 'counter', samples: [
        { labels: { reason: 'queue_full' }, value: q.droppedQueueFull + f.dropped }, { labels: { reason: 'export_failed' }, value: q.failed + f.failed }, { labels: { reason: 'shutdown' }, value: q.droppedAtShutdown },
      ] },
      { name: 'sockmesh_span_queue_size', help: 'Spans waiting for export.', type: 'gauge', samples: [{ value: q.queued }] },
      { name: 'sockmesh_span_queue_capacity', help: 'The export queue bound.', type: 'gauge', samples: [{ value: q.maxQueueSize }] },
      { name: 'sockmesh_relay_spans_total', help: 'Spans the node proxy handed to the agent.', type: 'counter', samples: [{ value: this.#relay.spans }] },
      { name: 'sockmesh_relay_requests_total', help: 'Requests the node proxy reported (sampled or not).', type: 'counter', samples: [{ value: this.#relay.requests }] },
      ...(this.#envoy ? [{
        name: 'sockmesh_envoy_spans_total', help: 'The Envoy node proxy\'s spans, by what became of them: read (a request\'s or an attempt\'s), orphaned (an attempt whose request never came), refused.', type: 'counter' as const,
        samples: [
          { labels: { result: 'read' }, value: this.#envoy.joiner.stats.requests + this.#envoy.joiner.stats.attempts },
          { labels: { result: 'orphaned' }, value: this.#envoy.joiner.stats.orphaned },
          { labels: { result: 'refused' }, value: this.#envoy.receiver.stats.refused },
        ],
      }] : []),
      ...(this.#envoyLog ? [{
        name: 'sockmesh_envoy_access_log_entries_total', help: 'The Envoy node proxy\'s access log entries (one per request), read or refused.', type: 'counter' as const,
        samples: [
          { labels: { result: 'read' }, value: this.#envoyLog.stats.entries - this.#envoyLog.stats.refused },
          { labels: { result: 'refused' }, value: this.#envoyLog.stats.refused },
        ],
      }] : []),
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
    await this.#envoyLog?.stop();
    if (this.#envoy) {
      clearInterval(this.#envoy.timer);
      await this.#envoy.receiver.stop();
      this.#envoy.joiner.drain(); // attempts still waiting for their request: counted orphaned
    }
    this.flows.flush();
    this.#subscribers.clear();
    await this.#file?.forceFlush();
    if (this.#sdk) await this.#sdk.shutdown();
    else if (this.#provider) await this.#provider.shutdown();
    else await this.queue.shutdown();
  }
}
