import t from 'tap';
import { isHexId, keepTrace, randomSpanId, randomTraceId } from '../../telemetry/trace-ids.js';

t.test('ids: lower-case hex of 32 and 16 digits, never all zeros, distinct across many pools', async (t) => {
  const traces = new Set<string>();
  const spans = new Set<string>();
  let bad = 0;
  // 20,000 pairs: each pool (4,096 bytes) gives about 170 pairs, so over a hundred refills
  for (let i = 0; i < 20_000; i++) {
    const tr = randomTraceId();
    const sp = randomSpanId();
    if (!/^[0-9a-f]{32}$/.test(tr) || /^0+$/.test(tr) || !/^[0-9a-f]{16}$/.test(sp) || /^0+$/.test(sp)) bad++;
    traces.add(tr);
    spans.add(sp);
  }
  t.equal(bad, 0, 'every id well formed');
  t.equal(traces.size, 20_000, 'no trace id twice');
  t.equal(spans.size, 20_000, 'no span id twice');
  const digits = new Map<string, number>();
  for (const id of traces) for (const c of id) digits.set(c, (digits.get(c) ?? 0) + 1);
  const counts = [...digits.values()];
  t.equal(digits.size, 16, 'all 16 digits appear');
  t.ok(Math.min(...counts) / Math.max(...counts) > 0.95, `evenly (${Math.min(...counts)}..${Math.max(...counts)} of each digit)`);
});

t.test('keepTrace: the ratio of new traces kept, decided by the id (the same id, the same answer)', async (t) => {
  t.equal(keepTrace('0af7651916cd43dd8448eb211c80319c', 1), true);
  t.equal(keepTrace('0af7651916cd43dd8448eb211c80319c', 0), false);
  t.equal(keepTrace('00000000000000000000000000000000', 0.5), true, 'low last digits are kept first');
  t.equal(keepTrace('000000000000000000000000ffffffff', 0.5), false);
  let kept = 0;
  for (let i = 0; i < 20_000; i++) if (keepTrace(randomTraceId(), 0.25)) kept++;
  t.ok(kept > 4_600 && kept < 5_400, `about a quarter of 20,000 kept at 0.25 (${kept})`);
});

t.test('isHexId: n lowercase hex digits, nothing else', async (t) => {
  t.ok(isHexId('0123456789abcdef', 16), 'every digit');
  t.ok(isHexId(randomTraceId(), 32) && isHexId(randomSpanId(), 16), 'the ids made here');
  for (const c of ['F', 'A', 'g', '/', ':', '`', ' ', 'é']) t.notOk(isHexId(`012345678abcdef${c}`, 16), `${JSON.stringify(c)} refused`);
  t.notOk(isHexId('0123456789abcde', 16), 'one digit short');
  t.notOk(isHexId('0123456789abcdef0', 16), 'one digit over');
});
