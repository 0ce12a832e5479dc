/**
 * An Envoy node proxy's spans read back into request records, the form
 * mesh-proxy reports its requests in, so that the agent gives them to their
 * workloads, links them to the kernel's connections and counts them exactly
 * as it does mesh-proxy's (agent-telemetry.ts).
 *
 * Envoy (its OpenTelemetry tracer, with spawn_upstream_span: l7-resources)
 * writes per sampled request one SERVER span for the request as the caller
 * sent it and, as its children, one CLIENT span per attempt at a backend,
 * named "router <cluster> egress"; the backend's traceparent names the
 * attempt's span. Their tags are strings: http.method, http.url,
 * http.protocol, http.status_code, response_flags, peer.address (the caller
 * on the request's span, the backend on an attempt's), upstream_address;
 * sockmesh adds the listener's address and the service as literal tags, and
 * names the request's span after its route's template (the route's
 * decorator).
 *
 * An attempt's span ends, and is exported, before its request's: attempts
 * wait here for their request's span (bounded in number and in time; what
 * never finds one is counted). A span that is neither is refused with the
 * field and the reason named.
 */
import { isIP } from 'node:net';
import type { ReceivedRecord } from '../../mesh-proxy/agent-channel.js';
import type { AttemptTrace, RequestTrace, RetryEvent } from '../../telemetry/request-spans.js';
import { WIRE_SPAN_KIND, type OtlpSpan } from '../../telemetry/otlp-trace-decoder.js';
import { ENVOY_SPAN_TAGS } from '../../xds/l7-resources.js';

/** The tags of Envoy's spans read here: the receiver skips the others (user_agent, node_id, sizes, …) unread. */
export const ENVOY_SPAN_ATTRIBUTES: ReadonlySet<string> = new Set([
  'http.method', 'http.url', 'http.protocol', 'http.status_code', 'response_flags', 'peer.address', 'upstream_address', 'upstream_cluster', 'error.reason',
  ENVOY_SPAN_TAGS.listener, ENVOY_SPAN_TAGS.service,
]);

export interface EnvoySpanJoinerOptions {
  /**
   * how long a request's attempt spans wait for its span after the last of
   * them came; default 60000 (a request may go on long after a failed
   * attempt: no route timeout is the default)
   */
  waitMs?: number;
  /** attempt spans waiting at most (beyond, the requests waiting longest lose theirs, counted); default 50000 */
  maxWaiting?: number;
}

export interface EnvoySpanStats {
  /** requests read from their spans */
  requests: number;
  /** attempt spans joined to their request */
  attempts: number;
  /** attempt spans whose request's span never came (waited waitMs, pushed out of a full waiting room, or still waiting at the end) */
  orphaned: number;
  /** spans refused (not a request's or an attempt's span, or a field missing or malformed) */
  refused: number;
}

/** Envoy's response flags (short strings), said in words for a failed attempt's status message. */
const FLAG_WORDS: Record<string, string> = {
  UF: 'upstream connection failure', UT: 'upstream request timeout', UC: 'upstream connection termination', URX: 'upstream retry limit exceeded',
  UH: 'no healthy upstream', UO: 'upstream overflow', UPE: 'upstream protocol error', LR: 'local reset', DC: 'downstream connection termination',
  NR: 'no route', NC: 'no cluster', UAEX: 'unauthorized external service', RL: 'rate limited',
};

interface Waiting { spans: OtlpSpan[]; sinceMs: number }

/** An IPv4-mapped IPv6 address as the IPv4 address it is. */
export const unmapped = (ip: string): string => (ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip);

/** "ip:port", "[ipv6]:port" or an address alone (port 0: not known) → [ip, port]; undefined when not one of those. */
function address(s: string | undefined): [string, number] | undefined {
  if (s === undefined || s === '') return undefined;
  if (isIP(s) !== 0) return [unmapped(s), 0];
  let ip: string;
  let port: string;
  if (s.startsWith('[')) {
    const j = s.indexOf(']:');
    if (j < 0) return undefined;
    ip = s.slice(1, j);
    port = s.slice(j + 2);
  } else {
    const i = s.lastIndexOf(':');
    ip = s.slice(0, i);
    port = s.slice(i + 1);
    if (isIP(ip) !== 4) return undefined; // a bare IPv6 address with a port must be bracketed
  }
  const n = Number(port);
  if (isIP(ip) === 0 || port === '' || !Number.isInteger(n) || n < 0 || n > 65535) return undefined;
  return [unmapped(ip), n];
}

/** "HTTP/1.1" → "1.1", "HTTP/2" → "2" (network.protocol.version) */
function protocolVersion(p: string | undefined): string {
  return p?.startsWith('HTTP/') ? p.slice(5) : (p ?? '');
}

/** http.url "scheme://authority/path?query#fragment" → [authority, the path ("/" when none), without query and fragment] */
function splitUrl(url: string): [string, string] | undefined {
  const s = url.indexOf('://');
  if (s < 0) return undefined;
  const rest = url.slice(s + 3);
  let a = rest.length;
  for (const c of ['/', '?', '#']) {
    const i = rest.indexOf(c);
    if (i >= 0 && i < a) a = i;
  }
  const authority = rest.slice(0, a);
  let path = rest.slice(a);
  for (const c of ['?', '#']) {
    const i = path.indexOf(c);
    if (i >= 0) path = path.slice(0, i);
  }
  return [authority, path === '' ? '/' : path];
}

/** "host[:port]" → [host, port or undefined] */
function splitAuthority(a: string): [string, number | undefined] {
  const i = a.lastIndexOf(':');
  if (i < 0 || a.endsWith(']')) return [a.replace(/^\[|\]$/g, ''), undefined];
  const port = Number(a.slice(i + 1));
  return [a.slice(0, i).replace(/^\[|\]$/g, ''), Number.isInteger(port) ? port : undefined];
}

const us = (ns: bigint): number => Number(ns / 1000n);

/** Why a span is refused: the span (id and name), the field, the reason. */
function refusal(s: OtlpSpan, field: string, why: string): Error {
  return new Error(`span ${s.spanId} (${s.name}): ${field}: ${why}`);
}

/** An attempt's span: a CLIENT span named "router <cluster> egress". */
export function isAttemptSpan(s: OtlpSpan): boolean {
  return s.kind === WIRE_SPAN_KIND.client && s.name.startsWith('router ') && s.name.endsWith(' egress');
}

export class EnvoySpanJoiner {
  readonly #waitMs: number;
  readonly #maxWaiting: number;
  /** attempt spans by their request's span ("traceId/spanId") */
  readonly #waiting = new Map<string, Waiting>();
  #waitingSpans = 0;
  readonly stats: EnvoySpanStats = { requests: 0, attempts: 0, orphaned: 0, refused: 0 };

  constructor(opts: EnvoySpanJoinerOptions = {}) {
    this.#waitMs = opts.waitMs ?? 60_000;
    this.#maxWaiting = opts.maxWaiting ?? 50_000;
    if (!(this.#waitMs > 0) || !(this.#maxWaiting > 0)) throw new RangeError('waitMs and maxWaiting must be positive');
  }

  /** attempt spans waiting for their request's span */
  get waiting(): number {
    return this.#waitingSpans;
  }

  /**
   * The records of the requests whose spans came (with their attempts'
   * spans, from this export or earlier ones), and the reasons spans were
   * refused (each names the span, by id, and the field). nowMs: a
   * monotonic clock (performance.now()).
   */
  add(spans: readonly OtlpSpan[], nowMs: number): { records: ReceivedRecord[]; refused: string[] } {
    this.expire(nowMs);
    const requests: OtlpSpan[] = [];
    const refused: string[] = [];
    /** this export's attempts by their request: joined to a request in it before anything waits */
    const here = new Map<string, OtlpSpan[]>();
    for (const s of spans) {
      if (isAttemptSpan(s)) {
        if (s.parentSpanId === '') {
          refused.push(`span ${s.spanId} (${s.name}): an attempt's span without a parent`);
          continue;
        }
        const key = `${s.traceId}/${s.parentSpanId}`;
        const list = here.get(key);
        if (list) list.push(s);
        else here.set(key, [s]);
      } else {
        requests.push(s);
      }
    }
    const records: ReceivedRecord[] = [];
    for (const s of requests) {
      const key = `${s.traceId}/${s.spanId}`;
      const w = this.#waiting.get(key);
      if (w) {
        this.#waiting.delete(key);
        this.#waitingSpans -= w.spans.length;
      }
      const now = here.get(key);
      if (now) here.delete(key);
      const attempts = w && now ? [...w.spans, ...now] : w?.spans ?? now ?? [];
      try {
        records.push(this.#record(s, attempts));
      } catch (err) {
        refused.push((err as Error).message);
        this.stats.orphaned += attempts.length;
      }
    }
    // the others wait for their request (an entry that gets more moves to the end: the Map stays oldest first)
    for (const [key, list] of here) {
      const w = this.#waiting.get(key);
      if (w) this.#waiting.delete(key);
      this.#waiting.set(key, { spans: w ? [...w.spans, ...list] : list, sinceMs: nowMs });
      this.#waitingSpans += list.length;
    }
    while (this.#waitingSpans > this.#maxWaiting) {
      const [key, w] = this.#waiting.entries().next().value as [string, Waiting];
      this.#waiting.delete(key);
      this.#waitingSpans -= w.spans.length;
      this.stats.orphaned += w.spans.length;
    }
    this.stats.refused += refused.length;
    return { records, refused };
  }

  /** Drops the attempt spans that waited longer than waitMs for their request's span (counted as orphaned); how many. */
  expire(nowMs: number): number {
    let n = 0;
    for (const [key, w] of this.#waiting) {
      // oldest first: stop at the first that may still wait
      if (nowMs - w.sinceMs < this.#waitMs) break;
      this.#waiting.delete(key);
      n += w.spans.length;
    }
    this.#waitingSpans -= n;
    this.stats.orphaned += n;
    return n;
  }

  /** Drops every attempt span still waiting (the agent stops), counted as orphaned; how many. */
  drain(): number {
    const n = this.#waitingSpans;
    this.#waiting.clear();
    this.#waitingSpans = 0;
    this.stats.orphaned += n;
    return n;
  }

  /** A request's record from its span and its attempts' spans. */
  #record(s: OtlpSpan, attemptSpans: OtlpSpan[]): ReceivedRecord {
    const a = s.attributes;
    const method = a.get('http.method');
    if (method === undefined || method === '') throw refusal(s, 'http.method', 'missing');
    if (!(s.startNs > 0n && s.endNs >= s.startNs)) throw refusal(s, 'times', `start ${s.startNs} ns, end ${s.endNs} ns`);
    const url = a.get('http.url');
    const parts = url === undefined ? undefined : splitUrl(url);
    if (!parts) throw refusal(s, 'http.url', url === undefined ? 'missing' : `${JSON.stringify(url)} is not a URL`);
    const [authority, path] = parts;
    const listener = address(a.get(ENVOY_SPAN_TAGS.listener));
    if (!listener || listener[1] === 0) throw refusal(s, ENVOY_SPAN_TAGS.listener, 'missing or not ip:port (not a span of a sockmesh listener)');
    const caller = address(a.get('peer.address'));
    if (!caller) throw refusal(s, 'peer.address', 'missing or not an address');
    const status = Number(a.get('http.status_code') ?? '0');
    if (!Number.isInteger(status) || status < 0) throw refusal(s, 'http.status_code', `${JSON.stringify(a.get('http.status_code'))} is not a status`);
    const service = a.get(ENVOY_SPAN_TAGS.service);
    const servicePort = service === undefined ? undefined : Number(service.slice(service.lastIndexOf(':') + 1));
    const [hostName, hostPort] = splitAuthority(authority);
    const flags = a.get('response_flags');

    attemptSpans.sort((x, y) => (x.startNs < y.startNs ? -1 : x.startNs > y.startNs ? 1 : 0));
    const attempts: AttemptTrace[] = [];
    const retries: RetryEvent[] = [];
    for (const [i, x] of attemptSpans.entries()) {
      const peer = x.attributes.get('upstream_address') ?? x.attributes.get('peer.address');
      const p = address(peer);
      if (!p || p[1] === 0) throw refusal(s, `attempt span ${x.spanId}: upstream_address`, 'missing or not ip:port');
      if (!(x.startNs > 0n && x.endNs >= x.startNs)) throw refusal(s, `attempt span ${x.spanId}: times`, `start ${x.startNs} ns, end ${x.endNs} ns`);
      const code = Number(x.attributes.get('http.status_code') ?? '0');
      const st = Number.isInteger(code) && code > 0 ? code : 0;
      const f = x.attributes.get('response_flags');
      const flagged = f !== undefined && f !== '-' && f !== '';
      // no response: the flags say why, else the reset's reason
      const reason = x.attributes.get('error.reason');
      const error = st > 0 ? undefined
        : flagged ? { type: f, message: f.split(',').map((k) => FLAG_WORDS[k] ?? k).join(', '), exception: 'envoy.response_flags' }
          : { type: 'reset', message: reason ?? 'no response', exception: 'envoy.upstream_reset' };
      attempts.push({ spanId: x.spanId, startUs: us(x.startNs), endUs: us(x.endNs), peer: `${p[0]}:${p[1]}`, status: st, error });
      // every attempt but the last failed and was retried
      if (i < attemptSpans.length - 1) retries.push({ timeUs: us(x.endNs), attempt: i + 1, status: st > 0 ? st : undefined, error: error ? (flagged ? f : reason ?? 'reset') : undefined });
    }
    this.stats.requests++;
    this.stats.attempts += attempts.length;
    const last = attempts.at(-1);
    const upstream = last?.peer ?? a.get('upstream_address');
    const trace: RequestTrace = {
      startUs: us(s.startNs), endUs: us(s.endNs), parentSpanId: s.parentSpanId === '' ? undefined : s.parentSpanId, traceState: s.traceState === '' ? undefined : s.traceState,
      protocol: protocolVersion(a.get('http.protocol')), serverAddress: hostName, serverPort: hostPort ?? (Number.isInteger(servicePort) ? servicePort! : listener[1]),
      flags: flags !== undefined && flags !== '-' && flags !== '' ? flags : undefined, retries, attempts,
    };
    // the route's decorator names the span: a template starts with "/" or "regex:"; Envoy's own names ("ingress", "egress <host>") are no route
    const route = s.name.startsWith('/') || s.name.startsWith('regex:') ? s.name : undefined;
    return {
      endMs: Number(s.endNs / 1_000_000n), durationMs: Math.round(Number(s.endNs - s.startNs) / 1000) / 1000, method, path, route, status,
      caller: caller[0], callerPort: caller[1], local: listener[0], localPort: listener[1], upstream, host: authority,
      attempts: Math.max(attempts.length, upstream !== undefined ? 1 : 0), traceId: s.traceId, spanId: s.spanId, sampled: true, trace,
      // Envoy's answer of its own, before any cluster was chosen, 403 and no flag: its RBAC filters (which run before the
      // router) denied it; which policy, its spans do not say
      deniedBy: status === 403 && attempts.length === 0 && upstream === undefined && trace.flags === undefined && !a.has('upstream_cluster') ? 'unknown' : undefined,
    };
  }
}
