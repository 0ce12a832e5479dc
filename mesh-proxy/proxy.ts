/**
 * mesh-proxy's data plane: a listener per xDS listener (HTTP/1.1 and h2c on
 * one port, told apart by the HTTP/2 preface), the router, and upstream
 * pools (undici) per endpoint, balanced round robin or least request.
 * A request gets its route's timeout (504 when it runs out), retries on the
 * route's status codes with a per-try timeout and backoff, header changes,
 * and W3C trace context: the incoming traceparent is continued (or a trace
 * started) with the caller's CLIENT span, and each attempt's backend gets its
 * SERVER span as the parent. A sampled request's record carries what its
 * spans need (ids, times, outcomes); the spans are written off the hot path
 * (telemetry/request-spans.ts).
 * A listener's RBAC filters (Envoy's, from AuthorizationPolicies) run
 * before the router: a request they stop is answered 403 "RBAC: access
 * denied" and never reaches a backend.
 * A new configuration applies without failing requests in flight: they keep
 * the routes and pools they started with; removed listeners stop accepting
 * and removed pools close after their last request.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { type Http2Server, type Http2ServerRequest, type Http2ServerResponse, createServer as createH2Server } from 'node:http2';
import { type Server as NetServer, type Socket, createServer as createNetServer } from 'node:net';
import { Duplex, Readable } from 'node:stream';
import { parseTraceParent } from '@opentelemetry/core';
import { Pool } from 'undici';
import { asRequestTrace, epochUs, type AttemptTrace, type OneAttemptTrace, type RequestFields, type RequestTrace } from '../telemetry/request-spans.js';
import { keepTrace, randomSpanId, randomTraceId } from '../telemetry/trace-ids.js';
import { type ClusterConfig, type ListenerConfig, type RouteEntry, pickCluster, selectRoute } from './config.js';
import { RBAC_DENIED_BODY, RBAC_DENIED_STATUS, decide } from './rbac.js';
import type { ProxyConfig } from './xds-client.js';

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'http2-settings']);
/** Responses up to this size (with a Content-Length) are sent in one write with their headers. */
const SMALL_BODY_BYTES = 64 << 10;
/** Bodies of requests that may be retried are kept up to this size; larger ones are sent once. */
const RETRY_BUFFER_BYTES = 1 << 20;

export interface AccessLogEntry {
  time: string;
  listener: string;
  method: string;
  path: string;
  protocol: string;
  status: number;
  durationMs: number;
  route?: string;
  cluster?: string;
  upstream?: string;
  attempts: number;
  flags: string[];
  traceId?: string;
  downstream: string;
  /** the calling workload, "namespace/pod", when its address is known */
  source?: string;
  /**
   * On a listener with RBAC filters: their verdict, the policy that decided
   * as Envoy reports it ("ns/name/rule-N"; "none" when an ALLOW filter
   * matched nothing, or no ALLOW filter ran), and the LOG filters' matches.
   */
  rbac?: { allowed: boolean; policy: string; logged: string[] };
}

/**
 * One request as the agent counts it (metrics by workload pair, observe, the
 * kernel connection's links): made for every request, sampled or not.
 */
export interface RequestRecord extends RequestFields {
  /** Unix ms of the response's end */
  endMs: number;
  durationMs: number;
  /** the last backend tried, "ip:port" */
  upstream?: string;
  /** the Host the caller asked for (the service) */
  host: string;
  attempts: number;
  sampled: boolean;
  /** a sampled request's trace: what its spans need beyond this record (one attempt that answered: the flat form, its backend and status this record's) */
  trace?: RequestTrace | OneAttemptTrace;
}

/** A workload (a pod), by its address: the caller of a request, or the backend that serves it. */
export interface Workload {
  namespace: string;
  pod: string;
  /** service.name of its spans: the app.kubernetes.io/name or app label, else the owner's name */
  serviceName: string;
  app?: string;
  identity: number;
}

export interface ProxyStats {
  requests: number;
  responses: Record<string, number>;
  retries: number;
  timeouts: number;
  noRoute: number;
  noHealthyUpstream: number;
  upstreamErrors: number;
  active: number;
  /** requests on listeners with RBAC filters: let through, denied (403), and matched by a LOG filter */
  rbac: { allowed: number; denied: number; logged: number };
}

interface Endpoint { key: string; pool: Pool; active: number }

class Upstream {
  readonly config: ClusterConfig;
  endpoints: Endpoint[] = [];
  #rr = 0;
  constructor(config: ClusterConfig) {
    this.config = config;
  }
  /**
   * Round robin, or least request: the fewest requests in flight among all
   * endpoints when there are few (ties in turn), else the fewer of two
   * picked at random (Envoy's power of two choices).
   */
  pick(exclude?: string): Endpoint | undefined {
    const eps = this.endpoints.length > 1 && exclude ? this.endpoints.filter((e) => e.key !== exclude) : this.endpoints;
    if (eps.length === 0) return undefined;
    if (this.config.lb === 'least_request' && eps.length > 1) {
      if (eps.length <= 4) {
        const start = this.#rr++;
        let best = eps[start % eps.length]!;
        for (let i = 1; i < eps.length; i++) {
          const e = eps[(start + i) % eps.length]!;
          if (e.active < best.active) best = e;
        }
        return best;
      }
      const a = eps[Math.floor(Math.random() * eps.length)]!;
      const b = eps[Math.floor(Math.random() * eps.length)]!;
      return a.active <= b.active ? a : b;
    }
    return eps[this.#rr++ % eps.length];
  }
}

interface Listening { name: string; ip: string; port: number; net: NetServer; h1: Server; h2: Http2Server; sockets: Set<Socket> }

export interface MeshProxyOptions {
  /** where access log lines go (JSON); default: nowhere */
  accessLog?: (e: AccessLogEntry) => void;
  /** every finished request (the agent's metrics and flows); default: none */
  onRequest?: (r: RequestRecord) => void;
  /**
   * W3C trace context: a traced request gets trace and span ids (a caller's
   * trace continued), and a sampled one a trace in its record; an untraced
   * one passes a caller's traceparent through untouched. Which listeners are
   * traced: `{ sampleRatio }` every one, new traces kept at the listener's
   * HCM tracing.random_sampling if it has one, else at sampleRatio; 'xds'
   * (Envoy's rule, what the agent runs) those whose HCM has a tracing field,
   * at its random_sampling, so the control plane turns tracing on and off and
   * changes the ratio at runtime; false: none. Default: `{ sampleRatio: 1 }`.
   */
  tracing?: { sampleRatio: number } | 'xds' | false;
}

export class MeshProxy {
  #config: ProxyConfig | undefined;
  #listening = new Map<string, Listening>();
  #upstreams = new Map<string, Upstream>();
  #pools = new Map<string, Pool>();
  readonly #accessLog: ((e: AccessLogEntry) => void) | undefined;
  readonly #onRequest: ((r: RequestRecord) => void) | undefined;
  /** caller address → workload (see setWorkloads) */
  #workloads: ReadonlyMap<string, Workload> = new Map();
  readonly #tracing: { sampleRatio: number } | 'xds' | false;
  readonly stats: ProxyStats = { requests: 0, responses: {}, retries: 0, timeouts: 0, noRoute: 0, noHealthyUpstream: 0, upstreamErrors: 0, active: 0, rbac: { allowed: 0, denied: 0, logged: 0 } };
  /** listener problems (a port that cannot be bound), for the admin endpoint */
  listenerErrors = new Map<string, string>();

  constructor(opts: MeshProxyOptions = {}) {
    this.#accessLog = opts.accessLog;
    this.#onRequest = opts.onRequest;
    this.#tracing = opts.tracing ?? { sampleRatio: 1 };
  }

  /** Who is behind each pod address (the agent writes this map; a sidecar-free proxy learns callers from it). */
  setWorkloads(map: ReadonlyMap<string, Workload>): void {
    this.#workloads = map;
  }

  /** The workload behind a pod address, if known. */
  workload(ip: string): Workload | undefined {
    return this.#workloads.get(ip);
  }

  get config(): ProxyConfig | undefined {
    return this.#config;
  }

  listeners(): { name: string; address: string }[] {
    return [...this.#listening.values()].map((l) => ({ name: l.name, address: `${l.ip}:${l.port}` }));
  }

  /** Applies a configuration: listeners opened and closed, pools made and closed, routes swapped. */
  async apply(cfg: ProxyConfig): Promise<void> {
    this.#config = cfg;
    // upstreams: pools per endpoint, shared by clusters that name the same address
    const wanted = new Map<string, Upstream>();
    for (const c of cfg.clusters.values()) {
      const u = this.#upstreams.get(c.name)?.config.lb === c.lb ? this.#upstreams.get(c.name)! : new Upstream(c);
      const eps = cfg.endpoints.get(c.edsName) ?? [];
      u.endpoints = eps.map((e) => {
        const key = `${e.ip}:${e.port}`;
        let pool = this.#pools.get(key);
        if (!pool) {
          pool = new Pool(`http://${key}`, { connections: 64, connectTimeout: c.connectTimeoutMs, keepAliveTimeout: 30_000, pipelining: 1 });
          this.#pools.set(key, pool);
        }
        const before = u.endpoints.find((x) => x.key === key);
        return { key, pool, active: before?.active ?? 0 };
      });
      wanted.set(c.name, u);
    }
    this.#upstreams = wanted;
    const live = new Set([...wanted.values()].flatMap((u) => u.endpoints.map((e) => e.key)));
    for (const [key, pool] of [...this.#pools]) {
      if (live.has(key)) continue;
      this.#pools.delete(key);
      void pool.close().catch(() => undefined); // after its requests in flight
    }
    // listeners
    for (const [name, l] of [...this.#listening]) {
      const want = cfg.listeners.get(name);
      if (want && want.ip === l.ip && want.port === l.port) continue;
      this.#listening.delete(name);
      await this.#close(l);
    }
    for (const l of cfg.listeners.values()) {
      if (this.#listening.has(l.name)) continue;
      try {
        this.#listening.set(l.name, await this.#listen(l.name, l.ip, l.port));
        this.listenerErrors.delete(l.name);
      } catch (err) {
        this.listenerErrors.set(l.name, (err as Error).message);
      }
    }
  }

  async #listen(name: string, ip: string, port: number): Promise<Listening> {
    const servicePort = listenerPort(name);
    const handler = (req: Req, res: Res) => { void this.#handle(name, servicePort, req, res); };
    const h1 = createServer({ keepAliveTimeout: 60_000 }, handler);
    const h2 = createH2Server({}, handler);
    const sockets = new Set<Socket>();
    const net = createNetServer((socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      // h2c with prior knowledge starts with the HTTP/2 preface; anything else is HTTP/1.1
      socket.once('data', (first: Buffer) => {
        const n = Math.min(first.length, H2_PREFACE.length);
        if (first.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
          // HTTP/2 reads the socket's handle itself and would miss the bytes already read: hand it a stream that replays them
          h2.emit('connection', replaying(socket, first));
        } else {
          socket.pause();
          socket.unshift(first);
          h1.emit('connection', socket);
          socket.resume();
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      net.once('error', reject);
      net.listen(port, ip, () => { net.off('error', reject); resolve(); });
    });
    return { name, ip, port, net, h1, h2, sockets };
  }

  /** Stops accepting; idle connections close now, busy ones after their request (or at drainMs). */
  async #close(l: Listening, drainMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => l.net.close(() => resolve()));
    l.h1.closeIdleConnections();
    const deadline = Date.now() + drainMs;
    while (l.sockets.size > 0 && Date.now() < deadline) {
      l.h1.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const s of l.sockets) s.destroy();
    await closed;
  }

  /** Stops accepting, lets requests in flight finish (up to drainMs), closes the pools. */
  async stop(drainMs = 5000): Promise<void> {
    const ls = [...this.#listening.values()];
    this.#listening.clear();
    await Promise.all(ls.map((l) => this.#close(l, drainMs)));
    await Promise.all([...this.#pools.values()].map((p) => p.destroy().catch(() => undefined)));
    this.#pools.clear();
  }

  /** The ratio of new traces a listener keeps, or undefined when its requests are not traced. */
  #sampleRatio(l: ListenerConfig | undefined): number | undefined {
    const t = this.#tracing;
    if (t === false) return undefined;
    if (t === 'xds') return l?.tracing?.sampleRatio;
    return l?.tracing?.sampleRatio ?? t.sampleRatio;
  }

  /** servicePort: the port the listener stands for (listenerPort of its name), the server.port of a Host without one */
  async #handle(listenerName: string, servicePort: number | undefined, req: Req, res: Res): Promise<void> {
    const t0 = performance.now();
    this.stats.requests++;
    this.stats.active++;
    const cfg = this.#config;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const host = String(req.headers[':authority'] ?? req.headers.host ?? '');
    const log: AccessLogEntry = {
      time: new Date().toISOString(), listener: listenerName, method: req.method ?? 'GET', path, protocol: `HTTP/${req.httpVersion}`,
      status: 0, durationMs: 0, attempts: 0, flags: [], downstream: `${req.socket?.remoteAddress ?? '?'}:${req.socket?.remotePort ?? '?'}`,
    };
    const callerIp = (req.socket?.remoteAddress ?? '').replace(/^::ffff:/, '');
    const caller = this.#workloads.get(callerIp);
    if (caller) log.source = `${caller.namespace}/${caller.pod}`;
    const local = req.socket?.localPort;
    // W3C trace context: the caller's CLIENT span continues its trace (or starts one); a sampled
    // request notes what its spans need and the spans are written off this path: one flat object
    // while it has one attempt (ot), the general trace (rt) made from it at a retry, an error or a flag
    let traceId = '';
    let spanId = '';
    let sampled = false;
    let continued = false;
    let ot: OneAttemptTrace | undefined;
    let rt: RequestTrace | undefined;
    /** the status of the attempt under way, once its response came */
    let answered = 0;
    const listener = cfg?.listeners.get(listenerName);
    const sampleRatio = this.#sampleRatio(listener);
    const traced = sampleRatio !== undefined;
    if (traced) {
      const tp = req.headers.traceparent;
      const parent = typeof tp === 'string' ? parseTraceParent(tp) : null;
      continued = parent !== null;
      traceId = parent?.traceId ?? randomTraceId();
      spanId = randomSpanId();
      sampled = parent ? (parent.traceFlags & 1) === 1 : keepTrace(traceId, sampleRatio);
      if (sampled && this.#onRequest) {
        const [hostName, hostPort] = splitHost(host);
        const ts = req.headers.tracestate;
        // every field set from the start: one hidden class for every one-attempt trace
        ot = {
          startUs: epochUs(), endUs: 0, parentSpanId: parent ? parent.spanId : undefined, traceState: parent && typeof ts === 'string' && ts !== '' ? ts : undefined,
          protocol: req.httpVersion === '2.0' ? '2' : req.httpVersion, serverAddress: hostName, serverPort: hostPort ?? servicePort ?? local ?? 80,
          attemptSpanId: '', attemptStartUs: 0, attemptEndUs: 0,
        };
      }
      log.traceId = traceId;
    }
    let routeTemplate: string | undefined;
    let deniedBy: string | undefined;
    const finish = (status: number) => {
      log.status = status;
      log.durationMs = Math.round((performance.now() - t0) * 1000) / 1000;
      this.stats.responses[`${Math.floor(status / 100)}xx`] = (this.stats.responses[`${Math.floor(status / 100)}xx`] ?? 0) + 1;
      this.stats.active--;
      if (ot) {
        ot.endUs = epochUs();
        // no attempt (denied, no route, no backend), or a flag: the general form says so
        if (ot.attemptSpanId === '' || log.flags.length > 0) {
          rt = asRequestTrace(ot, log.upstream ?? '', answered);
          ot = undefined;
        }
      } else if (rt) {
        rt.endUs = epochUs();
      }
      if (rt && log.flags.length > 0) rt.flags = log.flags.join(',');
      this.#accessLog?.(log);
      this.#onRequest?.({
        endMs: Date.now(), durationMs: log.durationMs, method: log.method, path, ...(log.route !== undefined && { route: routeTemplate }), status,
        caller: callerIp, callerPort: req.socket?.remotePort ?? 0, local: (req.socket?.localAddress ?? '').replace(/^::ffff:/, ''), localPort: local ?? 0,
        ...(log.upstream !== undefined && { upstream: log.upstream }), host, attempts: log.attempts, traceId, spanId, sampled, ...((rt ?? ot) && { trace: rt ?? ot }),
        ...(deniedBy !== undefined && { deniedBy }),
      });
    };
    const reply = (status: number, body: string, flag: string) => {
      log.flags.push(flag);
      if (!res.headersSent) {
        res.statusCode = status;
        res.setHeader('content-type', 'text/plain');
        res.end(`${body}\n`);
      } else {
        res.destroy();
      }
      finish(status);
    };
    const table = listener ? cfg?.routes.get(listener.routeConfig) : undefined;
    if (!table) {
      this.stats.noRoute++;
      req.resume();
      return reply(503, 'no route configuration yet', 'NC');
    }
    const headerOf = (n: string) => { const v = req.headers[n]; return Array.isArray(v) ? v.join(',') : v; };
    // RBAC before routing, as Envoy's filter chain runs it
    if (listener!.rbac.length > 0) {
      const d = decide(listener!.rbac, { method: req.method ?? 'GET', path: url, host, header: headerOf, remoteIp: callerIp });
      log.rbac = { allowed: d.allowed, policy: d.policy ?? 'none', logged: d.logged };
      if (d.logged.length > 0) this.stats.rbac.logged++;
      if (!d.allowed) {
        this.stats.rbac.denied++;
        deniedBy = d.policy ?? 'none';
        req.resume();
        if (!res.headersSent) {
          res.statusCode = RBAC_DENIED_STATUS;
          res.setHeader('content-type', 'text/plain');
          res.setHeader('content-length', Buffer.byteLength(RBAC_DENIED_BODY));
          res.end(RBAC_DENIED_BODY);
        }
        return finish(RBAC_DENIED_STATUS);
      }
      this.stats.rbac.allowed++;
    }
    const route = selectRoute(table, host, path, new URLSearchParams(q < 0 ? '' : url.slice(q + 1)), (n) => (n === ':method' ? req.method : headerOf(n)));
    if (!route) {
      this.stats.noRoute++;
      req.resume();
      return reply(404, 'no route matched', 'NR');
    }
    log.route = route.name;
    routeTemplate = route.template;
    const clusterName = pickCluster(route);
    log.cluster = clusterName;
    const upstream = this.#upstreams.get(clusterName);
    // the body: kept for retries when small enough, else streamed once
    let body: Buffer | Readable | undefined;
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && (req.headers['content-length'] !== '0');
    if (hasBody) {
      if (route.retry && Number(req.headers['content-length'] ?? RETRY_BUFFER_BYTES + 1) <= RETRY_BUFFER_BYTES) body = await readAll(req);
      else body = req as Readable;
    } else {
      req.resume();
    }
    const deadline = route.timeoutMs > 0 ? Date.now() + route.timeoutMs : Infinity;
    const maxTries = 1 + (route.retry && (body === undefined || Buffer.isBuffer(body)) ? route.retry.numRetries : 0);
    let lastEndpoint: string | undefined;
    for (let attempt = 1; ; attempt++) {
      log.attempts = attempt;
      const ep = upstream?.pick(lastEndpoint);
      if (!ep) {
        this.stats.noHealthyUpstream++;
        return reply(503, 'no healthy upstream', 'UH');
      }
      lastEndpoint = ep.key;
      log.upstream = ep.key;
      const left = deadline - Date.now();
      if (left <= 0) {
        this.stats.timeouts++;
        return reply(504, 'upstream request timeout', 'UT');
      }
      const perTry = route.retry?.perTryTimeoutMs || Infinity;
      const tryMs = Math.min(left, perTry);
      const headers = upstreamHeaders(req, route, host);
      // the backend's SERVER span (the parent the backend sees); a caller's tracestate passes on as it came
      let at: AttemptTrace | undefined;
      if (traced) {
        const serverSpanId = randomSpanId();
        // joined, not a template: a flat string, which undici's header check takes on its fast path
        // (a template's rope sent every traced request through V8's runtime regexp path: 1-2 µs in the proxy)
        headers.traceparent = ['00', traceId, serverSpanId, sampled ? '01' : '00'].join('-');
        // a new trace: no state of an old one (delete only when there is one: a delete is a runtime call)
        if (!continued && headers.tracestate !== undefined) delete headers.tracestate;
        if (ot) {
          ot.attemptSpanId = serverSpanId; // the first attempt
          ot.attemptStartUs = epochUs();
        } else if (rt) {
          rt.attempts.push(at = { spanId: serverSpanId, startUs: epochUs(), endUs: 0, peer: ep.key, status: 0 });
        }
      }
      answered = 0;
      const ac = Number.isFinite(tryMs) ? new AbortController() : undefined;
      const timer = ac ? setTimeout(() => ac.abort(new Error('timeout')), tryMs) : undefined;
      ep.active++;
      try {
        const r = await ep.pool.request({ path: url, method: (req.method ?? 'GET') as 'GET', headers, body: body as Buffer | Readable | undefined, ...(ac && { signal: ac.signal }) });
        answered = r.statusCode;
        if (at) at.status = r.statusCode;
        const retriable = attempt < maxTries && retryOn(route, r.statusCode);
        if (retriable) {
          if (ot) {
            ot.attemptEndUs = epochUs();
            rt = asRequestTrace(ot, ep.key, r.statusCode); // a retry: the general form from here on
            ot = undefined;
          } else if (at) {
            at.endUs = epochUs();
          }
          await r.body.dump().catch(() => undefined);
          ep.active--;
          if (timer) clearTimeout(timer);
          this.stats.retries++;
          rt?.retries.push({ timeUs: epochUs(), attempt, status: r.statusCode });
          await backoff(route, attempt, deadline);
          continue;
        }
        res.statusCode = r.statusCode;
        for (const [k, v] of Object.entries(r.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) res.setHeader(k, v);
        for (const h of route.responseRemove) res.removeHeader(h);
        for (const h of route.responseAdd) {
          const cur = res.getHeader(h.name);
          res.setHeader(h.name, h.overwrite || cur === undefined ? h.value : `${String(cur)},${h.value}`);
        }
        try {
          const out = res as ServerResponse; // the compat API of HTTP/2 writes alike
          const length = Number(r.headers['content-length'] ?? -1);
          if (length >= 0 && length <= SMALL_BODY_BYTES) {
            out.end(Buffer.from(await r.body.arrayBuffer())); // headers and body in one write
          } else {
            for await (const chunk of r.body) if (!out.write(chunk as Buffer)) await new Promise((ok) => out.once('drain', ok));
            out.end();
          }
        } catch {
          res.destroy(); // the backend or the client went away mid-body
        }
        if (ot) ot.attemptEndUs = epochUs();
        else if (at) at.endUs = epochUs();
        ep.active--;
        if (timer) clearTimeout(timer);
        return finish(r.statusCode);
      } catch (err) {
        ep.active--;
        if (timer) clearTimeout(timer);
        const timedOut = ac?.signal.aborted === true;
        if (ot) {
          // an error: the general form, which holds it
          rt = asRequestTrace(ot, ep.key, answered);
          ot = undefined;
          at = rt.attempts[0];
        }
        if (at) {
          at.endUs = epochUs();
          at.error = { type: timedOut ? 'timeout' : ((err as { code?: string }).code ?? (err as Error).name), message: timedOut ? 'timeout' : (err as Error).message, exception: (err as Error).name ?? 'Error' };
        }
        this.stats.upstreamErrors++;
        if (attempt < maxTries && (timedOut ? route.retry!.on.size > 0 : retryOnError(route)) && Date.now() < deadline) {
          this.stats.retries++;
          rt?.retries.push({ timeUs: epochUs(), attempt, error: timedOut ? 'timeout' : (err as Error).message });
          await backoff(route, attempt, deadline);
          continue;
        }
        if (timedOut) {
          this.stats.timeouts++;
          return reply(504, 'upstream request timeout', 'UT');
        }
        return reply(503, `upstream connect error or disconnect/reset before headers: ${(err as Error).message}`, 'UF');
      }
    }
  }
}

/** The service port a listener stands for: its name is "namespace/service:port" (the port the caller dialled). */
function listenerPort(name: string): number | undefined {
  const m = /:(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** "host:port" → [host, port]; "[v6]:port" too; a host that is neither is taken whole. Without a regex: it runs for every traced request. */
export function splitHost(h: string): [string, number | undefined] {
  if (h.charCodeAt(0) === 0x5b) {
    const close = h.indexOf(']');
    if (close < 0) return [h, undefined];
    if (close === h.length - 1) return [h.slice(1, close), undefined];
    if (h.charCodeAt(close + 1) !== 0x3a || h.indexOf(']', close + 1) >= 0) return [h, undefined];
    const port = h.slice(close + 2);
    return isDigits(port) ? [h.slice(1, close), Number(port)] : [h, undefined];
  }
  const colon = h.indexOf(':');
  if (colon < 0) return [h, undefined];
  const port = h.slice(colon + 1);
  return isDigits(port) ? [h.slice(0, colon), Number(port)] : [h, undefined];
}

function isDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/** A stream over the socket that first yields the bytes already read from it. */
function replaying(socket: Socket, first: Buffer): Duplex {
  const d = new Duplex({
    read() { socket.resume(); },
    write(chunk: Buffer, _enc, cb) { socket.write(chunk, cb); },
    final(cb) { socket.end(); cb(); },
    destroy(err, cb) { socket.destroy(err ?? undefined); cb(err); },
  });
  d.push(first);
  socket.on('data', (c: Buffer) => { if (!d.push(c)) socket.pause(); });
  socket.on('end', () => d.push(null));
  socket.on('close', () => d.destroy());
  socket.on('error', (e) => d.destroy(e));
  Object.assign(d, { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort, remoteFamily: socket.remoteFamily });
  return d;
}

function retryOn(route: RouteEntry, status: number): boolean {
  const r = route.retry;
  if (!r) return false;
  if (r.on.has('retriable-status-codes') && r.codes.has(status)) return true;
  if (r.on.has('5xx') && status >= 500) return true;
  if (r.on.has('gateway-error') && status >= 502 && status <= 504) return true;
  return false;
}

function retryOnError(route: RouteEntry): boolean {
  const on = route.retry?.on;
  return on !== undefined && (on.has('5xx') || on.has('gateway-error') || on.has('connect-failure') || on.has('reset') || on.has('retriable-status-codes'));
}

/** Exponential backoff with full jitter (Envoy's: base × 2^n, capped at 10× base), within the deadline. */
async function backoff(route: RouteEntry, attempt: number, deadline: number): Promise<void> {
  const base = route.retry?.backoffMs ?? 25;
  const ms = Math.random() * Math.min(base * 2 ** (attempt - 1), base * 10);
  await new Promise((r) => setTimeout(r, Math.max(0, Math.min(ms, deadline - Date.now()))));
}

function upstreamHeaders(req: Req, route: RouteEntry, host: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith(':') || HOP_BY_HOP.has(k) || v === undefined) continue;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  out.host = host;
  const xff = out['x-forwarded-for'];
  const peer = req.socket?.remoteAddress ?? '';
  out['x-forwarded-for'] = xff ? `${xff}, ${peer}` : peer;
  out['x-forwarded-proto'] = 'http';
  for (const h of route.requestRemove) delete out[h];
  for (const h of route.requestAdd) out[h.name] = h.overwrite || out[h.name] === undefined ? h.value : `${out[h.name]},${h.value}`;
  return out;
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
