/* Privileged: the agent process killed while traffic flows. */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { AGENT_NODE_FLAGS } from '../../../mesh-agent/node-flags.js';
import { CLI, cli, cliSpawn, waitForLine } from '../../fixtures/cli.js';
import { TEST_PIN_DIR, clientArgv, collect, exchange, listen, sha256, testCgroupRoot, testMesh } from '../../fixtures/mesh.js';
import { privileged } from '../../fixtures/privileged.js';

if (privileged(t)) {
  t.test('agent killed with SIGKILL mid-transfer: nothing breaks, new connections are still short-circuited', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const dir = mkdtempSync(join(tmpdir(), 'sm-run-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const adminSocket = join(dir, 'agent.sock');
    const flags = ['--pin-dir', TEST_PIN_DIR, '--cgroup', testCgroupRoot(), '--xds-address', '127.0.0.1:0', '--xds-socket', join(dir, 'xds.sock'), '--admin-socket', adminSocket, '--admin-address', 'none'];
    const agent = cliSpawn(['run', ...flags, '--enroll', a.ip, '--enroll', b.ip]);
    let agentStderr = '';
    agent.stderr!.on('data', (d: Buffer) => { agentStderr += d.toString(); });
    const xdsLine = waitForLine(agent, /^mesh-agent: xDS on/);
    t.match(await waitForLine(agent, /^mesh-agent: running/), /loaded and pinned in/, 'the agent brought the datapath up');
    t.notMatch(agentStderr, /node runs without/, 'started as the mesh-agent command starts it: no word about node\'s flags');
    t.match(await xdsLine, new RegExp(`^mesh-agent: xDS on 127\\.0\\.0\\.1:\\d+, admin on ${adminSocket}$`), 'and serves xDS and the admin API');
    const agentExit = new Promise<NodeJS.Signals | null>((r) => agent.once('exit', (_code, sig) => r(sig)));

    const observer = datapath();
    observer.adopt();
    t.teardown(() => observer.stop());
    const before = observer.counters();

    const reply = randomBytes(1 << 20);
    const chunks = Array.from({ length: 160 }, () => randomBytes(256 << 10));
    const data = Buffer.concat(chunks);
    const l = await listen(rt, 'b', 7300, reply);
    const c = rt.exec('a', clientArgv('c-poll', b.ip, 7300), { stdio: ['pipe', 'pipe', 'pipe'] });
    const client = collect(c);
    let killedAt = -1;
    for (const [i, chunk] of chunks.entries()) {
      if (!c.stdin!.write(chunk)) await new Promise((r) => c.stdin!.once('drain', r));
      await sleep(5);
      if (i === 60) {
        t.equal(agent.exitCode, null, 'the agent is still running when the kill comes');
        agent.kill('SIGKILL');
        t.equal(await agentExit, 'SIGKILL', 'the agent died of SIGKILL');
        killedAt = i;
      }
    }
    c.stdin!.end();
    const [cr, sr] = await Promise.all([client, l.received]);
    t.equal(killedAt, 60, 'the agent was killed while the transfer ran');
    t.equal(sr.sha256, sha256(data), `the server got all ${data.length} bytes intact`);
    t.equal(cr.sha256, sha256(reply), 'the client got the reply');
    const mid = observer.counters();
    t.equal(mid.bytes_redirected! - before.bytes_redirected!, data.length + reply.length, 'every byte took the redirect, before and after the kill');

    const small = data.subarray(0, 1 << 20);
    const r = await exchange(rt, { client: 'a', server: 'b', serverIp: b.ip, port: 7301, kind: 'c-poll', data: small, reply });
    t.equal(r.server.sha256, sha256(small), 'a connection opened after the kill works');
    const after = observer.counters();
    t.equal(after.sock_inserted! - mid.sock_inserted!, 2, 'and entered the sockhash');
    t.equal(after.bytes_redirected! - mid.bytes_redirected!, small.length + reply.length, 'and was short-circuited');

    t.ok(existsSync(adminSocket), 'the killed agent left its admin socket behind');
    // this one as `node dist/mesh-agent/cli.js run`, without the agent's node flags
    const next = spawn(process.execPath, [CLI, 'run', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
    let nextStderr = '';
    next.stderr!.on('data', (d: Buffer) => { nextStderr += d.toString(); });
    t.teardown(() => { if (next.exitCode === null) next.kill('SIGKILL'); }); // a failed step below must not leave it running
    t.match(await waitForLine(next, /^mesh-agent: running/), /adopted from/, 'a new agent adopts the pins (and the stale admin socket)');
    t.match(nextStderr, new RegExp(`^mesh-agent: node runs without ${AGENT_NODE_FLAGS.join(' ')}: .*give them yourself`, 'm'), 'started through node without the flag, the agent says so on stderr');
    next.kill('SIGUSR1');
    t.match(await waitForLine(next, /SIGUSR1/), /^mesh-agent: SIGUSR1: trace file .+ reopened$/, 'SIGUSR1 reopens the trace file (after logrotate moved it)');
    t.equal(next.exitCode, null, 'and the agent runs on');
    next.kill('SIGTERM');
    t.match(await waitForLine(next, /SIGTERM/), /datapath stays pinned/, 'SIGTERM leaves the datapath in place');
    t.ok(existsSync(`${TEST_PIN_DIR}/link_sockops`), 'the links are still pinned');

    const st = cli(['status', '--json', '--pin-dir', TEST_PIN_DIR, '--admin-socket', adminSocket]);
    t.equal(st.code, 0);
    const status = JSON.parse(st.stdout) as { up: boolean; counters: Record<string, number>; endpoints: { ip: string }[]; agent: unknown; xds: unknown };
    t.ok(status.up, 'status --json: up');
    t.same([status.agent, status.xds], [null, null], 'and no agent running');
    t.equal(status.counters.bytes_redirected, after.bytes_redirected, 'status shows the same counters');
    t.same(status.endpoints.map((e) => e.ip), [a.ip, b.ip], 'status lists the endpoints');
    const human = cli(['status', '--pin-dir', TEST_PIN_DIR, '--admin-socket', adminSocket]);
    t.match(human.stdout, /bytes_redirected\s+\d+/, 'status prints a counters table');
    t.match(human.stdout, /^agent +not running$/m, 'and that no agent runs');

    observer.stop();
    const down = cli(['down', '--pin-dir', TEST_PIN_DIR]);
    t.equal(down.code, 0);
    t.notOk(existsSync(TEST_PIN_DIR), 'mesh-agent down removed every pin');
  });
}
