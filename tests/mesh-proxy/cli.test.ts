/* The mesh-proxy command: its admin endpoint and --help, against the agent's ADS server on loopback. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { adminGet } from '../../mesh-agent/admin/admin-client.js';
import { repoRoot } from '../../mesh-agent/paths.js';
import { AdsServer } from '../../xds/ads-server.js';
import { l7Resources } from '../../xds/l7-resources.js';
import { Snapshot } from '../../xds/snapshot.js';
import { SnapshotCache } from '../../xds/snapshot-cache.js';
import { backend, freePort } from '../fixtures/l7.js';
import { until } from '../fixtures/wait.js';

const CLI = join(repoRoot(), 'dist', 'mesh-proxy', 'cli.js');

/**
 * The mesh-proxy command against an ADS server on loopback that gives it one listener (shop/b,
 * on a free port) to a backend, its access log at DIR/access.log; resolves once /ready answers.
 */
async function startProxy(t: Test, nodeId: string, args: string[]) {
  const cache = new SnapshotCache({ debounceMs: 1 });
  const ads = new AdsServer({ cache });
  const adsPort = await ads.start();
  const dir = mkdtempSync(join(tmpdir(), 'sm-proxy-'));
  t.teardown(async () => { await ads.stop(); cache.close(); rmSync(dir, { recursive: true, force: true }); });
  const b = await backend(t, 'b');
  const listen = await freePort();
  cache.setDefaultSnapshot(Snapshot.create(l7Resources({
    proxyIp: '127.0.0.1', ports: [{ service: 'shop/b', port: 80, listenerPort: listen }], routes: new Map(), lastGood: new Map(), backends: () => [{ ip: '127.0.0.1', port: b.port }],
  }).resources));
  const socket = join(dir, 'admin.sock');
  const proxy = spawn(process.execPath, [CLI, '--xds', `127.0.0.1:${adsPort}`, '--node-id', nodeId, '--admin-socket', socket, '--access-log', join(dir, 'access.log'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => proxy.once('exit', (c) => r(c)));
  t.teardown(() => { proxy.kill('SIGKILL'); });
  let ready = false;
  await until('ready', () => {
    void adminGet(socket, '/ready').then(() => { ready = true; }, () => undefined);
    return ready;
  }, 20_000, 200);
  return { dir, listen, socket, proxy, exited };
}

t.test('--help, and a bad command line', async (t) => {
  const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /^usage: mesh-proxy --xds TARGET --node-id ID/);
  const bad = spawnSync(process.execPath, [CLI], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /--xds and --node-id are required/);
  const size = spawnSync(process.execPath, [CLI, '--xds', 'unix:/nowhere', '--node-id', 'x', '--access-log-max-mb', '0'], { encoding: 'utf8' });
  t.equal(size.status, 2, 'a rotation size of 0 is refused');
  t.match(size.stderr, /--access-log-max-mb: not a size above 0 MiB: 0/);
  const tracing = spawnSync(process.execPath, [CLI, '--xds', 'unix:/nowhere', '--node-id', 'x', '--tracing', 'sometimes'], { encoding: 'utf8' });
  t.equal(tracing.status, 2, 'an unknown tracing mode is refused');
  t.match(tracing.stderr, /--tracing "sometimes": must be on, off or xds/);
  const flush = spawnSync(process.execPath, [CLI, '--xds', 'unix:/nowhere', '--node-id', 'x', '--access-log-flush-ms', 'soon'], { encoding: 'utf8' });
  t.equal(flush.status, 2, 'a flush interval that is not a number is refused');
  t.match(flush.stderr, /--access-log-flush-ms: not a whole number of ms from 0 to 2147483647: "soon"/);
  for (const v of ['', '-1', '1.5', '3000000000']) {
    const r = spawnSync(process.execPath, [CLI, '--xds', 'unix:/nowhere', '--node-id', 'x', `--access-log-flush-ms=${v}`], { encoding: 'utf8' });
    t.equal(r.status, 2, `--access-log-flush-ms=${v} is refused`);
  }
  t.match(help.stdout, /--access-log-flush-ms N/, '--help names the flush interval');
});

t.test('the admin endpoint: ready, config dump, stats, metrics; the access log rotated at its cap and reopened on SIGUSR1; SIGTERM drains', async (t) => {
  const { dir, listen, socket, proxy, exited } = await startProxy(t, 'cli-test', ['--access-log-max-mb', '0.0005', '--access-log-flush-ms', '0']);
  await fetch(`http://127.0.0.1:${listen}/`).then((r) => r.text());
  // one request at a time, each line written before the next request (the 512-byte cap holds 1 or 2 lines)
  const written = async () => ((await adminGet(socket, '/stats')).body as { accessLog: { written: number } }).accessLog.written;
  for (let i = 1; i <= 5; i++) {
    await fetch(`http://127.0.0.1:${listen}/n${i}`).then((r) => r.text());
    const deadline = Date.now() + 5000;
    while (await written() < i + 1) {
      if (Date.now() > deadline) throw new Error(`access log line ${i + 1} not written`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const dump = (await adminGet(socket, '/config_dump')).body as { xds: Record<string, { version: string }>; listeners: { name: string; address: string }[] };
  t.same(dump.listeners, [{ name: 'shop/b:80', address: `127.0.0.1:${listen}` }], '/config_dump lists the listeners');
  t.ok(dump.xds.listener?.version, 'and the versions it ACKed');
  const stats = (await adminGet(socket, '/stats')).body as { requests: number; xds: { connected: boolean; acks: number }; accessLog: { written: number; dropped: number; failed: number; rotations: number } };
  t.match(stats, { requests: 6, xds: { connected: true } }, '/stats counts the requests');
  t.match(stats.accessLog, { written: 6, dropped: 0, failed: 0 }, '/stats counts the access log lines');
  t.ok(stats.accessLog.rotations >= 1, `the log was rotated at 512 bytes (${stats.accessLog.rotations} times)`);
  const metrics = (await adminGet(socket, '/metrics')).text;
  t.match(metrics, /^mesh_proxy_requests_total 6$/m, '/metrics in the Prometheus format');
  t.match(metrics, /^mesh_proxy_access_log_lines_total\{outcome="written"\} 6$/m, 'with the access log lines');
  // logrotate moves the file away and signals: the next line goes to the path, a new file
  let stderr = '';
  proxy.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  renameSync(join(dir, 'access.log'), join(dir, 'moved.log'));
  proxy.kill('SIGUSR1');
  await until('the reopen', () => stderr.includes('SIGUSR1: access log'), 5000, 20);
  t.match(stderr, /mesh-proxy: SIGUSR1: access log .*access\.log reopened/, 'SIGUSR1 reopens the access log');
  await fetch(`http://127.0.0.1:${listen}/after`).then((r) => r.text());
  for (const deadline = Date.now() + 5000; await written() < 7;) {
    if (Date.now() > deadline) throw new Error('the line after the reopen was not written');
    await new Promise((r) => setTimeout(r, 20));
  }
  proxy.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: drained and exited cleanly');
  const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { path: string }).path);
  t.same(lines(join(dir, 'access.log')), ['/after'], 'the path holds the line written after the reopen, alone');
  const current = lines(join(dir, 'moved.log'));
  const previous = lines(join(dir, 'access.log.1'));
  t.ok(statSync(join(dir, 'moved.log')).size <= 524 && statSync(join(dir, 'access.log.1')).size <= 524, 'neither file passed the cap');
  const kept = [...previous, ...current];
  const all = ['/', '/n1', '/n2', '/n3', '/n4', '/n5'];
  t.ok(kept.length >= 2 && kept.length < all.length, `the oldest lines went with the rotation (${kept.length} of 6 kept)`);
  t.same(kept, all.slice(all.length - kept.length), 'the newest lines are kept whole and in order across the rotation');
});

t.test('the access log is buffered as Envoy buffers it, and SIGTERM writes what waits', async (t) => {
  // a minute's interval: nothing is written before SIGTERM, whatever the machine's pace
  const { dir, listen, socket, proxy, exited } = await startProxy(t, 'cli-flush', ['--access-log-flush-ms', '60000']);
  const log = join(dir, 'access.log');
  for (const p of ['/a', '/b', '/c']) await fetch(`http://127.0.0.1:${listen}${p}`).then((r) => r.text());
  const stats = (await adminGet(socket, '/stats')).body as { requests: number; accessLog: { written: number } };
  t.match(stats, { requests: 3, accessLog: { written: 0 } }, 'three requests served, their lines waiting in the buffer');
  t.notOk(existsSync(log) && statSync(log).size > 0, 'nothing on disk yet');
  proxy.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: exited cleanly');
  const paths = readFileSync(log, 'utf8').split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { path: string }).path);
  t.same(paths, ['/a', '/b', '/c'], 'the buffered lines were written on the way out, in order');
});
