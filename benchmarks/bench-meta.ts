/** What every benchmark result records about where it ran. */
import { execFileSync } from 'node:child_process';
import { cpus, release } from 'node:os';
import { repoRoot } from '../mesh-agent/paths.js';

/** The checkout's commit, or "unknown". */
export function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot() }).toString().trim();
  } catch {
    return 'unknown';
  }
}

/** Whether tracked files differ from the commit (results of uncommitted code say so). */
export function gitDirty(): boolean {
  try {
    return execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot() }).toString().trim() !== '';
  } catch {
    return false;
  }
}

export function machine(): { kernel: string; cpu: string; cores: number } {
  return { kernel: release(), cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length };
}
