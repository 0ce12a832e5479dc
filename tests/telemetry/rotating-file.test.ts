/* The bounded append-only file under the trace file and the node proxy's access log. */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { RotatingFile } from '../../telemetry/rotating-file.js';

const tmp = (t: Test) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-rotating-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};
const line = (s: string) => [Buffer.from(s), Buffer.from('\n')];

t.test('appends in order, rotates to .1 before an append that would pass the cap, replacing the old .1', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'sub', 'log'); // the directory is made
  const f = new RotatingFile(path, 20);
  // issued together: each waits for the one before
  await Promise.all(['aaaa', 'bbbb', 'cccc', 'dddd', 'eeee', 'ffff'].map((s) => f.append(line(s))));
  t.equal(f.rotations, 1, 'one rotation at 20 bytes (4 lines of 5)');
  t.equal(readFileSync(`${path}.1`, 'utf8'), 'aaaa\nbbbb\ncccc\ndddd\n');
  t.equal(readFileSync(path, 'utf8'), 'eeee\nffff\n');
  await Promise.all(['gggg', 'hhhh', 'iiii'].map((s) => f.append(line(s))));
  t.equal(readFileSync(`${path}.1`, 'utf8'), 'eeee\nffff\ngggg\nhhhh\n', 'the second rotation replaced .1');
  t.equal(readFileSync(path, 'utf8'), 'iiii\n');
  await f.close();
});

t.test('a file that is there already counts toward the cap; an append larger than the cap is written whole', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'log');
  writeFileSync(path, 'x'.repeat(15));
  const f = new RotatingFile(path, 20);
  await f.append(line('yyyy')); // 15 + 5 = 20: fits
  t.notOk(existsSync(`${path}.1`), 'no rotation while the cap holds');
  await f.append(line('z'.repeat(30)));
  t.equal(readFileSync(`${path}.1`, 'utf8'), `${'x'.repeat(15)}yyyy\n`);
  t.equal(readFileSync(path, 'utf8'), `${'z'.repeat(30)}\n`, 'the large line, whole, in a fresh file');
  await f.append(line('w'));
  t.equal(readFileSync(path, 'utf8'), 'w\n', 'and the next append rotates past it');
  await f.close();
  await f.append(line('v'));
  t.equal(readFileSync(path, 'utf8'), 'w\nv\n', 'an append after close opens the file again');
  await f.close();
});

t.test('a failed write rejects that append only; the file removed under it is made again at the next rotation', async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, 'file'), '');
  const bad = new RotatingFile(join(dir, 'file', 'log'), 100);
  await t.rejects(bad.append(line('a')), /EEXIST|ENOTDIR/, 'a path under a file cannot be written');
  await t.rejects(bad.append(line('b')), /EEXIST|ENOTDIR/, 'nor the next time');
  rmSync(join(dir, 'file'));
  await bad.append(line('c')); // the directory can be made now: the writer was not stuck on the failures
  t.equal(readFileSync(join(dir, 'file', 'log'), 'utf8'), 'c\n', 'the append after the failed ones is written, alone');
  await bad.close();
  const path = join(dir, 'log');
  const f = new RotatingFile(path, 8);
  await f.append(line('one'));
  rmSync(path);
  await f.append(line('two3456')); // would pass 8: rotates; the rename finds no file and goes on
  t.equal(readFileSync(path, 'utf8'), 'two3456\n');
  await f.close();
  t.throws(() => new RotatingFile(path, 0), /rotation size must be above 0 bytes, got 0/);
});

t.test('reopen: after a file moved or removed from outside, the next append goes to the path again, in order', async (t) => {
  const dir = tmp(t);
  const path = join(dir, 'log');
  const f = new RotatingFile(path, 16);
  await f.append(line('a'));
  renameSync(path, join(dir, 'moved'));
  await f.append(line('b')); // the open handle still points at the moved file
  const reopened = f.reopen();
  const after = f.append(line('c')); // made before the reopen finished: still after it
  await Promise.all([reopened, after]);
  t.equal(readFileSync(join(dir, 'moved'), 'utf8'), 'a\nb\n', 'what came before the reopen stays in the moved file');
  t.equal(readFileSync(path, 'utf8'), 'c\n', 'the path is made anew for what came after');
  writeFileSync(path, '0123456789\n'); // replaced from outside with 11 bytes
  await f.reopen();
  await f.append(line('dddd')); // 11 + 5 = 16: fits
  await f.append(line('e')); // would pass 16: rotates, counting from the new file's size
  t.equal(readFileSync(`${path}.1`, 'utf8'), '0123456789\ndddd\n', 'the cap counts the file found at the reopen');
  t.equal(readFileSync(path, 'utf8'), 'e\n');
  rmSync(path);
  await f.reopen();
  await f.append(line('f'));
  t.equal(readFileSync(path, 'utf8'), 'f\n', 'a removed file is made again');
  await f.close();
});
