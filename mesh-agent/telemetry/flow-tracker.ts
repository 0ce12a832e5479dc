/**
 * Connections as the kernel saw them (sockops open/close events on the ring
 * buffer) become L4 spans and flow records. A connection's span gets its ids
 * when it opens, so the node proxy's request spans that ride it can link to
 * it while it is open; it is exported a little after it closes, once the peer
 * socket's close (and its byte count) had time to arrive.
 *
 * Attribution: a connection whose client side is a local socket belongs to
 * the client's workload (a CLIENT span); one seen only on its server side
 * (a caller from outside the node) belongs to the server's (a SERVER span).
 */
import { SpanKind, SpanStatusCode, type Link } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { finishedSpan } from '../../telemetry/finished-span.js';
import { keepTrace, randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';
import type { WorkloadIdentity } from '../../telemetry/workload-resource.js';

/** One sockops event, as the datapath's flow-event reader decodes it. */
export interface KernelFlowEvent {
  kind: 'open' | 'close';
  cookie: bigint;
  /** kernel monotonic ns of the event */
  tsNs: bigint;
  /** for close: kernel monotonic ns of the open */
  openNs?: bigint;
  local: { ip: string; port: number };
  remote: { ip: string; port: number };
  /** the connecting (client) side */
  active: boolean;
  shortCircuited: boolean;
  service?: { ip: string; port: number };
  stackSentBytes: number | bigint;
  stackRecvBytes: number | bigint;
  redirSentBytes: number | bigint;
}

/** What observe streams and metrics count: one finished connection or one request. */
export interface FlowRecord {
  /** l4: a connection; l7: a request; security: a cross-workload security event (scan, repeated denials, spoofing) */
  type: 'l4' | 'l7' | 'security';
  /** ISO time of the flow's end */
  time: string;
  source: { address: string; namespace?: string; pod?: string; service?: string };
  destination: { address: string; namespace?: string; pod?: string; service?: string };
  /** the mesh service it was addressed to: "namespace/name", or the VIP when unknown */
  service?: string;
  /** denied: by a policy (the node proxy's RBAC for requests), named in `policy` */
  verdict: 'forwarded' | 'error' | 'denied';
  /** the policy rule that denied it ("ns/name/rule-N"), or "none" when no ALLOW rule matched; in the kernel: the policies selecting the denying end */
  policy?: string;
  /** where a denial was decided: the kernel (NetworkPolicy) or the node proxy (AuthorizationPolicy) */
  layer?: 'kernel-l4' | 'proxy-l7';
  /** a kernel denial: the connect refused, a packet dropped, or an established connection cut */
  kernelEvent?: 'refused' | 'dropped' | 'cut';
  /** a denial's or security event's explanation, in words */
  reason?: string;
  /** a kernel denial: identical ones the kernel folded into this record (it stands for 1 + suppressed) */
  suppressed?: number;
  /** a security event's kind, when type is security */
  securityType?: 'scan' | 'repeated-denials' | 'spoofing';
  /** kernel: spliced socket to socket; stack: the TCP/IP stack; proxy: through the node proxy */
  path: 'kernel' | 'stack' | 'proxy';
  durationMs: number;
  bytesSent?: number;
  bytesReceived?: number;
  method?: string;
  urlPath?: string;
  route?: string;
  status?: number;
  traceId?: string;
  spanId?: string;
}

export interface FlowTrackerOptions {
  /** the pod behind an address (local or not), for attribution */
  workloadOf: (ip: string) => WorkloadIdentity | undefined;
  /** "namespace/name" of the service behind a VIP:port */
  serviceOf: (ip: string, port: number) => string | undefined;
  /** the resource of a workload's spans */
  resourceOf: (w: WorkloadIdentity | undefined) => Resource;
  /** where finished L4 spans go (the export queue) */
  emitSpan: (span: ReadableSpan) => void;
  /** where finished flows go (metrics, observe) */
  emitFlow: (flow: FlowRecord) => void;
  /** kernel monotonic ns → Unix epoch ns */
  toEpochNs: (monoNs: bigint) => bigint;
  /** the ratio of connections whose spans are kept; default 1 */
  sampleRatio?: number;
  /** how long a closed connection waits for its peer's close and late request spans; default 1000 */
  lingerMs?: number;
  /** at most this many request links on one connection span; default 16 */
  maxLinks?: number;
  /** connections tracked at once (older ones are forgotten, counted); default 65536 */
  maxFlows?: number;
  /**
   * index client sockets by their address and the server's, so that a
   * request whose caller's port is not known (Envoy's spans name the caller
   * by its IP) still links to the one connection it can have ridden;
   * default false (mesh-proxy reports the port)
   */
  linkByCallerIp?: boolean;
}

interface Flow {
  cookie: bigint;
  openNs: bigint;
  local: { ip: string; port: number };
  remote: { ip: string; port: number };
  active: boolean;
  shortCircuited: boolean;
  service?: { ip: string; port: number };
  traceId: string;
  spanId: string;
  sampled: boolean;
  links: Link[];
  /** the link to this connection's span that the requests riding it carry (one object, made at the first) */
  link?: Link;
  requests: number;
  close?: KernelFlowEvent;
  timer?: NodeJS.Timeout;
  waited?: boolean;
  /** when its close was seen (ms, monotonic), and how many request batches had come by then */
  closeSeenMs: number;
  batchesAtClose: number;
}

const SCOPE = { name: 'sockmesh.kernel' };

function tupleKey(a: { ip: string; port: number }, b: { ip: string; port: number }): string {
  return `${a.ip}:${a.port}>${b.ip}:${b.port}`;
}

export interface FlowTrackerStats {
  opened: number;
  closed: number;
  spans: number;
  /** open events never closed that were forgotten to stay within maxFlows */
  evicted: number;
  /** close events whose open was not seen (the agent started after the connection) */
  unmatchedCloses: number;
  tracked: number;
  /** requests known by their caller's IP alone that found more than one connection they may have ridden (not linked) */
  ambiguousLinks: number;
}

export class FlowTracker {
  readonly #o: Required<Pick<FlowTrackerOptions, 'sampleRatio' | 'lingerMs' | 'maxLinks' | 'maxFlows'>> & FlowTrackerOptions;
  /** by own-view tuple (local > remote) */
  readonly #flows = new Map<string, Flow>();
  /** the node proxy's request batches seen, and when the last came (ms, monotonic) */
  #batches = 0;
  #lastBatchMs = -Infinity;
  readonly stats: FlowTrackerStats = { opened: 0, closed: 0, spans: 0, evicted: 0, unmatchedCloses: 0, tracked: 0, ambiguousLinks: 0 };
  /**
   * the sockets in #flows by "client ip>server ip:port" (linkByCallerIp
   * only): [0] client sockets (active), [1] server sockets (passive), used
   * when no client socket is local (a caller from outside the node)
   */
  readonly #byCallerIp: [Map<string, Set<Flow>>, Map<string, Set<Flow>>] | undefined;

  constructor(opts: FlowTrackerOptions) {
    this.#o = { sampleRatio: 1, lingerMs: 1000, maxLinks: 16, maxFlows: 65536, ...opts };
    this.#byCallerIp = opts.linkByCallerIp ? [new Map(), new Map()] : undefined;
  }

  /** Puts a flow in the table under key (the flow it replaces leaves the caller index). */
  #put(key: string, f: Flow): void {
    const prev = this.#flows.get(key);
    if (prev !== undefined && prev !== f) this.#unindex(prev);
    this.#flows.set(key, f);
    if (this.#byCallerIp) {
      const [map, k] = this.#indexOf(f);
      let set = map.get(k);
      if (!set) map.set(k, set = new Set());
      set.add(f);
    }
  }

  /** Takes a flow out of the table (and of the caller index). */
  #drop(key: string, f: Flow): void {
    this.#flows.delete(key);
    this.#unindex(f);
  }

  #unindex(f: Flow): void {
    if (!this.#byCallerIp) return;
    const [map, k] = this.#indexOf(f);
    const set = map.get(k);
    if (set?.delete(f) && set.size === 0) map.delete(k);
  }

  /** A socket's caller-index map and key ("client ip>server ip:port"). */
  #indexOf(f: Flow): [Map<string, Set<Flow>>, string] {
    return f.active ? [this.#byCallerIp![0], `${f.local.ip}>${f.remote.ip}:${f.remote.port}`] : [this.#byCallerIp![1], `${f.remote.ip}>${f.local.ip}:${f.local.port}`];
  }

  /** Feeds a batch of kernel events. */
  onEvents(events: readonly KernelFlowEvent[]): void {
    for (const e of events) {
      if (e.kind === 'open') this.#open(e);
      else this.#close(e);
    }
    this.stats.tracked = this.#flows.size;
  }

  #open(e: KernelFlowEvent): void {
    const key = tupleKey(e.local, e.remote);
    const old = this.#flows.get(key);
    if (old) this.#finish(key, old); // the tuple was reused before the old close arrived
    if (this.#flows.size >= this.#o.maxFlows) {
      const oldest = this.#flows.keys().next().value as string;
      const f = this.#flows.get(oldest)!;
      if (f.close) {
        // closed, waiting for its peer or late requests: reported now with what it has, not dropped
        f.waited = true;
        this.#finish(oldest, f);
      } else {
        if (f.timer) clearTimeout(f.timer);
        this.#drop(oldest, f);
        this.stats.evicted++;
      }
    }
    this.stats.opened++;
    this.#put(key, this.#newFlow(e, e.tsNs));
  }

  /** The ratio of connections opened from now on that get a span (0: none). */
  setSampleRatio(ratio: number): void {
    this.#o.sampleRatio = ratio;
  }

  /** A connection's flow, its span's ids and sampling decided now (requests riding it can link to it while it is open). */
  #newFlow(e: KernelFlowEvent, openNs: bigint): Flow {
    const traceId = randomTraceId();
    // every field set from the start (absent ones undefined): one hidden class for a flow at every stage, so
    // the relay's optimized code that links requests is not thrown away at each new connection
    return {
      cookie: e.cookie, openNs, local: e.local, remote: e.remote, active: e.active, shortCircuited: e.shortCircuited,
      service: e.service || undefined,
      traceId, spanId: randomSpanId(), sampled: keepTrace(traceId, this.#o.sampleRatio), links: [], link: undefined, requests: 0,
      close: undefined, timer: undefined, waited: false, closeSeenMs: 0, batchesAtClose: 0,
    };
  }

  #close(e: KernelFlowEvent): void {
    const key = tupleKey(e.local, e.remote);
    let f = this.#flows.get(key);
    if (!f || f.cookie !== e.cookie) {
      // opened before the agent watched: still a flow, with the kernel's open time
      this.stats.unmatchedCloses++;
      f = this.#newFlow(e, e.openNs ?? e.tsNs);
      this.#put(key, f);
    }
    this.stats.closed++;
    f.close = e;
    f.closeSeenMs = performance.now();
    f.batchesAtClose = this.#batches;
    const flow = f;
    f.timer = setTimeout(() => this.#lingered(key, flow), this.#o.lingerMs);
    f.timer.unref();
    // a client side waiting for this server side's byte count can finish now
    const reverse = tupleKey(e.remote, e.local);
    const waiting = this.#flows.get(reverse);
    if (waiting?.waited && waiting.close) {
      clearTimeout(waiting.timer);
      this.#finish(reverse, waiting);
    }
  }

  /**
   * A request span that arrived over the connection client → server: its
   * link to the connection's span (to add to the request span), and the
   * connection remembers the request (its span links back).
   */
  linkRequest(client: { ip: string; port: number }, server: { ip: string; port: number }, request: { traceId: string; spanId: string }, at?: { startUs: number; endUs: number }): Link | undefined {
    // the client's socket when it is local, else the server's; a caller known by its IP alone: the request's times (at) pick it
    const f = client.port === 0 ? this.#byCaller(client.ip, server, at) : this.#flows.get(tupleKey(client, server)) ?? this.#flows.get(tupleKey(server, client));
    if (!f) return undefined;
    f.requests++;
    if (f.links.length < this.#o.maxLinks) f.links.push({ context: { traceId: request.traceId, spanId: request.spanId, traceFlags: 1 }, attributes: { 'sockmesh.link': 'request' } });
    return f.link ??= { context: { traceId: f.traceId, spanId: f.spanId, traceFlags: f.sampled ? 1 : 0 }, attributes: { 'sockmesh.link': 'connection' } };
  }

  /**
   * The one connection from ip to server (linkByCallerIp) that was open
   * over the whole request (its start and end, epoch µs, when known; 1 ms of
   * slack for the two clocks): a client socket, else a server socket (a
   * caller from outside the node). None when there are none or several
   * (counted).
   */
  #byCaller(ip: string, server: { ip: string; port: number }, at: { startUs: number; endUs: number } | undefined): Flow | undefined {
    if (!this.#byCallerIp) return undefined;
    const k = `${ip}>${server.ip}:${server.port}`;
    for (const map of this.#byCallerIp) {
      const set = map.get(k);
      if (!set) continue;
      let found: Flow | undefined;
      let n = 0;
      for (const f of set) {
        if (at && Number(this.#o.toEpochNs(f.openNs) / 1000n) > at.startUs + 1000) continue; // opened after the request began
        if (at && f.close && Number(this.#o.toEpochNs(f.close.tsNs) / 1000n) < at.endUs - 1000) continue; // closed before it ended
        found = f;
        n++;
      }
      if (n === 1) return found;
      if (n > 1) {
        this.stats.ambiguousLinks++;
        return undefined;
      }
    }
    return undefined;
  }

  /**
   * The node proxy handed over a batch of request records (all of them
   * linked): a closed connection waiting for its late requests may finish.
   */
  requestsSeen(): void {
    this.#batches++;
    this.#lastBatchMs = performance.now();
  }

  /**
   * A closed connection's linger is over. While the node proxy is busy (a
   * batch came within the last 5 lingers) but fewer than two batches have
   * come since this close was seen, the records of the requests the
   * connection carried may still be on their way (a slow proxy or agent):
   * it waits on, up to 5 lingers from the close, so the span and its
   * requests still link both ways. Two, because the first may have been cut
   * before the close (it was on its way, or being read, when the close was
   * seen); the proxy sends one batch at a time, so the second was cut after
   * the first was answered.
   */
  #lingered(key: string, f: Flow): void {
    const now = performance.now();
    const cap = 5 * this.#o.lingerMs;
    if (this.#batches < f.batchesAtClose + 2 && now - this.#lastBatchMs < cap && now - f.closeSeenMs < cap) {
      f.timer = setTimeout(() => this.#lingered(key, f), Math.max(1, this.#o.lingerMs / 4));
      f.timer.unref();
      return;
    }
    this.#finish(key, f);
  }

  #finish(key: string, f: Flow): void {
    if (f.timer) clearTimeout(f.timer);
    if (this.#flows.get(key) === f) this.#drop(key, f);
    this.stats.tracked = this.#flows.size;
    const close = f.close;
    if (!close) return; // replaced before it closed: nothing to report
    // both ends local: both sockets report; the client side speaks for the connection
    const reverse = tupleKey(f.remote, f.local);
    const peer = this.#flows.get(reverse);
    if (f.active && f.shortCircuited && peer && !peer.close && !f.waited && this.#flows.get(key) === undefined) {
      // the server side still open: what it spliced to us is counted at its close; wait for it a while
      f.waited = true;
      this.#put(key, f);
      f.timer = setTimeout(() => this.#finish(key, f), 5 * this.#o.lingerMs);
      f.timer.unref();
      return;
    }
    const peerRecent = this.#recent.get(reverse);
    this.#recent.set(key, { close, active: f.active });
    if (this.#recent.size > 4096) this.#recent.delete(this.#recent.keys().next().value as string);
    if (!f.active && (peer?.active || peerRecent?.active)) return;
    // bytes: what this socket sent (stack + spliced) and received (stack + what the peer spliced to it)
    const sent = Number(close.stackSentBytes) + Number(close.redirSentBytes);
    const peerClose = peer?.close ?? peerRecent?.close;
    const received = Number(close.stackRecvBytes) + (peerClose ? Number(peerClose.redirSentBytes) : 0);
    const startNs = this.#o.toEpochNs(f.openNs);
    const endNs = this.#o.toEpochNs(close.tsNs);
    const durationMs = Number(endNs - startNs) / 1e6;
    const me = this.#o.workloadOf(f.local.ip);
    const other = this.#o.workloadOf(f.remote.ip);
    const [src, dst, srcAddr, dstAddr] = f.active ? [me, other, f.local, f.remote] : [other, me, f.remote, f.local];
    const svcName = f.service ? this.#o.serviceOf(f.service.ip, f.service.port) ?? `${f.service.ip}:${f.service.port}` : undefined;
    const path = f.shortCircuited ? 'kernel' : 'stack';
    this.#o.emitFlow({
      type: 'l4', time: new Date(Number(endNs / 1_000_000n)).toISOString(),
      source: { address: `${srcAddr.ip}:${srcAddr.port}`, ...(src && { namespace: src.namespace, pod: src.pod, service: src.serviceName }) },
      destination: { address: `${dstAddr.ip}:${dstAddr.port}`, ...(dst && { namespace: dst.namespace, pod: dst.pod, service: dst.serviceName }) },
      ...(svcName && { service: svcName }),
      verdict: 'forwarded', path, durationMs: Math.round(durationMs * 1000) / 1000,
      bytesSent: f.active ? sent : received, bytesReceived: f.active ? received : sent,
      traceId: f.traceId, spanId: f.spanId,
    });
    if (!f.sampled) return;
    this.stats.spans++;
    const target = f.service ?? dstAddr;
    this.#o.emitSpan(finishedSpan({
      name: `TCP ${svcName ?? `${target.ip}:${target.port}`}`,
      kind: f.active ? SpanKind.CLIENT : SpanKind.SERVER,
      traceId: f.traceId, spanId: f.spanId, startNs, endNs,
      attributes: {
        'network.transport': 'tcp', 'network.type': 'ipv4',
        'server.address': target.ip, 'server.port': target.port,
        'client.address': srcAddr.ip, 'client.port': srcAddr.port,
        'network.peer.address': f.remote.ip, 'network.peer.port': f.remote.port,
        'network.local.address': f.local.ip, 'network.local.port': f.local.port,
        'sockmesh.path': path, 'sockmesh.short_circuited': f.shortCircuited,
        'sockmesh.bytes_sent': f.active ? sent : received, 'sockmesh.bytes_received': f.active ? received : sent,
        ...(f.service && { 'sockmesh.service.vip': `${f.service.ip}:${f.service.port}` }),
        ...(svcName && { 'sockmesh.service': svcName }),
        ...(dst && f.active && { 'sockmesh.destination.workload': `${dst.namespace}/${dst.pod}`, 'sockmesh.destination.service': dst.serviceName }),
        ...(src && !f.active && { 'sockmesh.source.workload': `${src.namespace}/${src.pod}` }),
        'sockmesh.requests': f.requests,
        'sockmesh.socket.cookie': f.cookie.toString(),
      },
      links: f.links,
      status: { code: SpanStatusCode.UNSET },
      resource: this.#o.resourceOf(f.active ? src : dst),
      scope: SCOPE,
    }));
  }

  /** recently finished sockets by own tuple (a peer finishing later needs the byte count and side) */
  readonly #recent = new Map<string, { close: KernelFlowEvent; active: boolean }>();

  /** Reports every flow still waiting (at shutdown). */
  flush(): void {
    for (const [key, f] of [...this.#flows]) if (f.close) this.#finish(key, f);
  }
}
