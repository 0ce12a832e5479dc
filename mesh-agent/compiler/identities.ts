/**
 * Numeric identities, one per distinct (namespace, label set), as Cilium
 * allocates them. Stable while the label set exists; after an agent restart
 * the allocator is seeded from what the pinned maps say each pod address
 * had, so running pods keep their numbers. Ids below FIRST_IDENTITY are
 * reserved for the policy layer (host, world, …).
 */
import type { Labels } from '../cluster/model.js';

export const FIRST_IDENTITY = 256;
/** 2^24: what fits a policy key with room for flags. */
export const MAX_IDENTITY = 16_777_215;

/** The allocation key of a label set: namespace, then labels sorted by key. */
export function identityKey(namespace: string, labels: Labels): string {
  return [namespace, ...Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`)].join('\0');
}

export class IdentityAllocator {
  /** bumped by every change (to know when to save) */
  revision = 0;
  #byKey = new Map<string, number>();
  #used = new Set<number>();
  #next = FIRST_IDENTITY;

  /** Claims an id for a key (from before a restart); ignored when either is taken. */
  seed(key: string, id: number): void {
    if (id < FIRST_IDENTITY || id > MAX_IDENTITY || this.#byKey.has(key) || this.#used.has(id)) return;
    this.#byKey.set(key, id);
    this.revision++;
    this.#used.add(id);
  }

  /** The id of a key, allocating one if needed. */
  idFor(key: string): number {
    let id = this.#byKey.get(key);
    if (id !== undefined) return id;
    while (this.#used.has(this.#next)) this.#next = this.#next >= MAX_IDENTITY ? FIRST_IDENTITY : this.#next + 1;
    if (this.#used.size >= MAX_IDENTITY - FIRST_IDENTITY + 1) throw new RangeError('no identity left');
    id = this.#next;
    this.#byKey.set(key, id);
    this.revision++;
    this.#used.add(id);
    return id;
  }

  /** Frees one key's id. */
  release(key: string): void {
    const id = this.#byKey.get(key);
    if (id === undefined) return;
    this.#byKey.delete(key);
    this.revision++;
    this.#used.delete(id);
  }

  /** Frees the ids of every key not in `live`. */
  retain(live: ReadonlySet<string>): void {
    for (const [key, id] of this.#byKey) {
      if (!live.has(key)) {
        this.#byKey.delete(key);
    this.revision++;
        this.#used.delete(id);
      }
    }
  }

  get size(): number {
    return this.#byKey.size;
  }

  /** key → id, for saving. */
  entries(): [string, number][] {
    return [...this.#byKey].sort(([a], [b]) => (a < b ? -1 : 1));
  }
}
