/**
 * The pure NetworkPolicy compiler for the kernel (docs/policy-datapath.md
 * §2.1, §3.2–3.5): from namespaces, pods and policies to the tables the
 * kernel programs look up, with no I/O and no root.
 *
 * - Subjects: every local pod with an address gets a subject class and its
 *   isolation flags. Pods whose compiled entries and flags are identical
 *   share a class; the class id is allocated from a signature of exactly
 *   those entries and flags, so it stays the same while what the kernel
 *   enforces for the pod stays the same, and is new when that changes (the
 *   map writer's make-before-break, §3.4).
 * - Peer classes: every pod with an address (local or not) gets a class from
 *   everything a policy peer can tell about it: the `pods` peers (selector
 *   pairs) that match it, the ipBlocks its address is in, and, when an egress
 *   rule uses a named port, what those names resolve to among its ports. An
 *   address that is not a pod gets the class of the most specific ipBlock
 *   prefix (`cidr` or `except`) containing it; CIDR prefixes nest, so that
 *   prefix decides membership in every ipBlock, `except` included. An
 *   address no ipBlock contains is WORLD.
 * - Entries: one LPM key per (subject class, peer, direction, port prefix):
 *   96 bits an exact port, 80 every port of a protocol, 72 every protocol and
 *   port, 81–96 the aligned blocks of an endPort range. A rule without peers
 *   uses the peer ANY, a `pods` peer selecting every pod of every namespace
 *   ANY_POD; every other peer becomes one entry per peer class it matches.
 *
 * The kernel allows an isolated direction when one of {subject, peer},
 * {subject, ANY_POD} (peer is a pod) or {subject, ANY} hits; `lookupCompiled`
 * is that lookup in TypeScript, and the tests check it against the evaluator
 * (network-verdict.ts) on generated worlds.
 *
 * Only rules of policies that select some local pod in that direction shape
 * the classes, so policies about other nodes' pods cause no churn here.
 *
 * Not compiled for the kernel (IPv4 only): IPv6 ipBlocks (an IPv6 block never
 * contains an IPv4 address, so leaving them out is exact for IPv4 traffic;
 * `notes` names each one) and IPv6 addresses (a pod with one still gets a
 * subject and a peer class, without ipBlock membership).
 */
import { createHash } from 'node:crypto';
import type { Labels } from '../mesh-agent/cluster/object-meta.js';
import { encodeIpcacheKey, encodePolicyKey } from '../mesh-agent/datapath/layout.js';
import { InvalidArgumentError } from '../mesh-agent/errors.js';
import { parseIp } from './cidr.js';
import { isEverything, selectorMatches, type LabelSelector } from './label-selector.js';
import type { IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyRule, NetworkProtocol, PolicyType } from './network-policy.js';
import { NAMESPACE_NAME_LABEL, policiesSelecting, policyKey, type PolicyPod, type PolicyWorld } from './network-verdict.js';

// ---- constants shared with bpf/sockmesh.h (enum sm_peer_class, sm_pol_dir) ----

/** Peer class of an entry for every peer: a rule with no `from` / `to`. */
export const PEER_ANY = 0;
/** Peer class of an entry for every pod of the cluster (`namespaceSelector: {}` with `podSelector: {}`). */
export const PEER_ANY_POD = 1;
/** Peer class of an address no ipBlock contains. */
export const PEER_WORLD = 2;
/** Reserved for the node proxy's upstream connections (§4.6); this compiler never uses it. */
export const PEER_NODE_PROXY = 3;
/** The first id ClassAllocator hands out; 0–15 are reserved. */
export const FIRST_CLASS_ID = 16;

export const DIR_INGRESS = 0;
export const DIR_EGRESS = 1;
/** A direction as the kernel keys it. */
export type PolicyDir = typeof DIR_INGRESS | typeof DIR_EGRESS;

export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_SCTP = 132;
/** IP protocol numbers of the protocols a NetworkPolicy port can name. */
export const PROTOCOL_NUMBERS: Readonly<Record<NetworkProtocol, number>> = Object.freeze({ TCP: PROTO_TCP, UDP: PROTO_UDP, SCTP: PROTO_SCTP });

/** prefixLen of an entry for one port. */
export const PREFIX_PORT = 96;
/** prefixLen of an entry for every port of one protocol. */
export const PREFIX_PROTOCOL = 80;
/** prefixLen of an entry for every protocol and port (a rule without `ports`). */
export const PREFIX_ALL = 72;

// ---- class ids ----

/**
 * Stable class ids: one u32 (>= 16) per signature, kept for as long as the
 * signature is live, so an unchanged class keeps its id from one compile to
 * the next and a changed one gets a new id. Ids are never reused within a
 * process: a retired class may still have entries in the kernel until the
 * map writer deletes them. Subject and peer classes share the id space.
 */
export class ClassAllocator {
  readonly #ids = new Map<string, number>();
  #next: number;

  /** @param firstId the first id to hand out; default FIRST_CLASS_ID (16) */
  constructor(firstId: number = FIRST_CLASS_ID) {
    if (!Number.isInteger(firstId) || firstId < FIRST_CLASS_ID || firstId > 0xffffffff) {
      throw new InvalidArgumentError(`the first class id must be an integer from ${FIRST_CLASS_ID} to 4294967295 (0-15 are reserved), got ${firstId}`);
    }
    this.#next = firstId;
  }

  /** The id of `signature`, allocating the next one when it is new. */
  idFor(signature: string): number {
    const known = this.#ids.get(signature);
    if (known !== undefined) return known;
    if (this.#next > 0xffffffff) throw new RangeError('class ids exhausted (2^32 allocated in this process); restart the agent to renumber');
    const id = this.#next++;
    this.#ids.set(signature, id);
    return id;
  }

  /** The id of `signature` if it is live, without allocating. */
  get(signature: string): number | undefined {
    return this.#ids.get(signature);
  }

  /**
   * Forgets every signature whose id is not in `live`; a forgotten
   * signature that comes back gets a new id. Returns how many were
   * forgotten. compileNetworkPolicies calls it with its own classes.
   */
  retain(live: ReadonlySet<number>): number {
    let n = 0;
    for (const [sig, id] of this.#ids) {
      if (!live.has(id)) {
        this.#ids.delete(sig);
        n++;
      }
    }
    return n;
  }

  /** How many signatures are live. */
  get size(): number {
    return this.#ids.size;
  }

  /** The id the next new signature gets. */
  get nextId(): number {
    return this.#next;
  }
}

// ---- the compiled tables ----

/** A local pod as the kernel's subject: which entries protect it and which directions are isolated. */
export interface CompiledSubject {
  subject: number;
  ingressIsolated: boolean;
  egressIsolated: boolean;
}

/** An address prefix of the ipcache (`sm_ipcache`), with its peer class. */
export interface CompiledPrefix {
  /** the network address, dotted quad */
  ip: string;
  /** 0-32 */
  prefixLen: number;
  peer: number;
}

/** One allow entry of `sm_policy`. */
export interface CompiledEntry {
  subject: number;
  peer: number;
  dir: PolicyDir;
  /** IP protocol number; 0 when prefixLen is 72 */
  proto: number;
  /** the first port of the block; 0 when prefixLen is 72 or 80 */
  port: number;
  /** bits of the 12 data bytes: 72, 80, or 81-96 */
  prefixLen: number;
  /** index into CompiledNetworkPolicy.rules: the first rule that produced this entry */
  ruleRef: number;
}

/** A rule an entry points back to. */
export interface CompiledRuleRef {
  /** "namespace/name" */
  policy: string;
  direction: PolicyType;
  ruleIndex: number;
}

export interface CompiledStats {
  /** local pods with an address */
  subjects: number;
  subjectClasses: number;
  /** allocated peer classes (pods' and addresses'), reserved ones not counted */
  peerClasses: number;
  entries: number;
  prefixes: number;
  compileMs: number;
}

/** What the map writer puts in the kernel. */
export interface CompiledNetworkPolicy {
  /** "namespace/name" of every local pod with an address → its subject class and flags */
  subjects: Map<string, CompiledSubject>;
  /** the address of every pod (local or not) → its peer class; the ipcache's /32 for a source known to be that pod */
  podPeers: Map<string, number>;
  /** 0.0.0.0/0 and every distinct IPv4 ipBlock cidr and except, with the class of an address (not a pod) there */
  prefixes: CompiledPrefix[];
  /** deduplicated allow entries */
  entries: CompiledEntry[];
  /** what ruleRef indexes */
  rules: CompiledRuleRef[];
  /** what the kernel does not enforce as the evaluator would (IPv6 ipBlocks, pods sharing an address), one line each */
  notes: string[];
  stats: CompiledStats;
}

export interface CompileOptions {
  /** the pods this node enforces policy for (subjects); default every pod */
  localPods?: (pod: PolicyPod) => boolean;
  /** keeps class ids stable across compiles; the compiler retains only the classes it returns */
  allocator: ClassAllocator;
}

// ---- ports ----

/**
 * The minimal set of aligned port blocks covering [first, last] (1 <= first
 * <= last <= 65535), as (port, prefixLen) with prefixLen 96 for one port and
 * 96 - k for a block of 2^k ports.
 */
export function portRangePrefixes(first: number, last: number): { port: number; prefixLen: number }[] {
  if (!Number.isInteger(first) || !Number.isInteger(last) || first < 0 || last > 65535 || first > last) {
    throw new InvalidArgumentError(`a port range must be 0 <= first <= last <= 65535, got ${first}-${last}`);
  }
  const out: { port: number; prefixLen: number }[] = [];
  let p = first;
  while (p <= last) {
    let k = 0;
    // grow the block while it stays aligned at p and inside the range
    while (k < 16 && p % 2 ** (k + 1) === 0 && p + 2 ** (k + 1) - 1 <= last) k++;
    out.push({ port: p, prefixLen: PREFIX_PORT - k });
    p += 2 ** k;
  }
  return out;
}

// ---- addresses (the kernel encodings live in mesh-agent/datapath/layout.ts) ----

function ipv4Number(ip: string): number {
  const a = parseIp(ip);
  if (!a || a.family !== 4) throw new InvalidArgumentError(`${JSON.stringify(ip)} is not an IPv4 address`);
  return Number(a.value);
}

// ---- IPv4 prefixes ----

/** The netmask of an IPv4 prefix length, as an unsigned 32-bit number. */
function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

const prefixId = (net: number, len: number): string => `${net}/${len}`;

function dotted(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The prefixes of all active IPv4 ipBlocks, with which blocks own each as cidr or except. */
class PrefixSet {
  readonly prefixes = new Map<string, { net: number; len: number; cidrOf: number[]; exceptOf: number[]; blocks?: number[] }>();
  /** the prefix lengths present, longest first */
  #lengths: number[] = [];

  constructor() {
    this.#add(0, 0);
  }

  #add(net: number, len: number): { cidrOf: number[]; exceptOf: number[] } {
    const id = prefixId(net, len);
    let p = this.prefixes.get(id);
    if (!p) {
      p = { net, len, cidrOf: [], exceptOf: [] };
      this.prefixes.set(id, p);
    }
    return p;
  }

  addBlock(block: number, b: IPBlock): void {
    this.#add(Number(b.block.network), b.block.prefix).cidrOf.push(block);
    for (const e of b.except) this.#add(Number(e.network), e.prefix).exceptOf.push(block);
  }

  /** Computes each prefix's blocks: those whose cidr contains it and none of whose excepts does. */
  finish(): void {
    this.#lengths = [...new Set([...this.prefixes.values()].map((p) => p.len))].sort((a, b) => b - a);
    for (const p of this.prefixes.values()) {
      const included = new Set<number>();
      const excluded = new Set<number>();
      for (const len of this.#lengths) {
        if (len > p.len) continue;
        const a = this.prefixes.get(prefixId((p.net & maskOf(len)) >>> 0, len));
        if (!a) continue;
        for (const b of a.cidrOf) included.add(b);
        for (const b of a.exceptOf) excluded.add(b);
      }
      p.blocks = [...included].filter((b) => !excluded.has(b)).sort((x, y) => x - y);
    }
  }

  /** The most specific prefix containing `addr` (0.0.0.0/0 always does). */
  longest(addr: number): { net: number; len: number; blocks?: number[] } {
    for (const len of this.#lengths) {
      const p = this.prefixes.get(prefixId((addr & maskOf(len)) >>> 0, len));
      if (p) return p;
    }
    throw new Error('unreachable: 0.0.0.0/0 is always a prefix');
  }
}

// ---- the compiler ----

// Parsed policies are immutable and kept between compiles: their canonical texts are memoized.
const selectorTexts = new WeakMap<LabelSelector, string>();
const blockTexts = new WeakMap<IPBlock, string>();

/** A selector in a canonical text form: equal texts select the same label sets. */
function selectorText(s: LabelSelector): string {
  let text = selectorTexts.get(s);
  if (text === undefined) {
    const labels = Object.keys(s.matchLabels).sort().map((k) => [k, s.matchLabels[k]]);
    const exprs = s.matchExpressions.map((r) => JSON.stringify([r.key, r.operator, [...r.values].sort()])).sort();
    text = JSON.stringify([labels, exprs]);
    selectorTexts.set(s, text);
  }
  return text;
}

/** An ipBlock in a canonical text form: the block and its excepts, normalised. */
function blockText(b: IPBlock): string {
  let text = blockTexts.get(b);
  if (text === undefined) {
    text = `block ${b.block.text} except ${b.except.map((e) => e.text).sort().join(',')}`;
    blockTexts.set(b, text);
  }
  return text;
}

/** A `pods` peer, deduplicated across policies: the namespaces it looks in and the pods it selects. */
interface PodAtom {
  key: string;
  /** undefined: the policy's own namespace */
  namespaceSelector?: LabelSelector;
  namespace: string;
  podSelector: LabelSelector;
}

/** A class signature: the canonical text itself when short, else its SHA-256 (a different separator, so the two never collide). */
const signatureOf = (kind: string, text: string): string => (text.length <= 200 ? `${kind}:${text}` : `${kind}#${createHash('sha256').update(text).digest('hex')}`);
const namedKey = (name: string, protocol: NetworkProtocol): string => `${name}/${protocol}`;

/** The container ports of `pod` named `name` with `protocol`, sorted. */
function resolveNamed(pod: PolicyPod, name: string, protocol: NetworkProtocol): number[] {
  const out = new Set<number>();
  for (const c of pod.ports) if (c.name === name && c.protocol === protocol) out.add(c.containerPort);
  return [...out].sort((a, b) => a - b);
}

/** A rule peer compiled: the classes it matches, or a reserved peer. */
type PeerTarget = { kind: 'any-pod' } | { kind: 'classes'; classes: ReadonlySet<number> };

/**
 * Compiles the world's NetworkPolicies into the kernel's tables. Pure apart
 * from the allocator, whose live classes afterwards are exactly the ones the
 * result uses.
 */
export function compileNetworkPolicies(world: PolicyWorld, opts: CompileOptions): CompiledNetworkPolicy {
  const t0 = performance.now();
  const { allocator } = opts;
  const isLocal = opts.localPods ?? (() => true);
  const notes: string[] = [];

  // Indexes: policies and pods by namespace; pods by namespace and label.
  const policiesByNs = new Map<string, NetworkPolicy[]>();
  for (const p of world.policies) {
    const list = policiesByNs.get(p.meta.namespace);
    if (list) list.push(p);
    else policiesByNs.set(p.meta.namespace, [p]);
  }
  const pods = world.pods.filter((p) => p.ip !== undefined);
  const podsByNs = new Map<string, PolicyPod[]>();
  const podsByLabel = new Map<string, PolicyPod[]>();
  for (const pod of pods) {
    const list = podsByNs.get(pod.namespace);
    if (list) list.push(pod);
    else podsByNs.set(pod.namespace, [pod]);
    for (const [k, v] of Object.entries(pod.labels)) {
      const lk = `${pod.namespace}\0${k}\0${v}`;
      const l = podsByLabel.get(lk);
      if (l) l.push(pod);
      else podsByLabel.set(lk, [pod]);
    }
  }
  const nsLabels = new Map<string, Labels>();
  for (const ns of world.namespaces) nsLabels.set(ns.name, { ...ns.labels, [NAMESPACE_NAME_LABEL]: ns.name });
  for (const ns of podsByNs.keys()) if (!nsLabels.has(ns)) nsLabels.set(ns, { [NAMESPACE_NAME_LABEL]: ns });

  // 1. Which policies select each local pod, per direction. Only those policies' rules matter.
  interface Local { pod: PolicyPod; key: string; ingress: NetworkPolicy[]; egress: NetworkPolicy[] }
  const locals: Local[] = [];
  const active: Record<PolicyType, Set<NetworkPolicy>> = { Ingress: new Set(), Egress: new Set() };
  for (const pod of pods) {
    if (!isLocal(pod)) continue;
    const mine = policiesByNs.get(pod.namespace) ?? [];
    const ingress = policiesSelecting(mine, pod, 'Ingress');
    const egress = policiesSelecting(mine, pod, 'Egress');
    for (const p of ingress) active.Ingress.add(p);
    for (const p of egress) active.Egress.add(p);
    locals.push({ pod, key: `${pod.namespace}/${pod.name}`, ingress, egress });
  }
  const rulesOf = (p: NetworkPolicy, d: PolicyType): readonly NetworkPolicyRule[] => (d === 'Ingress' ? p.ingress : p.egress);

  // 2. Atoms: the distinct pod peers and IPv4 ipBlocks of active rules; named ports egress rules use.
  const podAtoms = new Map<string, PodAtom>();
  const blockAtoms = new Map<string, { key: string; index: number; block: IPBlock }>();
  const prefixSet = new PrefixSet();
  const egressNames = new Map<string, { name: string; protocol: NetworkProtocol }>();
  const peerAtomKey = new Map<NetworkPolicyPeer, string | null>(); // null: ANY_POD, or an IPv6 block
  const namespaceList = [...nsLabels.keys()];
  for (const d of ['Ingress', 'Egress'] as const) {
    for (const policy of active[d]) {
      rulesOf(policy, d).forEach((rule, i) => {
        rule.peers.forEach((peer, j) => {
          if (peerAtomKey.has(peer)) return;
          if (peer.kind === 'ipBlock') {
            if (peer.ipBlock.ipv6) {
              notes.push(`${policyKey(policy)} ${d.toLowerCase()}[${i}] peer ${j}: IPv6 ipBlock ${peer.ipBlock.cidr} is not enforced by the kernel (IPv4 only)`);
              peerAtomKey.set(peer, null);
              return;
            }
            const key = blockText(peer.ipBlock);
            if (!blockAtoms.has(key)) {
              const index = blockAtoms.size;
              blockAtoms.set(key, { key, index, block: peer.ipBlock });
              prefixSet.addBlock(index, peer.ipBlock);
            }
            peerAtomKey.set(peer, key);
            return;
          }
          if (peer.namespaceSelector !== undefined && isEverything(peer.namespaceSelector) && isEverything(peer.podSelector)) {
            peerAtomKey.set(peer, null);
            return;
          }
          const key = peer.namespaceSelector === undefined
            ? `pods ns=${JSON.stringify(policy.meta.namespace)} pods=${selectorText(peer.podSelector)}`
            : `pods nsSelector=${selectorText(peer.namespaceSelector)} pods=${selectorText(peer.podSelector)}`;
          if (!podAtoms.has(key)) {
            podAtoms.set(key, {
              key, namespace: policy.meta.namespace, podSelector: peer.podSelector,
              ...(peer.namespaceSelector !== undefined && { namespaceSelector: peer.namespaceSelector }),
            });
          }
          peerAtomKey.set(peer, key);
        });
        if (d === 'Egress') {
          for (const port of rule.ports) if (typeof port.port === 'string') egressNames.set(namedKey(port.port, port.protocol), { name: port.port, protocol: port.protocol });
        }
      });
    }
  }
  prefixSet.finish();
  const blockKeys = [...blockAtoms.values()].map((b) => b.key); // by index

  // 3. Which pod atoms each pod matches (namespaces first, then candidates by a matchLabels term).
  const podAtomsOf = new Map<PolicyPod, string[]>();
  for (const atom of podAtoms.values()) {
    const namespaces = atom.namespaceSelector === undefined
      ? [atom.namespace]
      : namespaceList.filter((ns) => selectorMatches(atom.namespaceSelector!, nsLabels.get(ns)!));
    for (const ns of namespaces) {
      let candidates = podsByNs.get(ns) ?? [];
      for (const [k, v] of Object.entries(atom.podSelector.matchLabels)) {
        const l = podsByLabel.get(`${ns}\0${k}\0${v}`) ?? [];
        if (l.length < candidates.length) candidates = l;
      }
      for (const pod of candidates) {
        if (!selectorMatches(atom.podSelector, pod.labels)) continue;
        const l = podAtomsOf.get(pod);
        if (l) l.push(atom.key);
        else podAtomsOf.set(pod, [atom.key]);
      }
    }
  }

  // 4. Peer classes: addresses by prefix, pods by signature.
  const classesOfAtom = new Map<string, Set<number>>();
  const addClass = (atom: string, id: number): void => {
    const s = classesOfAtom.get(atom);
    if (s) s.add(id);
    else classesOfAtom.set(atom, new Set([id]));
  };
  const live = new Set<number>();
  const prefixes: CompiledPrefix[] = [];
  for (const p of prefixSet.prefixes.values()) {
    const blocks = p.blocks!.map((b) => blockKeys[b]!);
    const peer = blocks.length === 0 ? PEER_WORLD : allocator.idFor(signatureOf('peer-address', blocks.join('\n')));
    if (peer !== PEER_WORLD) {
      live.add(peer);
      for (const b of blocks) addClass(b, peer);
    }
    prefixes.push({ ip: dotted(p.net), prefixLen: p.len, peer });
  }
  const names = [...egressNames.values()].sort((a, b) => (namedKey(a.name, a.protocol) < namedKey(b.name, b.protocol) ? -1 : 1));
  const podPeers = new Map<string, number>();
  const podClassIds = new Set<number>();
  /** per pod class: egress named port → the ports it resolves to (only names that resolve) */
  const namedOfClass = new Map<number, Map<string, number[]>>();
  for (const pod of pods) {
    const atoms = (podAtomsOf.get(pod) ?? []).sort();
    const addr = parseIp(pod.ip!);
    const blocks = addr?.family === 4 ? prefixSet.longest(Number(addr.value)).blocks!.map((b) => blockKeys[b]!) : [];
    const named = new Map<string, number[]>();
    for (const n of names) {
      const ports = resolveNamed(pod, n.name, n.protocol);
      if (ports.length > 0) named.set(namedKey(n.name, n.protocol), ports);
    }
    const signature = JSON.stringify([atoms, blocks, [...named]]);
    const id = allocator.idFor(signatureOf('peer-pod', signature));
    const other = podPeers.get(pod.ip!);
    if (other !== undefined && other !== id) notes.push(`pods share the address ${pod.ip}: the kernel sees it as ${pod.namespace}/${pod.name} (peer class ${id}), not as the pod before it (class ${other})`);
    podPeers.set(pod.ip!, id);
    if (!podClassIds.has(id)) {
      podClassIds.add(id);
      live.add(id);
      for (const a of atoms) addClass(a, id);
      for (const b of blocks) addClass(b, id);
      namedOfClass.set(id, named);
    }
  }
  /** egress named port → pod classes it resolves in, with the ports */
  const classesOfName = new Map<string, Map<number, number[]>>();
  for (const [id, named] of namedOfClass) {
    for (const [n, ports] of named) {
      const m = classesOfName.get(n);
      if (m) m.set(id, ports);
      else classesOfName.set(n, new Map([[id, ports]]));
    }
  }

  // 5. Entries per group of local pods with the same selecting policies and the same ingress named ports.
  const rules: CompiledRuleRef[] = [];
  const ruleIds: Record<PolicyType, Map<NetworkPolicy, number[]>> = { Ingress: new Map(), Egress: new Map() };
  const ruleRefOf = (policy: NetworkPolicy, direction: PolicyType, ruleIndex: number): number => {
    let ids = ruleIds[direction].get(policy);
    if (!ids) {
      ids = [];
      ruleIds[direction].set(policy, ids);
    }
    let r = ids[ruleIndex];
    if (r === undefined) {
      r = rules.length;
      rules.push({ policy: policyKey(policy), direction, ruleIndex });
      ids[ruleIndex] = r;
    }
    return r;
  };
  const targetOf = (peer: NetworkPolicyPeer): PeerTarget | undefined => {
    const key = peerAtomKey.get(peer);
    if (key === null) return peer.kind === 'pods' ? { kind: 'any-pod' } : undefined; // IPv6 block: nothing
    const classes = classesOfAtom.get(key!);
    return classes === undefined ? undefined : { kind: 'classes', classes };
  };
  const ingressNamesOf = new Map<NetworkPolicy, string[]>();
  const ingressNames = (p: NetworkPolicy): string[] => {
    let l = ingressNamesOf.get(p);
    if (!l) {
      l = [...new Set(p.ingress.flatMap((r) => r.ports.filter((x) => typeof x.port === 'string').map((x) => namedKey(x.port as string, x.protocol))))];
      ingressNamesOf.set(p, l);
    }
    return l;
  };

  type GroupEntries = Map<string, Omit<CompiledEntry, 'subject'>>;
  const compileGroup = (pod: PolicyPod, ingress: NetworkPolicy[], egress: NetworkPolicy[]): GroupEntries => {
    const out: GroupEntries = new Map();
    const emit = (peer: number, dir: PolicyDir, proto: number, port: number, prefixLen: number, ruleRef: number): void => {
      const k = `${peer},${dir},${proto},${port},${prefixLen}`;
      if (!out.has(k)) out.set(k, { peer, dir, proto, port, prefixLen, ruleRef });
    };
    for (const [direction, selecting] of [['Ingress', ingress], ['Egress', egress]] as const) {
      const dir: PolicyDir = direction === 'Ingress' ? DIR_INGRESS : DIR_EGRESS;
      for (const policy of selecting) {
        rulesOf(policy, direction).forEach((rule, i) => {
          const ref = ruleRefOf(policy, direction, i);
          // the peers: reserved ids, or the classes each peer matches
          const peers = new Set<number>();
          if (rule.peers.length === 0) peers.add(PEER_ANY);
          for (const peer of rule.peers) {
            const t = targetOf(peer);
            if (t === undefined) continue;
            if (t.kind === 'any-pod') peers.add(PEER_ANY_POD);
            else for (const c of t.classes) peers.add(c);
          }
          if (peers.size === 0) return;
          if (rule.ports.length === 0) {
            for (const peer of peers) emit(peer, dir, 0, 0, PREFIX_ALL, ref);
            return;
          }
          for (const port of rule.ports) {
            const proto = PROTOCOL_NUMBERS[port.protocol];
            if (port.port === undefined) {
              for (const peer of peers) emit(peer, dir, proto, 0, PREFIX_PROTOCOL, ref);
            } else if (typeof port.port === 'number') {
              const blocks = portRangePrefixes(port.port, port.endPort ?? port.port);
              for (const peer of peers) for (const b of blocks) emit(peer, dir, proto, b.port, b.prefixLen, ref);
            } else if (dir === DIR_INGRESS) {
              // a named port resolves against the destination: the subject itself
              const resolved = resolveNamed(pod, port.port, port.protocol);
              for (const peer of peers) for (const p of resolved) emit(peer, dir, proto, p, PREFIX_PORT, ref);
            } else {
              // against each destination pod's ports: per pod class; never for an address
              const n = namedKey(port.port, port.protocol);
              const resolving = classesOfName.get(n);
              if (!resolving) continue;
              if (peers.has(PEER_ANY) || peers.has(PEER_ANY_POD)) {
                for (const [c, ports] of resolving) for (const p of ports) emit(c, dir, proto, p, PREFIX_PORT, ref);
              } else {
                for (const c of peers) for (const p of resolving.get(c) ?? []) emit(c, dir, proto, p, PREFIX_PORT, ref);
              }
            }
          }
        });
      }
    }
    return out;
  };

  const subjects = new Map<string, CompiledSubject>();
  const entries: CompiledEntry[] = [];
  const groups = new Map<string, CompiledSubject>();
  const subjectClassIds = new Set<number>();
  for (const l of locals) {
    const inNames = [...new Set(l.ingress.flatMap(ingressNames))].sort();
    const groupKey = JSON.stringify([l.ingress.map(policyKey), l.egress.map(policyKey), inNames.map((n) => {
      const [name, protocol] = n.split('/') as [string, NetworkProtocol];
      return resolveNamed(l.pod, name, protocol);
    })]);
    let s = groups.get(groupKey);
    if (!s) {
      const ingressIsolated = l.ingress.length > 0;
      const egressIsolated = l.egress.length > 0;
      const group = compileGroup(l.pod, l.ingress, l.egress);
      const text = `ingress ${ingressIsolated ? 'isolated' : 'open'}\negress ${egressIsolated ? 'isolated' : 'open'}\n${[...group.keys()].sort().join('\n')}`;
      const subject = allocator.idFor(signatureOf('subject', text));
      s = Object.freeze({ subject, ingressIsolated, egressIsolated });
      groups.set(groupKey, s);
      if (!subjectClassIds.has(subject)) {
        subjectClassIds.add(subject);
        live.add(subject);
        for (const e of group.values()) entries.push({ subject, ...e });
      }
    }
    subjects.set(l.key, s);
  }

  allocator.retain(live);
  return {
    subjects, podPeers, prefixes, entries, rules, notes,
    stats: {
      subjects: subjects.size, subjectClasses: subjectClassIds.size,
      peerClasses: podClassIds.size + new Set(prefixes.map((p) => p.peer).filter((p) => p !== PEER_WORLD)).size,
      entries: entries.length, prefixes: prefixes.length, compileMs: performance.now() - t0,
    },
  };
}

/** Every class id a compiled policy uses (subjects and peers, reserved ids left out). */
export function compiledClassIds(c: CompiledNetworkPolicy): Set<number> {
  const out = new Set<number>();
  for (const s of c.subjects.values()) out.add(s.subject);
  for (const p of c.podPeers.values()) out.add(p);
  for (const p of c.prefixes) if (p.peer >= FIRST_CLASS_ID) out.add(p.peer);
  return out;
}

// ---- the kernel's lookup, modelled ----

/** A longest-prefix-match table over byte strings, as BPF_MAP_TYPE_LPM_TRIE matches them (MSB first). */
class LpmModel<V> {
  readonly #byLen = new Map<number, Map<string, V>>();
  #lengths: number[] = [];

  static #masked(data: Buffer, bits: number): string {
    const b = Buffer.from(data.subarray(0, Math.ceil(bits / 8)));
    if (bits % 8 !== 0) b[b.length - 1]! &= (0xff << (8 - (bits % 8))) & 0xff;
    return b.toString('hex');
  }

  insert(data: Buffer, prefixLen: number, value: V): void {
    let m = this.#byLen.get(prefixLen);
    if (!m) {
      m = new Map();
      this.#byLen.set(prefixLen, m);
      this.#lengths = [...this.#byLen.keys()].sort((a, b) => b - a);
    }
    m.set(LpmModel.#masked(data, prefixLen), value);
  }

  /** The value of the longest prefix that matches `data`, or undefined. */
  lookup(data: Buffer): V | undefined {
    for (const len of this.#lengths) {
      const v = this.#byLen.get(len)!.get(LpmModel.#masked(data, len));
      if (v !== undefined) return v;
    }
    return undefined;
  }
}

interface Model { policy: LpmModel<number>; ipcache: LpmModel<number> }
const models = new WeakMap<CompiledNetworkPolicy, Model>();

function modelOf(c: CompiledNetworkPolicy): Model {
  let m = models.get(c);
  if (!m) {
    m = { policy: new LpmModel(), ipcache: new LpmModel() };
    for (const e of c.entries) {
      const key = encodePolicyKey(e);
      m.policy.insert(key.subarray(4), key.readUInt32LE(0), e.ruleRef);
    }
    for (const p of c.prefixes) {
      const key = encodeIpcacheKey(p.ip, p.prefixLen);
      m.ipcache.insert(key.subarray(4), key.readUInt32LE(0), p.peer);
    }
    models.set(c, m);
  }
  return m;
}

/**
 * The class of an address that is not (known to be) a pod: the ipcache's
 * most specific ipBlock prefix, or WORLD. The pods' /32s are not consulted.
 */
export function addressPeerClass(c: CompiledNetworkPolicy, ip: string): number {
  const data = Buffer.alloc(4);
  data.writeUInt32BE(ipv4Number(ip));
  return modelOf(c).ipcache.lookup(data) ?? PEER_WORLD;
}

/** One direction of a connection, as the kernel judges it. */
export interface CompiledQuery {
  /** "namespace/name" of the local pod judged (the connecting pod for egress, the receiving pod for ingress); absent when that end is not a pod */
  subject?: string;
  /** the other end: a pod, known by its address (its class from podPeers), or an address that is not a pod */
  peer: { kind: 'pod'; ip: string } | { kind: 'address'; ip: string };
  dir: PolicyDir;
  protocol: NetworkProtocol;
  port: number;
}

/**
 * Whether the kernel allows one direction: open when the end judged is not a
 * pod or is not isolated in that direction; otherwise allowed iff the LPM
 * lookup of {subject, peer}, then (a pod peer) {subject, ANY_POD}, then
 * {subject, ANY} hits. Does not consult the evaluator.
 */
export function lookupCompiled(c: CompiledNetworkPolicy, q: CompiledQuery): boolean {
  if (q.subject === undefined) return true;
  const s = c.subjects.get(q.subject);
  if (!s) throw new InvalidArgumentError(`${q.subject} is not a compiled subject (not a local pod with an address)`);
  if (!(q.dir === DIR_INGRESS ? s.ingressIsolated : s.egressIsolated)) return true;
  let peer: number;
  if (q.peer.kind === 'pod') {
    const p = c.podPeers.get(q.peer.ip);
    if (p === undefined) throw new InvalidArgumentError(`no pod has the address ${q.peer.ip}`);
    peer = p;
  } else peer = addressPeerClass(c, q.peer.ip);
  const { policy } = modelOf(c);
  const probe = (p: number): boolean =>
    policy.lookup(encodePolicyKey({ subject: s.subject, peer: p, dir: q.dir, proto: PROTOCOL_NUMBERS[q.protocol], port: q.port, prefixLen: PREFIX_PORT }).subarray(4)) !== undefined;
  return probe(peer) || (q.peer.kind === 'pod' && probe(PEER_ANY_POD)) || probe(PEER_ANY);
}
