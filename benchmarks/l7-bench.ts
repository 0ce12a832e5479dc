/**
 * L7 benchmark: one client pod calling one HTTP server pod, four ways, same
 * pods, same app, same load:
 *   direct        client → server pod address (no mesh: the namespace is not enrolled)
 *   sockmesh-l7   client → service VIP → the node's shared proxy (mesh-proxy) → server;
 *                 both legs short-circuited in the kernel (the namespace is enrolled)
 *   sidecar-mesh-proxy  a mesh-proxy in the client pod and one in the server pod, traffic
 *                 captured by nftables redirects inside each pod (as sidecar meshes do)
 *   sidecar-haproxy     the same with Debian's haproxy as the sidecars
 * Each round runs every mode in turn (rounds alternate the modes): requests/s at fixed
 * concurrency (closed loop), latency at a fixed rate (open loop, benchmarks/httpload.c),
 * and the infrastructure's CPU seconds (the proxies' user + system time) and memory (their
 * RSS) per 1,000 requests. The datapath counters of every run prove which path it took.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Agent } from '../mesh-agent/agent.js';
import { findCgroup2 } from '../mesh-agent/datapath/host-checks.js';
import { Datapath } from '../mesh-agent/datapath/datapath.js';
import { helperBinary, repoRoot } from '../mesh-agent/paths.js';
import { NodeRuntime } from '../mesh-agent/runtime/node-runtime.js';
import { runtimeName } from '../mesh-agent/runtime/pod-supervisor.js';
import { AdsServer } from '../xds/ads-server.js';
import { l7Resources } from '../xds/l7-resources.js';
import { Snapshot } from '../xds/snapshot.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';
import { gitCommit, machine } from './bench-meta.js';
import { median, procUsage } from './bench-stats.js';

const HELP = `usage: node dist/benchmarks/l7-bench.js [--rounds N] [--seconds S] [--rate R] [--concurrency C] [--out DIR]

Writes l7.json and l7.md to --out (default benchmarks/results). Needs root, haproxy and nftables
(make bench installs them). Takes about rounds x 4 modes x 2 runs x (seconds + 1).
`;

type Mode = 'direct' | 'sockmesh-l7' | 'sidecar-mesh-proxy' | 'sidecar-haproxy';
const MODES: Mode[] = ['direct', 'sockmesh-l7', 'sidecar-mesh-proxy', 'sidecar-haproxy'];
const PREFIX = 'smb';
const PIN_DIR = '/sys/fs/bpf/sockmesh-l7bench';
const SIDECAR_UID = 1337;
const APP_PORT = 8080;

interface Load { requests: number; errors: number; rps: number; p50_us: number; p90_us: number; p99_us: number; max_us: number }
interface Run {
  round: number;
  mode: Mode;
  closed: Load;
  open: Load;
  infraCpuSeconds: number;
  infraRssMiB: number;
  counters: Record<string, number>;
  pathOk: boolean;
}



const manifests = (enrolled: boolean) => `apiVersion: v1
kind: Namespace
metadata: { name: bench${enrolled ? ', annotations: { sockmesh.io/enabled: "true" }' : ''} }
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
metadata: { name: client, namespace: bench }
spec: { containers: [{ name: app, command: [sleep, infinity] }] }
`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    rounds: { type: 'string' }, seconds: { type: 'string' }, rate: { type: 'string' }, concurrency: { type: 'string' }, out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const rounds = Number(values.rounds ?? 3);
  const seconds = Number(values.seconds ?? 3);
  const rate = Number(values.rate ?? 300);
  const conc = Number(values.concurrency ?? 16);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const cgroupPath = join(findCgroup2(), 'sockmesh-l7bench');
  const rt = new NodeRuntime({ prefix: PREFIX, cgroupRoot: cgroupPath });
  await rt.cleanup();
  new Datapath({ pinDir: PIN_DIR, cgroupPath }).down();
  const dir = mkdtempSync(join(tmpdir(), 'sm-l7bench-'));
  writeFileSync(join(dir, 'bench.yaml'), manifests(false));
  const agent = new Agent({
    manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: PIN_DIR, cgroupPath }, proxy: 'mesh-proxy', nodeName: 'bench-node',
    adminSocket: join(dir, 'agent.sock'), xdsSocket: join(dir, 'xds.sock'), adminAddress: null, xdsAddress: '127.0.0.1:0',
  });
  // the sidecars' own control plane: a snapshot per sidecar, on a socket they can reach as uid 1337
  const sidecarCache = new SnapshotCache({ debounceMs: 1 });
  const sidecarXds = join(dir, 'sidecar-xds.sock');
  const sidecarAds = new AdsServer({ cache: sidecarCache, socketPath: sidecarXds });
  const sidecars: ChildProcess[] = [];
  const stopSidecars = async () => {
    for (const s of sidecars.splice(0)) s.kill('SIGKILL');
    for (const pod of ['client', 'server']) {
      try { execFileSync('ip', ['netns', 'exec', rt.podNetns(runtimeName(`bench/${pod}`)), 'nft', 'delete', 'table', 'ip', 'smb_sidecar'], { stdio: 'ignore' }); } catch { /* none */ }
    }
    await sleep(200);
  };
  try {
    await agent.start();
    await sidecarAds.start();
    chmodSync(dir, 0o755);
    chmodSync(sidecarXds, 0o666);
    const status = () => agent.status();
    const deadline = Date.now() + 30_000;
    while (!(status().cluster!.pods.every((p) => p.phase === 'Running') && status().cluster!.l7.proxy?.running && status().xds.proxies.length > 0)) {
      if (Date.now() > deadline) throw new Error('pods or the node proxy did not come up');
      await sleep(200);
    }
    const podsByKey = new Map(status().cluster!.pods.map((p) => [p.key, p]));
    const serverIp = podsByKey.get('bench/server')!.ip!;
    const vip = status().cluster!.services.find((s) => s.key === 'bench/server')!.vip!;
    const clientPod = runtimeName('bench/client');
    const serverPod = runtimeName('bench/server');
    const enroll = async (on: boolean) => {
      writeFileSync(join(dir, 'bench.yaml'), manifests(on));
      const until = Date.now() + 10_000;
      while (status().cluster!.pods.some((p) => p.enrolled !== on)) {
        if (Date.now() > until) throw new Error('enrollment did not change');
        await sleep(50);
      }
      await sleep(300);
    };
    const setupSidecars = async (kind: 'mesh-proxy' | 'haproxy') => {
      const nft = (pod: string, rules: string) => execFileSync('ip', ['netns', 'exec', rt.podNetns(pod), 'nft', '-f', '-'], { input: rules });
      nft(clientPod, `table ip smb_sidecar {\n  chain out {\n    type nat hook output priority -100;\n    meta skuid != ${SIDECAR_UID} ip daddr ${serverIp} tcp dport ${APP_PORT} redirect to :15001\n  }\n}\n`);
      nft(serverPod, `table ip smb_sidecar {\n  chain pre {\n    type nat hook prerouting priority -100;\n    tcp dport ${APP_PORT} redirect to :15006\n  }\n}\n`);
      const asSidecar = (argv: string[]) => ['setpriv', `--reuid=${SIDECAR_UID}`, `--regid=${SIDECAR_UID}`, '--clear-groups', '--', ...argv];
      if (kind === 'mesh-proxy') {
        const conf = (ip: string, svc: string, port: number, to: string) => Snapshot.create(l7Resources({
          proxyIp: ip, ports: [{ service: svc, port: APP_PORT, listenerPort: port }], routes: new Map(), lastGood: new Map(),
          backends: () => [{ ip: to, port: APP_PORT }],
        }).resources);
        sidecarCache.setSnapshot('client-sidecar', conf('0.0.0.0', 'bench/server', 15001, serverIp));
        sidecarCache.setSnapshot('server-sidecar', conf('0.0.0.0', 'bench/local', 15006, '127.0.0.1'));
        for (const [pod, id] of [[clientPod, 'client-sidecar'], [serverPod, 'server-sidecar']] as const) {
          // the same proxy with the same settings as the node proxy: an access log to a file
          const logFile = join(dir, `${id}-access.log`);
          writeFileSync(logFile, '');
          chmodSync(logFile, 0o666);
          sidecars.push(rt.exec(pod, asSidecar([process.execPath, join(repoRoot(), 'dist', 'mesh-proxy', 'cli.js'), '--xds', `unix:${sidecarXds}`, '--node-id', id, '--access-log', logFile]), { stdio: 'ignore' }));
        }
      } else {
        const cfg = (bind: number, to: string) => `global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind 0.0.0.0:${bind}\n  default_backend b\nbackend b\n  server s1 ${to}:${APP_PORT}\n`;
        for (const [pod, bind, to] of [[clientPod, 15001, serverIp], [serverPod, 15006, '127.0.0.1']] as const) {
          const file = join(dir, `haproxy-${bind}.cfg`);
          writeFileSync(file, cfg(bind, to));
          chmodSync(file, 0o644);
          sidecars.push(rt.exec(pod, asSidecar(['haproxy', '-db', '-f', file]), { stdio: 'ignore' }));
        }
      }
      // ready when a request goes through both
      for (let i = 0; i < 100; i++) {
        try {
          const out = (await rt.execOutput(clientPod, [helperBinary('httpload'), serverIp, String(APP_PORT), '/', '1', '0', '0.2'], { timeoutMs: 5000 })).toString();
          if ((JSON.parse(out) as Load).requests > 0) return;
        } catch {
          // not yet
        }
        await sleep(100);
      }
      throw new Error(`${kind} sidecars did not come up`);
    };
    const load = async (host: string, port: number, r: number): Promise<Load> => JSON.parse((await rt.execOutput(clientPod,
      [helperBinary('httpload'), host, String(port), '/', String(conc), String(r), String(seconds), '1'], { timeoutMs: (seconds + 30) * 1000 })).toString()) as Load;
    const runs: Run[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const mode of MODES) {
        await enroll(mode === 'sockmesh-l7');
        if (mode === 'sidecar-mesh-proxy') await setupSidecars('mesh-proxy');
        if (mode === 'sidecar-haproxy') await setupSidecars('haproxy');
        const infraPids = mode === 'sockmesh-l7' ? [status().cluster!.l7.proxy!.pid ?? proxyPid(rt)] : mode === 'direct' ? [] : sidecars.map((s) => s.pid!);
        const [host, port] = mode === 'sockmesh-l7' ? [vip, 80] : [serverIp, APP_PORT];
        // warm every mode the same way before measuring (JIT, pools): sidecars start fresh each run, the node proxy does not
        await rt.execOutput(clientPod, [helperBinary('httpload'), host, String(port), '/', String(conc), '0', '2', '0'], { timeoutMs: 30_000 });
        const c0 = status().datapath.counters!;
        const u0 = procUsage(infraPids);
        const closed = await load(host, port, 0);
        const open = await load(host, port, rate);
        const u1 = procUsage(infraPids);
        const c1 = status().datapath.counters!;
        const counters = Object.fromEntries(Object.keys(c1).map((k) => [k, c1[k]! - c0[k]!]));
        // sockmesh-l7: every connection in the short-circuit; a connection whose first send beats the peer's insertion
        // stays on the stack (the known race, counted as bytes_passed), so a sliver may pass
        const pathOk = mode === 'sockmesh-l7'
          ? counters.bytes_redirected! > 0 && counters.svc_translated! > 0 && counters.bytes_passed! <= counters.bytes_redirected! / 100
          : counters.bytes_redirected === 0;
        const requests = closed.requests + open.requests;
        runs.push({ round, mode, closed, open, infraCpuSeconds: u1.cpu - u0.cpu, infraRssMiB: u1.rssMiB, counters, pathOk });
        process.stderr.write(`round ${round} ${mode}: ${closed.rps.toFixed(0)} req/s closed (${closed.errors} errors); open ${rate}/s p50 ${open.p50_us.toFixed(0)} p99 ${open.p99_us.toFixed(0)} us (${open.errors} errors); infra ${(u1.cpu - u0.cpu).toFixed(2)} CPU s for ${requests} requests, ${u1.rssMiB.toFixed(0)} MiB; redirected ${counters.bytes_redirected} B, passed ${counters.bytes_passed} B ${pathOk ? 'ok' : 'PATH WRONG'}\n`);
        await stopSidecars();
      }
    }
    write(outDir, runs, { rounds, seconds, rate, concurrency: conc });
  } finally {
    await stopSidecars();
    await sidecarAds.stop();
    sidecarCache.close();
    await agent.stop({ down: true, removePods: true }).catch(() => undefined);
    await rt.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

function proxyPid(rt: NodeRuntime): number {
  return Number(readFileSync(join(rt.nodeProcessCgroup('node-proxy'), 'cgroup.procs'), 'utf8').split('\n')[0]);
}

function write(outDir: string, runs: Run[], params: Record<string, number>): void {
  const by = (m: Mode) => runs.filter((r) => r.mode === m);
  const agg = (m: Mode) => {
    const rs = by(m);
    const perK = (r: Run) => (r.infraCpuSeconds / (r.closed.requests + r.open.requests)) * 1000;
    return {
      rps: median(rs.map((r) => r.closed.rps)), p50: median(rs.map((r) => r.open.p50_us)), p90: median(rs.map((r) => r.open.p90_us)),
      p99: median(rs.map((r) => r.open.p99_us)), cpuPerK: median(rs.map(perK)), rssMiB: median(rs.map((r) => r.infraRssMiB)),
      errors: rs.reduce((a, r) => a + r.closed.errors + r.open.errors, 0), pathOk: rs.every((r) => r.pathOk),
      redirected: rs.reduce((x, r) => x + r.counters.bytes_redirected!, 0), passed: rs.reduce((x, r) => x + r.counters.bytes_passed!, 0),
    };
  };
  const a = Object.fromEntries(MODES.map((m) => [m, agg(m)])) as Record<Mode, ReturnType<typeof agg>>;
  const added = (m: Mode, k: 'p50' | 'p99') => a[m][k] - a.direct[k];
  const ratios = {
    latencyAddedP50: added('sockmesh-l7', 'p50') / added('sidecar-mesh-proxy', 'p50'),
    latencyAddedP99: added('sockmesh-l7', 'p99') / added('sidecar-mesh-proxy', 'p99'),
    infraCpu: a['sockmesh-l7'].cpuPerK / a['sidecar-mesh-proxy'].cpuPerK,
    infraMemory: a['sockmesh-l7'].rssMiB / a['sidecar-mesh-proxy'].rssMiB,
  };
  const doc = {
    benchmark: 'l7', date: new Date().toISOString(), commit: gitCommit(),
    machine: machine(), params, modes: a, ratios, runs,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'l7.json'), JSON.stringify(doc, null, 2) + '\n');
  const f = (x: number, d = 0) => x.toFixed(d);
  const md = [
    '# L7 benchmark', '',
    `Commit \`${doc.commit.slice(0, 12)}\`, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
    `One client pod, one HTTP server pod (Node), ${params.rounds} rounds with the modes in turn; each mode is warmed with 2 s of closed-loop load first; closed loop: ${params.concurrency} connections for ${params.seconds} s; open loop: ${params.rate} requests/s over ${params.concurrency} connections for ${params.seconds} s (after 1 s of warm-up each). Medians over rounds. Infrastructure = the proxies (the node proxy, or both sidecars): their CPU seconds and RSS over the two measured runs.`, '',
    '| mode | req/s (closed) | p50 µs | p90 µs | p99 µs (open, fixed rate) | infra CPU s / 1000 req | infra RSS MiB | errors | path proven |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...MODES.map((m) => `| ${m} | ${f(a[m].rps)} | ${f(a[m].p50)} | ${f(a[m].p90)} | ${f(a[m].p99)} | ${f(a[m].cpuPerK, 3)} | ${f(a[m].rssMiB)} | ${a[m].errors} | ${a[m].pathOk ? 'yes' : 'NO'} |`), '',
    `Latency the shared hop adds over direct, against a mesh-proxy sidecar pair: p50 ${f(added('sockmesh-l7', 'p50'))} vs ${f(added('sidecar-mesh-proxy', 'p50'))} µs = ${f(ratios.latencyAddedP50, 2)}×; p99 ${f(ratios.latencyAddedP99, 2)}× (target ≤ 0.5×).`,
    `Infrastructure CPU per request against the sidecar pair: ${f(ratios.infraCpu, 2)}× (target ≤ 0.5×); memory ${f(ratios.infraMemory, 2)}×.`,
    `Path (datapath counters over every run): direct and sidecar runs moved ${MODES.filter((m) => m !== 'sockmesh-l7').reduce((x, m) => x + a[m].redirected, 0)} bytes through the redirect; sockmesh-l7 runs redirected ${a['sockmesh-l7'].redirected} bytes socket to socket and ${a['sockmesh-l7'].passed} went through the stack (connections whose first send beat the peer's entry into the sockhash stay on the stack), and every VIP connect was translated in the kernel.`, '',
  ].join('\n');
  writeFileSync(join(outDir, 'l7.md'), md);
  process.stdout.write(md);
}

main().catch((err: unknown) => {
  process.stderr.write(`l7-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
