/**
 * The per-node agent, composed: the kernel datapath, the xDS control plane
 * (snapshot cache + ADS server) the node proxy connects to, and the admin
 * API (status, config dump, metrics). Constructor validates; start() does the
 * I/O; stop() releases everything in reverse order.
 */
import { hostname } from 'node:os';
import { AdsServer } from '../xds/ads-server.js';
import { DUMP_KINDS, DUMP_TYPE_NAMES, configDump } from '../xds/config-dump.js';
import { PUSH_ORDER, type ResourceKind, Snapshot, type SnapshotInput } from '../xds/snapshot.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';
import { AdminServer } from './admin/admin-server.js';
import { DEFAULT_ADMIN_SOCKET } from './admin/admin-client.js';
import { type MetricFamily, PROMETHEUS_CONTENT_TYPE, renderPrometheus } from './admin/prometheus.js';
import { Datapath, type DatapathOptions, type DatapathStatus } from './datapath/datapath.js';
import { encodeIPv4 } from './datapath/layout.js';
import { InvalidArgumentError, NotFoundError, SockmeshError } from './errors.js';
import { parseHostPort } from './host-port.js';

/** Where the node proxy finds the agent's ADS server by default (Istio's plaintext xDS port). */
export const DEFAULT_XDS_ADDRESS = '127.0.0.1:15010';
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
  datapath: DatapathStatus;
}

export class Agent {
  readonly nodeName: string;
  readonly xdsAddress: string;
  readonly adminSocket: string;
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
    this.#ads = new AdsServer({ cache: this.#cache, address: this.xdsAddress });
    const adminAddress = opts.adminAddress === undefined ? DEFAULT_ADMIN_ADDRESS : opts.adminAddress;
    this.#admin = new AdminServer({
      socketPath: this.adminSocket,
      ...(adminAddress !== null && { address: adminAddress }),
      routes: {
        '/status': () => ({ body: this.status() }),
        '/config_dump': (q) => ({ body: this.configDump(q.get('node') ?? undefined, q.get('types') ?? undefined) }),
        '/metrics': () => ({ body: renderPrometheus(this.metrics()), contentType: PROMETHEUS_CONTENT_TYPE }),
        '/healthz': () => ({ body: 'ok\n' }),
      },
    });
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
      for (const ip of this.#enroll) this.#datapath.enroll(ip);
      this.publish({});
      try {
        await this.#ads.start();
      } catch (err) {
        throw new InvalidArgumentError(`the xDS server cannot listen on ${this.xdsAddress}: ${(err as Error).message}`, 'pick another with --xds-address');
      }
      await this.#admin.start();
    } catch (err) {
      await this.#ads.stop();
      this.#cache.close();
      this.#datapath.stop();
      throw err;
    }
    this.#started = true;
    return result;
  }

  /**
   * Stops serving, in reverse order. The datapath stays pinned in the
   * kernel unless `down` is set.
   */
  async stop(opts: { down?: boolean } = {}): Promise<void> {
    await this.#admin.stop();
    await this.#ads.stop();
    this.#cache.close();
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
    this.#snapshot = snap;
    this.#cache.setDefaultSnapshot(snap);
    return snap;
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
      datapath: this.#datapath.status(),
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
      { name: 'sockmesh_xds_snapshot_failures_total', help: 'Configurations refused as inconsistent (the last good one kept serving).', type: 'counter', samples: [{ value: this.#snapshotFailures }] },
    );
    return out;
  }
}
