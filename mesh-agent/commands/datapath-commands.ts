/** mesh-agent up | down | enroll | unenroll | status */
import type { TypeState } from '../../xds/ads-server.js';
import { DEFAULT_ADMIN_SOCKET, adminGet } from '../admin/admin-client.js';
import type { AgentStatus, ClusterStatus } from '../agent.js';
import { AgentNotRunningError, InvalidArgumentError } from '../errors.js';
import { checkPrivileges } from '../datapath/host-checks.js';
import { encodeIPv4 } from '../datapath/layout.js';
import { Datapath, type DatapathOptions, type DatapathStatus } from '../datapath/datapath.js';
import { DATAPATH_FLAGS, DATAPATH_FLAGS_HELP, type Parsed, int, parse, str, table } from './args.js';

export function datapathOptions(p: Parsed): DatapathOptions {
  const o: DatapathOptions = {};
  const pinDir = str(p, 'pin-dir');
  const cgroup = str(p, 'cgroup');
  const object = str(p, 'object');
  if (pinDir !== undefined) o.pinDir = pinDir;
  if (cgroup !== undefined) o.cgroupPath = cgroup;
  if (object !== undefined) o.objectPath = object;
  return o;
}

const UP_HELP = `usage: mesh-agent up [flags]

Loads the kernel short-circuit, attaches it and pins maps and links, so it
keeps working after this command exits. If it is already up, adopts it.

${DATAPATH_FLAGS_HELP}
`;

export function up(argv: string[]): number {
  const p = parse(argv, DATAPATH_FLAGS, UP_HELP, false);
  if (!p) return 0;
  const dp = new Datapath(datapathOptions(p));
  const { adopted, otherBuild } = dp.start();
  const st = dp.status();
  dp.stop();
  process.stdout.write(`datapath ${adopted ? 'already up: adopted' : 'up'}: pinned in ${st.pinDir}, sockops on ${st.cgroupPath ?? '?'}\n`);
  if (otherBuild) process.stdout.write(OTHER_BUILD_WARNING);
  return 0;
}

/** Printed when the pinned programs come from another build of bpf/. */
export const OTHER_BUILD_WARNING = 'warning: the pinned programs were loaded from another build of the BPF object; '
  + 'they keep running as they are. To run this build: mesh-agent down, then mesh-agent up '
  + '(connections open at that moment keep their path until they close)\n';

const DOWN_HELP = `usage: mesh-agent down [--pin-dir DIR]

Detaches the programs and removes every map, link and pin. New connections
take the TCP stack; connections already short-circuited keep their kernel
path until they close (the kernel holds the sockhash and its programs while
such a socket lives, then frees them). Safe to run when already down.
`;

export function down(argv: string[]): number {
  const p = parse(argv, { 'pin-dir': DATAPATH_FLAGS['pin-dir'] }, DOWN_HELP, false);
  if (!p) return 0;
  const dp = new Datapath(datapathOptions(p));
  const was = dp.isUp();
  dp.down();
  process.stdout.write(was ? `datapath down: removed ${dp.pinDir}\n` : `datapath was not up (${dp.pinDir})\n`);
  return 0;
}

const ENROLL_HELP = `usage: mesh-agent enroll IPV4 [--identity N] [--pin-dir DIR]

Enrolls a local endpoint (a pod address): connections between two enrolled
endpoints are short-circuited in the kernel from their next connect on.
`;

export function enroll(argv: string[]): number {
  const p = parse(argv, { 'pin-dir': DATAPATH_FLAGS['pin-dir'], identity: { type: 'string' } }, ENROLL_HELP);
  if (!p) return 0;
  const ip = onePositional(p, 'IPV4');
  encodeIPv4(ip); // bad input is reported before anything is opened
  const identity = int(p, 'identity') ?? 0;
  const dp = openUp(p);
  try {
    dp.enroll(ip, identity);
  } finally {
    dp.stop();
  }
  process.stdout.write(`enrolled ${ip}\n`);
  return 0;
}

const UNENROLL_HELP = `usage: mesh-agent unenroll IPV4 [--pin-dir DIR]

Removes an endpoint. New connections take the normal stack; connections
already short-circuited keep their path until they close.
`;

export function unenroll(argv: string[]): number {
  const p = parse(argv, { 'pin-dir': DATAPATH_FLAGS['pin-dir'] }, UNENROLL_HELP);
  if (!p) return 0;
  const ip = onePositional(p, 'IPV4');
  encodeIPv4(ip);
  const dp = openUp(p);
  try {
    process.stdout.write(dp.unenroll(ip) ? `unenrolled ${ip}\n` : `${ip} was not enrolled\n`);
  } finally {
    dp.stop();
  }
  return 0;
}

const STATUS_HELP = `usage: mesh-agent status [--json] [--pin-dir DIR] [--admin-socket PATH]

Shows whether the datapath is up, what is attached where, the enrolled
endpoints, the sockets short-circuited now and the counters; and, when an
agent is running, its xDS server: the snapshot it serves, the node proxies
connected with the versions each has ACKed, and the last NACKs.

  --json               machine-readable (the datapath's fields, plus "agent"
                       and "xds", null when no agent answers)
  --admin-socket PATH  the running agent's admin socket (default ${DEFAULT_ADMIN_SOCKET})
`;

export async function status(argv: string[]): Promise<number> {
  const p = parse(argv, { 'pin-dir': DATAPATH_FLAGS['pin-dir'], json: { type: 'boolean' }, 'admin-socket': { type: 'string' } }, STATUS_HELP, false);
  if (!p) return 0;
  const dp = new Datapath(datapathOptions(p));
  let running: AgentStatus | undefined;
  try {
    running = (await adminGet(str(p, 'admin-socket') ?? DEFAULT_ADMIN_SOCKET, '/status', 5000)).body as AgentStatus;
  } catch (err) {
    if (!(err instanceof AgentNotRunningError)) throw err;
  }
  let st: DatapathStatus;
  if (running && running.datapath.pinDir === dp.pinDir) {
    st = running.datapath;
  } else {
    checkPrivileges();
    if (dp.isUp()) {
      dp.adopt();
      try {
        st = dp.status();
      } finally {
        dp.stop();
      }
    } else {
      st = dp.status();
    }
  }
  process.stdout.write(p.values.json
    ? JSON.stringify({ ...st, agent: running?.agent ?? null, xds: running?.xds ?? null }, null, 2) + '\n'
    : renderStatus(st) + renderAgent(running));
  return 0;
}

const short = (v: string | undefined) => (v ? v.slice(0, 8) : '-');

/** The agent and xDS part of the human status. */
export function renderAgent(a: AgentStatus | undefined): string {
  if (!a) return 'agent      not running\n';
  const { agent, xds } = a;
  const lines = [
    `agent      running (pid ${agent.pid}) since ${agent.startedAt}, node ${agent.nodeName}`,
    `admin      ${agent.adminSocket}${agent.adminAddress ? `, http://${agent.adminAddress} (/metrics)` : ''}`,
    `xds        ADS on ${agent.xdsAddress}, ${xds.proxies.length} stream${xds.proxies.length === 1 ? '' : 's'} connected`,
  ];
  for (const s of xds.snapshots) {
    const r = s.resources;
    lines.push(`  snapshot ${s.node ?? '(default)'}: ${r.cluster} clusters, ${r.endpoint} endpoint sets, ${r.listener} listeners, ${r.route} route configs; set ${s.setAt}`);
  }
  if (xds.lastSnapshotFailure) {
    lines.push(`  last refused configuration (${xds.lastSnapshotFailure.at}): ${xds.lastSnapshotFailure.error}`);
  }
  if (xds.proxies.length > 0) {
    const cell = (t: TypeState | undefined) => {
      if (!t) return '-';
      if (t.lastNack && t.lastNack.version === t.sentVersion) return `${short(t.ackedVersion)} (NACKed ${short(t.sentVersion)})`;
      return t.ackedVersion === t.sentVersion ? short(t.ackedVersion) : `${short(t.ackedVersion)} (sent ${short(t.sentVersion)})`;
    };
    lines.push(indent(table(['NODE', 'STREAM', 'PROTOCOL', 'CLUSTERS', 'ENDPOINTS', 'LISTENERS', 'ROUTES'],
      xds.proxies.map((p) => [p.nodeId, p.stream, p.protocol, cell(p.types.cluster), cell(p.types.endpoint), cell(p.types.listener), cell(p.types.route)]))));
  }
  for (const n of xds.nacks.slice(-5)) {
    lines.push(`  NACK ${n.at} ${n.nodeId} ${n.typeUrl.split('.').pop()} ${short(n.version)}: ${n.error}`);
  }
  const envoy = a.telemetry?.envoySpans as { socket: string; exports: number; requests: number; attempts: number; waiting: number; orphaned: number; refused: number } | undefined;
  if (envoy) {
    lines.push(`envoy      spans on ${envoy.socket}: ${envoy.exports} exports, ${envoy.requests} requests read (${envoy.attempts} attempts), ${envoy.waiting} attempts waiting, ${envoy.orphaned} orphaned, ${envoy.refused} refused`);
  }
  const log = a.telemetry?.envoyAccessLog as { socket: string; streams: number; entries: number; refused: number; invalid: number; lastRefusal?: string } | undefined;
  if (log) {
    lines.push(`envoy      access log on ${log.socket}: ${log.streams} streams, ${log.entries} requests, ${log.refused} refused, ${log.invalid} messages unreadable${log.lastRefusal ? ` (last: ${log.lastRefusal})` : ''}`);
  }
  if (a.cluster) lines.push(renderCluster(a.cluster));
  return lines.join('\n') + '\n';
}

/** Pods with enrollment and its reason, services with VIPs and backends. */
export function renderCluster(c: ClusterStatus): string {
  const lines: string[] = [];
  if (c.source.kind === 'manifests') {
    const last = c.source.last;
    lines.push(`manifests  ${c.source.dir}: ${last ? (last.ok ? `${last.objects} objects from ${last.files} files, read ${last.at}` : `NOT APPLIED (${last.errors.length} problems), the last good set (${last.objects} objects) runs`) : 'not read yet'}`);
    for (const e of last?.ok === false ? last.errors.slice(0, 10) : []) lines.push(`  ${e}`);
  } else {
    lines.push(`kubernetes ${c.source.server}`);
    lines.push(indent(table(['RESOURCE', 'CONNECTED', 'LISTS', 'RECONNECTS', 'RESOURCE VERSION', 'LAST ERROR'],
      c.source.informers.map((i) => [i.resource, i.connected ? 'yes' : 'no', i.lists, i.reconnects, i.resourceVersion || '-', i.lastError ?? '-']))));
  }
  const r = c.reconcile.last;
  if (r) lines.push(`reconcile  ${c.reconcile.passes} passes, ${c.reconcile.failures} failed; last ${r.at} (compile ${r.compileMs.toFixed(1)} ms, maps ${r.reconcileMs.toFixed(1)} ms)${r.error ? `: ${r.error}` : ''}`);
  if (c.runtimeError) lines.push(`runtime    error: ${c.runtimeError}`);
  lines.push(`pods       ${c.pods.length} (${c.pods.filter((p) => p.enrolled).length} enrolled)`);
  if (c.pods.length > 0) {
    lines.push(indent(table(['POD', 'IP', 'PHASE', 'IDENTITY', 'ENROLLED', 'WHY'],
      c.pods.map((p) => [p.key, p.ip ?? '-', `${p.phase}${p.restarts ? ` (${p.restarts} restarts)` : ''}`, p.identity, p.enrolled ? 'yes' : 'no', p.reason]))));
  }
  lines.push(`services   ${c.services.length}`);
  if (c.services.length > 0) {
    lines.push(indent(table(['SERVICE', 'VIP', 'PORTS (READY BACKENDS)', 'PROBLEMS'],
      c.services.map((s) => [s.key, s.vip ?? '-', s.ports.map((p) => `${p.port}${p.name ? `/${p.name}` : ''} (${p.backends})${p.l7 ? ` L7 via node proxy :${p.l7}` : ''}`).join(', ') || '-', s.problems.join('; ') || '-']))));
  }
  const l7 = c.l7;
  if (l7.proxy) {
    const p = l7.proxy;
    lines.push(`node proxy ${p.kind} on ${l7.proxyAddress}: ${p.running ? 'running' : 'NOT RUNNING'}${p.restarts ? `, ${p.restarts} restarts` : ''}${p.lastExit ? ` (last exit: ${p.lastExit})` : ''}; log ${p.log}`);
  }
  if (l7.routes.length > 0) {
    lines.push(indent(table(['HTTPROUTE', 'STATE', 'WHY'], l7.routes.map((r) => [r.key, r.state, r.reasons.join('; ') || '-']))));
  }
  const pol = c.policies;
  if (pol && pol.networkPolicies.length + pol.authorizationPolicies.length > 0) {
    const np = `${pol.networkPolicies.length} NetworkPolicy${pol.networkPolicies.length > 0 ? ' (NOT ENFORCED by this build)' : ''}`;
    const ap = `${pol.authorizationPolicies.length} AuthorizationPolicy${pol.authorizationPolicies.length > 0 ? (pol.enforced.authorizationPolicies ? ' (enforced by the node proxy)' : ' (NOT ENFORCED: no node proxy runs)') : ''}`;
    lines.push(`policies   ${np}, ${ap}; mesh-agent policy check explains them`);
  }
  return lines.join('\n');
}

/** The human status table. */
export function renderStatus(st: DatapathStatus): string {
  if (!st.up) return `datapath   down (nothing pinned in ${st.pinDir})\n`;
  const lines = [
    `datapath   up, pinned in ${st.pinDir} since ${st.loadedAt ?? '?'}`,
    st.links?.sockops?.cgroupId === '0'
      ? `cgroup     ${st.cgroupPath ?? '?'} WAS REMOVED: sockops is detached, no new connection is short-circuited (mesh-agent down, then up)`
      : `cgroup     ${st.cgroupPath ?? '?'} (id ${st.links?.sockops?.cgroupId ?? '?'})`,
    `object     ${st.objectPath ?? '?'} (sha256 ${st.objectSha256?.slice(0, 12) ?? '?'})`,
    `programs   sockops link #${st.links?.sockops?.id} (prog ${st.links?.sockops?.progId}), sk_msg ${st.skMsgAttach === 'link' ? `link #${st.links?.skMsg?.id} (prog ${st.links?.skMsg?.progId})` : 'attached to sm_sock_hash'}`,
    `sockets    ${st.sockets} short-circuited now`,
    `endpoints  ${st.endpoints?.length ?? 0}`,
  ];
  if (st.endpoints?.length) {
    lines.push(indent(table(['IP', 'IDENTITY', 'ENROLLED'], st.endpoints.map((e) => [e.ip, e.identity, e.enrolled ? 'yes' : 'no']))));
  }
  lines.push('counters');
  lines.push(indent(table(['COUNTER', 'VALUE'], Object.entries(st.counters ?? {}).map(([k, v]) => [k, v]))));
  return lines.join('\n') + '\n';
}

function indent(s: string): string {
  return s.split('\n').map((l) => `  ${l}`).join('\n');
}

function onePositional(p: Parsed, what: string): string {
  if (p.positionals.length !== 1) throw new InvalidArgumentError(`expected one ${what}, got ${p.positionals.length}`, 'see --help');
  return p.positionals[0]!;
}

function openUp(p: Parsed): Datapath {
  const dp = new Datapath(datapathOptions(p));
  dp.adopt();
  return dp;
}
