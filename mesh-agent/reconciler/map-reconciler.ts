/**
 * Writes the compiler's desired state into the datapath's maps: updates what
 * differs, deletes what is no longer wanted, prunes what nothing refers to.
 * It keeps a mirror of the maps, read from the kernel at load() (so an agent
 * restart converges from the pinned state without rewriting what is right),
 * and touches only what changed after that: idempotent, no flapping.
 *
 * A service changes make-before-break: its new backend set is written under
 * the other generation, then the service entry flips generation and count
 * in one update, then the old set is deleted. A connect reads one whole set.
 */
import type { DesiredState } from '../compiler/compile.js';
import type { HashMapName } from '../datapath/datapath.js';
import {
  type Backend, type ServiceEntry, decodeBackend, decodeBackendKey, decodeService, decodeServiceKey, encodeBackend, encodeBackendKey,
  encodeCgroup, encodeCgroupId, encodeEndpoint, encodeIPv4, encodeService, encodeServiceKey,
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

const hex = (b: Buffer) => b.toString('hex');

interface SvcMirror { key: Buffer; entry: ServiceEntry }

export class MapReconciler {
  readonly #maps: KernelMaps;
  readonly #flags: MapFlags;
  /** key hex → value hex */
  #endpoints = new Map<string, string>();
  #cgroups = new Map<string, string>();
  /** service key hex → entry */
  #services = new Map<string, SvcMirror>();
  /** service id → "gen/slot" → backend */
  #backends = new Map<number, Map<string, Backend>>();
  #loaded = false;

  constructor(maps: KernelMaps, flags: MapFlags) {
    this.#maps = maps;
    this.#flags = flags;
  }

  /** Reads the maps as they are in the kernel. */
  load(): void {
    this.#endpoints = new Map(this.#maps.entries('sm_endpoints').map(([k, v]) => [hex(k), hex(v)]));
    this.#cgroups = new Map(this.#maps.entries('sm_cgroups').map(([k, v]) => [hex(k), hex(v)]));
    this.#services = new Map(this.#maps.entries('sm_services').map(([k, v]) => [hex(k), { key: k, entry: decodeService(v) }]));
    this.#backends = new Map();
    for (const [k, v] of this.#maps.entries('sm_backends')) {
      const bk = decodeBackendKey(k);
      this.#setBackend(bk.svcId, bk.gen, bk.slot, decodeBackend(v));
    }
    this.#loaded = true;
  }

  reconcile(desired: DesiredState): ReconcileStats {
    if (!this.#loaded) this.load();
    const stats: ReconcileStats = {
      writes: { sm_endpoints: 0, sm_cgroups: 0, sm_services: 0, sm_backends: 0 },
      deletes: { sm_endpoints: 0, sm_cgroups: 0, sm_services: 0, sm_backends: 0 },
    };
    const endpoints = new Map<string, [Buffer, Buffer]>();
    for (const [ip, e] of desired.endpoints) {
      const k = encodeIPv4(ip);
      endpoints.set(hex(k), [k, encodeEndpoint({ identity: e.identity, flags: e.enrolled ? this.#flags.endpointEnrolled : 0 })]);
    }
    const cgroups = new Map<string, [Buffer, Buffer]>();
    for (const [id, c] of desired.cgroups) {
      const k = encodeCgroupId(id);
      cgroups.set(hex(k), [k, encodeCgroup({ identity: c.identity, flags: c.enrolled ? this.#flags.cgroupEnrolled : 0 })]);
    }
    // additions and changes first, removals last: a backend's endpoint entry exists before a connect can pick it
    this.#upsertAll('sm_endpoints', this.#endpoints, endpoints, stats);
    this.#upsertAll('sm_cgroups', this.#cgroups, cgroups, stats);
    const wanted = this.#reconcileServices(desired, stats);
    this.#deleteServices(wanted, stats);
    this.#deleteAll('sm_endpoints', this.#endpoints, endpoints, stats);
    this.#deleteAll('sm_cgroups', this.#cgroups, cgroups, stats);
    return stats;
  }

  #upsertAll(name: HashMapName, mirror: Map<string, string>, want: Map<string, [Buffer, Buffer]>, stats: ReconcileStats): void {
    for (const [h, [k, v]] of want) {
      const vh = hex(v);
      if (mirror.get(h) === vh) continue;
      this.#maps.put(name, k, v);
      mirror.set(h, vh);
      stats.writes[name]++;
    }
  }

  #deleteAll(name: HashMapName, mirror: Map<string, string>, want: Map<string, [Buffer, Buffer]>, stats: ReconcileStats): void {
    for (const h of [...mirror.keys()]) {
      if (want.has(h)) continue;
      this.#maps.del(name, Buffer.from(h, 'hex'));
      mirror.delete(h);
      stats.deletes[name]++;
    }
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

  /** Returns the service keys (hex) wanted. */
  #reconcileServices(desired: DesiredState, stats: ReconcileStats): Set<string> {
    const wanted = new Set<string>();
    const usedIds = new Set([...this.#services.values()].map((s) => s.entry.id));
    let nextId = 1;
    for (const fe of desired.services.values()) {
      const key = encodeServiceKey({ vip: fe.vip, port: fe.port });
      const h = hex(key);
      wanted.add(h);
      const flags = fe.anyClient ? this.#flags.serviceAnyClient : 0;
      const cur = this.#services.get(h);
      if (cur && cur.entry.flags === flags && cur.entry.count === fe.backends.length) {
        const have = this.#slots(cur.entry.id, cur.entry.gen, cur.entry.count);
        if (have.every((b, i) => b && b.ip === fe.backends[i]!.ip && b.port === fe.backends[i]!.port)) continue;
      }
      let id = cur?.entry.id;
      if (id === undefined) {
        while (usedIds.has(nextId)) nextId++;
        id = nextId;
        usedIds.add(id);
      }
      const gen = cur ? cur.entry.gen ^ 1 : 0;
      fe.backends.forEach((b, slot) => {
        this.#maps.put('sm_backends', encodeBackendKey({ svcId: id, slot, gen }), encodeBackend(b));
        this.#setBackend(id, gen, slot, b);
        stats.writes.sm_backends++;
      });
      const entry: ServiceEntry = { id, count: fe.backends.length, gen, flags };
      this.#maps.put('sm_services', key, encodeService(entry));
      this.#services.set(h, { key, entry });
      stats.writes.sm_services++;
      // the other generation (the set just replaced), and slots of this one past the new count
      this.#deleteBackends(id, (k) => k.gen !== gen || k.slot >= fe.backends.length, stats);
    }
    return wanted;
  }

  #deleteServices(wanted: Set<string>, stats: ReconcileStats): void {
    const live = new Set<number>();
    for (const [h, s] of [...this.#services]) {
      if (wanted.has(h)) {
        live.add(s.entry.id);
        continue;
      }
      this.#maps.del('sm_services', s.key);
      this.#services.delete(h);
      stats.deletes.sm_services++;
    }
    // backends of services gone (and any a crash left without a service)
    for (const id of [...this.#backends.keys()]) if (!live.has(id)) this.#deleteBackends(id, () => true, stats);
  }

  #deleteBackends(id: number, drop: (k: { gen: number; slot: number }) => boolean, stats: ReconcileStats): void {
    const m = this.#backends.get(id);
    if (!m) return;
    for (const mk of [...m.keys()]) {
      const [gen, slot] = mk.split('/').map(Number) as [number, number];
      if (!drop({ gen, slot })) continue;
      this.#maps.del('sm_backends', encodeBackendKey({ svcId: id, gen, slot }));
      m.delete(mk);
      stats.deletes.sm_backends++;
    }
    if (m.size === 0) this.#backends.delete(id);
  }

  /** The services in the maps now, decoded (for status and tests). */
  services(): { vip: string; port: number; entry: ServiceEntry; backends: Backend[] }[] {
    return [...this.#services.values()].map((s) => ({
      ...decodeServiceKey(s.key), entry: s.entry,
      backends: this.#slots(s.entry.id, s.entry.gen, s.entry.count).filter((b): b is Backend => b !== undefined),
    }));
  }
}
