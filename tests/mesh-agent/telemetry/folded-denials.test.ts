import t from 'tap';
import type { PolicyEventRecord } from '../../../mesh-agent/datapath/layout.js';
import { type DenialKey, FoldedDenials } from '../../../mesh-agent/telemetry/folded-denials.js';

const S = 1_000_000_000n;
const rec = (tsNs: bigint, suppressed: number, over: Partial<PolicyEventRecord> = {}): PolicyEventRecord => ({
  tsNs, cookie: 1n, kind: 'deny-connect', direction: 'ingress', srcIp: '198.18.0.2', dstIp: '198.18.0.3', srcPort: 0, dstPort: 8080,
  subject: 7, peer: 9, proto: 6, suppressed, ...over,
});

/** a stand-in for sm_pol_seen: the kernel's fold per key, as emit_pol_event keeps it */
function kernel() {
  const seen = new Map<string, { lastNs: bigint; suppressed: number }>();
  const key = (k: DenialKey) => `${k.kind}|${k.direction}|${k.proto}|${k.srcIp}|${k.dstIp}|${k.dstPort}`;
  const records: PolicyEventRecord[] = [];
  return {
    records,
    lookup: (k: DenialKey) => seen.get(key(k)),
    /** one denial at nowNs: a record when the key's second is over, else folded */
    deny(nowNs: bigint, over: Partial<PolicyEventRecord> = {}) {
      const r = rec(nowNs, 0, over);
      const s = seen.get(key(r));
      if (s && nowNs - s.lastNs < S) { s.suppressed++; return; }
      records.push({ ...r, suppressed: s?.suppressed ?? 0 });
      seen.set(key(r), { lastNs: nowNs, suppressed: 0 });
    },
  };
}

const total = (rs: readonly PolicyEventRecord[]) => rs.reduce((n, r) => n + 1 + r.suppressed, 0);

t.test('a burst is reported whole a second after its last record, without waiting for another denial', async (t) => {
  const k = kernel();
  const f = new FoldedDenials();
  const out: PolicyEventRecord[] = [];
  // 500 denials over 2.5 s, one every 5 ms
  for (let i = 0; i < 500; i++) k.deny(10n * S + BigInt(i) * 5_000_000n);
  out.push(...f.onRecords(k.records.splice(0)));
  t.equal(out.length, 3, 'the kernel wrote one record per second (at 10 s, 11 s, 12 s)');
  t.ok(total(out) < 500, `the records alone stand for ${total(out)} of 500`);
  t.same(f.sweep(k.lookup, 12n * S + S / 2n), [], 'half a second after the last record: still folding, nothing yet');
  const trailing = f.sweep(k.lookup, 13n * S + S / 10n);
  t.equal(trailing.length, 1, 'a second after it: one trailing record');
  t.equal(total([...out, ...trailing]), 500, 'and now every denial is counted');
  t.match(trailing[0], { srcIp: '198.18.0.2', dstIp: '198.18.0.3', dstPort: 8080, subject: 7, peer: 9, kind: 'deny-connect' }, 'a copy of the last record');
  t.same(f.sweep(k.lookup, 13n * S + S / 2n), [], 'reported once');
  t.same(f.sweep(k.lookup, 20n * S), [], 'and the key is no longer watched');
  t.equal(f.size, 0);
});

t.test('denials between a sweep and the next record are not counted twice', async (t) => {
  const k = kernel();
  const f = new FoldedDenials();
  const out: PolicyEventRecord[] = [];
  k.deny(0n);
  for (let i = 1; i <= 9; i++) k.deny(BigInt(i) * 100_000_000n); // 9 folded within the second
  out.push(...f.onRecords(k.records.splice(0)));
  out.push(...f.sweep(k.lookup, S + S / 10n));
  t.equal(total(out), 10, 'the record and the trailing report: 10');
  k.deny(3n * S); // the next denial makes a record carrying the fold's 9 again
  const next = f.onRecords(k.records.splice(0));
  t.equal(next[0]!.suppressed, 0, 'the next record carries only what the sweep did not report');
  out.push(...next);
  t.equal(total(out), 11);
});

t.test('a fold whose newer record is still in the ring is left for that record', async (t) => {
  const k = kernel();
  const f = new FoldedDenials();
  k.deny(0n);
  k.deny(S / 2n);
  f.onRecords(k.records.splice(0));
  k.deny(S + S / 5n); // a new record the agent has not read yet; the kernel's fold now belongs to it
  k.deny(S + S / 2n);
  t.same(f.sweep(k.lookup, S + S / 2n + 1n), [], 'not reported as the old record\'s');
  const late = f.onRecords(k.records.splice(0));
  t.equal(late[0]!.suppressed, 1, 'the old fold arrives with the new record, once');
});

t.test('cuts are never folded; keys are bounded', async (t) => {
  const f = new FoldedDenials(2);
  const cut = rec(0n, 0, { kind: 'cut' });
  t.same(f.onRecords([cut]), [cut]);
  t.equal(f.size, 0, 'a cut is not watched');
  f.onRecords([rec(0n, 0, { dstPort: 1 }), rec(0n, 0, { dstPort: 2 }), rec(0n, 0, { dstPort: 3 })]);
  t.equal(f.size, 2, 'the oldest key goes past the bound');
});
