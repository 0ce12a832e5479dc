/**
 * NetworkPolicy compile benchmark (docs/policy-datapath.md §3.5): how long
 * the pure compiler (policies/network-compile.ts) takes for 100 and 10,000
 * rules, in two shapes, and how big the result is. Needs no root: nothing is
 * written to the kernel (the map writes are the datapath benchmark's).
 *
 * - ipblock: one server and one client pod among 100; the server's policy
 *   has N/2 ingress rules, the client's N/2 egress rules, each one /32
 *   ipBlock and one port (the design's sizing case).
 * - selectors: 1,000 pods in 10 namespaces, N/10 policies of 10 rules each:
 *   5 ingress rules from pods chosen by namespace and pod labels, 5 egress
 *   rules to such pods; ports are single ports, a 9000-9100 range and the
 *   named port http. Every pod is selected by some policies.
 *
 * "cold" compiles with a new ClassAllocator (the agent's first pass);
 * "warm" recompiles the same world with the same allocator (every class
 * keeps its id); "one change" recompiles after one policy's port changed.
 * Medians of --repeats runs; a rule is one item of a policy's ingress or
 * egress list.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../mesh-agent/paths.js';
import { ClassAllocator, compileNetworkPolicies, type CompiledNetworkPolicy } from '../policies/network-compile.js';
import { parseNetworkPolicy, type NetworkPolicy } from '../policies/network-policy.js';
import type { PolicyNamespace, PolicyPod, PolicyWorld } from '../policies/network-verdict.js';
import { gitCommit, machine } from './bench-meta.js';
import { median } from './bench-stats.js';

const HELP = `usage: node dist/benchmarks/policy-compile-bench.js [--repeats N] [--out DIR]

Writes policy-compile.json and policy-compile.md to --out (default benchmarks/results).
`;

function policy(namespace: string, name: string, spec: Record<string, unknown>): NetworkPolicy {
  const problems: string[] = [];
  const p = parseNetworkPolicy({ add: (f, r) => problems.push(`${f}: ${r}`) }, { spec }, { namespace, name, labels: {}, annotations: {}, source: 'bench' });
  if (problems.length > 0) throw new Error(`bench policy ${namespace}/${name}: ${problems.join('; ')}`);
  return p;
}

/** Whether the code this benchmark measures differs from the commit (other files' changes do not count). */
function measuredCodeDirty(): boolean {
  try {
    return execFileSync('git', ['status', '--porcelain', '--', 'policies', 'benchmarks/policy-compile-bench.ts'], { cwd: repoRoot() }).toString().trim() !== '';
  } catch {
    return false;
  }
}

const ip = (base: number, i: number): string => `${base >>> 24}.${(base >>> 16) & 255}.${((base + i) >>> 8) & 255}.${(base + i) & 255}`;

/** One server and one client among 100 pods; rules/2 ingress (/32, port) items on the server, rules/2 egress on the client. */
function ipblockWorld(rules: number, portShift = 0): PolicyWorld {
  const pods: PolicyPod[] = Array.from({ length: 100 }, (_, i) => ({
    namespace: 'bench', name: `pod-${i}`, ip: ip(0x0a000000, i + 1),
    labels: { app: i === 0 ? 'server' : i === 1 ? 'client' : `other-${i % 10}` }, ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
  }));
  const half = rules >> 1;
  const server = policy('bench', 'server-in', {
    podSelector: { matchLabels: { app: 'server' } },
    ingress: Array.from({ length: half }, (_, i) => ({ from: [{ ipBlock: { cidr: `${ip(0x64400000, i)}/32` } }], ports: [{ port: 1024 + ((i + portShift) % 60000) }] })),
  });
  const client = policy('bench', 'client-out', {
    podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'],
    egress: Array.from({ length: rules - half }, (_, i) => ({ to: [{ ipBlock: { cidr: `${ip(0x64600000, i)}/32` } }], ports: [{ port: 1024 + (i % 60000) }] })),
  });
  return { namespaces: [{ name: 'bench', labels: {} }], pods, policies: [server, client] };
}

/** 1,000 pods in 10 namespaces; rules/10 policies of 5 ingress and 5 egress rules by namespace and pod labels. */
function selectorsWorld(rules: number, portShift = 0): PolicyWorld {
  const namespaces: PolicyNamespace[] = Array.from({ length: 10 }, (_, n) => ({ name: `ns-${n}`, labels: { team: `team-${n % 5}` } }));
  const pods: PolicyPod[] = Array.from({ length: 1000 }, (_, i) => ({
    namespace: `ns-${i % 10}`, name: `pod-${i}`, ip: ip(0x0a010000, i + 1),
    labels: { app: `app-${Math.floor(i / 10) % 10}`, version: `v${i % 3}` },
    ports: [{ name: 'http', containerPort: i % 2 === 0 ? 8080 : 8081, protocol: 'TCP' }],
  }));
  const ports = (p: number, r: number): unknown[] => {
    switch (r % 3) {
      case 0: return [{ port: 8000 + ((p + r + portShift) % 1000) }];
      case 1: return [{ port: 9000, endPort: 9100 }, { protocol: 'UDP', port: 53 }];
      default: return [{ port: 'http' }];
    }
  };
  const peer = (p: number, r: number) => [{ namespaceSelector: { matchLabels: { team: `team-${(p + r) % 5}` } }, podSelector: { matchLabels: { app: `app-${(p * 7 + r) % 10}` } } }];
  const policies = Array.from({ length: Math.max(1, Math.round(rules / 10)) }, (_, p) => policy(`ns-${p % 10}`, `pol-${p}`, {
    podSelector: { matchLabels: { app: `app-${Math.floor(p / 10) % 10}` } }, policyTypes: ['Ingress', 'Egress'],
    ingress: Array.from({ length: 5 }, (_, r) => ({ from: peer(p, r), ports: ports(p, r) })),
    egress: Array.from({ length: 5 }, (_, r) => ({ to: peer(p, r + 5), ports: ports(p, r + 5) })),
  }));
  return { namespaces, pods, policies };
}

const SHAPES = { ipblock: ipblockWorld, selectors: selectorsWorld } as const;

interface CaseResult {
  shape: keyof typeof SHAPES;
  rules: number;
  policies: number;
  pods: number;
  coldMs: { median: number; max: number };
  warmMs: { median: number; max: number };
  oneChangeMs: { median: number; max: number };
  /** subject classes whose id changed after the one change */
  oneChangeNewSubjects: number;
  result: CompiledNetworkPolicy['stats'];
}

function runCase(shape: keyof typeof SHAPES, rules: number, repeats: number): CaseResult {
  const world = SHAPES[shape](rules);
  const changed = SHAPES[shape](rules, 1);
  // one change: the first policy of `changed` replaces the first of `world`
  const oneChange: PolicyWorld = { ...world, policies: [changed.policies[0]!, ...world.policies.slice(1)] };
  const cold: number[] = [];
  const warm: number[] = [];
  const change: number[] = [];
  let last: CompiledNetworkPolicy | undefined;
  let newSubjects = 0;
  for (let r = 0; r < repeats; r++) {
    const allocator = new ClassAllocator();
    let t0 = performance.now();
    const a = compileNetworkPolicies(world, { allocator });
    cold.push(performance.now() - t0);
    t0 = performance.now();
    last = compileNetworkPolicies(world, { allocator });
    warm.push(performance.now() - t0);
    t0 = performance.now();
    const b = compileNetworkPolicies(oneChange, { allocator });
    change.push(performance.now() - t0);
    const before = new Set([...a.subjects.values()].map((s) => s.subject));
    newSubjects = new Set([...b.subjects.values()].map((s) => s.subject).filter((s) => !before.has(s))).size;
  }
  const stat = (xs: number[]) => ({ median: median(xs), max: Math.max(...xs) });
  return {
    shape, rules, policies: world.policies.length, pods: world.pods.length,
    coldMs: stat(cold), warmMs: stat(warm), oneChangeMs: stat(change), oneChangeNewSubjects: newSubjects, result: last!.stats,
  };
}

function main(): void {
  const { values } = parseArgs({ options: { repeats: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const repeats = Number(values.repeats ?? 7);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  // one unrecorded pass so the JIT has seen the compiler
  runCase('selectors', 100, 2);
  const cases: CaseResult[] = [];
  for (const shape of ['ipblock', 'selectors'] as const) {
    for (const rules of [100, 10_000]) {
      const c = runCase(shape, rules, repeats);
      process.stderr.write(`${shape} ${rules}: cold ${c.coldMs.median.toFixed(1)} ms, warm ${c.warmMs.median.toFixed(1)} ms, ${c.result.entries} entries\n`);
      cases.push(c);
    }
  }
  const doc = {
    benchmark: 'policy-compile', date: new Date().toISOString(), commit: gitCommit(), dirty: measuredCodeDirty(), machine: machine(), node: process.version,
    params: { repeats }, cases,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'policy-compile.json'), JSON.stringify(doc, null, 2) + '\n');
  const ms = (x: { median: number; max: number }) => `${x.median.toFixed(1)} ms (max ${x.max.toFixed(1)})`;
  const md = [
    '# NetworkPolicy compile benchmark', '',
    `Commit \`${doc.commit.slice(0, 12)}\`${doc.dirty ? ' (with uncommitted changes)' : ''}, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}, Node ${doc.node}.`,
    `The pure compiler (policies/network-compile.ts) only, nothing written to the kernel; every pod is local (a subject). Medians of ${repeats} runs.`,
    '- **ipblock**: 100 pods; N/2 ingress rules on one server and N/2 egress rules on one client, each a /32 ipBlock and one port.',
    '- **selectors**: 1,000 pods in 10 namespaces; N/10 policies of 5 ingress + 5 egress rules, peers by namespace and pod labels, ports single, a range (9000-9100 and 53/UDP) or the named port http.',
    '- **cold**: a new allocator (the agent\'s first pass); **warm**: the same world again (ids kept); **one change**: one policy\'s port changed.', '',
    '| shape | rules | policies | cold | warm | one change (new subject classes) | entries | subjects / classes | peer classes | prefixes | target |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...cases.map((c) => `| ${c.shape} | ${c.rules} | ${c.policies} | ${ms(c.coldMs)} | ${ms(c.warmMs)} | ${ms(c.oneChangeMs)} (${c.oneChangeNewSubjects}) | ${c.result.entries} | ${c.result.subjects} / ${c.result.subjectClasses} | ${c.result.peerClasses} | ${c.result.prefixes} | ${c.rules === 10_000 ? '≤ 1000 ms' : ''} |`),
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'policy-compile.md'), md);
  process.stdout.write(md);
}

main();
