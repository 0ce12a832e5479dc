/**
 * Cluster benchmark: 10,000 pods and 1,000 services in the store (100
 * namespaces, 10 services of 10 pods each), reconciled into a real pinned
 * datapath. Measures the full reconcile (compile + every map entry
 * written), the time from one pod change to the maps updated (through the
 * store's change event and the reconcile loop, as the agent runs it), and
 * the process's RSS. The pods exist only in the store: no runtime pod is
 * made. The maps are read back from the kernel to prove what was written.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ClusterStore } from '../mesh-agent/cluster/cluster-store.js';
import type { ClusterObject, Pod } from '../mesh-agent/cluster/model.js';
import { IdentityAllocator } from '../mesh-agent/compiler/identities.js';
import { VipAllocator } from '../mesh-agent/compiler/vips.js';
import { Datapath } from '../mesh-agent/datapath/datapath.js';
import { findCgroup2 } from '../mesh-agent/datapath/host-checks.js';
import { repoRoot } from '../mesh-agent/paths.js';
import { MapReconciler } from '../mesh-agent/reconciler/map-reconciler.js';
import { ReconcileLoop } from '../mesh-agent/reconciler/reconcile-loop.js';
import { gitCommit, machine } from './bench-meta.js';
import { median } from './bench-stats.js';

const HELP = `usage: node --expose-gc dist/benchmarks/cluster-bench.js [--pods N] [--services N] [--changes N] [--out DIR]

Writes cluster.json and cluster.md to --out (default benchmarks/results).
Needs root (a datapath is pinned in /sys/fs/bpf/sockmesh-bench and removed after).
`;

const PIN_DIR = '/sys/fs/bpf/sockmesh-bench';

function podIp(i: number): string {
  const n = i + 2;
  return `198.18.${(n >> 8) & 255}.${n & 255}`;
}

function cluster(nPods: number, nServices: number): ClusterObject[] {
  const perService = Math.max(1, Math.floor(nPods / nServices));
  const nNamespaces = Math.max(1, Math.floor(nServices / 10));
  const out: ClusterObject[] = [];
  const meta = (namespace: string, name: string, labels: Record<string, string> = {}) => ({ namespace, name, labels, annotations: {}, source: 'bench' });
  for (let n = 0; n < nNamespaces; n++) {
    out.push({ kind: 'Namespace', meta: { ...meta('', `ns-${n}`), annotations: { 'sockmesh.io/enabled': n % 10 === 9 ? 'false' : 'true' } } });
  }
  for (let s = 0; s < nServices; s++) {
    const ns = `ns-${s % nNamespaces}`;
    out.push({ kind: 'Service', meta: meta(ns, `svc-${s}`), ports: [{ port: 80, targetPort: 'http', protocol: 'TCP' }], selector: { app: `app-${s}` } });
  }
  for (let i = 0; i < nPods; i++) {
    const s = Math.floor(i / perService) % nServices;
    const pod: Pod = {
      kind: 'Pod', meta: meta(`ns-${s % nNamespaces}`, `pod-${i}`, { app: `app-${s}`, version: `v${i % 3}` }),
      hostNetwork: false, command: ['true'], restartPolicy: 'Always', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
      ip: podIp(i), ready: true, phase: 'Running', serviceAccount: 'default',
    };
    out.push(pod);
  }
  return out;
}


function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    pods: { type: 'string' }, services: { type: 'string' }, changes: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const nPods = Number(values.pods ?? 10_000);
  const nServices = Number(values.services ?? 1_000);
  const nChanges = Number(values.changes ?? 50);
  const outDir = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const gc = (globalThis as { gc?: () => void }).gc;
  const cgroupPath = join(findCgroup2(), 'sockmesh-bench');
  const dp = new Datapath({ pinDir: PIN_DIR, cgroupPath });
  dp.down();
  dp.start();
  try {
    gc?.();
    const rss0 = process.memoryUsage().rss;
    const store = new ClusterStore();
    const objects = cluster(nPods, nServices);
    let t0 = performance.now();
    store.replace('bench', objects);
    const storeMs = performance.now() - t0;
    const layout = dp.layout;
    const reconciler = new MapReconciler(dp, { endpointEnrolled: layout.endpointEnrolledFlag, cgroupEnrolled: layout.cgroupEnrolledFlag, serviceAnyClient: layout.serviceAnyClientFlag });
    const loop = new ReconcileLoop({
      store, reconciler, nodeName: 'bench', mode: 'local', identities: new IdentityAllocator(), vips: new VipAllocator(),
      cgroups: () => new Map(), // the agent's default debounce (1 ms) is part of every figure
    });
    t0 = performance.now();
    const full = loop.start()!;
    const fullMs = performance.now() - t0;
    if (full.error) throw new Error(full.error);
    process.stderr.write(`full reconcile: ${fullMs.toFixed(1)} ms (compile ${full.compileMs.toFixed(1)}, maps ${full.reconcileMs.toFixed(1)})\n`);
    const inKernel = { endpoints: dp.entries('sm_endpoints').length, services: dp.entries('sm_services').length, backends: dp.entries('sm_backends').length };
    process.stderr.write(`in the kernel: ${JSON.stringify(inKernel)}\n`);

    // one pod changes at a time: readiness flips (a backend leaves or joins its service)
    const keys = [...store.pods().keys()];
    const oneChange: number[] = [];
    const compileMs: number[] = [];
    const mapsMs: number[] = [];
    for (let c = 0; c < nChanges; c++) {
      const key = keys[(c * 7919) % keys.length]!;
      const pod = store.pods().get(key)!;
      const done = new Promise<void>((resolve) => {
        // the maps are updated when a pass has seen the change's revision
        const check = setInterval(() => {
          if ((loop.last?.revision ?? 0) >= store.revision) {
            clearInterval(check);
            resolve();
          }
        }, 0);
      });
      t0 = performance.now();
      store.setPodStatus(key, { ip: pod.ip!, ready: !pod.ready, phase: pod.ready ? 'NotReady' : 'Running' });
      await done;
      oneChange.push(performance.now() - t0);
      compileMs.push(loop.last!.compileMs);
      mapsMs.push(loop.last!.reconcileMs);
      const w = loop.last!.stats!;
      if (c === 0) process.stderr.write(`one change wrote ${JSON.stringify(w.writes)}, deleted ${JSON.stringify(w.deletes)}\n`);
    }
    loop.stop();
    gc?.();
    const rss = process.memoryUsage().rss;
    const heap = process.memoryUsage().heapUsed;
      const doc = {
      benchmark: 'cluster', date: new Date().toISOString(), commit: gitCommit(),
      machine: machine(),
      params: { pods: nPods, services: nServices, changes: nChanges },
      storeLoadMs: storeMs,
      full: { ms: fullMs, compileMs: full.compileMs, mapsMs: full.reconcileMs, writes: full.stats!.writes },
      inKernel,
      oneChange: { medianMs: median(oneChange), p90Ms: pct(oneChange, 90), maxMs: Math.max(...oneChange), compileMedianMs: median(compileMs), mapsMedianMs: median(mapsMs) },
      memory: { rssMiB: rss / 2 ** 20, rssBeforeMiB: rss0 / 2 ** 20, heapMiB: heap / 2 ** 20 },
    };
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'cluster.json'), JSON.stringify(doc, null, 2) + '\n');
    const md = [
      '# Cluster benchmark', '',
      `Commit \`${doc.commit.slice(0, 12)}\`, ${doc.date}, kernel ${doc.machine.kernel}, ${doc.machine.cores} × ${doc.machine.cpu}.`,
      `${nPods} pods and ${nServices} services in the store (${Math.floor(nServices / 10)} namespaces, one in ten not enrolled), reconciled into a real pinned datapath; one pod change = a readiness flip, timed from the store change to the maps updated, ${nChanges} changes.`, '',
      '| | measured | target |', '|---|---:|---:|',
      `| full reconcile (compile + maps) | ${fullMs.toFixed(0)} ms (compile ${full.compileMs.toFixed(0)}, maps ${full.reconcileMs.toFixed(0)}) | ≤ 1000 ms |`,
      `| one pod change → maps updated, median | ${doc.oneChange.medianMs.toFixed(1)} ms (p90 ${doc.oneChange.p90Ms.toFixed(1)}, max ${doc.oneChange.maxMs.toFixed(1)}) | ≤ 10 ms |`,
      `| agent RSS with the store loaded | ${doc.memory.rssMiB.toFixed(0)} MiB (heap ${doc.memory.heapMiB.toFixed(0)} MiB) | ≤ 150 MiB |`, '',
      `Read back from the kernel after the full reconcile: ${inKernel.endpoints} endpoints, ${inKernel.services} services, ${inKernel.backends} backends. Loading the store took ${storeMs.toFixed(0)} ms.`, '',
    ].join('\n');
    writeFileSync(join(outDir, 'cluster.md'), md);
    process.stdout.write(md);
  } finally {
    dp.down();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`cluster-bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
