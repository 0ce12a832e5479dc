/**
 * mesh-agent demo: the main job on the embedded defaults. Two enrolled pods
 * exchange traffic through the kernel short-circuit, a third pod outside the
 * mesh takes the normal stack, and the counters show which path each took.
 */
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Datapath } from '../datapath/datapath.js';
import { helperBinary } from '../paths.js';
import { NodeRuntime } from '../runtime/node-runtime.js';
import { InvalidArgumentError } from '../errors.js';
import { parse } from './args.js';
import { renderStatus } from './datapath-commands.js';

const DEMO_HELP = `usage: mesh-agent demo [--keep]

Brings the datapath up, creates pods client, server and outsider in the local
node runtime, enrolls client and server, and runs traffic between them:
request/response with a C client, then 16 MiB checked by sha256. The outsider
(not enrolled) talks to the server too. The counters after each step show
the path. Everything is removed at the end unless --keep is given.
`;

const say = (s: string) => process.stdout.write(s + '\n');

export async function demo(argv: string[]): Promise<number> {
  const p = parse(argv, { keep: { type: 'boolean' } }, DEMO_HELP, false);
  if (!p) return 0;
  // its own prefix and addresses, so pods made with `mesh-agent pod add` are left alone
  const rt = new NodeRuntime({ prefix: 'smd' });
  const ips = { client: '198.18.254.2', server: '198.18.254.3', outsider: '198.18.254.4' };
  const dp = new Datapath({ cgroupPath: rt.cgroupRoot });
  say('==> removing pods an earlier demo may have left');
  await rt.cleanup();
  const { adopted } = dp.start();
  const taken = dp.endpoints().filter((e) => Object.values(ips).includes(e.ip));
  if (taken.length > 0) {
    dp.stop();
    throw new InvalidArgumentError(`the demo's addresses are enrolled already: ${taken.map((e) => e.ip).join(', ')}`, 'unenroll them, or run the demo on another node');
  }
  say(adopted ? `==> the datapath is already up (${dp.pinDir}): using it, and leaving it up afterwards` : '==> datapath up');
  const enrolled: string[] = [];
  try {
    await rt.start();
    const client = await rt.addPod('client', { ip: ips.client });
    const server = await rt.addPod('server', { ip: ips.server });
    const outsider = await rt.addPod('outsider', { ip: ips.outsider });
    say(`    pods: client ${client.ip}, server ${server.ip}, outsider ${outsider.ip} (not enrolled)`);
    dp.enroll(client.ip, 1);
    dp.enroll(server.ip, 2);
    enrolled.push(client.ip, server.ip);
    const srv = rt.exec('server', [helperBinary('rrbench'), 'serve', '7001'], { stdio: 'ignore' });
    await sleep(200);

    say('\n==> client -> server: 1 KiB request/response for 2 s (C client, TCP_NODELAY)');
    let before = dp.counters();
    const rr = JSON.parse((await rt.execOutput('client', [helperBinary('rrbench'), 'rr', server.ip, '7001', '1024', '2'])).toString()) as
      { requests: number; rps: number; p50_us: number; p99_us: number };
    let after = dp.counters();
    say(`    ${rr.requests} requests, ${rr.rps.toFixed(0)}/s, p50 ${rr.p50_us.toFixed(1)} us, p99 ${rr.p99_us.toFixed(1)} us`);
    say(`    kernel path: ${after.msg_redirected! - before.msg_redirected!} messages / ${after.bytes_redirected! - before.bytes_redirected!} bytes redirected socket to socket, ${after.msg_passed! - before.msg_passed!} passed to the stack`);
    say(`    (the client sent ${rr.requests * 1024 + 9} bytes and the server ${rr.requests * 1024}: ${2 * rr.requests * 1024 + 9} in all)`);

    say('\n==> client -> server: 16 MiB of random bytes, half-close, then a reply');
    const data = randomBytes(16 << 20);
    before = dp.counters();
    const sink = rt.exec('server', [helperBinary('smtcp'), 'listen', '7002'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const got = createHash('sha256');
    let gotBytes = 0;
    sink.stdout!.on('data', (d: Buffer) => { got.update(d); gotBytes += d.length; });
    sink.stdin!.end('thanks\n');
    const sinkDone = new Promise((r) => sink.on('close', r));
    await sleep(200);
    const reply = await rt.execOutput('client', [helperBinary('smtcp'), 'connect', server.ip, '7002'], { input: data });
    await sinkDone;
    after = dp.counters();
    const bulkRedirected = after.bytes_redirected! - before.bytes_redirected!;
    const bulkPassed = after.bytes_passed! - before.bytes_passed!;
    const sent = createHash('sha256').update(data).digest('hex');
    const recv = got.digest('hex');
    say(`    sent ${data.length} bytes sha256 ${sent.slice(0, 16)}…, server read ${gotBytes} bytes sha256 ${recv.slice(0, 16)}… ${sent === recv ? 'MATCH' : 'MISMATCH'}`);
    say(`    server saw EOF, replied ${JSON.stringify(reply.toString())}`);
    say(`    kernel path: ${bulkRedirected} bytes redirected, ${bulkPassed} carried by the stack`);

    say('\n==> outsider (not enrolled) -> server: 1 KiB request/response for 1 s');
    before = dp.counters();
    const orr = JSON.parse((await rt.execOutput('outsider', [helperBinary('rrbench'), 'rr', server.ip, '7001', '1024', '1'])).toString()) as
      { requests: number; p50_us: number };
    after = dp.counters();
    say(`    ${orr.requests} requests, p50 ${orr.p50_us.toFixed(1)} us over veth and the bridge`);
    say(`    kernel path: ${after.msg_redirected! - before.msg_redirected!} messages redirected, ${after.sock_skipped! - before.sock_skipped!} sockets skipped (an end not enrolled)`);
    srv.kill();

    say('\n==> mesh-agent status');
    process.stdout.write(renderStatus(dp.status()));
    const ok = sent === recv && bulkRedirected === data.length + 'thanks\n'.length && bulkPassed === 0;
    say(ok ? '\ndemo: OK, enrolled pods talked through the kernel short-circuit' : '\ndemo: FAILED');
    return ok ? 0 : 1;
  } finally {
    if (!p.values.keep) {
      say(`\n==> removing the pods${adopted ? '' : ' and the datapath'}`);
      await rt.cleanup();
      for (const ip of enrolled) dp.unenroll(ip);
      if (adopted) {
        dp.stop(); // its cgroup stays: removing it would detach the programs
      } else {
        dp.down();
        rt.removeCgroupRootIfEmpty();
      }
    } else {
      dp.stop();
      say('\n==> kept: see `mesh-agent status`, `mesh-agent pod list`; remove with `mesh-agent pod cleanup && mesh-agent down`');
    }
  }
}
