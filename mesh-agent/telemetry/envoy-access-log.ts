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
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import type { ReceivedRecord } from '../../mesh-proxy/agent-channel.js';
import { envoyRoot } from '../../xds/envoy-protos.js';

/** StreamAccessLogs, as gRPC names it on the wire */
export const STREAM_ACCESS_LOGS_PATH = '/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs';
const MESSAGE = 'envoy.service.accesslog.v3.StreamAccessLogsMessage';

interface PbLong { toString(): string }
interface PbAddress { socket_address?: { address?: string; port_value?: number } }
interface PbEntry {
  common_properties?: {
    downstream_remote_address?: PbAddress; downstream_local_address?: PbAddress; upstream_remote_address?: PbAddress;
    start_time?: { seconds?: PbLong | number; nanos?: number }; duration?: { seconds?: PbLong | number; nanos?: number };
    time_to_last_downstream_tx_byte?: { seconds?: PbLong | number; nanos?: number };
    route_name?: string; upstream_request_attempt_count?: number;
  };
  request?: { request_method?: number; authority?: string; path?: string };
  response?: { response_code?: { value?: number }; response_code_details?: string };
}

let methodNames: Record<number, string> | undefined;

/** config.core.v3.RequestMethod's names by number. */
function methodName(n: number | undefined): string | undefined {
  methodNames ??= Object.fromEntries(Object.entries(envoyRoot().lookupEnum('envoy.config.core.v3.RequestMethod').values).map(([k, v]) => [v, k]));
  return n === undefined || n === 0 ? undefined : methodNames[n];
}

function address(a: PbAddress | undefined): [string, number] | undefined {
  const s = a?.socket_address;
  if (!s?.address) return undefined;
  const ip = s.address.startsWith('::ffff:') && s.address.includes('.') ? s.address.slice(7) : s.address;
  return [ip, s.port_value ?? 0];
}

const ms = (d: { seconds?: PbLong | number; nanos?: number } | undefined): number | undefined =>
  (d ? Number(d.seconds ?? 0) * 1000 + (d.nanos ?? 0) / 1e6 : undefined);

const DENIED = 'rbac_access_denied_matched_policy[';

/**
 * An access log entry's record (untraced). routeTemplateOf: the template of
 * a route by its name (the agent's own routes). Throws naming the field
 * when the entry lacks what a record needs.
 */
export function entryRecord(e: PbEntry, routeTemplateOf: (routeName: string) => string | undefined): ReceivedRecord {
  const cp = e.common_properties;
  const caller = address(cp?.downstream_remote_address);
  if (!caller) throw new Error('common_properties.downstream_remote_address: missing');
  const local = address(cp?.downstream_local_address);
  if (!local) throw new Error('common_properties.downstream_local_address: missing');
  const startMs = ms(cp?.start_time);
  if (startMs === undefined || !(startMs > 0)) throw new Error('common_properties.start_time: missing');
  const method = methodName(e.request?.request_method);
  if (method === undefined) throw new Error('request.request_method: missing or not a method');
  const durationMs = ms(cp?.duration) ?? ms(cp?.time_to_last_downstream_tx_byte) ?? 0;
  const up = address(cp?.upstream_remote_address);
  const path = e.request?.path ?? '/';
  const q = path.search(/[?#]/);
  const details = e.response?.response_code_details ?? '';
  const route = cp?.route_name ? routeTemplateOf(cp.route_name) : undefined;
  // every field set, absent ones undefined, in the order decodeRecords makes them: one hidden class for every record
  return {
    endMs: Math.round(startMs + durationMs), durationMs: Math.round(durationMs * 1000) / 1000, method, path: q < 0 ? path : path.slice(0, q), route,
    status: e.response?.response_code?.value ?? 0, caller: caller[0], callerPort: caller[1], local: local[0], localPort: local[1],
    upstream: up ? `${up[0]}:${up[1]}` : undefined, host: e.request?.authority ?? '',
    attempts: cp?.upstream_request_attempt_count ?? (up ? 1 : 0), traceId: '', spanId: '', sampled: false, trace: undefined,
    deniedBy: details.startsWith(DENIED) && details.endsWith(']') ? details.slice(DENIED.length, -1) : undefined,
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

const identity = (b: Buffer): Buffer => b;

export class EnvoyAccessLogReceiver {
  readonly #o: EnvoyAccessLogReceiverOptions;
  #server: grpc.Server | undefined;
  #type: protobuf.Type | undefined;
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
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) unlinkSync(path);
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
    const service: grpc.ServiceDefinition = {
      StreamAccessLogs: {
        path: STREAM_ACCESS_LOGS_PATH, requestStream: true, responseStream: false,
        requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
      },
    };
    server.addService(service, {
      StreamAccessLogs: (call: grpc.ServerReadableStream<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
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
        call.on('end', () => done(null, Buffer.alloc(0))); // StreamAccessLogsResponse has no fields
        call.on('error', () => undefined); // Envoy went away: nothing to answer
      },
    });
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${path}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
    });
    this.#server = server;
    chmodSync(path, 0o666); // Envoy may run as another user
  }

  /** Stops (streams still open are cut after 2 s) and removes the socket. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server) {
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => { server.forceShutdown(); resolve(); }, 2000);
        server.tryShutdown(() => { clearTimeout(force); resolve(); });
      });
    }
    if (existsSync(this.#o.socketPath)) unlinkSync(this.#o.socketPath);
  }
}
