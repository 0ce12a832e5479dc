/**
 * The embedded default cluster source: a directory of Kubernetes YAML files
 * (*.yaml, *.yml, read recursively), watched. Every change re-reads the
 * directory; when every file parses, the store gets the new set at once;
 * when any file has a problem, the store keeps the last good set and the
 * problems are reported (status, the `errors` callback), naming the file,
 * document, object and field.
 */
import { type FSWatcher, existsSync, readFileSync, readdirSync, statSync, watch } from 'node:fs';
import { join, relative } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import type { ClusterStore } from './cluster-store.js';
import { parseManifests } from './manifest-parser.js';

export interface ManifestSourceOptions {
  /** The directory. Required. */
  dir: string;
  store: ClusterStore;
  /** Quiet time after a change before the directory is read again. Default: 100 ms. */
  debounceMs?: number;
  /** Called after each read with its outcome. */
  onLoad?: (result: ManifestLoad) => void;
}

/** The outcome of one read of the directory. */
export interface ManifestLoad {
  at: string;
  ok: boolean;
  /** objects now in the store from this source (the last good set when !ok) */
  objects: number;
  errors: string[];
  ignored: string[];
  files: number;
}

export const SOURCE_ID = 'manifests';

/** Whether a changed path may be (or hold) a manifest: *.yaml, *.yml, a directory (no extension), or unknown. */
export function mayHoldManifests(name: string | Buffer | null | undefined): boolean {
  if (name === null || name === undefined) return true;
  const base = String(name).split('/').pop() ?? '';
  return /\.ya?ml$/i.test(base) || !/\.[^.]+$/.test(base);
}

/** The YAML files under dir (recursively, dot entries skipped), sorted. */
export function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(entry.name)) out.push(p);
  }
  return out.sort();
}

export class ManifestSource {
  readonly dir: string;
  readonly #store: ClusterStore;
  readonly #debounceMs: number;
  readonly #onLoad: ((r: ManifestLoad) => void) | undefined;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #last: ManifestLoad | undefined;
  #goodObjects = 0;

  constructor(opts: ManifestSourceOptions) {
    this.dir = opts.dir.replace(/\/+$/, '') || '/';
    this.#store = opts.store;
    this.#debounceMs = opts.debounceMs ?? 100;
    this.#onLoad = opts.onLoad;
  }

  /** The last read's outcome. */
  get last(): ManifestLoad | undefined {
    return this.#last;
  }

  /** Reads the directory once and starts watching it. Throws when it is not a directory. */
  start(): ManifestLoad {
    if (!existsSync(this.dir) || !statSync(this.dir).isDirectory()) {
      throw new InvalidArgumentError(`manifest directory ${this.dir} does not exist or is not a directory`);
    }
    const first = this.load();
    // a change to another kind of file (a log, a trace file next to the manifests) reads nothing again
    this.#watcher = watch(this.dir, { recursive: true }, (_event, name) => { if (mayHoldManifests(name)) this.#schedule(); });
    this.#watcher.on('error', () => this.#schedule());
    return first;
  }

  stop(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.load();
    }, this.#debounceMs);
  }

  /** Reads every file now; applies the result when it has no problem. */
  load(): ManifestLoad {
    let files: { file: string; text: string }[] = [];
    const errors: string[] = [];
    try {
      files = yamlFiles(this.dir).flatMap((p) => {
        try {
          return [{ file: relative(process.cwd(), p) || p, text: readFileSync(p, 'utf8') }];
        } catch (err) {
          errors.push(`${p}: cannot read: ${(err as Error).message}`);
          return [];
        }
      });
    } catch (err) {
      errors.push(`${this.dir}: cannot read: ${(err as Error).message}`);
    }
    const parsed = parseManifests(files);
    errors.push(...parsed.errors);
    const ok = errors.length === 0;
    if (ok) {
      this.#store.replace(SOURCE_ID, parsed.objects);
      this.#goodObjects = parsed.objects.length;
    }
    this.#last = { at: new Date().toISOString(), ok, objects: this.#goodObjects, errors, ignored: parsed.ignored, files: files.length };
    this.#onLoad?.(this.#last);
    return this.#last;
  }
}
