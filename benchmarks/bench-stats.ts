/** Figures every benchmark takes: medians, and processes' CPU and memory from /proc. */
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
