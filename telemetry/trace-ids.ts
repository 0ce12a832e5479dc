/** Trace and span ids (hex, from a pooled random buffer: one getrandom per 256 span ids), and the sampling decision a trace id carries. */
import { randomFillSync } from 'node:crypto';

const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;

function randomHex(bytes: number): string {
  if (poolAt + bytes > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const s = POOL.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return /^0+$/.test(s) ? randomHex(bytes) : s; // all zeros is the invalid id
}

export function randomTraceId(): string {
  return randomHex(16);
}

export function randomSpanId(): string {
  return randomHex(8);
}

/** Whether a new trace is kept at this ratio: its id's last 8 hex digits against it (deterministic per trace). */
export function keepTrace(traceId: string, ratio: number): boolean {
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  return parseInt(traceId.slice(-8), 16) / 0x1_0000_0000 < ratio;
}
