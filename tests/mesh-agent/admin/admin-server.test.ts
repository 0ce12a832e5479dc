import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AdminRequestError, adminGet } from '../../../mesh-agent/admin/admin-client.js';
import { AdminServer } from '../../../mesh-agent/admin/admin-server.js';
import { AgentNotRunningError, InvalidArgumentError, NotFoundError } from '../../../mesh-agent/errors.js';

function tmpSocket(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'sm-admin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'sub', 'agent.sock');
}

const routes = {
  '/status': () => ({ body: { ok: true } }),
  '/text': () => ({ body: 'plain\n', contentType: 'text/plain; version=0.0.4; charset=utf-8' }),
  '/bad': () => { throw new InvalidArgumentError('node must be set', 'pass ?node='); },
  '/missing': () => { throw new NotFoundError('no snapshot for node "x"'); },
  '/boom': () => { throw new Error('a bug'); },
};

function tcpGet(address: string, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path, method }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('routes over the unix socket and over TCP; errors keep their code', async (t) => {
  const socketPath = tmpSocket(t);
  const admin = new AdminServer({ socketPath, address: '127.0.0.1:0', routes });
  await admin.start();
  t.teardown(() => admin.stop());
  t.equal(statSync(socketPath).mode & 0o777, 0o600, 'the socket is for root only');
  t.same((await adminGet(socketPath, '/status')).body, { ok: true }, 'JSON over the unix socket');
  t.equal((await adminGet(socketPath, '/text')).body, 'plain\n', 'text stays text');
  const bad = await adminGet(socketPath, '/bad').catch((e: unknown) => e);
  t.ok(bad instanceof AdminRequestError, 'a 4xx becomes an error');
  t.match(bad, { status: 400, code: 'SOCKMESH_INVALID_ARGUMENT', message: 'node must be set', hint: 'pass ?node=' }, 'with the code, message and hint the route threw');
  t.match(await adminGet(socketPath, '/missing').catch((e: unknown) => e), { status: 404, code: 'SOCKMESH_NOT_FOUND' });
  t.match(await adminGet(socketPath, '/nope').catch((e: unknown) => e), { status: 404, message: /no route \/nope; routes: \/bad, \/boom, \/missing, \/status, \/text/ });
  t.match(await adminGet(socketPath, '/boom').catch((e: unknown) => e), { status: 500, message: 'a bug' }, 'a bug is a 500, and the server lives on');
  t.match(admin.address, /^127\.0\.0\.1:\d+$/);
  const r = await tcpGet(admin.address!, '/text');
  t.same([r.status, r.type, r.body], [200, 'text/plain; version=0.0.4; charset=utf-8', 'plain\n'], 'the same routes over TCP');
  const post = await tcpGet(admin.address!, '/status', 'POST');
  t.equal(post.status, 405, 'the admin API is read-only');
  await admin.stop();
  t.notOk(existsSync(socketPath), 'stop removes the socket');
  const gone = await adminGet(socketPath, '/status').catch((e: unknown) => e);
  t.ok(gone instanceof AgentNotRunningError, 'then a client is told no agent runs', { got: String(gone) });
});

t.test('a stale socket is replaced; a live one means another agent runs', async (t) => {
  const socketPath = tmpSocket(t);
  const first = new AdminServer({ socketPath, routes });
  await first.start();
  const second = new AdminServer({ socketPath, routes });
  await t.rejects(second.start(), { code: 'SOCKMESH_AGENT_RUNNING' }, 'a second agent on the same socket is refused');
  t.same((await adminGet(socketPath, '/status')).body, { ok: true }, 'and the first keeps serving');
  await first.stop();
  // a socket file nobody listens on, as an agent killed with SIGKILL leaves it
  const dead = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`]);
  await new Promise((r) => dead.stdout.once('data', r));
  dead.kill('SIGKILL');
  await new Promise((r) => dead.once('exit', r));
  t.ok(existsSync(socketPath), 'a stale socket file is there');
  const third = new AdminServer({ socketPath, routes });
  await third.start();
  t.teardown(() => third.stop());
  t.same((await adminGet(socketPath, '/status')).body, { ok: true }, 'and a new agent takes its place');
});

t.test('bad addresses are refused up front', async (t) => {
  t.throws(() => new AdminServer({ socketPath: 'relative.sock', routes }), { code: 'SOCKMESH_INVALID_ARGUMENT' });
  for (const a of ['localhost:9966', '127.0.0.1', '127.0.0.1:99999', ':80']) {
    t.throws(() => new AdminServer({ socketPath: '/tmp/x.sock', address: a, routes }), { code: 'SOCKMESH_INVALID_ARGUMENT', message: /must be IP:PORT/ }, a);
  }
  t.doesNotThrow(() => new AdminServer({ socketPath: '/tmp/x.sock', address: '[::1]:0', routes }), 'IPv6 in brackets');
});
