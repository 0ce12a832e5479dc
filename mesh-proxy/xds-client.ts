/**
 * mesh-proxy's xDS client: one ADS stream (state of the world), as Envoy
 * opens it: listeners and clusters by wildcard, then the route
 * configurations and endpoint sets they name. Each response is translated
 * whole; what the proxy cannot run is NACKed with the reason and the last
 * good configuration stays; what it can is ACKed and applied. Route and
 * endpoint responses may carry only what changed: the rest is kept. The
 * stream reconnects with backoff; on reconnect the versions it has are sent.
 */
import * as grpc from '@grpc/grpc-js';
import { adsService } from '../xds/envoy-protos.js';
import { TYPE_URL } from '../xds/snapshot.js';
import { decodeResource } from '../xds/strict-encode.js';
import {
  type ClusterConfig, type Endpoints, type ListenerConfig, ProxyConfigError, type RouteTable, clusterConfig, endpoints, listenerConfig, routeTable,
} from './config.js';

/** Everything the proxy runs, consistent at the moment it is handed over. */
export interface ProxyConfig {
  listeners: ReadonlyMap<string, ListenerConfig>;
  routes: ReadonlyMap<string, RouteTable>;
  clusters: ReadonlyMap<string, ClusterConfig>;
  endpoints: ReadonlyMap<string, Endpoints>;
}

export interface XdsClientOptions {
  /** "unix:/run/sockmesh/xds.sock" or "ip:port" */
  target: string;
  nodeId: string;
  /** node.cluster. Default: "sockmesh-node-proxy". */
  nodeCluster?: string;
  /** called after every applied update */
  onConfig: (config: ProxyConfig) => void;
  /** First reconnect delay; doubles up to 5 s. Default: 200 ms. */
  backoffMs?: number;
}

type Kind = 'listener' | 'cluster' | 'route' | 'endpoint';
const TYPE_NAME: Record<Kind, string> = {
  listener: 'envoy.config.listener.v3.Listener',
  cluster: 'envoy.config.cluster.v3.Cluster',
  route: 'envoy.config.route.v3.RouteConfiguration',
  endpoint: 'envoy.config.endpoint.v3.ClusterLoadAssignment',
};
const KIND_OF = new Map<string, Kind>((Object.keys(TYPE_NAME) as Kind[]).map((k) => [TYPE_URL[k], k]));

interface Response { version_info: string; type_url: string; nonce: string; resources: { type_url: string; value: Buffer }[] }

/** Per type: what was ACKed, the subscription, the last NACK. */
export interface TypeStatus {
  version: string;
  names: string[] | '*';
  lastNack?: { version: string; error: string; at: string };
}

export class XdsClient {
  readonly #o: XdsClientOptions;
  #client: grpc.Client | undefined;
  #call: grpc.ClientDuplexStream<unknown, Response> | undefined;
  #listeners = new Map<string, ListenerConfig>();
  #routes = new Map<string, RouteTable>();
  #clusters = new Map<string, ClusterConfig>();
  /** the clusters the last CDS response had (others are kept only while a route in use sends to them) */
  #cdsClusters = new Map<string, ClusterConfig>();
  #endpoints = new Map<string, Endpoints>();
  readonly #status: Record<Kind, TypeStatus> = {
    listener: { version: '', names: '*' }, cluster: { version: '', names: '*' }, route: { version: '', names: [] }, endpoint: { version: '', names: [] },
  };
  #stopped = false;
  #delay: number;
  #timer: NodeJS.Timeout | undefined;
  connected = false;
  acks = 0;
  nacks = 0;

  constructor(opts: XdsClientOptions) {
    this.#o = opts;
    this.#delay = opts.backoffMs ?? 200;
  }

  status(): Record<Kind, TypeStatus> {
    return structuredClone(this.#status);
  }

  start(): void {
    this.#stopped = false;
    this.#connect();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#call?.cancel();
    this.#client?.close();
  }

  #connect(): void {
    const Ads = adsService();
    this.#client = new Ads(this.#o.target, grpc.credentials.createInsecure());
    const stub = this.#client as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<unknown, Response> };
    const call = stub.StreamAggregatedResources();
    this.#call = call;
    call.on('data', (r: Response) => {
      this.connected = true;
      this.#delay = this.#o.backoffMs ?? 200;
      this.#onResponse(r);
    });
    const lost = () => {
      if (this.#call !== call) return;
      this.connected = false;
      this.#call = undefined;
      this.#client?.close();
      if (this.#stopped) return;
      this.#timer = setTimeout(() => this.#connect(), this.#delay);
      this.#delay = Math.min(this.#delay * 2, 5000);
    };
    call.on('error', lost);
    call.on('end', lost);
    // what we have is kept across reconnects: the server sends what differs from these versions
    for (const k of ['cluster', 'listener'] as const) this.#request(k, this.#status[k].version, '');
    if (this.#status.route.names !== '*' && this.#status.route.names.length > 0) this.#request('route', this.#status.route.version, '');
    if (this.#status.endpoint.names !== '*' && this.#status.endpoint.names.length > 0) this.#request('endpoint', this.#status.endpoint.version, '');
  }

  #request(kind: Kind, version: string, nonce: string, error?: string): void {
    const names = this.#status[kind].names;
    this.#call?.write({
      node: { id: this.#o.nodeId, cluster: this.#o.nodeCluster ?? 'sockmesh-node-proxy', user_agent_name: 'mesh-proxy' },
      type_url: TYPE_URL[kind], version_info: version, response_nonce: nonce, resource_names: names === '*' ? [] : names,
      ...(error !== undefined && { error_detail: { code: 3, message: error } }),
    });
  }

  #onResponse(r: Response): void {
    const kind = KIND_OF.get(r.type_url);
    if (!kind) return;
    try {
      const decoded = r.resources.map((a) => decodeResource(TYPE_NAME[kind], a.value));
      this.#apply(kind, decoded);
    } catch (err) {
      const message = err instanceof ProxyConfigError ? err.message : `cannot apply ${kind} version ${r.version_info}: ${(err as Error).message}`;
      this.#status[kind].lastNack = { version: r.version_info, error: message, at: new Date().toISOString() };
      this.nacks++;
      this.#request(kind, this.#status[kind].version, r.nonce, message);
      return;
    }
    this.#status[kind].version = r.version_info;
    this.acks++;
    this.#request(kind, r.version_info, r.nonce);
    this.#subscribe();
    this.#o.onConfig({ listeners: this.#listeners, routes: this.#routes, clusters: this.#clusters, endpoints: this.#endpoints });
  }

  /** Translates every resource first, then swaps: a response applies whole or not at all. */
  #apply(kind: Kind, resources: Record<string, unknown>[]): void {
    switch (kind) {
      case 'listener': {
        const next = new Map(resources.map((x) => { const l = listenerConfig(x); return [l.name, l]; }));
        const ports = new Map<string, string>();
        for (const l of next.values()) {
          const at = `${l.ip}:${l.port}`;
          if (ports.has(at)) throw new ProxyConfigError(`listeners ${ports.get(at)} and ${l.name} both listen on ${at}`);
          ports.set(at, l.name);
        }
        this.#listeners = next;
        break;
      }
      case 'cluster':
        this.#cdsClusters = new Map(resources.map((x) => { const c = clusterConfig(x); return [c.name, c]; }));
        this.#clusters = this.#withReferenced(this.#cdsClusters);
        break;
      case 'route': {
        const next = new Map(this.#routes);
        for (const x of resources) { const t = routeTable(x); next.set(t.name, t); }
        this.#routes = next;
        this.#clusters = this.#withReferenced(this.#cdsClusters);
        break;
      }
      case 'endpoint': {
        const next = new Map(this.#endpoints);
        for (const x of resources) next.set(String(x.cluster_name), endpoints(x));
        this.#endpoints = next;
        break;
      }
    }
  }

  /**
   * The clusters of the last CDS response, plus those it dropped that a
   * route in use still sends to (a route update the proxy refused keeps
   * its clusters until routes that no longer need them arrive).
   */
  #withReferenced(cds: Map<string, ClusterConfig>): Map<string, ClusterConfig> {
    const out = new Map(cds);
    for (const t of this.#routes.values()) {
      for (const vh of t.virtualHosts) for (const r of vh.routes) for (const c of r.clusters) {
        const old = this.#clusters.get(c.name);
        if (!out.has(c.name) && old) out.set(c.name, old);
      }
    }
    return out;
  }

  /** Routes and endpoints follow what listeners and clusters name; what is no longer named is dropped. */
  #subscribe(): void {
    const routeNames = [...new Set([...this.#listeners.values()].map((l) => l.routeConfig))].sort();
    const edsNames = [...new Set([...this.#clusters.values()].map((c) => c.edsName))].sort();
    for (const [kind, names, have] of [['route', routeNames, this.#routes], ['endpoint', edsNames, this.#endpoints]] as const) {
      const st = this.#status[kind];
      if (JSON.stringify(st.names) === JSON.stringify(names)) continue;
      st.names = names;
      for (const n of [...have.keys()]) if (!names.includes(n)) have.delete(n);
      this.#request(kind, st.version, '');
    }
  }
}
