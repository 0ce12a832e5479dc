/**
 * mesh-agent demo: the main job on the embedded defaults. The agent runs the
 * example app in examples/ (namespace shop in the mesh, namespace legacy
 * outside it) on the local node runtime, with its own datapath, prefix and
 * admin socket so nothing else on the node is touched; after some traffic it
 * shows the pods, the services, which connections the kernel short-circuits,
 * and the counters that prove it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from '../agent.js';
import { findCgroup2 } from '../datapath/host-checks.js';
import { Datapath } from '../datapath/datapath.js';
import { repoRoot } from '../paths.js';
import { NodeRuntime } from '../runtime/node-runtime.js';
import { execFileSync } from 'node:child_process';
import { int, parse, str, table } from './args.js';
import { renderCluster } from './datapath-commands.js';
import { formatFlow } from './observe-command.js';
import { groupTraces, readTraceFiles, serviceName } from '../telemetry/trace-file.js';
import { renderWaterfall } from '../telemetry/waterfall.js';

const DEMO_HELP = `usage: mesh-agent demo [--manifests DIR] [--seconds N] [--keep]

Runs the agent on the example app (examples/ in the checkout): namespace
"shop" is in the mesh (annotated sockmesh.io/enabled: "true"), namespace
"legacy" is not. A load generator in shop calls the frontend service, which
calls catalog (in the mesh, an L7 service: an HTTPRoute sends it through the
node's shared proxy) and inventory (outside it); a reporter in legacy calls
catalog. After the traffic runs it prints the pods and why each is or
is not enrolled, the services with their VIPs, the connections short-
circuited in the kernel (by pod), and the datapath counters. The demo uses
its own datapath (/sys/fs/bpf/sockmesh-demo), runtime prefix (smd) and admin
socket; everything is removed at the end unless --keep is given.

  --manifests DIR   another app to run (default: examples/ of the checkout)
  --seconds N       how long the traffic runs before the report (default 4)
  --keep            leave the agent's pods and datapath in place (the agent exits)
`;

const say = (s: string) => process.stdout.write(s + '\n');

/** Client-side TCP connections established in a netns (the peer port is the lower one: a server's). */
function establishedClients(netns: string): { localIp: string; localPort: number; remoteIp: string; remotePort: number }[] {
  let out: string;
  try {
    out = execFileSync('ip', ['netns', 'exec', netns, 'ss', '-Htn4', 'state', 'established'], { encoding: 'utf8' });
  } catch {
    return [];
  }
  return out.trim().split('\n').filter(Boolean).flatMap((line) => {
    const cols = line.trim().split(/\s+/);
    const [local, remote] = cols.slice(-2) as [string, string];
    const [li, lp] = local.split(':') as [string, string];
    const [ri, rp] = remote.split(':') as [string, string];
    const c = { localIp: li, localPort: Number(lp), remoteIp: ri, remotePort: Number(rp) };
    return c.localPort > c.remotePort ? [c] : [];
  });
}

const PIN_DIR = '/sys/fs/bpf/sockmesh-demo';
const PREFIX = 'smd';
const ADMIN_SOCKET = '/run/sockmesh/demo.sock';

export async function demo(argv: string[]): Promise<number> {
  const p = parse(argv, { manifests: { type: 'string' }, seconds: { type: 'string' }, keep: { type: 'boolean' } }, DEMO_HELP, false);
  if (!p) return 0;
  const manifests = str(p, 'manifests') ?? join(repoRoot(), 'examples');
  const seconds = int(p, 'seconds', 1) ?? 4;
  const cgroupPath = join(findCgroup2(), 'sockmesh-demo');
  say('==> removing what an earlier demo may have left');
  await new NodeRuntime({ prefix: PREFIX, cgroupRoot: cgroupPath }).cleanup();
  new Datapath({ pinDir: PIN_DIR, cgroupPath }).down();

  const agent = new Agent({
    manifests, runtimePrefix: PREFIX, datapath: { pinDir: PIN_DIR, cgroupPath },
    adminSocket: ADMIN_SOCKET, adminAddress: null, xdsAddress: '127.0.0.1:0', xdsSocket: '/run/sockmesh/demo-xds.sock', nodeName: 'demo-node',
    log: (line) => say(`    agent: ${line}`),
  });
  say(`==> starting the agent on ${manifests}`);
  await agent.start();
  let ok = false;
  try {
    say('==> waiting for every pod to run and every service to have a backend');
    const deadline = Date.now() + 30_000;
    for (;;) {
      const c = agent.status().cluster!;
      const pods = c.pods.filter((x) => x.local);
      if (pods.length > 0 && pods.every((x) => x.phase === 'Running') && c.services.every((s) => s.ports.every((sp) => sp.backends > 0))) break;
      if (Date.now() > deadline) throw new Error(`pods not running after 30 s: ${pods.map((x) => `${x.key} ${x.phase}`).join(', ')}`);
      await sleep(200);
    }
    const before = agent.status().datapath.counters!;
    say(`==> traffic for ${seconds} s: loadgen -> frontend -> catalog + inventory; legacy/reporter -> catalog`);
    await sleep(seconds * 1000);
    const st = agent.status();
    const after = st.datapath.counters!;
    const cluster = st.cluster!;
    say('');
    say(renderCluster(cluster));

    // every established connection of every pod, and the path it takes
    const byIp = new Map(cluster.pods.filter((x) => x.ip).map((x) => [x.ip!, x]));
    const dp = new Datapath({ pinDir: PIN_DIR, cgroupPath });
    dp.adopt();
    let inHash: Set<string>;
    try {
      inHash = new Set(dp.sockets().map((s) => `${s.localIp}:${s.localPort}>${s.remoteIp}:${s.remotePort}`));
    } finally {
      dp.stop();
    }
    const rows: string[][] = [];
    const paths: { client: string; server: string; kernel: boolean }[] = [];
    const proxyIp = cluster.l7.proxyAddress;
    const nameOf = (ip: string) => (ip === proxyIp ? 'node proxy' : byIp.get(ip)?.key ?? ip);
    const enrolledIp = (ip: string) => ip === proxyIp || byIp.get(ip)?.enrolled === true;
    const clients = [
      ...cluster.pods.filter((p) => p.runtimeName).map((p) => ({ name: p.key, netns: `${PREFIX}-pod-${p.runtimeName}` })),
      ...(proxyIp ? [{ name: 'node proxy', netns: `${PREFIX}-node` }] : []),
    ];
    for (const cl of clients) {
      for (const c of establishedClients(cl.netns)) {
        const kernel = inHash.has(`${c.localIp}:${c.localPort}>${c.remoteIp}:${c.remotePort}`);
        const why = kernel ? 'both enrolled'
          : !enrolledIp(c.localIp) ? `${nameOf(c.localIp)} not enrolled` : !enrolledIp(c.remoteIp) ? `${nameOf(c.remoteIp)} not enrolled` : 'opened before both ends were enrolled';
        paths.push({ client: cl.name, server: nameOf(c.remoteIp), kernel });
        rows.push([cl.name, `${nameOf(c.remoteIp)}:${c.remotePort}`, kernel ? 'kernel short-circuit' : 'TCP/IP stack', why]);
      }
    }
    say('\nconnections open now (from each pod\'s netns; path from sm_sock_hash)');
    say(table(['CLIENT', 'SERVER', 'PATH', 'WHY'], rows.sort((a, b) => (a.join() < b.join() ? -1 : 1))).split('\n').map((l) => `  ${l}`).join('\n'));
    const d = (k: string) => after[k]! - before[k]!;
    say(`\ndatapath counters over the ${seconds} s of traffic`);
    say(`  connects to a service VIP sent to a backend in the kernel  ${d('svc_translated')}`);
    say(`  sockets put into the short-circuit (both ends enrolled)    ${d('sock_inserted')}`);
    say(`  sockets left on the TCP/IP stack (an end not enrolled)     ${d('sock_skipped')}`);
    say(`  bytes redirected socket to socket                          ${d('bytes_redirected')}`);
    say(`  bytes sent through the stack by short-circuited sockets    ${d('bytes_passed')}`);
    say('  (keep-alive connections opened before the window carry most of the bytes; new sockets are counted as they open)');

    // the node proxy writes its access log every second (as Envoy does) and sends its spans about once a second
    await sleep(2500);
    const proxyLogPath = cluster.l7.proxy ? join(cluster.l7.proxy.log, '..', 'node-proxy-access.log') : '';
    // the text after the last newline is a line still being written: left out
    const proxyLog = (existsSync(proxyLogPath) ? readFileSync(proxyLogPath, 'utf8').split('\n').slice(0, -1).filter(Boolean) : []).map((l) => JSON.parse(l) as { listener: string; status: number; source?: string; route?: string; upstream?: string });
    const last = proxyLog.filter((e) => e.listener === 'shop/catalog:80').slice(-3);
    say('\nthe node proxy\'s access log (last 3 catalog requests: caller, route, backend)');
    for (const e of last) say(`  ${e.source ?? '?'} -> ${e.route} -> ${e.upstream} ${e.status}`);
    // flows and a trace: what observe and traces show
    const flows = agent.telemetry.recentFlows({ namespace: 'shop' }, 200);
    // connections are reported when they close: the app's keep-alive connections stay open, so there may be none yet
    say('\nflows (mesh-agent observe): the last request through the node proxy, and the last connection that closed');
    const lastL7 = flows.filter((f) => f.type === 'l7' && f.service === 'catalog').at(-1);
    const lastL4 = flows.filter((f) => f.type === 'l4').at(-1);
    for (const f of [lastL7, lastL4]) if (f) say(`  ${formatFlow(f)}`);
    if (!lastL4) say('  (no connection of shop closed yet: the app keeps its connections open)');
    const traceFile = agent.telemetry.options.file;
    let traced = false;
    if (agent.telemetry.options.enabled && agent.telemetry.options.target === 'file' && existsSync(traceFile)) {
      const traces = groupTraces((await readTraceFiles(traceFile)).spans)
        .filter((tr) => tr.spans.some((x) => serviceName(x) === 'catalog' && x.kind === 'SERVER') && tr.spans.some((x) => serviceName(x) === 'frontend' && x.kind === 'CLIENT'));
      const newest = traces.at(-1);
      traced = newest !== undefined;
      if (newest) {
        say(`\na trace (mesh-agent traces, from ${traceFile}): frontend calls catalog through the node proxy, each span under its own pod`);
        say(renderWaterfall([newest], { widthColumns: 100 }).map((l) => `  ${l}`).join('\n'));
      }
    }
    const logs = (key: string) => {
      const x = cluster.pods.find((q) => q.key === key);
      return x?.log && existsSync(x.log) ? readFileSync(x.log, 'utf8') : '';
    };
    const lastLine = (key: string) => logs(key).trim().split('\n').filter((l) => /requests/.test(l)).pop() ?? '(no report yet)';
    say(`\nshop/loadgen says:    ${lastLine('shop/loadgen')}`);
    say(`legacy/reporter says: ${lastLine('legacy/reporter')}`);

    const has = (client: RegExp, server: RegExp, kernel: boolean) => paths.some((x) => client.test(x.client) && server.test(x.server) && x.kernel === kernel);
    const checks: [string, boolean][] = [
      ['shop/loadgen -> shop/frontend takes the kernel short-circuit', has(/^shop\/loadgen$/, /^shop\/frontend$/, true)],
      ['shop/frontend -> node proxy (catalog is L7) takes the kernel short-circuit', has(/^shop\/frontend$/, /^node proxy$/, true)],
      ['node proxy -> shop/catalog-* takes the kernel short-circuit', has(/^node proxy$/, /^shop\/catalog-/, true)],
      ['shop/frontend -> legacy/inventory takes the stack', has(/^shop\/frontend$/, /^legacy\/inventory$/, false)],
      ['legacy/reporter -> node proxy takes the stack (reporter is not in the mesh)', has(/^legacy\/reporter$/, /^node proxy$/, false)],
      ['no connection of a legacy pod is short-circuited', !paths.some((x) => x.kernel && (x.client.startsWith('legacy/') || x.server.startsWith('legacy/')))],
      ['the node proxy served catalog (its access log)', proxyLog.some((e) => e.listener === 'shop/catalog:80' && e.status === 200)],
      ['bytes took the kernel path, none fell back to the stack', d('bytes_redirected') > 0 && d('bytes_passed') === 0],
      ['the mesh app answered (loadgen: the last 20 requests all good)', /^20 requests, 0 failed/.test(lastLine('shop/loadgen'))],
      ['the legacy client reached the mesh service by name', /"pod":"catalog-/.test(lastLine('legacy/reporter'))],
      ['observe saw frontend\'s requests to catalog through the node proxy', lastL7 !== undefined && lastL7.source.pod === 'frontend' && lastL7.status === 200],
      ...(agent.telemetry.options.enabled && agent.telemetry.options.target === 'file'
        ? [['a trace has frontend\'s CLIENT span and catalog\'s SERVER span, each with its own resource', traced] as [string, boolean]] : []),
    ];
    say('');
    for (const [what, good] of checks) say(`  ${good ? 'ok  ' : 'FAIL'} ${what}`);
    ok = checks.every(([, good]) => good);
    say(ok ? '\ndemo: OK' : '\ndemo: FAILED');
  } finally {
    if (p.values.keep) {
      await agent.stop();
      say(`\n==> kept: pods of prefix ${PREFIX} and the datapath in ${PIN_DIR}; \`mesh-agent run --manifests ${manifests} --prefix ${PREFIX} --pin-dir ${PIN_DIR} --cgroup ${cgroupPath}\` adopts them`);
    } else {
      say('\n==> removing the pods, the runtime network and the datapath');
      await agent.stop({ down: true, removePods: true });
    }
  }
  return ok ? 0 : 1;
}
