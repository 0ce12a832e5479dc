/**
 * NetworkPolicy benchmark: new connections per second between two pods of
 * the local runtime with 0, 100 and 10,000 rules in the kernel, pods
 * enrolled (short-circuited) and not (the TCP/IP stack), and the time to
 * compile and write 10,000 rules.
 *
 * "Rules" are (peer, port) items of NetworkPolicy rules, half on the server's
 * ingress, half on the client's egress: distinct ports, port ranges, /32
 * ipBlocks and pod selectors over 200 other pods, with the one item that
 * allows the benchmark's connection among them. With 0 rules no pod is
 * selected (the programs run, nothing is isolated).
 *
 * Same pods, same C client (benchmarks/rrbench.c conn: connect, 9-byte hello,
 * 1-byte answer, close with a reset), modes rotated round by round, medians.
 * Every run checks the kernel counters: an isolated run judges each connect
 * three times (client egress and server ingress at connect, the SYN at the
 * listener by its ticket) and refuses none; an enrolled run puts both
 * sockets of every connection into the sockhash.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath.js';
import { findCgroup2 } from '../mesh-agent/datapath/host-checks.js';
import { helperBinary, repoRoot } from '../mesh-agent/paths.js';
import { PolicyEnforcer, type PolicyInput } from '../mesh-agent/reconciler/policy-enforcer.js';
import { NodeRuntime } from '../mesh-agent/runtime/node-runtime.js';
import type { NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule } from '../policies/network-policy.js';
import type { PolicyPod, PolicyWorld } from '../policies/network-verdict.js';
import { parseCidr, type Cidr } from '../policies/cidr.js';
import type { ObjectMeta } from '../mesh-agent/cluster/object-meta.js';
import { gitCommit, gitDirty, machine } from './bench-meta.js';
import { counterDelta, cpuBusyJiffies, median } from './bench-stats.js';

const HELP = `usage: node dist/benchmarks/policy-bench.js [--seconds S] [--rounds N] [--out DIR]

Runs the NetworkPolicy benchmark and writes policy.json and policy.md to
--out (default benchmarks/results). Needs root. Takes about
rounds x 7 runs x seconds (default 5 x 7 x 4 s), plus setup.
`;

const PORT = 7100;
const RULE_COUNTS = [0, 100, 10_000] as const;
type Mode = { rules: number; enrolled: boolean; denied?: boolean };
const MODES: Mode[] = [
  ...RULE_COUNTS.map((rules) => ({ rules, enrolled: true })),
  ...RULE_COUNTS.map((rules) => ({ rules, enrolled: false })),
  { rules: 10_000, enrolled: true, denied: true },
];
const modeName = (m: Mode) => `${m.rules} rules, ${m.enrolled ? 'enrolled' : 'not enrolled'}${m.denied ? ', denied' : ''}`;

interface Run {
  round: number;
  mode: string;
  rules: number;
  enrolled: boolean;
  denied: boolean;
  result: Record<string, number>;
  cpuBusySeconds: number;
  counters: Record<string, number>;
  enforce: { compileMs: number; writeMs: number; writes: number; deletes: number; entries: number };
  pathOk: boolean;
  pathProblem?: string;
}

const meta = (namespace: string, name: string): ObjectMeta => ({ namespace, name, labels: {}, annotations: {}, source: 'policy-bench' });
const cidr = (text: string): Cidr => parseCidr(text) as Cidr;
const podsPeer = (labels: Record<string, string>): NetworkPolicyPeer => ({ kind: 'pods', podSelector: { matchLabels: labels, matchExpressions: [] } });

/**
 * The benchmark's world: the two pods, 200 other pods (addresses no packet
 * uses), and `rules` items: half allow the server's ingress, half the
 * client's egress, each with one item allowing the benchmark's connection.
 */
function world(rules: number, client: string, server: string): PolicyWorld {
  const pods: PolicyPod[] = [
    { namespace: 'bench', name: 'client', labels: { app: 'client' }, ip: client, ports: [] },
    { namespace: 'bench', name: 'server', labels: { app: 'server' }, ip: server, ports: [{ name: 'rr', containerPort: PORT, protocol: 'TCP' }] },
  ];
  for (let i = 0; i < 200; i++) {
    pods.push({ namespace: 'bench', name: `other-${i}`, labels: { app: `other-${i % 20}`, tier: `t${i % 7}` }, ip: `198.18.${200 + Math.floor(i / 250)}.${(i % 250) + 1}`, ports: [] });
  }
  const policies: NetworkPolicy[] = [];
  if (rules > 0) {
    const half = rules / 2;
    const items = (dir: 'in' | 'out'): NetworkPolicyRule[] => {
      const out: NetworkPolicyRule[] = [];
      for (let i = 0; i < half - 1; i++) {
        const kind = i % 4;
        const port: NetworkPolicyPort = kind === 2 ? { protocol: 'TCP', port: 20_000 + (i % 20_000), endPort: 20_000 + (i % 20_000) + 7 } : { protocol: i % 5 === 0 ? 'UDP' : 'TCP', port: 1024 + (i % 60_000) };
        const peer: NetworkPolicyPeer = kind === 1 || kind === 2
          ? podsPeer({ app: `other-${i % 20}`, tier: `t${i % 7}` })
          : { kind: 'ipBlock', ipBlock: { cidr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, block: cidr(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`), except: [], ipv6: false } };
        out.push({ peers: [peer], ports: [port] });
      }
      // the item the benchmark's connection needs, in the middle of the rest
      out.splice(Math.floor(out.length / 2), 0, { peers: [podsPeer({ app: dir === 'in' ? 'client' : 'server' })], ports: [{ protocol: 'TCP', port: PORT }] });
      return out;
    };
    policies.push({
      kind: 'NetworkPolicy', meta: meta('bench', 'server-ingress'), podSelector: { matchLabels: { app: 'server' }, matchExpressions: [] },
      policyTypes: ['Ingress'], ingress: items('in'), egress: [],
    });
    policies.push({
      kind: 'NetworkPolicy', meta: meta('bench', 'client-egress'), podSelector: { matchLabels: { app: 'client' }, matchExpressions: [] },
      policyTypes: ['Egress'], ingress: [], egress: items('out'),
    });
  }
  return { namespaces: [{ name: 'bench', labels: {} }], pods, policies };
}

function policyMapMemlock(pinDir: string): number | undefined {
  try {
    const j = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', join(pinDir, 'sm_policy')]).toString()) as { bytes_memlock?: number };
    return j.bytes_memlock;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string' }, rounds: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const seconds = Number(values.seconds ?? 4);
  const rounds = Number(values.rounds ?? 5);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const cgroupRoot = join(findCgroup2(), 'sockmesh-polbench');
  const rt = new NodeRuntime({ prefix: 'smp', cgroupRoot });
  const pinDir = '/sys/fs/bpf/sockmesh-polbench';
  const dp = new Datapath({ pinDir, cgroupPath: cgroupRoot });
  await rt.cleanup();
  dp.down();
  await rt.start();
  dp.start();
  const client = await rt.addPod('client');
  const server = await rt.addPod('server');
  const srv = rt.exec('server', [helperBinary('rrbench'), 'serve', String(PORT)], { stdio: 'ignore' });
  await sleep(300);
  const enforcer = new PolicyEnforcer(dp, dp.layout.policy, () => ['client', 'server'].map((p) => `/run/netns/${rt.podNetns(p)}`));
  const localPods = new Map([
    ['bench/client', { ip: client.ip, cgroupId: rt.podCgroupId('client') }],
    ['bench/server', { ip: server.ip, cgroupId: rt.podCgroupId('server') }],
  ]);
  const worlds = new Map<number, PolicyWorld>(RULE_COUNTS.map((n) => [n, world(n, client.ip, server.ip)]));
  const runs: Run[] = [];
  const memlock: Record<number, number | undefined> = {};
  const entries: Record<number, number> = {};
  const total = rounds * MODES.length;
  try {
    for (let round = 1; round <= rounds; round++) {
      // rotate the order each round, so no mode always follows the same one
      const order = MODES.map((_, i) => MODES[(i + round - 1) % MODES.length]!);
      for (const mode of order) {
        const input: PolicyInput = { world: worlds.get(mode.rules)!, localPods };
        // from an empty set each time: the 10,000-rule write is measured whole
        enforcer.enforce({ world: worlds.get(0)!, localPods });
        const e = enforcer.enforce(input);
        entries[mode.rules] = e.entries;
        memlock[mode.rules] = policyMapMemlock(pinDir);
        // the enforcer's second cut pass (200 ms after a change) judges open sockets: let it pass before counting
        await sleep(300);
        if (mode.enrolled) {
          dp.enroll(client.ip, 1);
          dp.enroll(server.ip, 2);
        } else {
          dp.unenroll(client.ip);
          dp.unenroll(server.ip);
        }
        const before = dp.counters();
        const j0 = cpuBusyJiffies();
        const out = await rt.execOutput('client', [helperBinary('rrbench'), 'conn', server.ip, String(mode.denied ? PORT + 1 : PORT), String(seconds)], { timeoutMs: (seconds + 30) * 1000 });
        const busy = (cpuBusyJiffies() - j0) / 100;
        const counters = counterDelta(before, dp.counters());
        const result = JSON.parse(out.toString()) as Record<string, number>;
        const n = result.connects!;
        const problems: string[] = [];
        if (mode.denied) {
          if (n !== 0) problems.push(`${n} connects got through`);
          if (counters.pol_egress_denied !== result.failed) problems.push(`egress denials ${counters.pol_egress_denied} != refused connects ${result.failed}`);
        } else {
          if (result.failed !== 0) problems.push(`${result.failed} connects failed`);
          const judged = mode.rules > 0 ? 3 * n : 0;
          if (counters.pol_allowed !== judged) problems.push(`pol_allowed ${counters.pol_allowed} != ${judged}`);
          if (mode.rules > 0 && counters.pol_ticket_hit !== n) problems.push(`ticket hits ${counters.pol_ticket_hit} != ${n}`);
          if (counters.pol_egress_denied! + counters.pol_ingress_denied! + counters.pol_syn_denied! !== 0) problems.push('denials in an allowed run');
          if (mode.enrolled && counters.sock_inserted !== 2 * n) problems.push(`sock_inserted ${counters.sock_inserted} != ${2 * n}`);
          if (!mode.enrolled && counters.sock_inserted !== 0) problems.push(`sock_inserted ${counters.sock_inserted} != 0`);
        }
        const run: Run = {
          round, mode: modeName(mode), rules: mode.rules, enrolled: mode.enrolled, denied: mode.denied === true, result, cpuBusySeconds: busy, counters,
          enforce: { compileMs: e.compileMs, writeMs: e.writeMs, writes: e.writes, deletes: e.deletes, entries: e.entries },
          pathOk: problems.length === 0, ...(problems.length > 0 && { pathProblem: problems.join('; ') }),
        };
        runs.push(run);
        process.stderr.write(`[${runs.length}/${total}] round ${round} ${modeName(mode).padEnd(32)} ${out.toString().trim()} compile=${e.compileMs.toFixed(1)}ms write=${e.writeMs.toFixed(1)}ms entries=${e.entries} ${run.pathOk ? '' : `PATH CHECK FAILED: ${run.pathProblem}`}\n`);
      }
    }
  } finally {
    srv.kill();
    await rt.cleanup();
    dp.down();
    rt.removeCgroupRootIfEmpty();
  }
  writeResults(outDir, { seconds, rounds, runs, memlock, entries });
}

function writeResults(outDir: string, data: { seconds: number; rounds: number; runs: Run[]; memlock: Record<number, number | undefined>; entries: Record<number, number> }): void {
  const summary: Record<string, Record<string, number>> = {};
  for (const mode of MODES) {
    const rs = data.runs.filter((r) => r.mode === modeName(mode));
    if (rs.length === 0) continue;
    const m = (f: (r: Run) => number) => median(rs.map(f));
    summary[modeName(mode)] = mode.denied
      ? { refused_per_s: m((r) => r.result.failed! / r.result.seconds!), cpu_us_per_refusal: m((r) => (r.cpuBusySeconds * 1e6) / Math.max(1, r.result.failed!)) }
      : {
        cps: m((r) => r.result.cps!), p50_us: m((r) => r.result.p50_us!), p99_us: m((r) => r.result.p99_us!),
        cpu_us_per_connect: m((r) => (r.cpuBusySeconds * 1e6) / r.result.connects!),
        compile_ms: m((r) => r.enforce.compileMs), write_ms: m((r) => r.enforce.writeMs),
      };
  }
  // the per-round ratio to the 0-rule run of the same round and enrollment: the noise of one round cancels
  const ratios: Record<string, number> = {};
  for (const mode of MODES.filter((x) => !x.denied && x.rules > 0)) {
    const rs = data.runs.filter((r) => r.mode === modeName(mode));
    const per = rs.map((r) => {
      const base = data.runs.find((b) => b.round === r.round && b.rules === 0 && b.enrolled === r.enrolled && !b.denied);
      return base ? r.result.cps! / base.result.cps! : NaN;
    }).filter((x) => Number.isFinite(x));
    ratios[modeName(mode)] = median(per);
  }
  const tenK = data.runs.filter((r) => r.rules === 10_000 && r.enforce.writes > 0);
  const compileWrite = tenK.map((r) => r.enforce.compileMs + r.enforce.writeMs);
  const doc = {
    benchmark: 'policy',
    date: new Date().toISOString(),
    commit: gitCommit(),
    dirty: gitDirty(),
    machine: { hostname: hostname(), ...machine() },
    params: { secondsPerRun: data.seconds, rounds: data.rounds, loadGenerator: 'benchmarks/rrbench.c conn', ruleCounts: RULE_COUNTS },
    allPathsVerified: data.runs.every((r) => r.pathOk),
    summary,
    cpsRatioTo0Rules: ratios,
    compile10k: {
      compileMs: median(tenK.map((r) => r.enforce.compileMs)), writeMs: median(tenK.map((r) => r.enforce.writeMs)),
      totalMsMedian: median(compileWrite), totalMsMax: Math.max(...compileWrite), entries: data.entries[10_000],
    },
    policyMapMemlockBytes: data.memlock,
    entries: data.entries,
    runs: data.runs,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'policy.json'), JSON.stringify(doc, null, 2) + '\n');
  const f = (x: number | undefined, d = 1) => (x === undefined || Number.isNaN(x) ? '–' : x.toFixed(d));
  const md: string[] = [
    '# NetworkPolicy benchmark',
    '',
    `Commit \`${doc.commit.slice(0, 12)}\`${doc.dirty ? ' (with uncommitted changes)' : ''}, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
    `${data.rounds} rounds, the mode order rotated each round, ${data.seconds} s per run; medians. Path and verdicts verified by the kernel counters in every run: ${doc.allPathsVerified ? 'yes' : 'NO'}.`,
    '',
    '## New connections per second (one C client, connect + 9-byte hello + 1-byte answer + reset)',
    '',
    '| rules | pods | connects/s | vs 0 rules (median of per-round ratios) | p50 µs | p99 µs | CPU µs/connect |',
    '|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const mode of MODES.filter((x) => !x.denied)) {
    const s = summary[modeName(mode)];
    if (!s) continue;
    const r = ratios[modeName(mode)];
    md.push(`| ${mode.rules.toLocaleString('en')} | ${mode.enrolled ? 'enrolled (short-circuited)' : 'not enrolled (stack)'} | ${f(s.cps, 0)} | ${r === undefined ? '1 (base)' : `${f(r, 3)}`} | ${f(s.p50_us)} | ${f(s.p99_us)} | ${f(s.cpu_us_per_connect)} |`);
  }
  const d = summary[modeName(MODES.find((x) => x.denied)!)];
  md.push('', `Refused at connect (EPERM, 10,000 rules, the client's egress allows no such port): ${f(d?.refused_per_s, 0)} refusals/s, ${f(d?.cpu_us_per_refusal)} µs CPU each.`);
  md.push('', '## Compile and write 10,000 rules', '',
    `Compile (pure, the agent's compiler) + write (one bpf_map_update_elem per entry into the LPM trie), from an empty set: median ${f(doc.compile10k.compileMs)} + ${f(doc.compile10k.writeMs)} ms = ${f(doc.compile10k.totalMsMedian)} ms, max ${f(doc.compile10k.totalMsMax)} ms; ${doc.compile10k.entries} entries. `
    + `sm_policy memlock (the kernel's estimate): ${Object.entries(data.memlock).map(([k, v]) => `${Number(k).toLocaleString('en')} rules ${v === undefined ? '–' : `${(v / 1024).toFixed(0)} KiB`}`).join(', ')}.`,
    '', 'Targets (issue 7): at 10,000 rules ≥ 0.95 of the 0-rule connects/s; compile + write ≤ 1 s. Raw runs with their counters: policy.json.', '');
  writeFileSync(join(outDir, 'policy.md'), md.join('\n'));
  process.stdout.write(md.join('\n'));
}

main().catch((err: unknown) => {
  process.stderr.write(`policy-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
