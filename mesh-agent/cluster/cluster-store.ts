/**
 * One typed, in-memory store of the cluster: what every source writes and
 * everything downstream reads. Sources replace the objects they own
 * (`replace`, a manifest directory) or apply single changes (`upsert`,
 * `remove`, an informer); the local runtime overlays pod status (address,
 * readiness) that no manifest carries. Listeners hear of each change with
 * the keys it touched, so work downstream can be incremental.
 */
import { type AuthorizationPolicy, type ClusterObject, type EndpointSlice, type HTTPRoute, type Kind, type Namespace, type NetworkPolicy, type Pod, type Service, keyOf } from './model.js';

/** Pod status as the runtime (or the API) reports it. */
export interface PodStatus {
  ip?: string;
  ready: boolean;
  phase: string;
}

/** What one change touched: "Kind namespace/name" strings. */
export interface StoreChange {
  touched: ReadonlySet<string>;
  /** bumped by every change */
  revision: number;
}

type Listener = (change: StoreChange) => void;

type ByKind = {
  Namespace: Map<string, Namespace>;
  Pod: Map<string, Pod>;
  Service: Map<string, Service>;
  EndpointSlice: Map<string, EndpointSlice>;
  HTTPRoute: Map<string, HTTPRoute>;
  NetworkPolicy: Map<string, NetworkPolicy>;
  AuthorizationPolicy: Map<string, AuthorizationPolicy>;
};

export class ClusterStore {
  readonly #objects: ByKind = { Namespace: new Map(), Pod: new Map(), Service: new Map(), EndpointSlice: new Map(), HTTPRoute: new Map(), NetworkPolicy: new Map(), AuthorizationPolicy: new Map() };
  /** which source wrote each object ("Kind key" → source id) */
  readonly #owner = new Map<string, string>();
  readonly #podStatus = new Map<string, PodStatus>();
  readonly #listeners = new Set<Listener>();
  #revision = 0;

  get revision(): number {
    return this.#revision;
  }

  namespaces(): ReadonlyMap<string, Namespace> {
    return this.#objects.Namespace;
  }

  pods(): ReadonlyMap<string, Pod> {
    return this.#objects.Pod;
  }

  services(): ReadonlyMap<string, Service> {
    return this.#objects.Service;
  }

  endpointSlices(): ReadonlyMap<string, EndpointSlice> {
    return this.#objects.EndpointSlice;
  }

  networkPolicies(): ReadonlyMap<string, NetworkPolicy> {
    return this.#objects.NetworkPolicy;
  }

  authorizationPolicies(): ReadonlyMap<string, AuthorizationPolicy> {
    return this.#objects.AuthorizationPolicy;
  }

  httpRoutes(): ReadonlyMap<string, HTTPRoute> {
    return this.#objects.HTTPRoute;
  }

  /** Calls fn after every change; returns the cancel function. */
  onChange(fn: Listener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Makes `objects` everything source `sourceId` owns: what it no longer
   * lists is removed, what changed is replaced, what is equal is left alone.
   */
  replace(sourceId: string, objects: readonly ClusterObject[]): void {
    const touched = new Set<string>();
    const next = new Map<string, ClusterObject>(objects.map((o) => [`${o.kind} ${keyOf(o)}`, o]));
    for (const [id, owner] of [...this.#owner]) {
      if (owner === sourceId && !next.has(id)) {
        this.#delete(id);
        touched.add(id);
      }
    }
    for (const [id, o] of next) if (this.#put(sourceId, o)) touched.add(id);
    this.#emit(touched);
  }

  /** Creates or replaces one object. */
  upsert(sourceId: string, o: ClusterObject): void {
    const id = `${o.kind} ${keyOf(o)}`;
    this.#emit(this.#put(sourceId, o) ? new Set([id]) : new Set());
  }

  /** Removes one object; false when absent. */
  remove(kind: Kind, key: string): boolean {
    const id = `${kind} ${key}`;
    if (!this.#owner.has(id)) return false;
    this.#delete(id);
    this.#emit(new Set([id]));
    return true;
  }

  /** Overlays a pod's status (kept across source reloads until cleared). */
  setPodStatus(key: string, status: PodStatus | undefined): void {
    const before = this.#podStatus.get(key);
    if (status === undefined) this.#podStatus.delete(key);
    else this.#podStatus.set(key, { ...status });
    const pod = this.#objects.Pod.get(key);
    if (!pod) return;
    const merged = this.#withStatus(pod, key);
    if (before && status && before.ip === status.ip && before.ready === status.ready && before.phase === status.phase) return;
    this.#objects.Pod.set(key, merged);
    this.#emit(new Set([`Pod ${key}`]));
  }

  #withStatus(pod: Pod, key: string): Pod {
    const st = this.#podStatus.get(key);
    if (!st) return pod;
    const { ip: _drop, ...rest } = pod;
    return { ...rest, ...(st.ip !== undefined && { ip: st.ip }), ready: st.ready, phase: st.phase };
  }

  /** Stores o; returns whether anything changed. */
  #put(sourceId: string, o: ClusterObject): boolean {
    const key = keyOf(o);
    const id = `${o.kind} ${key}`;
    const value = o.kind === 'Pod' ? this.#withStatus(o, key) : o;
    const map = this.#objects[o.kind] as Map<string, ClusterObject>;
    const before = map.get(key);
    this.#owner.set(id, sourceId);
    if (before && sameObject(before, value)) return false;
    map.set(key, value);
    return true;
  }

  #delete(id: string): void {
    const sp = id.indexOf(' ');
    const kind = id.slice(0, sp) as Kind;
    (this.#objects[kind] as Map<string, ClusterObject>).delete(id.slice(sp + 1));
    this.#owner.delete(id);
  }

  #emit(touched: Set<string>): void {
    if (touched.size === 0) return;
    const change = { touched, revision: ++this.#revision };
    for (const fn of [...this.#listeners]) fn(change);
  }
}

/** JSON of an object, bigints (a parsed ipBlock's address) as decimal strings. */
const canonical = (o: unknown): string => JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));

/** Equal in everything but where it was read from. */
function sameObject(a: ClusterObject, b: ClusterObject): boolean {
  return canonical({ ...a, meta: { ...a.meta, source: '' } }) === canonical({ ...b, meta: { ...b.meta, source: '' } });
}
