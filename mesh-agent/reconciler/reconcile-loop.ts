/**
 * The control loop: on every store change (debounced), compile the cluster
 * into the desired datapath state and reconcile the maps. One pass at a
 * time; a change during a pass triggers another. A failed pass is recorded
 * and retried; the maps keep what the last good pass wrote.
 */
import type { ClusterStore } from '../cluster/cluster-store.js';
import { type DesiredState, compile } from '../compiler/compile.js';
import type { IdentityAllocator } from '../compiler/identities.js';
import type { VipAllocator } from '../compiler/vips.js';
import type { MapReconciler, ReconcileStats } from './map-reconciler.js';

export interface ReconcileLoopOptions {
  store: ClusterStore;
  reconciler: MapReconciler;
  nodeName: string;
  mode: 'local' | 'kubernetes';
  identities: IdentityAllocator;
  vips: VipAllocator;
  /** pod key → cgroup id, asked at each pass */
  cgroups: () => ReadonlyMap<string, bigint>;
  /** called after each good pass (hosts files, allocation saving, …) */
  onPass?: (desired: DesiredState) => void;
  /** Default: 10 ms. */
  debounceMs?: number;
  /** Retry delay after a failed pass. Default: 1000 ms. */
  retryMs?: number;
}

export interface PassResult {
  at: string;
  revision: number;
  compileMs: number;
  reconcileMs: number;
  stats?: ReconcileStats;
  error?: string;
}

export class ReconcileLoop {
  readonly #o: Required<Omit<ReconcileLoopOptions, 'onPass'>> & Pick<ReconcileLoopOptions, 'onPass'>;
  #cancel: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #desired: DesiredState | undefined;
  #last: PassResult | undefined;
  #passes = 0;
  #failures = 0;
  #writes = 0;
  #deletes = 0;
  #stopped = true;

  constructor(opts: ReconcileLoopOptions) {
    this.#o = { debounceMs: 10, retryMs: 1000, ...opts };
  }

  get desired(): DesiredState | undefined {
    return this.#desired;
  }

  get last(): PassResult | undefined {
    return this.#last;
  }

  /** Passes run and failed, and map entries written and deleted, since the loop was made. */
  get counts(): { passes: number; failures: number; writes: number; deletes: number } {
    return { passes: this.#passes, failures: this.#failures, writes: this.#writes, deletes: this.#deletes };
  }

  /** Runs one pass now, then follows the store. */
  start(): PassResult {
    this.#stopped = false;
    this.#cancel = this.#o.store.onChange(() => this.#schedule(this.#o.debounceMs));
    return this.pass();
  }

  stop(): void {
    this.#stopped = true;
    this.#cancel?.();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(ms: number): void {
    if (this.#stopped || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.pass();
    }, ms);
  }

  /** Compiles and reconciles now. */
  pass(): PassResult {
    const revision = this.#o.store.revision;
    const t0 = performance.now();
    let t1 = t0;
    const result: PassResult = { at: new Date().toISOString(), revision, compileMs: 0, reconcileMs: 0 };
    try {
      const desired = compile({
        namespaces: this.#o.store.namespaces(), pods: this.#o.store.pods(), services: this.#o.store.services(),
        nodeName: this.#o.nodeName, mode: this.#o.mode, cgroups: this.#o.cgroups(), identities: this.#o.identities, vips: this.#o.vips,
      });
      t1 = performance.now();
      result.compileMs = t1 - t0;
      result.stats = this.#o.reconciler.reconcile(desired);
      for (const n of Object.values(result.stats.writes)) this.#writes += n;
      for (const n of Object.values(result.stats.deletes)) this.#deletes += n;
      result.reconcileMs = performance.now() - t1;
      this.#desired = desired;
      this.#o.onPass?.(desired);
      this.#passes++;
    } catch (err) {
      result.error = (err as Error).message;
      result.reconcileMs = performance.now() - t1;
      this.#failures++;
      this.#schedule(this.#o.retryMs);
    }
    this.#last = result;
    return result;
  }
}
