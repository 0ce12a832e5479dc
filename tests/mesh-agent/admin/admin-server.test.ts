import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AdminRequestError, adminGet, adminPost } from '../../../mesh-agent/admin/admin-client.js';
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
  t.equal(post.status, 405, 'a read-only route takes no POST');
  await admin.stop();
  t.notOk(existsSync(socketPath), 'stop removes the socket');
  const gone = await adminGet(socketPath, '/status').catch((e: unknown) => e);
  t.ok(gone instanceof AgentNotRunningError, 'then a client is told no agent runs', { got: String(gone) });
});

t.test('actions: POST with a JSON body, on the unix socket only', async (t) => {
  const socketPath = tmpSocket(t);
  const got: unknown[] = [];
  let level = 1;
  const admin = new AdminServer({
    socketPath, address: '127.0.0.1:0',
    routes: { '/level': () => ({ body: { level } }) },
    actions: {
      '/level': (body) => {
        got.push(body);
        const v = (body as { level?: unknown } | undefined)?.level;
        if (typeof v !== 'number') throw new InvalidArgumentError(`level: ${JSON.stringify(v)} is not a number`);
        level = v;
        return { body: { level } };
      },
      '/only-post': (body) => ({ body: { got: body === undefined ? 'undefined' : body } }),
    },
  });
  await admin.start();
  t.teardown(() => admin.stop());
  t.same((await adminPost(socketPath, '/level', { level: 3 })).body, { level: 3 }, 'the action answers');
  t.same((await adminGet(socketPath, '/level')).body, { level: 3 }, 'and the GET route sees the change');
  t.match(await adminPost(socketPath, '/level', { level: 'x' }).catch((e: unknown) => e), { status: 400, code: 'SOCKMESH_INVALID_ARGUMENT', message: 'level: "x" is not a number' }, 'a refused change keeps its code and message');
  t.same((await adminGet(socketPath, '/level')).body, { level: 3 }, 'and changes nothing');
  const raw = (path: string, method: string, payload?: string) => new Promise<{ status: number; body: string; allow?: string }>((resolve, reject) => {
    const req = request({ socketPath, path, method }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers.allow !== undefined && { allow: res.headers.allow }) }));
    });
    req.on('error', reject);
    req.end(payload);
  });
  t.match(await raw('/level', 'POST', '{level'), { status: 400, body: /POST \/level: the body is not JSON/ }, 'a body that is not JSON is refused');
  t.match(await raw('/level', 'POST', 'x'.repeat(70_000)), { status: 400, body: /the body is over 65536 bytes/ }, 'so is one too large');
  t.equal(got.length, 2, 'neither reached the action');
  t.match(await raw('/level', 'DELETE'), { status: 405, allow: 'GET, HEAD, POST' }, 'other methods: 405 with what is allowed');
  t.match(await raw('/only-post', 'GET'), { status: 405, allow: 'POST' });
  t.same((await adminPost(socketPath, '/only-post', undefined)).body, { got: 'undefined' }, 'an action with no body gets undefined');
  t.same((await adminPost(socketPath, '/only-post', [1])).body, { got: [1] }, 'and one with a body gets it parsed');
  t.match(await raw('/nope', 'GET'), { status: 404, body: /routes: \/level, \/level \(POST\), \/only-post \(POST\)/ }, 'the 404 lists actions too');
  const tcp = await tcpGet(admin.address!, '/level', 'POST');
  t.match(tcp, { status: 403, body: /changes are taken on the agent's unix socket only/ }, 'no change over TCP (Prometheus scrapes there)');
  t.same((await adminGet(socketPath, '/level')).body, { level: 3 }, 'nothing changed');
  t.equal((await tcpGet(admin.address!, '/toString')).status, 404, 'names of Object.prototype are no routes');
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
