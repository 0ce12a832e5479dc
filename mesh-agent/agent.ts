/**
 * The per-node agent, composed: the kernel datapath, the cluster (a
 * manifest directory run by the local node runtime) reconciled into it, the
 * xDS control plane (snapshot cache + ADS server) the node proxy connects
 * to, and the admin API (status, config dump, metrics). Constructor
 * validates; start() does the I/O; stop() releases everything in reverse
 * order.
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { AdsServer } from '../xds/ads-server.js';
import { DUMP_KINDS, DUMP_TYPE_NAMES, configDump } from '../xds/config-dump.js';
import { PUSH_ORDER, type ResourceKind, Snapshot, type SnapshotInput } from '../xds/snapshot.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';
import { AdminServer } from './admin/admin-server.js';
import { DEFAULT_ADMIN_SOCKET } from './admin/admin-client.js';
import { type MetricFamily, PROMETHEUS_CONTENT_TYPE, renderPrometheus } from './admin/prometheus.js';
import { ClusterStore } from './cluster/cluster-store.js';
import { checkClusterOf, checkPolicy, queryFrom } from '../policies/policy-check.js';
import type { KubeConfig } from '@kubernetes/client-node';
import type { InformerState, KubeSource } from './cluster/kube-source.js';
import { type ManifestLoad, ManifestSource } from './cluster/manifest-source.js';
import { PodCgroupFinder } from './cluster/pod-cgroups.js';
import { PodVethFinder } from './cluster/pod-veth.js';
import { FoldedDenials } from './telemetry/folded-denials.js';
import type { HTTPRoute } from './cluster/model.js';
import { type L7Port, type RouteStatus, l7Resources, portName } from '../xds/l7-resources.js';
import type { RbacOutput } from '../policies/rbac-compile.js';
import { type AddressedPod, l7Authorization } from './compiler/l7-authorization.js';
import { ListenerPortAllocator } from './compiler/listener-ports.js';
import { NODE_PROXY, NodeProxy, nodeProxyChoice, type NodeProxyStatus } from './runtime/node-proxy.js';
import { ALS_CLUSTER, OTLP_CLUSTER } from '../xds/envoy-bootstrap.js';
import { routeTemplate } from '../xds/route-template.js';
import { POD_NETWORK } from './runtime/node-runtime.js';
import type { DesiredState } from './compiler/compile.js';
import { findCgroup2 } from './datapath/host-checks.js';
import { loadAllocations, loadListenerPorts, saveAllocations } from './compiler/allocation-file.js';
import type { PodView, ServiceView } from './compiler/compile.js';
import { IdentityAllocator } from './compiler/identities.js';
import { VipAllocator } from './compiler/vips.js';
import { Datapath, type DatapathOptions, type DatapathStatus } from './datapath/datapath.js';
import { STATE_DIR } from './paths.js';
import { MapReconciler } from './reconciler/map-reconciler.js';
import { type PassResult, ReconcileLoop } from './reconciler/reconcile-loop.js';
import { type EnforceResult, PolicyEnforcer, netnsOfCgroupTree } from './reconciler/policy-enforcer.js';
import { NodeRuntime } from './runtime/node-runtime.js';
import { type PodRunState, PodSupervisor, runtimeName } from './runtime/pod-supervisor.js';
import { encodeIPv4 } from './datapath/layout.js';
import { InvalidArgumentError, NotFoundError, SockmeshError } from './errors.js';
import { SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { type TelemetryOptions, telemetryOptions } from '../telemetry/telemetry-options.js';
import { serviceNameOf, type WorkloadIdentity } from '../telemetry/workload-resource.js';
import { Histogram } from './admin/prometheus.js';
import { AgentTelemetry, DEFAULT_RELAY_SOCKET, type FlowFilter, type TracingState } from './telemetry/agent-telemetry.js';
import { ADS_ACK_CHANNEL, type AdsAckEvent } from '../xds/ads-server.js';
import diagnosticsChannel from 'node:diagnostics_channel';
import { type FlowEventReader, type RingRecordReader, epochOffsetNs } from './datapath/flow-events.js';
import type { PolicyEventRecord } from './datapath/layout.js';
import type { DenialReason, PolicyEventContext } from './telemetry/policy-events.js';
import { type ConnectionQuery, type PolicyWorld, explainConnection } from '../policies/network-verdict.js';
import { parseHostPort } from './host-port.js';

/** Where the node proxy finds the agent's ADS server by default (Istio's plaintext xDS port). */
export const DEFAULT_XDS_ADDRESS = '127.0.0.1:15010';
/** The ADS server's unix socket by default (for the node proxy in the runtime's node namespace). */
export const DEFAULT_XDS_SOCKET = '/run/sockmesh/xds.sock';
/** Annotation choosing a service's load balancing at L7: "round-robin" (default) or "least-request". */
export const LB_ANNOTATION = 'sockmesh.io/lb';
/** The admin API's TCP address by default (metrics for Prometheus). */
export const DEFAULT_ADMIN_ADDRESS = '127.0.0.1:9966';

export interface AgentOptions {
  /** The kernel datapath. Default: its own defaults. */
  datapath?: DatapathOptions;
  /** Endpoints (IPv4) to enroll at start. Default: none. */
  enroll?: string[];
  /** "ip:port" the ADS server listens on. Default: 127.0.0.1:15010. */
  xdsAddress?: string;
  /** The admin API's unix socket. Default: /run/sockmesh/agent.sock. */
  adminSocket?: string;
  /** "ip:port" of the admin API over TCP; null for none. Default: 127.0.0.1:9966. */
  adminAddress?: string | null;
  /** This node's name (node proxies' node.id derive from it). Default: the host name. */
  nodeName?: string;
  /** A directory of Kubernetes YAML: its pods run on the local node runtime, its services are balanced in the kernel. Default: none. */
  manifests?: string;
  /**
   * The Kubernetes API as the cluster source instead (the pods are the
   * kubelet's; services use the cluster's clusterIPs and EndpointSlices).
   * Default: none.
   */
  kubernetes?: {
    kubeConfig?: KubeConfig;
    /** the network namespace holding the node-side ends of the CNI's pod veths (anti-spoof guards); default: the agent's own */
    nodeNetns?: string;
  };
  /** Name prefix of the local runtime's netns, links and cgroups. Default: "sm". */
  runtimePrefix?: string;
  /** Quiet time before a store change is reconciled. Default: 1 ms. */
  reconcileDebounceMs?: number;
  /** Where notable events go as lines (manifest reloads and their problems). Default: nowhere. */
  log?: (line: string) => void;
  /** The agent's ADS server on a unix socket too (the node proxy runs in another network namespace). Default: /run/sockmesh/xds.sock. */
  xdsSocket?: string;
  /**
   * The node proxy for L7 services (local runtime only): "mesh-proxy", "envoy", a path to an Envoy binary,
   * or "none" (L7 services are then served at L4). Default: Envoy when on PATH, else mesh-proxy.
   */
  proxy?: string;
  /** Traces: where spans go, sampling, the queue. Default: from the OTEL_* environment variables. */
  telemetry?: TelemetryOptions;
  /** The unix socket the node proxy sends its spans to. Default: otlp.sock next to the admin socket (/run/sockmesh/otlp.sock). */
  relaySocket?: string;
  /** Register the agent's tracer provider globally through the OpenTelemetry Node SDK (the run command). Default: false. */
  registerGlobalTelemetry?: boolean;
}

/** The cluster part of status, when the agent runs one. */
export interface ClusterStatus {
  source: { kind: 'manifests'; dir: string; last: ManifestLoad | null } | { kind: 'kubernetes'; server: string; informers: InformerState[] };
  pods: (PodView & { runtimeName?: string; restarts?: number; lastExit?: string; log?: string })[];
  services: ServiceView[];
  reconcile: { last: PassResult | null; passes: number; failures: number; writes: number; deletes: number };
  l7: L7Status;
  /**
   * the policies read, and whether they are enforced: AuthorizationPolicies by the node proxy
   * (when one runs); NetworkPolicies not yet (the kernel part is not built). `policy check` explains both.
   */
  policies: {
    networkPolicies: string[]; authorizationPolicies: string[]; enforced: { networkPolicies: boolean; authorizationPolicies: boolean };
    /** the kernel's NetworkPolicy tables: sizes, times, the last cut pass, and the last error (the maps keep the last good set) */
    kernel: {
      policies: string[]; entries: number; subjects: number; compileMs: number; writeMs: number; lastCut?: EnforceResult['cut']; notes: string[]; error: string | null;
      /** the pods' veths with the anti-spoof guard, and the pods without one (why) */
      guards?: number; unguarded?: string[];
    } | null;
  };
  runtimeError: string | null;
}

/** The last snapshot the agent could not publish, and why; the one before keeps serving. */
export interface SnapshotFailure {
  at: string;
  error: string;
  code: string;
}

export interface AgentStatus {
  agent: { pid: number; startedAt: string; nodeName: string; xdsAddress: string; adminSocket: string; adminAddress: string | null };
  xds: {
    snapshots: { node: string | null; setAt: string; versions: Record<ResourceKind, string>; resources: Record<ResourceKind, number>; servedTo: string[] }[];
    proxies: ReturnType<AdsServer['proxies']>;
    nacks: ReturnType<AdsServer['nacks']>;
    lastSnapshotFailure: SnapshotFailure | null;
  };
  cluster: ClusterStatus | null;
  datapath: DatapathStatus;
  telemetry: Record<string, unknown>;
}

/** L7 in status: the node proxy, every HTTPRoute's fate, and the AuthorizationPolicies it enforces. */
export interface L7Status {
  proxy: NodeProxyStatus | null;
  proxyAddress: string | null;
  routes: { key: string; state: RouteStatus['state']; reasons: string[] }[];
  /** per L7 service port ("ns/name:port") with RBAC filters: each filter's action and RBAC policies, and what the filters cannot say alone */
  authorization: L7Authorization[];
}

/** The RBAC filters a service port's listener carries (from the AuthorizationPolicies of its backends). */
export interface L7Authorization {
  port: string;
  filters: { action: 'ALLOW' | 'DENY' | 'LOG'; policies: string[] }[];
  notes: string[];
}

/** An xDS push whose span waits for the proxies' answers. */
interface PendingPush {
  span: Span;
  t0: number;
  versions: Record<ResourceKind, string>;
  /** "stream|type" not answered yet */
  waiting: Set<string>;
  timer: NodeJS.Timeout;
}

interface ClusterParts {
  store: ClusterStore;
  mode: 'local' | 'kubernetes';
  source?: ManifestSource;
  kube?: KubeSource;
  podCgroups?: PodCgroupFinder;
  /** Kubernetes mode: the node-side veths of the CNI's pods */
  podVeths?: PodVethFinder;
  /** Kubernetes mode: looks for the cgroups of local pods the kubelet has not made yet */
  cgroupTimer?: NodeJS.Timeout;
  /** Kubernetes mode: local pods with an address whose cgroup is not found yet, since (ms) */
  cgroupMissing?: Map<string, number>;
  proxy?: NodeProxy;
  listenerPorts?: ListenerPortAllocator;
  routeStatus?: Map<string, RouteStatus>;
  /** the RBAC filters compiled for each L7 service port that has some ("ns/name:port") */
  authorization?: Map<string, RbacOutput>;
  lastGoodRoutes?: Map<string, HTTPRoute>;
  l7Resources?: Required<SnapshotInput>;
  workloadsText?: string;
  /** for the Kubernetes source, made at start (its client library loads only then) */
  kubeConfig?: KubeConfig | undefined;
  runtime?: NodeRuntime;
  supervisor?: PodSupervisor;
  identities: IdentityAllocator;
  vips: VipAllocator;
  allocationsPath: string;
  loop?: ReconcileLoop;
  /** NetworkPolicy in the kernel */
  policy?: PolicyEnforcer;
  policyError?: string;
  proxyCgroupId?: bigint;
  /** pods whose veth has no anti-spoof guard, and why */
  guardErrors?: string[];
  /** the evaluator's view of the store, at a revision */
  world?: { revision: number; world: PolicyWorld };
  policyTimer?: NodeJS.Timeout;
  savedAllocations?: string;
  savedRevision?: string;
}

/** POST /tracing's body: { enabled?: boolean, sampleRatio?: number 0..1 }, checked field by field. */
function tracingChange(body: unknown): Partial<TracingState> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidArgumentError('POST /tracing: the body must be a JSON object, e.g. {"enabled": true, "sampleRatio": 0.1}');
  const out: Partial<TracingState> = {};
  for (const [k, v] of Object.entries(body)) {
    if (k === 'enabled') {
      if (typeof v !== 'boolean') throw new InvalidArgumentError(`POST /tracing: enabled: ${JSON.stringify(v)} is not true or false`);
      out.enabled = v;
    } else if (k === 'sampleRatio') {
      if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new InvalidArgumentError(`POST /tracing: sampleRatio: ${JSON.stringify(v)} is not a number from 0 to 1`);
      out.sampleRatio = v;
    } else {
      throw new InvalidArgumentError(`POST /tracing: unknown field ${JSON.stringify(k)} (enabled, sampleRatio)`);
    }
  }
  return out;
}

export class Agent {
  readonly nodeName: string;
  readonly xdsAddress: string;
  readonly adminSocket: string;
  readonly xdsSocket: string;
  readonly #enroll: readonly string[];
  readonly #datapath: Datapath;
  readonly #cache = new SnapshotCache();
  readonly #ads: AdsServer;
  readonly #admin: AdminServer;
  #startedAt = '';
  #snapshot: Snapshot | undefined;
  #lastFailure: SnapshotFailure | null = null;
  #snapshotFailures = 0;
  #started = false;
  #cluster: ClusterParts | undefined;
  readonly #reconcileDebounceMs: number;
  readonly #log: ((line: string) => void) | undefined;
  /** the node proxy's routes' templates (http.route) by route name, as last published */
  #routeTemplates = new Map<string, string | undefined>();
  readonly telemetry: AgentTelemetry;
  /** pod address → workload, for span attribution (every pod with an address) */
  #workloads = new Map<string, WorkloadIdentity>();
  /** "VIP:port" → "namespace/name" */
  #vipNames = new Map<string, string>();
  readonly #reconcileSeconds = new Histogram([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
  readonly #xdsPushSeconds = new Histogram([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
  /** xDS pushes waiting for the proxies' ACKs: their spans end then */
  #pushes: PendingPush[] = [];
  readonly #onAck = (m: unknown) => this.#acked(m as AdsAckEvent);
  /** the kernel's connection open/close events (ring buffer), into the telemetry */
  #flowReader: FlowEventReader | undefined;
  #policyReader: RingRecordReader<PolicyEventRecord> | undefined;
  #foldTimer: NodeJS.Timeout | undefined;

  constructor(opts: AgentOptions = {}) {
    this.nodeName = opts.nodeName ?? hostname();
    if (!/^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,251}[a-zA-Z0-9])?$/.test(this.nodeName)) {
      throw new InvalidArgumentError(`the node name must be a DNS-style name, got ${JSON.stringify(this.nodeName)}`);
    }
    this.#enroll = Object.freeze([...(opts.enroll ?? [])]);
    for (const ip of this.#enroll) encodeIPv4(ip);
    this.xdsAddress = opts.xdsAddress ?? DEFAULT_XDS_ADDRESS;
    parseHostPort('the xDS address', this.xdsAddress);
    this.adminSocket = opts.adminSocket ?? DEFAULT_ADMIN_SOCKET;
    this.#datapath = new Datapath(opts.datapath ?? {});
    this.#reconcileDebounceMs = opts.reconcileDebounceMs ?? 1;
    this.#log = opts.log;
    // next to the admin socket unless told: agents with their own admin socket do not share a relay
    const relaySocket = opts.relaySocket ?? (opts.adminSocket === undefined ? DEFAULT_RELAY_SOCKET : join(dirname(opts.adminSocket), 'otlp.sock'));
    // an Envoy node proxy exports its spans to the agent over OTLP/gRPC, beside the relay
    const envoy = opts.manifests !== undefined && opts.proxy !== 'none' && nodeProxyChoice(opts.proxy).kind === 'envoy';
    const envoySpansSocket = envoy ? join(dirname(relaySocket), 'envoy-spans.sock') : undefined;
    // and its access log, every request
    const envoyAccessLogSocket = envoy ? join(dirname(relaySocket), 'envoy-als.sock') : undefined;
    this.telemetry = new AgentTelemetry({
      telemetry: opts.telemetry ?? telemetryOptions(process.env), node: this.nodeName, relaySocket,
      ...(envoySpansSocket !== undefined && { envoySpansSocket }),
      ...(envoyAccessLogSocket !== undefined && { envoyAccessLogSocket, routeTemplateOf: (name: string) => this.#routeTemplates.get(name) }),
      registerGlobal: opts.registerGlobalTelemetry === true,
      workloadOf: (ip) => this.#workloads.get(ip),
      serviceOf: (ip, port) => this.#vipNames.get(`${ip}:${port}`),
      toEpochNs: (() => { const offset = epochOffsetNs(); return (mono: bigint) => mono + offset; })(),
      beforeRequests: () => {
        try {
          this.#flowReader?.poll();
        } catch (err) {
          this.#log?.(`flow events: ${(err as Error).message ?? String(err)}`);
        }
      },
    });
    if (opts.manifests !== undefined) {
      if (!existsSync(opts.manifests) || !statSync(opts.manifests).isDirectory()) {
        throw new InvalidArgumentError(`--manifests: ${opts.manifests} is not a directory`);
      }
      const store = new ClusterStore();
      const runtime = new NodeRuntime({
        ...(opts.runtimePrefix !== undefined && { prefix: opts.runtimePrefix }),
        ...(opts.datapath?.cgroupPath !== undefined && { cgroupRoot: opts.datapath.cgroupPath }),
      });
      const pinId = createHash('sha256').update(this.#datapath.pinDir).digest('hex').slice(0, 12);
      this.#cluster = {
        store, runtime, mode: 'local',
        source: new ManifestSource({
          dir: resolve(opts.manifests), store,
          onLoad: (r) => {
            if (r.ok) opts.log?.(`manifests: ${r.objects} objects from ${r.files} files${r.ignored.length ? ` (${r.ignored.length} documents of other kinds ignored)` : ''}`);
            else opts.log?.(`manifests: not applied, the last good set (${r.objects} objects) keeps serving:\n${r.errors.map((e) => `  ${e}`).join('\n')}`);
          },
        }),
        ...(opts.proxy !== 'none' && {
          proxy: new NodeProxy({
            runtime, xdsSocket: opts.xdsSocket ?? DEFAULT_XDS_SOCKET, nodeId: `${this.nodeName}~${NODE_PROXY}`,
            stateDir: join(STATE_DIR, `proxy-${runtime.prefix}`), ...(opts.proxy !== undefined && { proxy: opts.proxy }),
            telemetrySocket: relaySocket, nodeName: this.nodeName, ...(envoySpansSocket !== undefined && { envoySpansSocket }),
            ...(envoyAccessLogSocket !== undefined && { envoyAccessLogSocket }),
          }),
          listenerPorts: new ListenerPortAllocator(), routeStatus: new Map(), lastGoodRoutes: new Map(),
        }),
        supervisor: new PodSupervisor({
          runtime, store, nodeName: this.nodeName, stateDir: join(STATE_DIR, `pods-${runtime.prefix}`), workDir: resolve(opts.manifests),
          beforeStart: () => this.#cluster?.loop?.pass(),
        }),
        identities: new IdentityAllocator(), vips: new VipAllocator(),
        allocationsPath: join(STATE_DIR, `${basename(this.#datapath.pinDir)}-${pinId}-allocations.json`),
      };
    } else if (opts.kubernetes !== undefined) {
      const store = new ClusterStore();
      const pinId = createHash('sha256').update(this.#datapath.pinDir).digest('hex').slice(0, 12);
      this.#cluster = {
        store, mode: 'kubernetes',
        kubeConfig: opts.kubernetes.kubeConfig,
        podVeths: new PodVethFinder(opts.kubernetes.nodeNetns),
        identities: new IdentityAllocator(), vips: new VipAllocator(),
        allocationsPath: join(STATE_DIR, `${basename(this.#datapath.pinDir)}-${pinId}-allocations.json`),
      };
    }
    this.#ads = new AdsServer({ cache: this.#cache, address: this.xdsAddress, socketPath: opts.xdsSocket ?? DEFAULT_XDS_SOCKET });
    this.xdsSocket = opts.xdsSocket ?? DEFAULT_XDS_SOCKET;
    const adminAddress = opts.adminAddress === undefined ? DEFAULT_ADMIN_ADDRESS : opts.adminAddress;
    this.#admin = new AdminServer({
      socketPath: this.adminSocket,
      ...(adminAddress !== null && { address: adminAddress }),
      routes: {
        '/status': () => ({ body: this.status() }),
        '/config_dump': (q) => ({ body: this.configDump(q.get('node') ?? undefined, q.get('types') ?? undefined) }),
        '/metrics': () => ({ body: renderPrometheus(this.metrics()), contentType: PROMETHEUS_CONTENT_TYPE }),
        '/healthz': () => ({ body: 'ok\n' }),
        '/flows': (q) => this.#flowsRoute(q),
        '/policy/check': (q) => this.#policyCheckRoute(q),
        '/tracing': () => ({ body: this.telemetry.tracing }),
      },
      actions: {
        '/tracing': (body) => ({ body: this.setTracing(tracingChange(body)) }),
      },
    });
  }

  /** The verdict on a connection or request (from, to, protocol, method, path, host, header=NAME=VALUE), from the cluster as the agent sees it now. */
  #policyCheckRoute(q: URLSearchParams): import('./admin/admin-server.js').AdminReply {
    const store = this.store;
    if (!store) throw new InvalidArgumentError('this agent runs without a cluster source: there are no pods or policies to judge');
    const query = queryFrom((n) => q.get(n) ?? undefined, q.getAll('header'));
    return { body: checkPolicy(checkClusterOf({
      namespaces: store.namespaces().values(), pods: store.pods().values(), services: store.services().values(),
      networkPolicies: store.networkPolicies().values(), authorizationPolicies: store.authorizationPolicies().values(),
    }), query) };
  }

  /** Recent flows (last=N), then, with follow=1, every new one as it happens; filters: namespace, pod, service, type. */
  #flowsRoute(q: URLSearchParams): import('./admin/admin-server.js').AdminReply {
    const filter: FlowFilter = {};
    for (const k of ['namespace', 'pod', 'service'] as const) { const v = q.get(k); if (v) filter[k] = v; }
    const type = q.get('type');
    if (type) {
      if (type !== 'l4' && type !== 'l7' && type !== 'security') throw new InvalidArgumentError(`type ${JSON.stringify(type)}: must be l4, l7 or security`);
      filter.type = type;
    }
    const lastRaw = q.get('last') ?? '20';
    const last = Number(lastRaw);
    if (!Number.isInteger(last) || last < 0) throw new InvalidArgumentError(`last ${JSON.stringify(lastRaw)}: must be a whole number`);
    const recent = this.telemetry.recentFlows(filter, last);
    if (q.get('follow') !== '1') return { body: recent.map((f) => JSON.stringify(f)).join('\n') + (recent.length ? '\n' : ''), contentType: 'application/x-ndjson' };
    return {
      body: recent,
      stream: (out) => {
        const off = this.telemetry.subscribe(filter, (f) => { out.write(JSON.stringify(f)); });
        out.onClose(off);
      },
    };
  }

  get pinDir(): string {
    return this.#datapath.pinDir;
  }

  /** The admin API's TCP address, once started (null when there is none). */
  get adminAddress(): string | null {
    return this.#admin.address ?? null;
  }

  /** Brings everything up; on failure releases what was started and rethrows. */
  async start(): Promise<{ adopted: boolean; otherBuild: boolean }> {
    this.#startedAt = new Date().toISOString();
    const result = this.#datapath.start();
    try {
      await this.telemetry.start();
      diagnosticsChannel.subscribe(ADS_ACK_CHANNEL, this.#onAck);
      this.#flowReader = this.#datapath.flowEventReader({
        onEvents: (events) => this.telemetry.onFlowEvents(events),
        onError: (err) => this.#log?.(`flow events: ${(err as Error).message ?? String(err)}`),
      });
      this.#flowReader.start();
      const policyContext = this.#policyEventContext();
      const folds = new FoldedDenials();
      this.#policyReader = this.#datapath.policyEventReader({
        onEvents: (events) => this.telemetry.onPolicyEvents(folds.onRecords(events), policyContext),
        onError: (err) => this.#log?.(`policy events: ${(err as Error).message ?? String(err)}`),
      });
      this.#policyReader.start();
      // the last second of a burst of denials, which the kernel reports only with the key's next record
      this.#foldTimer = setInterval(() => {
        if (folds.size === 0) return;
        try {
          const trailing = folds.sweep((k) => this.#datapath.policySeen(k), process.hrtime.bigint());
          if (trailing.length > 0) this.telemetry.onPolicyEvents(trailing, policyContext);
        } catch (err) {
          this.#log?.(`policy events: reading the kernel's folds: ${(err as Error).message}`);
        }
      }, 500);
      this.#foldTimer.unref();
      for (const ip of this.#enroll) this.#datapath.enroll(ip);
      if (this.#cluster) await this.#startCluster(this.#cluster);
      if (!this.#snapshot) this.publish({}); // nothing for the node proxy yet: an empty, consistent configuration
      try {
        await this.#ads.start();
      } catch (err) {
        throw new InvalidArgumentError(`the xDS server cannot listen on ${this.xdsAddress}: ${(err as Error).message}`, 'pick another with --xds-address');
      }
      await this.#admin.start();
    } catch (err) {
      await this.#ads.stop();
      this.#cache.close();
      await this.#stopCluster(false);
      diagnosticsChannel.unsubscribe(ADS_ACK_CHANNEL, this.#onAck);
      this.#flowReader?.stop();
      this.#flowReader = undefined;
      this.#policyReader?.stop();
      this.#policyReader = undefined;
      if (this.#foldTimer) clearInterval(this.#foldTimer);
      await this.telemetry.stop();
      this.#datapath.stop();
      throw err;
    }
    this.#started = true;
    return result;
  }

  async #startCluster(c: ClusterParts): Promise<void> {
    loadAllocations(c.allocationsPath, c.identities, c.vips);
    c.source?.start();
    if (c.mode === 'kubernetes') {
      const { KubeSource } = await import('./cluster/kube-source.js');
      c.kube = new KubeSource({ store: c.store, ...(c.kubeConfig && { kubeConfig: c.kubeConfig }) });
      await c.kube.start();
    }
    const layout = this.#datapath.layout;
    const reconciler = new MapReconciler(this.#datapath, {
      endpointEnrolled: layout.endpointEnrolledFlag, cgroupEnrolled: layout.cgroupEnrolledFlag, serviceAnyClient: layout.serviceAnyClientFlag,
    });
    if (c.listenerPorts) loadListenerPorts(c.allocationsPath, c.listenerPorts);
    c.loop = new ReconcileLoop({
      ...(c.proxy && c.listenerPorts && { l7: { proxyIp: () => POD_NETWORK.gateway, listenerPorts: c.listenerPorts, authorizationPolicies: () => c.store.authorizationPolicies() } }),
      store: c.store, reconciler, nodeName: this.nodeName, mode: c.mode, identities: c.identities, vips: c.vips,
      cgroups: () => c.supervisor?.cgroupIds() ?? this.#kubePodCgroups(c), debounceMs: this.#reconcileDebounceMs,
      wrapPass: (run) => this.#tracedPass(run),
      onPass: (d, servicesChanged, endpointsChanged) => {
        if (endpointsChanged) this.#indexWorkloads(c, d);
        if (servicesChanged) this.#vipNames = new Map(d.serviceViews.flatMap((v) => (v.vip ? v.ports.map((p) => [`${v.vip}:${p.port}`, v.key] as [string, string]) : [])));
        if (endpointsChanged && c.proxy) this.#writeWorkloads(c, d);
        if (servicesChanged && c.supervisor) {
          c.supervisor.setServices(d.serviceViews.flatMap((v) => {
            const [namespace, name] = v.key.split('/') as [string, string];
            return v.vip ? [{ namespace, name, vip: v.vip }] : [];
          }));
        }
        this.#enforcePolicies(c, d);
        // callers are known by address: a pod that comes, goes or changes recompiles the RBAC filters
        if (c.proxy && (servicesChanged || (endpointsChanged && c.store.authorizationPolicies().size > 0))) this.#publishL7(c, d);
        const rev = `${c.identities.revision}/${c.vips.revision}/${c.listenerPorts?.revision ?? 0}`;
        if (rev !== c.savedRevision) {
          c.savedAllocations = saveAllocations(c.allocationsPath, c.identities, c.vips, c.savedAllocations, c.listenerPorts);
          c.savedRevision = rev;
        }
      },
    });
    // pods an earlier agent left running are adopted (their addresses back in the store) before the
    // first pass, so it does not take their entries out; new pods get theirs (and /etc/hosts) before they
    // start (the supervisor asks for a pass then); the loop follows the store from before either
    const cgroupRel = (this.#datapath.status().cgroupPath ?? join(findCgroup2(), 'sockmesh')).slice(findCgroup2().length) || '/';
    c.policy = new PolicyEnforcer(this.#datapath, layout.policy, () => netnsOfCgroupTree(cgroupRel));
    c.loop.start({ pass: false });
    if (c.mode === 'kubernetes') this.#watchKubeCgroups(c);
    await c.supervisor?.start();
    if (!c.loop.last) c.loop.pass();
    c.proxy?.start(); // the runtime's node namespace exists now
    if (c.proxy) {
      // the proxy's cgroup is made when it (re)starts: its connects to backends carry the proxy's class
      c.policyTimer = setInterval(() => {
        if (c.proxy!.cgroupId() !== c.proxyCgroupId && c.loop?.desired) this.#enforcePolicies(c, c.loop.desired);
      }, 500).unref();
      if (c.loop.desired) this.#enforcePolicies(c, c.loop.desired);
    }
  }

  /**
   * The anti-spoof guard on each local pod's veth (the local runtime: its
   * veths are in the runtime's node namespace); guards of pods gone are
   * detached. A failure is recorded; the next pass tries again.
   */
  #guardPorts(c: ClusterParts, localPods: ReadonlyMap<string, { ip: string }>): void {
    if (!c.runtime && !c.podVeths) return;
    const keep = new Set<string>();
    const failed: string[] = [];
    const ns = c.runtime ? `/run/netns/${c.runtime.nodeNetns}` : c.podVeths!.nodeNetns;
    for (const [key, pod] of localPods) {
      let ifname: string;
      if (c.runtime) {
        ifname = c.runtime.hostVeth(runtimeName(key));
      } else {
        // the CNI's veth, found from inside the pod; a pod on the node's network has none
        const known = c.store.pods().get(key);
        if (known?.hostNetwork) continue;
        const uid = known?.meta.uid;
        const dir = uid === undefined ? undefined : c.podCgroups?.dir(uid);
        if (dir === undefined) {
          failed.push(`${key}: its cgroup is not found`);
          continue;
        }
        try {
          ifname = c.podVeths!.find(key, dir, pod.ip);
        } catch (err) {
          failed.push(`${key}: ${(err as Error).message}`);
          continue;
        }
      }
      keep.add(ifname);
      try {
        this.#datapath.guardPort(ns, ifname, pod.ip);
      } catch (err) {
        c.podVeths?.forget(key);
        failed.push(`${key} (${ifname}): ${(err as Error).message}`);
      }
    }
    c.podVeths?.retain(new Set(localPods.keys()));
    try {
      this.#datapath.unguardPortsExcept(keep);
    } catch (err) {
      failed.push(`detaching: ${(err as Error).message}`);
    }
    c.guardErrors = failed;
  }

  /** The evaluator's view of the cluster now (cached per store revision). */
  #policyWorld(c: ClusterParts): PolicyWorld {
    if (c.world && c.world.revision === c.store.revision) return c.world.world;
    const store = c.store;
    const world: PolicyWorld = {
      namespaces: [...store.namespaces().values()].map((n) => ({ name: n.meta.name, labels: n.meta.labels })),
      // a finished pod's address may already be another's
      pods: [...store.pods().values()].filter((p) => !p.hostNetwork && p.phase !== 'Succeeded' && p.phase !== 'Failed').map((p) => ({
        namespace: p.meta.namespace, name: p.meta.name, labels: p.meta.labels, ...(p.ip !== undefined && { ip: p.ip }),
        ports: p.ports.map((x) => ({ ...(x.name !== undefined && { name: x.name }), containerPort: x.containerPort, protocol: x.protocol })),
      })),
      policies: [...store.networkPolicies().values()],
    };
    c.world = { revision: store.revision, world };
    return world;
  }

  /** What the kernel's policy events need from the cluster: workloads, and the evaluator's reasons. */
  #policyEventContext(): PolicyEventContext {
    let memo = { revision: -1, answers: new Map<string, DenialReason | undefined>() };
    return {
      workloadOf: (ip) => this.#workloads.get(ip),
      // refused connects and cut connections: the kernel saw the pod's own socket; a dropped packet's source is a pod only when judged as one
      sourceIsPod: (ev) => ev.srcIp !== undefined && (ev.kind === 'deny-connect' || (ev.kind === 'cut' && ev.direction !== 'ingress')
        || this.#cluster?.policy?.compiled?.podPeers.get(ev.srcIp) === ev.peer),
      explain: (q) => {
        const c = this.#cluster;
        if (!c) return undefined;
        // one evaluation per question and store revision: a flood of denials costs lookups, not evaluations
        const key = JSON.stringify(q);
        if (memo.revision !== c.store.revision) memo = { revision: c.store.revision, answers: new Map() };
        if (memo.answers.has(key)) return memo.answers.get(key);
        if (memo.answers.size > 10_000) memo.answers.clear();
        const answer = this.#explainDenial(c, q);
        memo.answers.set(key, answer);
        return answer;
      },
      toEpochMs: (mono) => Number((mono + epochOffsetNs()) / 1_000_000n),
    };
  }

  /** The evaluator's reason for a denied connection the kernel reported. */
  #explainDenial(c: ClusterParts, q: Parameters<PolicyEventContext['explain']>[0]): DenialReason | undefined {
    const denial = (world: PolicyWorld, cq: ConnectionQuery): DenialReason | undefined => {
      const v = explainConnection(world, cq);
      if (v.kind !== 'verdict' || v.allowed) return undefined;
      const d = !v.egress.allowed ? v.egress : v.ingress;
      return { policy: d.outcome === 'denied' ? d.selectedBy.join(',') : 'unknown', reason: v.reason };
    };
    const world = this.#policyWorld(c);
    if (!('listenerPort' in q.to)) return denial(world, { from: q.from, to: q.to, port: q.port, protocol: q.protocol });
    const port = q.to.listenerPort;
    const fe = [...(c.loop?.desired?.services.values() ?? [])].find((f) => f.l7?.listenerPort === port);
    for (const b of fe?.l7?.backends ?? []) {
      const pod = world.pods.find((p) => p.ip === b.ip);
      const d = denial(world, { from: q.from, to: pod ? { kind: 'pod', namespace: pod.namespace, name: pod.name } : { kind: 'ip', ip: b.ip }, port: b.port, protocol: 'TCP' });
      if (d) return { policy: d.policy, reason: `service ${fe!.service}, backend ${b.ip}:${b.port}: ${d.reason}` };
    }
    return undefined;
  }

  /** The pods of this node with an address and a cgroup known: the policy subjects, and the pods to guard. */
  #localPods(c: ClusterParts, d: DesiredState): Map<string, { ip: string; cgroupId: bigint }> {
    const cgroups = c.loop ? (c.supervisor?.cgroupIds() ?? this.#kubePodCgroups(c)) : undefined;
    const localPods = new Map<string, { ip: string; cgroupId: bigint }>();
    for (const p of d.pods) {
      if (!p.local || p.ip === undefined) continue;
      const id = cgroups?.get(p.key);
      if (id !== undefined) localPods.set(p.key, { ip: p.ip, cgroupId: id });
    }
    return localPods;
  }

  /** NetworkPolicy into the kernel after a pass; a failure keeps what the maps hold, recorded, and the next pass starts from a re-read. */
  #enforcePolicies(c: ClusterParts, d: DesiredState): void {
    if (!c.policy) return;
    const localPods = this.#localPods(c, d);
    const world = this.#policyWorld(c);
    this.#guardPorts(c, localPods);
    c.proxyCgroupId = c.proxy?.cgroupId();
    const ports = [...d.services.values()].flatMap((fe) => (fe.l7 ? [{ listenerPort: fe.l7.listenerPort, backends: fe.l7.backends }] : []));
    try {
      const r = c.policy.enforce({
        world, localPods, revision: c.store.revision,
        ...(c.proxy && { proxy: { ...(c.proxyCgroupId !== undefined && { cgroupId: c.proxyCgroupId }), listenerIp: POD_NETWORK.gateway, ports } }),
      });
      c.policyError = undefined;
      if (r.cut && (r.cut.cut > 0 || r.cut.failed.length > 0)) {
        this.#log?.(`policy: ${r.cut.cut} connection(s) no longer allowed were cut in ${r.cut.namespaces} namespaces (${r.cut.ms.toFixed(1)} ms)${r.cut.failed.length ? `; could not enter ${r.cut.failed.map((f) => f.netns).join(', ')}` : ''}`);
      }
    } catch (err) {
      c.policyError = (err as Error).message;
      this.#log?.(`policy: not enforced, the kernel keeps the last good set: ${c.policyError}`);
      try {
        c.policy.load();
      } catch {
        // the next pass tries again
      }
    }
  }

  /** The node proxy's configuration from the L7 services and their HTTPRoutes; a refused snapshot is recorded, the last good serves. */
  #publishL7(c: ClusterParts, d: DesiredState): void {
    const ports: L7Port[] = [];
    for (const fe of d.services.values()) {
      if (!fe.l7) continue;
      ports.push({ service: fe.service.slice(0, fe.service.lastIndexOf(':')), port: fe.port, listenerPort: fe.l7.listenerPort });
    }
    const compiler = c.loop!.compiler;
    const authorization = this.#compileAuthorization(c, d, ports);
    const out = l7Resources({
      proxyIp: POD_NETWORK.gateway, ports, routes: c.store.httpRoutes(), lastGood: c.lastGoodRoutes!,
      backends: (svc, port) => compiler.backendsOf(svc, port),
      lbPolicy: (svc) => (c.store.services().get(svc)?.meta.annotations[LB_ANNOTATION] === 'least-request' ? 'LEAST_REQUEST' : 'ROUND_ROBIN'),
      httpFilters: (svc, port) => authorization.get(portName(svc, port))?.filters,
      ...(this.telemetry.tracing.enabled && {
        tracing: { sampleRatio: this.telemetry.tracing.sampleRatio, ...(c.proxy?.kind === 'envoy' && { envoy: { otlpCluster: OTLP_CLUSTER } }) },
      }),
      ...(c.proxy?.kind === 'envoy' && { accessLog: { cluster: ALS_CLUSTER } }),
    });
    c.authorization = authorization;
    c.routeStatus = out.routeStatus;
    c.l7Resources = out.resources;
    try {
      this.publish(out.resources);
    } catch {
      return; // recorded by publish(); the last good snapshot serves, and its route templates
    }
    // the routes' templates by name, for Envoy's access log entries without their template tag; a
    // name its matches give different templates has none (a rule's matches share its name)
    const templates = new Map<string, string | undefined>();
    for (const rc of out.resources.routes as { virtual_hosts?: { routes?: { name?: string; match?: Record<string, unknown> }[] }[] }[]) {
      for (const vh of rc.virtual_hosts ?? []) {
        for (const r of vh.routes ?? []) {
          if (!r.name || !r.match) continue;
          const t = routeTemplate(r.match);
          templates.set(r.name, templates.has(r.name) && templates.get(r.name) !== t ? undefined : t);
        }
      }
    }
    this.#routeTemplates = templates;
  }

  /** The RBAC filters of each L7 service port, from the store's AuthorizationPolicies and the pods as compiled. */
  #compileAuthorization(c: ClusterParts, d: DesiredState, ports: readonly L7Port[]): Map<string, RbacOutput> {
    const policies = [...c.store.authorizationPolicies().values()];
    if (policies.length === 0) return new Map();
    const store = c.store.pods();
    const pods: AddressedPod[] = [];
    for (const p of d.pods) {
      const pod = store.get(p.key);
      if (p.ip === undefined || !pod || pod.hostNetwork) continue;
      pods.push({ ip: p.ip, namespace: p.namespace, name: p.name, labels: pod.meta.labels, serviceAccount: pod.serviceAccount });
    }
    const compiler = c.loop!.compiler;
    return l7Authorization({ ports, policies, pods, backends: (svc, port) => compiler.backendsOf(svc, port) });
  }

  /** Pod address → workload (its span resource), for every pod with an address. */
  #indexWorkloads(c: ClusterParts, d: DesiredState): void {
    const map = new Map<string, WorkloadIdentity>();
    const pods = c.store.pods();
    for (const p of d.pods) {
      if (p.ip === undefined) continue;
      const meta = pods.get(p.key)?.meta;
      map.set(p.ip, { namespace: p.namespace, pod: p.name, serviceName: serviceNameOf(meta?.labels ?? {}, p.name, meta?.owner) });
    }
    this.#workloads = map;
  }

  /** The node proxy's map of pod addresses to workloads (it attributes its spans and names callers in its log). */
  #writeWorkloads(c: ClusterParts, d: DesiredState): void {
    const map: Record<string, { namespace: string; pod: string; serviceName: string; app?: string; identity: number }> = {};
    for (const p of d.pods) {
      if (p.ip === undefined) continue;
      const labels = c.store.pods().get(p.key)?.meta.labels ?? {};
      const app = labels['app.kubernetes.io/name'] ?? labels.app;
      map[p.ip] = { namespace: p.namespace, pod: p.name, serviceName: this.#workloads.get(p.ip)?.serviceName ?? p.name, ...(app !== undefined && { app }), identity: p.identity };
    }
    const text = JSON.stringify(map);
    if (text === c.workloadsText) return;
    c.workloadsText = text;
    c.proxy!.writeWorkloads(text);
  }

  /** A reconcile pass as the agent's span (the xDS push it causes is its child) and in the duration histogram. */
  #tracedPass(run: () => PassResult): PassResult {
    const span = this.telemetry.tracer.startSpan('reconcile', { attributes: { 'sockmesh.node': this.nodeName } }, this.telemetry.current);
    const r = this.telemetry.within(trace.setSpan(this.telemetry.current, span), run);
    const stats = r.stats;
    span.setAttributes({
      'sockmesh.reconcile.kind': r.kind, 'sockmesh.reconcile.revision': r.revision,
      'sockmesh.reconcile.compile_ms': Math.round(r.compileMs * 1000) / 1000, 'sockmesh.reconcile.maps_ms': Math.round(r.reconcileMs * 1000) / 1000,
      ...(stats && { 'sockmesh.reconcile.map_writes': Object.values(stats.writes).reduce((a, b) => a + b, 0), 'sockmesh.reconcile.map_deletes': Object.values(stats.deletes).reduce((a, b) => a + b, 0) }),
    });
    if (r.error) {
      span.setAttribute('error.type', 'reconcile_failed');
      span.setStatus({ code: SpanStatusCode.ERROR, message: r.error });
    }
    span.end();
    this.#reconcileSeconds.observe({ kind: r.kind }, (r.compileMs + r.reconcileMs) / 1000);
    return r;
  }

  /** A new snapshot's push to the connected proxies: a span that ends when each of them ACKed (or NACKed) each changed type. */
  #tracePush(prev: Snapshot | undefined, snap: Snapshot): void {
    const changed = PUSH_ORDER.filter((k) => prev?.versions[k] !== snap.versions[k]);
    if (changed.length === 0) return;
    const proxies = this.#ads.proxies().filter((p) => this.#cache.entryFor(p.nodeId)?.snapshot === snap);
    const span = this.telemetry.tracer.startSpan('xds push', {
      attributes: {
        'sockmesh.xds.types': changed.join(','), 'sockmesh.xds.proxies': proxies.length,
        'sockmesh.xds.resources': PUSH_ORDER.reduce((a, k) => a + snap.resources[k].size, 0),
        ...Object.fromEntries(changed.map((k) => [`sockmesh.xds.version.${k}`, snap.versions[k]])),
      },
    }, this.telemetry.current);
    const waiting = new Set(proxies.flatMap((p) => changed.map((k) => `${p.stream}|${k}`)));
    const push: PendingPush = { span, t0: performance.now(), versions: { ...snap.versions }, waiting, timer: setTimeout(() => this.#endPush(push, false), 10_000) };
    push.timer.unref();
    if (waiting.size === 0) this.#endPush(push, true);
    else this.#pushes.push(push);
  }

  #acked(m: AdsAckEvent): void {
    for (const p of [...this.#pushes]) {
      if (p.versions[m.kind] !== m.version) continue;
      if (!p.waiting.delete(`${m.stream}|${m.kind}`)) continue;
      if (m.nack) {
        p.span.addEvent('nack', { 'sockmesh.xds.node': m.nodeId, 'sockmesh.xds.type': m.kind, 'error.message': m.nack });
        p.span.setStatus({ code: SpanStatusCode.ERROR, message: `${m.nodeId} rejected ${m.kind}: ${m.nack}` });
      } else {
        p.span.addEvent('ack', { 'sockmesh.xds.node': m.nodeId, 'sockmesh.xds.type': m.kind });
      }
      if (p.waiting.size === 0) this.#endPush(p, true);
    }
  }

  #endPush(p: PendingPush, complete: boolean): void {
    clearTimeout(p.timer);
    this.#pushes = this.#pushes.filter((x) => x !== p);
    p.span.setAttribute('sockmesh.xds.acked_all', complete);
    if (!complete) p.span.setAttribute('sockmesh.xds.unanswered', p.waiting.size);
    p.span.end();
    if (complete) this.#xdsPushSeconds.observe({}, (performance.now() - p.t0) / 1000);
  }

  /**
   * Kubernetes mode: the API may tell of a pod before the kubelet has made
   * its cgroup (and a scan only runs when asked for an unknown pod). While a
   * local pod with an address has none, the tree is read every 250 ms (every
   * 2 s once it has been missing for 10 s), and a pod found is redone in a
   * pass at once: enrolled, a policy subject, guarded.
   */
  #watchKubeCgroups(c: ClusterParts): void {
    c.cgroupMissing = new Map();
    let lastScan = 0;
    let lastGuard = performance.now();
    c.cgroupTimer = setInterval(() => {
      const d = c.loop?.desired;
      if (!d || !c.podCgroups) return;
      const missing = c.cgroupMissing!;
      const now = performance.now();
      const want = new Map<string, string>();
      for (const p of d.pods) {
        if (!p.local || p.ip === undefined) continue;
        const pod = c.store.pods().get(p.key);
        if (!pod?.meta.uid || pod.hostNetwork || pod.nodeName !== this.nodeName || c.podCgroups.peek(pod.meta.uid) !== undefined) continue;
        want.set(p.key, pod.meta.uid);
      }
      for (const k of missing.keys()) if (!want.has(k)) missing.delete(k);
      // a pod whose veth could not be found (its sandbox not running yet) is tried again every 2 s
      if (want.size === 0 && (c.guardErrors?.length ?? 0) > 0 && now - lastGuard > 2000) {
        lastGuard = now;
        this.#guardPorts(c, this.#localPods(c, d));
      }
      if (want.size === 0) return;
      for (const k of want.keys()) if (!missing.has(k)) missing.set(k, now);
      const oldest = Math.min(...missing.values());
      if (now - oldest > 10_000 && now - lastScan < 2000) return;
      lastScan = now;
      c.podCgroups.scan();
      const found = [...want].filter(([, uid]) => c.podCgroups!.peek(uid) !== undefined).map(([k]) => k);
      for (const k of found) missing.delete(k);
      if (found.length > 0) c.loop?.touch(found.map((k) => `Pod ${k}`));
    }, 250);
    c.cgroupTimer.unref();
  }

  /** Kubernetes mode: pods on this node, by key → the cgroup the kubelet made for them (found on demand). */
  #kubePodCgroups(c: ClusterParts): Pick<ReadonlyMap<string, bigint>, 'get'> {
    c.podCgroups ??= new PodCgroupFinder({ root: findCgroup2() });
    const finder = c.podCgroups;
    return {
      get: (key: string) => {
        const pod = c.store.pods().get(key);
        if (!pod?.meta.uid || pod.nodeName !== this.nodeName) return undefined;
        return finder.lookup(pod.meta.uid);
      },
    };
  }

  async #stopCluster(removePods: boolean): Promise<void> {
    const c = this.#cluster;
    if (!c) return;
    c.source?.stop();
    await c.kube?.stop();
    await c.proxy?.stop({ remove: removePods });
    await c.supervisor?.stop({ removePods });
    c.loop?.stop();
    c.policy?.stop();
    if (c.policyTimer) clearInterval(c.policyTimer);
    if (c.cgroupTimer) clearInterval(c.cgroupTimer);
    if (removePods) await c.runtime?.cleanup();
  }

  /** A copy of the node proxy's configuration as last compiled from the cluster (empty without L7). */
  l7Resources(): Required<SnapshotInput> {
    return structuredClone(this.#cluster?.l7Resources ?? { clusters: [], endpoints: [], listeners: [], routes: [] });
  }

  /** The cluster store (undefined without a cluster source). */
  get store(): ClusterStore | undefined {
    return this.#cluster?.store;
  }

  /** Runs a reconcile pass now (tests, benchmarks); undefined without a cluster. */
  reconcileNow(): PassResult | undefined {
    return this.#cluster?.loop?.pass();
  }

  /**
   * Stops serving, in reverse order. The datapath stays pinned in the
   * kernel unless `down` is set; the pods keep running (an agent restart
   * adopts them) unless `removePods` is set.
   */
  async stop(opts: { down?: boolean; removePods?: boolean } = {}): Promise<void> {
    await this.#admin.stop();
    await this.#ads.stop();
    this.#cache.close();
    await this.#stopCluster(opts.removePods === true);
    diagnosticsChannel.unsubscribe(ADS_ACK_CHANNEL, this.#onAck);
    this.#flowReader?.stop(); // delivers what is left
    this.#flowReader = undefined;
    this.#policyReader?.stop();
    this.#policyReader = undefined;
    if (this.#foldTimer) clearInterval(this.#foldTimer);
    for (const p of this.#pushes) this.#endPush(p, false);
    await this.telemetry.stop();
    if (opts.down) this.#datapath.down();
    else this.#datapath.stop();
    this.#started = false;
  }

  /**
   * Publishes the node proxy's configuration. An input that does not make a
   * consistent snapshot is recorded (status, metrics) and thrown; the last
   * good snapshot keeps serving.
   */
  publish(input: SnapshotInput): Snapshot {
    let snap: Snapshot;
    try {
      snap = Snapshot.create(input, this.#snapshot);
    } catch (err) {
      this.#snapshotFailures++;
      const e = err as Error;
      this.#lastFailure = { at: new Date().toISOString(), error: e.message, code: err instanceof SockmeshError ? err.code : 'unknown' };
      throw err;
    }
    const prev = this.#snapshot;
    this.#snapshot = snap;
    this.#cache.setDefaultSnapshot(snap);
    if (this.#started || prev) this.#tracePush(prev, snap);
    return snap;
  }

  /**
   * Changes tracing at runtime (unset fields keep their value): the agent's
   * own spans and the kernel's connection spans at once, and the node proxy's
   * request spans through a new snapshot whose listeners carry the new HCM
   * tracing (none when off). Lasts until the agent stops; its flags and the
   * OTEL_* variables are the start-up value.
   */
  setTracing(next: Partial<TracingState>): TracingState {
    const before = this.telemetry.tracing;
    const now = this.telemetry.setTracing(next);
    if (now.enabled !== before.enabled || now.sampleRatio !== before.sampleRatio) {
      this.#log?.(`traces: ${now.enabled ? `on, sampling ${now.sampleRatio}` : 'off'} (was ${before.enabled ? `on, sampling ${before.sampleRatio}` : 'off'})`);
      const c = this.#cluster;
      const d = c?.loop?.desired;
      if (c?.proxy && d) this.#publishL7(c, d);
    }
    return now;
  }

  status(): AgentStatus {
    const proxies = this.#ads.proxies();
    return {
      agent: {
        pid: process.pid, startedAt: this.#startedAt, nodeName: this.nodeName, xdsAddress: this.#started ? `${parseHostPort('', this.xdsAddress).host}:${this.#ads.port}` : this.xdsAddress,
        adminSocket: this.adminSocket, adminAddress: this.adminAddress,
      },
      xds: {
        snapshots: this.#cache.entries().map((e) => ({
          node: e.nodeId, setAt: e.setAt, versions: { ...e.snapshot.versions },
          resources: Object.fromEntries(PUSH_ORDER.map((k) => [k, e.snapshot.resources[k].size])) as Record<ResourceKind, number>,
          servedTo: [...new Set(proxies.filter((p) => this.#cache.entryFor(p.nodeId) === e).map((p) => p.nodeId))].sort(),
        })),
        proxies,
        nacks: this.#ads.nacks(),
        lastSnapshotFailure: this.#lastFailure,
      },
      cluster: this.#clusterStatus(),
      datapath: this.#datapath.status(),
      telemetry: this.telemetry.status(),
    };
  }

  #clusterStatus(): ClusterStatus | null {
    const c = this.#cluster;
    if (!c) return null;
    const runs = new Map<string, PodRunState>((c.supervisor?.states() ?? []).map((s) => [s.key, s]));
    const desired = c.loop?.desired;
    return {
      source: c.source ? { kind: 'manifests', dir: c.source.dir, last: c.source.last ?? null } : { kind: 'kubernetes', server: c.kube?.server ?? '(starting)', informers: c.kube?.states() ?? [] },
      pods: (desired?.pods ?? []).map((p) => {
        const r = runs.get(p.key);
        return { ...p, ...(r && { runtimeName: r.runtimeName, restarts: r.restarts, log: r.log, ...(r.lastExit !== undefined && { lastExit: r.lastExit }) }) };
      }),
      services: desired?.serviceViews ?? [],
      reconcile: { last: c.loop?.last ?? null, ...(c.loop?.counts ?? { passes: 0, failures: 0, writes: 0, deletes: 0 }) },
      runtimeError: c.supervisor?.lastError ?? null,
      policies: {
        networkPolicies: [...c.store.networkPolicies().keys()].sort(), authorizationPolicies: [...c.store.authorizationPolicies().keys()].sort(),
        enforced: { networkPolicies: c.policy?.last !== undefined && c.policyError === undefined, authorizationPolicies: c.proxy !== undefined },
        kernel: c.policy?.last ? {
          policies: c.policy.last.policies, entries: c.policy.last.entries, subjects: c.policy.last.subjects, compileMs: c.policy.last.compileMs, writeMs: c.policy.last.writeMs,
          ...(c.policy.last.cut && { lastCut: c.policy.last.cut }), notes: c.policy.last.notes, error: c.policyError ?? null,
          guards: this.#datapath.guards().length,
          unguarded: [...(c.guardErrors ?? []), ...[...c.cgroupMissing?.keys() ?? []].map((k) => `${k}: the kubelet's cgroup for it is not found yet (not a policy subject, no guard)`)],
        } : null,
      },
      l7: {
        proxy: c.proxy?.status() ?? null,
        proxyAddress: c.proxy ? POD_NETWORK.gateway : null,
        routes: [...(c.routeStatus ?? new Map<string, RouteStatus>())].map(([key, st]) => ({ key, ...st })).sort((a, b) => (a.key < b.key ? -1 : 1)),
        authorization: [...(c.authorization ?? new Map<string, RbacOutput>())].sort(([a], [b]) => (a < b ? -1 : 1)).map(([port, r]) => ({
          port, notes: r.notes, filters: r.filters.map((f) => ({ action: f.typed_config.rules.action, policies: Object.keys(f.typed_config.rules.policies) })),
        })),
      },
    };
  }

  /**
   * Envoy-style config dump: one node's (own, else the default) when `node`
   * is given, else every snapshot held. `types` is a comma list of
   * clusters, endpoints, listeners, routes.
   */
  configDump(node?: string, types?: string): Record<string, unknown> {
    const kinds = types === undefined ? DUMP_KINDS : types.split(',').map((t) => {
      const k = DUMP_TYPE_NAMES[t.trim()];
      if (!k) throw new InvalidArgumentError(`unknown resource type ${JSON.stringify(t)}; types: ${Object.keys(DUMP_TYPE_NAMES).join(', ')}`);
      return k;
    });
    if (node !== undefined) {
      const e = this.#cache.entryFor(node);
      if (!e) throw new NotFoundError(`no snapshot for node ${JSON.stringify(node)}`);
      return configDump(e.snapshot, kinds);
    }
    const proxies = this.#ads.proxies();
    return {
      snapshots: this.#cache.entries().map((e) => ({
        node: e.nodeId, set_at: e.setAt,
        served_to: [...new Set(proxies.filter((p) => this.#cache.entryFor(p.nodeId) === e).map((p) => p.nodeId))].sort(),
        config_dump: configDump(e.snapshot, kinds),
      })),
    };
  }

  metrics(): MetricFamily[] {
    const dp = this.#datapath.status();
    const ads = this.#ads.stats();
    const byType = (f: (c: (typeof ads.types)[ResourceKind]) => number) => PUSH_ORDER.map((k) => ({ labels: { type: k }, value: f(ads.types[k]) }));
    const out: MetricFamily[] = [
      { name: 'sockmesh_agent_start_time_seconds', help: 'When this agent started, in Unix seconds.', type: 'gauge', samples: [{ value: Date.parse(this.#startedAt) / 1000 }] },
      { name: 'sockmesh_datapath_up', help: 'Whether the kernel datapath is pinned and attached.', type: 'gauge', samples: [{ value: dp.up ? 1 : 0 }] },
      { name: 'sockmesh_datapath_sockets', help: 'Sockets in the sockhash now (each short-circuited connection has two).', type: 'gauge', samples: [{ value: dp.sockets ?? 0 }] },
      { name: 'sockmesh_datapath_endpoints', help: 'Endpoints known to the datapath.', type: 'gauge', samples: [{ value: dp.endpoints?.length ?? 0 }] },
    ];
    for (const [name, value] of Object.entries(dp.counters ?? {})) {
      out.push({ name: `sockmesh_datapath_${name}_total`, help: `Datapath counter ${name}, summed over CPUs.`, type: 'counter', samples: [{ value }] });
    }
    out.push(
      { name: 'sockmesh_xds_streams', help: 'ADS streams open now.', type: 'gauge', samples: [{ value: ads.streamsOpen }] },
      { name: 'sockmesh_xds_streams_opened_total', help: 'ADS streams opened.', type: 'counter', samples: [{ value: ads.streamsOpened }] },
      { name: 'sockmesh_xds_responses_total', help: 'Discovery responses sent, by resource type.', type: 'counter', samples: byType((c) => c.responses) },
      { name: 'sockmesh_xds_resources_sent_total', help: 'Resources in those responses.', type: 'counter', samples: byType((c) => c.resources) },
      { name: 'sockmesh_xds_response_bytes_total', help: 'Encoded bytes of those responses.', type: 'counter', samples: byType((c) => c.bytes) },
      { name: 'sockmesh_xds_acks_total', help: 'Responses the proxies ACKed.', type: 'counter', samples: byType((c) => c.acks) },
      { name: 'sockmesh_xds_nacks_total', help: 'Responses the proxies rejected (NACK).', type: 'counter', samples: byType((c) => c.nacks) },
      {
        name: 'sockmesh_xds_snapshot_resources', help: 'Resources in the snapshot served to node proxies, by type.', type: 'gauge',
        samples: PUSH_ORDER.map((k) => ({ labels: { type: k }, value: this.#snapshot?.resources[k].size ?? 0 })),
      },
      { name: 'sockmesh_xds_push_duration_seconds', help: 'From a new snapshot to the last connected proxy ACKing it.', type: 'histogram', samples: this.#xdsPushSeconds.samples() },
      { name: 'sockmesh_xds_snapshot_failures_total', help: 'Configurations refused as inconsistent (the last good one kept serving).', type: 'counter', samples: [{ value: this.#snapshotFailures }] },
    );
    const c = this.#cluster;
    if (c?.loop) {
      const counts = c.loop.counts;
      const last = c.loop.last;
      const pods = c.loop.desired?.pods ?? [];
      out.push(
        { name: 'sockmesh_reconcile_passes_total', help: 'Reconcile passes (cluster state into the datapath maps).', type: 'counter', samples: [{ value: counts.passes }] },
        { name: 'sockmesh_reconcile_failures_total', help: 'Reconcile passes that failed (retried in full).', type: 'counter', samples: [{ value: counts.failures }] },
        { name: 'sockmesh_reconcile_map_writes_total', help: 'Map entries written by reconcile passes.', type: 'counter', samples: [{ value: counts.writes }] },
        { name: 'sockmesh_reconcile_map_deletes_total', help: 'Map entries deleted by reconcile passes.', type: 'counter', samples: [{ value: counts.deletes }] },
        {
          name: 'sockmesh_reconcile_last_seconds', help: 'Duration of the last pass, by step.', type: 'gauge',
          samples: [{ labels: { step: 'compile' }, value: (last?.compileMs ?? 0) / 1000 }, { labels: { step: 'maps' }, value: (last?.reconcileMs ?? 0) / 1000 }],
        },
        {
          name: 'sockmesh_pods', help: 'Pods known, by whether they are in the mesh.', type: 'gauge',
          samples: [{ labels: { enrolled: 'true' }, value: pods.filter((p) => p.enrolled).length }, { labels: { enrolled: 'false' }, value: pods.filter((p) => !p.enrolled).length }],
        },
        { name: 'sockmesh_reconcile_duration_seconds', help: 'Reconcile pass duration (compile + map writes), by kind.', type: 'histogram', samples: this.#reconcileSeconds.samples() },
        { name: 'sockmesh_service_frontends', help: 'Service VIP:port frontends balanced in the kernel.', type: 'gauge', samples: [{ value: c.loop.desired?.services.size ?? 0 }] },
      );
      if (c.source) {
        out.push({ name: 'sockmesh_manifests_valid', help: 'Whether the last read of the manifest directory was applied (0: the last good set still runs).', type: 'gauge', samples: [{ value: c.source.last?.ok === false ? 0 : 1 }] });
      }
    }
    out.push(...this.telemetry.metricFamilies());
    return out;
  }
}
