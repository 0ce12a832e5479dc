/** Shared command-line plumbing: parsing with per-command help, and error output. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { InvalidArgumentError, SockmeshError, VerifierRejectedError } from '../errors.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

/** Flags every datapath command takes. */
export const DATAPATH_FLAGS = {
  'pin-dir': { type: 'string' },
  cgroup: { type: 'string' },
  object: { type: 'string' },
} as const satisfies Options;

export const DATAPATH_FLAGS_HELP = `  --pin-dir DIR   bpffs directory of the maps and links (default /sys/fs/bpf/sockmesh)
  --cgroup DIR    cgroup v2 directory the programs attach to (default <cgroup2 mount>/sockmesh)
  --object FILE   compiled datapath (default bpf/build/sockmesh.bpf.o)`;

export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/**
 * Parses argv for one command. Returns undefined after printing help when
 * --help was given; throws InvalidArgumentError naming the flag otherwise.
 */
export function parse(argv: string[], options: Options, help: string, allowPositionals = true): Parsed | undefined {
  let parsed: Parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true }) as Parsed;
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message, 'see --help');
  }
  if (parsed.values.help) {
    process.stdout.write(help.trimEnd() + '\n');
    return undefined;
  }
  return parsed;
}

/** A flag's string value, or undefined. */
export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

/** A whole-number flag, validated. */
export function int(p: Parsed, name: string, min = 0): number | undefined {
  const v = str(p, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) {
    throw new InvalidArgumentError(`--${name} must be a whole number ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return Number(v);
}

/** Prints an error the way every command does; returns the exit code. */
export function reportError(err: unknown): number {
  if (err instanceof SockmeshError) {
    process.stderr.write(`mesh-agent: ${err.message} [${err.code}]\n`);
    if (err instanceof VerifierRejectedError) process.stderr.write(`--- verifier log ---\n${err.verifierLog.trimEnd()}\n--- end ---\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
    return err instanceof InvalidArgumentError ? 2 : 1;
  }
  process.stderr.write(`mesh-agent: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  return 1;
}

/** Renders rows as aligned columns. */
export function table(header: string[], rows: (string | number)[][]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}
