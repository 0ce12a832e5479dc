/**
 * The cache owns state: the current snapshot per node (and a default for
 * nodes without one of their own), and tells watchers when it changes.
 * Notifications are debounced, so a burst of updates becomes one push of
 * the last consistent snapshot.
 */
import type { Snapshot } from './snapshot.js';

export interface SnapshotCacheOptions {
  /** Quiet time before watchers hear of a change. Default: 10 ms. */
  debounceMs?: number;
}

type Watcher = (snapshot: Snapshot) => void;

/** One snapshot the cache holds: a node's own (nodeId) or the default (nodeId null). */
export interface CacheEntry {
  nodeId: string | null;
  snapshot: Snapshot;
  /** when it was set, ISO 8601 */
  setAt: string;
}

export class SnapshotCache {
  readonly debounceMs: number;
  #byNode = new Map<string, CacheEntry>();
  #fallback: CacheEntry | undefined;
  #watchers = new Map<string, Set<Watcher>>();
  #pending = new Set<string | null>();
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: SnapshotCacheOptions = {}) {
    const d = opts.debounceMs ?? 10;
    if (!Number.isFinite(d) || d < 0) throw new RangeError(`debounceMs must be ≥ 0, got ${opts.debounceMs}`);
    this.debounceMs = d;
  }

  /** Sets the snapshot of one node. */
  setSnapshot(nodeId: string, snapshot: Snapshot): void {
    this.#byNode.set(nodeId, { nodeId, snapshot, setAt: new Date().toISOString() });
    this.#schedule(nodeId);
  }

  /** Sets the snapshot served to every node that has none of its own. */
  setDefaultSnapshot(snapshot: Snapshot): void {
    this.#fallback = { nodeId: null, snapshot, setAt: new Date().toISOString() };
    this.#schedule(null);
  }

  /** The snapshot a node gets now, if any. */
  snapshotFor(nodeId: string): Snapshot | undefined {
    return this.entryFor(nodeId)?.snapshot;
  }

  /** The entry a node is served from now: its own, else the default. */
  entryFor(nodeId: string): CacheEntry | undefined {
    return this.#byNode.get(nodeId) ?? this.#fallback;
  }

  /** Every snapshot held: the default first, then nodes by id. */
  entries(): CacheEntry[] {
    const own = [...this.#byNode.values()].sort((a, b) => (a.nodeId! < b.nodeId! ? -1 : 1));
    return this.#fallback ? [this.#fallback, ...own] : own;
  }

  /** Calls fn with the node's snapshot after each change; returns the cancel function. */
  watch(nodeId: string, fn: Watcher): () => void {
    let set = this.#watchers.get(nodeId);
    if (!set) this.#watchers.set(nodeId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.#watchers.delete(nodeId);
    };
  }

  #schedule(nodeId: string | null): void {
    this.#pending.add(nodeId);
    if (this.#timer) return;
    this.#timer = setTimeout(() => this.#flush(), this.debounceMs);
  }

  #flush(): void {
    this.#timer = undefined;
    const all = this.#pending.has(null);
    const nodes = all ? [...this.#watchers.keys()] : [...this.#pending].filter((n): n is string => n !== null);
    this.#pending.clear();
    for (const node of nodes) {
      const snap = this.snapshotFor(node);
      if (!snap) continue;
      for (const fn of [...(this.#watchers.get(node) ?? [])]) fn(snap);
    }
  }

  /** Cancels a pending notification (for shutdown). */
  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending.clear();
  }
}
