/**
 * xDS benchmark: time from a snapshot change to the last client's ACK, with
 * 1, 10 and 100 ADS clients at 100 and 1,000 services; bytes per service on
 * the wire; heap held by a snapshot. The clients run in a process of their
 * own (xds-bench-clients.ts) over real gRPC on loopback, as proxies would;
 * the server sees their ACKs on its diagnostics channel.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { repoRoot } from '../mesh-agent/paths.js';
import { ADS_ACK_CHANNEL, type AdsAckEvent, AdsServer } from '../xds/ads-server.js';
import { meshResources } from '../xds/mesh-resources.js';
import { PUSH_ORDER, type ResourceKind, Snapshot } from '../xds/snapshot.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';
import { benchServices } from './xds-bench-model.js';
import { gitCommit, machine } from './bench-meta.js';
import { median } from './bench-stats.js';

const HELP = `usage: node dist/benchmarks/xds-bench.js [--repeats N] [--out DIR] [--only PROTOCOL:SERVICES:CLIENTS]

Writes xds.json and xds.md to --out (default benchmarks/results).
--only runs one case (e.g. sotw:1000:100) and writes nothing.
Run with --expose-gc for the heap figure.
`;

type Protocol = 'sotw' | 'delta';


/** What every stream has ACKed, per kind, from the server's ACK events. */
class AckTracker {
  readonly acked = new Map<number, Partial<Record<ResourceKind, string>>>();
  #check = () => undefined as void;
  readonly #onAck = (m: unknown) => {
    const e = m as AdsAckEvent;
    if (e.nack) return;
    let per = this.acked.get(e.stream);
    if (!per) this.acked.set(e.stream, (per = {}));
    per[e.kind] = e.version;
    this.#check();
  };
  constructor() {
    diagnosticsChannel.subscribe(ADS_ACK_CHANNEL, this.#onAck);
  }
  /** Resolves when `n` streams have ACKed `kinds` of the snapshot. */
  until(n: number, snap: Snapshot, kinds: readonly ResourceKind[], timeoutMs = 60_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not every client ACKed within ${timeoutMs} ms`)), timeoutMs);
      this.#check = () => {
        let inStep = 0;
        for (const per of this.acked.values()) if (kinds.every((k) => per[k] === snap.versions[k])) inStep++;
        if (inStep >= n) {
          clearTimeout(timer);
          this.#check = () => undefined;
          resolve();
        }
      };
      this.#check();
    });
  }
  close(): void {
    diagnosticsChannel.unsubscribe(ADS_ACK_CHANNEL, this.#onAck);
  }
}

function startClients(port: number, nClients: number, nServices: number, protocol: Protocol): ChildProcess {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'xds-bench-clients.js');
  const child = spawn(process.execPath, [script, '--port', String(port), '--clients', String(nClients), '--services', String(nServices), '--protocol', protocol], {
    stdio: ['pipe', 'inherit', 'inherit'],
  });
  return child;
}

interface CaseResult { ms: number[]; allMs: number[]; cpuMs: number[]; allCpuMs: number[] }

/** Server CPU (user + system) spent while fn's promise runs, in ms. */
async function timed(fn: () => Promise<void>): Promise<{ ms: number; cpuMs: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { ms, cpuMs: (c.user + c.system) / 1000 };
}

async function caseRun(nServices: number, nClients: number, repeats: number, protocol: Protocol): Promise<CaseResult> {
  const cache = new SnapshotCache();
  const ads = new AdsServer({ cache });
  const port = await ads.start();
  const acks = new AckTracker();
  let snap = Snapshot.create(meshResources(benchServices(nServices)));
  cache.setDefaultSnapshot(snap);
  const clients = startClients(port, nClients, nServices, protocol);
  const exited = new Promise<void>((r) => clients.once('exit', () => r()));
  await acks.until(nClients, snap, PUSH_ORDER);
  const out: CaseResult = { ms: [], allMs: [], cpuMs: [], allCpuMs: [] };
  for (let r = 1; r <= repeats; r++) {
    // one endpoint of the current generation moves: only EDS changes, and only one resource
    const moved = benchServices(nServices, r - 1);
    moved[0]!.endpoints[1]!.port = 9000 + r;
    const next = Snapshot.create(meshResources(moved), snap);
    const one = await timed(async () => {
      cache.setDefaultSnapshot(next);
      await acks.until(nClients, next, ['endpoint']);
    });
    out.ms.push(one.ms);
    out.cpuMs.push(one.cpuMs);
    snap = next;
    // every service changes (a new generation of every endpoint)
    const all = Snapshot.create(meshResources(benchServices(nServices, r)), snap);
    const every = await timed(async () => {
      cache.setDefaultSnapshot(all);
      await acks.until(nClients, all, ['endpoint']);
    });
    out.allMs.push(every.ms);
    out.allCpuMs.push(every.cpuMs);
    snap = all;
  }
  clients.stdin!.end();
  await exited;
  acks.close();
  await ads.stop();
  cache.close();
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { repeats: { type: 'string' }, out: { type: 'string' }, only: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const repeats = Number(values.repeats ?? 5);
  if (values.only) {
    const [protocol, nServices, nClients] = values.only.split(':');
    if ((protocol !== 'sotw' && protocol !== 'delta') || !Number(nServices) || !Number(nClients)) throw new Error(`--only takes PROTOCOL:SERVICES:CLIENTS, got ${values.only}`);
    const r = await caseRun(Number(nServices), Number(nClients), repeats, protocol);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const big = Snapshot.create(meshResources(benchServices(1000)));
  gc?.();
  const heapPerService = (process.memoryUsage().heapUsed - heap0) / 1000;
  let bytes = 0;
  for (const k of PUSH_ORDER) for (const r of big.resources[k].values()) bytes += r.any.value.length;
  const rows: { protocol: Protocol; services: number; clients: number; oneEndpointMs: number; everyServiceMs: number; oneEndpointCpuMs: number; everyServiceCpuMs: number }[] = [];
  for (const protocol of ['sotw', 'delta'] as const) {
    for (const nServices of [100, 1000]) {
      for (const nClients of [1, 10, 100]) {
        const { ms, allMs, cpuMs, allCpuMs } = await caseRun(nServices, nClients, repeats, protocol);
        rows.push({
          protocol, services: nServices, clients: nClients, oneEndpointMs: median(ms), everyServiceMs: median(allMs),
          oneEndpointCpuMs: median(cpuMs), everyServiceCpuMs: median(allCpuMs),
        });
        process.stderr.write(`${protocol} services=${nServices} clients=${nClients} one endpoint moved: ${median(ms).toFixed(1)} ms, every service changed: ${median(allMs).toFixed(1)} ms\n`);
      }
    }
  }
  const doc = {
    benchmark: 'xds', date: new Date().toISOString(), commit: gitCommit(),
    machine: machine(),
    params: { repeats, debounceMs: 10, clientsInProcess: false },
    bytesPerService: bytes / 1000, heapBytesPerService: gc ? heapPerService : null, rows,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'xds.json'), JSON.stringify(doc, null, 2) + '\n');
  const md = [
    '# xDS benchmark', '',
    `Commit \`${doc.commit.slice(0, 12)}\`, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
    `ADS over gRPC on loopback, state of the world (sotw) and incremental (delta); the clients run in one process of their own (the server's ACK events time them) and ACK every response at once; medians of ${repeats}; the cache debounces 10 ms, which every figure includes. Server CPU is the server process's user + system time over the same interval.`, '',
    `Wire bytes per plain HTTP service (cluster + endpoints with 2 addresses + listener + route): ${(bytes / 1000).toFixed(0)} B (target ≤ 1 KiB).`,
    `Heap held by a snapshot, per service: ${gc ? `${(heapPerService / 1024).toFixed(1)} KiB` : 'not measured (run with --expose-gc)'}.`, '',
    '| protocol | services | clients | one endpoint moved → last ACK | server CPU | every service changed → last ACK | server CPU |', '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.protocol} | ${r.services} | ${r.clients} | ${r.oneEndpointMs.toFixed(1)} ms | ${r.oneEndpointCpuMs.toFixed(1)} ms | ${r.everyServiceMs.toFixed(1)} ms | ${r.everyServiceCpuMs.toFixed(1)} ms |`), '',
    'Target: ≤ 100 ms to the last ACK at 1,000 services and 100 clients.', '',
  ].join('\n');
  writeFileSync(join(outDir, 'xds.md'), md);
  process.stdout.write(md);
}

main().catch((err: unknown) => {
  process.stderr.write(`xds-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
