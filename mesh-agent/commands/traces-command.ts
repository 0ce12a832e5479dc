/** mesh-agent traces: recent traces from the agent's trace file, as a waterfall. */
import { DEFAULT_TRACE_FILE } from '../../telemetry/telemetry-options.js';
import { InvalidArgumentError, NotFoundError } from '../errors.js';
import { groupTraces, namespaceName, readTraceFiles, serviceName, traceToJson, type CorruptLine, type Trace } from '../telemetry/trace-file.js';
import { MIN_WIDTH_COLUMNS, renderWaterfall } from '../telemetry/waterfall.js';
import { int, parse, str, type Parsed } from './args.js';

const DEFAULT_LIMIT = 10;
const DEFAULT_WIDTH_COLUMNS = 100;

const HELP = `usage: mesh-agent traces [flags]

Shows recent traces from the file the agent writes its spans to when no
OTLP endpoint is set (OTLP/JSON lines; the rotated FILE.1 is read first).
Each trace gets a header (trace id, root span, start, duration, spans,
services), then one line per span in tree order: the name indented under
its parent ("…" when the parent is not in the file), ns/service, kind,
duration and a bar placed within the trace's time. After the name: "!" for
an error status, "[retry ×2]" for events, "↔ 1 link" for links. Oldest
first, so the most recent trace is printed last.

  --file FILE      the trace file (default $SOCKMESH_TRACES_FILE, else
                   ${DEFAULT_TRACE_FILE})
  --limit N        the N most recent traces, by start time (default ${DEFAULT_LIMIT})
  --trace ID       one trace: its id, or a unique prefix of it
  --service NAME   traces with a span of that service.name
  --namespace NS   traces with a span in that k8s.namespace.name
  --min-ms N       traces lasting at least N milliseconds
  --json           the selected traces as JSON (nanoseconds as strings)
  --width N        columns to fill (default: the terminal's width, else ${DEFAULT_WIDTH_COLUMNS})

A line that cannot be read is skipped and counted on stderr; a line still
being written is ignored.
`;

const FLAGS = {
  file: { type: 'string' },
  limit: { type: 'string' },
  trace: { type: 'string' },
  service: { type: 'string' },
  namespace: { type: 'string' },
  'min-ms': { type: 'string' },
  json: { type: 'boolean' },
  width: { type: 'string' },
} as const;

/** What selects the traces shown; every field is optional but limit. */
interface Selection {
  limit: number;
  trace?: string;
  service?: string;
  namespace?: string;
  minMs?: number;
}

function nonNegative(p: Parsed, name: string): number | undefined {
  const v = str(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`--${name} must be a number ≥ 0, got ${JSON.stringify(v)}`);
  return n;
}

function select(all: readonly Trace[], sel: Selection): Trace[] {
  if (sel.trace !== undefined) {
    const want = sel.trace.toLowerCase();
    const exact = all.filter((t) => t.traceId === want);
    const hits = exact.length > 0 ? exact : all.filter((t) => t.traceId.startsWith(want));
    if (hits.length === 0) throw new NotFoundError(`no trace ${sel.trace} in the trace file`, 'run mesh-agent traces without --trace to list the recent ones');
    if (hits.length > 1) throw new InvalidArgumentError(`--trace ${sel.trace} matches ${hits.length} traces`, 'give more of the id');
    all = hits;
  }
  const minNs = sel.minMs === undefined ? undefined : BigInt(Math.ceil(sel.minMs * 1e6));
  const picked = all.filter((t) =>
    (sel.service === undefined || t.spans.some((s) => serviceName(s) === sel.service)) &&
    (sel.namespace === undefined || t.spans.some((s) => namespaceName(s) === sel.namespace)) &&
    (minNs === undefined || t.endNs - t.startNs >= minNs));
  return picked.slice(-sel.limit); // traces come oldest first
}

function describeCorrupt(corrupt: readonly CorruptLine[]): string {
  const first = corrupt[0]!;
  const n = corrupt.length;
  return `skipped ${n} corrupt line${n === 1 ? '' : 's'} (first: ${first.file} line ${first.line}: ${first.reason})`;
}

export async function traces(argv: string[]): Promise<number> {
  const p = parse(argv, FLAGS, HELP, false);
  if (!p) return 0;
  const file = str(p, 'file') ?? (process.env.SOCKMESH_TRACES_FILE?.trim() || DEFAULT_TRACE_FILE);
  const trace = str(p, 'trace');
  if (trace !== undefined && !/^[0-9a-fA-F]{1,32}$/.test(trace)) throw new InvalidArgumentError(`--trace must be a hex trace id (or a prefix of one), got ${JSON.stringify(trace)}`);
  const service = str(p, 'service');
  const namespace = str(p, 'namespace');
  const minMs = nonNegative(p, 'min-ms');
  const sel: Selection = {
    limit: int(p, 'limit', 1) ?? DEFAULT_LIMIT,
    ...(trace !== undefined && { trace }),
    ...(service !== undefined && { service }),
    ...(namespace !== undefined && { namespace }),
    ...(minMs !== undefined && { minMs }),
  };
  const widthColumns = int(p, 'width', MIN_WIDTH_COLUMNS) ?? Math.max(MIN_WIDTH_COLUMNS, process.stdout.columns || DEFAULT_WIDTH_COLUMNS);

  const contents = await readTraceFiles(file);
  const all = groupTraces(contents.spans);
  const shown = select(all, sel);
  if (p.values.json) {
    process.stdout.write(JSON.stringify(shown.map(traceToJson), null, 2) + '\n');
  } else if (shown.length === 0) {
    const filtered = sel.service !== undefined || sel.namespace !== undefined || sel.minMs !== undefined;
    process.stdout.write(all.length === 0
      ? `no traces in ${contents.files.join(' and ')} yet\n`
      : `none of the ${all.length} traces in ${contents.files.join(' and ')} match${filtered ? ' the filters' : ''}\n`);
  } else {
    const color = process.stdout.isTTY === true && !process.env.NO_COLOR;
    process.stdout.write(renderWaterfall(shown, { widthColumns, color }).join('\n') + '\n');
  }
  if (contents.corrupt.length > 0) process.stderr.write(`mesh-agent: ${describeCorrupt(contents.corrupt)}\n`);
  return 0;
}
