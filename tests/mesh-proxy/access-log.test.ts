/* The node proxy's access log file: batched, rotated, bounded while the disk falls behind. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AccessLogFile } from '../../mesh-proxy/access-log.js';

const tmp = (t: Test) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-accesslog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

t.test('lines written in order, those queued during a write go together; rotated at the cap', async (t) => {
  const dir = tmp(t);
  const log = new AccessLogFile(join(dir, 'access.log'), { maxBytes: 500 });
  for (let i = 0; i < 100; i++) log.write(JSON.stringify({ n: i })); // 8 or 9 bytes a line
  await log.close();
  const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { n: number }).n);
  const current = lines(join(dir, 'access.log'));
  t.same(current, Array.from({ length: current.length }, (_, i) => 100 - current.length + i), 'the newest lines, in order');
  t.equal(current.at(-1), 99);
  const s = log.stats();
  t.match(s, { written: 100, dropped: 0, failed: 0 });
  // the first line went alone; the other 99 came while it was being written: one batch of 882 bytes, past the cap, written whole
  t.equal(s.rotations, 1, 'one rotation: the second batch would have passed 500 bytes');
  t.equal(current.length, 99);
  t.same(lines(join(dir, 'access.log.1')), [0], 'the first write went alone');
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
  const log = new AccessLogFile(join(dir, 'file', 'access.log'), {}, (m) => said.push(m));
  log.write('a');
  await new Promise((r) => setTimeout(r, 50));
  log.write('b');
  log.write('c');
  await log.close().catch(() => undefined);
  t.match(log.stats(), { written: 0, dropped: 0, failed: 3 });
  t.equal(said.length, 1, 'one message for the same error');
  t.match(said[0], /^access log .*file\/access\.log: .*(EEXIST|ENOTDIR)/);
});
