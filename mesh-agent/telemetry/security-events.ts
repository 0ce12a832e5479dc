/**
 * Security detectors over the kernel's policy events (docs/policy-datapath.md
 * §7). Each detector turns a stream of denials or spoof drops into one
 * report per episode, naming the workloads involved:
 *
 * - scan: one source is denied on at least `scanTargets` distinct
 *   (destination ip, port) pairs within `windowMs`. Ports on one host and one
 *   port on many hosts both count.
 * - repeated-denials: one (source ip, destination ip, port, protocol) pair is
 *   denied at least `repeatedDenials` times within `windowMs`, counting the
 *   events the kernel folded into each one (`suppressed`).
 * - spoofing: a pod sent packets with another address; every distinct
 *   (sending pod, claimed address) pair is reported.
 *
 * An episode is reported when it starts (the threshold is crossed, or the
 * first spoofed packet) and not again while it goes on. It ends once its key
 * has been quiet (no denial, no spoof) for a full window; the next one is a
 * new episode. "Within the window" means less than `windowMs` before the
 * event being observed; "quiet for a full window" means at least `windowMs`.
 *
 * Only `denied` events feed scan and repeated-denials. A spoof event's source
 * address is the forged one, so it never counts against that address; `cut`
 * events (connections a policy change closed) are not attempts and are
 * ignored. Time is the events' `atMs`; events a little out of order are taken
 * at the latest time already seen for their key.
 *
 * Pure and synchronous: no I/O, no timers. The agent calls `sweep(nowMs)`
 * now and then to forget keys quiet for a full window (forgetting them loses
 * nothing). Memory is bounded: at most `maxSources` scan sources, each with
 * fewer than `scanTargets` targets, and at most `maxPairs` denial pairs (each
 * with fewer than `repeatedDenials` timestamps) and `maxPairs` spoof pairs.
 * When a table is full, the key idle the longest makes room; if it was still
 * in an episode that is an eviction (counted in `stats()`), and its next
 * event may be reported again.
 */
import { InvalidArgumentError } from '../errors.js';

/** One policy event, as the agent decodes it from the kernel's `sm_pol_events` ring. */
export interface PolicyEvent {
  /** agent clock, ms */
  atMs: number;
  kind: 'denied' | 'spoof' | 'cut';
  direction?: 'ingress' | 'egress';
  protocol: 'TCP' | 'UDP';
  source: { ip: string; workload?: string /* "ns/pod" when known */ };
  destination: { ip: string; port: number; workload?: string };
  /** spoof only: the pod behind the interface the packet came from, and the address it claimed */
  spoof?: { sender?: string; claimedIp: string; claimedWorkload?: string };
  /** kernel folded this many identical events into this one (count = 1 + suppressed) */
  suppressed?: number;
}

/** An address and, when known, the workload ("ns/pod") behind it. */
export interface SecurityEndpoint {
  readonly ip: string;
  readonly workload?: string;
}

/** One source denied on many distinct (destination ip, port) pairs. */
export interface ScanEvent {
  readonly type: 'scan';
  readonly source: SecurityEndpoint;
  /** distinct (destination ip, port) pairs denied within the window when the threshold was crossed */
  readonly targets: number;
  /** distinct destination ports among them */
  readonly ports: number;
  /** distinct destination addresses among them */
  readonly hosts: number;
  /** the distinct destination workloads among them, in the order first denied, at most MAX_LISTED_WORKLOADS */
  readonly workloads: readonly string[];
  /** how many distinct destination workloads there were in all */
  readonly workloadCount: number;
  /** the earliest denial among the targets, ms */
  readonly firstAtMs: number;
  /** the denial that crossed the threshold, ms */
  readonly lastAtMs: number;
}

/** One source denied again and again on one destination port. */
export interface RepeatedDenialsEvent {
  readonly type: 'repeated-denials';
  readonly source: SecurityEndpoint;
  readonly destination: SecurityEndpoint & { readonly port: number };
  readonly protocol: 'TCP' | 'UDP';
  /** the direction of the denial that crossed the threshold, when the kernel said */
  readonly direction?: 'ingress' | 'egress';
  /** denials within the window when the threshold was crossed, suppressed ones included */
  readonly denials: number;
  /** the earliest of them, ms */
  readonly firstAtMs: number;
  /** the one that crossed the threshold, ms */
  readonly lastAtMs: number;
}

/** A pod sent packets with another address than its own. */
export interface SpoofingEvent {
  readonly type: 'spoofing';
  /** the pod behind the interface the packets came from ("ns/pod"), when known */
  readonly sender?: string;
  /** the address it claimed */
  readonly claimedIp: string;
  /** the pod that address belongs to, when it is one */
  readonly claimedWorkload?: string;
  /** where the first packet of the episode was going */
  readonly destination: SecurityEndpoint & { readonly port: number };
  readonly protocol: 'TCP' | 'UDP';
  /** packets in that first event, suppressed ones included */
  readonly packets: number;
  readonly atMs: number;
}

export type SecurityEvent = ScanEvent | RepeatedDenialsEvent | SpoofingEvent;

export interface SecurityDetectorOptions {
  /** distinct (destination ip, port) pairs one source must be denied on within the window to be a scan; 1-10,000, default 10 */
  readonly scanTargets?: number;
  /** denials of one (source, destination ip, port, protocol) pair within the window, suppressed ones included; 1-1,000,000, default 20 */
  readonly repeatedDenials?: number;
  /** the window, and the quiet time that ends an episode, ms; 1-3,600,000, default 10,000 */
  readonly windowMs?: number;
  /** scan sources tracked at once; 1-1,000,000, default 10,000 */
  readonly maxSources?: number;
  /** denial pairs, and separately spoof pairs, tracked at once; 1-1,000,000, default 10,000 */
  readonly maxPairs?: number;
}

export const SECURITY_DETECTOR_DEFAULTS: Readonly<Required<SecurityDetectorOptions>> = Object.freeze({
  scanTargets: 10,
  repeatedDenials: 20,
  windowMs: 10_000,
  maxSources: 10_000,
  maxPairs: 10_000,
});

const OPTION_LIMITS: Readonly<Record<keyof SecurityDetectorOptions, number>> = Object.freeze({
  scanTargets: 10_000,
  repeatedDenials: 1_000_000,
  windowMs: 3_600_000,
  maxSources: 1_000_000,
  maxPairs: 1_000_000,
});

/** A scan report lists at most this many destination workloads (and says how many there were). */
export const MAX_LISTED_WORKLOADS = 20;

/** Validates and fills in the defaults; the result is frozen. */
export function securityDetectorOptions(o: SecurityDetectorOptions = {}): Readonly<Required<SecurityDetectorOptions>> {
  const out: Record<string, number> = {};
  for (const name of Object.keys(SECURITY_DETECTOR_DEFAULTS) as (keyof SecurityDetectorOptions)[]) {
    const v = o[name] ?? SECURITY_DETECTOR_DEFAULTS[name];
    const max = OPTION_LIMITS[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
      throw new InvalidArgumentError(
        `the security detector option ${name} must be a whole number from 1 to ${max.toLocaleString('en-US')}, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`,
        `leave it out for the default (${SECURITY_DETECTOR_DEFAULTS[name].toLocaleString('en-US')})`,
      );
    }
    out[name] = v;
  }
  return Object.freeze(out as Required<SecurityDetectorOptions>);
}

export interface SecurityDetectorStats {
  /** policy events observed, of every kind */
  readonly observed: number;
  /** keys tracked now */
  readonly tracked: { readonly sources: number; readonly pairs: number; readonly spoofPairs: number };
  /** keys dropped to make room while still in an episode (their next event may be reported again) */
  readonly evicted: { readonly sources: number; readonly pairs: number; readonly spoofPairs: number };
  /** keys forgotten after a full quiet window (by sweep, or to make room; nothing lost) */
  readonly expired: number;
  /** reports made */
  readonly reported: { readonly scan: number; readonly repeatedDenials: number; readonly spoofing: number };
}

interface ScanTarget {
  ip: string;
  port: number;
  workload: string | undefined;
  atMs: number;
}

interface ScanState {
  workload: string | undefined;
  lastMs: number;
  /** reported in this episode: no more targets are kept until it ends */
  reported: boolean;
  /** "ip port" → the latest denial, in order of that denial (oldest first) */
  targets: Map<string, ScanTarget>;
}

interface PairState {
  lastMs: number;
  reported: boolean;
  /** denials within the window, oldest first, from `head` on; `sum` is their total */
  hits: { atMs: number; n: number }[];
  head: number;
  sum: number;
}

interface SpoofState {
  lastMs: number;
}

type Table = 'sources' | 'pairs' | 'spoofPairs';

/** Cross-workload security detectors over one node's policy events; see the module comment. */
export class SecurityDetector {
  readonly options: Readonly<Required<SecurityDetectorOptions>>;
  readonly #sources = new Map<string, ScanState>();
  readonly #pairs = new Map<string, PairState>();
  readonly #spoofs = new Map<string, SpoofState>();
  #observed = 0;
  #expired = 0;
  readonly #evicted = { sources: 0, pairs: 0, spoofPairs: 0 };
  readonly #reported = { scan: 0, repeatedDenials: 0, spoofing: 0 };

  constructor(opts?: SecurityDetectorOptions) {
    this.options = securityDetectorOptions(opts);
  }

  /** Feeds one event; returns the reports it starts (usually none). */
  observe(e: PolicyEvent): SecurityEvent[] {
    this.#observed++;
    const out: SecurityEvent[] = [];
    if (e.kind === 'denied') {
      const scan = this.#observeScan(e);
      if (scan) out.push(scan);
      const repeated = this.#observeRepeated(e);
      if (repeated) out.push(repeated);
    } else if (e.kind === 'spoof') {
      const spoof = this.#observeSpoof(e);
      if (spoof) out.push(spoof);
    }
    return out;
  }

  /** Forgets every key quiet for a full window at `nowMs`; a later event for it starts a new episode either way. */
  sweep(nowMs: number): void {
    const w = this.options.windowMs;
    for (const map of [this.#sources, this.#pairs, this.#spoofs] as Map<string, { lastMs: number }>[]) {
      for (const [key, s] of map) {
        if (nowMs - s.lastMs >= w) {
          map.delete(key);
          this.#expired++;
        }
      }
    }
  }

  stats(): SecurityDetectorStats {
    return {
      observed: this.#observed,
      tracked: { sources: this.#sources.size, pairs: this.#pairs.size, spoofPairs: this.#spoofs.size },
      evicted: { ...this.#evicted },
      expired: this.#expired,
      reported: { ...this.#reported },
    };
  }

  #observeScan(e: PolicyEvent): ScanEvent | undefined {
    const { scanTargets, windowMs, maxSources } = this.options;
    const key = e.source.ip;
    let s = this.#sources.get(key);
    let now = e.atMs;
    if (s) {
      now = Math.max(now, s.lastMs);
      if (now - s.lastMs >= windowMs) {
        s.reported = false; // quiet for a full window: a new episode
        s.targets.clear();
      }
      this.#sources.delete(key); // re-inserted below: the map stays in order of last activity
    } else {
      this.#makeRoom(this.#sources, maxSources, 'sources', now);
      s = { workload: undefined, lastMs: now, reported: false, targets: new Map() };
    }
    this.#sources.set(key, s);
    s.lastMs = now;
    if (e.source.workload !== undefined) s.workload = e.source.workload;
    if (s.reported) return undefined;

    const tkey = `${e.destination.ip} ${e.destination.port}`;
    const prev = s.targets.get(tkey);
    s.targets.delete(tkey);
    s.targets.set(tkey, { ip: e.destination.ip, port: e.destination.port, workload: e.destination.workload ?? prev?.workload, atMs: now });
    for (const [k, t] of s.targets) {
      if (now - t.atMs < windowMs) break;
      s.targets.delete(k);
    }
    if (s.targets.size < scanTargets) return undefined;

    const targets = [...s.targets.values()];
    s.reported = true;
    s.targets.clear();
    this.#reported.scan++;
    const workloads = distinct(targets.map((t) => t.workload).filter((w): w is string => w !== undefined));
    return {
      type: 'scan',
      source: endpoint(key, s.workload),
      targets: targets.length,
      ports: new Set(targets.map((t) => t.port)).size,
      hosts: new Set(targets.map((t) => t.ip)).size,
      workloads: workloads.slice(0, MAX_LISTED_WORKLOADS),
      workloadCount: workloads.length,
      firstAtMs: targets[0]!.atMs,
      lastAtMs: now,
    };
  }

  #observeRepeated(e: PolicyEvent): RepeatedDenialsEvent | undefined {
    const { repeatedDenials, windowMs, maxPairs } = this.options;
    const key = `${e.source.ip} ${e.destination.ip} ${e.destination.port} ${e.protocol}`;
    let s = this.#pairs.get(key);
    let now = e.atMs;
    if (s) {
      now = Math.max(now, s.lastMs);
      if (now - s.lastMs >= windowMs) {
        s.reported = false;
        clearHits(s);
      }
      this.#pairs.delete(key);
    } else {
      this.#makeRoom(this.#pairs, maxPairs, 'pairs', now);
      s = { lastMs: now, reported: false, hits: [], head: 0, sum: 0 };
    }
    this.#pairs.set(key, s);
    s.lastMs = now;
    if (s.reported) return undefined;

    const n = 1 + foldedCount(e.suppressed);
    const last = s.hits[s.hits.length - 1];
    if (last !== undefined && s.hits.length > s.head && last.atMs === now) last.n += n;
    else s.hits.push({ atMs: now, n });
    s.sum += n;
    while (s.head < s.hits.length && now - s.hits[s.head]!.atMs >= windowMs) {
      s.sum -= s.hits[s.head]!.n;
      s.head++;
    }
    if (s.head > 32 && s.head * 2 > s.hits.length) {
      s.hits = s.hits.slice(s.head);
      s.head = 0;
    }
    if (s.sum < repeatedDenials) return undefined;

    const denials = s.sum;
    const firstAtMs = s.hits[s.head]!.atMs;
    s.reported = true;
    clearHits(s);
    this.#reported.repeatedDenials++;
    return {
      type: 'repeated-denials',
      source: endpoint(e.source.ip, e.source.workload),
      destination: { ...endpoint(e.destination.ip, e.destination.workload), port: e.destination.port },
      protocol: e.protocol,
      ...(e.direction !== undefined ? { direction: e.direction } : {}),
      denials,
      firstAtMs,
      lastAtMs: now,
    };
  }

  #observeSpoof(e: PolicyEvent): SpoofingEvent | undefined {
    const { windowMs, maxPairs } = this.options;
    const claimedIp = e.spoof?.claimedIp ?? e.source.ip;
    const sender = e.spoof?.sender;
    const key = `${sender ?? ''} ${claimedIp}`;
    const s = this.#spoofs.get(key);
    let now = e.atMs;
    let fresh = true;
    if (s) {
      now = Math.max(now, s.lastMs);
      fresh = now - s.lastMs >= windowMs;
      this.#spoofs.delete(key);
    } else {
      this.#makeRoom(this.#spoofs, maxPairs, 'spoofPairs', now);
    }
    this.#spoofs.set(key, { lastMs: now });
    if (!fresh) return undefined;

    this.#reported.spoofing++;
    const claimedWorkload = e.spoof?.claimedWorkload ?? (e.source.ip === claimedIp ? e.source.workload : undefined);
    return {
      type: 'spoofing',
      ...(sender !== undefined ? { sender } : {}),
      claimedIp,
      ...(claimedWorkload !== undefined ? { claimedWorkload } : {}),
      destination: { ...endpoint(e.destination.ip, e.destination.workload), port: e.destination.port },
      protocol: e.protocol,
      packets: 1 + foldedCount(e.suppressed),
      atMs: now,
    };
  }

  /** Before adding a key to a full table: drops the key idle the longest. */
  #makeRoom(map: Map<string, { lastMs: number }>, max: number, table: Table, nowMs: number): void {
    while (map.size >= max) {
      const first = map.entries().next().value;
      if (first === undefined) return;
      map.delete(first[0]);
      if (nowMs - first[1].lastMs >= this.options.windowMs) this.#expired++;
      else this.#evicted[table]++;
    }
  }
}

/** One line for `mesh-agent observe`, e.g. "SCAN shop/web-1 probed 12 destinations (…) in 3.2 s (all denied)". */
export function describeSecurityEvent(e: SecurityEvent): string {
  switch (e.type) {
    case 'scan': {
      const shown = e.workloads.slice(0, 3);
      const more = e.workloadCount - shown.length;
      const on = e.workloadCount === 0
        ? 'no known workload'
        : `${plural(e.workloadCount, 'workload')}: ${shown.join(', ')}${more > 0 ? ` +${more} more` : ''}`;
      return `SCAN ${label(e.source)} probed ${plural(e.targets, 'destination')} (${plural(e.ports, 'port')} on ${plural(e.hosts, 'host')}; ${on}) in ${seconds(e.lastAtMs - e.firstAtMs)} (all denied)`;
    }
    case 'repeated-denials':
      return `REPEATED DENIALS ${label(e.source)} → ${label(e.destination)}:${e.destination.port}/${e.protocol}${e.direction ? ` (${e.direction})` : ''} denied ${plural(e.denials, 'time')} in ${seconds(e.lastAtMs - e.firstAtMs)}`;
    case 'spoofing': {
      const claimed = e.claimedWorkload !== undefined ? `${e.claimedWorkload}'s address ${e.claimedIp}` : `address ${e.claimedIp}`;
      return `SPOOFING ${e.sender ?? 'an unknown pod'} sent as ${claimed} to ${label(e.destination)}:${e.destination.port}/${e.protocol} (dropped)`;
    }
  }
}

function endpoint(ip: string, workload: string | undefined): SecurityEndpoint {
  return workload !== undefined ? { ip, workload } : { ip };
}

function label(p: SecurityEndpoint): string {
  return p.workload ?? p.ip;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function distinct(xs: string[]): string[] {
  return [...new Set(xs)];
}

/** The kernel's `suppressed`; anything but a positive count is none. */
function foldedCount(suppressed: number | undefined): number {
  return suppressed !== undefined && Number.isFinite(suppressed) && suppressed > 0 ? Math.floor(suppressed) : 0;
}

function clearHits(s: PairState): void {
  s.hits = [];
  s.head = 0;
  s.sum = 0;
}
