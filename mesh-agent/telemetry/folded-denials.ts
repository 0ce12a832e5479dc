/**
 * The kernel folds denials: one record per key (kind, direction, ends,
 * port) and second, carrying how many identical ones came since the last
 * record (`suppressed`). The last second of a burst would be reported only
 * with the key's next record, which may never come. This closes that gap
 * without writing to the kernel's fold: once a second has passed since a
 * key's last record, a sweep of sm_pol_seen reports the denials folded since
 * as a trailing record (a copy of the last one, standing for them), and the
 * key's next kernel record is reduced by what was already reported.
 */
import type { PolicyEventRecord, PolicySeen } from '../datapath/layout.js';

const EVERY_NS = 1_000_000_000n;
/** a key is looked at until its last record is this old (past the second the kernel folds into it, with a sweep to spare) */
const WATCH_NS = 2_000_000_000n;

export type DenialKey = Pick<PolicyEventRecord, 'kind' | 'direction' | 'proto' | 'srcIp' | 'dstIp' | 'dstPort'>;

function keyOf(r: DenialKey): string {
  return `${r.kind}|${r.direction}|${r.proto}|${r.srcIp ?? ''}|${r.dstIp}|${r.dstPort}`;
}

interface Fold {
  /** the key's last kernel record */
  last: PolicyEventRecord;
  /** of the denials folded since that record, how many a sweep reported */
  reported: number;
}

export class FoldedDenials {
  /** keys whose last record is recent (the kernel may still be folding into it), oldest record first */
  readonly #watch = new Map<string, Fold>();
  /** what sweeps reported of a key's current fold, until its next record (kept only when not 0) */
  readonly #reported = new Map<string, { tsNs: bigint; n: number }>();
  readonly #max: number;

  /** max: keys remembered at most; the oldest go first */
  constructor(max = 65_536) {
    this.#max = max;
  }

  /** The kernel's records, with what sweeps already reported taken off their counts. */
  onRecords(records: readonly PolicyEventRecord[]): PolicyEventRecord[] {
    return records.map((r) => {
      if (r.kind === 'cut') return r; // never folded
      const key = keyOf(r);
      const before = this.#reported.get(key);
      this.#reported.delete(key);
      this.#watch.delete(key); // re-inserted: the map stays in the order of the records
      this.#watch.set(key, { last: r, reported: 0 });
      if (this.#watch.size > this.#max) this.#watch.delete(this.#watch.keys().next().value as string);
      if (!before || before.tsNs >= r.tsNs) return r;
      return { ...r, suppressed: Math.max(0, r.suppressed - before.n) };
    });
  }

  /** Keys watched now. */
  get size(): number {
    return this.#watch.size;
  }

  /**
   * Trailing records for the watched keys whose last record is a second old
   * or more and whose fold holds denials not reported yet. lookup: the
   * kernel's fold of a key (sm_pol_seen); nowNs: the kernel's monotonic clock.
   */
  sweep(lookup: (k: DenialKey) => Pick<PolicySeen, 'lastNs' | 'suppressed'> | undefined, nowNs: bigint): PolicyEventRecord[] {
    const out: PolicyEventRecord[] = [];
    for (const [key, f] of this.#watch) {
      const age = nowNs - f.last.tsNs;
      if (age < EVERY_NS) break; // the rest are younger
      const s = lookup(f.last);
      // the fold belongs to the record we have (else a newer one is still on its way through the ring)
      if (s && s.lastNs === f.last.tsNs && s.suppressed > f.reported) {
        const n = s.suppressed - f.reported;
        f.reported = s.suppressed;
        this.#reported.set(key, { tsNs: f.last.tsNs, n: f.reported });
        if (this.#reported.size > this.#max) this.#reported.delete(this.#reported.keys().next().value as string);
        // a record stands for 1 + suppressed denials
        out.push({ ...f.last, tsNs: nowNs, suppressed: n - 1 });
      }
      if (age >= WATCH_NS) this.#watch.delete(key);
    }
    return out;
  }
}
