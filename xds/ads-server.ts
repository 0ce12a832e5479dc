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
import diagnosticsChannel from 'node:diagnostics_channel';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { adsService, envoyRoot } from './envoy-protos.js';
import { encodeDeltaResponse, encodeSotwResponse, passThroughResponses } from './response-encoder.js';
import { type EncodedResource, PUSH_ORDER, type ResourceKind, type Snapshot, TYPE_URL, kindOf } from './snapshot.js';
import { wireProblem } from './wire-check.js';
import type { SnapshotCache } from './snapshot-cache.js';

export interface AdsServerOptions {
  cache: SnapshotCache;
  /** host:port to listen on. Default: 127.0.0.1:0 (a free port). */
  address?: string;
  /** A unix socket to serve on as well (for proxies in other network namespaces). Default: none. */
  socketPath?: string;
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

/** What the server sent and heard back for one resource type, since it started. */
export interface TypeCounters {
  /** responses sent */
  responses: number;
  /** resources in those responses */
  resources: number;
  /** encoded bytes of those responses */
  bytes: number;
  acks: number;
  nacks: number;
}

/** Counters for metrics. */
export interface AdsStats {
  streamsOpened: number;
  streamsOpen: number;
  types: Record<ResourceKind, TypeCounters>;
}

/**
 * Published on `ADS_ACK_CHANNEL` (node:diagnostics_channel) for every ACK
 * and NACK, so benchmarks and telemetry can follow clients without polling.
 */
export interface AdsAckEvent {
  nodeId: string;
  stream: number;
  kind: ResourceKind;
  /** the version the client ACKed, or rejected when `nack` is set */
  version: string;
  nack?: string;
}

export const ADS_ACK_CHANNEL = 'sockmesh:xds:ack';
const ackChannel = diagnosticsChannel.channel(ADS_ACK_CHANNEL);

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

/** What the request deserializer yields for bytes that are not the request message. */
interface Undecodable { undecodable: string }

type AdsCall = grpc.ServerDuplexStream<DiscoveryRequest | DeltaDiscoveryRequest | Undecodable, unknown>;

/**
 * The ADS service as this server serves it: requests are checked on the
 * wire before they are decoded (garbled bytes end the stream with a reason
 * instead of decoding as an empty request); responses may be pre-encoded.
 */
function serverDefinition(): grpc.ServiceDefinition {
  const service = passThroughResponses(adsService().service);
  const requestType = {
    StreamAggregatedResources: 'envoy.service.discovery.v3.DiscoveryRequest',
    DeltaAggregatedResources: 'envoy.service.discovery.v3.DeltaDiscoveryRequest',
  } as Record<string, string>;
  return Object.fromEntries(Object.entries(service).map(([method, def]) => {
    const typeName = requestType[method];
    if (!typeName) return [method, def];
    const type = envoyRoot().lookupType(typeName);
    const decode = def.requestDeserialize;
    return [method, {
      ...def,
      requestDeserialize: (b: Buffer) => {
        const problem = wireProblem(type, b);
        return problem === undefined ? decode(b) : ({ undecodable: `${typeName}: ${problem}` } satisfies Undecodable);
      },
    }];
  }));
}

interface StreamState extends ProxyStatus {
  call: AdsCall;
  cancelWatch?: () => void;
  /** named subscriptions, for membership checks */
  subscribed: Partial<Record<ResourceKind, Set<string>>>;
  /** delta: what the client has per type, name → version */
  known: Partial<Record<ResourceKind, Map<string, string>>>;
  /** the snapshot the client was last brought in step with, per type (sotw: named types; delta: all) */
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
/** Kinds whose state-of-the-world responses may carry only what changed. */
const PARTIAL_KINDS: ReadonlySet<ResourceKind> = new Set(['endpoint', 'route']);

/** Whether a request's resource names are the subscription a stream already has. */
function sameNames(current: ReadonlySet<string> | undefined, names: readonly string[]): boolean {
  if (!current || names.length < current.size) return false;
  for (const n of names) if (!current.has(n)) return false;
  return names.length === current.size || new Set(names).size === current.size;
}

export class AdsServer {
  readonly #cache: SnapshotCache;
  readonly #address: string;
  readonly #socketPath: string | undefined;
  readonly #nackHistory: number;
  #server: grpc.Server | undefined;
  #streams = new Map<number, StreamState>();
  #nextStream = 1;
  #nextNonce = 1;
  #counters = Object.fromEntries(PUSH_ORDER.map((k) => [k, { responses: 0, resources: 0, bytes: 0, acks: 0, nacks: 0 }])) as Record<ResourceKind, TypeCounters>;
  #streamsOpened = 0;
  #nacks: NackRecord[] = [];
  #port = 0;

  constructor(opts: AdsServerOptions) {
    this.#cache = opts.cache;
    this.#address = opts.address ?? '127.0.0.1:0';
    this.#socketPath = opts.socketPath;
    this.#nackHistory = opts.nackHistory ?? 100;
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<number> {
    const server = new grpc.Server();
    server.addService(serverDefinition(), {
      StreamAggregatedResources: (call: AdsCall) => this.#onStream(call, 'sotw'),
      DeltaAggregatedResources: (call: AdsCall) => this.#onStream(call, 'delta'),
    });
    this.#port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(this.#address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
    });
    if (this.#socketPath) {
      rmSync(this.#socketPath, { force: true }); // an earlier agent's (a running one holds the admin socket, checked before)
      mkdirSync(dirname(this.#socketPath), { recursive: true });
      await new Promise<void>((resolve, reject) => {
        server.bindAsync(`unix:${this.#socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
      });
      chmodSync(this.#socketPath, 0o600);
    }
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
    if (server && this.#socketPath) rmSync(this.#socketPath, { force: true });
  }

  /** Connected proxies with their per-type versions and last NACK. */
  proxies(): ProxyStatus[] {
    return [...this.#streams.values()].map(({ stream, nodeId, protocol, connectedAt, types }) => ({
      stream, nodeId, protocol, connectedAt, types: structuredClone(types),
    }));
  }

  /** Counters since start, per type. */
  stats(): AdsStats {
    return { streamsOpened: this.#streamsOpened, streamsOpen: this.#streams.size, types: structuredClone(this.#counters) };
  }

  /** The most recent NACKs, oldest first. */
  nacks(): NackRecord[] {
    return [...this.#nacks];
  }

  #onStream(call: AdsCall, protocol: 'sotw' | 'delta'): void {
    const st: StreamState = {
      stream: this.#nextStream++, nodeId: '', protocol, connectedAt: new Date().toISOString(), types: {}, call, subscribed: {}, known: {}, inStep: {},
    };
    this.#streamsOpened++;
    const done = () => {
      st.cancelWatch?.();
      this.#streams.delete(st.stream);
    };
    call.on('data', (req: DiscoveryRequest | DeltaDiscoveryRequest | Undecodable) => {
      if ('undecodable' in req) {
        this.#fail(st, grpc.status.INVALID_ARGUMENT, `undecodable request: ${req.undecodable}`);
        return;
      }
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
  #acknowledge(st: StreamState, kind: ResourceKind, ts: TypeState, req: { type_url: string; response_nonce: string; error_detail?: { code?: number; message?: string } | null }, ackedVersion: string): void {
    if (req.error_detail && (req.error_detail.message || req.error_detail.code)) {
      const nack: NackRecord = {
        nodeId: st.nodeId, typeUrl: req.type_url, version: ts.sentVersion ?? '', nonce: req.response_nonce,
        error: req.error_detail.message ?? `code ${req.error_detail.code}`, at: new Date().toISOString(),
      };
      ts.lastNack = nack;
      this.#counters[kind].nacks++;
      if (ackChannel.hasSubscribers) ackChannel.publish({ nodeId: st.nodeId, stream: st.stream, kind, version: nack.version, nack: nack.error } satisfies AdsAckEvent);
      this.#nacks.push(nack);
      if (this.#nacks.length > this.#nackHistory) this.#nacks.shift();
    } else {
      ts.ackedVersion = ackedVersion;
      this.#counters[kind].acks++;
      if (ackChannel.hasSubscribers) ackChannel.publish({ nodeId: st.nodeId, stream: st.stream, kind, version: ackedVersion } satisfies AdsAckEvent);
    }
  }

  #onRequest(st: StreamState, req: DiscoveryRequest): void {
    const kind = this.#admit(st, req);
    if (!kind) return;
    let ts = st.types[kind];
    const first = ts === undefined;
    if (req.response_nonce) {
      if (!ts || req.response_nonce !== ts.sentNonce) return; // stale: the client has not seen the latest response
      this.#acknowledge(st, kind, ts, req, req.version_info);
    }
    const wildcard = WILDCARD_KINDS.has(kind) && req.resource_names.length === 0;
    const changed = !ts || (wildcard ? ts.names !== '*' : !sameNames(st.subscribed[kind], req.resource_names));
    if (changed) {
      const names = wildcard ? '*' : [...new Set(req.resource_names)].sort();
      if (!ts) st.types[kind] = ts = { names };
      else ts.names = names;
      if (names === '*') delete st.subscribed[kind];
      else st.subscribed[kind] = new Set(names);
    }
    const snap = this.#cache.snapshotFor(st.nodeId);
    if (!snap) return; // the watch sends once there is one
    // a bare ACK/NACK sends nothing: snapshot changes go out through the ordered push
    if (first || changed) this.#send(st, kind, snap);
  }

  /**
   * Sends one response of a kind: every subscribed resource, or only `only`
   * (named kinds in a push: the resources that changed).
   */
  #send(st: StreamState, kind: ResourceKind, snap: Snapshot, only?: readonly string[]): void {
    const ts = st.types[kind]!;
    const all = snap.resources[kind];
    const names = only ?? (ts.names === '*' ? undefined : ts.names);
    const chosen: EncodedResource[] = names === undefined ? [...all.values()] : names.flatMap((n) => all.get(n) ?? []);
    const version = snap.versions[kind];
    const nonce = String(this.#nextNonce++);
    ts.sentVersion = version;
    ts.sentNonce = nonce;
    if (ts.names !== '*') st.inStep[kind] = snap;
    this.#write(st, kind, encodeSotwResponse({ version_info: version, type_url: TYPE_URL[kind], nonce }, chosen, all), chosen.length);
  }

  /**
   * A new snapshot: clusters first, routes last. A listener or cluster
   * response always carries every subscribed resource (what it leaves out is
   * removed); a route or endpoint response carries only the subscribed
   * resources that changed, which the protocol allows for these types: a
   * client keeps the ones a response leaves out, and learns of removals
   * from the listeners and clusters.
   */
  #push(st: StreamState, snap: Snapshot): void {
    for (const kind of PUSH_ORDER) {
      const ts = st.types[kind];
      if (!ts) continue;
      if (ts.names === '*') {
        if (snap.versions[kind] !== ts.sentVersion) this.#send(st, kind, snap);
        continue;
      }
      const prev = st.inStep[kind];
      if (prev === snap) continue;
      if (!prev) {
        this.#send(st, kind, snap);
        continue;
      }
      const subscribed = st.subscribed[kind]!;
      const diff = snapshotDiff(prev, snap, kind);
      const changed = diff.changed.filter((n) => subscribed.has(n));
      if (PARTIAL_KINDS.has(kind)) {
        if (changed.length > 0) this.#send(st, kind, snap, changed);
        else st.inStep[kind] = snap;
      } else if (changed.length > 0 || diff.removed.some((n) => subscribed.has(n))) {
        this.#send(st, kind, snap);
      } else {
        st.inStep[kind] = snap;
      }
    }
  }

  #write(st: StreamState, kind: ResourceKind, bytes: Buffer, resources: number): void {
    const c = this.#counters[kind];
    c.responses++;
    c.resources += resources;
    c.bytes += bytes.length;
    st.call.write(bytes);
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
    if (req.response_nonce && req.response_nonce === ts.sentNonce) this.#acknowledge(st, kind, ts, req, ts.sentVersion ?? '');
    const known = st.known[kind]!;
    if (ts.names !== '*') {
      const names = new Set(ts.names);
      for (const n of req.resource_names_subscribe) if (n !== '*') names.add(n);
      for (const n of req.resource_names_unsubscribe) {
        names.delete(n);
        known.delete(n); // a later subscribe sends it again
      }
      ts.names = [...names].sort();
      st.subscribed[kind] = names;
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
    const subscribed = ts.names === '*' ? undefined : st.subscribed[kind] ?? new Set<string>();
    // in step with an earlier snapshot: only what changed since can differ (the diff is shared by all streams)
    const prev = full ? undefined : st.inStep[kind];
    const diff = prev && prev !== snap ? snapshotDiff(prev, snap, kind) : undefined;
    const candidates = prev === snap ? [] : diff ? diff.changed : ts.names === '*' ? [...all.keys()] : ts.names;
    const resources = what === 'remove' ? [] : candidates.flatMap((n) => {
      const r = all.get(n);
      return r && (subscribed === undefined || subscribed.has(n)) && known.get(n) !== r.version ? [r] : [];
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
    const header = { system_version_info: snap.versions[kind], type_url: TYPE_URL[kind], nonce, removed_resources: removed };
    this.#write(st, kind, encodeDeltaResponse(header, resources), resources.length);
  }

  /** Make before break: additions and changes clusters first, then removals routes first. */
  #pushDelta(st: StreamState, snap: Snapshot): void {
    for (const kind of PUSH_ORDER) if (st.types[kind]) this.#sendDelta(st, kind, snap, 'upsert');
    for (const kind of [...PUSH_ORDER].reverse()) if (st.types[kind]) this.#sendDelta(st, kind, snap, 'remove');
  }
}
