/**
 * Flow records from the kernel: sockops writes one struct sm_flow_event on
 * the sm_flow_events ring buffer when a connection the mesh tracks is
 * established, and one when that socket closes (bpf/sockmesh.h). This module
 * decodes them, with offsets and enum values from the object's BTF, and
 * drains the ring buffer from a timer.
 */
import { closeSync } from 'node:fs';
import { InvalidArgumentError, LayoutMismatchError } from '../errors.js';
import { type DatapathLayout, type FlowEventLayout, decodeIPv4 } from './layout.js';
import { BPF, RingBuffer, mapInfo, objGet } from './libbpf.js';

/** An IPv4 address and a port. */
export interface FlowEndpoint {
  ip: string;
  port: number;
}

/**
 * One socket's side of a connection: short-circuited connections report both
 * sockets (client and server), each opening and closing.
 */
export interface FlowEvent {
  kind: 'open' | 'close';
  /** The socket's cookie: the same in its open and close events. */
  cookie: bigint;
  /** When it happened, kernel CLOCK_MONOTONIC ns (see monotonicToEpochNs). */
  tsNs: bigint;
  /** Close events: when the connection was established (CLOCK_MONOTONIC ns). */
  openNs?: bigint;
  /** This socket's address. */
  local: FlowEndpoint;
  /** The peer's address; for a connection to a service VIP, the backend it reached. */
  remote: FlowEndpoint;
  /** This socket connected (the client side); false for an accepted socket. */
  active: boolean;
  /** The socket entered the sockhash: its sends may bypass TCP/IP. */
  shortCircuited: boolean;
  /** The service VIP:port the client dialled (client sockets that connect4 translated). */
  service?: FlowEndpoint;
  /** Payload bytes the peer acknowledged through TCP (SYN and FIN not counted); 0 in open events. */
  stackSentBytes: number;
  /** Payload bytes received through TCP (SYN and FIN not counted); 0 in open events. */
  stackRecvBytes: number;
  /** Bytes sk_msg redirected from this socket straight into its peer. */
  redirSentBytes: number;
}

/** Decodes one ring buffer record (struct sm_flow_event). */
export function decodeFlowEvent(record: Buffer, layout: FlowEventLayout): FlowEvent {
  if (record.length < layout.size) {
    throw new LayoutMismatchError(`a flow record of ${record.length} bytes is shorter than struct sm_flow_event (${layout.size})`);
  }
  const o = layout.offsets;
  const u64 = (name: string) => record.readBigUInt64LE(o[name]!);
  const u32 = (name: string) => record.readUInt32LE(o[name]!);
  const kindValue = u32('kind');
  let kind: FlowEvent['kind'];
  if (kindValue === layout.kindOpen) kind = 'open';
  else if (kindValue === layout.kindClose) kind = 'close';
  else throw new LayoutMismatchError(`a flow record has kind ${kindValue}, not one of enum sm_flow_kind`);
  const flags = u32('flags');
  const ev: FlowEvent = {
    kind,
    cookie: u64('cookie'),
    tsNs: u64('ts_ns'),
    local: { ip: decodeIPv4(record, o.local_ip4), port: u32('local_port') },
    remote: { ip: decodeIPv4(record, o.remote_ip4), port: u32('remote_port') },
    active: (flags & layout.flagActive) !== 0,
    shortCircuited: (flags & layout.flagShortCircuited) !== 0,
    stackSentBytes: Number(u64('stack_sent')),
    stackRecvBytes: Number(u64('stack_recv')),
    redirSentBytes: Number(u64('redir_sent')),
  };
  if (kind === 'close') ev.openNs = u64('open_ns');
  if ((flags & layout.flagService) !== 0) ev.service = { ip: decodeIPv4(record, o.svc_ip4), port: u32('svc_port') };
  return ev;
}

/**
 * Unix epoch ns minus CLOCK_MONOTONIC ns, now. bpf_ktime_get_ns() and
 * process.hrtime.bigint() read the same clock; the wall clock is read to the
 * millisecond. Measure once per batch: the difference moves when the wall
 * clock is stepped.
 */
export function epochOffsetNs(): bigint {
  const before = process.hrtime.bigint();
  const wallMs = Date.now();
  const after = process.hrtime.bigint();
  return BigInt(wallMs) * 1_000_000n - (before + after) / 2n;
}

/** A kernel CLOCK_MONOTONIC time (FlowEvent.tsNs, openNs) as Unix epoch ns. */
export function monotonicToEpochNs(monotonicNs: bigint, offsetNs: bigint = epochOffsetNs()): bigint {
  return monotonicNs + offsetNs;
}

/** Options of a RingRecordReader. Frozen after validation. */
export interface RingRecordReaderOptions<T> {
  /** bpffs path of the pinned ring buffer map. */
  mapPath: string;
  /** Turns one record into an event (throws on a record that does not decode). */
  decode: (record: Buffer) => T;
  /** Gets every non-empty batch of events, oldest first. */
  onEvents: (events: T[]) => void;
  /** How often the reader drains the ring buffer once started, in ms. Default: 100. */
  pollIntervalMs?: number;
  /**
   * Gets what a timer-driven poll throws (a record that does not decode, an
   * onEvents that throws); polling goes on. Default: none, so the error is
   * thrown from the timer and is uncaught.
   */
  onError?: (err: unknown) => void;
}

/** Options of a FlowEventReader. Frozen after validation. */
export interface FlowEventReaderOptions extends Omit<RingRecordReaderOptions<FlowEvent>, 'decode'> {
  /** The layout learned from the BPF object's BTF (Datapath.layout). */
  layout: DatapathLayout;
}

type ValidReaderOptions<T> = Readonly<Required<Omit<RingRecordReaderOptions<T>, 'onError'>> & Pick<RingRecordReaderOptions<T>, 'onError'>>;

function validateReader<T>(opts: RingRecordReaderOptions<T>): ValidReaderOptions<T> {
  if (typeof opts.mapPath !== 'string' || !opts.mapPath.startsWith('/')) {
    throw new InvalidArgumentError(`mapPath must be an absolute bpffs path, got ${JSON.stringify(opts.mapPath)}`);
  }
  if (typeof opts.onEvents !== 'function') throw new InvalidArgumentError('onEvents must be a function');
  if (typeof opts.decode !== 'function') throw new InvalidArgumentError('decode must be a function');
  if (opts.onError !== undefined && typeof opts.onError !== 'function') throw new InvalidArgumentError('onError must be a function');
  const pollIntervalMs = opts.pollIntervalMs ?? 100;
  if (!Number.isInteger(pollIntervalMs) || pollIntervalMs < 1 || pollIntervalMs > 60_000) {
    throw new InvalidArgumentError(`pollIntervalMs must be an integer from 1 to 60000, got ${pollIntervalMs}`);
  }
  return Object.freeze({ mapPath: opts.mapPath, decode: opts.decode, onEvents: opts.onEvents, pollIntervalMs, onError: opts.onError });
}

/**
 * Drains a ring buffer every pollIntervalMs and hands the decoded events to
 * onEvents. The constructor only validates; start() opens the pinned map and
 * starts the timer (unref'd: it keeps no process alive); stop() delivers what
 * is left, then releases the timer, the ring and the map fd.
 */
export class RingRecordReader<T> {
  readonly options: ValidReaderOptions<T>;
  #fd: number | undefined;
  #ring: RingBuffer | undefined;
  #timer: NodeJS.Timeout | undefined;
  #records: Buffer[] = [];

  constructor(opts: RingRecordReaderOptions<T>) {
    this.options = validateReader(opts);
  }

  /** Opens the map and starts polling. */
  start(): void {
    if (this.#fd !== undefined) throw new InvalidArgumentError('this reader was started already');
    const fd = objGet(this.options.mapPath);
    try {
      const info = mapInfo(fd);
      if (info.type !== BPF.MAP_TYPE_RINGBUF) {
        throw new InvalidArgumentError(`${this.options.mapPath} is a map of type ${info.type}, not a ring buffer (${BPF.MAP_TYPE_RINGBUF})`);
      }
      this.#ring = RingBuffer.open(fd, (r) => this.#records.push(r));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#fd = fd;
    this.#timer = setInterval(() => this.#pollFromTimer(), this.options.pollIntervalMs).unref();
  }

  /**
   * Drains the ring buffer now and delivers the batch (when not empty);
   * returns how many events it delivered. The timer calls it; so may anyone.
   */
  poll(): number {
    if (!this.#ring) return 0;
    let failure: unknown;
    try {
      this.#ring.consume();
    } catch (err) {
      failure = err; // the records consumed before it are still delivered
    }
    const records = this.#records;
    this.#records = [];
    if (records.length > 0) this.options.onEvents(records.map((r) => this.options.decode(r)));
    if (failure !== undefined) throw failure;
    return records.length;
  }

  #pollFromTimer(): void {
    try {
      this.poll();
    } catch (err) {
      if (!this.options.onError) throw err;
      this.options.onError(err);
    }
  }

  /** Delivers what is left, then stops the timer and frees the ring and the fd. Idempotent. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    try {
      if (this.#ring) this.poll();
    } finally {
      this.#ring?.free();
      this.#ring = undefined;
      if (this.#fd !== undefined) closeSync(this.#fd);
      this.#fd = undefined;
      this.#records = [];
    }
  }
}

/** The reader of sm_flow_events: records decoded by the object's layout. */
export class FlowEventReader extends RingRecordReader<FlowEvent> {
  constructor(opts: FlowEventReaderOptions) {
    const { layout, ...rest } = opts;
    super({ ...rest, decode: (r) => decodeFlowEvent(r, layout.flowEvent) });
  }
}
