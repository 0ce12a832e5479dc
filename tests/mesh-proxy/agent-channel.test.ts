import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { AgentChannel, decodeRecords, encodeRecord } from '../../mesh-proxy/agent-channel.js';
import type { RequestRecord } from '../../mesh-proxy/proxy.js';

const rec = (i: number): RequestRecord => ({
  endMs: 1_700_000_000_000 + i, durationMs: 1.5, method: 'GET', path: `/p${i}`, route: '/*', status: 200, caller: '198.18.0.3', callerPort: 40000 + i,
  local: '198.18.0.1', localPort: 20000, upstream: '198.18.0.4:8080', host: 'web', attempts: 1, traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), sampled: i % 2 === 0,
});

t.test('records on the wire: arrays both ways, a sampled one with its trace; malformed ones named', async (t) => {
  const { route: _r, upstream: _u, ...bare } = rec(1);
  const withTrace: RequestRecord = { ...rec(2), trace: {
    startUs: 1.7e15, endUs: 1.7e15 + 1500, protocol: '1.1', serverAddress: 'web', serverPort: 80, retries: [],
    attempts: [{ spanId: 'c'.repeat(16), startUs: 1.7e15 + 10, endUs: 1.7e15 + 1400, peer: '198.18.0.4:8080', status: 200 }],
  } };
  t.same(decodeRecords(JSON.parse(JSON.stringify({ records: [encodeRecord(rec(0)), encodeRecord(bare), encodeRecord(withTrace)] }))), [rec(0), bare, withTrace]);
  t.same(decodeRecords({ records: [encodeRecord(rec(0)).slice(0, 16)] }), [rec(0)], 'a record from a proxy of an earlier build (no trace) is taken');
  const denied: RequestRecord = { ...rec(3), status: 403, deniedBy: 'shop/deny-post/rule-0' };
  const { route: _dr, upstream: _du, ...deniedBare } = denied;
  t.same(decodeRecords(JSON.parse(JSON.stringify({ records: [encodeRecord(deniedBare), encodeRecord(rec(4))] }))), [deniedBare, rec(4)], 'a denied request keeps the policy that denied it; others have none');
  t.equal(encodeRecord(deniedBare).length, 18, 'the policy is element 17');
  t.same(decodeRecords({ records: [encodeRecord(withTrace).slice(0, 17)] }), [withTrace], 'a record from a proxy of the build before RBAC (17 elements) is taken');
  t.throws(() => decodeRecords({ records: [[...encodeRecord(rec(0)), 'extra']] }), /records\[0\]: not a request record/, 'more elements than any build writes: refused');
  t.throws(() => decodeRecords({}), /records: missing/);
  t.throws(() => decodeRecords({ records: [encodeRecord(rec(0)), [1, 2]] }), /records\[1\]: not a request record/);
  const badTrace = encodeRecord(withTrace);
  badTrace[16]![9] = [['short']] as never;
  t.throws(() => decodeRecords({ records: [badTrace] }), /records\[0\]\.trace: attempts\[0\]: not an attempt/);
  const badId = encodeRecord({ ...withTrace, traceId: 'x"y' });
  t.throws(() => decodeRecords({ records: [badId] }), /records\[0\]: trace and span ids: not 32 and 16 hex digits/);
  for (const id of ['A'.repeat(32), 'a'.repeat(31), `${'a'.repeat(31)}g`, `${'a'.repeat(31)}/`, `${'a'.repeat(31)}:`, `${'a'.repeat(31)}\``]) {
    t.throws(() => decodeRecords({ records: [encodeRecord({ ...withTrace, traceId: id })] }), /trace and span ids/, `trace id ${JSON.stringify(id)}: refused`);
  }
  const oneAttempt: RequestRecord = { ...rec(6), status: 201, trace: {
    startUs: 1.7e15, endUs: 1.7e15 + 1500, parentSpanId: undefined, traceState: undefined, protocol: '1.1', serverAddress: 'web', serverPort: 80,
    attemptSpanId: 'c'.repeat(16), attemptStartUs: 1.7e15 + 10, attemptEndUs: 1.7e15 + 1400,
  } };
  t.equal(JSON.stringify(encodeRecord(oneAttempt)[16]), `[1700000000000000,1700000000001500,null,null,"1.1","web",80,"${'c'.repeat(16)}",1700000000000010,1700000000001400]`, 'a one-attempt trace: one flat array');
  t.same(decodeRecords(JSON.parse(JSON.stringify({ records: [encodeRecord(oneAttempt)] }))), [{ ...oneAttempt, trace: {
    startUs: 1.7e15, endUs: 1.7e15 + 1500, protocol: '1.1', serverAddress: 'web', serverPort: 80, retries: [],
    attempts: [{ spanId: 'c'.repeat(16), startUs: 1.7e15 + 10, endUs: 1.7e15 + 1400, peer: '198.18.0.4:8080', status: 201 }],
  } }], 'read back in the general form: its attempt\'s backend and status are the record\'s upstream and status');
  const { upstream: _ou, ...noUpstream } = oneAttempt;
  t.throws(() => decodeRecords({ records: [encodeRecord(noUpstream)] }), /^records\[0\]\.trace: one attempt, but the record names no backend$/, 'without a backend: refused, named');
  const shapes = decodeRecords(JSON.parse(JSON.stringify({ records: [encodeRecord(rec(0)), encodeRecord(bare), encodeRecord(withTrace), encodeRecord(deniedBare)] }))).map((r) => Object.keys(r).join());
  t.equal(new Set(shapes).size, 1, 'every record has the same fields (absent ones undefined): one hidden class');
});

t.test('batches to the agent\'s socket; bounded; stop sends what is left; no agent: counted failed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-chan-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'otlp.sock');
  const got: RequestRecord[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { t.equal(req.url, '/v1/requests'); got.push(...decodeRecords(JSON.parse(Buffer.concat(chunks).toString()))); res.end('{}'); });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  const ch = new AgentChannel({ socketPath: sock, flushMs: 20, maxRecords: 3 });
  ch.start();
  for (let i = 0; i < 5; i++) ch.record(rec(i));
  await new Promise((r) => setTimeout(r, 80));
  t.same(got.map((r) => r.path), ['/p0', '/p1', '/p2'], 'the first three, in order');
  t.match(ch.stats(), { sent: 3, dropped: 2, failed: 0 }, 'the buffer is bounded: two dropped and counted');
  ch.record(rec(9));
  await ch.stop();
  t.equal(got.at(-1)?.path, '/p9', 'stop() sends what is left');
  await new Promise<void>((r) => server.close(() => r()));
  const lost = new AgentChannel({ socketPath: join(dir, 'none.sock') });
  lost.record(rec(1));
  await lost.stop();
  t.match(lost.stats(), { sent: 0, failed: 1 }, 'no agent: the batch is counted failed, nothing hangs');
  t.throws(() => new AgentChannel({ socketPath: 'relative.sock' }), /absolute path/);
});
