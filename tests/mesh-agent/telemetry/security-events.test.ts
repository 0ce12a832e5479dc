import t from 'tap';
import { InvalidArgumentError } from '../../../mesh-agent/errors.js';
import {
  MAX_LISTED_WORKLOADS, SECURITY_DETECTOR_DEFAULTS, SecurityDetector, describeSecurityEvent, securityDetectorOptions,
  type PolicyEvent, type SecurityDetectorOptions, type SecurityEvent,
} from '../../../mesh-agent/telemetry/security-events.js';

const WEB = { ip: '198.18.0.2', workload: 'shop/web-1' };
const CART = { ip: '198.18.0.3', workload: 'shop/cart-1' };
const OUTSIDE = { ip: '203.0.113.7' };
const DB = { ip: '198.18.0.10', workload: 'shop/db-1' };

/** The i-th pod of a /24 of destinations, with a workload. */
const host = (i: number) => ({ ip: `198.18.1.${i}`, workload: `shop/app-${i}` });

type Src = { ip: string; workload?: string };
type Dst = { ip: string; workload?: string };

function deny(atMs: number, source: Src, dst: Dst, port: number, x: Partial<PolicyEvent> = {}): PolicyEvent {
  return { atMs, kind: 'denied', direction: 'ingress', protocol: 'TCP', source, destination: { ...dst, port }, ...x };
}

function spoof(atMs: number, sender: string | undefined, claimed: Src, dst: Dst, port: number, x: Partial<PolicyEvent> = {}): PolicyEvent {
  return {
    atMs, kind: 'spoof', direction: 'egress', protocol: 'TCP', source: claimed, destination: { ...dst, port },
    spoof: { ...(sender !== undefined ? { sender } : {}), claimedIp: claimed.ip, ...(claimed.workload ? { claimedWorkload: claimed.workload } : {}) }, ...x,
  };
}

/** n denials of src, one a second apart from `fromMs`, to ports 1000, 1001, … on one host. */
function portSweep(src: Src, dst: Dst, n: number, fromMs = 0, stepMs = 1000, firstPort = 1000): PolicyEvent[] {
  return Array.from({ length: n }, (_, i) => deny(fromMs + i * stepMs, src, dst, firstPort + i));
}

/** n denials of src to one port on hosts 1, 2, … */
function hostSweep(src: Src, port: number, n: number, fromMs = 0, stepMs = 100): PolicyEvent[] {
  return Array.from({ length: n }, (_, i) => deny(fromMs + i * stepMs, src, host(i + 1), port));
}

/** n denials of one pair, `stepMs` apart. */
function hammer(src: Src, dst: Dst, port: number, n: number, fromMs = 0, stepMs = 100, x: Partial<PolicyEvent> = {}): PolicyEvent[] {
  return Array.from({ length: n }, (_, i) => deny(fromMs + i * stepMs, src, dst, port, x));
}

/** Feeds every event; returns the reports with the index of the event that made each. */
function feed(det: SecurityDetector, events: PolicyEvent[]): { at: number; event: SecurityEvent }[] {
  const out: { at: number; event: SecurityEvent }[] = [];
  events.forEach((e, at) => { for (const event of det.observe(e)) out.push({ at, event }); });
  return out;
}

interface Case {
  name: string;
  opts?: SecurityDetectorOptions;
  events: PolicyEvent[];
  /** every report, in order, with the index of the event that made it; compared exactly */
  expect: { at: number; event: SecurityEvent }[];
}

const scanOf = (src: Src, fields: Omit<Extract<SecurityEvent, { type: 'scan' }>, 'type' | 'source'>): SecurityEvent => ({ type: 'scan', source: src, ...fields });

const CASES: Case[] = [
  // ---- scan
  {
    name: 'scan: 9 ports on one host within the window is below the threshold',
    events: portSweep(WEB, DB, 9),
    expect: [],
  },
  {
    name: 'scan: the 10th distinct port crosses it, reported once with the source, targets and workloads',
    events: portSweep(WEB, DB, 10),
    expect: [{ at: 9, event: scanOf(WEB, { targets: 10, ports: 10, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 0, lastAtMs: 9000 }) }],
  },
  {
    name: 'scan: a scan that goes on (30 more ports, then the same ones again) is still one report',
    events: [...portSweep(WEB, DB, 40, 0, 200), ...portSweep(WEB, DB, 40, 8000, 200)],
    expect: [{ at: 9, event: scanOf(WEB, { targets: 10, ports: 10, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 0, lastAtMs: 1800 }) }],
  },
  {
    name: 'scan: one port on 10 hosts counts as well (hosts, not ports)',
    events: hostSweep(CART, 22, 10),
    expect: [{
      at: 9,
      event: scanOf(CART, {
        targets: 10, ports: 1, hosts: 10, workloadCount: 10, firstAtMs: 0, lastAtMs: 900,
        workloads: Array.from({ length: 10 }, (_, i) => `shop/app-${i + 1}`),
      }),
    }],
  },
  {
    name: 'scan: ports and hosts mixed (5 ports on 2 hosts) make 10 targets',
    events: [...portSweep(WEB, host(1), 5, 0, 100, 80), ...portSweep(WEB, host(2), 5, 500, 100, 80)],
    expect: [{ at: 9, event: scanOf(WEB, { targets: 10, ports: 5, hosts: 2, workloads: ['shop/app-1', 'shop/app-2'], workloadCount: 2, firstAtMs: 0, lastAtMs: 900 }) }],
  },
  {
    name: 'scan: the same 9 targets denied again and again never make 10',
    events: Array.from({ length: 5 }, (_, round) => portSweep(WEB, DB, 9, round * 900, 100)).flat(),
    expect: [],
  },
  {
    name: 'scan: the window slides: a target exactly one window old no longer counts, the next new one crosses it',
    events: [...portSweep(WEB, DB, 9), deny(10_000, WEB, DB, 2000), deny(10_001, WEB, DB, 2001)],
    // at 10,000 the target denied at 0 drops out (9 left); at 10,001 the eight from 1,000 on and the two new ones make 10
    expect: [{ at: 10, event: scanOf(WEB, { targets: 10, ports: 10, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 1000, lastAtMs: 10_001 }) }],
  },
  {
    name: 'scan: a gap just under a window keeps the episode; a full quiet window starts a second one',
    events: [
      ...portSweep(WEB, DB, 10, 0, 100), // crosses at 900
      ...portSweep(WEB, DB, 10, 10_899, 100, 3000), // 9,999 ms after the last denial: same episode
      ...portSweep(WEB, DB, 10, 21_799, 100, 5000), // 10,000 ms after the last denial: a new episode
    ],
    expect: [
      { at: 9, event: scanOf(WEB, { targets: 10, ports: 10, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 0, lastAtMs: 900 }) },
      { at: 29, event: scanOf(WEB, { targets: 10, ports: 10, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 21_799, lastAtMs: 22_699 }) },
    ],
  },
  {
    name: 'scan: different sources are counted apart (6 + 6 targets interleaved is no scan; one reaching 10 is)',
    events: [
      ...portSweep(WEB, DB, 6, 0, 100).flatMap((e, i) => [e, deny(e.atMs + 50, CART, DB, 1000 + i)]),
      ...portSweep(WEB, DB, 4, 600, 100, 1006),
    ],
    expect: [{ at: 15, event: scanOf(WEB, { targets: 10, ports: 10, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 0, lastAtMs: 900 }) }],
  },
  {
    name: 'scan: a source outside the mesh to destinations without workloads is named by address',
    events: Array.from({ length: 10 }, (_, i) => deny(i, OUTSIDE, { ip: `192.0.2.${i + 1}` }, 443)),
    expect: [{ at: 9, event: scanOf(OUTSIDE, { targets: 10, ports: 1, hosts: 10, workloads: [], workloadCount: 0, firstAtMs: 0, lastAtMs: 9 }) }],
  },
  {
    name: `scan: the workload list stops at ${MAX_LISTED_WORKLOADS} and says how many there were`,
    opts: { scanTargets: 30 },
    events: hostSweep(WEB, 5432, 30, 0, 10),
    expect: [{
      at: 29,
      event: scanOf(WEB, {
        targets: 30, ports: 1, hosts: 30, workloadCount: 30, firstAtMs: 0, lastAtMs: 290,
        workloads: Array.from({ length: MAX_LISTED_WORKLOADS }, (_, i) => `shop/app-${i + 1}`),
      }),
    }],
  },
  {
    name: 'scan: events a little out of order are taken at the latest time seen',
    opts: { scanTargets: 3 },
    events: [deny(5000, WEB, DB, 1), deny(4000, WEB, DB, 2), deny(5100, WEB, DB, 3)],
    expect: [{ at: 2, event: scanOf(WEB, { targets: 3, ports: 3, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 5000, lastAtMs: 5100 }) }],
  },

  // ---- repeated denials
  {
    name: 'repeated denials: 19 of one pair within the window is below the threshold',
    events: hammer(WEB, DB, 5432, 19),
    expect: [],
  },
  {
    name: 'repeated denials: the 20th is reported once, with both workloads, the port and protocol',
    events: hammer(WEB, DB, 5432, 20),
    expect: [{
      at: 19,
      event: {
        type: 'repeated-denials', source: WEB, destination: { ...DB, port: 5432 }, protocol: 'TCP', direction: 'ingress',
        denials: 20, firstAtMs: 0, lastAtMs: 1900,
      },
    }],
  },
  {
    name: 'repeated denials: suppressed counts make the threshold (1 + 9, 1 + 9)',
    events: [deny(0, WEB, DB, 5432, { suppressed: 9 }), deny(1000, WEB, DB, 5432, { suppressed: 9 })],
    expect: [{
      at: 1,
      event: {
        type: 'repeated-denials', source: WEB, destination: { ...DB, port: 5432 }, protocol: 'TCP', direction: 'ingress',
        denials: 20, firstAtMs: 0, lastAtMs: 1000,
      },
    }],
  },
  {
    name: 'repeated denials: one folded event of 1 + 50 is one report, with the whole count',
    events: [deny(0, CART, DB, 6379, { suppressed: 50, protocol: 'UDP', direction: 'egress' })],
    expect: [{
      at: 0,
      event: {
        type: 'repeated-denials', source: CART, destination: { ...DB, port: 6379 }, protocol: 'UDP', direction: 'egress',
        denials: 51, firstAtMs: 0, lastAtMs: 0,
      },
    }],
  },
  {
    name: 'repeated denials: going on is still one report; after a full quiet window, a second',
    events: [...hammer(WEB, DB, 5432, 100, 0, 100), ...hammer(WEB, DB, 5432, 20, 19_900, 10)],
    expect: [
      { at: 19, event: { type: 'repeated-denials', source: WEB, destination: { ...DB, port: 5432 }, protocol: 'TCP', direction: 'ingress', denials: 20, firstAtMs: 0, lastAtMs: 1900 } },
      { at: 119, event: { type: 'repeated-denials', source: WEB, destination: { ...DB, port: 5432 }, protocol: 'TCP', direction: 'ingress', denials: 20, firstAtMs: 19_900, lastAtMs: 20_090 } },
    ],
  },
  {
    name: 'repeated denials: denials older than the window drop out (19, then 1 a window later)',
    events: [...hammer(WEB, DB, 5432, 19, 0, 0), deny(10_000, WEB, DB, 5432)],
    expect: [],
  },
  {
    name: 'repeated denials: the pair includes the protocol and the port (10 TCP + 10 UDP, 10 on 5432 + 10 on 5433)',
    events: [...hammer(WEB, DB, 53, 10), ...hammer(WEB, DB, 53, 10, 0, 100, { protocol: 'UDP' }), ...hammer(CART, DB, 5432, 10), ...hammer(CART, DB, 5433, 10)],
    expect: [],
  },
  {
    name: 'repeated denials: different sources to one destination are counted apart',
    events: [...hammer(WEB, DB, 5432, 15), ...hammer(CART, DB, 5432, 15), ...hammer(WEB, DB, 5432, 5, 1500)],
    expect: [{ at: 34, event: { type: 'repeated-denials', source: WEB, destination: { ...DB, port: 5432 }, protocol: 'TCP', direction: 'ingress', denials: 20, firstAtMs: 0, lastAtMs: 1900 } }],
  },
  {
    name: 'a denial can cross both thresholds at once: scan first, then repeated denials',
    opts: { scanTargets: 1, repeatedDenials: 1 },
    events: [deny(7, WEB, DB, 22, { direction: undefined })],
    expect: [
      { at: 0, event: scanOf(WEB, { targets: 1, ports: 1, hosts: 1, workloads: ['shop/db-1'], workloadCount: 1, firstAtMs: 7, lastAtMs: 7 }) },
      { at: 0, event: { type: 'repeated-denials', source: WEB, destination: { ...DB, port: 22 }, protocol: 'TCP', denials: 1, firstAtMs: 7, lastAtMs: 7 } },
    ],
  },

  // ---- spoofing
  {
    name: 'spoofing: each (sender, claimed address) pair once per episode, naming both pods',
    events: [
      spoof(0, 'shop/evil-1', WEB, DB, 5432, { suppressed: 4 }),
      spoof(1000, 'shop/evil-1', WEB, DB, 5432),
      spoof(2000, 'shop/evil-1', WEB, DB, 6379), // same pair, another destination: still the same episode
      spoof(3000, 'shop/evil-1', CART, DB, 5432), // another claimed address
      spoof(4000, 'shop/evil-2', WEB, DB, 5432), // another sender
      spoof(11_999, 'shop/evil-1', WEB, DB, 5432), // 9,999 ms after the last: same episode
      spoof(21_999, 'shop/evil-1', WEB, DB, 5432), // a full window after: a new episode
    ],
    expect: [
      { at: 0, event: { type: 'spoofing', sender: 'shop/evil-1', claimedIp: WEB.ip, claimedWorkload: 'shop/web-1', destination: { ...DB, port: 5432 }, protocol: 'TCP', packets: 5, atMs: 0 } },
      { at: 3, event: { type: 'spoofing', sender: 'shop/evil-1', claimedIp: CART.ip, claimedWorkload: 'shop/cart-1', destination: { ...DB, port: 5432 }, protocol: 'TCP', packets: 1, atMs: 3000 } },
      { at: 4, event: { type: 'spoofing', sender: 'shop/evil-2', claimedIp: WEB.ip, claimedWorkload: 'shop/web-1', destination: { ...DB, port: 5432 }, protocol: 'TCP', packets: 1, atMs: 4000 } },
      { at: 6, event: { type: 'spoofing', sender: 'shop/evil-1', claimedIp: WEB.ip, claimedWorkload: 'shop/web-1', destination: { ...DB, port: 5432 }, protocol: 'TCP', packets: 1, atMs: 21_999 } },
    ],
  },
  {
    name: 'spoofing: an unknown sender and an address that is no pod are reported as such',
    events: [spoof(0, undefined, { ip: '10.99.0.1' }, DB, 53, { protocol: 'UDP' }), spoof(1, undefined, { ip: '10.99.0.1' }, DB, 53, { protocol: 'UDP' })],
    expect: [{ at: 0, event: { type: 'spoofing', claimedIp: '10.99.0.1', destination: { ...DB, port: 53 }, protocol: 'UDP', packets: 1, atMs: 0 } }],
  },
  {
    name: 'spoofing: spoofed packets never count as denials of the address they forged',
    events: Array.from({ length: 25 }, (_, i) => spoof(i * 10, 'shop/evil-1', WEB, DB, 1000 + (i % 12), { suppressed: 3 })),
    expect: [{ at: 0, event: { type: 'spoofing', sender: 'shop/evil-1', claimedIp: WEB.ip, claimedWorkload: 'shop/web-1', destination: { ...DB, port: 1000 }, protocol: 'TCP', packets: 4, atMs: 0 } }],
  },
  {
    name: 'cut connections are not attempts: they feed no detector',
    events: [...portSweep(WEB, DB, 30, 0, 10), ...hammer(WEB, DB, 5432, 30)].map((e) => ({ ...e, kind: 'cut' as const })),
    expect: [],
  },
];

for (const c of CASES) {
  t.test(c.name, async (t) => {
    const det = new SecurityDetector(c.opts);
    const got = feed(det, c.events);
    t.strictSame(got, c.expect);
    const s = det.stats();
    t.equal(s.observed, c.events.length, 'every event observed');
    t.same(s.reported, {
      scan: c.expect.filter((x) => x.event.type === 'scan').length,
      repeatedDenials: c.expect.filter((x) => x.event.type === 'repeated-denials').length,
      spoofing: c.expect.filter((x) => x.event.type === 'spoofing').length,
    }, 'stats count the reports');
  });
}

// ---- bounded memory

t.test('eviction: the tables never outgrow their caps, the key idle the longest goes, and evictions are counted', async (t) => {
  const det = new SecurityDetector({ maxSources: 100, maxPairs: 50 });
  let denialReports = 0;
  let overCap = 0;
  for (let i = 0; i < 5000; i++) {
    const src = { ip: `10.0.${(i >> 8) & 255}.${i & 255}` };
    denialReports += det.observe(deny(i, src, DB, 80)).length;
    det.observe(spoof(i, `ns/p-${i}`, WEB, DB, 80));
    const s = det.stats();
    if (s.tracked.sources > 100 || s.tracked.pairs > 50 || s.tracked.spoofPairs > 50) overCap++;
  }
  t.equal(overCap, 0, 'never over a cap');
  t.equal(denialReports, 0, 'one denial per source is nothing');
  const s = det.stats();
  t.same(s.tracked, { sources: 100, pairs: 50, spoofPairs: 50 });
  t.same(s.evicted, { sources: 4900, pairs: 4950, spoofPairs: 4950 }, 'all still within the window: evictions');
  t.equal(s.expired, 0);
  t.equal(s.reported.spoofing, 5000);
});

t.test('eviction: a key quiet for a full window makes room without counting as an eviction', async (t) => {
  const det = new SecurityDetector({ maxSources: 2, maxPairs: 2 });
  det.observe(deny(0, WEB, DB, 80));
  det.observe(deny(1, CART, DB, 80));
  det.observe(deny(10_000, OUTSIDE, DB, 80)); // WEB has been quiet for 10,000 ms
  t.same(det.stats().evicted, { sources: 0, pairs: 0, spoofPairs: 0 });
  t.equal(det.stats().expired, 2, 'WEB from both tables');
  det.observe(deny(10_001, WEB, DB, 80)); // CART is 10,000 ms idle, OUTSIDE not
  t.equal(det.stats().expired, 4);
  det.observe(deny(10_002, CART, DB, 80)); // the oldest now is OUTSIDE, 2 ms idle
  t.same(det.stats().evicted, { sources: 1, pairs: 1, spoofPairs: 0 });
});

t.test('eviction: the key used most recently survives, even if it was added first', async (t) => {
  const det = new SecurityDetector({ maxSources: 2, scanTargets: 3 });
  det.observe(deny(0, WEB, DB, 1));
  det.observe(deny(1, CART, DB, 1));
  det.observe(deny(2, WEB, DB, 2)); // WEB is now the most recent
  det.observe(deny(3, OUTSIDE, DB, 1)); // evicts CART
  const got = det.observe(deny(4, WEB, DB, 3));
  t.match(got, [{ type: 'scan', source: WEB, targets: 3, firstAtMs: 0 }], 'WEB kept its two earlier targets');
  t.same(det.stats().evicted.sources, 1);
});

t.test('eviction: a source evicted in the middle of an episode is reported again (the price of the cap)', async (t) => {
  const det = new SecurityDetector({ maxSources: 1, maxPairs: 1, scanTargets: 2 });
  t.equal(feed(det, portSweep(WEB, DB, 4, 0, 10)).length, 1);
  det.observe(deny(50, CART, DB, 1));
  t.match(feed(det, portSweep(WEB, DB, 2, 60, 10, 7000)), [{ event: { type: 'scan', source: WEB, firstAtMs: 60 } }]);
  t.same(det.stats().evicted.sources, 2);
});

t.test('sweep forgets keys quiet for a full window and keeps the others; a later event is a new episode', async (t) => {
  const det = new SecurityDetector();
  feed(det, portSweep(WEB, DB, 10, 0, 100)); // scan reported, last denial at 900
  feed(det, hammer(CART, DB, 5432, 5, 5000)); // last at 5400
  det.observe(spoof(900, 'shop/evil-1', WEB, DB, 80));
  t.same(det.stats().tracked, { sources: 2, pairs: 11, spoofPairs: 1 });
  det.sweep(10_899);
  t.same(det.stats().tracked, { sources: 2, pairs: 2, spoofPairs: 1 }, 'WEB\'s pairs last denied at 0-800 go; the source and the pair at 900 are 9,999 ms idle');
  t.equal(det.stats().expired, 9);
  det.sweep(10_900);
  t.same(det.stats().tracked, { sources: 1, pairs: 1, spoofPairs: 0 }, '10,000 ms: all of WEB\'s keys have gone, CART\'s stay');
  t.equal(det.stats().expired, 12);
  det.sweep(15_400);
  t.same(det.stats().tracked, { sources: 0, pairs: 0, spoofPairs: 0 });
  t.match(feed(det, portSweep(WEB, DB, 10, 20_000, 100)), [{ event: { type: 'scan', source: WEB, firstAtMs: 20_000 } }]);
});

t.test('a flood towards a large threshold is counted exactly (200,000 events, then one folding 799,999)', async (t) => {
  const det = new SecurityDetector({ repeatedDenials: 1_000_000, windowMs: 3_600_000 });
  for (let i = 0; i < 200_000; i++) det.observe(deny(i, WEB, DB, 5432));
  const got = det.observe(deny(200_000, WEB, DB, 5432, { suppressed: 799_999 }));
  t.match(got, [{ type: 'repeated-denials', denials: 1_000_000, firstAtMs: 0, lastAtMs: 200_000 }]);
});

// ---- options

t.test('options: defaults, frozen', async (t) => {
  const o = securityDetectorOptions();
  t.same(o, { scanTargets: 10, repeatedDenials: 20, windowMs: 10_000, maxSources: 10_000, maxPairs: 10_000 });
  t.same(o, SECURITY_DETECTOR_DEFAULTS);
  t.ok(Object.isFrozen(o));
  t.ok(Object.isFrozen(new SecurityDetector({ windowMs: 5000 }).options));
  t.equal(new SecurityDetector({ windowMs: 5000 }).options.windowMs, 5000);
  t.equal(new SecurityDetector({ maxPairs: undefined }).options.maxPairs, 10_000, 'undefined is left out');
});

const BAD_OPTIONS: { opts: Record<string, unknown>; message: RegExp; label?: string }[] = [
  { opts: { scanTargets: 0 }, message: /option scanTargets must be a whole number from 1 to 10,000, got 0$/ },
  { opts: { scanTargets: 10_001 }, message: /scanTargets .* got 10001$/ },
  { opts: { repeatedDenials: -1 }, message: /option repeatedDenials must be a whole number from 1 to 1,000,000, got -1$/ },
  { opts: { repeatedDenials: 2.5 }, message: /repeatedDenials .* got 2\.5$/ },
  { opts: { windowMs: Number.NaN }, label: 'windowMs NaN', message: /option windowMs must be a whole number from 1 to 3,600,000, got NaN$/ },
  { opts: { windowMs: Number.POSITIVE_INFINITY }, label: 'windowMs Infinity', message: /windowMs .* got Infinity$/ },
  { opts: { windowMs: '10000' }, message: /windowMs .* got "10000"$/ },
  { opts: { maxSources: 0 }, message: /option maxSources must be a whole number from 1 to 1,000,000, got 0$/ },
];

for (const { opts, message, label } of BAD_OPTIONS) {
  t.test(`options: ${label ?? JSON.stringify(opts)} is refused`, async (t) => {
    let err: unknown;
    try {
      new SecurityDetector(opts as SecurityDetectorOptions);
    } catch (e) {
      err = e;
    }
    t.type(err, InvalidArgumentError);
    t.match(err, { code: 'SOCKMESH_INVALID_ARGUMENT', message, hint: /^leave it out for the default \(\d[\d,]*\)$/ });
  });
}

// ---- one-line text

t.test('describeSecurityEvent: one line per kind', async (t) => {
  const lines = [
    ...feed(new SecurityDetector(), [...portSweep(WEB, host(1), 6, 0, 400, 20), ...portSweep(WEB, host(2), 3, 2400, 100, 20), deny(3200, WEB, { ip: '192.0.2.9' }, 22)]),
    ...feed(new SecurityDetector({ scanTargets: 10 }), hostSweep(OUTSIDE, 22, 10)),
    ...feed(new SecurityDetector(), hammer(WEB, DB, 5432, 20, 1000, 210)),
    ...feed(new SecurityDetector(), [deny(0, OUTSIDE, { ip: '192.0.2.1' }, 53, { protocol: 'UDP', direction: undefined, suppressed: 19 })]),
    ...feed(new SecurityDetector(), [spoof(0, 'shop/evil-1', WEB, DB, 5432), spoof(0, undefined, { ip: '10.99.0.1' }, DB, 53, { protocol: 'UDP' })]),
  ].map((x) => describeSecurityEvent(x.event));
  t.same(lines, [
    'SCAN shop/web-1 probed 10 destinations (6 ports on 3 hosts; 2 workloads: shop/app-1, shop/app-2) in 3.2 s (all denied)',
    'SCAN 203.0.113.7 probed 10 destinations (1 port on 10 hosts; 10 workloads: shop/app-1, shop/app-2, shop/app-3 +7 more) in 0.9 s (all denied)',
    'REPEATED DENIALS shop/web-1 → shop/db-1:5432/TCP (ingress) denied 20 times in 4.0 s',
    'REPEATED DENIALS 203.0.113.7 → 192.0.2.1:53/UDP denied 20 times in 0.0 s',
    'SPOOFING shop/evil-1 sent as shop/web-1\'s address 198.18.0.2 to shop/db-1:5432/TCP (dropped)',
    'SPOOFING an unknown pod sent as address 10.99.0.1 to shop/db-1:53/UDP (dropped)',
  ]);
});
