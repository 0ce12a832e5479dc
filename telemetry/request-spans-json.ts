/**
 * A sampled request's spans written as OTLP/JSON straight from its record,
 * without making them first: the same bytes as requestSpans() written by
 * writeSpan() (a test compares them over every shape a record takes), for
 * the trace file, which every traced request passes through.
 *
 * What it saves is garbage more than time. In the agent's process a young
 * collection costs about 2 ms whatever it frees, so the bytes a request
 * allocates are what it costs: the span objects (attributes, events, BigInt
 * times) came to about 2.3 KB a request, and spans built as template strings,
 * flattened to be written, to 7 KB. Here constants are bytes made once, ids
 * and text are copied byte by byte and numbers written digit by digit: about
 * 3 µs a request in a loop, and nothing allocated but the peer's address.
 *
 * A common request (one attempt that answered, no caller's trace context,
 * no retries, no denial, no error status) is written from its shape's bytes,
 * made once per caller, backend, route, method, statuses and service (see
 * Shape), with only its ids, times, port and path written between them:
 * over the agent's relay, a traced request's extra CPU went from 6.6 to
 * 4.5 µs (500-record batches, traced and untraced in turn).
 */
import type { AttributeValue, Link } from '@opentelemetry/api';
import { ByteWriter, type RequestJsonWriter, writeLink, writeValue } from './otlp-json-write.js';
import { splitPeer, type AttemptTrace, type TracedRequest } from './request-spans.js';

const enc = (s: string): Buffer => Buffer.from(s, 'latin1');
/** `{"key":"k","value":{"stringValue":`, and its number form `{"key":"k","value":`. */
const str = (k: string): Buffer => enc(`{"key":${JSON.stringify(k)},"value":{"stringValue":`);
const num = (k: string): Buffer => enc(`{"key":${JSON.stringify(k)},"value":`);
/** the same after the comma that ends the attribute before */
const next = (b: Buffer): Buffer => Buffer.concat([enc(','), b]);

const K = {
  method: str('http.request.method'), path: next(str('url.path')), serverAddress: next(str('server.address')), serverPort: next(num('server.port')),
  clientAddress: next(str('client.address')), clientPort: next(num('client.port')), localAddress: next(str('network.local.address')), localPort: next(num('network.local.port')),
  protocol: next(str('network.protocol.version')), route: next(str('http.route')), peerAddress: next(str('network.peer.address')), peerPort: next(num('network.peer.port')),
  status: next(num('http.response.status_code')), resend: next(num('http.request.resend_count')), errorType: next(str('error.type')),
  retryError: str('error.type'), retryStatus: num('http.response.status_code'), attempt: next(num('attempt')),
  policy: str('sockmesh.policy'), exceptionType: str('exception.type'), exceptionMessage: next(str('exception.message')),
};
const B = {
  traceId: enc('{"traceId":"'), spanId: enc('","spanId":"'), parentSpanId: enc('","parentSpanId":"'), traceState: enc('","traceState":'), quote: enc('"'),
  name: enc(',"name":'), clientKind: enc(',"kind":3,"startTimeUnixNano":"'), serverKind: enc(',"kind":2,"startTimeUnixNano":"'),
  end: enc('","endTimeUnixNano":"'), attributes: enc('","attributes":['), thousand: enc('000'),
  strEnd: enc('}}'), intOpen: enc('{"intValue":'), numEnd: enc('}'),
  afterAttributes: enc('],"droppedAttributesCount":0,"events":['), afterEvents: enc('],"droppedEventsCount":0,"status":{"code":'),
  errorMessage: enc('2,"message":'), afterStatus: enc('},"links":['), client: enc('],"droppedLinksCount":0,"flags":257}'), clientRemote: enc('],"droppedLinksCount":0,"flags":769}'),
  server: enc('},"links":[],"droppedLinksCount":0,"flags":257}'), eventStart: enc('{"attributes":['),
  retry: enc('],"name":"retry","timeUnixNano":"'), exception: enc('],"name":"exception","timeUnixNano":"'), denied: enc('],"name":"sockmesh.policy.denied","timeUnixNano":"'),
  eventEnd: enc('","droppedAttributesCount":0}'), deniedLayer: Buffer.concat([next(str('sockmesh.policy.layer')), enc('"proxy-l7"}}')]),
};

/** A string attribute's value and its end (after its key's bytes). */
function text(w: ByteWriter, v: string): void {
  w.string(v); w.raw(B.strEnd);
}

/** A number's AnyValue and the attribute's end, as writeValue() writes it: an integer without a string made. */
function number(w: ByteWriter, v: number): void {
  if (Number.isSafeInteger(v) && v >= 0) {
    w.raw(B.intOpen); w.uint(v); w.raw(B.strEnd);
  } else {
    writeValue(w, v as AttributeValue); w.raw(B.numEnd);
  }
}

/** ns as requestSpans makes them (whole µs × 1000), as decimal digits. */
function ns(w: ByteWriter, us: number): void {
  const r = Math.round(us);
  if (r > 0 && r <= Number.MAX_SAFE_INTEGER) {
    w.uint(r); w.raw(B.thousand);
  } else {
    w.ascii((BigInt(r) * 1000n).toString());
  }
}

/** The span's fields up to its first attribute. */
function head(w: ByteWriter, traceId: string, spanId: string, parentSpanId: string | undefined, traceState: string | undefined, name: string, kind: Buffer, startUs: number, endUs: number): void {
  w.raw(B.traceId); w.ascii(traceId); w.raw(B.spanId); w.ascii(spanId);
  if (parentSpanId) { w.raw(B.parentSpanId); w.ascii(parentSpanId); }
  if (traceState) { w.raw(B.traceState); w.string(traceState); } else w.raw(B.quote);
  nameAndKind(w, name, kind);
  times(w, startUs, endUs); w.raw(B.attributes);
}

/*
 * The parts of a span both ways of writing it share (the long way below, and
 * a common request's shape): one copy of each, in the attributes' order.
 */

/** A span's name: its method and route template, or its method. */
function spanName(r: TracedRequest): string {
  return r.route !== undefined ? `${r.method} ${r.route}` : r.method;
}

/** After the trace state: the name and the kind, up to the start time. */
function nameAndKind(w: ByteWriter, name: string, kind: Buffer): void {
  w.raw(B.name); w.string(name); w.raw(kind);
}

/** A span's start and end (never before the start). */
function times(w: ByteWriter, startUs: number, endUs: number): void {
  const start = Math.round(startUs);
  const end = Math.round(endUs);
  ns(w, start); w.raw(B.end); ns(w, end < start ? start : end);
}

/** Both spans' first attribute, and the path's key: its value comes next. */
function methodToPath(w: ByteWriter, method: string): void {
  w.raw(K.method); text(w, method); w.raw(K.path);
}

/** The CLIENT span's attributes after the path, up to the caller's port's key: its value comes next (withPort false: no port, nothing comes). */
function clientToPort(w: ByteWriter, r: TracedRequest, withPort = true): void {
  const t = r.trace;
  w.raw(K.serverAddress); text(w, t.serverAddress); w.raw(K.serverPort); number(w, t.serverPort); w.raw(K.clientAddress); text(w, r.caller);
  if (withPort) w.raw(K.clientPort);
}

/** The CLIENT span's attributes after the caller's port, up to its status (last: the last backend tried, if any). */
function clientAfterPort(w: ByteWriter, r: TracedRequest, last: [string, number] | undefined): void {
  const t = r.trace;
  w.raw(K.localAddress); text(w, r.local); w.raw(K.localPort); number(w, r.localPort); w.raw(K.protocol); text(w, t.protocol);
  if (r.route !== undefined) { w.raw(K.route); text(w, r.route); }
  if (last) { w.raw(K.peerAddress); text(w, last[0]); w.raw(K.peerPort); number(w, last[1]); }
  w.raw(K.status); number(w, r.status);
}

/** A SERVER span's attributes after the path, up to the caller's port's key: its value comes next (withPort false: no port, nothing comes). */
function serverToPort(w: ByteWriter, r: TracedRequest, ip: string, port: number, withPort = true): void {
  if (r.route !== undefined) { w.raw(K.route); text(w, r.route); }
  w.raw(K.serverAddress); text(w, ip); w.raw(K.serverPort); number(w, port);
  w.raw(K.clientAddress); text(w, r.caller); w.raw(K.peerAddress); text(w, r.caller);
  if (withPort) w.raw(K.peerPort);
}

/** Links written, by link: the requests riding one connection carry the same link object. Links are not changed once made. */
const links = new WeakMap<Link, Buffer>();

function link(l: Link): Buffer {
  let b = links.get(l);
  if (b === undefined) {
    const w = new ByteWriter(256);
    writeLink(w, l);
    links.set(l, b = Buffer.concat(w.pieces()));
  }
  return b;
}

/**
 * Writes a sampled request's spans into line, as requestSpans() makes them:
 * the caller's CLIENT span under headOf(caller), then each attempt's SERVER
 * span under headOf(the backend's address). connection: the link to the
 * kernel connection's span.
 */
export function writeRequestSpans(line: RequestJsonWriter, r: TracedRequest, connection: Link | undefined, headOf: (owner: string) => string): void {
  const t = r.trace;
  const at = t.attempts.length === 1 ? t.attempts[0]! : undefined;
  if (at !== undefined && at.error === undefined && t.retries.length === 0 && t.parentSpanId === undefined && t.traceState === undefined && r.deniedBy === undefined
    && r.spanId !== '' && isPort(r.callerPort) && isStatus(r.status) && r.status < 400 && isStatus(at.status)) {
    const s = shapeOf(r, at);
    if (s !== undefined) {
      writeCommon(line, r, at, s, connection, headOf);
      return;
    }
  }
  const name = spanName(r);
  const attempts = t.attempts;
  const peers = attempts.map((a) => splitPeer(a.peer));
  // the caller's CLIENT span
  let w = line.next(headOf(r.caller));
  head(w, r.traceId, r.spanId, t.parentSpanId, t.traceState, name, B.clientKind, t.startUs, t.endUs);
  const knownPort = r.callerPort !== 0;
  methodToPath(w, r.method); text(w, r.path); clientToPort(w, r, knownPort);
  if (knownPort) number(w, r.callerPort);
  clientAfterPort(w, r, peers[peers.length - 1]);
  if (attempts.length > 1) { w.raw(K.resend); number(w, attempts.length - 1); }
  if (r.status >= 400) { w.raw(K.errorType); text(w, String(r.status)); }
  w.raw(B.afterAttributes);
  let first = true;
  for (const e of t.retries) {
    if (!first) w.byte(0x2c);
    first = false;
    w.raw(B.eventStart);
    if (e.error !== undefined) { w.raw(K.retryError); text(w, e.error); } else { w.raw(K.retryStatus); number(w, e.status ?? 0); }
    w.raw(K.attempt); number(w, e.attempt);
    w.raw(B.retry); ns(w, e.timeUs); w.raw(B.eventEnd);
  }
  if (r.deniedBy !== undefined) {
    if (!first) w.byte(0x2c);
    w.raw(B.eventStart); w.raw(K.policy); text(w, r.deniedBy); w.raw(B.deniedLayer);
    w.raw(B.denied); ns(w, t.endUs); w.raw(B.eventEnd);
  }
  w.raw(B.afterEvents);
  if (r.status >= 400 && t.flags) { w.raw(B.errorMessage); w.string(t.flags); } else w.byte(r.status >= 400 ? 0x32 : 0x30);
  w.raw(B.afterStatus);
  if (connection) w.raw(link(connection));
  w.raw(t.parentSpanId ? B.clientRemote : B.client);
  // a SERVER span per attempt, owned by the backend tried
  for (let i = 0; i < attempts.length; i++) {
    const at = attempts[i]!;
    const [ip, port] = peers[i]!;
    w = line.next(headOf(ip));
    head(w, r.traceId, at.spanId, r.spanId, t.traceState, name, B.serverKind, at.startUs, at.endUs);
    methodToPath(w, r.method); text(w, r.path); serverToPort(w, r, ip, port, knownPort);
    if (knownPort) number(w, r.callerPort);
    if (i > 0) { w.raw(K.resend); number(w, i); }
    if (at.status > 0) { w.raw(K.status); number(w, at.status); }
    const err = at.error;
    if (err) { w.raw(K.errorType); text(w, err.type); }
    w.raw(B.afterAttributes);
    if (err) {
      w.raw(B.eventStart); w.raw(K.exceptionType); text(w, err.exception); w.raw(K.exceptionMessage); text(w, err.message);
      w.raw(B.exception); ns(w, at.endUs); w.raw(B.eventEnd);
    }
    w.raw(B.afterEvents);
    if (err) { w.raw(B.errorMessage); w.string(err.message); } else w.byte(at.status >= 500 ? 0x32 : 0x30);
    w.raw(B.server);
  }
}

/** 0..65535, written by number() as uint() writes it */
/** a known port (0: the caller's port is not known, as in Envoy's spans; its attributes are left out) */
const isPort = (v: number): boolean => Number.isInteger(v) && v >= 1 && v <= 0xffff;
/** an integer status (0: none came) */
const isStatus = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 999;

/**
 * The bytes a common request's two spans share with every request of the
 * same shape (one attempt that answered, no caller's trace context, no
 * retries, denial or error status): method, route, the service as dialled,
 * caller, listener, protocol, backend and statuses. Between them go what
 * each request has of its own: ids, times, the caller's port, the path and
 * the connection's link. The parts are written by the same functions as
 * the other requests' spans, once per shape.
 */
interface Shape {
  method: string;
  route: string | undefined;
  serverAddress: string;
  serverPort: number;
  caller: string;
  local: string;
  localPort: number;
  protocol: string;
  peer: string;
  status: number;
  attemptStatus: number;
  /** the backend's address (the SERVER span's owner) */
  ip: string;
  /** CLIENT: after the span id, up to the start; after the path, up to the caller's port; after it, up to the link */
  clientName: Buffer;
  clientAttributes: Buffer;
  clientRest: Buffer;
  /** SERVER: the same three */
  serverName: Buffer;
  serverAttributes: Buffer;
  serverRest: Buffer;
  /** both: after the end, up to the path */
  toPath: Buffer;
}

/** shapes kept at most; past it they are forgotten (at most once a minute) and made again as requests come (about 2 KB each) */
export const MAX_SHAPES = 2048;
/** shapes under one key at most (the same caller, backend and route: other methods, statuses, services dialled) */
export const PER_KEY = 8;
const FORGET_EVERY_MS = 60_000;
const shapes = new Map<string, Shape[]>();
let shapesKept = 0;
let forgotAt = -Infinity;
/** the shape found or made last */
let lastShape: Shape | undefined;

/** The shapes kept now (for the tests). */
export function shapeCount(): number {
  return shapesKept;
}

/**
 * The request's shape: kept, or made now; undefined when there is no room
 * for it (the request is written the long way, not made into a shape only
 * to be dropped again: a key's first PER_KEY shapes stay, the common
 * statuses come first). Found by caller, backend and route (no numbers to
 * print), then by every field.
 */
function shapeOf(r: TracedRequest, at: AttemptTrace): Shape | undefined {
  // the last request's shape first: steady traffic repeats it (no key to make)
  if (lastShape !== undefined && fits(lastShape, r, at)) return lastShape;
  const key = `${r.caller}\n${at.peer}\n${r.route}`;
  let list = shapes.get(key);
  if (list !== undefined) {
    for (let i = 0; i < list.length; i++) {
      const s = list[i]!;
      if (fits(s, r, at)) return lastShape = s;
    }
    if (list.length >= PER_KEY) return undefined;
  }
  if (shapesKept >= MAX_SHAPES) {
    // the requests' shapes have changed, or more are live than are kept: forget them all, not more than once a minute
    const now = performance.now();
    if (now - forgotAt < FORGET_EVERY_MS) return undefined;
    forgotAt = now;
    shapes.clear();
    shapesKept = 0;
    lastShape = undefined;
    list = undefined;
  }
  if (list === undefined) shapes.set(key, list = []);
  const made = makeShape(r, at);
  list.push(made);
  shapesKept++;
  return lastShape = made;
}

/** Whether a request has this shape: every field its bytes were made from. */
function fits(s: Shape, r: TracedRequest, at: AttemptTrace): boolean {
  const t = r.trace;
  return s.method === r.method && s.route === r.route && s.serverAddress === t.serverAddress && s.serverPort === t.serverPort && s.caller === r.caller && s.local === r.local
    && s.localPort === r.localPort && s.protocol === t.protocol && s.peer === at.peer && s.status === r.status && s.attemptStatus === at.status;
}

function bytes(write: (w: ByteWriter) => void): Buffer {
  const w = new ByteWriter(512);
  write(w);
  return Buffer.concat(w.pieces());
}

function makeShape(r: TracedRequest, at: AttemptTrace): Shape {
  const t = r.trace;
  const name = spanName(r);
  const peer = splitPeer(at.peer);
  const [ip, port] = peer;
  return {
    method: r.method, route: r.route, serverAddress: t.serverAddress, serverPort: t.serverPort, caller: r.caller, local: r.local, localPort: r.localPort,
    protocol: t.protocol, peer: at.peer, status: r.status, attemptStatus: at.status, ip,
    // no trace state: the span id's closing quote
    clientName: bytes((w) => { w.raw(B.quote); nameAndKind(w, name, B.clientKind); }),
    toPath: bytes((w) => { w.raw(B.attributes); methodToPath(w, r.method); }),
    // the caller's port is a whole number (isPort): number()'s opening and closing bytes around it
    clientAttributes: bytes((w) => { clientToPort(w, r); w.raw(B.intOpen); }),
    // a status below 400: no resend count, no error type, no events, status UNSET
    clientRest: bytes((w) => { w.raw(B.strEnd); clientAfterPort(w, r, peer); w.raw(B.afterAttributes); w.raw(B.afterEvents); w.byte(0x30); w.raw(B.afterStatus); }),
    serverName: bytes((w) => { w.raw(B.quote); nameAndKind(w, name, B.serverKind); }),
    serverAttributes: bytes((w) => { serverToPort(w, r, ip, port); w.raw(B.intOpen); }),
    // the first attempt, which answered: no resend count, no error, no events
    serverRest: bytes((w) => {
      w.raw(B.strEnd);
      if (at.status > 0) { w.raw(K.status); number(w, at.status); }
      w.raw(B.afterAttributes); w.raw(B.afterEvents); w.byte(at.status >= 500 ? 0x32 : 0x30); w.raw(B.server);
    }),
  };
}

/** A common request's spans: its shape's bytes and its own values between them. */
function writeCommon(line: RequestJsonWriter, r: TracedRequest, at: AttemptTrace, s: Shape, connection: Link | undefined, headOf: (owner: string) => string): void {
  const t = r.trace;
  let w = line.next(headOf(r.caller));
  w.raw(B.traceId); w.ascii(r.traceId); w.raw(B.spanId); w.ascii(r.spanId); w.raw(s.clientName);
  times(w, t.startUs, t.endUs);
  w.raw(s.toPath); text(w, r.path); w.raw(s.clientAttributes); w.uint(r.callerPort); w.raw(s.clientRest);
  if (connection) w.raw(link(connection));
  w.raw(B.client);
  w = line.next(headOf(s.ip));
  w.raw(B.traceId); w.ascii(r.traceId); w.raw(B.spanId); w.ascii(at.spanId); w.raw(B.parentSpanId); w.ascii(r.spanId); w.raw(s.serverName);
  times(w, at.startUs, at.endUs);
  w.raw(s.toPath); text(w, r.path); w.raw(s.serverAttributes); w.uint(r.callerPort); w.raw(s.serverRest);
}
