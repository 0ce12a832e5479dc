/** Where sockmesh's own files are, found from this module's location. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The checkout (or installed package) root: the nearest package.json named sockmesh. */
export function repoRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'sockmesh') {
      cached = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`no sockmesh package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The compiled datapath object. */
export function defaultObjectPath(): string {
  return join(repoRoot(), 'bpf', 'build', 'sockmesh.bpf.o');
}

/** Default bpffs directory for maps and links. */
export const DEFAULT_PIN_DIR = '/sys/fs/bpf/sockmesh';

/** Where the agent records what it attached (bpffs holds only BPF objects). */
export const STATE_DIR = '/run/sockmesh';

/** A C helper built by `make` (tools/build/smtcp, benchmarks/build/rrbench). */
export function helperBinary(name: 'smtcp' | 'smprobe' | 'rrbench' | 'httpload'): string {
  const dir = name === 'smtcp' || name === 'smprobe' ? 'tools' : 'benchmarks';
  return join(repoRoot(), dir, 'build', name);
}
