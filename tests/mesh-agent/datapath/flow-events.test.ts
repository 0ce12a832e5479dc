/*
 * Flow events: the decoder and the reader's options (no root needed), then,
 * privileged, real connections between pods (netns + veth + bridge + cgroup)
 * and the records sockops writes for them on sm_flow_events.
 */
import { existsSync } from 'node:fs';
import t, { type Test } from 'tap';
import {
  type FlowEvent, FlowEventReader, decodeFlowEvent, epochOffsetNs, monotonicToEpochNs,
} from '../../../mesh-agent/datapath/flow-events.js';
import { btfOfFile } from '../../../mesh-agent/datapath/libbpf.js';
import {
  encodeBackend, encodeBackendKey, encodeIPv4, encodeService, encodeServiceKey, layoutFromBtf,
} from '../../../mesh-agent/datapath/layout.js';
import type { Datapath } from '../../../mesh-agent/datapath/datapath.js';
import { defaultObjectPath } from '../../../mesh-agent/paths.js';
import type { NodeRuntime } from '../../../mesh-agent/runtime/node-runtime.js';
import { TEST_PIN_DIR, testMesh } from '../../fixtures/mesh.js';
import { privileged } from '../../fixtures/privileged.js';
import { until } from '../../fixtures/wait.js';

const layout = layoutFromBtf(btfOfFile(defaultObjectPath()));
const fl = layout.flowEvent;

/** A record as sockops would write it, built field by field at the BTF offsets. */
function record(f: {
  cookie: bigint; ts: bigint; open: bigint; stackSent: bigint; stackRecv: bigint; redirSent: bigint;
  local: [string, number]; remote: [string, number]; svc: [string, number]; kind: number; flags: number;
}): Buffer {
  const b = Buffer.alloc(fl.size, 0xee); // no field may be left to chance
  const o = fl.offsets;
  b.writeBigUInt64LE(f.cookie, o.cookie);
  b.writeBigUInt64LE(f.ts, o.ts_ns);
  b.writeBigUInt64LE(f.open, o.open_ns);
  b.writeBigUInt64LE(f.stackSent, o.stack_sent);
  b.writeBigUInt64LE(f.stackRecv, o.stack_recv);
  b.writeBigUInt64LE(f.redirSent, o.redir_sent);
  encodeIPv4(f.local[0]).copy(b, o.local_ip4);
  encodeIPv4(f.remote[0]).copy(b, o.remote_ip4);
  encodeIPv4(f.svc[0]).copy(b, o.svc_ip4);
  b.writeUInt32LE(f.local[1], o.local_port);
  b.writeUInt32LE(f.remote[1], o.remote_port);
  b.writeUInt32LE(f.svc[1], o.svc_port);
  b.writeUInt32LE(f.kind, o.kind);
  b.writeUInt32LE(f.flags, o.flags);
  return b;
}

t.test('struct sm_flow_event as the object has it', async (t) => {
  t.equal(fl.size, 80, '80 bytes, naturally aligned, no padding');
  t.same(fl.offsets, {
    cookie: 0, ts_ns: 8, open_ns: 16, stack_sent: 24, stack_recv: 32, redir_sent: 40, local_ip4: 48, remote_ip4: 52,
    svc_ip4: 56, local_port: 60, remote_port: 64, svc_port: 68, kind: 72, flags: 76,
  });
  t.same([fl.kindOpen, fl.kindClose], [1, 2], 'enum sm_flow_kind');
  t.same([fl.flagActive, fl.flagShortCircuited, fl.flagService], [1, 2, 4], 'enum sm_flow_flags');
  t.equal(layout.counters.get('flow_events_lost'), 11, 'the lost-events counter has its slot, so it is reported with the others');
});

t.test('a hand-built record decodes field by field', async (t) => {
  const close = record({
    cookie: 2n ** 64n - 3n, ts: 5_000_000_123n, open: 4_000_000_000n, stackSent: 2n ** 40n + 1n, stackRecv: 7n, redirSent: 100_000n,
    local: ['198.18.0.2', 40001], remote: ['198.18.0.3', 7000], svc: ['198.19.0.10', 80], kind: fl.kindClose,
    flags: fl.flagActive | fl.flagShortCircuited | fl.flagService,
  });
  t.same(decodeFlowEvent(close, fl), {
    kind: 'close', cookie: 2n ** 64n - 3n, tsNs: 5_000_000_123n, openNs: 4_000_000_000n,
    local: { ip: '198.18.0.2', port: 40001 }, remote: { ip: '198.18.0.3', port: 7000 },
    active: true, shortCircuited: true, service: { ip: '198.19.0.10', port: 80 },
    stackSentBytes: 2 ** 40 + 1, stackRecvBytes: 7, redirSentBytes: 100_000,
  } satisfies FlowEvent);
  const open = record({
    cookie: 9n, ts: 1n, open: 1n, stackSent: 0n, stackRecv: 0n, redirSent: 0n,
    local: ['198.18.0.3', 7000], remote: ['198.18.0.2', 40001], svc: ['0.0.0.0', 0], kind: fl.kindOpen, flags: 0,
  });
  t.same(decodeFlowEvent(open, fl), {
    kind: 'open', cookie: 9n, tsNs: 1n, local: { ip: '198.18.0.3', port: 7000 }, remote: { ip: '198.18.0.2', port: 40001 },
    active: false, shortCircuited: false, stackSentBytes: 0, stackRecvBytes: 0, redirSentBytes: 0,
  }, 'an open record has no openNs; no service flag, no service');
  t.same(decodeFlowEvent(Buffer.concat([open, Buffer.alloc(8)]), fl).cookie, 9n, 'ring records may be padded at the end');
  t.throws(() => decodeFlowEvent(open.subarray(0, 79), fl), { code: 'SOCKMESH_LAYOUT_MISMATCH', message: /79 bytes/ });
  const bad = Buffer.from(open);
  bad.writeUInt32LE(3, fl.offsets.kind!);
  t.throws(() => decodeFlowEvent(bad, fl), { code: 'SOCKMESH_LAYOUT_MISMATCH', message: /kind 3/ });
});

t.test('kernel monotonic time to Unix epoch time', async (t) => {
  const off = epochOffsetNs();
  // bracketed by the wall clock, so a pause between the reads (a busy CI machine) cannot fail it;
  // both clocks are read to the ms, hence 1 ms either side
  const wallBefore = Date.now();
  const epochMs = Number(monotonicToEpochNs(process.hrtime.bigint(), off) / 1_000_000n);
  const wallAfter = Date.now();
  t.ok(epochMs >= wallBefore - 1 && epochMs <= wallAfter + 1, `now on the monotonic clock is now on the wall clock (${epochMs} within ${wallBefore}..${wallAfter})`);
  t.equal(monotonicToEpochNs(1_000n, 5n), 1_005n, 'adds the offset given');
});

t.test('reader options are validated up front and frozen; the constructor does no I/O', async (t) => {
  const onEvents = () => undefined;
  const r = new FlowEventReader({ mapPath: '/sys/fs/bpf/nowhere/sm_flow_events', layout, onEvents });
  t.equal(r.options.pollIntervalMs, 100, 'polls every 100 ms by default');
  t.ok(Object.isFrozen(r.options));
  t.equal(r.poll(), 0, 'poll before start delivers nothing');
  t.doesNotThrow(() => r.stop(), 'stop before start is harmless');
  for (const [name, opts] of [
    ['relative path', { mapPath: 'sm_flow_events' }],
    ['zero interval', { pollIntervalMs: 0 }],
    ['fractional interval', { pollIntervalMs: 2.5 }],
    ['no listener', { onEvents: undefined }],
  ] as const) {
    t.throws(() => new FlowEventReader(Object.assign({ mapPath: '/sys/fs/bpf/x', layout, onEvents }, opts) as never), { code: 'SOCKMESH_INVALID_ARGUMENT' }, name);
  }
  t.throws(() => r.start(), { code: 'SOCKMESH_BPF' }, 'start on a missing pin fails with the errno');
});

/**
 * Peers for the close sequences below (Python, blocking sockets). A blocking
 * recv() on a short-circuited socket can fail with EAGAIN when a state change
 * wakes it (sockmap's tcp_bpf_recvmsg, with or without sockmesh's state
 * callback): such a recv waits in select() and tries again.
 */
const PEER = `
import select, socket, sys, time
role, style = sys.argv[1], sys.argv[2]
def recv(s, n):
    while True:
        try:
            return s.recv(n)
        except BlockingIOError:
            select.select([s], [], [], 1)
def read_n(s, n):
    got = 0
    while got < n:
        d = recv(s, min(65536, n - got))
        if not d: raise SystemExit("eof after %d of %d bytes" % (got, n))
        got += len(d)
def read_eof(s):
    got = 0
    try:
        while True:
            d = recv(s, 65536)
            if not d: break
            got += len(d)
    except ConnectionResetError:
        pass
    return got
if role == "server":
    port, n_in, n_out = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", port)); l.listen(1)
    print("listening", flush=True)
    s, _ = l.accept(); l.close()
    if style == "half-close":
        assert read_eof(s) == n_in
        s.sendall(b"s" * n_out)
    elif style == "server-closes":
        read_n(s, n_in); s.sendall(b"s" * n_out)
    else:
        read_n(s, n_in); s.sendall(b"s" * n_out); read_eof(s)
    s.close()
else:
    host, port, n_out, n_in = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    s = socket.create_connection((host, port))
    s.sendall(b"c" * n_out)
    if style == "half-close":
        s.shutdown(socket.SHUT_WR); assert read_eof(s) == n_in
    elif style == "server-closes":
        assert read_eof(s) == n_in
    else:
        read_n(s, n_in)
    if style == "client-resets":
        time.sleep(0.3)  # the server has our ACKs of its bytes before the RST
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
    s.close()
print("done", flush=True)
`;

type CloseStyle = 'half-close' | 'client-closes' | 'server-closes' | 'client-resets';
const STYLES: CloseStyle[] = ['half-close', 'client-closes', 'server-closes', 'client-resets'];

/** Runs one connection: client pod → host:port, served in serverPod on serverPort. */
async function connection(rt: NodeRuntime, o: {
  client: string; server: string; host: string; port: number; serverPort: number; style: CloseStyle; clientBytes: number; serverBytes: number;
}): Promise<void> {
  const srv = rt.exec(o.server, ['python3', '-c', PEER, 'server', o.style, String(o.serverPort), String(o.clientBytes), String(o.serverBytes)],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  srv.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  srv.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const srvDone = new Promise<number | null>((resolve) => srv.on('close', resolve));
  await until(`the server in ${o.server} listening (${err})`, () => out.includes('listening'), 10_000, 10);
  const cli = await rt.execOutput(o.client, ['python3', '-c', PEER, 'client', o.style, o.host, String(o.port), String(o.clientBytes), String(o.serverBytes)],
    { timeoutMs: 30_000 });
  if (!cli.toString().includes('done')) throw new Error(`client failed: ${cli.toString()}`);
  const code = await srvDone;
  if (code !== 0) throw new Error(`server exited ${code}: ${err}`);
}

/** A started reader collecting every event; stopped at the end of t. */
function collectEvents(t: Test, dp: Datapath): FlowEvent[] {
  const events: FlowEvent[] = [];
  const reader = dp.flowEventReader({ onEvents: (evs) => events.push(...evs), pollIntervalMs: 20 });
  reader.start();
  t.teardown(() => reader.stop());
  return events;
}

/** The open and close events of the socket at local (ip, port filter). */
function sideOf(events: FlowEvent[], match: (e: FlowEvent) => boolean): { open?: FlowEvent; close?: FlowEvent; all: FlowEvent[] } {
  const all = events.filter(match);
  return { open: all.find((e) => e.kind === 'open'), close: all.find((e) => e.kind === 'close'), all };
}

if (privileged(t)) {
  const CLIENT_BYTES = 100_000;
  const SERVER_BYTES = 50_000;

  /** Waits for both sockets' close events, then returns client and server sides. */
  async function sides(events: FlowEvent[], c: { clientIp: string; serverIp: string; serverPort: number }) {
    const client = () => sideOf(events, (e) => e.local.ip === c.clientIp && e.remote.ip === c.serverIp && e.remote.port === c.serverPort);
    const server = () => sideOf(events, (e) => e.local.ip === c.serverIp && e.local.port === c.serverPort && e.remote.ip === c.clientIp);
    await until(`close events of both sockets to ${c.serverIp}:${c.serverPort}`, () => client().close && server().close, 10_000, 20);
    return { client: client(), server: server() };
  }

  t.test('two enrolled pods: open and close of both sockets, short-circuited, redirected bytes exact', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(a.ip, 1);
    dp.enroll(b.ip, 2);
    const events = collectEvents(t, dp);
    const lost0 = dp.counters().flow_events_lost!;
    for (const [i, style] of STYLES.entries()) {
      const port = 7300 + i;
      const before = dp.counters();
      const t0 = process.hrtime.bigint();
      await connection(rt, { client: 'a', server: 'b', host: b.ip, port, serverPort: port, style, clientBytes: CLIENT_BYTES, serverBytes: SERVER_BYTES });
      const { client, server } = await sides(events, { clientIp: a.ip, serverIp: b.ip, serverPort: port });
      const after = dp.counters();
      t.equal(after.bytes_redirected! - before.bytes_redirected!, CLIENT_BYTES + SERVER_BYTES, `${style}: every byte took the redirect`);
      t.equal(client.all.length + server.all.length, 4, `${style}: one open and one close per socket`);
      const c = client.open!;
      t.match(c, { kind: 'open', active: true, shortCircuited: true, local: { ip: a.ip }, remote: { ip: b.ip, port } }, `${style}: client open`);
      t.match(server.open, { kind: 'open', active: false, shortCircuited: true, local: { ip: b.ip, port }, remote: { ip: a.ip, port: c.local.port } },
        `${style}: server open, its remote is the client's local address`);
      t.ok(c.local.port > 0 && c.service === undefined && server.open!.service === undefined, `${style}: no service on a direct connection`);
      t.ok(c.tsNs > t0, `${style}: times are on the monotonic clock of process.hrtime`);
      t.equal(c.cookie, client.close!.cookie, `${style}: the client's open and close share its cookie`);
      t.not(c.cookie, server.open!.cookie, `${style}: the two sockets have different cookies`);
      for (const [name, side, sent] of [['client', client, CLIENT_BYTES], ['server', server, SERVER_BYTES]] as const) {
        t.match(side.close, {
          kind: 'close', shortCircuited: true, active: name === 'client', openNs: side.open!.tsNs,
          redirSentBytes: sent, stackSentBytes: 0, stackRecvBytes: 0,
        }, `${style}: ${name} close: ${sent} bytes redirected, none on the stack (the handshake and FINs are not payload)`);
        t.ok(side.close!.tsNs > side.close!.openNs!, `${style}: ${name} lived ${side.close!.tsNs - side.close!.openNs!} ns`);
      }
    }
    t.equal(dp.counters().flow_events_lost! - lost0, 0, 'no event was lost');
  });

  t.test('through a service VIP: the client socket names the service; a translated socket is tracked even with no end enrolled', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    await rt.addPod('outsider');
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(a.ip, 1);
    dp.enroll(b.ip, 2);
    const anyClient = layout.serviceAnyClientFlag;
    const vip = '198.19.0.20';
    dp.put('sm_services', encodeServiceKey({ vip, port: 80 }), encodeService({ id: 61, count: 1, gen: 0, flags: anyClient }));
    dp.put('sm_backends', encodeBackendKey({ svcId: 61, slot: 0, gen: 0 }), encodeBackend({ ip: b.ip, port: 7400 }));
    const events = collectEvents(t, dp);

    await connection(rt, { client: 'a', server: 'b', host: vip, port: 80, serverPort: 7400, style: 'half-close', clientBytes: CLIENT_BYTES, serverBytes: SERVER_BYTES });
    const { client, server } = await sides(events, { clientIp: a.ip, serverIp: b.ip, serverPort: 7400 });
    t.match(client.open, { active: true, shortCircuited: true, service: { ip: vip, port: 80 }, remote: { ip: b.ip, port: 7400 } },
      'client open: the VIP it dialled, the backend it reached');
    t.match(client.close, { service: { ip: vip, port: 80 }, redirSentBytes: CLIENT_BYTES, stackSentBytes: 0, stackRecvBytes: 0 }, 'client close: the same, with its bytes');
    t.equal(server.open!.service, undefined, 'the backend\'s socket was not translated');
    t.match(server.close, { active: false, shortCircuited: true, redirSentBytes: SERVER_BYTES }, 'server close');

    // neither end enrolled: not short-circuited, but connect4 translated it, so the client's socket is reported
    dp.unenroll(b.ip);
    const outsider = (await rt.pods()).find((p) => p.name === 'outsider')!;
    await connection(rt, { client: 'outsider', server: 'b', host: vip, port: 80, serverPort: 7400, style: 'half-close', clientBytes: CLIENT_BYTES, serverBytes: SERVER_BYTES });
    const oc = () => sideOf(events, (e) => e.local.ip === outsider.ip);
    await until('the outsider\'s close event', () => oc().close, 10_000, 20);
    t.match(oc().close, {
      active: true, shortCircuited: false, service: { ip: vip, port: 80 }, remote: { ip: b.ip, port: 7400 },
      stackSentBytes: CLIENT_BYTES, stackRecvBytes: SERVER_BYTES, redirSentBytes: 0,
    }, 'the outsider\'s translated socket: service, stack bytes exact');
    await new Promise((r) => setTimeout(r, 200));
    t.equal(sideOf(events, (e) => e.local.ip === b.ip && e.remote.ip === outsider.ip).all.length, 0, 'its backend socket (no end enrolled, not translated) is not reported');
  });

  t.test('one end not enrolled: on the stack, stack bytes exact for every way of closing', async (t) => {
    const { rt, datapath } = await testMesh(t);
    await rt.addPod('outsider');
    const b = await rt.addPod('b');
    const outsider = (await rt.pods()).find((p) => p.name === 'outsider')!;
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(b.ip, 2);
    const events = collectEvents(t, dp);
    for (const [i, style] of STYLES.entries()) {
      const port = 7500 + i;
      const before = dp.counters();
      await connection(rt, { client: 'outsider', server: 'b', host: b.ip, port, serverPort: port, style, clientBytes: CLIENT_BYTES, serverBytes: SERVER_BYTES });
      const { client, server } = await sides(events, { clientIp: outsider.ip, serverIp: b.ip, serverPort: port });
      t.equal(dp.counters().bytes_redirected! - before.bytes_redirected!, 0, `${style}: nothing took the redirect`);
      t.match(client.open, { active: true, shortCircuited: false }, `${style}: client open, an end enrolled is enough to be reported`);
      t.match(server.open, { active: false, shortCircuited: false }, `${style}: server open`);
      t.match(client.close, { stackSentBytes: CLIENT_BYTES, stackRecvBytes: SERVER_BYTES, redirSentBytes: 0 }, `${style}: client close, payload bytes exact`);
      t.match(server.close, { stackSentBytes: SERVER_BYTES, stackRecvBytes: CLIENT_BYTES, redirSentBytes: 0 }, `${style}: server close, payload bytes exact`);
    }
  });

  t.test('a full ring buffer loses records and counts them; what it kept is delivered', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const dp = datapath();
    dp.start();
    t.teardown(() => dp.stop());
    dp.enroll(a.ip);
    dp.enroll(b.ip);
    // 1 MiB holds 11915 records of 88 bytes (80 and libbpf's 8-byte header); 3200 connections write 12800
    const n = 3200;
    const srv = rt.exec('b', ['python3', '-c', [
      'import socket',
      'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", 7700)); l.listen(512)',
      'print("listening", flush=True)',
      `for _ in range(${n}):`,
      '    s, _ = l.accept()',
      '    while s.recv(4096): pass',
      '    s.close()',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const srvDone = new Promise((r) => srv.on('close', r));
    await new Promise<void>((r) => srv.stdout!.once('data', () => r()));
    const before = dp.counters();
    await rt.execOutput('a', ['python3', '-c', [
      'import socket',
      `for _ in range(${n}):`,
      `    s = socket.create_connection(("${b.ip}", 7700)); s.close()`,
    ].join('\n')], { timeoutMs: 120_000 });
    await srvDone;
    const lost = () => dp.counters().flow_events_lost! - before.flow_events_lost!;
    const events: FlowEvent[] = [];
    const reader = dp.flowEventReader({ onEvents: (evs) => events.push(...evs), pollIntervalMs: 60_000 });
    reader.start();
    t.teardown(() => reader.stop());
    await until('every record delivered or counted lost', () => {
      reader.poll();
      return events.length + lost() === 4 * n;
    }, 10_000, 50);
    t.equal(dp.counters().sock_inserted! - before.sock_inserted!, 2 * n, `${n} connections, short-circuited`);
    t.ok(lost() > 0, `${lost()} records did not fit and were counted as lost`);
    t.ok(events.length >= 11_000, `${events.length} records fit and were delivered (poll() drains on demand)`);
    t.equal(events.length + lost(), 4 * n, 'delivered + lost = 4 records per connection, exactly');
  });

  t.test('the ring buffer is pinned with the rest: adopted by a second agent, removed by down', async (t) => {
    const { rt, datapath } = await testMesh(t);
    const a = await rt.addPod('a');
    const b = await rt.addPod('b');
    const first = datapath();
    first.start();
    first.enroll(a.ip);
    first.enroll(b.ip);
    t.ok(existsSync(`${TEST_PIN_DIR}/sm_flow_events`), 'sm_flow_events is pinned on up');
    const ringId = first.mapIds().sm_flow_events;
    first.stop();
    const second = datapath();
    t.same(second.start(), { adopted: true, otherBuild: false });
    t.equal(second.mapIds().sm_flow_events, ringId, 'the second agent has the same ring buffer');
    const events: FlowEvent[] = [];
    const reader = second.flowEventReader({ onEvents: (evs) => events.push(...evs), pollIntervalMs: 60_000 });
    reader.start();
    await connection(rt, { client: 'a', server: 'b', host: b.ip, port: 7600, serverPort: 7600, style: 'half-close', clientBytes: 1000, serverBytes: 10 });
    await until('both sockets closed', () => second.sockets().length === 0 && second.counters().sock_inserted === 2);
    await new Promise((r) => setTimeout(r, 100));
    t.equal(events.length, 0, 'a reader polls on its interval only (60 s here)');
    reader.stop();
    t.equal(events.filter((e) => e.kind === 'close' && e.redirSentBytes > 0).length, 2, 'stop() delivered what was left: the adopted datapath\'s events');
    t.doesNotThrow(() => reader.stop(), 'stop again is harmless');
    second.down();
    t.notOk(existsSync(`${TEST_PIN_DIR}/sm_flow_events`), 'down removes its pin');
  });
}
