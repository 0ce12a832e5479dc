/**
 * xDS benchmark: time from a snapshot change to the last client's ACK, with
 * 1, 10 and 100 ADS clients (state of the world, each ACKing at once) at 100
 * and 1,000 services; bytes per service on the wire; heap held by a snapshot.
 * Clients run in this process over real gRPC on loopback.
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../mesh-agent/paths.js';
import { AdsServer } from '../xds/ads-server.js';
import { adsService } from '../xds/envoy-protos.js';
import { type MeshService, meshResources, serviceKey } from '../xds/mesh-resources.js';
import { PUSH_ORDER, Snapshot, TYPE_URL } from '../xds/snapshot.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';

const HELP = `usage: node dist/benchmarks/xds-bench.js [--repeats N] [--out DIR]

Writes xds.json and xds.md to --out (default benchmarks/results).
Run with --expose-gc for the heap figure.
`;

interface Resp { version_info: string; type_url: string; nonce: string; resources: unknown[] }

type Protocol = 'sotw' | 'delta';

/** An ADS client that subscribes to everything and ACKs every response at once. */
class AckingClient {
  readonly acked = new Map<string, string>();
  #call: grpc.ClientDuplexStream<unknown, Resp>;
  #client: grpc.Client;
  constructor(port: number, id: string, names: string[], onAck: () => void, protocol: Protocol) {
    this.#client = new (adsService())(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const stub = this.#client as unknown as Record<string, () => grpc.ClientDuplexStream<unknown, Resp>>;
    this.#call = protocol === 'sotw' ? stub.StreamAggregatedResources!() : stub.DeltaAggregatedResources!();
    const named = (t: string) => t === TYPE_URL.endpoint || t === TYPE_URL.route;
    const req = protocol === 'sotw'
      ? (type_url: string, version_info = '', response_nonce = '') => this.#call.write({
        node: { id }, type_url, version_info, response_nonce, resource_names: named(type_url) ? names : [],
      })
      : (type_url: string, _v = '', response_nonce = '') => this.#call.write({
        node: { id }, type_url, response_nonce, resource_names_subscribe: response_nonce || !named(type_url) ? [] : names,
      });
    this.#call.on('data', (r: Resp & { system_version_info?: string }) => {
      req(r.type_url, r.version_info, r.nonce);
      this.acked.set(r.type_url, (r.version_info || r.system_version_info) ?? '');
      onAck();
    });
    this.#call.on('error', () => undefined);
    for (const k of PUSH_ORDER) req(TYPE_URL[k]);
  }
  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

function services(n: number, generation = 0): MeshService[] {
  return Array.from({ length: n }, (_, i) => ({
    namespace: 'bench', name: `svc-${i}`, port: 80, listenerPort: 20000 + i,
    endpoints: [
      { ip: `198.18.${(i >> 8) & 255}.${i & 255 || 1}`, port: 8080 },
      { ip: `198.18.${200 + ((i >> 8) & 15)}.${i & 255 || 1}`, port: 8080 + generation },
    ],
  }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function caseRun(nServices: number, nClients: number, repeats: number, protocol: Protocol): Promise<{ ms: number[]; allMs: number[] }> {
  const cache = new SnapshotCache();
  const ads = new AdsServer({ cache });
  const port = await ads.start();
  let snap = Snapshot.create(meshResources(services(nServices)));
  cache.setDefaultSnapshot(snap);
  const names = services(nServices).map(serviceKey);
  let check = () => undefined as void;
  const clients = Array.from({ length: nClients }, (_, i) => new AckingClient(port, `bench-${i}`, names, () => check(), protocol));
  const inStep = (s: Snapshot) => clients.every((c) => c.acked.get(TYPE_URL.cluster) === s.versions.cluster
    && c.acked.get(TYPE_URL.listener) === s.versions.listener && c.acked.size === 4);
  const waitFor = (cond: () => boolean) => new Promise<void>((resolve) => {
    check = () => { if (cond()) { check = () => undefined; resolve(); } };
    check();
  });
  await waitFor(() => inStep(snap));
  const ms: number[] = [];
  const allMs: number[] = [];
  for (let r = 1; r <= repeats; r++) {
    // one endpoint of the current generation moves: only EDS changes, and only one resource
    const moved = services(nServices, r - 1);
    moved[0]!.endpoints[1]!.port = 9000 + r;
    const next = Snapshot.create(meshResources(moved));
    const endpointAckedBefore = clients.map((c) => c.acked.get(TYPE_URL.endpoint));
    let t0 = performance.now();
    cache.setDefaultSnapshot(next);
    await waitFor(() => clients.every((c, i) => c.acked.get(TYPE_URL.endpoint) !== endpointAckedBefore[i]));
    ms.push(performance.now() - t0);
    snap = next;
    // every service changes (a new generation of every endpoint)
    const all = Snapshot.create(meshResources(services(nServices, r)));
    const before = clients.map((c) => c.acked.get(TYPE_URL.endpoint));
    t0 = performance.now();
    cache.setDefaultSnapshot(all);
    await waitFor(() => clients.every((c, i) => c.acked.get(TYPE_URL.endpoint) !== before[i]));
    allMs.push(performance.now() - t0);
    snap = all;
  }
  for (const c of clients) c.close();
  await ads.stop();
  cache.close();
  return { ms, allMs };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { repeats: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const repeats = Number(values.repeats ?? 5);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const big = Snapshot.create(meshResources(services(1000)));
  gc?.();
  const heapPerService = (process.memoryUsage().heapUsed - heap0) / 1000;
  let bytes = 0;
  for (const k of PUSH_ORDER) for (const r of big.resources[k].values()) bytes += r.any.value.length;
  const rows: { protocol: Protocol; services: number; clients: number; oneEndpointMs: number; everyServiceMs: number }[] = [];
  for (const protocol of ['sotw', 'delta'] as const) {
    for (const nServices of [100, 1000]) {
      for (const nClients of [1, 10, 100]) {
        const { ms, allMs } = await caseRun(nServices, nClients, repeats, protocol);
        rows.push({ protocol, services: nServices, clients: nClients, oneEndpointMs: median(ms), everyServiceMs: median(allMs) });
        process.stderr.write(`${protocol} services=${nServices} clients=${nClients} one endpoint moved: ${median(ms).toFixed(1)} ms, every service changed: ${median(allMs).toFixed(1)} ms\n`);
      }
    }
  }
  const git = (args: string[]) => { try { return execFileSync('git', args, { cwd: repoRoot() }).toString().trim(); } catch { return 'unknown'; } };
  const doc = {
    benchmark: 'xds', date: new Date().toISOString(), commit: git(['rev-parse', 'HEAD']),
    machine: { kernel: release(), cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
    params: { repeats, debounceMs: 10, clientsInProcess: true },
    bytesPerService: bytes / 1000, heapBytesPerService: gc ? heapPerService : null, rows,
  };
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'xds.json'), JSON.stringify(doc, null, 2) + '\n');
  const md = [
    '# xDS benchmark', '',
    `Commit \`${doc.commit.slice(0, 12)}\`, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
    `ADS over gRPC on loopback, state of the world (sotw) and incremental (delta); the clients run in the benchmark's own process (on 2 cores they share the CPU with the server) and ACK every response at once; medians of ${repeats}; the cache debounces 10 ms.`, '',
    `Wire bytes per plain HTTP service (cluster + endpoints with 2 addresses + listener + route): ${(bytes / 1000).toFixed(0)} B (target ≤ 1 KiB).`,
    `Heap held by a snapshot, per service: ${gc ? `${(heapPerService / 1024).toFixed(1)} KiB` : 'not measured (run with --expose-gc)'}.`, '',
    '| protocol | services | clients | one endpoint moved → last ACK | every service changed → last ACK |', '|---|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.protocol} | ${r.services} | ${r.clients} | ${r.oneEndpointMs.toFixed(1)} ms | ${r.everyServiceMs.toFixed(1)} ms |`), '',
    'Target: ≤ 100 ms to the last ACK at 1,000 services and 100 clients.', '',
  ].join('\n');
  writeFileSync(join(outDir, 'xds.md'), md);
  process.stdout.write(md);
}

main().catch((err: unknown) => {
  process.stderr.write(`xds-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
