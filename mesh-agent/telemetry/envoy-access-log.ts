/**
 * An Envoy node proxy's access log, streamed to the agent over gRPC
 * (envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs, the
 * listeners' http_grpc access logger: l7-resources) on a unix socket. Every
 * request Envoy finishes, traced or not, is read into the record mesh-proxy
 * sends for it, untraced (Envoy's spans carry the traces: envoy-spans.ts),
 * for the agent's flows, metrics and observe. Unlike the spans, an entry
 * has the caller's port and, for an RBAC denial, the policy that denied it
 * (in its response code details).
 */
import type * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import type { ReceivedRecord } from '../../mesh-proxy/agent-channel.js';
import { serveOnUnixSocket, stopUnixServer } from '../../telemetry/grpc-unix-server.js';
import { unmapped } from './envoy-spans.js';
import { envoyRoot } from '../../xds/envoy-protos.js';
import { ENVOY_ROUTE_TAG } from '../../xds/l7-resources.js';

/** StreamAccessLogs, as gRPC names it on the wire */
export const STREAM_ACCESS_LOGS_PATH = '/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs';
const MESSAGE = 'envoy.service.accesslog.v3.StreamAccessLogsMessage';

interface PbLong { toString(): string }
interface PbAddress { socket_address?: { address?: string; port_value?: number } }
interface PbEntry {
  common_properties?: {
    downstream_remote_address?: PbAddress; downstream_direct_remote_address?: PbAddress; downstream_local_address?: PbAddress; upstream_remote_address?: PbAddress;
    start_time?: { seconds?: PbLong | number; nanos?: number }; duration?: { seconds?: PbLong | number; nanos?: number };
    time_to_last_downstream_tx_byte?: { seconds?: PbLong | number; nanos?: number };
    route_name?: string; upstream_request_attempt_count?: number; custom_tags?: Record<string, string>;
  };
  request?: { request_method?: number; authority?: string; path?: string; request_headers?: Record<string, string> };
  response?: { response_code?: { value?: number }; response_code_details?: string };
}

let methodNames: Record<number, string> | undefined;

/** config.core.v3.RequestMethod's names by number; a method Envoy has no name for is METHOD_UNSPECIFIED (0): "_OTHER", as the HTTP conventions say. */
function methodName(n: number | undefined): string {
  methodNames ??= Object.fromEntries(Object.entries(envoyRoot().lookupEnum('envoy.config.core.v3.RequestMethod').values).map(([k, v]) => [v, k]));
  return (n ? methodNames[n] : undefined) ?? '_OTHER';
}

/** The route template tag (ENVOY_ROUTE_TAG) as Envoy writes a metadata value: the string, or its JSON. */
function tagString(v: string | undefined): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (v.startsWith('"')) {
    try {
      const s: unknown = JSON.parse(v);
      return typeof s === 'string' ? s : undefined;
    } catch {
      return undefined;
    }
  }
  return v;
}

/** A sampled traceparent's trace id ("00-<32 hex>-<16 hex>-<flags>"), else ''. */
function sampledTraceId(tp: string | undefined): string {
  if (tp === undefined || tp.length < 55) return '';
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})/.exec(tp);
  return m && (parseInt(m[2]!, 16) & 1) === 1 && m[1] !== '0'.repeat(32) ? m[1]! : '';
}

function address(a: PbAddress | undefined): [string, number] | undefined {
  const s = a?.socket_address;
  if (!s?.address) return undefined;
  return [unmapped(s.address), s.port_value ?? 0];
}

const ms = (d: { seconds?: PbLong | number; nanos?: number } | undefined): number | undefined =>
  (d ? Number(d.seconds ?? 0) * 1000 + (d.nanos ?? 0) / 1e6 : undefined);

const DENIED = 'rbac_access_denied_matched_policy[';


/**
 * An access log entry's record (untraced; a sampled trace's id is kept for
 * the flow). The route's template from the entry's tag, else
 * routeTemplateOf(its name) (the agent's own routes). Throws naming the
 * field when the entry lacks what a record needs.
 */
export function entryRecord(e: PbEntry, routeTemplateOf: (routeName: string) => string | undefined): ReceivedRecord {
  const cp = e.common_properties;
  // the peer itself: downstream_remote_address can come from X-Forwarded-For, which any caller can write
  const caller = address(cp?.downstream_direct_remote_address) ?? address(cp?.downstream_remote_address);
  if (!caller) throw new Error('common_properties.downstream_direct_remote_address: missing');
  const local = address(cp?.downstream_local_address);
  if (!local) throw new Error('common_properties.downstream_local_address: missing');
  const startMs = ms(cp?.start_time);
  if (startMs === undefined || !(startMs > 0)) throw new Error('common_properties.start_time: missing');
  const method = methodName(e.request?.request_method);
  const durationMs = ms(cp?.duration) ?? ms(cp?.time_to_last_downstream_tx_byte) ?? 0;
  const up = address(cp?.upstream_remote_address);
  const path = e.request?.path || '/';
  const q = path.search(/[?#]/);
  const details = e.response?.response_code_details ?? '';
  const deniedBy = details.startsWith(DENIED) && details.endsWith(']') ? details.slice(DENIED.length, -1) : undefined;
  // a denied request has no route, as with mesh-proxy (its RBAC runs before routing; Envoy's after)
  const route = deniedBy !== undefined ? undefined : tagString(cp?.custom_tags?.[ENVOY_ROUTE_TAG]) ?? (cp?.route_name ? routeTemplateOf(cp.route_name) : undefined);
  // every field set, absent ones undefined, in the order decodeRecords makes them: one hidden class for every record
  return {
    endMs: Math.round(startMs + durationMs), durationMs: Math.round(durationMs * 1000) / 1000, method, path: q < 0 ? path : path.slice(0, q), route,
    status: e.response?.response_code?.value ?? 0, caller: caller[0], callerPort: caller[1], local: local[0], localPort: local[1],
    upstream: up ? `${up[0]}:${up[1]}` : undefined, host: e.request?.authority ?? '',
    attempts: cp?.upstream_request_attempt_count || (up ? 1 : 0), traceId: sampledTraceId(e.request?.request_headers?.traceparent), spanId: '', sampled: false, trace: undefined,
    deniedBy,
  };
}

export interface EnvoyAccessLogStats {
  streams: number;
  messages: number;
  entries: number;
  /** entries that were not a request's (named in the agent's log) */
  refused: number;
  /** messages that were not StreamAccessLogsMessages */
  invalid: number;
}

export interface EnvoyAccessLogReceiverOptions {
  socketPath: string;
  /** the records of one message's entries, and why others were refused */
  onRecords: (records: ReceivedRecord[], refused: string[]) => void;
  routeTemplateOf: (routeName: string) => string | undefined;
}

export class EnvoyAccessLogReceiver {
  readonly #o: EnvoyAccessLogReceiverOptions;
  #server: grpc.Server | undefined;
  #type: protobuf.Type | undefined;
  /** the streams open (Envoy keeps one open for good), each with its answer */
  readonly #open = new Set<() => void>();
  readonly stats: EnvoyAccessLogStats = { streams: 0, messages: 0, entries: 0, refused: 0, invalid: 0 };
  /** the last refusal's reason */
  lastRefusal: string | undefined;

  constructor(opts: EnvoyAccessLogReceiverOptions) {
    if (!opts.socketPath.startsWith('/')) throw new RangeError(`the access log socket must be an absolute path, got ${opts.socketPath}`);
    this.#o = opts;
  }

  get socketPath(): string {
    return this.#o.socketPath;
  }

  /** One StreamAccessLogsMessage's records (and refusals); throws when the bytes are not one. */
  read(bytes: Buffer): { records: ReceivedRecord[]; refused: string[] } {
    this.#type ??= envoyRoot().lookupType(MESSAGE);
    const m = this.#type.decode(bytes) as unknown as { http_logs?: { log_entry?: PbEntry[] } };
    const records: ReceivedRecord[] = [];
    const refused: string[] = [];
    (m.http_logs?.log_entry ?? []).forEach((e, i) => {
      try {
        records.push(entryRecord(e, this.#o.routeTemplateOf));
      } catch (err) {
        refused.push(`http_logs.log_entry[${i}].${(err as Error).message}`);
      }
    });
    return { records, refused };
  }

  async start(): Promise<void> {
    const path = this.#o.socketPath;
    this.#server = await serveOnUnixSocket(path, {
      path: STREAM_ACCESS_LOGS_PATH, requestStream: true,
      handler: (call: grpc.ServerReadableStream<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        this.stats.streams++;
        call.on('data', (bytes: Buffer) => {
          this.stats.messages++;
          let r: { records: ReceivedRecord[]; refused: string[] };
          try {
            r = this.read(bytes);
          } catch (err) {
            this.stats.invalid++;
            this.lastRefusal = `${path}: not a StreamAccessLogsMessage: ${(err as Error).message}`;
            return;
          }
          this.stats.entries += r.records.length + r.refused.length;
          this.stats.refused += r.refused.length;
          if (r.refused.length > 0) this.lastRefusal = r.refused[0];
          this.#o.onRecords(r.records, r.refused);
        });
        let answered = false;
        const answer = () => {
          if (answered) return;
          answered = true;
          this.#open.delete(answer);
          done(null, Buffer.alloc(0)); // StreamAccessLogsResponse has no fields
        };
        this.#open.add(answer);
        call.on('end', answer);
        call.on('error', () => { this.#open.delete(answer); }); // Envoy went away: nothing to answer
        call.on('cancelled', () => { this.#open.delete(answer); });
      },
    });
  }

  /** Stops (streams still open are answered, so the sender ends them; cut after 2 s) and removes the socket. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const answer of [...this.#open]) answer();
    await stopUnixServer(server, this.#o.socketPath);
  }
}
