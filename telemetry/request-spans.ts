/**
 * A sampled request's spans, made from the node proxy's record of it: the
 * caller's CLIENT span for the whole request (retries, and a policy's denial,
 * as events), and per
 * attempt the chosen backend's SERVER span, its child — the spans a sidecar
 * pair would report, each owned by its own workload.
 *
 * On its hot path the proxy only notes ids, times and outcomes (a
 * RequestTrace in the request's record); the spans are written off that path:
 * by the agent, which gets every record anyway, or by the proxy's own
 * exporter when it runs without an agent.
 */
import { SpanKind, SpanStatusCode, type Attributes, type Link } from '@opentelemetry/api';
import type { SpanData } from './finished-span.js';
import { isHexId } from './trace-ids.js';

/** One try at a backend: the backend's SERVER span. */
export interface AttemptTrace {
  spanId: string;
  /** Unix epoch µs */
  startUs: number;
  endUs: number;
  /** the backend tried, "ip:port" */
  peer: string;
  /** its response's status; 0 when none came */
  status: number;
  /** why no response came: error.type, the status message, and the exception's type */
  error?: { type: string; message: string; exception: string };
}

/** A retry, as an event on the CLIENT span: after a status, or after an error. */
export interface RetryEvent {
  timeUs: number;
  /** the attempt that failed */
  attempt: number;
  status?: number;
  error?: string;
}

/** What a sampled request's spans need beyond its record. */
export interface RequestTrace {
  /** Unix epoch µs of the request's arrival and of its response's end */
  startUs: number;
  endUs: number;
  /** the caller's span, from its traceparent */
  parentSpanId?: string;
  /** the caller's tracestate, carried on */
  traceState?: string;
  /** network.protocol.version: 1.1, 2 */
  protocol: string;
  /** the service as the caller dialled it */
  serverAddress: string;
  serverPort: number;
  /** the proxy's response flags (UF, UT, NR, …): the status message of a failed request */
  flags?: string;
  retries: RetryEvent[];
  attempts: AttemptTrace[];
}

/**
 * The trace of a sampled request that took one attempt, which answered, with
 * no retry and no response flag: the common case, one flat object in the
 * proxy (one array on the wire) instead of a trace with a list of attempts
 * and a list of retries. Its attempt's backend and status are the record's
 * (upstream, status). asRequestTrace makes the general form of it.
 */
export interface OneAttemptTrace {
  startUs: number;
  endUs: number;
  parentSpanId: string | undefined;
  traceState: string | undefined;
  protocol: string;
  serverAddress: string;
  serverPort: number;
  /** the backend's SERVER span; empty until the attempt starts */
  attemptSpanId: string;
  attemptStartUs: number;
  attemptEndUs: number;
}

/** A trace in its general form: a one-attempt trace gets its attempt (peer and status from the record), or none when it never started. */
export function asRequestTrace(t: RequestTrace | OneAttemptTrace, peer: string, status: number): RequestTrace {
  if (!isOneAttempt(t)) return t;
  return {
    startUs: t.startUs, endUs: t.endUs, parentSpanId: t.parentSpanId, traceState: t.traceState, protocol: t.protocol, serverAddress: t.serverAddress, serverPort: t.serverPort,
    flags: undefined, retries: [],
    attempts: t.attemptSpanId === '' ? [] : [{ spanId: t.attemptSpanId, startUs: t.attemptStartUs, endUs: t.attemptEndUs, peer, status, error: undefined }],
  };
}

export function isOneAttempt(t: RequestTrace | OneAttemptTrace): t is OneAttemptTrace {
  return (t as Partial<RequestTrace>).attempts === undefined;
}

/** The fields of the node proxy's request record that its spans are made from. */
export interface RequestFields {
  method: string;
  path: string;
  /** http.route: the matched route's template */
  route?: string;
  status: number;
  caller: string;
  callerPort: number;
  local: string;
  localPort: number;
  /** the caller's CLIENT span (ids are empty when tracing is off) */
  traceId: string;
  spanId: string;
  /**
   * A request the RBAC filters denied (status 403): the RBAC policy that
   * denied it, "ns/name/rule-N" of a DENY rule, or "none" when an ALLOW
   * filter matched nothing (Envoy's rbac_access_denied_matched_policy[none]).
   */
  deniedBy?: string;
}

/** A sampled request as the proxy records it, with its trace. */
export interface TracedRequest extends RequestFields {
  trace: RequestTrace;
}

/** A span and the address of the workload it belongs to (the caller, or a backend). */
export interface OwnedSpan {
  owner: string;
  span: SpanData;
}

const ORIGIN_US = performance.timeOrigin * 1000;

/**
 * Unix epoch µs now, from the monotonic clock (the proxy's times for spans),
 * whole: a fraction of a µs says nothing about a request, and the record
 * carrying it is written as JSON, where a 16-digit integer is quicker to
 * print than a 17-digit fraction.
 */
export function epochUs(): number {
  return Math.round(ORIGIN_US + performance.now() * 1000);
}

function ns(us: number): bigint {
  return BigInt(Math.round(us)) * 1000n;
}

/** "ip:port" → [ip, port] (IPv4, or a bracketed IPv6 address). */
export function splitPeer(peer: string): [string, number] {
  const i = peer.lastIndexOf(':');
  const ip = peer.slice(0, i);
  // brackets are rare (IPv6): no regex for the rest, which every traced request's spans split
  return [ip.charCodeAt(0) === 0x5b || ip.charCodeAt(ip.length - 1) === 0x5d ? ip.replace(/^\[|\]$/g, '') : ip, Number(peer.slice(i + 1))];
}

/**
 * The spans of one sampled request: its CLIENT span (owned by the caller),
 * then one SERVER span per attempt (owned by the backend tried). connection:
 * a link to the span of the kernel connection the request rode.
 */
export function requestSpans(r: TracedRequest, connection?: Link): OwnedSpan[] {
  const t = r.trace;
  const name = r.route !== undefined ? `${r.method} ${r.route}` : r.method;
  const last = t.attempts.at(-1);
  const a: Attributes = {
    'http.request.method': r.method, 'url.path': r.path, 'server.address': t.serverAddress, 'server.port': t.serverPort,
    // a caller's port of 0 is not known (Envoy's spans name the caller by its IP): left out
    'client.address': r.caller, ...(r.callerPort !== 0 && { 'client.port': r.callerPort }), 'network.local.address': r.local, 'network.local.port': r.localPort,
    'network.protocol.version': t.protocol,
  };
  if (r.route !== undefined) a['http.route'] = r.route;
  if (last) {
    const [ip, port] = splitPeer(last.peer);
    a['network.peer.address'] = ip;
    a['network.peer.port'] = port;
  }
  a['http.response.status_code'] = r.status;
  if (t.attempts.length > 1) a['http.request.resend_count'] = t.attempts.length - 1;
  if (r.status >= 400) a['error.type'] = String(r.status);
  const out: OwnedSpan[] = [{
    owner: r.caller,
    span: {
      name, kind: SpanKind.CLIENT, traceId: r.traceId, spanId: r.spanId,
      ...(t.parentSpanId && { parentSpanId: t.parentSpanId, parentRemote: true }), ...(t.traceState && { traceState: t.traceState }),
      startNs: ns(t.startUs), endNs: ns(t.endUs), attributes: a,
      events: [
        ...t.retries.map((e) => ({ name: 'retry', timeNs: ns(e.timeUs), attributes: e.error !== undefined ? { 'error.type': e.error, attempt: e.attempt } : { 'http.response.status_code': e.status ?? 0, attempt: e.attempt } })),
        ...(r.deniedBy !== undefined ? [{ name: 'sockmesh.policy.denied', timeNs: ns(t.endUs), attributes: { 'sockmesh.policy': r.deniedBy, 'sockmesh.policy.layer': 'proxy-l7' } }] : []),
      ],
      links: connection ? [connection] : [],
      status: r.status >= 400 ? { code: SpanStatusCode.ERROR, ...(t.flags && { message: t.flags }) } : { code: SpanStatusCode.UNSET },
    },
  }];
  t.attempts.forEach((at, i) => {
    const [ip, port] = splitPeer(at.peer);
    const sa: Attributes = {
      'http.request.method': r.method, 'url.path': r.path, ...(r.route !== undefined && { 'http.route': r.route }), 'server.address': ip, 'server.port': port,
      'client.address': r.caller, 'network.peer.address': r.caller, ...(r.callerPort !== 0 && { 'network.peer.port': r.callerPort }),
    };
    if (i > 0) sa['http.request.resend_count'] = i;
    if (at.status > 0) sa['http.response.status_code'] = at.status;
    if (at.error) sa['error.type'] = at.error.type;
    out.push({
      owner: ip,
      span: {
        name, kind: SpanKind.SERVER, traceId: r.traceId, spanId: at.spanId, parentSpanId: r.spanId, parentRemote: false,
        ...(t.traceState && { traceState: t.traceState }),
        startNs: ns(at.startUs), endNs: ns(at.endUs), attributes: sa,
        events: at.error ? [{ name: 'exception', timeNs: ns(at.endUs), attributes: { 'exception.type': at.error.exception, 'exception.message': at.error.message } }] : [],
        status: at.error ? { code: SpanStatusCode.ERROR, message: at.error.message } : at.status >= 500 ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.UNSET },
      },
    });
  });
  return out;
}

type WireAttempt = [string, number, number, string, number, string | null, string | null, string | null];
type WireRetry = [number, number, number | null, string | null];
/** A RequestTrace on the wire: an array in this order. */
type WireFullTrace = [number, number, string | null, string | null, string, string, number, string | null, WireRetry[], WireAttempt[]];
/** A OneAttemptTrace on the wire: as long as the other, element 8 a number (the attempt's start) where the other has its list of retries. */
type WireOneAttempt = [number, number, string | null, string | null, string, string, number, string, number, number];
export type WireTrace = WireFullTrace | WireOneAttempt;

export function encodeTrace(t: RequestTrace | OneAttemptTrace): WireTrace {
  if (isOneAttempt(t)) {
    return [t.startUs, t.endUs, t.parentSpanId ?? null, t.traceState ?? null, t.protocol, t.serverAddress, t.serverPort, t.attemptSpanId, t.attemptStartUs, t.attemptEndUs];
  }
  return [
    t.startUs, t.endUs, t.parentSpanId ?? null, t.traceState ?? null, t.protocol, t.serverAddress, t.serverPort, t.flags ?? null,
    t.retries.map((e) => [e.timeUs, e.attempt, e.status ?? null, e.error ?? null]),
    t.attempts.map((a) => [a.spanId, a.startUs, a.endUs, a.peer, a.status, a.error?.type ?? null, a.error?.message ?? null, a.error?.exception ?? null]),
  ];
}

/** Whether s ends in ":" and digits ("ip:port"); a loop, not a regex: it runs for every traced record. */
function endsWithPort(s: string): boolean {
  const i = s.lastIndexOf(':');
  if (i < 0 || i === s.length - 1) return false;
  for (let k = i + 1; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isStr = (x: unknown): x is string => typeof x === 'string';
const isOptStr = (x: unknown): x is string | null => x === null || typeof x === 'string';

/**
 * Throws naming the field (under `at`) that is not what a trace has. A
 * one-attempt trace's attempt gets the record's backend (peer, "ip:port")
 * and status.
 */
export function decodeTrace(w: unknown, at: string, peer?: unknown, status: unknown = 0): RequestTrace {
  if (!Array.isArray(w) || w.length !== 10) throw traceError(at, 'not a request trace');
  const startUs: unknown = w[0], endUs: unknown = w[1], parent: unknown = w[2], state: unknown = w[3], protocol: unknown = w[4];
  const serverAddress: unknown = w[5], serverPort: unknown = w[6], flags: unknown = w[7], retries: unknown = w[8], attempts: unknown = w[9];
  if (!isNum(startUs) || !isNum(endUs)) throw traceError(at, 'times: not numbers');
  if (!isOptStr(parent) || (parent !== null && !isHexId(parent, 16))) throw traceError(at, 'parent span id: not 16 hex digits');
  if (!isOptStr(state) || !isStr(protocol) || !isStr(serverAddress) || !isNum(serverPort) || !isOptStr(flags)) throw traceError(at, 'not a request trace');
  if (typeof retries === 'number') {
    // one attempt (element 7 its span, 8 and 9 its times); its backend and status are the record's
    if (!isStr(flags) || !isHexId(flags, 16)) throw traceError(at, 'attempt span id: not 16 hex digits');
    if (!isNum(retries) || !isNum(attempts)) throw traceError(at, 'attempt times: not numbers');
    if (typeof peer !== 'string' || !endsWithPort(peer)) throw traceError(at, 'one attempt, but the record names no backend');
    if (!isNum(status)) throw traceError(at, 'one attempt, but the record\'s status is not a number');
    return asRequestTrace({
      startUs, endUs, parentSpanId: parent ?? undefined, traceState: state ?? undefined, protocol, serverAddress, serverPort, attemptSpanId: flags, attemptStartUs: retries, attemptEndUs: attempts,
    }, peer, status);
  }
  if (!Array.isArray(retries) || !Array.isArray(attempts)) throw traceError(at, 'retries or attempts: not lists');
  // every field set, absent ones undefined: one hidden class each for every trace, retry and attempt
  const rs: RetryEvent[] = [];
  for (let i = 0; i < retries.length; i++) {
    const e: unknown = retries[i];
    if (!Array.isArray(e) || e.length !== 4 || !isNum(e[0]) || !isNum(e[1]) || !(e[2] === null || isNum(e[2])) || !isOptStr(e[3])) throw traceError(at, `retries[${i}]: not a retry`);
    rs.push({ timeUs: e[0], attempt: e[1], status: e[2] ?? undefined, error: e[3] ?? undefined });
  }
  const as: AttemptTrace[] = [];
  for (let i = 0; i < attempts.length; i++) {
    const a: unknown = attempts[i];
    if (!Array.isArray(a) || a.length !== 8 || !isStr(a[0]) || !isHexId(a[0], 16) || !isNum(a[1]) || !isNum(a[2]) || !isStr(a[3]) || !endsWithPort(a[3]) || !isNum(a[4])
      || !isOptStr(a[5]) || !isOptStr(a[6]) || !isOptStr(a[7])) throw traceError(at, `attempts[${i}]: not an attempt`);
    const type = a[5] as string | null;
    as.push({ spanId: a[0], startUs: a[1], endUs: a[2], peer: a[3], status: a[4], error: type !== null ? { type, message: a[6] ?? '', exception: a[7] ?? 'Error' } : undefined });
  }
  return {
    startUs, endUs, parentSpanId: parent ?? undefined, traceState: state ?? undefined, protocol, serverAddress, serverPort, flags: flags ?? undefined, retries: rs, attempts: as,
  };
}

function traceError(at: string, what: string): Error {
  return new Error(`${at}: ${what}`);
}
