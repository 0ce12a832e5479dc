/** Figures every benchmark takes: medians, the machine's and processes' CPU and memory from /proc, counter deltas. */
import { readFileSync } from 'node:fs';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** User + system CPU seconds and RSS of processes, from /proc (a process gone counts 0). */
export function procUsage(pids: number[]): { cpu: number; rssMiB: number } {
  let ticks = 0;
  let rss = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
      rss += Number(f[21]) * 4096;
    } catch {
      // gone
    }
  }
  return { cpu: ticks / 100, rssMiB: rss / 2 ** 20 };
}

/** The whole machine's busy time so far, in jiffies (user + nice + system + irq + softirq + steal; /proc/stat). */
export function cpuBusyJiffies(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
}

/** after - before for each counter (the datapath's counters around a run). */
export function counterDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - (before[k] ?? 0)]));
}

/**
 * A bootstrap interval of the median: the [lo, hi] quantiles (default 5 %
 * and 95 %, a 90 % interval) of the medians of `iterations` resamples with
 * replacement. Seeded, so a result file's figures can be recomputed.
 */
export function bootstrapMedian(xs: number[], { iterations = 10_000, lo = 0.05, hi = 0.95, seed = 1 } = {}): [number, number] {
  let state = seed >>> 0 || 1;
  const next = () => {
    // xorshift32
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state / 2 ** 32;
  };
  const medians: number[] = [];
  for (let i = 0; i < iterations; i++) medians.push(median(xs.map(() => xs[Math.floor(next() * xs.length)]!)));
  medians.sort((a, b) => a - b);
  return [medians[Math.floor(lo * (iterations - 1))]!, medians[Math.ceil(hi * (iterations - 1))]!];
}
