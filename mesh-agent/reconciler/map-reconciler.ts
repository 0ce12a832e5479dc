/**
 * Writes the compiler's desired state into the datapath's maps: updates what
 * differs, deletes what is no longer wanted, prunes what nothing refers to.
 * It keeps a mirror of the maps, read from the kernel at load() (so an agent
 * restart converges from the pinned state without rewriting what is right),
 * and touches only what changed after that: idempotent, no flapping.
 * `reconcile` compares everything; `apply` only the keys a compiler update
 * reported.
 *
 * A service changes make-before-break: its new backend set is written under
 * the other generation, then the service entry flips generation and count
 * in one update, then the old set is deleted. A connect reads one whole set.
 */
import type { DesiredDelta, DesiredState, ServiceFrontend } from '../compiler/compile.js';
import type { HashMapName } from '../datapath/datapath.js';
import {
  type Backend, type ServiceEntry, decodeBackend, decodeBackendKey, decodeCgroupId, decodeEndpoint, decodeIPv4, decodeService, decodeServiceKey,
  encodeBackendKey, encodeBackend, encodeCgroup, encodeCgroupId, encodeEndpoint, encodeIPv4, encodeService, encodeServiceKey,
} from '../datapath/layout.js';

/** The part of the datapath the reconciler needs (the real Datapath, or a fake in tests). */
export interface KernelMaps {
  entries(name: HashMapName): [Buffer, Buffer][];
  put(name: HashMapName, key: Buffer, value: Buffer): void;
  del(name: HashMapName, key: Buffer): boolean;
}

export interface MapFlags {
  endpointEnrolled: number;
  cgroupEnrolled: number;
  serviceAnyClient: number;
}

/** What one reconcile wrote, per map. */
export interface ReconcileStats {
  writes: Record<HashMapName, number>;
  deletes: Record<HashMapName, number>;
}

/** identity and flags, as one comparable value */
const packed = (identity: number, flags: number) => `${identity}/${flags}`;

export class MapReconciler {
  readonly #maps: KernelMaps;
  readonly #flags: MapFlags;
  /** pod IPv4 → "identity/flags" */
  #endpoints = new Map<string, string>();
  /** cgroup id → "identity/flags" */
  #cgroups = new Map<bigint, string>();
  /** "vip:port" → entry */
  #services = new Map<string, ServiceEntry>();
  /** service id → "gen/slot" → backend */
  #backends = new Map<number, Map<string, Backend>>();
  #usedIds = new Set<number>();
  #nextId = 1;
  #loaded = false;

  constructor(maps: KernelMaps, flags: MapFlags) {
    this.#maps = maps;
    this.#flags = flags;
  }

  /** Reads the maps as they are in the kernel. */
  load(): void {
    this.#endpoints = new Map(this.#maps.entries('sm_endpoints').map(([k, v]) => {
      const e = decodeEndpoint(v);
      return [decodeIPv4(k), packed(e.identity, e.flags)];
    }));
    this.#cgroups = new Map(this.#maps.entries('sm_cgroups').map(([k, v]) => {
      const e = decodeEndpoint(v);
      return [decodeCgroupId(k), packed(e.identity, e.flags)];
    }));
    this.#services = new Map(this.#maps.entries('sm_services').map(([k, v]) => {
      const sk = decodeServiceKey(k);
      return [`${sk.vip}:${sk.port}`, decodeService(v)];
    }));
    this.#backends = new Map();
    for (const [k, v] of this.#maps.entries('sm_backends')) {
      const bk = decodeBackendKey(k);
      this.#setBackend(bk.svcId, bk.gen, bk.slot, decodeBackend(v));
    }
    this.#usedIds = new Set([...this.#services.values()].map((e) => e.id));
    this.#nextId = 1;
    this.#loaded = true;
  }

  #stats(): ReconcileStats {
    return {
      writes: { sm_endpoints: 0, sm_cgroups: 0, sm_services: 0, sm_backends: 0 },
      deletes: { sm_endpoints: 0, sm_cgroups: 0, sm_services: 0, sm_backends: 0 },
    };
  }

  /** Compares every entry; prunes what the maps hold beyond the desired state. */
  reconcile(desired: DesiredState): ReconcileStats {
    if (!this.#loaded) this.load();
    const delta: DesiredDelta = {
      endpoints: new Set([...desired.endpoints.keys(), ...this.#endpoints.keys()]),
      cgroups: new Set([...desired.cgroups.keys(), ...this.#cgroups.keys()]),
      services: new Set([...desired.services.keys(), ...this.#services.keys()]),
    };
    const stats = this.apply(desired, delta);
    // backends no service refers to (a crash between writes can leave some)
    const live = new Set([...this.#services.values()].map((s) => s.id));
    for (const id of [...this.#backends.keys()]) if (!live.has(id)) this.#deleteBackends(id, () => true, stats);
    return stats;
  }

  /**
   * Brings the keys in `delta` in step with `desired`. Additions and changes
   * go first, removals last: an endpoint entry exists before a connect can
   * pick it as a backend, and outlives the backend entry.
   */
  apply(desired: DesiredState, delta: DesiredDelta): ReconcileStats {
    if (!this.#loaded) this.load();
    const stats = this.#stats();
    const goneEndpoints: string[] = [];
    for (const ip of delta.endpoints) {
      const e = desired.endpoints.get(ip);
      if (!e) {
        if (this.#endpoints.has(ip)) goneEndpoints.push(ip);
        continue;
      }
      const flags = e.enrolled ? this.#flags.endpointEnrolled : 0;
      const v = packed(e.identity, flags);
      if (this.#endpoints.get(ip) === v) continue;
      this.#maps.put('sm_endpoints', encodeIPv4(ip), encodeEndpoint({ identity: e.identity, flags }));
      this.#endpoints.set(ip, v);
      stats.writes.sm_endpoints++;
    }
    const goneCgroups: bigint[] = [];
    for (const id of delta.cgroups) {
      const c = desired.cgroups.get(id);
      if (!c) {
        if (this.#cgroups.has(id)) goneCgroups.push(id);
        continue;
      }
      const flags = c.enrolled ? this.#flags.cgroupEnrolled : 0;
      const v = packed(c.identity, flags);
      if (this.#cgroups.get(id) === v) continue;
      this.#maps.put('sm_cgroups', encodeCgroupId(id), encodeCgroup({ identity: c.identity, flags }));
      this.#cgroups.set(id, v);
      stats.writes.sm_cgroups++;
    }
    const goneServices: string[] = [];
    for (const k of delta.services) {
      const fe = desired.services.get(k);
      if (fe) this.#upsertService(k, fe, stats);
      else if (this.#services.has(k)) goneServices.push(k);
    }
    for (const k of goneServices) this.#deleteService(k, stats);
    for (const ip of goneEndpoints) {
      this.#maps.del('sm_endpoints', encodeIPv4(ip));
      this.#endpoints.delete(ip);
      stats.deletes.sm_endpoints++;
    }
    for (const id of goneCgroups) {
      this.#maps.del('sm_cgroups', encodeCgroupId(id));
      this.#cgroups.delete(id);
      stats.deletes.sm_cgroups++;
    }
    return stats;
  }

  #setBackend(id: number, gen: number, slot: number, b: Backend): void {
    let m = this.#backends.get(id);
    if (!m) this.#backends.set(id, (m = new Map()));
    m.set(`${gen}/${slot}`, b);
  }

  #slots(id: number, gen: number, count: number): (Backend | undefined)[] {
    const m = this.#backends.get(id);
    return Array.from({ length: count }, (_, i) => m?.get(`${gen}/${i}`));
  }

  #allocateId(): number {
    while (this.#usedIds.has(this.#nextId)) this.#nextId++;
    this.#usedIds.add(this.#nextId);
    return this.#nextId++;
  }

  #upsertService(k: string, fe: ServiceFrontend, stats: ReconcileStats): void {
    const flags = fe.anyClient ? this.#flags.serviceAnyClient : 0;
    const cur = this.#services.get(k);
    if (cur && cur.flags === flags && cur.count === fe.backends.length) {
      const have = this.#slots(cur.id, cur.gen, cur.count);
      if (have.every((b, i) => b && b.ip === fe.backends[i]!.ip && b.port === fe.backends[i]!.port)) return;
    }
    const id = cur?.id ?? this.#allocateId();
    const gen = cur ? cur.gen ^ 1 : 0;
    fe.backends.forEach((b, slot) => {
      this.#maps.put('sm_backends', encodeBackendKey({ svcId: id, slot, gen }), encodeBackend(b));
      this.#setBackend(id, gen, slot, b);
      stats.writes.sm_backends++;
    });
    const entry: ServiceEntry = { id, count: fe.backends.length, gen, flags };
    this.#maps.put('sm_services', encodeServiceKey({ vip: fe.vip, port: fe.port }), encodeService(entry));
    this.#services.set(k, entry);
    stats.writes.sm_services++;
    // the other generation (the set just replaced), and slots of this one past the new count
    this.#deleteBackends(id, (g, slot) => g !== gen || slot >= fe.backends.length, stats);
  }

  #deleteService(k: string, stats: ReconcileStats): void {
    const cur = this.#services.get(k)!;
    const sep = k.lastIndexOf(':');
    this.#maps.del('sm_services', encodeServiceKey({ vip: k.slice(0, sep), port: Number(k.slice(sep + 1)) }));
    this.#services.delete(k);
    this.#usedIds.delete(cur.id);
    this.#nextId = Math.min(this.#nextId, cur.id);
    stats.deletes.sm_services++;
    this.#deleteBackends(cur.id, () => true, stats);
  }

  #deleteBackends(id: number, drop: (gen: number, slot: number) => boolean, stats: ReconcileStats): void {
    const m = this.#backends.get(id);
    if (!m) return;
    for (const mk of [...m.keys()]) {
      const sep = mk.indexOf('/');
      const gen = Number(mk.slice(0, sep));
      const slot = Number(mk.slice(sep + 1));
      if (!drop(gen, slot)) continue;
      this.#maps.del('sm_backends', encodeBackendKey({ svcId: id, gen, slot }));
      m.delete(mk);
      stats.deletes.sm_backends++;
    }
    if (m.size === 0) this.#backends.delete(id);
  }

  /** The services in the maps now, decoded (for status and tests). */
  services(): { vip: string; port: number; entry: ServiceEntry; backends: Backend[] }[] {
    return [...this.#services].map(([k, entry]) => {
      const sep = k.lastIndexOf(':');
      return {
        vip: k.slice(0, sep), port: Number(k.slice(sep + 1)), entry,
        backends: this.#slots(entry.id, entry.gen, entry.count).filter((b): b is Backend => b !== undefined),
      };
    });
  }
}
