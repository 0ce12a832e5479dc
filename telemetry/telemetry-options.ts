/**
 * Where and how spans are exported, read once from the standard
 * OpenTelemetry environment variables (OTEL_EXPORTER_OTLP_*, OTEL_TRACES_*,
 * OTEL_BSP_*) with command-line settings taking precedence, validated up
 * front and frozen. A bad value is an error naming the variable or flag.
 */
import { InvalidArgumentError } from '../mesh-agent/errors.js';

export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';

export interface TelemetryOptions {
  /** false when OTEL_SDK_DISABLED=true or --tracing off; default true */
  readonly enabled: boolean;
  /**
   * Where spans go: an OTLP endpoint, or (the embedded default, when no
   * endpoint is set) a file of OTLP/JSON lines.
   */
  readonly target: 'otlp' | 'file';
  /** the full traces URL (…/v1/traces for HTTP; host:port URL for gRPC); set when target is otlp */
  readonly endpoint?: string;
  /** default http/protobuf (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL) */
  readonly protocol: OtlpProtocol;
  /** extra request headers / gRPC metadata (OTEL_EXPORTER_OTLP_[TRACES_]HEADERS "k=v,k2=v2") */
  readonly headers: Readonly<Record<string, string>>;
  /** one export's deadline, retries included; default 10000 (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT) */
  readonly timeoutMs: number;
  /** default none (OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION) */
  readonly compression: 'gzip' | 'none';
  /** the ratio of new traces sampled (parent-based: a caller's decision is kept); default 1 */
  readonly sampleRatio: number;
  /** spans waiting for export; more are dropped and counted; default 2048 (OTEL_BSP_MAX_QUEUE_SIZE) */
  readonly maxQueueSize: number;
  /** default 512 (OTEL_BSP_MAX_EXPORT_BATCH_SIZE) */
  readonly maxExportBatchSize: number;
  /** how long a partial batch waits; default 1000 (OTEL_BSP_SCHEDULE_DELAY) */
  readonly scheduledDelayMs: number;
  /** how long shutdown may spend flushing; default 5000 */
  readonly shutdownTimeoutMs: number;
  /** the OTLP/JSON lines file (target file); default /var/log/sockmesh/traces.otlp.jsonl */
  readonly file: string;
  /** the file is rotated to FILE.1 past this size; default 64 MiB */
  readonly fileMaxBytes: number;
}

export const DEFAULT_TRACE_FILE = '/var/log/sockmesh/traces.otlp.jsonl';

/** Command-line settings; each one overrides its environment variable. */
export interface TelemetryFlags {
  tracing?: string;
  otlpEndpoint?: string;
  otlpProtocol?: string;
  traceFile?: string;
  sampleRatio?: string;
}

type Env = Readonly<Record<string, string | undefined>>;

function pick(env: Env, ...names: string[]): [string, string] | undefined {
  for (const n of names) {
    const v = env[n]?.trim();
    if (v) return [n, v];
  }
  return undefined;
}

function num(env: Env, names: string[], dflt: number, check: (n: number) => boolean, what: string): number {
  const got = pick(env, ...names);
  if (!got) return dflt;
  const n = Number(got[1]);
  if (!Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`${got[0]}=${JSON.stringify(got[1])}: must be ${what}`);
  return n;
}

function headersOf(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS']) {
    const v = env[name]?.trim();
    if (!v) continue;
    for (const part of v.split(',')) {
      if (!part.trim()) continue;
      const eq = part.indexOf('=');
      if (eq <= 0) throw new InvalidArgumentError(`${name}: ${JSON.stringify(part.trim())} is not key=value`, 'write headers as k1=v1,k2=v2 (values URL-encoded)');
      try {
        out[decodeURIComponent(part.slice(0, eq).trim()).toLowerCase()] = decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        throw new InvalidArgumentError(`${name}: ${JSON.stringify(part.trim())} is not URL-encoded`);
      }
    }
  }
  return out;
}

function samplerRatio(env: Env, flag: string | undefined): number {
  if (flag !== undefined) {
    const n = Number(flag);
    if (flag.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`--sample-ratio ${JSON.stringify(flag)}: must be a number from 0 to 1`);
    return n;
  }
  const sampler = env.OTEL_TRACES_SAMPLER?.trim();
  if (!sampler) return 1;
  switch (sampler) {
    case 'always_on': case 'parentbased_always_on': return 1;
    case 'always_off': case 'parentbased_always_off': return 0;
    case 'traceidratio': case 'parentbased_traceidratio':
      return num(env, ['OTEL_TRACES_SAMPLER_ARG'], 1, (n) => n >= 0 && n <= 1, 'a number from 0 to 1');
    default:
      throw new InvalidArgumentError(`OTEL_TRACES_SAMPLER=${JSON.stringify(sampler)}: sockmesh samples parent-based`, 'use parentbased_traceidratio (with OTEL_TRACES_SAMPLER_ARG), parentbased_always_on or parentbased_always_off');
  }
}

function protocolOf(v: [string, string] | undefined): OtlpProtocol {
  if (!v) return 'http/protobuf';
  if (v[1] === 'http/protobuf' || v[1] === 'http/json' || v[1] === 'grpc') return v[1];
  throw new InvalidArgumentError(`${v[0]} ${JSON.stringify(v[1])}: not an OTLP protocol`, 'use http/protobuf (the default), http/json or grpc');
}

function endpointOf(env: Env, flag: string | undefined, protocol: OtlpProtocol): string | undefined {
  let name = '--otlp-endpoint';
  let url = flag?.trim() || undefined;
  let signalSpecific = false;
  if (!url) {
    const s = pick(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
    if (s) { [name, url] = s; signalSpecific = true; }
  }
  if (!url) {
    const g = pick(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
    if (g) [name, url] = g;
  }
  if (!url) return undefined;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new InvalidArgumentError(`${name} ${JSON.stringify(url)}: not a URL`, 'e.g. http://collector:4318 (HTTP) or http://collector:4317 (gRPC)');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InvalidArgumentError(`${name} ${JSON.stringify(url)}: the scheme must be http or https`);
  if (protocol === 'grpc' || signalSpecific) return url;
  // the base endpoint gets the signal's path, as the specification says
  return `${url.replace(/\/+$/, '')}/v1/traces`;
}

/** Reads the options from the environment and the command line (flags win). */
export function telemetryOptions(env: Env = process.env, flags: TelemetryFlags = {}): TelemetryOptions {
  let enabled = env.OTEL_SDK_DISABLED?.trim().toLowerCase() !== 'true';
  if (flags.tracing !== undefined) {
    if (flags.tracing !== 'on' && flags.tracing !== 'off') throw new InvalidArgumentError(`--tracing ${JSON.stringify(flags.tracing)}: must be on or off`);
    enabled = flags.tracing === 'on';
  }
  const protocol = protocolOf(flags.otlpProtocol !== undefined ? ['--otlp-protocol', flags.otlpProtocol] : pick(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'));
  const endpoint = endpointOf(env, flags.otlpEndpoint, protocol);
  const compressionRaw = pick(env, 'OTEL_EXPORTER_OTLP_TRACES_COMPRESSION', 'OTEL_EXPORTER_OTLP_COMPRESSION');
  if (compressionRaw && compressionRaw[1] !== 'gzip' && compressionRaw[1] !== 'none') throw new InvalidArgumentError(`${compressionRaw[0]}=${JSON.stringify(compressionRaw[1])}: must be gzip or none`);
  const maxQueueSize = num(env, ['OTEL_BSP_MAX_QUEUE_SIZE'], 2048, (n) => Number.isInteger(n) && n > 0, 'a positive integer');
  const maxExportBatchSize = num(env, ['OTEL_BSP_MAX_EXPORT_BATCH_SIZE'], 512, (n) => Number.isInteger(n) && n > 0, 'a positive integer');
  const opts: TelemetryOptions = {
    enabled,
    target: endpoint ? 'otlp' : 'file',
    ...(endpoint && { endpoint }),
    protocol,
    headers: Object.freeze(headersOf(env)),
    timeoutMs: num(env, ['OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT'], 10_000, (n) => n > 0, 'a positive number of milliseconds'),
    compression: (compressionRaw?.[1] ?? 'none') as 'gzip' | 'none',
    sampleRatio: samplerRatio(env, flags.sampleRatio),
    maxQueueSize,
    maxExportBatchSize: Math.min(maxExportBatchSize, maxQueueSize),
    scheduledDelayMs: num(env, ['OTEL_BSP_SCHEDULE_DELAY'], 1000, (n) => n >= 0, 'a number of milliseconds'),
    shutdownTimeoutMs: num(env, ['SOCKMESH_TRACES_SHUTDOWN_TIMEOUT'], 5000, (n) => n >= 0, 'a number of milliseconds'),
    file: flags.traceFile?.trim() || env.SOCKMESH_TRACES_FILE?.trim() || DEFAULT_TRACE_FILE,
    fileMaxBytes: num(env, ['SOCKMESH_TRACES_FILE_MAX_BYTES'], 64 * 1024 * 1024, (n) => Number.isInteger(n) && n >= 4096, 'an integer of at least 4096'),
  };
  return Object.freeze(opts);
}
