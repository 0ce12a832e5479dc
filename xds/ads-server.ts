/**
 * The Aggregated Discovery Service, state of the world
 * (StreamAggregatedResources). The server owns streams, nonces and ACK/NACK
 * bookkeeping; the SnapshotCache owns the resources.
 *
 * Per stream and type: a response gets a fresh nonce; a request whose
 * response_nonce is not the last one sent is stale and ignored; a request
 * carrying the last nonce is an ACK, or a NACK when it has error_detail. A
 * NACK is recorded and the rejected version is not sent again: the next
 * response goes out when the snapshot (or the subscription) changes.
 * Listeners and clusters are wildcard subscriptions; routes and endpoints
 * are named, and an empty name list unsubscribes.
 *
 * Incremental (DeltaAggregatedResources): per type the server keeps what the
 * client has (name → version, seeded from initial_resource_versions) and
 * sends only resources whose version differs, plus removed_resources for
 * names the client has that are gone or unsubscribed. Subscriptions change
 * with every request, whatever its nonce; ACK/NACK bookkeeping needs the
 * latest nonce, as in state of the world.
 */
import * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import { adsService } from './envoy-protos.js';
import { PUSH_ORDER, type ResourceKind, type Snapshot, TYPE_URL, kindOf } from './snapshot.js';
import type { SnapshotCache } from './snapshot-cache.js';

export interface AdsServerOptions {
  cache: SnapshotCache;
  /** host:port to listen on. Default: 127.0.0.1:0 (a free port). */
  address?: string;
  /** How many NACKs to remember for status. Default: 100. */
  nackHistory?: number;
}

/** A rejected response, as the client reported it. */
export interface NackRecord {
  nodeId: string;
  typeUrl: string;
  /** the version the client rejected */
  version: string;
  nonce: string;
  /** error_detail.message */
  error: string;
  at: string;
}

export interface TypeState {
  /** '*' for a wildcard subscription, else the names asked for */
  names: '*' | string[];
  sentVersion?: string;
  sentNonce?: string;
  ackedVersion?: string;
  lastNack?: NackRecord;
}

/** A connected proxy, for status. */
export interface ProxyStatus {
  stream: number;
  nodeId: string;
  protocol: 'sotw' | 'delta';
  connectedAt: string;
  types: Partial<Record<ResourceKind, TypeState>>;
}

interface DiscoveryRequest {
  version_info: string;
  node?: { id?: string } | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail?: { code?: number; message?: string } | null;
}

interface DeltaDiscoveryRequest {
  node?: { id?: string } | null;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail?: { code?: number; message?: string } | null;
}

type AdsCall = grpc.ServerDuplexStream<DiscoveryRequest | DeltaDiscoveryRequest, unknown>;

interface StreamState extends ProxyStatus {
  call: AdsCall;
  cancelWatch?: () => void;
  /** delta: what the client has per type, name → version */
  known: Partial<Record<ResourceKind, Map<string, string>>>;
  /** delta: the snapshot the client was last brought in step with, per type */
  inStep: Partial<Record<ResourceKind, Snapshot>>;
}

/** What changed of one kind between two snapshots: computed once per push, shared by every stream. */
interface KindDiff { changed: string[]; removed: string[] }
const diffs = new WeakMap<Snapshot, WeakMap<Snapshot, Partial<Record<ResourceKind, KindDiff>>>>();

function snapshotDiff(prev: Snapshot, next: Snapshot, kind: ResourceKind): KindDiff {
  let byNext = diffs.get(prev);
  if (!byNext) diffs.set(prev, (byNext = new WeakMap()));
  let perKind = byNext.get(next);
  if (!perKind) byNext.set(next, (perKind = {}));
  let d = perKind[kind];
  if (!d) {
    const before = prev.resources[kind];
    const after = next.resources[kind];
    d = perKind[kind] = {
      changed: [...after.values()].filter((r) => before.get(r.name)?.version !== r.version).map((r) => r.name),
      removed: [...before.keys()].filter((n) => !after.has(n)),
    };
  }
  return d;
}

const WILDCARD_KINDS: ReadonlySet<ResourceKind> = new Set(['cluster', 'listener']);

/** The version of what a subscription sees in a snapshot. */
function versionFor(snap: Snapshot, kind: ResourceKind, names: '*' | string[]): string {
  if (names === '*') return snap.versions[kind];
  const h = createHash('sha256');
  for (const n of [...names].sort()) {
    const r = snap.resources[kind].get(n);
    h.update(`${n}\0${r?.version ?? '-'}\0`);
  }
  return h.digest('hex').slice(0, 16);
}

export class AdsServer {
  readonly #cache: SnapshotCache;
  readonly #address: string;
  readonly #nackHistory: number;
  #server: grpc.Server | undefined;
  #streams = new Map<number, StreamState>();
  #nextStream = 1;
  #nextNonce = 1;
  #nacks: NackRecord[] = [];
  #port = 0;

  constructor(opts: AdsServerOptions) {
    this.#cache = opts.cache;
    this.#address = opts.address ?? '127.0.0.1:0';
    this.#nackHistory = opts.nackHistory ?? 100;
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<number> {
    const server = new grpc.Server();
    const service = adsService().service;
    server.addService(service, {
      StreamAggregatedResources: (call: AdsCall) => this.#onStream(call, 'sotw'),
      DeltaAggregatedResources: (call: AdsCall) => this.#onStream(call, 'delta'),
    });
    this.#port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(this.#address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
    });
    this.#server = server;
    return this.#port;
  }

  /** Ends every stream and stops listening. */
  async stop(): Promise<void> {
    for (const st of this.#streams.values()) {
      st.cancelWatch?.();
      st.call.end();
    }
    this.#streams.clear();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }

  /** Connected proxies with their per-type versions and last NACK. */
  proxies(): ProxyStatus[] {
    return [...this.#streams.values()].map(({ stream, nodeId, protocol, connectedAt, types }) => ({
      stream, nodeId, protocol, connectedAt, types: structuredClone(types),
    }));
  }

  /** The most recent NACKs, oldest first. */
  nacks(): NackRecord[] {
    return [...this.#nacks];
  }

  #onStream(call: AdsCall, protocol: 'sotw' | 'delta'): void {
    const st: StreamState = {
      stream: this.#nextStream++, nodeId: '', protocol, connectedAt: new Date().toISOString(), types: {}, call, known: {}, inStep: {},
    };
    const done = () => {
      st.cancelWatch?.();
      this.#streams.delete(st.stream);
    };
    call.on('data', (req: DiscoveryRequest | DeltaDiscoveryRequest) => {
      if (protocol === 'sotw') this.#onRequest(st, req as DiscoveryRequest);
      else this.#onDeltaRequest(st, req as DeltaDiscoveryRequest);
    });
    call.on('end', () => {
      done();
      call.end();
    });
    call.on('error', done);
    call.on('cancelled', done);
  }

  #fail(st: StreamState, code: grpc.status, details: string): void {
    st.cancelWatch?.();
    this.#streams.delete(st.stream);
    st.call.emit('error', { code, details });
  }

  /** Identifies the stream's node and checks the type; returns the kind, or undefined after ending the stream. */
  #admit(st: StreamState, req: { node?: { id?: string } | null; type_url: string }): ResourceKind | undefined {
    if (!st.nodeId) {
      const id = req.node?.id;
      if (!id) {
        this.#fail(st, grpc.status.INVALID_ARGUMENT, 'the first request of a stream must carry node.id');
        return undefined;
      }
      st.nodeId = id;
      this.#streams.set(st.stream, st);
      st.cancelWatch = this.#cache.watch(id, (snap) => (st.protocol === 'sotw' ? this.#push(st, snap) : this.#pushDelta(st, snap)));
    }
    const kind = kindOf(req.type_url);
    if (!kind) {
      this.#fail(st, grpc.status.INVALID_ARGUMENT, `unknown type_url ${JSON.stringify(req.type_url)}; served: ${Object.values(TYPE_URL).join(', ')}`);
    }
    return kind;
  }

  /** ACK or NACK of the last response of this type (the caller checked the nonce). */
  #acknowledge(st: StreamState, ts: TypeState, req: { type_url: string; response_nonce: string; error_detail?: { code?: number; message?: string } | null }, ackedVersion: string): void {
    if (req.error_detail && (req.error_detail.message || req.error_detail.code)) {
      const nack: NackRecord = {
        nodeId: st.nodeId, typeUrl: req.type_url, version: ts.sentVersion ?? '', nonce: req.response_nonce,
        error: req.error_detail.message ?? `code ${req.error_detail.code}`, at: new Date().toISOString(),
      };
      ts.lastNack = nack;
      this.#nacks.push(nack);
      if (this.#nacks.length > this.#nackHistory) this.#nacks.shift();
    } else {
      ts.ackedVersion = ackedVersion;
    }
  }

  #onRequest(st: StreamState, req: DiscoveryRequest): void {
    const kind = this.#admit(st, req);
    if (!kind) return;
    let ts = st.types[kind];
    const first = ts === undefined;
    if (req.response_nonce) {
      if (!ts || req.response_nonce !== ts.sentNonce) return; // stale: the client has not seen the latest response
      this.#acknowledge(st, ts, req, req.version_info);
    }
    const names: '*' | string[] = WILDCARD_KINDS.has(kind) && req.resource_names.length === 0 ? '*' : [...req.resource_names].sort();
    const changed = !ts || JSON.stringify(ts.names) !== JSON.stringify(names);
    if (!ts) st.types[kind] = ts = { names };
    else ts.names = names;
    const snap = this.#cache.snapshotFor(st.nodeId);
    if (!snap) return; // the watch sends once there is one
    // a bare ACK/NACK sends nothing: snapshot changes go out through the ordered push
    if (first || changed) this.#send(st, kind, snap);
  }

  #send(st: StreamState, kind: ResourceKind, snap: Snapshot): void {
    const ts = st.types[kind]!;
    const all = snap.resources[kind];
    const chosen = ts.names === '*' ? [...all.values()] : ts.names.flatMap((n) => all.get(n) ?? []);
    const version = versionFor(snap, kind, ts.names);
    const nonce = String(this.#nextNonce++);
    ts.sentVersion = version;
    ts.sentNonce = nonce;
    st.call.write({ version_info: version, resources: chosen.map((r) => r.any), type_url: TYPE_URL[kind], nonce });
  }

  /** A new snapshot: send each subscribed type whose version changed, clusters first, routes last. */
  #push(st: StreamState, snap: Snapshot): void {
    for (const kind of PUSH_ORDER) {
      const ts = st.types[kind];
      if (ts && versionFor(snap, kind, ts.names) !== ts.sentVersion) this.#send(st, kind, snap);
    }
  }

  #onDeltaRequest(st: StreamState, req: DeltaDiscoveryRequest): void {
    const kind = this.#admit(st, req);
    if (!kind) return;
    let ts = st.types[kind];
    const first = ts === undefined;
    if (!ts) {
      const wildcard = WILDCARD_KINDS.has(kind) && (req.resource_names_subscribe.length === 0 || req.resource_names_subscribe.includes('*'));
      st.types[kind] = ts = { names: wildcard ? '*' : [] };
      st.known[kind] = new Map(Object.entries(req.initial_resource_versions ?? {}));
    }
    if (req.response_nonce && req.response_nonce === ts.sentNonce) this.#acknowledge(st, ts, req, ts.sentVersion ?? '');
    const known = st.known[kind]!;
    if (ts.names !== '*') {
      const names = new Set(ts.names);
      for (const n of req.resource_names_subscribe) if (n !== '*') names.add(n);
      for (const n of req.resource_names_unsubscribe) {
        names.delete(n);
        known.delete(n); // a later subscribe sends it again
      }
      ts.names = [...names].sort();
    }
    // a bare ACK/NACK sends nothing: snapshot changes go out through the ordered push
    const changed = first || req.resource_names_subscribe.length > 0 || req.resource_names_unsubscribe.length > 0;
    const snap = this.#cache.snapshotFor(st.nodeId);
    if (snap && changed) this.#sendDelta(st, kind, snap, 'both', true);
  }

  /**
   * Sends what the client lacks or has in another version ('upsert'), what
   * it must remove ('remove'), or both; nothing when in step.
   */
  #sendDelta(st: StreamState, kind: ResourceKind, snap: Snapshot, what: 'upsert' | 'remove' | 'both', full = false): void {
    const ts = st.types[kind]!;
    const known = st.known[kind]!;
    const all = snap.resources[kind];
    const subscribed = ts.names === '*' ? undefined : new Set(ts.names);
    // in step with an earlier snapshot: only what changed since can differ (the diff is shared by all streams)
    const prev = full ? undefined : st.inStep[kind];
    const diff = prev && prev !== snap ? snapshotDiff(prev, snap, kind) : undefined;
    const candidates = prev === snap ? [] : diff ? diff.changed : ts.names === '*' ? [...all.keys()] : ts.names;
    const resources = what === 'remove' ? [] : candidates.flatMap((n) => {
      const r = all.get(n);
      return r && (subscribed === undefined || subscribed.has(n)) && known.get(n) !== r.version
        ? [{ name: n, version: r.version, resource: r.any }] : [];
    });
    const gone = diff ? diff.removed.filter((n) => known.has(n)) : [...known.keys()];
    const removed = what === 'upsert' ? [] : gone.filter((n) => !all.has(n) || (subscribed !== undefined && !subscribed.has(n)));
    if (what !== 'upsert') st.inStep[kind] = snap;
    if (resources.length === 0 && removed.length === 0) return;
    for (const r of resources) known.set(r.name, r.version);
    for (const n of removed) known.delete(n);
    const nonce = String(this.#nextNonce++);
    ts.sentVersion = snap.versions[kind];
    ts.sentNonce = nonce;
    st.call.write({ system_version_info: snap.versions[kind], resources, removed_resources: removed, type_url: TYPE_URL[kind], nonce });
  }

  /** Make before break: additions and changes clusters first, then removals routes first. */
  #pushDelta(st: StreamState, snap: Snapshot): void {
    for (const kind of PUSH_ORDER) if (st.types[kind]) this.#sendDelta(st, kind, snap, 'upsert');
    for (const kind of [...PUSH_ORDER].reverse()) if (st.types[kind]) this.#sendDelta(st, kind, snap, 'remove');
  }
}
