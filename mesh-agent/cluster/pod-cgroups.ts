/**
 * Finds the cgroups of pods the kubelet runs, by pod UID: the kubelet names
 * a pod's cgroup after its UID, as `pod<uid>` (cgroupfs driver:
 * kubepods/burstable/pod1234-…) or `kubepods-…-pod<uid with _>.slice`
 * (systemd driver). The tree is scanned again, at most every rescanMs, when
 * a UID is asked for that the last scan did not find.
 */
import { type Dirent, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const POD_DIR = /pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(\.slice)?$/;

export interface PodCgroupFinderOptions {
  /** the cgroup v2 mount (or a subtree, such as kubepods.slice) */
  root: string;
  /** Default: 2000 ms. */
  rescanMs?: number;
  /** How deep pods may sit under root. Default: 5. */
  maxDepth?: number;
}

export class PodCgroupFinder {
  readonly #root: string;
  readonly #rescanMs: number;
  readonly #maxDepth: number;
  #byUid = new Map<string, bigint>();
  #dirs = new Map<string, string>();
  #scannedAt = -Infinity;

  constructor(opts: PodCgroupFinderOptions) {
    this.#root = opts.root;
    this.#rescanMs = opts.rescanMs ?? 2000;
    this.#maxDepth = opts.maxDepth ?? 5;
  }

  /** The cgroup id of a pod, by UID; undefined when the kubelet has made none (yet). */
  lookup(uid: string): bigint | undefined {
    const id = this.#byUid.get(uid);
    if (id !== undefined) return id;
    if (performance.now() - this.#scannedAt < this.#rescanMs) return undefined;
    this.scan();
    return this.#byUid.get(uid);
  }

  /** The cgroup id of a pod as the last scan found it (no scan). */
  peek(uid: string): bigint | undefined {
    return this.#byUid.get(uid);
  }

  /** The cgroup directory of a pod as the last scan found it. */
  dir(uid: string): string | undefined {
    return this.#dirs.get(uid);
  }

  /** Reads the tree now. */
  scan(): void {
    const found = new Map<string, bigint>();
    const dirs = new Map<string, string>();
    const walk = (dir: string, depth: number) => {
      let entries: Dirent[];
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch {
        return; // gone meanwhile
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const p = join(dir, e.name);
        const m = POD_DIR.exec(e.name);
        if (m) {
          try {
            const uid = m[1]!.replace(/_/g, '-');
            found.set(uid, statSync(p, { bigint: true }).ino);
            dirs.set(uid, p);
          } catch {
            // gone meanwhile
          }
          continue; // containers below a pod are not pods
        }
        if (depth < this.#maxDepth) walk(p, depth + 1);
      }
    };
    walk(this.#root, 1);
    this.#byUid = found;
    this.#dirs = dirs;
    this.#scannedAt = performance.now();
  }
}
