/* Privileged: real BPF in a real kernel, real pods (netns + veth + bridge + cgroup). */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { Datapath } from '../../../mesh-agent/datapath/datapath.js';
import { defaultObjectPath, repoRoot } from '../../../mesh-agent/paths.js';
import { type ClientKind, TEST_PIN_DIR, clientArgv, collect, exchange, listen, sha256, testCgroupRoot, testMesh } from '../../fixtures/mesh.js';
import { privileged } from '../../fixtures/privileged.js';
import { cli } from '../../fixtures/cli.js';

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(b).map((k) => [k, b[k]! - (a[k] ?? 0)]));
}

if (privileged(t)) {
  const DATA = randomBytes(64 << 20);
  const REPLY = randomBytes(1 << 20);

  t.test('enrolled pods: 64 MiB each way arrive intact through the redirect, EOF seen on both sides', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const dp = datapath();
    t.same(dp.start(), { adopted: false, otherBuild: false });
    t.teardown(() => dp.stop());
    dp.enroll(a.ip, 1);
    dp.enroll(b.ip, 2);
    const kinds: ClientKind[] = ['c-poll', 'c-blocking', 'node'];
    for (const [i, kind] of kinds.entries()) {
      const before = dp.counters();
      const r = await exchange(rt, { client: 'a', server: 'b', serverIp: b.ip, port: 7000 + i, kind, data: DATA, reply: REPLY });
      const d = delta(before, dp.counters());
      t.equal(r.server.code, 0, `${kind}: the server read to EOF and exited (${r.server.stderr.trim()})`);
      t.equal(r.client.code, 0, `${kind}: the client read to EOF and exited (${r.client.stderr.trim()})`);
      t.equal(r.server.bytes, DATA.length, `${kind}: server received every byte`);
      t.equal(r.server.sha256, sha256(DATA), `${kind}: server's sha256 matches what was sent`);
      t.equal(r.client.bytes, REPLY.length, `${kind}: client received every reply byte`);
      t.equal(r.client.sha256, sha256(REPLY), `${kind}: client's sha256 matches the reply`);
      t.equal(d.sock_inserted, 2, `${kind}: both sockets entered the sockhash`);
      t.equal(d.bytes_redirected, DATA.length + REPLY.length, `${kind}: the redirected-bytes counter grew by exactly what was sent`);
      t.equal(d.bytes_passed, 0, `${kind}: nothing fell back to the stack`);
      t.match(r.server.stderr, /fionread_zero_with_data=0/, `${kind}: FIONREAD on the server agreed with read()`);
      if (kind === 'c-poll') t.match(r.client.stderr, /fionread_zero_with_data=0/, 'FIONREAD on the client agreed with read()');
    }
    t.same(dp.sockets(), [], 'closed sockets left the sockhash');

    // a Node server listens on "::": the accepted socket is AF_INET6 with v4-mapped addresses
    const before = dp.counters();
    const data = DATA.subarray(0, 16 << 20);
    const r = await exchange(rt, { client: 'a', server: 'b', serverIp: b.ip, port: 7010, kind: 'c-poll', data, reply: REPLY, serverKind: 'node-dual-stack' });
    const d = delta(before, dp.counters());
    t.match(r.server.stderr, /listening on :: 7010[\s\S]*family=IPv6/, 'the server listened dual-stack and saw a v4-mapped peer');
    t.equal(r.server.sha256, sha256(data), 'dual-stack server: every byte arrived');
    t.equal(r.client.sha256, sha256(REPLY), 'dual-stack server: the reply arrived');
    t.equal(d.sock_inserted, 2, 'dual-stack server: both sockets entered the sockhash');
    t.equal(d.bytes_redirected, data.length + REPLY.length, 'dual-stack server: every byte was redirected');
    t.equal(d.bytes_passed, 0, 'dual-stack server: nothing took the stack');
  });

  t.test('a pod that is not enrolled: no redirect, traffic still works', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    await rt.addPod('outsider');
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(a.ip);
    dp.enroll(b.ip);
    const data = DATA.subarray(0, 4 << 20);
    const before = dp.counters();
    const r = await exchange(rt, { client: 'outsider', server: 'b', serverIp: b.ip, port: 7100, kind: 'c-poll', data, reply: REPLY });
    const d = delta(before, dp.counters());
    t.equal(r.server.sha256, sha256(data), 'server got every byte');
    t.equal(r.client.sha256, sha256(REPLY), 'client got every reply byte');
    t.equal(d.sock_inserted, 0, 'no socket entered the sockhash');
    t.equal(d.sock_skipped, 2, 'both ends were seen and skipped');
    t.equal(d.msg_redirected, 0, 'no message was redirected');
    t.equal(d.bytes_redirected, 0, 'no byte was redirected');
  });

  t.test('a connection opened before the datapath came up keeps working on the stack', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const l = await listen(rt, 'b', 7200, REPLY);
    const c = rt.exec('a', clientArgv('c-poll', b.ip, 7200), { stdio: ['pipe', 'pipe', 'pipe'] });
    const client = collect(c);
    const half = 8 << 20;
    const data = DATA.subarray(0, 2 * half);
    c.stdin!.write(data.subarray(0, half));
    await sleep(300);
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(a.ip);
    dp.enroll(b.ip);
    const before = dp.counters();
    c.stdin!.end(data.subarray(half));
    const [cr, sr] = await Promise.all([client, l.received]);
    const d = delta(before, dp.counters());
    t.equal(sr.sha256, sha256(data), 'server got both halves intact');
    t.equal(cr.sha256, sha256(REPLY), 'client got the reply');
    t.equal(d.bytes_redirected, 0, 'the old connection was not redirected');
    t.equal(d.bytes_passed, 0, 'and never entered the sockhash');
    const r = await exchange(rt, { client: 'a', server: 'b', serverIp: b.ip, port: 7201, kind: 'c-poll', data: data.subarray(0, 1 << 20), reply: REPLY });
    t.equal(r.server.sha256, sha256(data.subarray(0, 1 << 20)), 'a new connection works');
    t.equal(delta(before, dp.counters()).bytes_redirected, (1 << 20) + REPLY.length, 'and is short-circuited');
  });

  t.test('a send whose peer left the sockhash goes to the stack, and that stream stays there', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(a.ip);
    dp.enroll(b.ip);
    const l = await listen(rt, 'b', 7250, Buffer.alloc(0));
    const c = rt.exec('a', clientArgv('c-poll', b.ip, 7250), { stdio: ['pipe', 'pipe', 'pipe'] });
    const client = collect(c);
    const first = DATA.subarray(0, 1 << 20);
    const rest = DATA.subarray(1 << 20, 9 << 20);
    const before = dp.counters();
    c.stdin!.write(first);
    await sleep(300); // the server has read the first part: nothing is queued on its socket
    const serverSock = dp.sockets().find((k) => k.localIp === b.ip);
    t.ok(serverSock && dp.evictSocket(serverSock), 'the server socket left the sockhash');
    c.stdin!.write(rest.subarray(0, 4 << 20));
    await sleep(100);
    c.stdin!.end(rest.subarray(4 << 20));
    const [cr, sr] = await Promise.all([client, l.received]);
    const d = delta(before, dp.counters());
    t.equal(cr.code, 0, 'the client finished');
    t.equal(sr.sha256, sha256(Buffer.concat([first, rest])), 'the server got every byte, in order');
    t.equal(d.bytes_redirected, first.length, 'the part before the eviction was redirected');
    t.equal(d.bytes_passed, rest.length, 'everything after it took the stack');
  });

  t.test('down while redirected bytes sit unread: the reader still gets every byte, then the kernel frees the map', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const dp = datapath();
    dp.start();
    dp.enroll(a.ip);
    dp.enroll(b.ip);
    // a server that accepts, then reads nothing until the datapath is gone
    const srv = rt.exec('b', ['python3', '-c', [
      'import socket, sys, hashlib',
      'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", 7260)); l.listen(1)',
      'print("listening", flush=True); s, _ = l.accept(); sys.stdin.readline(); h = hashlib.sha256()',
      'while True:',
      '    d = s.recv(65536)',
      '    if not d: break',
      '    h.update(d)',
      'print(h.hexdigest(), flush=True)',
    ].join('\n')], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines: string[] = [];
    srv.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
    while (!lines.includes('listening')) await sleep(20);
    const data = DATA.subarray(0, 100_000);
    const c = rt.exec('a', clientArgv('c-poll', b.ip, 7260), { stdio: ['pipe', 'ignore', 'ignore'] });
    c.stdin!.end(data);
    const before = dp.counters();
    for (let i = 0; i < 100 && dp.counters().bytes_redirected! - before.bytes_redirected! < data.length; i++) await sleep(20);
    t.ok(dp.counters().bytes_redirected! >= data.length, 'the bytes were redirected and wait, unread, on the server socket');
    const hashId = dp.mapIds().sm_sock_hash;
    dp.down();
    const mapLive = () => (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show']).toString()) as { id: number }[]).some((m) => m.id === hashId);
    await sleep(300);
    t.ok(mapLive(), 'while a short-circuited socket lives, the kernel keeps the sockhash (and its programs)');
    srv.stdin!.end('go\n');
    await new Promise((r) => srv.on('close', r));
    t.equal(lines[1], sha256(data), 'after down the server read every byte, intact');
    let live = true;
    for (let i = 0; i < 250 && live; i++) {
      await sleep(20);
      live = mapLive();
    }
    t.notOk(live, 'once the connection closed, the kernel freed the sockhash');
  });

  t.test('a second agent adopts the pins; down removes programs, links, maps and pins', async (t) => {
    const { rt, datapath } = await testMesh(t);
    await rt.addPod('a');
    const first = datapath();
    first.start();
    first.enroll('198.18.0.2', 7);
    first.stop();
    const second = datapath();
    t.same(second.start(), { adopted: true, otherBuild: false }, 'the second start adopted the same build');
    t.same(second.endpoints(), [{ ip: '198.18.0.2', info: { identity: 7, flags: 1 } }], 'and sees the endpoints the first wrote');
    const rebuiltDir = mkdtempSync(join(tmpdir(), 'sockmesh-'));
    t.teardown(() => rmSync(rebuiltDir, { recursive: true, force: true }));
    const rebuilt = join(rebuiltDir, 'sockmesh.bpf.o');
    writeFileSync(rebuilt, Buffer.concat([readFileSync(defaultObjectPath()), Buffer.from([0])]));
    const upgraded = datapath({ objectPath: rebuilt });
    t.same(upgraded.start(), { adopted: true, otherBuild: true }, 'an agent of another build adopts, and says so');
    upgraded.stop();
    const st = second.status();
    const progIds = [st.links!.sockops!.progId, st.links!.skMsg!.progId];
    second.down();
    t.notOk(existsSync(TEST_PIN_DIR), 'the pin directory is gone');
    t.notOk(second.isUp(), 'status says down');
    let left: number[] = progIds;
    for (let i = 0; i < 100 && left.length > 0; i++) {
      await sleep(20);
      const live = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show']).toString()) as { id: number }[];
      left = progIds.filter((id) => live.some((p) => p.id === id));
    }
    t.same(left, [], 'the kernel freed both programs');
    const links = JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show']).toString()) as { prog_id: number }[];
    t.notOk(links.some((l) => progIds.includes(l.prog_id)), 'no link refers to them');
    t.doesNotThrow(() => second.down(), 'down again is harmless');
  });

  t.test('a program the verifier rejects: the error carries the verifier log', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sockmesh-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const obj = join(dir, 'rejected.bpf.o');
    const arch = execFileSync('gcc', ['-dumpmachine']).toString().trim();
    execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-Wall', `-I/usr/include/${arch}`, '-c',
      join(repoRoot(), 'tests', 'fixtures', 'bpf', 'rejected.bpf.c'), '-o', obj]);
    const cgroup = join(testCgroupRoot(), '..', 'sockmesh-test-rejected');
    const dp = new Datapath({ objectPath: obj, pinDir: `${TEST_PIN_DIR}-rejected`, cgroupPath: cgroup });
    t.teardown(() => dp.down());
    t.throws(() => dp.start(), {
      code: 'SOCKMESH_VERIFIER_REJECTED',
      program: 'sm_sockops',
      verifierLog: /invalid mem access 'map_value_or_null'/,
    });
    t.notOk(existsSync(`${TEST_PIN_DIR}-rejected`), 'no pin directory was left');
    t.notOk(existsSync(cgroup), 'the cgroup it created was removed');
    const r = cli(['up', '--object', obj, '--pin-dir', `${TEST_PIN_DIR}-rejected`, '--cgroup', cgroup]);
    t.equal(r.code, 1, 'mesh-agent up exits 1');
    t.match(r.stderr, /rejected BPF program sm_sockops .*\[SOCKMESH_VERIFIER_REJECTED\]\n--- verifier log ---\n[\s\S]*invalid mem access[\s\S]*--- end ---\n  hint: /,
      'and prints the verifier log between the error and the hint');
    t.notOk(existsSync(cgroup), 'and leaves nothing behind');
  });

  t.test('a process signalled many times a second (a CPU profiler at 50 µs) still loads the datapath', async (t) => {
    // the verifier gives up with EAGAIN when a signal is pending; the profiler's SIGPROF comes every 50 µs
    const { Session } = await import('node:inspector/promises');
    const session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 50 });
    await session.post('Profiler.start');
    const { datapath } = await testMesh(t);
    const dp = datapath();
    let started: unknown;
    try {
      started = dp.start();
    } catch (err) {
      started = err;
    } finally {
      const { profile } = await session.post('Profiler.stop');
      t.ok(profile.samples!.length > 100, `the profiler was sampling during the load (${profile.samples!.length} samples)`);
      session.disconnect();
    }
    t.same(started, { adopted: false, otherBuild: false }, 'the programs loaded and attached');
    t.teardown(() => dp.stop());
    t.ok(dp.status().up && dp.status().links?.sockops?.progId, 'sockops is attached');
  });
}
