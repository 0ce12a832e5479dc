/* The mesh-proxy command: its admin endpoint and --help, against the agent's ADS server on loopback. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { adminGet } from '../../mesh-agent/admin/admin-client.js';
import { repoRoot } from '../../mesh-agent/paths.js';
import { AdsServer } from '../../xds/ads-server.js';
import { l7Resources } from '../../xds/l7-resources.js';
import { Snapshot } from '../../xds/snapshot.js';
import { SnapshotCache } from '../../xds/snapshot-cache.js';
import { backend, freePort } from '../fixtures/l7.js';
import { until } from '../fixtures/wait.js';

const CLI = join(repoRoot(), 'dist', 'mesh-proxy', 'cli.js');

t.test('--help, and a bad command line', async (t) => {
  const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /^usage: mesh-proxy --xds TARGET --node-id ID/);
  const bad = spawnSync(process.execPath, [CLI], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /--xds and --node-id are required/);
});

t.test('the admin endpoint: ready, config dump, stats, metrics; SIGTERM drains', async (t) => {
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
  const proxy = spawn(process.execPath, [CLI, '--xds', `127.0.0.1:${adsPort}`, '--node-id', 'cli-test', '--admin-socket', socket, '--access-log', 'none'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<number | null>((r) => proxy.once('exit', (c) => r(c)));
  t.teardown(() => { proxy.kill('SIGKILL'); });
  let ready = false;
  await until('ready', () => {
    void adminGet(socket, '/ready').then(() => { ready = true; }, () => undefined);
    return ready;
  }, 20_000, 200);
  await fetch(`http://127.0.0.1:${listen}/`).then((r) => r.text());
  const dump = (await adminGet(socket, '/config_dump')).body as { xds: Record<string, { version: string }>; listeners: { name: string; address: string }[] };
  t.same(dump.listeners, [{ name: 'shop/b:80', address: `127.0.0.1:${listen}` }], '/config_dump lists the listeners');
  t.ok(dump.xds.listener?.version, 'and the versions it ACKed');
  const stats = (await adminGet(socket, '/stats')).body as { requests: number; xds: { connected: boolean; acks: number } };
  t.match(stats, { requests: 1, xds: { connected: true } }, '/stats counts the request');
  t.match((await adminGet(socket, '/metrics')).text, /^mesh_proxy_requests_total 1$/m, '/metrics in the Prometheus format');
  proxy.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: drained and exited cleanly');
});
