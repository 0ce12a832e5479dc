/**
 * The control loop: on every store change (debounced), compile what changed
 * into the desired datapath state and reconcile those map entries. The
 * first pass (and a periodic resync, which re-reads the maps from the
 * kernel) compiles and compares everything. A failed pass is recorded and
 * retried as a full one; the maps keep what the last good pass wrote.
 */
import type { ClusterStore } from '../cluster/cluster-store.js';
import type { DesiredState } from '../compiler/compile.js';
import { IncrementalCompiler, type IncrementalCompilerOptions } from '../compiler/incremental-compiler.js';
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
  /** pod key → cgroup id, asked at each pass (and then only for the pods being compiled) */
  cgroups: () => Pick<ReadonlyMap<string, bigint>, 'get'>;
  /** the node proxy, for L7 services (see IncrementalCompilerOptions) */
  l7?: IncrementalCompilerOptions['l7'];
  /**
   * called after each good pass (hosts files, allocation saving, the node
   * proxy's configuration, …), with whether services (or the routes
   * attached to them) may have changed
   */
  onPass?: (desired: DesiredState, servicesChanged: boolean, endpointsChanged: boolean) => void;
  /** Wraps every pass (the agent traces and times them). Default: none. */
  wrapPass?: (run: () => PassResult) => PassResult;
  /** Quiet time after a store change before the pass (changes in it are batched). Default: 1 ms. */
  debounceMs?: number;
  /** Retry delay after a failed pass. Default: 1000 ms. */
  retryMs?: number;
  /** How often the maps are re-read from the kernel and everything compared. Default: 300000 ms (5 min); 0: never. */
  resyncMs?: number;
}

export interface PassResult {
  at: string;
  revision: number;
  /** everything compiled and compared, or only what changed */
  kind: 'full' | 'incremental';
  compileMs: number;
  reconcileMs: number;
  stats?: ReconcileStats;
  error?: string;
}

export class ReconcileLoop {
  readonly #o: Required<Omit<ReconcileLoopOptions, 'onPass' | 'l7' | 'wrapPass'>> & Pick<ReconcileLoopOptions, 'onPass' | 'l7' | 'wrapPass'>;
  #cancel: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  readonly #compiler: IncrementalCompiler;
  /** keys the store reported since the last good pass */
  #touched = new Set<string>();
  #needFull = true;
  #reload = false;
  #desired: DesiredState | undefined;
  #last: PassResult | undefined;
  #passes = 0;
  #failures = 0;
  #writes = 0;
  #deletes = 0;
  #stopped = true;

  constructor(opts: ReconcileLoopOptions) {
    this.#o = { debounceMs: 1, retryMs: 1000, resyncMs: 300_000, ...opts };
    this.#compiler = new IncrementalCompiler({
      nodeName: opts.nodeName, mode: opts.mode, identities: opts.identities, vips: opts.vips, ...(opts.l7 && { l7: opts.l7 }),
    });
  }

  /** The compiler (for what the state does not carry: a service port's own backends). */
  get compiler(): IncrementalCompiler {
    return this.#compiler;
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

  /** Follows the store from now on, and runs the first (full) pass unless told to wait for a pass() call. */
  start(opts: { pass?: boolean } = {}): PassResult | undefined {
    this.#stopped = false;
    this.#cancel = this.#o.store.onChange((change) => {
      for (const k of change.touched) this.#touched.add(k);
      this.#schedule(this.#o.debounceMs);
    });
    if (this.#o.resyncMs > 0) {
      this.#resyncTimer = setInterval(() => {
        this.#needFull = true;
        this.#reload = true;
        this.#schedule(0);
      }, this.#o.resyncMs);
      this.#resyncTimer.unref();
    }
    return opts.pass === false ? undefined : this.pass();
  }

  /**
   * Redoes these store keys ("Pod ns/name") in a pass soon, though the store
   * did not change: what the compiler reads beside the store (a pod's cgroup)
   * did.
   */
  touch(keys: Iterable<string>): void {
    for (const k of keys) this.#touched.add(k);
    this.#schedule(0);
  }

  stop(): void {
    this.#stopped = true;
    this.#cancel?.();
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    this.#timer = undefined;
  }

  #schedule(ms: number): void {
    if (this.#stopped || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.pass();
    }, ms);
  }

  /** Compiles and reconciles now: what changed since the last pass, or everything when due. */
  pass(): PassResult {
    return this.#o.wrapPass ? this.#o.wrapPass(() => this.#passNow()) : this.#passNow();
  }

  #passNow(): PassResult {
    const revision = this.#o.store.revision;
    const full = this.#needFull;
    const t0 = performance.now();
    let t1 = t0;
    const result: PassResult = { at: new Date().toISOString(), revision, kind: full ? 'full' : 'incremental', compileMs: 0, reconcileMs: 0 };
    const touched = this.#touched;
    this.#touched = new Set();
    try {
      const src = {
        namespaces: this.#o.store.namespaces(), pods: this.#o.store.pods(), services: this.#o.store.services(),
        endpointSlices: this.#o.store.endpointSlices(), httpRoutes: this.#o.store.httpRoutes(), cgroups: this.#o.cgroups(),
      };
      const delta = full ? this.#compiler.full(src) : this.#compiler.update(src, touched);
      const desired = this.#compiler.state();
      t1 = performance.now();
      result.compileMs = t1 - t0;
      if (full && this.#reload) this.#o.reconciler.load();
      result.stats = full ? this.#o.reconciler.reconcile(desired) : this.#o.reconciler.apply(desired, delta);
      result.reconcileMs = performance.now() - t1;
      for (const n of Object.values(result.stats.writes)) this.#writes += n;
      for (const n of Object.values(result.stats.deletes)) this.#deletes += n;
      this.#needFull = false;
      this.#reload = false;
      this.#desired = desired;
      this.#o.onPass?.(desired, full || delta.services.size > 0 || [...touched].some((k) => k.startsWith('HTTPRoute ')), full || delta.endpoints.size > 0);
      this.#passes++;
    } catch (err) {
      result.error = (err as Error).message;
      result.reconcileMs = performance.now() - t1;
      this.#failures++;
      // what failed half-way is redone whole, from the maps as the kernel has them
      this.#needFull = true;
      this.#reload = true;
      this.#schedule(this.#o.retryMs);
    }
    this.#last = result;
    return result;
  }
}
