/**
 * The compiler that keeps its result: after a full pass, an update redoes
 * only what the touched objects affect: a pod (its endpoint, cgroup,
 * identity, and the services of its namespace that select it, before or
 * after), a namespace (its pods' enrollment), a service (its VIP and
 * frontends, and services contending for the same clusterIP), an
 * EndpointSlice (its service). Each update returns the keys whose desired
 * entries may have changed, so the reconciler looks at those alone.
 */
import { isIPv4 } from 'node:net';
import { type AuthorizationPolicy, type Labels, type Pod, type Service, keyOf, selects } from '../cluster/model.js';
import { policyApplies } from '../../policies/authorization-policy.js';
import {
  type CompileInput, type DesiredDelta, type DesiredState, L7_ANNOTATION, type PodView, type ServiceFrontend, type ServiceView, enrollment, targetPortOf,
} from './compile.js';
import { type IdentityAllocator, identityKey } from './identities.js';
import type { ListenerPortAllocator } from './listener-ports.js';
import { type VipAllocator, inServiceNetwork } from './vips.js';
import { ipToInt } from '../ipv4.js';

export interface IncrementalCompilerOptions {
  nodeName: string;
  mode: 'local' | 'kubernetes';
  identities: IdentityAllocator;
  vips: VipAllocator;
  /**
   * The node proxy, when one runs: L7 service ports (appProtocol http or
   * h2c, the sockmesh.io/l7 annotation, an HTTPRoute attached, an
   * AuthorizationPolicy applying to one of the port's backends) are sent to
   * its listeners. Without it they are served at L4.
   */
  l7?: {
    proxyIp: () => string | undefined;
    listenerPorts: ListenerPortAllocator;
    /** the cluster's AuthorizationPolicies (the node proxy enforces them); default: none */
    authorizationPolicies?: () => ReadonlyMap<string, AuthorizationPolicy>;
  };
}

/** The store's view the compiler reads at each update. */
export type CompileSource = Pick<CompileInput, 'namespaces' | 'pods' | 'services' | 'cgroups' | 'endpointSlices' | 'httpRoutes'>;

/** The node proxy's identity (below FIRST_IDENTITY: reserved). */
export const NODE_PROXY_IDENTITY = 2;

const L7_PROTOCOLS = new Set(['http', 'h2c', 'kubernetes.io/h2c', 'kubernetes.io/http']);

interface PodEntry {
  pod: Pod;
  idKey: string;
  view: PodView;
  ip?: string;
  cg?: bigint;
}

interface SvcEntry {
  svc: Service;
  /** the clusterIP it claims (given by the user) */
  claim?: string;
  vip?: string;
  frontends: string[];
  view: ServiceView;
}

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function removeFrom<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

export class IncrementalCompiler {
  readonly #o: IncrementalCompilerOptions;
  readonly #endpoints = new Map<string, { identity: number; enrolled: boolean }>();
  /** pod IPv4 → the pods that have it (two only for a moment, with stale objects: the least key's entry counts) */
  readonly #ipClaims = new Map<string, Set<string>>();
  readonly #cgroups = new Map<bigint, { identity: number; enrolled: boolean }>();
  readonly #services = new Map<string, ServiceFrontend>();
  /** frontend key → the service it belongs to now */
  readonly #feOwner = new Map<string, string>();
  readonly #pods = new Map<string, PodEntry>();
  readonly #podsByNs = new Map<string, Set<string>>();
  readonly #svcs = new Map<string, SvcEntry>();
  readonly #svcsByNs = new Map<string, Set<string>>();
  /** clusterIP → the services whose spec gives it (the least key holds it) */
  readonly #claims = new Map<string, Set<string>>();
  readonly #idRefs = new Map<string, number>();
  /** EndpointSlice key → the service it serves */
  readonly #sliceService = new Map<string, string>();
  /** service key → the HTTPRoutes attached to it; HTTPRoute key → the services it attaches to */
  readonly #routesBySvc = new Map<string, Set<string>>();
  readonly #routeParents = new Map<string, string[]>();
  #delta: DesiredDelta = { endpoints: new Set(), cgroups: new Set(), services: new Set() };

  constructor(opts: IncrementalCompilerOptions) {
    this.#o = opts;
  }

  /** A service port's own backends (for an L7 port, not the proxy's listener), by "ns/name" and port. */
  backendsOf(key: string, port: number): { ip: string; port: number }[] | undefined {
    const e = this.#svcs.get(key);
    if (!e?.vip) return undefined;
    const fe = this.#services.get(`${e.vip}:${port}`);
    return fe ? (fe.l7?.backends ?? fe.backends) : undefined;
  }

  /** The desired state as it stands (live maps; the arrays are built on access). */
  state(): DesiredState {
    const pods = this.#pods;
    const svcs = this.#svcs;
    return {
      endpoints: this.#endpoints, cgroups: this.#cgroups, services: this.#services,
      get pods() { return [...pods.values()].map((e) => e.view).sort((a, b) => (a.key < b.key ? -1 : 1)); },
      get serviceViews() { return [...svcs.values()].map((e) => e.view).sort((a, b) => (a.key < b.key ? -1 : 1)); },
    };
  }

  /** Compiles everything from scratch. */
  full(src: CompileSource): DesiredDelta {
    const touched = new Set<string>();
    for (const k of this.#pods.keys()) touched.add(`Pod ${k}`);
    for (const k of this.#svcs.keys()) touched.add(`Service ${k}`);
    for (const k of src.namespaces.keys()) touched.add(`Namespace ${k}`);
    for (const k of src.pods.keys()) touched.add(`Pod ${k}`);
    // services in key order, so contention for a clusterIP resolves as a fresh start would
    for (const k of [...src.services.keys()].sort()) touched.add(`Service ${k}`);
    for (const k of this.#routeParents.keys()) touched.add(`HTTPRoute ${k}`);
    for (const k of src.httpRoutes?.keys() ?? []) touched.add(`HTTPRoute ${k}`);
    const delta = this.update(src, touched);
    // the node proxy's address is an enrolled endpoint: both legs through it are short-circuited
    const proxyIp = this.#o.l7?.proxyIp();
    if (proxyIp !== undefined && !this.#ipClaims.has(proxyIp)) {
      this.#endpoints.set(proxyIp, { identity: NODE_PROXY_IDENTITY, enrolled: true });
      delta.endpoints.add(proxyIp);
    }
    // allocations nothing refers to any more (also those made before a restart)
    this.#o.identities.retain(new Set(this.#idRefs.keys()));
    this.#o.vips.retain(new Set([...this.#svcs].filter(([, e]) => e.svc.clusterIP === undefined).map(([k]) => k)));
    this.#o.l7?.listenerPorts.retain(new Set([...this.#services.values()].filter((f) => f.l7).map((f) => this.#l7Key(f))));
    return delta;
  }

  /** Recompiles what `touched` ("Kind key" strings, as the store reports them) affects. */
  update(src: CompileSource, touched: ReadonlySet<string>): DesiredDelta {
    this.#delta = { endpoints: new Set(), cgroups: new Set(), services: new Set() };
    const pods = new Set<string>();
    const services = new Set<string>();
    for (const t of touched) {
      const sp = t.indexOf(' ');
      const kind = t.slice(0, sp);
      const key = t.slice(sp + 1);
      if (kind === 'Pod') pods.add(key);
      else if (kind === 'Service') services.add(key);
      else if (kind === 'Namespace') {
        for (const p of this.#podsByNs.get(key) ?? []) pods.add(p);
        for (const [k, p] of src.pods) if (p.meta.namespace === key) pods.add(k);
      } else if (kind === 'HTTPRoute') {
        for (const svc of this.#routeParents.get(key) ?? []) {
          services.add(svc);
          removeFrom(this.#routesBySvc, svc, key);
        }
        this.#routeParents.delete(key);
        const route = src.httpRoutes?.get(key);
        if (route) {
          const parents = [...new Set(route.parentRefs.map((r) => `${r.namespace}/${r.name}`))];
          this.#routeParents.set(key, parents);
          for (const svc of parents) {
            addTo(this.#routesBySvc, svc, key);
            services.add(svc);
          }
        }
      } else if (kind === 'AuthorizationPolicy') {
        // it applies to pods of its namespace: their services may become L7 (or stop being)
        for (const s of this.#svcsByNs.get(key.slice(0, key.indexOf('/'))) ?? []) services.add(s);
      } else if (kind === 'EndpointSlice') {
        const slice = src.endpointSlices?.get(key);
        const ns = key.slice(0, key.indexOf('/'));
        const before = this.#sliceService.get(key);
        if (before) services.add(before);
        if (slice) {
          const svc = `${ns}/${slice.serviceName}`;
          this.#sliceService.set(key, svc);
          services.add(svc);
        } else {
          this.#sliceService.delete(key);
        }
      }
    }
    for (const key of pods) this.#pod(src, key, services);
    // a service redone can ask for others (contention for a clusterIP); each is redone after its last request
    const pending = new Set(services); // insertion-ordered; a key asked for again moves to the end
    const runs = new Map<string, number>();
    while (pending.size > 0) {
      const key = pending.values().next().value as string;
      pending.delete(key);
      const n = (runs.get(key) ?? 0) + 1;
      if (n > 4) continue; // settled: contention changes owners at most once per side
      runs.set(key, n);
      for (const more of this.#service(src, key)) {
        pending.delete(more);
        pending.add(more);
      }
    }
    return this.#delta;
  }

  #pod(src: CompileSource, key: string, dirtyServices: Set<string>): void {
    const old = this.#pods.get(key);
    const pod = src.pods.get(key);
    const ns = key.slice(0, key.indexOf('/'));
    if (old) {
      if (old.ip !== undefined) {
        removeFrom(this.#ipClaims, old.ip, key);
        this.#settleEndpoint(old.ip);
      }
      if (old.cg !== undefined) {
        this.#cgroups.delete(old.cg);
        this.#delta.cgroups.add(old.cg);
      }
      this.#unref(old.idKey);
      this.#pods.delete(key);
      removeFrom(this.#podsByNs, ns, key);
      this.#markServices(ns, old.pod.meta.labels, dirtyServices);
    }
    if (!pod) return;
    const e = enrollment(pod, src.namespaces.get(pod.meta.namespace), this.#o.nodeName);
    const idKey = identityKey(pod.meta.namespace, pod.meta.labels);
    this.#idRefs.set(idKey, (this.#idRefs.get(idKey) ?? 0) + 1);
    const identity = this.#o.identities.idFor(idKey);
    const entry: PodEntry = {
      pod, idKey,
      view: {
        key, namespace: pod.meta.namespace, name: pod.meta.name, ...(pod.ip !== undefined && { ip: pod.ip }),
        ready: pod.ready, phase: pod.phase, enrolled: e.enrolled, reason: e.reason, identity, local: e.local,
      },
    };
    this.#pods.set(key, entry);
    if (pod.ip !== undefined && !pod.hostNetwork) {
      entry.ip = pod.ip;
      addTo(this.#ipClaims, pod.ip, key);
      this.#settleEndpoint(pod.ip);
    }
    const cg = src.cgroups.get(key);
    if (cg !== undefined) {
      entry.cg = cg;
      this.#cgroups.set(cg, { identity, enrolled: e.enrolled });
      this.#delta.cgroups.add(cg);
    }
    this.#pods.set(key, entry);
    addTo(this.#podsByNs, ns, key);
    this.#markServices(ns, pod.meta.labels, dirtyServices);
  }

  /** The endpoint entry of an address: from the least pod key claiming it, or none. */
  #settleEndpoint(ip: string): void {
    this.#delta.endpoints.add(ip);
    const claims = this.#ipClaims.get(ip);
    const owner = claims && claims.size > 0 ? [...claims].sort()[0]! : undefined;
    const view = owner === undefined ? undefined : this.#pods.get(owner)?.view;
    if (!view && ip === this.#o.l7?.proxyIp()) this.#endpoints.set(ip, { identity: NODE_PROXY_IDENTITY, enrolled: true });
    else if (!view) this.#endpoints.delete(ip);
    else this.#endpoints.set(ip, { identity: view.identity, enrolled: view.enrolled });
  }

  #unref(idKey: string): void {
    const n = (this.#idRefs.get(idKey) ?? 1) - 1;
    if (n > 0) {
      this.#idRefs.set(idKey, n);
      return;
    }
    this.#idRefs.delete(idKey);
    this.#o.identities.release(idKey);
  }

  /** Services of a namespace whose selector matches these labels. */
  #markServices(ns: string, labels: Labels, into: Set<string>): void {
    if (this.#o.mode === 'kubernetes') return; // backends come from EndpointSlices, not pods
    for (const s of this.#svcsByNs.get(ns) ?? []) {
      const sel = this.#svcs.get(s)?.svc.selector;
      if (sel && selects(sel, labels)) into.add(s);
    }
  }

  /** Recomputes one service; returns other services that must be recomputed (clusterIP contention). */
  #service(src: CompileSource, key: string): string[] {
    const more: string[] = [];
    const old = this.#svcs.get(key);
    const svc = src.services.get(key);
    const ns = key.slice(0, key.indexOf('/'));
    const fresh = new Set<string>();
    if (old && old.svc !== svc) {
      if (old.claim !== undefined) {
        removeFrom(this.#claims, old.claim, key);
        more.push(...(this.#claims.get(old.claim) ?? []));
      }
      if (!svc || svc.clusterIP !== undefined) this.#o.vips.release(key);
    }
    if (!svc) {
      if (old) {
        for (const fe of old.frontends) this.#dropFrontend(fe, key);
        this.#svcs.delete(key);
        removeFrom(this.#svcsByNs, ns, key);
      }
      return more;
    }
    const view: ServiceView = { key, ports: [], problems: [] };
    const entry: SvcEntry = { svc, frontends: [], view };
    this.#svcs.set(key, entry);
    addTo(this.#svcsByNs, ns, key);
    const vip = this.#vipOf(svc, key, entry, more);
    if (vip !== undefined) {
      view.vip = vip;
      entry.vip = vip;
      for (const sp of svc.ports) {
        if (sp.protocol !== 'TCP') {
          view.problems.push(`port ${sp.port}/${sp.protocol}: only TCP is balanced in the kernel`);
          continue;
        }
        const backends = this.#backends(src, svc, sp.targetPort, sp.name, sp.protocol);
        const feKey = `${vip}:${sp.port}`;
        const fe: ServiceFrontend = { vip, port: sp.port, anyClient: this.#o.mode === 'local', backends, service: `${key}:${sp.name ?? sp.port}` };
        const l7 = this.#isL7(svc, key, sp.appProtocol, backends);
        const proxyIp = l7 ? this.#o.l7?.proxyIp() : undefined;
        if (proxyIp !== undefined) {
          const listenerPort = this.#o.l7!.listenerPorts.portFor(`${key}:${sp.port}`);
          fe.l7 = { listenerPort, backends };
          fe.backends = [{ ip: proxyIp, port: listenerPort }];
        } else if (l7) {
          view.problems.push(`port ${sp.port}: L7 wanted, but no node proxy runs: served at L4 meanwhile`);
        }
        const prev = this.#services.get(feKey);
        if (prev?.l7 && !fe.l7 && this.#feOwner.get(feKey) === key) this.#o.l7?.listenerPorts.release(this.#l7Key(prev));
        this.#services.set(feKey, fe);
        this.#feOwner.set(feKey, key);
        this.#delta.services.add(feKey);
        entry.frontends.push(feKey);
        fresh.add(feKey);
        view.ports.push({ port: sp.port, ...(sp.name !== undefined && { name: sp.name }), backends: backends.length, ...(fe.l7 && { l7: fe.l7.listenerPort }) });
      }
    }
    for (const fe of old?.frontends ?? []) if (!fresh.has(fe)) this.#dropFrontend(fe, key);
    return more;
  }

  /** Whether a service port goes through the node proxy. */
  #isL7(svc: Service, key: string, appProtocol: string | undefined, backends: readonly { ip: string }[]): boolean {
    if (!this.#o.l7) return false;
    return (appProtocol !== undefined && L7_PROTOCOLS.has(appProtocol.toLowerCase()))
      || svc.meta.annotations[L7_ANNOTATION] === 'true'
      || (this.#routesBySvc.get(key)?.size ?? 0) > 0
      || this.#authorized(backends);
  }

  /** Whether an AuthorizationPolicy applies to the pod behind one of these backends (the node proxy enforces it). */
  #authorized(backends: readonly { ip: string }[]): boolean {
    const policies = this.#o.l7?.authorizationPolicies?.();
    if (!policies || policies.size === 0) return false;
    return backends.some((b) => {
      const owner = [...(this.#ipClaims.get(b.ip) ?? [])].sort()[0];
      const pod = owner === undefined ? undefined : this.#pods.get(owner)?.pod;
      if (!pod) return false;
      const w = { namespace: pod.meta.namespace, labels: pod.meta.labels };
      for (const p of policies.values()) if (policyApplies(p, w)) return true;
      return false;
    });
  }

  #l7Key(fe: ServiceFrontend): string {
    return `${fe.service.slice(0, fe.service.lastIndexOf(':'))}:${fe.port}`;
  }

  /** Drops a frontend the service had, unless another service holds that VIP:port now. */
  #dropFrontend(feKey: string, key: string): void {
    if (this.#feOwner.get(feKey) !== key) return;
    const fe = this.#services.get(feKey);
    if (fe?.l7) this.#o.l7?.listenerPorts.release(this.#l7Key(fe));
    this.#services.delete(feKey);
    this.#feOwner.delete(feKey);
    this.#delta.services.add(feKey);
  }

  #vipOf(svc: Service, key: string, entry: SvcEntry, more: string[]): string | undefined {
    const view = entry.view;
    const ip = svc.clusterIP;
    if (ip === 'None') {
      view.problems.push('headless (clusterIP: None): no VIP, nothing to balance');
      return undefined;
    }
    if (ip === undefined) {
      if (this.#o.mode === 'kubernetes') {
        view.problems.push('no clusterIP yet');
        return undefined;
      }
      return this.#o.vips.vipFor(key, (v) => this.#claims.has(v));
    }
    if (!isIPv4(ip)) {
      view.problems.push(`clusterIP ${ip} is not IPv4`);
      return undefined;
    }
    if (this.#o.mode === 'local' && !inServiceNetwork(ip)) {
      view.problems.push(`clusterIP ${ip} is outside the local service range 198.19.0.0/16`);
      return undefined;
    }
    const before = this.#claims.get(ip);
    const ownerBefore = before && before.size > 0 ? [...before].sort()[0] : undefined;
    addTo(this.#claims, ip, key);
    entry.claim = ip;
    const owner = [...this.#claims.get(ip)!].sort()[0]!;
    // a new holder: every other claimant's view names the holder, so each is redone
    if (ownerBefore !== owner) for (const k of this.#claims.get(ip)!) if (k !== key) more.push(k);
    // a service given this address by the allocator moves away
    const allocated = this.#o.vips.ownerOf(ip);
    if (allocated !== undefined && allocated !== key) more.push(allocated);
    if (owner !== key) {
      view.problems.push(`clusterIP ${ip} is already service ${owner}'s`);
      return undefined;
    }
    return ip;
  }

  #backends(src: CompileSource, svc: Service, target: number | string, portName: string | undefined, protocol: string): { ip: string; port: number }[] {
    const out: { ip: string; port: number }[] = [];
    // local mode: from the pods (nothing computes EndpointSlices here); kubernetes: the API's EndpointSlices
    if (svc.selector !== undefined && this.#o.mode === 'local') {
      for (const pk of this.#podsByNs.get(svc.meta.namespace) ?? []) {
        const p = this.#pods.get(pk)!.pod;
        if (!p.ready || p.ip === undefined || !selects(svc.selector, p.meta.labels)) continue;
        const port = targetPortOf(p, target, protocol);
        if (port !== undefined) out.push({ ip: p.ip, port });
      }
    } else {
      const name = keyOf(svc).split('/')[1];
      for (const slice of src.endpointSlices?.values() ?? []) {
        if (slice.meta.namespace !== svc.meta.namespace || slice.serviceName !== name) continue;
        const port = slice.ports.find((sp) => (sp.name ?? '') === (portName ?? '') && sp.protocol === protocol)?.port;
        if (port === undefined) continue;
        for (const ep of slice.endpoints) if (ep.ready) for (const a of ep.addresses) if (isIPv4(a)) out.push({ ip: a, port });
      }
    }
    out.sort((a, b) => (a.ip === b.ip ? a.port - b.port : ipToInt(a.ip) - ipToInt(b.ip)));
    return out.filter((b, i) => i === 0 || b.ip !== out[i - 1]!.ip || b.port !== out[i - 1]!.port);
  }
}

