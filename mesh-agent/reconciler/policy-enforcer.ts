/**
 * NetworkPolicy in the kernel, from the agent's side: compiles the cluster's
 * NetworkPolicies (policies/network-compile.ts) for this node's pods, writes
 * the result into the policy maps make-before-break, and after a change runs
 * the cut pass in every pod's network namespace, so established connections
 * the new policy denies are destroyed (docs/policy-datapath.md).
 *
 * Write order: allow entries first, then the ipcache, then the subjects
 * (pods and cgroups), then what is no longer wanted in the reverse order. A
 * changed subject gets a new class id from the compiler, so a connect sees
 * either its old entries or its new ones, never a half-written set.
 *
 * L7 services: connect4 sends a client to the node proxy's listener, so the
 * kernel judges "client → listener port" in place of the backends, for
 * every client (SM_POL_F_PROXY on the listener's address), by the client's
 * own subject and peer classes (SM_DIR_L7). The entry is written only when
 * the evaluator allows the client to every backend of the port, in both
 * directions (fail closed: the proxy may pick any backend).
 * Ingress-isolated backends accept the node proxy on the port it serves.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  ClassAllocator, DIR_INGRESS, FIRST_CLASS_ID, PEER_NODE_PROXY, PREFIX_PORT, PROTO_TCP, addressPeerClass, compileNetworkPolicies,
  type CompiledNetworkPolicy,
} from '../../policies/network-compile.js';
import { explainConnection, type PolicyWorld } from '../../policies/network-verdict.js';
import type { PolicyMapName } from '../datapath/datapath.js';
import {
  type PolicyLayout, decodePolicyKey, decodePolicySubject, encodeCgroupId, encodeIPv4, encodeIpcacheKey, encodeIpcacheValue, encodePolicyKey, encodePolicySubject, encodePolicyValue,
} from '../datapath/layout.js';

/** The class of the node proxy's L7 listeners, as a destination (reserved: the compiler allocates from 16). */
export const PEER_L7_LISTENER = 4;

/** The part of the datapath the enforcer needs (the real Datapath, or a fake in tests). */
export interface PolicyMaps {
  entries(name: PolicyMapName): [Buffer, Buffer][];
  put(name: PolicyMapName, key: Buffer, value: Buffer): void;
  del(name: PolicyMapName, key: Buffer): boolean;
  cutDenied(netnsPaths: readonly string[]): { cut: number; failed: { netns: string; error: string }[] };
}

/** An L7 service port, as the node proxy serves it. */
export interface L7PortPolicy {
  listenerPort: number;
  /** the service's own backends (pod addresses and target ports) */
  backends: readonly { ip: string; port: number }[];
}

/** What one enforcement pass needs. */
export interface PolicyInput {
  world: PolicyWorld;
  /** the cluster store's revision the world was read at: an input equal to the last one (same revision, pods and proxy) is not compiled again */
  revision?: number;
  /** this node's pods: "ns/name" → address and cgroup id (pods whose cgroup is not known yet are left out) */
  localPods: ReadonlyMap<string, { ip: string; cgroupId: bigint }>;
  /** the node proxy, when it runs: its cgroup, its listeners' address, and the L7 ports */
  proxy?: { cgroupId?: bigint; listenerIp: string; ports: readonly L7PortPolicy[] };
}

export interface EnforceResult {
  compileMs: number;
  writeMs: number;
  writes: number;
  deletes: number;
  entries: number;
  subjects: number;
  /** the NetworkPolicies compiled ("ns/name", sorted) */
  policies: string[];
  /** the cut pass, when one ran: sockets destroyed, namespaces visited and failed */
  cut?: { cut: number; namespaces: number; failed: { netns: string; error: string }[]; ms: number };
  /** the second cut pass, 200 ms later (handshakes that were under way during the first) */
  secondCut?: { cut: number; namespaces: number; failed: { netns: string; error: string }[]; ms: number };
  notes: string[];
}

type Table = Map<string, string>;

const hex = (b: Buffer): string => b.toString('hex');

export class PolicyEnforcer {
  readonly #maps: PolicyMaps;
  readonly #layout: PolicyLayout;
  readonly #netns: () => string[];
  #allocator = new ClassAllocator();
  /** the last input enforced, to skip a pass that changes nothing */
  #lastKey: string | undefined;
  #secondCut: NodeJS.Timeout | undefined;
  /** what the kernel holds, per map: key hex → value hex */
  #mirror = new Map<PolicyMapName, Table>();
  #loaded = false;
  #compiled: CompiledNetworkPolicy | undefined;
  #last: EnforceResult | undefined;

  /**
   * @param netns the network namespaces the cut pass visits (pods' and the node's)
   */
  constructor(maps: PolicyMaps, layout: PolicyLayout, netns: () => string[]) {
    this.#maps = maps;
    this.#layout = layout;
    this.#netns = netns;
  }

  get compiled(): CompiledNetworkPolicy | undefined {
    return this.#compiled;
  }

  get last(): EnforceResult | undefined {
    return this.#last;
  }

  /** Re-reads the maps from the kernel (at start, and after a failed pass). */
  load(): void {
    for (const m of ['sm_policy', 'sm_ipcache', 'sm_pol_pods', 'sm_pol_cgroups', 'sm_l7_ports'] as const) {
      this.#mirror.set(m, new Map(this.#maps.entries(m).map(([k, v]) => [hex(k), hex(v)])));
    }
    // a restarted agent allocates above every class the kernel still holds: a new class never merges into an old one
    if (this.#allocator.size === 0) {
      let max = 0;
      for (const k of this.#mirror.get('sm_policy')!.keys()) max = Math.max(max, decodePolicyKey(Buffer.from(k, 'hex')).subject, decodePolicyKey(Buffer.from(k, 'hex')).peer);
      for (const v of [...this.#mirror.get('sm_pol_pods')!.values(), ...this.#mirror.get('sm_pol_cgroups')!.values()]) {
        const d = decodePolicySubject(Buffer.from(v, 'hex'));
        max = Math.max(max, d.subject, d.peer);
      }
      if (max >= FIRST_CLASS_ID) this.#allocator = new ClassAllocator(max + 1);
    }
    this.#lastKey = undefined;
    this.#loaded = true;
  }

  /** The tables the kernel should hold for this input. */
  desired(input: PolicyInput): { tables: Map<PolicyMapName, Table>; compiled: CompiledNetworkPolicy } {
    const L = this.#layout;
    const localIps = new Map([...input.localPods].map(([k, p]) => [k, p.ip]));
    const compiled = compileNetworkPolicies(input.world, {
      allocator: this.#allocator, localPods: (p) => localIps.get(`${p.namespace}/${p.name}`) === p.ip,
    });
    const policy: Table = new Map();
    const ipcache: Table = new Map();
    const pods: Table = new Map();
    const cgroups: Table = new Map();
    const l7Ports: Table = new Map();
    for (const e of compiled.entries) policy.set(hex(encodePolicyKey(e)), hex(encodePolicyValue(e.ruleRef)));
    for (const p of compiled.prefixes) {
      ipcache.set(hex(encodeIpcacheKey(p.ip, p.prefixLen)), hex(encodeIpcacheValue({ peer: p.peer, addrPeer: p.peer, flags: 0 })));
    }
    for (const [ip, peer] of compiled.podPeers) {
      ipcache.set(hex(encodeIpcacheKey(ip, 32)), hex(encodeIpcacheValue({ peer, addrPeer: addressPeerClass(compiled, ip), flags: L.flagPod })));
    }
    for (const [key, pod] of input.localPods) {
      const s = compiled.subjects.get(key);
      const peer = compiled.podPeers.get(pod.ip);
      if (!s || peer === undefined) continue;
      const flags = L.flagPod | (s.ingressIsolated ? L.flagIngressIsolated : 0) | (s.egressIsolated ? L.flagEgressIsolated : 0);
      const v = hex(encodePolicySubject({ subject: s.subject, peer, flags, ip: pod.ip }));
      pods.set(hex(encodeIPv4(pod.ip)), v);
      cgroups.set(hex(encodeCgroupId(pod.cgroupId)), v);
    }
    if (input.proxy) this.#l7(input, compiled, { policy, ipcache, cgroups, l7Ports });
    return {
      tables: new Map([['sm_policy', policy], ['sm_ipcache', ipcache], ['sm_pol_pods', pods], ['sm_pol_cgroups', cgroups], ['sm_l7_ports', l7Ports]]),
      compiled,
    };
  }

  #l7(input: PolicyInput, compiled: CompiledNetworkPolicy, t: { policy: Table; ipcache: Table; cgroups: Table; l7Ports: Table }): void {
    const L = this.#layout;
    const proxy = input.proxy!;
    if (proxy.cgroupId !== undefined) {
      t.cgroups.set(hex(encodeCgroupId(proxy.cgroupId)), hex(encodePolicySubject({ subject: 0, peer: PEER_NODE_PROXY, flags: 0 })));
    }
    t.ipcache.set(hex(encodeIpcacheKey(proxy.listenerIp, 32)), hex(encodeIpcacheValue({
      peer: PEER_L7_LISTENER, addrPeer: addressPeerClass(compiled, proxy.listenerIp), flags: L.flagPod | L.flagProxy,
    })));
    const podByIp = new Map(input.world.pods.filter((p) => p.ip !== undefined).map((p) => [p.ip!, p]));
    const localByIp = new Map([...input.localPods].map(([key, p]) => [p.ip, key]));
    for (const port of proxy.ports) {
      const pk = Buffer.alloc(4);
      pk.writeUInt32LE(port.listenerPort);
      t.l7Ports.set(hex(pk), '01000000');
      // backends accept the proxy on the port it serves
      for (const b of port.backends) {
        const key = localByIp.get(b.ip);
        const s = key ? compiled.subjects.get(key) : undefined;
        if (!s?.ingressIsolated) continue;
        t.policy.set(hex(encodePolicyKey({ subject: s.subject, peer: PEER_NODE_PROXY, dir: DIR_INGRESS, proto: PROTO_TCP, port: b.port, prefixLen: PREFIX_PORT })),
          hex(encodePolicyValue(0)));
      }
      // clients reach the listener when every backend would take them; pods that share both their
      // subject class (their own egress) and their peer class (the backends' ingress) share the verdict
      const verdict = new Map<string, { subject: number; peer: number; ok: boolean }>();
      for (const [key, pod] of input.localPods) {
        const subject = compiled.subjects.get(key)?.subject;
        const peer = compiled.podPeers.get(pod.ip);
        if (subject === undefined || peer === undefined) continue;
        const k = `${subject}/${peer}`;
        if (verdict.get(k)?.ok === false) continue;
        const [namespace, name] = key.split('/') as [string, string];
        const ok = port.backends.every((b) => {
          const target = podByIp.get(b.ip);
          const v = explainConnection(input.world, {
            from: { kind: 'pod', namespace, name },
            to: target ? { kind: 'pod', namespace: target.namespace, name: target.name } : { kind: 'ip', ip: b.ip },
            port: b.port, protocol: 'TCP',
          });
          return v.kind === 'verdict' && v.allowed;
        });
        // fail closed: pods that share both classes but not the verdict (a backend on another node judges by policies this node's classes do not see) are all refused
        verdict.set(k, { subject, peer, ok: (verdict.get(k)?.ok ?? true) && ok });
      }
      for (const { subject, peer, ok } of verdict.values()) {
        if (!ok) continue;
        t.policy.set(hex(encodePolicyKey({ subject, peer, dir: L.dirL7, proto: PROTO_TCP, port: port.listenerPort, prefixLen: PREFIX_PORT })),
          hex(encodePolicyValue(0)));
      }
    }
  }

  /**
   * Brings the kernel in step with the input; when anything changed, runs the
   * cut pass. Throws when a map write fails (the caller retries with load()).
   */
  enforce(input: PolicyInput): EnforceResult {
    if (!this.#loaded) this.load();
    const key = input.revision === undefined ? undefined
      : JSON.stringify([input.revision, [...input.localPods].map(([k, p]) => [k, p.ip, String(p.cgroupId)]), input.proxy && { ...input.proxy, cgroupId: String(input.proxy.cgroupId) }]);
    if (key !== undefined && key === this.#lastKey && this.#last) return this.#last;
    const t0 = performance.now();
    const { tables, compiled } = this.desired(input);
    const t1 = performance.now();
    let writes = 0;
    let deletes = 0;
    const put = (m: PolicyMapName): void => {
      const have = this.#mirror.get(m)!;
      for (const [k, v] of tables.get(m)!) {
        if (have.get(k) === v) continue;
        this.#maps.put(m, Buffer.from(k, 'hex'), Buffer.from(v, 'hex'));
        have.set(k, v);
        writes++;
      }
    };
    const prune = (m: PolicyMapName): void => {
      const have = this.#mirror.get(m)!;
      const want = tables.get(m)!;
      for (const k of [...have.keys()]) {
        if (want.has(k)) continue;
        this.#maps.del(m, Buffer.from(k, 'hex'));
        have.delete(k);
        deletes++;
      }
    };
    this.#lastKey = undefined; // a write that fails half-way is redone whole
    put('sm_policy');
    put('sm_ipcache');
    put('sm_l7_ports');
    put('sm_pol_pods');
    put('sm_pol_cgroups');
    prune('sm_pol_cgroups');
    prune('sm_pol_pods');
    prune('sm_l7_ports');
    prune('sm_ipcache');
    prune('sm_policy');
    this.#lastKey = key;
    this.#compiled = compiled;
    const result: EnforceResult = {
      compileMs: t1 - t0, writeMs: performance.now() - t1, writes, deletes, entries: tables.get('sm_policy')!.size,
      subjects: tables.get('sm_pol_pods')!.size, notes: compiled.notes,
      policies: input.world.policies.map((p) => `${p.meta.namespace}/${p.meta.name}`).sort(),
    };
    if (writes + deletes > 0) {
      result.cut = this.cut();
      // again a little later: connections whose handshake was under way during the first pass
      if (this.#secondCut) clearTimeout(this.#secondCut);
      this.#secondCut = setTimeout(() => {
        this.#secondCut = undefined;
        try {
          const again = this.cut();
          if (this.#last === result) result.secondCut = again;
        } catch {
          // the next change runs it again
        }
      }, 200).unref();
    }
    this.#last = result;
    return result;
  }

  /** Stops the delayed second cut pass. */
  stop(): void {
    if (this.#secondCut) clearTimeout(this.#secondCut);
    this.#secondCut = undefined;
  }

  /** Runs the cut pass now in every pod's network namespace. */
  cut(): NonNullable<EnforceResult['cut']> {
    const t0 = performance.now();
    const namespaces = this.#netns();
    const r = this.#maps.cutDenied(namespaces);
    return { cut: r.cut, namespaces: namespaces.length, failed: r.failed, ms: performance.now() - t0 };
  }
}

/**
 * The network namespaces of the processes in the cgroup subtree at
 * `cgroupRel` (a path inside the cgroup v2 hierarchy, e.g. "/sockmesh"), one
 * path per namespace. Reads /proc: works for the local runtime and for the
 * kubelet's pods alike.
 */
export function netnsOfCgroupTree(cgroupRel: string, procRoot = '/proc'): string[] {
  const prefix = cgroupRel.replace(/\/+$/, '');
  const seen = new Set<string>();
  const out: string[] = [];
  let pids: string[];
  try {
    pids = readdirSync(procRoot).filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const line = readFileSync(join(procRoot, pid, 'cgroup'), 'utf8').split('\n').find((l) => l.startsWith('0::'));
      if (!line) continue;
      const path = line.slice(3);
      if (path !== prefix && !path.startsWith(`${prefix}/`)) continue;
      const ns = join(procRoot, pid, 'ns', 'net');
      const st = statSync(ns);
      const id = `${st.dev}:${st.ino}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push(ns);
    } catch {
      // the process exited meanwhile
    }
  }
  return out;
}
