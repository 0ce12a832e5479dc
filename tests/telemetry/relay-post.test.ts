import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { postToRelay } from '../../telemetry/relay-post.js';

t.test('a POST to the agent\'s socket: taken (200), refused, no agent, or a silent agent cut at the timeout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-post-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'otlp.sock');
  const seen: { path?: string; type?: string; extra?: string | string[]; body: string }[] = [];
  let answer: number | 'hang' = 200;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ path: req.url, type: req.headers['content-type'], extra: req.headers['x-sockmesh-spans'], body: Buffer.concat(chunks).toString() });
      if (answer === 'hang') return;
      res.statusCode = answer;
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }));
  t.equal(await postToRelay(sock, '/v1/traces', Buffer.from('{"a":1}'), { 'x-sockmesh-spans': 3 }, 1000), true);
  t.same(seen[0], { path: '/v1/traces', type: 'application/json', extra: '3', body: '{"a":1}' });
  answer = 400;
  t.equal(await postToRelay(sock, '/v1/requests', Buffer.from('{}'), {}, 1000), false, 'a refusal');
  t.equal(await postToRelay(join(dir, 'none.sock'), '/v1/requests', Buffer.from('{}'), {}, 1000), false, 'no agent');
  answer = 'hang';
  const t0 = performance.now();
  t.equal(await postToRelay(sock, '/v1/requests', Buffer.from('{}'), {}, 150), false, 'a silent agent');
  const took = performance.now() - t0;
  t.ok(took >= 140 && took < 1000, `cut at the timeout (${took.toFixed(0)} ms)`);
});
