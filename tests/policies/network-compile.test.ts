import t from 'tap';
import type { Test } from 'tap';
import { encodePolicyKey } from '../../mesh-agent/datapath/layout.js';
import { parseCidr, cidrCovers, type Cidr } from '../../policies/cidr.js';
import {
  ClassAllocator, DIR_EGRESS, DIR_INGRESS, FIRST_CLASS_ID, PEER_ANY, PEER_ANY_POD, PEER_NODE_PROXY,
  PEER_WORLD, PREFIX_ALL, PREFIX_PORT, PREFIX_PROTOCOL, PROTO_SCTP, PROTO_TCP, PROTO_UDP, addressPeerClass,
  compileNetworkPolicies, compiledClassIds, lookupCompiled, portRangePrefixes,
  type CompiledNetworkPolicy, type CompiledQuery,
} from '../../policies/network-compile.js';
import { parseNetworkPolicy, type NetworkPolicy, type NetworkProtocol } from '../../policies/network-policy.js';
import { explainConnection, type Endpoint, type PolicyNamespace, type PolicyPod, type PolicyPodPort, type PolicyWorld } from '../../policies/network-verdict.js';
import { policyFromSpec, RecordingSink, testMeta } from '../fixtures/policies.js';

// ---- unit: port ranges ----

/** Whether the blocks are aligned, in order, and cover exactly [first, last]. */
function exactCover(blocks: { port: number; prefixLen: number }[], first: number, last: number): boolean {
  let next = first;
  for (const b of blocks) {
    const size = 2 ** (PREFIX_PORT - b.prefixLen);
    if (b.port !== next || b.port % size !== 0) return false;
    next = b.port + size;
  }
  return next === last + 1;
}

t.test('endPort ranges become the minimal aligned prefixes', (t) => {
  t.same(portRangePrefixes(80, 80), [{ port: 80, prefixLen: 96 }], 'a single port');
  t.same(portRangePrefixes(1, 1), [{ port: 1, prefixLen: 96 }], 'port 1');
  t.same(portRangePrefixes(65535, 65535), [{ port: 65535, prefixLen: 96 }], 'port 65535');
  t.same(portRangePrefixes(1, 65535), Array.from({ length: 16 }, (_, k) => ({ port: 2 ** k, prefixLen: 96 - k })), '1-65535: 16 blocks, 96 down to 81');
  t.same(portRangePrefixes(65534, 65535), [{ port: 65534, prefixLen: 95 }], 'the last aligned pair');
  t.same(portRangePrefixes(32768, 65535), [{ port: 32768, prefixLen: 81 }], 'the upper half is one block');
  t.same(portRangePrefixes(8000, 8007), [{ port: 8000, prefixLen: 93 }], 'an aligned block of 8');
  t.same(portRangePrefixes(9001, 9003), [{ port: 9001, prefixLen: 96 }, { port: 9002, prefixLen: 95 }], 'an odd start');
  t.same(portRangePrefixes(9000, 9100), [
    { port: 9000, prefixLen: 93 }, { port: 9008, prefixLen: 92 }, { port: 9024, prefixLen: 90 }, { port: 9088, prefixLen: 93 },
    { port: 9096, prefixLen: 94 }, { port: 9100, prefixLen: 96 },
  ], '9000-9100');
  t.equal(portRangePrefixes(1, 65534).length, 30, 'the worst case: 2·16 − 2 blocks');
  t.throws(() => portRangePrefixes(10, 9), { code: 'SOCKMESH_INVALID_ARGUMENT' });
  t.throws(() => portRangePrefixes(1, 65536), { code: 'SOCKMESH_INVALID_ARGUMENT' });
  // every range of a seeded sample: exact cover, in order, and no two neighbours that make one aligned block
  const rand = rng(7);
  for (let i = 0; i < 20_000; i++) {
    const a = 1 + Math.floor(rand() * 65535);
    const b = i % 3 === 0 ? Math.min(65535, a + Math.floor(rand() * 64)) : a + Math.floor(rand() * (65536 - a));
    const blocks = portRangePrefixes(a, b);
    if (!exactCover(blocks, a, b)) {
      t.fail(`${a}-${b}: not an exact cover: ${JSON.stringify(blocks)}`);
      break;
    }
    const mergeable = blocks.some((x, j) => {
      const y = blocks[j + 1];
      return y !== undefined && x.prefixLen === y.prefixLen && x.prefixLen > 81 && x.port % 2 ** (PREFIX_PORT - x.prefixLen + 1) === 0;
    });
    if (mergeable || blocks.length > 30) {
      t.fail(`${a}-${b}: not minimal: ${JSON.stringify(blocks)}`);
      break;
    }
  }
  t.end();
});

// ---- unit: classes ----

t.test('reserved classes and the allocator', (t) => {
  t.same([PEER_ANY, PEER_ANY_POD, PEER_WORLD, PEER_NODE_PROXY, FIRST_CLASS_ID], [0, 1, 2, 3, 16]);
  t.same([DIR_INGRESS, DIR_EGRESS, PROTO_TCP, PROTO_UDP, PROTO_SCTP], [0, 1, 6, 17, 132]);
  const a = new ClassAllocator();
  t.equal(a.idFor('x'), 16, 'ids start at 16');
  t.equal(a.idFor('y'), 17);
  t.equal(a.idFor('x'), 16, 'a known signature keeps its id');
  t.equal(a.retain(new Set([17])), 1, 'one signature forgotten');
  t.equal(a.get('x'), undefined);
  t.equal(a.idFor('x'), 18, 'a forgotten signature comes back with a new id: ids are never reused');
  t.equal(a.size, 2);
  t.throws(() => new ClassAllocator(3), { code: 'SOCKMESH_INVALID_ARGUMENT' }, 'reserved ids cannot be handed out');
  t.end();
});

// ---- hand-made worlds (Cilium connectivity-test names) ----

const namespaces: PolicyNamespace[] = [
  { name: 'shop', labels: { team: 'shop' } },
  { name: 'ops', labels: { team: 'ops', env: 'prod' } },
  { name: 'other', labels: {} },
];
const shopPods: PolicyPod[] = [
  { namespace: 'shop', name: 'frontend', labels: { app: 'frontend' }, ip: '198.18.0.10', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] },
  {
    namespace: 'shop', name: 'catalog', labels: { app: 'catalog' }, ip: '198.18.0.11',
    ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }, { name: 'metrics', containerPort: 9090, protocol: 'TCP' }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }],
  },
  { namespace: 'shop', name: 'catalog-2', labels: { app: 'catalog' }, ip: '198.18.0.12', ports: [{ name: 'http', containerPort: 8081, protocol: 'TCP' }] },
  { namespace: 'shop', name: 'client', labels: { app: 'client' }, ip: '198.18.0.13', ports: [] },
  { namespace: 'shop', name: 'client-2', labels: { app: 'client' }, ip: '198.18.0.14', ports: [] },
  { namespace: 'ops', name: 'prober', labels: { app: 'prober' }, ip: '198.18.1.10', ports: [] },
  { namespace: 'ops', name: 'client', labels: { app: 'client' }, ip: '198.18.1.11', ports: [{ name: 'http', containerPort: 80, protocol: 'TCP' }] },
  { namespace: 'other', name: 'prober', labels: { app: 'prober' }, ip: '192.168.5.5', ports: [] },
  // a namespace the world does not list: it still has its name label
  { namespace: 'unlisted', name: 'stray', labels: { app: 'prober' }, ip: '10.9.9.9', ports: [] },
  // no address: not a subject, not a peer the kernel can see
  { namespace: 'shop', name: 'pending', labels: { app: 'catalog' }, ports: [] },
];

const spec = (ns: string, name: string, s: string): NetworkPolicy => policyFromSpec(ns, name, s);
const handMade: { name: string; policies: NetworkPolicy[] }[] = [
  { name: 'no-policies', policies: [] },
  { name: 'all-ingress-deny', policies: [spec('shop', 'deny-in', '  podSelector: {}\n  policyTypes: [Ingress]')] },
  { name: 'all-egress-deny', policies: [spec('shop', 'deny-out', '  podSelector: {}\n  policyTypes: [Egress]')] },
  { name: 'all-ingress-allow', policies: [spec('shop', 'allow-in', '  podSelector: {}\n  ingress: [{}]')] },
  {
    name: 'client-egress-to-labelled-pods', policies: [spec('shop', 'client-egress', `  podSelector: { matchLabels: { app: client } }
  egress:
  - to: [{ podSelector: { matchLabels: { app: catalog } } }]
    ports: [{ port: 8080 }]`)],
  },
  {
    name: 'client-ingress-from-namespace', policies: [
      spec('shop', 'from-ops', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { team: ops } } }]`),
      spec('shop', 'from-unlisted', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: unlisted } } }]`),
    ],
  },
  {
    name: 'namespace-and-pod-selector', policies: [spec('shop', 'probers-in-ops', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { team: ops } }, podSelector: { matchLabels: { app: prober } } }, { podSelector: { matchExpressions: [{ key: app, operator: NotIn, values: [catalog] }] } }]`)],
  },
  {
    name: 'any-pod-anywhere', policies: [spec('shop', 'pods-only', `  podSelector: { matchLabels: { app: catalog } }
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{ namespaceSelector: {}, podSelector: {} }]
    ports: [{ port: http }, { protocol: UDP }]
  egress:
  - to: [{ namespaceSelector: {} }]
    ports: [{ port: http }, { port: 53, protocol: UDP }]`)],
  },
  {
    name: 'ports-named-ports-and-endport', policies: [
      spec('shop', 'catalog-ports', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - ports: [{ port: http }, { protocol: UDP, port: dns }, { port: 9000, endPort: 9100 }, { protocol: SCTP, port: 1, endPort: 65535 }]`),
      spec('shop', 'client-named', `  podSelector: { matchLabels: { app: client } }
  policyTypes: [Egress]
  egress:
  - to: [{ podSelector: { matchLabels: { app: catalog } } }]
    ports: [{ port: http }, { port: nope }]
  - to: [{ podSelector: { matchLabels: { app: frontend } } }]
    ports: [{ port: metrics }]
  - ports: [{ port: metrics }, { port: 65535 }]`),
    ],
  },
  {
    name: 'ipblock-with-except', policies: [
      spec('shop', 'outside', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ ipBlock: { cidr: 0.0.0.0/0, except: [192.168.0.0/16, 198.18.0.12/32] } }]
    ports: [{ port: 8080, endPort: 8081 }]`),
      spec('shop', 'client-out', `  podSelector: { matchLabels: { app: client } }
  policyTypes: [Egress]
  egress:
  - to: [{ ipBlock: { cidr: 198.18.0.0/16, except: [198.18.1.0/24] } }, { ipBlock: { cidr: 203.0.113.0/24 } }]
    ports: [{ port: http }, { port: 443 }]
  - to: [{ ipBlock: { cidr: 198.18.1.10/32 } }, { ipBlock: { cidr: '2001:db8::/32' } }]`),
    ],
  },
  {
    name: 'ipv6-block-only', policies: [spec('shop', 'v6', `  podSelector: {}
  ingress:
  - from: [{ ipBlock: { cidr: '2001:db8::/32' } }]`)],
  },
  {
    name: 'egress-only-policy-with-ingress-rules', policies: [spec('shop', 'egress-only', `  podSelector: {}
  policyTypes: [Egress]
  ingress: [{ from: [{ podSelector: { matchLabels: { app: nobody } } }] }]
  egress: [{}]`)],
  },
];

// ---- the oracle ----

/** One probe: a connection the evaluator and the compiled tables must agree on, per direction. */
interface Probe {
  from: Endpoint;
  to: Endpoint;
  port: number;
  protocol: NetworkProtocol;
}

const epText = (e: Endpoint): string => (e.kind === 'pod' ? `${e.namespace}/${e.name}` : e.ip);
const probeText = (p: Probe): string => `${epText(p.from)} -> ${epText(p.to)}:${p.port}/${p.protocol}`;

/** Addresses worth probing: fixed ones, every pod's address (as a plain address), and each ipBlock prefix's edges. */
function probeAddresses(world: PolicyWorld): string[] {
  const out = new Set(['203.0.113.7', '192.168.1.1', '10.0.0.1', '0.0.0.1', '255.255.255.255', '198.18.200.1']);
  for (const p of world.pods) if (p.ip) out.add(p.ip);
  const edges = (c: Cidr): void => {
    if (c.family !== 4) return;
    const first = Number(c.network);
    const last = first + 2 ** (32 - c.prefix) - 1;
    for (const n of [first - 1, first, last, last + 1]) if (n >= 0 && n <= 0xffffffff) out.add([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'));
  };
  for (const pol of world.policies) {
    for (const r of [...pol.ingress, ...pol.egress]) {
      for (const peer of r.peers) {
        if (peer.kind !== 'ipBlock') continue;
        edges(peer.ipBlock.block);
        peer.ipBlock.except.forEach(edges);
      }
    }
  }
  return [...out];
}

/** Ports worth probing: a few fixed ones, every rule port and range edge, and every container port. */
function probePorts(world: PolicyWorld): number[] {
  const out = new Set([1, 80, 443, 8080, 65535]);
  for (const pol of world.policies) {
    for (const r of [...pol.ingress, ...pol.egress]) {
      for (const p of r.ports) {
        if (typeof p.port !== 'number') continue;
        for (const n of [p.port - 1, p.port, p.port + 1]) out.add(n);
        if (p.endPort !== undefined) for (const n of [p.endPort - 1, p.endPort, p.endPort + 1]) out.add(n);
      }
    }
  }
  for (const pod of world.pods) for (const c of pod.ports) out.add(c.containerPort);
  return [...out].filter((p) => p >= 1 && p <= 65535).sort((a, b) => a - b);
}

function* probesOf(world: PolicyWorld, protocols: readonly NetworkProtocol[]): Generator<Probe> {
  const pods: Endpoint[] = world.pods.filter((p) => p.ip !== undefined).map((p) => ({ kind: 'pod', namespace: p.namespace, name: p.name }));
  const addresses: Endpoint[] = probeAddresses(world).map((ip) => ({ kind: 'ip', ip }));
  const ports = probePorts(world);
  const pairs: [Endpoint, Endpoint][] = [];
  for (const a of pods) for (const b of pods) pairs.push([a, b]);
  for (const a of addresses) for (const b of pods) pairs.push([a, b], [b, a]);
  for (const [from, to] of pairs) for (const port of ports) for (const protocol of protocols) yield { from, to, port, protocol };
}

const peerOf = (world: PolicyWorld, e: Endpoint): CompiledQuery['peer'] =>
  e.kind === 'ip' ? { kind: 'address', ip: e.ip } : { kind: 'pod', ip: world.pods.find((p) => p.namespace === e.namespace && p.name === e.name)!.ip! };

/**
 * Checks every probe of `world`: lookupCompiled must give explainConnection's
 * allowed for egress (at the source pod) and ingress (at the destination
 * pod), where that pod is local. Returns the probe count.
 */
function checkWorld(t: Test, world: PolicyWorld, label: string, opts: { protocols: readonly NetworkProtocol[]; local?: (p: PolicyPod) => boolean; compiled?: CompiledNetworkPolicy }): number {
  const local = opts.local ?? (() => true);
  const compiled = opts.compiled ?? compileNetworkPolicies(world, { allocator: new ClassAllocator(), localPods: local });
  const isLocal = (e: Endpoint): boolean => e.kind === 'pod' && local(world.pods.find((p) => p.namespace === e.namespace && p.name === e.name)!);
  let probes = 0;
  let directions = 0;
  const failures: string[] = [];
  for (const probe of probesOf(world, opts.protocols)) {
    probes++;
    const v = explainConnection(world, { from: probe.from, to: probe.to, port: probe.port, protocol: probe.protocol });
    if (v.kind !== 'verdict') throw new Error(`${label}: ${probeText(probe)}: ${v.reason}`);
    const judged: [typeof v.egress, Endpoint, Endpoint, 0 | 1][] = [[v.egress, probe.from, probe.to, DIR_EGRESS], [v.ingress, probe.to, probe.from, DIR_INGRESS]];
    for (const [verdict, subject, peer, dir] of judged) {
      if (subject.kind === 'pod' && !isLocal(subject)) continue; // another node's kernel judges it
      directions++;
      const got = lookupCompiled(compiled, {
        ...(subject.kind === 'pod' && { subject: epText(subject) }), peer: peerOf(world, peer), dir, protocol: probe.protocol, port: probe.port,
      });
      if (got !== verdict.allowed && failures.length < 5) {
        failures.push(`${label}: ${probeText(probe)}: ${dir === DIR_EGRESS ? 'egress' : 'ingress'} compiled ${got ? 'allows' : 'denies'}, the evaluator says ${verdict.reason}`);
      }
    }
  }
  for (const f of failures) t.fail(f);
  t.ok(failures.length === 0 && directions > 0, `${label}: ${probes} probes, ${directions} directions judged, compiled = evaluator`);
  return probes;
}

t.test('hand-made worlds: the compiled tables decide as the evaluator', (t) => {
  let total = 0;
  for (const c of handMade) {
    const world: PolicyWorld = { namespaces, pods: shopPods, policies: c.policies };
    total += checkWorld(t, world, c.name, { protocols: ['TCP', 'UDP', 'SCTP'] });
    // the same world with only the shop pods local
    total += checkWorld(t, world, `${c.name} (shop pods local)`, { protocols: ['TCP', 'UDP'], local: (p) => p.namespace === 'shop' });
  }
  t.comment(`${total} probes over ${handMade.length} hand-made worlds`);
  t.end();
});

// ---- the oracle on seeded random worlds ----

/** mulberry32: a small seeded generator, so a failing world can be rebuilt from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random world: 2–4 namespaces, 3–8 pods, 1–5 policies, all valid NetworkPolicies (parsed as documents). */
function randomWorld(seed: number): PolicyWorld {
  const r = rng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const maybe = (p = 0.5): boolean => r() < p;

  const nsNames = ['alpha', 'beta', 'gamma', 'delta'].slice(0, int(2, 4));
  const nss: PolicyNamespace[] = nsNames.map((name) => ({ name, labels: { ...(maybe() && { team: pick(['a', 'b']) }), ...(maybe(0.3) && { env: pick(['prod', 'dev']) }) } }));
  const nPods = int(3, 8);
  const pods: PolicyPod[] = [];
  const subnets = ['10.1.0', '10.1.1', '10.2.0', '192.168.7'];
  for (let i = 0; i < nPods; i++) {
    const ports: PolicyPodPort[] = [];
    if (maybe(0.6)) ports.push({ name: 'http', containerPort: pick([80, 8080, 8081]), protocol: 'TCP' });
    if (maybe(0.3)) ports.push({ name: 'metrics', containerPort: pick([9090, 9091]), protocol: 'TCP' });
    if (maybe(0.3)) ports.push({ name: 'dns', containerPort: pick([53, 5353]), protocol: 'UDP' });
    if (maybe(0.15)) ports.push({ name: 'http', containerPort: 8080, protocol: 'UDP' });
    pods.push({
      namespace: pick(nsNames), name: `pod-${i}`, ports,
      labels: { ...(maybe(0.8) && { app: pick(['web', 'db', 'cache']) }), ...(maybe(0.4) && { tier: pick(['front', 'back']) }) },
      ip: `${pick(subnets)}.${10 + i}`,
    });
  }
  const podSel = (): unknown => pick([
    {}, { matchLabels: { app: pick(['web', 'db', 'cache']) } },
    { matchExpressions: [{ key: 'app', operator: 'In', values: [pick(['web', 'db']), pick(['db', 'cache'])] }] },
    { matchExpressions: [{ key: 'app', operator: 'NotIn', values: [pick(['web', 'db'])] }] },
    { matchExpressions: [{ key: 'tier', operator: pick(['Exists', 'DoesNotExist']) }] },
    { matchLabels: { app: pick(['web', 'db']), tier: pick(['front', 'back']) } },
  ]);
  const nsSel = (): unknown => pick([
    {}, { matchLabels: { team: pick(['a', 'b']) } }, { matchLabels: { 'kubernetes.io/metadata.name': pick(nsNames) } },
    { matchExpressions: [{ key: 'env', operator: pick(['Exists', 'DoesNotExist']) }] },
  ]);
  // prefixes near the pods: /32s, their /24s and /16s, and a few fixed blocks
  const cidrs = [...new Set(['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '192.168.0.0/16', '203.0.113.0/24', ...pods.flatMap((p) => [`${p.ip}/32`, `${p.ip}/24`, `${p.ip}/28`])])];
  const ipBlock = (): unknown => {
    const cidr = pick(cidrs);
    const outer = parseCidr(cidr) as Cidr;
    const inside = cidrs.filter((c) => {
      const x = parseCidr(c) as Cidr;
      return x.prefix > outer.prefix && cidrCovers(outer, x);
    });
    const except = [...new Set(Array.from({ length: inside.length === 0 ? 0 : int(0, 2) }, () => pick(inside)))];
    return { ipBlock: { cidr, ...(except.length > 0 && { except }) } };
  };
  const peer = (): unknown => {
    switch (int(0, 6)) {
      case 0: return { podSelector: podSel() };
      case 1: return { namespaceSelector: nsSel() };
      case 2: return { namespaceSelector: nsSel(), podSelector: podSel() };
      case 3: return { namespaceSelector: {}, podSelector: {} };
      case 4: return { namespaceSelector: {} };
      default: return ipBlock();
    }
  };
  const port = (): unknown => {
    const protocol = pick([undefined, 'TCP', 'UDP']);
    const p = ((): Record<string, unknown> => {
      switch (int(0, 4)) {
        case 0: return {};
        case 1: return { port: pick([53, 80, 443, 5353, 8080, 9090]) };
        case 2: {
          const first = pick([1, 53, 80, 8000, 9000, 65000]);
          return { port: first, endPort: Math.min(65535, first + pick([0, 1, 7, 100, 1000, 65535])) };
        }
        default: return { port: pick(['http', 'metrics', 'dns', 'nope']) };
      }
    })();
    return { ...(protocol && { protocol }), ...p };
  };
  const rules = (peersField: 'from' | 'to'): unknown[] => Array.from({ length: int(0, 3) }, () => ({
    ...(maybe(0.75) && { [peersField]: Array.from({ length: int(0, 3) }, peer) }),
    ...(maybe(0.6) && { ports: Array.from({ length: int(1, 3) }, port) }),
  }));
  const policies: NetworkPolicy[] = [];
  const nPolicies = int(1, 5);
  for (let i = 0; i < nPolicies; i++) {
    const ns = pick(nsNames);
    const s: Record<string, unknown> = { podSelector: podSel() };
    const types = pick([undefined, ['Ingress'], ['Egress'], ['Ingress', 'Egress']]);
    if (types) s.policyTypes = types;
    if (maybe(0.7)) s.ingress = rules('from');
    if (maybe(0.6)) s.egress = rules('to');
    const sink = new RecordingSink();
    const policy = parseNetworkPolicy(sink, { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', spec: s }, testMeta(ns, `pol-${i}`));
    if (sink.problems.length > 0) throw new Error(`seed ${seed}: generated an invalid policy: ${sink.problems.join('; ')}\n${JSON.stringify(s)}`);
    policies.push(policy);
  }
  return { namespaces: nss, pods, policies };
}

const SEEDS = Number(process.env.NETWORK_COMPILE_SEEDS ?? 200);
t.test(`${SEEDS} seeded random worlds: the compiled tables decide as the evaluator`, (t) => {
  let total = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const world = randomWorld(seed);
    // every third world: only the pods of the first namespace are local
    const local = seed % 3 === 0 ? (p: PolicyPod) => p.namespace === world.namespaces[0]!.name : undefined;
    total += checkWorld(t, world, `seed ${seed}`, { protocols: ['TCP', 'UDP'], ...(local && { local }) });
  }
  t.comment(`${total} probes over ${SEEDS} random worlds`);
  t.end();
});

// ---- what the tables hold ----

t.test('classes, reserved peers, prefixes and stats', (t) => {
  const world = (policies: NetworkPolicy[]): PolicyWorld => ({ namespaces, pods: shopPods, policies });
  const byName = (n: string) => handMade.find((c) => c.name === n)!.policies;

  const open = compileNetworkPolicies(world([]), { allocator: new ClassAllocator() });
  t.equal(open.entries.length, 0, 'no policies: no entries');
  t.equal(open.stats.subjectClasses, 1, 'no policies: every pod in one open subject class');
  t.equal(open.subjects.size, 9, 'every pod with an address is a subject; the pending pod is not');
  t.notOk(open.subjects.has('shop/pending'));
  t.same(open.prefixes, [{ ip: '0.0.0.0', prefixLen: 0, peer: PEER_WORLD }], 'no ipBlocks: only 0.0.0.0/0 → WORLD');
  t.same(open.subjects.get('shop/client'), { subject: open.subjects.get('ops/prober')!.subject, ingressIsolated: false, egressIsolated: false });

  const denyIn = compileNetworkPolicies(world(byName('all-ingress-deny')), { allocator: new ClassAllocator() });
  t.equal(denyIn.entries.length, 0, 'deny-all: isolation without entries');
  t.ok(denyIn.subjects.get('shop/client')!.ingressIsolated);
  t.notOk(denyIn.subjects.get('ops/client')!.ingressIsolated);

  const allowIn = compileNetworkPolicies(world(byName('all-ingress-allow')), { allocator: new ClassAllocator() });
  t.same(allowIn.entries.map((e) => [e.peer, e.dir, e.prefixLen]), [[PEER_ANY, DIR_INGRESS, PREFIX_ALL]], 'ingress: [{}] is one ANY entry of 72 bits');
  t.same(allowIn.rules, [{ policy: 'shop/allow-in', direction: 'Ingress', ruleIndex: 0 }]);

  const anyPod = compileNetworkPolicies(world(byName('any-pod-anywhere')), { allocator: new ClassAllocator() });
  const catalog = anyPod.subjects.get('shop/catalog')!.subject;
  const catalog2 = anyPod.subjects.get('shop/catalog-2')!.subject;
  t.not(catalog, catalog2, 'catalogs with different http ports are different subject classes (ingress named port)');
  t.same(anyPod.entries.filter((e) => e.subject === catalog && e.dir === DIR_INGRESS).map((e) => [e.peer, e.proto, e.port, e.prefixLen]).sort(),
    [[PEER_ANY_POD, PROTO_TCP, 8080, PREFIX_PORT], [PEER_ANY_POD, PROTO_UDP, 0, PREFIX_PROTOCOL]].sort(), 'every pod anywhere: ANY_POD entries');
  const egress = anyPod.entries.filter((e) => e.subject === catalog && e.dir === DIR_EGRESS);
  t.ok(egress.some((e) => e.peer === PEER_ANY_POD && e.proto === PROTO_UDP && e.port === 53), 'a numeric port to every pod: ANY_POD');
  t.same(new Set(egress.filter((e) => e.proto === PROTO_TCP).map((e) => `${e.port}`)), new Set(['8080', '8081', '80']), 'an egress named port to every pod: per destination class, resolved');

  const blocks = compileNetworkPolicies(world(byName('ipblock-with-except')), { allocator: new ClassAllocator() });
  const prefixes = new Map(blocks.prefixes.map((p) => [`${p.ip}/${p.prefixLen}`, p.peer]));
  t.same([...prefixes.keys()].sort(), ['0.0.0.0/0', '192.168.0.0/16', '198.18.0.0/16', '198.18.0.12/32', '198.18.1.0/24', '198.18.1.10/32', '203.0.113.0/24'].sort(), 'one prefix per distinct cidr and except');
  t.not(prefixes.get('0.0.0.0/0'), PEER_WORLD, 'an ipBlock contains 0.0.0.0/0: WORLD is a class of its own');
  t.equal(prefixes.get('192.168.0.0/16'), PEER_WORLD, 'an except no other block contains: WORLD');
  t.equal(addressPeerClass(blocks, '192.168.3.4'), PEER_WORLD);
  t.equal(addressPeerClass(blocks, '8.8.8.8'), prefixes.get('0.0.0.0/0'));
  t.equal(addressPeerClass(blocks, '198.18.1.10'), prefixes.get('198.18.1.10/32'));
  t.same(blocks.notes, ['shop/client-out egress[1] peer 1: IPv6 ipBlock 2001:db8::/32 is not enforced by the kernel (IPv4 only)']);
  t.not(blocks.podPeers.get('198.18.0.11'), blocks.podPeers.get('198.18.0.12'), 'a pod in an except differs from its neighbour');
  t.equal(blocks.podPeers.get('198.18.0.13'), blocks.podPeers.get('198.18.0.14'), 'pods no peer tells apart share a peer class');
  t.same(blocks.stats, { ...blocks.stats, subjects: 9, entries: blocks.entries.length, prefixes: 7 });
  t.ok(blocks.stats.compileMs >= 0);
  // every entry is well formed and points at a rule
  for (const e of blocks.entries) {
    if (![72, 80].includes(e.prefixLen) && !(e.prefixLen > 80 && e.prefixLen <= 96)) t.fail(`bad prefixLen ${e.prefixLen}`);
    if (e.prefixLen === 72 && (e.proto !== 0 || e.port !== 0)) t.fail('a 72-bit entry with protocol or port bits');
    if (blocks.rules[e.ruleRef] === undefined) t.fail(`ruleRef ${e.ruleRef} points nowhere`);
  }
  const keys = blocks.entries.map((e) => encodePolicyKey(e).toString('hex'));
  t.equal(new Set(keys).size, keys.length, 'entries are deduplicated');
  t.end();
});

t.test('class ids are stable across compiles and new when what a subject needs changes', (t) => {
  const allocator = new ClassAllocator();
  const policies = handMade.find((c) => c.name === 'ports-named-ports-and-endport')!.policies;
  const world = (ps: NetworkPolicy[]): PolicyWorld => ({ namespaces, pods: shopPods, policies: ps });
  const a = compileNetworkPolicies(world(policies), { allocator });
  const b = compileNetworkPolicies(world(policies), { allocator });
  t.same(b.subjects, a.subjects, 'same world: same subject classes');
  t.same(b.podPeers, a.podPeers, 'same peer classes');
  t.same(b.prefixes, a.prefixes);
  t.same(b.entries, a.entries);
  t.same(allocator.size, compiledClassIds(b).size, 'the allocator keeps exactly the live classes');

  // the clients' egress policy changes (a port): their subject class is new, the catalogs' stays
  const changed = [policies[0]!, spec('shop', 'client-named', `  podSelector: { matchLabels: { app: client } }
  policyTypes: [Egress]
  egress:
  - to: [{ podSelector: { matchLabels: { app: catalog } } }]
    ports: [{ port: http }, { port: 8443 }]`)];
  const c = compileNetworkPolicies(world(changed), { allocator });
  const before = compiledClassIds(a);
  const client = c.subjects.get('shop/client')!.subject;
  t.notOk(before.has(client), 'the changed subject gets an id never used before');
  t.equal(c.subjects.get('shop/client-2')!.subject, client, 'both clients still share it');
  t.equal(c.subjects.get('shop/catalog')!.subject, a.subjects.get('shop/catalog')!.subject, 'an unchanged subject keeps its id');
  t.equal(c.subjects.get('ops/prober')!.subject, a.subjects.get('ops/prober')!.subject, 'an open subject keeps its id');
  t.equal(c.podPeers.get('198.18.1.10'), a.podPeers.get('198.18.1.10'), 'an unchanged peer class keeps its id');
  t.not(c.podPeers.get('198.18.0.11'), a.podPeers.get('198.18.0.11'), 'the catalog, whose port named metrics no egress rule names any more, gets a new peer class');

  // back to the first policies: new ids again (the old ones may still be in the kernel)
  const d = compileNetworkPolicies(world(policies), { allocator });
  t.not(d.subjects.get('shop/client')!.subject, a.subjects.get('shop/client')!.subject, 'a retired id is never reused');
  t.not(d.subjects.get('shop/client')!.subject, client);

  // a label change moves a pod to another peer class, and its selectors' subjects to new classes
  const relabelled = shopPods.map((p) => (p.name === 'frontend' ? { ...p, labels: { app: 'catalog' } } : p));
  const e = compileNetworkPolicies({ namespaces, pods: relabelled, policies }, { allocator });
  t.not(e.podPeers.get('198.18.0.10'), d.podPeers.get('198.18.0.10'), 'the relabelled pod has a new peer class');
  t.not(e.subjects.get('shop/client')!.subject, d.subjects.get('shop/client')!.subject, 'the clients, whose egress names catalogs, get a new class');
  t.end();
});

t.test('10,000 ipBlock rules compile to one entry each, and decide as the evaluator', (t) => {
  const items = Array.from({ length: 10_000 }, (_, i) => `  - from: [{ ipBlock: { cidr: 100.64.${i >> 8}.${i & 255}/32 } }]\n    ports: [{ port: ${1024 + i} }]`).join('\n');
  const policy = spec('shop', 'many', `  podSelector: { matchLabels: { app: catalog } }\n  ingress:\n${items}`);
  const world: PolicyWorld = { namespaces, pods: shopPods, policies: [policy] };
  const c = compileNetworkPolicies(world, { allocator: new ClassAllocator() });
  t.equal(c.prefixes.length, 10_001);
  t.equal(c.stats.peerClasses - new Set(c.podPeers.values()).size, 10_000, 'one address class per /32');
  t.equal(c.subjects.get('shop/catalog')!.subject, c.subjects.get('shop/catalog-2')!.subject, 'both catalogs share a subject class');
  t.equal(c.entries.length, 10_000, 'one entry per rule');
  for (const i of [0, 1, 4999, 9999]) {
    const ip = `100.64.${i >> 8}.${i & 255}`;
    for (const port of [1024 + i, 1025 + i]) {
      const q = { from: { kind: 'ip', ip } as Endpoint, to: { kind: 'pod', namespace: 'shop', name: 'catalog' } as Endpoint, port };
      const v = explainConnection(world, q);
      const got = lookupCompiled(c, { subject: 'shop/catalog', peer: { kind: 'address', ip }, dir: DIR_INGRESS, protocol: 'TCP', port });
      t.equal(got, v.kind === 'verdict' && v.ingress.allowed, `${ip} -> shop/catalog:${port}`);
    }
  }
  t.end();
});

t.test('lookupCompiled refuses what the kernel cannot be asked', (t) => {
  const c = compileNetworkPolicies({ namespaces, pods: shopPods, policies: handMade.find((x) => x.name === 'all-ingress-deny')!.policies }, { allocator: new ClassAllocator() });
  t.throws(() => lookupCompiled(c, { subject: 'shop/pending', peer: { kind: 'address', ip: '10.0.0.1' }, dir: DIR_INGRESS, protocol: 'TCP', port: 80 }), { code: 'SOCKMESH_INVALID_ARGUMENT' });
  t.throws(() => lookupCompiled(c, { subject: 'shop/client', peer: { kind: 'pod', ip: '10.0.0.1' }, dir: DIR_INGRESS, protocol: 'TCP', port: 80 }), { code: 'SOCKMESH_INVALID_ARGUMENT' });
  t.equal(lookupCompiled(c, { peer: { kind: 'address', ip: '10.0.0.1' }, dir: DIR_EGRESS, protocol: 'TCP', port: 80 }), true, 'no subject: not a pod, nothing to judge');
  t.end();
});
