/**
 * Datapath benchmark: pod-to-pod over the veth + bridge path ("direct") vs
 * the kernel short-circuit ("sockmesh", every byte redirected).
 *
 * Same two pods, same C load generator (benchmarks/rrbench.c), modes
 * alternated round by round, medians reported as ratios to direct. Every run
 * records the datapath counters it moved, the proof of which path it took.
 * CPU is the whole machine's busy time from /proc/stat during the run
 * (user + system + irq + softirq), per request or per GiB.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath.js';
import { findCgroup2 } from '../mesh-agent/datapath/host-checks.js';
import { helperBinary, repoRoot } from '../mesh-agent/paths.js';
import { NodeRuntime } from '../mesh-agent/runtime/node-runtime.js';
import { gitCommit, gitDirty, machine } from './bench-meta.js';
import { counterDelta, cpuBusyJiffies, median } from './bench-stats.js';

const HELP = `usage: node dist/benchmarks/datapath-bench.js [--seconds S] [--rounds N] [--out DIR]

Runs the datapath benchmark and writes datapath.json and datapath.md to
--out (default benchmarks/results). Needs root. Takes about
rounds x 2 modes x 5 cases x seconds.
`;

type Mode = 'direct' | 'sockmesh';
const MODES: Mode[] = ['direct', 'sockmesh'];

interface Case { name: string; kind: 'rr' | 'bulk'; size: number }
const CASES: Case[] = [
  { name: 'rr 1 B', kind: 'rr', size: 1 },
  { name: 'rr 1 KiB', kind: 'rr', size: 1024 },
  { name: 'rr 16 KiB', kind: 'rr', size: 16384 },
  { name: 'bulk 1 KiB writes', kind: 'bulk', size: 1024 },
  { name: 'bulk 64 KiB writes', kind: 'bulk', size: 65536 },
];

interface Run {
  round: number;
  mode: Mode;
  case: string;
  result: Record<string, number>;
  cpuBusySeconds: number;
  counters: Record<string, number>;
  pathOk: boolean;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string' }, rounds: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const seconds = Number(values.seconds ?? 2);
  const rounds = Number(values.rounds ?? 5);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const cgroupRoot = join(findCgroup2(), 'sockmesh-bench');
  const rt = new NodeRuntime({ prefix: 'smb', cgroupRoot });
  const pinDir = '/sys/fs/bpf/sockmesh-bench';
  const dp = new Datapath({ pinDir, cgroupPath: cgroupRoot });
  await rt.cleanup();
  dp.down();
  await rt.start();
  const client = await rt.addPod('client');
  const server = await rt.addPod('server');
  const srv = rt.exec('server', [helperBinary('rrbench'), 'serve', '7100'], { stdio: 'ignore' });
  await sleep(300);
  const runs: Run[] = [];
  const total = rounds * MODES.length * CASES.length;
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const mode of MODES) {
        dp.down();
        dp.start();
        if (mode === 'sockmesh') {
          dp.enroll(client.ip, 1);
          dp.enroll(server.ip, 2);
        }
        for (const c of CASES) {
          const before = dp.counters();
          const j0 = cpuBusyJiffies();
          const out = await rt.execOutput('client', [helperBinary('rrbench'), c.kind, server.ip, '7100', String(c.size), String(seconds)]);
          const busy = (cpuBusyJiffies() - j0) / 100;
          const counters = counterDelta(before, dp.counters());
          const result = JSON.parse(out.toString()) as Record<string, number>;
          const payload = c.kind === 'rr' ? 2 * result.requests! * c.size + 9 : result.bytes! + 9 + 8;
          const pathOk = mode === 'direct'
            ? counters.bytes_redirected === 0 && counters.sock_skipped! >= 2
            : counters.sock_inserted === 2 && counters.bytes_redirected === payload && counters.bytes_passed === 0;
          runs.push({ round, mode, case: c.name, result, cpuBusySeconds: busy, counters, pathOk });
          process.stderr.write(`[${runs.length}/${total}] round ${round} ${mode.padEnd(13)} ${c.name.padEnd(18)} ${out.toString().trim()} redirected=${counters.bytes_redirected} passed=${counters.bytes_passed} ${pathOk ? '' : 'PATH CHECK FAILED'}\n`);
        }
        dp.down();
      }
    }
  } finally {
    srv.kill();
    await rt.cleanup();
    dp.down();
    rt.removeCgroupRootIfEmpty();
  }
  writeResults(outDir, { seconds, rounds, runs });
}

function summarize(runs: Run[]) {
  const rows: Record<string, Record<Mode, Record<string, number>>> = {};
  for (const c of CASES) {
    rows[c.name] = {} as Record<Mode, Record<string, number>>;
    for (const mode of MODES) {
      const rs = runs.filter((r) => r.case === c.name && r.mode === mode);
      if (rs.length === 0) continue;
      const m = (f: (r: Run) => number) => median(rs.map(f));
      rows[c.name]![mode] = c.kind === 'rr'
        ? {
          p50_us: m((r) => r.result.p50_us!), p90_us: m((r) => r.result.p90_us!), p99_us: m((r) => r.result.p99_us!),
          rps: m((r) => r.result.rps!), cpu_us_per_request: m((r) => (r.cpuBusySeconds * 1e6) / r.result.requests!),
        }
        : {
          gbit_s: m((r) => r.result.gbit_s!), cpu_s_per_gib: m((r) => r.cpuBusySeconds / (r.result.bytes! / 2 ** 30)),
        };
    }
  }
  return rows;
}

function writeResults(outDir: string, data: { seconds: number; rounds: number; runs: Run[] }): void {
  const summary = summarize(data.runs);
  const doc = {
    benchmark: 'datapath',
    date: new Date().toISOString(),
    commit: gitCommit(),
    dirty: gitDirty(),
    machine: { hostname: hostname(), ...machine() },
    params: { secondsPerRun: data.seconds, rounds: data.rounds, loadGenerator: 'benchmarks/rrbench.c' },
    allPathsVerified: data.runs.every((r) => r.pathOk),
    summary,
    runs: data.runs,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'datapath.json'), JSON.stringify(doc, null, 2) + '\n');
  const f = (x: number | undefined, d = 1) => (x === undefined ? '–' : x.toFixed(d));
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || !b ? '–' : (a / b).toFixed(2) + '×');
  const md: string[] = [
    `# Datapath benchmark`,
    '',
    `Commit \`${doc.commit.slice(0, 12)}\`${doc.dirty ? ' (with uncommitted changes)' : ''}, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
    `${data.rounds} rounds, modes alternated each round, ${data.seconds} s per run; medians. Path verified by the datapath counters in every run: ${doc.allPathsVerified ? 'yes' : 'NO'}.`,
    '',
    '## Request/response (one connection, TCP_NODELAY, C client)',
    '',
    '| case | mode | p50 µs | p90 µs | p99 µs | req/s | CPU µs/req | p50 vs direct | CPU vs direct |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of CASES.filter((x) => x.kind === 'rr')) {
    const d = summary[c.name]!.direct;
    for (const mode of MODES) {
      const s = summary[c.name]![mode];
      if (!s) continue;
      md.push(`| ${c.name} | ${mode} | ${f(s.p50_us)} | ${f(s.p90_us)} | ${f(s.p99_us)} | ${f(s.rps, 0)} | ${f(s.cpu_us_per_request)} | ${ratio(s.p50_us, d?.p50_us)} | ${ratio(s.cpu_us_per_request, d?.cpu_us_per_request)} |`);
    }
  }
  md.push('', '## Bulk (one connection, writes of the given size)', '', '| case | mode | Gbit/s | CPU s/GiB | throughput vs direct |', '|---|---|---:|---:|---:|');
  for (const c of CASES.filter((x) => x.kind === 'bulk')) {
    const d = summary[c.name]!.direct;
    for (const mode of MODES) {
      const s = summary[c.name]![mode];
      if (!s) continue;
      md.push(`| ${c.name} | ${mode} | ${f(s.gbit_s, 2)} | ${f(s.cpu_s_per_gib, 3)} | ${ratio(s.gbit_s, d?.gbit_s)} |`);
    }
  }
  md.push('', 'direct: pods not enrolled, veth + bridge + TCP/IP. sockmesh: every byte redirected socket to socket. '
    + 'CPU: whole-machine busy time from /proc/stat during the run. Raw runs with counters: datapath.json.', '');
  writeFileSync(join(outDir, 'datapath.md'), md.join('\n'));
  process.stdout.write(md.join('\n'));
}

main().catch((err: unknown) => {
  process.stderr.write(`datapath-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
