/* The node proxy's access log file: batched, rotated, bounded while the disk falls behind. */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AccessLogFile } from '../../mesh-proxy/access-log.js';
import { until } from '../fixtures/wait.js';

const tmp = (t: Test) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-accesslog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

const numbers = (f: string) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { n: number }).n);

t.test('flush interval 0: lines written in order as they come, those queued during a write go together; rotated at the cap', async (t) => {
  const dir = tmp(t);
  const log = new AccessLogFile(join(dir, 'access.log'), { maxBytes: 500, flushIntervalMs: 0 });
  for (let i = 0; i < 100; i++) log.write(JSON.stringify({ n: i })); // 8 or 9 bytes a line
  await log.close();
  const current = numbers(join(dir, 'access.log'));
  t.same(current, Array.from({ length: current.length }, (_, i) => 100 - current.length + i), 'the newest lines, in order');
  t.equal(current.at(-1), 99);
  const s = log.stats();
  t.match(s, { written: 100, dropped: 0, failed: 0 });
  // the first line went alone; the other 99 came while it was being written: one batch of 882 bytes, past the cap, written whole
  t.equal(s.rotations, 1, 'one rotation: the second batch would have passed 500 bytes');
  t.equal(current.length, 99);
  t.same(numbers(join(dir, 'access.log.1')), [0], 'the first write went alone');
});

t.test('by default lines wait for the interval, then go in one write', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'access.log');
  const log = new AccessLogFile(path, { flushIntervalMs: 200 });
  const t0 = performance.now();
  for (let i = 0; i < 100; i++) log.write(JSON.stringify({ n: i }));
  await new Promise((r) => setTimeout(r, 20));
  // checked only while the interval cannot have passed (a slow machine may overrun the 20 ms)
  if (performance.now() - t0 < 150) t.notOk(existsSync(path), 'nothing written before the interval');
  await until('the interval\'s write', () => log.stats().written === 100, 5000, 20);
  t.same(numbers(path), Array.from({ length: 100 }, (_, i) => i), 'all 100, in order, in one write');
  log.write(JSON.stringify({ n: 100 }));
  t.match(log.stats(), { written: 100 }, 'a line after that is not written at once');
  await until('the next interval\'s write', () => log.stats().written === 101, 5000, 20);
  t.equal(numbers(path).at(-1), 100, 'a line after that waits for the next interval');
  await log.close();
});

t.test('at flushBytes the buffer is written without waiting for the interval', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'access.log');
  const log = new AccessLogFile(path, { flushIntervalMs: 60_000, flushBytes: 100 });
  const line = 'x'.repeat(19); // 20 bytes with its newline
  for (let i = 0; i < 4; i++) log.write(line);
  await new Promise((r) => setTimeout(r, 20));
  t.match(log.stats(), { written: 0 }, '80 bytes wait');
  log.write(line);
  await until('the write at 100 bytes', () => log.stats().written === 5, 5000, 20);
  t.equal(readFileSync(path, 'utf8'), `${line}\n`.repeat(5), 'the fifth line made 100 bytes: all five written');
  log.write(line);
  await log.flush();
  t.match(log.stats(), { written: 6 }, 'flush() writes what waits');
  await log.close();
});

t.test('reopen() writes what waits to the file it had open first; close() writes the rest', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'access.log');
  const log = new AccessLogFile(path, { flushIntervalMs: 60_000 });
  log.write('a');
  await log.flush();
  renameSync(path, join(dir, 'moved.log')); // logrotate moves the file, then signals
  log.write('b');
  await log.reopen();
  t.equal(readFileSync(join(dir, 'moved.log'), 'utf8'), 'a\nb\n', 'the line logged before the reopen went to the moved file');
  log.write('c');
  await log.close();
  t.equal(readFileSync(path, 'utf8'), 'c\n', 'the line after it to the path, written at close');
  t.match(log.stats(), { written: 3, dropped: 0, failed: 0 });
});

t.test('lines logged while close() waits for the disk are written before the file closes', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'access.log');
  const log = new AccessLogFile(path, { flushIntervalMs: 60_000 });
  log.write('a');
  void log.flush(); // a write under way
  const closed = log.close();
  setImmediate(() => log.write('late')); // a request cut off by the drain logs now
  await closed;
  t.equal(readFileSync(path, 'utf8'), 'a\nlate\n', 'both lines in the file');
  t.match(log.stats(), { written: 2, dropped: 0, failed: 0 });
});

t.test('bad flush settings are refused', async (t) => {
  t.throws(() => new AccessLogFile('/x', { flushIntervalMs: -1 }), /the flush interval must be a whole number of ms from 0 to 2147483647, got -1/);
  t.throws(() => new AccessLogFile('/x', { flushIntervalMs: Number.NaN }), /flush interval/);
  t.throws(() => new AccessLogFile('/x', { flushIntervalMs: 2 ** 31 }), /flush interval/, 'past what a timer takes');
  t.throws(() => new AccessLogFile('/x', { flushIntervalMs: 1.5 }), /flush interval/);
  t.throws(() => new AccessLogFile('/x', { flushBytes: 0 }), /the flush size must be above 0 bytes, got 0/);
});

t.test('past maxPendingBytes waiting for the disk, lines are dropped and counted', async (t) => {
  const dir = tmp(t);
  const log = new AccessLogFile(join(dir, 'access.log'), { maxPendingBytes: 100 });
  const line = 'x'.repeat(19); // 20 bytes with its newline
  for (let i = 0; i < 10; i++) log.write(line);
  await log.close();
  t.match(log.stats(), { written: 5, dropped: 5, failed: 0 }, '5 lines fit in 100 bytes; the 5 after them were dropped');
  t.equal(readFileSync(join(dir, 'access.log'), 'utf8'), `${line}\n`.repeat(5));
});

t.test('a log that cannot be written counts its lines failed and says why once', async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, 'file'), '');
  const said: string[] = [];
  // a write per line: three failed writes, one message
  const log = new AccessLogFile(join(dir, 'file', 'access.log'), { flushIntervalMs: 0 }, (m) => said.push(m));
  log.write('a');
  await new Promise((r) => setTimeout(r, 50));
  log.write('b');
  log.write('c');
  await log.close().catch(() => undefined);
  t.match(log.stats(), { written: 0, dropped: 0, failed: 3 });
  t.equal(said.length, 1, 'one message for the same error');
  t.match(said[0], /^access log .*file\/access\.log: .*(EEXIST|ENOTDIR)/);
});
