/**
 * Tracing benchmark: what 100 % sampling costs the infrastructure. One client
 * pod calls one HTTP server pod through the node proxy (a VIP, both legs
 * short-circuited in the kernel), at a fixed rate, with tracing off, then on
 * (every request traced: the caller's CLIENT and the backend's SERVER span
 * relayed to the agent, the kernel's connection spans, exported to the
 * OTLP/JSON lines file, the embedded default), alternating off/on each round.
 * By default one agent and node proxy run throughout, warm, and tracing is
 * switched at runtime (mesh-agent tracing: the proxy follows over xDS), as a
 * node runs for days; --fresh starts them afresh for every run instead.
 * Infrastructure CPU = the node proxy's + the agent's user + system time, per
 * 1,000 requests. The datapath counters prove the path; the export queue's
 * counts prove the spans went out.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Agent } from '../mesh-agent/agent.js';
import { findCgroup2 } from '../mesh-agent/datapath/host-checks.js';
import { AGENT_NODE_FLAGS, missingAgentFlags } from '../mesh-agent/node-flags.js';
import { Datapath } from '../mesh-agent/datapath/datapath.js';
import { helperBinary, repoRoot } from '../mesh-agent/paths.js';
import { NodeRuntime } from '../mesh-agent/runtime/node-runtime.js';
import { runtimeName } from '../mesh-agent/runtime/pod-supervisor.js';
import { telemetryOptions } from '../telemetry/telemetry-options.js';
import { gitCommit, machine } from './bench-meta.js';
import { bootstrapMedian, median, procUsage } from './bench-stats.js';

const HELP = `usage: node dist/benchmarks/tracing-bench.js [--rounds N] [--seconds S] [--warm S] [--only tracing-off|tracing-on] [--sample-ratio R] [--rate R] [--concurrency C] [--fresh] [--pin] [--node-defaults] [--out DIR]

Writes tracing.json and tracing.md to --out (default benchmarks/results). Needs root.
By default one agent and node proxy serve every run (warmed once with --warm S of closed-loop
load), and tracing is switched between runs as a user would (the agent's setTracing, the node
proxy following over xDS). --fresh: the agent, the node proxy and the pods start afresh for every
run, each warmed with --warm S (what a new node pays in its first seconds).
--seconds S: each run's load (default 5); --warm S default 5.
--pin: the node proxy alone on core 1, everything else (the agent, the client, the server) on
core 0. Not the default: the agent's extra work with tracing on then slows the server and client
it shares a core with, and the proxy's CPU per request moves with them.
The agent runs in this process, with the V8 flags the mesh-agent command gives node
(${AGENT_NODE_FLAGS.join(' ')}): started without them, the benchmark starts node again with
them. --node-defaults: the agent with node's default heap settings instead.
Takes about rounds x 2 x (seconds + 4) seconds, or rounds x 2 x (seconds + warm + 10) with --fresh.
`;

type Mode = 'tracing-off' | 'tracing-on';
const MODES: Mode[] = ['tracing-off', 'tracing-on'];
const PREFIX = 'smtb';
const PIN_DIR = '/sys/fs/bpf/sockmesh-tracebench';
const APP_PORT = 8080;

interface Load { requests: number; errors: number; rps: number; p50_us: number; p90_us: number; p99_us: number; max_us: number }
interface Run {
  round: number;
  mode: Mode;
  load: Load;
  /** requests the node proxy reported to the agent in the measured window (the load generator's 1 s warm-up included): the CPU's denominator */
  served: number;
  proxyCpuSeconds: number;
  agentCpuSeconds: number;
  /** the agent's (this process's) resident memory at the end of the window, MiB */
  agentRssMiB: number;
  spans: { exported: number; dropped: number; relayed: number; connections: number };
  traceFileBytes: number;
  counters: Record<string, number>;
  pathOk: boolean;
}



const MANIFESTS = `apiVersion: v1
kind: Namespace
metadata: { name: bench, annotations: { sockmesh.io/enabled: "true" } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: bench, labels: { app: server } }
spec: { containers: [{ name: app, command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(join(repoRoot(), 'examples', 'app', 'service.mjs'))}, serve, server, "${APP_PORT}"], ports: [{ name: http, containerPort: ${APP_PORT} }] }] }
---
apiVersion: v1
kind: Service
metadata: { name: server, namespace: bench }
spec: { selector: { app: server }, ports: [{ port: 80, targetPort: http, appProtocol: http }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: bench, labels: { app: client } }
spec: { containers: [{ name: app, command: [sleep, infinity] }] }
`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    rounds: { type: 'string' }, seconds: { type: 'string' }, pin: { type: 'boolean' }, fresh: { type: 'boolean' }, warm: { type: 'string' }, only: { type: 'string' }, 'sample-ratio': { type: 'string' }, rate: { type: 'string' }, concurrency: { type: 'string' }, out: { type: 'string' },
    'node-defaults': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const missing = missingAgentFlags(process.execArgv);
  if (values['node-defaults'] !== true && missing.length > 0) {
    process.exitCode = await again(missing);
    return;
  }
  const rounds = Number(values.rounds ?? 4);
  const seconds = Number(values.seconds ?? 5);
  const rate = Number(values.rate ?? 300);
  const conc = Number(values.concurrency ?? 16);
  const warmSeconds = Number(values.warm ?? 5);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  // the agent (this process) and every process it starts on core 0; the node proxy is moved to core 1 once it runs
  const pin = values.pin === true && availableParallelism() >= 2;
  const fresh = values.fresh === true;
  const clientPod = runtimeName('bench/client');
  if (pin) execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const cgroupPath = join(findCgroup2(), 'sockmesh-tracebench');
  const rt = new NodeRuntime({ prefix: PREFIX, cgroupRoot: cgroupPath });
  await rt.cleanup();
  new Datapath({ pinDir: PIN_DIR, cgroupPath }).down();
  const dir = mkdtempSync(join(tmpdir(), 'sm-tracebench-'));
  writeFileSync(join(dir, 'bench.yaml'), MANIFESTS);
  const traceDir = mkdtempSync(join(tmpdir(), 'sm-tracebench-out-'));
  const traceFile = join(traceDir, 'traces.otlp.jsonl');
  let agent: Agent | undefined;
  const runs: Run[] = [];
  try {
    let proxyPid = 0;
    let vip = '';
    for (let round = 1; round <= rounds; round++) {
      for (const mode of (round % 2 === 1 ? MODES : [...MODES].reverse()).filter((m) => values.only === undefined || m === values.only)) {
        if (!agent) {
          rmSync(traceFile, { force: true });
          agent = new Agent({
            manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: PIN_DIR, cgroupPath }, proxy: 'mesh-proxy', nodeName: 'bench-node',
            adminSocket: join(dir, 'agent.sock'), xdsSocket: join(dir, 'xds.sock'), adminAddress: null, xdsAddress: '127.0.0.1:0',
            // switched at runtime: started on, so the warm-up runs both ways
            telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: traceFile, OTEL_BSP_SCHEDULE_DELAY: '1000' }, { tracing: !fresh || mode === 'tracing-on' ? 'on' : 'off', ...(values['sample-ratio'] !== undefined && { sampleRatio: values['sample-ratio'] }) }),
          });
          await agent.start();
          const a = agent;
          const deadline = Date.now() + 30_000;
          while (!(a.status().cluster!.pods.every((p) => p.phase === 'Running') && a.status().cluster!.l7.proxy?.running && a.status().xds.proxies.some((p) => p.types.route?.ackedVersion))) {
            if (Date.now() > deadline) throw new Error('pods or the node proxy did not come up');
            await sleep(200);
          }
          vip = a.status().cluster!.services.find((s) => s.key === 'bench/server')!.vip!;
          proxyPid = a.status().cluster!.l7.proxy!.pid ?? Number(readFileSync(join(rt.nodeProcessCgroup('node-proxy'), 'cgroup.procs'), 'utf8').split('\n')[0]);
          if (pin) execFileSync('taskset', ['-a', '-p', '-c', '1', String(proxyPid)], { stdio: 'ignore' });
          // warm up (JIT, pools), then measure; switched at runtime: with tracing on, then off
          const warm = () => rt.execOutput(clientPod, [helperBinary('httpload'), vip, '80', '/', String(conc), '0', String(warmSeconds), '0'], { timeoutMs: (warmSeconds + 60) * 1000 });
          await warm();
          if (!fresh) {
            await switchTracing(agent, false);
            await warm();
          }
        }
        if (!fresh) await switchTracing(agent, mode === 'tracing-on');
        const a = agent;
        const status = () => a.status();
        await sleep(1500); // the warm-up's (or the last run's) spans leave the queues
        const f0 = traceFileSize(traceFile);
        const t0 = status().telemetry as { queue: { exported: number; droppedQueueFull: number; failed: number }; relay: { requests: number; spans: number; forwarded: { exported: number; dropped: number; failed: number } }; flows: { spans: number } };
        const c0 = status().datapath.counters!;
        const p0 = procUsage([proxyPid]).cpu;
        const a0 = process.cpuUsage();
        const load = JSON.parse((await rt.execOutput(clientPod, [helperBinary('httpload'), vip, '80', '/', String(conc), String(rate), String(seconds), '1'], { timeoutMs: (seconds + 30) * 1000 })).toString()) as Load;
        await sleep(1500); // the spans of the last requests are relayed and exported: their cost counts
        const p1 = procUsage([proxyPid]).cpu;
        const a1 = process.cpuUsage(a0);
        const c1 = status().datapath.counters!;
        const t1 = status().telemetry as typeof t0;
        const counters = Object.fromEntries(Object.keys(c1).map((k) => [k, c1[k]! - c0[k]!]));
        const pathOk = counters.bytes_redirected! > 0 && counters.bytes_passed! <= counters.bytes_redirected! / 100;
        const spans = {
          exported: (t1.queue.exported + t1.relay.forwarded.exported) - (t0.queue.exported + t0.relay.forwarded.exported),
          dropped: (t1.queue.droppedQueueFull + t1.queue.failed + t1.relay.forwarded.dropped + t1.relay.forwarded.failed) - (t0.queue.droppedQueueFull + t0.queue.failed + t0.relay.forwarded.dropped + t0.relay.forwarded.failed),
          relayed: t1.relay.spans - t0.relay.spans, connections: t1.flows.spans - t0.flows.spans,
        };
        const f1 = traceFileSize(traceFile);
        // the file may have been renamed to .1 (its cap) in the run
        const traceFileBytes = f1 >= f0 ? f1 - f0 : f1 + traceFileSize(`${traceFile}.1`) - f0;
        const run: Run = { round, mode, load, served: t1.relay.requests - t0.relay.requests, proxyCpuSeconds: p1 - p0, agentCpuSeconds: (a1.user + a1.system) / 1e6, agentRssMiB: process.memoryUsage.rss() / 2 ** 20, spans, traceFileBytes, counters, pathOk };
        runs.push(run);
        process.stderr.write(`round ${round} ${mode}: ${run.served} requests served (${load.requests} after the client's warm-up) at ${rate}/s, p50 ${load.p50_us.toFixed(0)} p99 ${load.p99_us.toFixed(0)} us, ${load.errors} errors; proxy ${run.proxyCpuSeconds.toFixed(2)} + agent ${run.agentCpuSeconds.toFixed(2)} CPU s; spans exported ${spans.exported} (relayed ${spans.relayed}, connections ${spans.connections}, dropped ${spans.dropped}); redirected ${counters.bytes_redirected} B, passed ${counters.bytes_passed} B ${pathOk ? 'ok' : 'PATH WRONG'}\n`);
        if (fresh) {
          // every run starts from fresh processes: an agent adopting the last run's node proxy (same
          // flags) or pods would compare a long-running proxy with a new one
          await a.stop({ removePods: true });
          agent = undefined;
        }
      }
    }
    if (values.only === undefined) write(outDir, runs, { rounds, seconds, warmSeconds, rate, concurrency: conc }, pin, fresh);
  } finally {
    await agent?.stop({ down: true, removePods: true }).catch(() => undefined);
    // the agents left the pods running for the next one to adopt: remove them, and the datapath
    new Datapath({ pinDir: PIN_DIR, cgroupPath }).down();
    await rt.cleanup();
    rmSync(dir, { recursive: true, force: true });
    rmSync(traceDir, { recursive: true, force: true });
  }
}

/** This process's peak resident memory (VmHWM), MiB. */
function peakRssMiB(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function traceFileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0; // none written yet
  }
}

/** This benchmark again, in a node started with the agent's flags too; its exit code. */
async function again(flags: string[]): Promise<number> {
  process.stderr.write(`tracing-bench: starting node again with ${flags.join(' ')} (the mesh-agent command's flags)\n`);
  const child = spawn(process.execPath, [...flags, ...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], { stdio: 'inherit' });
  const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
  process.on('SIGINT', forward('SIGINT')).on('SIGTERM', forward('SIGTERM'));
  return new Promise((resolve) => child.on('exit', (code, sig) => resolve(code ?? 128 + (sig ? constants.signals[sig] : 0))));
}

/** Turns tracing on or off in the running agent and waits until the node proxy ACKed its new listeners. */
async function switchTracing(agent: Agent, on: boolean): Promise<void> {
  if (agent.telemetry.tracing.enabled === on) return;
  const listener = () => agent.status().xds.proxies[0]?.types.listener;
  const sent = listener()?.sentVersion;
  agent.setTracing({ enabled: on });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const l = listener();
    if (l?.sentVersion !== sent && l?.ackedVersion === l?.sentVersion) return;
    if (Date.now() > deadline) throw new Error(`the node proxy did not take the listeners with tracing ${on ? 'on' : 'off'} within 10 s`);
    await sleep(20);
  }
}

function write(outDir: string, runs: Run[], params: Record<string, number>, pinned: boolean, fresh: boolean): void {
  const perK = (r: Run) => ((r.proxyCpuSeconds + r.agentCpuSeconds) / r.served) * 1000;
  const agg = (m: Mode) => {
    const rs = runs.filter((r) => r.mode === m);
    return {
      requests: median(rs.map((r) => r.served)), p50: median(rs.map((r) => r.load.p50_us)), p99: median(rs.map((r) => r.load.p99_us)),
      proxyCpuPerK: median(rs.map((r) => (r.proxyCpuSeconds / r.served) * 1000)), agentCpuPerK: median(rs.map((r) => (r.agentCpuSeconds / r.served) * 1000)),
      infraCpuPerK: median(rs.map(perK)), spansPerRequest: median(rs.map((r) => r.spans.exported / r.served)),
      dropped: rs.reduce((x, r) => x + r.spans.dropped, 0), errors: rs.reduce((x, r) => x + r.load.errors, 0), pathOk: rs.every((r) => r.pathOk),
      redirected: rs.reduce((x, r) => x + r.counters.bytes_redirected!, 0), passed: rs.reduce((x, r) => x + r.counters.bytes_passed!, 0),
      agentRssMiB: median(rs.map((r) => r.agentRssMiB)), agentMaxRssMiB: Math.max(...rs.map((r) => r.agentRssMiB)),
    };
  };
  const a = { 'tracing-off': agg('tracing-off'), 'tracing-on': agg('tracing-on') };
  // ratios per round (off and on of one round ran back to back), then their median
  const roundRatios = [...new Set(runs.map((r) => r.round))].map((round) => {
    const off = runs.find((r) => r.round === round && r.mode === 'tracing-off')!;
    const on = runs.find((r) => r.round === round && r.mode === 'tracing-on')!;
    return perK(on) / perK(off);
  });
  const extra = median(roundRatios) - 1;
  const summed = (m: Mode) => runs.filter((r) => r.mode === m).reduce((x, r) => x + r.proxyCpuSeconds + r.agentCpuSeconds, 0) / runs.filter((r) => r.mode === m).reduce((x, r) => x + r.served, 0);
  const summedRatio = summed('tracing-on') / summed('tracing-off');
  const interval = bootstrapMedian(roundRatios);
  const doc = { benchmark: 'tracing', date: new Date().toISOString(), commit: gitCommit(), machine: machine(), params, pinned, processes: fresh ? 'fresh each run' : 'one agent and node proxy, tracing switched at runtime', agentNodeFlags: process.execArgv, peakAgentRssMiB: peakRssMiB(), modes: a, extraInfraCpu: extra, extraInterval90: interval.map((x) => x - 1), summedRatio, roundRatios, runs };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'tracing.json'), JSON.stringify(doc, null, 2) + '\n');
  const f = (x: number, d = 0) => x.toFixed(d);
  const md = [
    '# Tracing benchmark', '',
    `Commit \`${doc.commit.slice(0, 12)}\`, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
    `One client pod calls one HTTP server pod through the node proxy (service VIP, both legs short-circuited), ${params.rate} requests/s over ${params.concurrency} connections for ${params.seconds} s, ${params.rounds} rounds alternating off/on (${fresh ? `the agent, the node proxy and the pods start afresh for every run and are warmed with ${params.warmSeconds} s of closed-loop load` : `one agent, node proxy and pair of pods serve every run, warmed once with ${params.warmSeconds} s of closed-loop load with tracing on and ${params.warmSeconds} s with it off; tracing is switched between runs at runtime, the node proxy following over xDS`}). Tracing off = the node proxy makes no spans (a caller's traceparent passes through); it still reports every request to the agent. Tracing on = 100 % sampling: the proxy notes each request's ids, times and attempts in its record and the agent writes the spans to the OTLP/JSON lines file (the embedded default). Infrastructure CPU = the node proxy + the agent, user + system, counted until 1.5 s after the load so the last records and spans are written, per 1,000 requests the node proxy served in that window (the load generator's 1 s warm-up included; its latencies are not). ${pinned ? 'The node proxy ran alone on core 1; the agent, the client and the server on core 0.' : 'Processes were not pinned to cores.'} Medians over rounds.`, '',
    '| mode | requests served | p50 µs | p99 µs | proxy CPU ms / 1000 req | agent CPU ms / 1000 req | infra CPU ms / 1000 req | spans exported / req | spans dropped | errors | path proven |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...MODES.map((m) => `| ${m} | ${f(a[m].requests)} | ${f(a[m].p50)} | ${f(a[m].p99)} | ${f(a[m].proxyCpuPerK * 1000)} | ${f(a[m].agentCpuPerK * 1000)} | ${f(a[m].infraCpuPerK * 1000)} | ${f(a[m].spansPerRequest, 2)} | ${a[m].dropped} | ${a[m].errors} | ${a[m].pathOk ? 'yes' : 'NO'} |`), '',
    `Extra infrastructure CPU with tracing at 100 %: ${f(extra * 100, 1)} %, the median of the per-round on/off ratios (bootstrap 90 % interval ${f((interval[0] - 1) * 100, 1)} to ${f((interval[1] - 1) * 100, 1)} %; ratios ${roundRatios.map((r) => r.toFixed(2)).join(', ')}); ${f((summedRatio - 1) * 100, 1)} % from the CPU summed over all runs of each mode. Target ≤ 10 %.`,
    `The agent ran with node ${doc.agentNodeFlags.length > 0 ? doc.agentNodeFlags.join(' ') : '(no flags: node\'s defaults)'}; its resident memory at the end of the runs (median, most): off ${f(a['tracing-off'].agentRssMiB)}, ${f(a['tracing-off'].agentMaxRssMiB)} MiB; on ${f(a['tracing-on'].agentRssMiB)}, ${f(a['tracing-on'].agentMaxRssMiB)} MiB; at its peak ${f(doc.peakAgentRssMiB)} MiB (the benchmark's own process included).`,
    `Path (datapath counters): ${a['tracing-off'].redirected + a['tracing-on'].redirected} bytes redirected socket to socket, ${a['tracing-off'].passed + a['tracing-on'].passed} through the stack.`, '',
  ].join('\n');
  writeFileSync(join(outDir, 'tracing.md'), md);
  process.stdout.write(md);
}

main().catch((err: unknown) => {
  process.stderr.write(`tracing-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
