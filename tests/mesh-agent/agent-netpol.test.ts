/*
 * Privileged end to end: NetworkPolicies from manifests enforced by the
 * kernel, through real sockets in real pods (tools/smprobe reports what the
 * kernel answered). Cases are named like Cilium's connectivity tests; each
 * asserts the outcome the evaluator predicts (policy check) and what the
 * kernel counted. One agent, policies rewritten between cases.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { Agent } from '../../mesh-agent/agent.js';
import { adminGet } from '../../mesh-agent/admin/admin-client.js';
import { helperBinary, repoRoot } from '../../mesh-agent/paths.js';
import { POD_NETWORK } from '../../mesh-agent/runtime/node-runtime.js';
import { runtimeName } from '../../mesh-agent/runtime/pod-supervisor.js';
import { cliAsync } from '../fixtures/cli.js';
import { TEST_PIN_DIR, agentEndpoints, cleanNode } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';
import { until } from '../fixtures/wait.js';

const run = promisify(execFile);
const delta = (a: Record<string, number>, b: Record<string, number>) => Object.fromEntries(Object.keys(b).filter((k) => b[k] !== a[k]).map((k) => [k, b[k]! - (a[k] ?? 0)]));
const PROBE = helperBinary('smprobe');
const PREFIX = 'smq';

const pod = (ns: string, name: string, labels: string, command: string[], ports = '') => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, labels: { ${labels} } }
spec: { containers: [{ name: c, command: ${JSON.stringify(command)}${ports ? `, ports: [${ports}]` : ''} }] }
`;
const SERVE = ['sh', '-c', `${PROBE} udp-serve 5353 & exec ${PROBE} serve 8080`];
const SLEEP = ['sleep', 'infinity'];
const PODS = `apiVersion: v1
kind: Namespace
metadata: { name: app, labels: { team: app }, annotations: { sockmesh.io/enabled: "true" } }
---
apiVersion: v1
kind: Namespace
metadata: { name: other, labels: { team: other } }
${pod('app', 'server', 'app: server', SERVE, '{ name: http, containerPort: 8080 }')}${pod('app', 'backend', 'app: backend', SERVE)}${pod('app', 'client', 'app: client', SLEEP)}${pod('app', 'client2', 'app: client2', SLEEP)}${pod('other', 'client', 'app: client', SLEEP)}`;

const netpol = (name: string, spec: string) => `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: ${name}, namespace: app }
spec: ${spec}
`;

if (privileged(t)) {
  t.test('NetworkPolicy in the kernel, case by case', async (t) => {
    const { rt, cgroupPath, clean } = await cleanNode(PREFIX);
    const dir = mkdtempSync(join(tmpdir(), 'sm-netpol-'));
    writeFileSync(join(dir, 'pods.yaml'), PODS);
    writeFileSync(join(dir, 'policies.yaml'), '# none\n');
    const agent = new Agent({
      manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: TEST_PIN_DIR, cgroupPath }, proxy: 'none', ...agentEndpoints(dir), nodeName: 'netpol-node',
    });
    await agent.start();
    t.teardown(async () => {
      await agent.stop({ removePods: true }).catch(() => undefined);
      await clean();
      rmSync(dir, { recursive: true, force: true });
    });
    await until('pods running', () => {
      const c = agent.status().cluster!;
      return c.pods.length === 5 && c.pods.every((p) => p.phase === 'Running' && p.ip) && c;
    });
    const ip = (key: string) => agent.status().cluster!.pods.find((p) => p.key === key)!.ip!;
    const counters = () => agent.status().datapath.counters!;
    // a probe from a pod, or from a host process (the node's namespace, outside the pods' cgroups)
    const probe = async (from: string, argv: string[]): Promise<string> => {
      if (from === 'host') return (await run('ip', ['netns', 'exec', rt.nodeNetns, PROBE, ...argv], { timeout: 20_000 })).stdout.trim();
      return (await rt.execOutput(runtimeName(from), [PROBE, ...argv], { timeoutMs: 20_000 })).toString().trim();
    };
    const connect = async (from: string, to: string, port = 8080): Promise<string> =>
      (await probe(from, ['connect', ip(to), String(port), '1000'])).split(' ')[0]!;
    const apply = async (yaml: string, names: string[]) => {
      writeFileSync(join(dir, 'policies.yaml'), yaml || '# none\n');
      await until(`policies ${names.join(', ') || '(none)'} enforced`, () => {
        const p = agent.status().cluster!.policies;
        return JSON.stringify(p.kernel?.policies) === JSON.stringify(names.map((n) => `app/${n}`).sort()) && p.enforced.networkPolicies && p;
      });
    };
    type Flow = { type: string; time: string; verdict: string; policy?: string; reason?: string; kernelEvent?: string; securityType?: string; suppressed?: number; source: { address: string; pod?: string }; destination: { address: string; pod?: string } };
    const flows = async (type = 'l4'): Promise<Flow[]> =>
      (await adminGet(agent.adminSocket, `/flows?type=${type}&last=1000`)).text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Flow);
    const untilAsync = async <T>(what: string, f: () => Promise<T | false | undefined>, ms = 10_000): Promise<T> => {
      for (const deadline = Date.now() + ms; ;) {
        const v = await f();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const check = async (from: string, to: string, port = 8080) => {
      const r = await cliAsync(['policy', 'check', '--admin-socket', agent.adminSocket, '--from', from, '--to', `${to}:${port}`]);
      return { allowed: r.code === 0, text: r.stdout };
    };
    // each case: the kernel's answer and the evaluator's agree, and the reason names the deciding policy
    const expectCase = async (t: Test, from: string, to: string, want: 'ok' | 'EPERM' | 'ETIMEDOUT', reason?: RegExp, port = 8080) => {
      const got = await connect(from, to, port);
      t.equal(got, want, `${from} -> ${to}:${port}: ${want}`);
      if (from !== 'host') {
        const c = await check(from, to, port);
        t.equal(c.allowed, want === 'ok', `policy check agrees (${c.allowed ? 'allowed' : 'denied'})`);
        if (reason) t.match(c.text, reason, 'and names the reason');
      }
    };

    t.test('no-policies', async (t) => {
      await expectCase(t, 'app/client', 'app/server', 'ok', /no policy selects/);
      await expectCase(t, 'other/client', 'app/server', 'ok');
      await expectCase(t, 'host', 'app/server', 'ok');
      t.same(agent.status().cluster!.policies.kernel?.error, null, 'status: the kernel tables were written');
    });

    t.test('all-ingress-deny', async (t) => {
      await apply(netpol('server-deny-all', '{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress] }'), ['server-deny-all']);
      const before = counters();
      await expectCase(t, 'app/client', 'app/server', 'EPERM', /app\/server-deny-all/);
      await expectCase(t, 'other/client', 'app/server', 'EPERM');
      t.ok(Number((await probe('app/client', ['connect', ip('app/server'), '8080', '1000'])).split(' ')[1]) < 100, 'a same-node client is refused at connect, not after SYN retries');
      await expectCase(t, 'host', 'app/server', 'ETIMEDOUT');
      await expectCase(t, 'app/client', 'app/backend', 'ok', /no policy selects/);
      const after = counters();
      t.equal(after.pol_ingress_denied! - before.pol_ingress_denied!, 3, 'three connects refused by the destination\'s ingress');
      t.ok(after.pol_syn_denied! - before.pol_syn_denied! >= 1, 'the host\'s SYNs dropped at the listener');
      // the kernel's events: observe, metrics, the evaluator's words
      const denied = await untilAsync('the denials reported', async () => {
        const f = (await flows()).filter((x) => x.verdict === 'denied' && x.policy === 'app/server-deny-all');
        return f.some((x) => x.kernelEvent === 'dropped') && f.some((x) => x.kernelEvent === 'refused' && x.source.pod === 'client')
          && f.some((x) => x.kernelEvent === 'refused' && x.source.address.startsWith(ip('other/client'))) && f;
      });
      t.ok(denied.some((f) => f.kernelEvent === 'refused' && f.source.pod === 'client' && f.destination.pod === 'server'
        && /^refused at connect \(EPERM\) by ingress: .*app\/server-deny-all/.test(f.reason!)), 'observe: the pod refused at connect, with the reason and policy');
      t.ok(denied.some((f) => f.kernelEvent === 'dropped' && f.source.pod === undefined && f.source.address.startsWith(`${POD_NETWORK.gateway}:`)), 'observe: the host\'s SYN dropped, the source an address');
      const obs = await cliAsync(['observe', '--admin-socket', agent.adminSocket, '--type', 'l4', '--pod', 'app/client', '--last', '50']);
      t.match(obs.stdout, /app\/client -> app\/server\s+DENIED by app\/server-deny-all\s+L4 kernel\s+refused at connect \(EPERM\) by ingress/, 'observe renders it');
      const metrics = (await adminGet(agent.adminSocket, '/metrics')).text;
      t.match(metrics, /sockmesh_policy_denials_total\{source_workload="app\/client",destination_service="app\/server",layer="kernel-l4",policy="app\/server-deny-all"\} [1-9]/, 'metrics: denials by workload pair, layer and policy');
    });

    t.test('scan-reported-once', async (t) => {
      // still all-ingress-deny on the server: one pod tries 12 ports
      for (let port = 9100; port < 9112; port++) t.equal(await connect('app/client2', 'app/server', port), 'EPERM', `port ${port} refused`);
      const scans = await untilAsync('a scan reported', async () => {
        const f = (await flows('security')).filter((x) => x.securityType === 'scan');
        return f.length > 0 && f;
      });
      t.equal(scans.length, 1, 'reported once');
      t.match(scans[0]!.reason, /^SCAN app\/client2 probed 10 destinations \(10 ports on 1 host; 1 workload: app\/server\)/, `in words: ${scans[0]!.reason}`);
      t.match((await adminGet(agent.adminSocket, '/metrics')).text, /sockmesh_security_events_total\{type="scan"\} 1/, 'and counted');
    });

    t.test('repeated-denials-folded-and-reported', async (t) => {
      // still all-ingress-deny: one C client retries the same refused connect for 2.5 s
      const before = counters().pol_ingress_denied!;
      const startMs = Date.now();
      const r = JSON.parse((await rt.execOutput(runtimeName('app/client2'), [helperBinary('rrbench'), 'conn', ip('app/server'), '8080', '2.5'], { timeoutMs: 30_000 })).toString()) as { failed: number };
      const refused = counters().pol_ingress_denied! - before;
      t.ok(r.failed > 100 && refused === r.failed, `${r.failed} connects refused, each counted by the kernel (${refused})`);
      const mine = await untilAsync('the folded records', async () => {
        const f = (await flows()).filter((x) => x.kernelEvent === 'refused' && x.source.address.startsWith(ip('app/client2')) && x.destination.address.endsWith(':8080'));
        return f.length >= 2 && f;
      });
      t.ok(mine.length <= 5, `at most one record per second for the pair: ${mine.length} records`);
      // the last second's folded denials come in a trailing record once that second is over, with no further denial
      const pairFlows = async () => (await flows()).filter((x) => x.kernelEvent === 'refused' && x.source.address.startsWith(ip('app/client2')) && x.destination.address.endsWith(':8080')
        && Date.parse(x.time) >= startMs - 20);
      const represented = (fs: Flow[]) => fs.reduce((n, f) => n + 1 + (f.suppressed ?? 0), 0);
      const all = await untilAsync('every denial represented', async () => {
        const f = await pairFlows();
        return represented(f) >= refused && f;
      }, 5000);
      t.equal(represented(all), refused, `the records stand for exactly the ${refused} denials the kernel counted (${all.length} records)`);
      const rep = await untilAsync('repeated denials reported', async () => {
        const f = (await flows('security')).filter((x) => x.securityType === 'repeated-denials');
        return f.length > 0 && f;
      });
      t.equal(rep.length, 1, 'reported once');
      t.match(rep[0]!.reason, /^REPEATED DENIALS app\/client2 → app\/server:8080\/TCP \(ingress\) denied \d+ times/, rep[0]!.reason ?? '');
    });

    t.test('all-egress-deny', async (t) => {
      await apply(netpol('client-deny-egress', '{ podSelector: { matchLabels: { app: client } }, policyTypes: [Egress] }'), ['client-deny-egress']);
      const before = counters();
      await expectCase(t, 'app/client', 'app/server', 'EPERM', /app\/client-deny-egress/);
      await expectCase(t, 'app/client', 'app/backend', 'EPERM');
      await expectCase(t, 'app/client2', 'app/server', 'ok');
      await expectCase(t, 'other/client', 'app/server', 'ok', /no policy selects/);
      t.equal(counters().pol_egress_denied! - before.pol_egress_denied!, 2, 'two connects refused by the client\'s egress');
    });

    t.test('client-egress-to-labelled-pods', async (t) => {
      await apply(netpol('client-to-backend', `{ podSelector: { matchLabels: { app: client } }, policyTypes: [Egress],
        egress: [{ to: [{ podSelector: { matchLabels: { app: backend } } }], ports: [{ port: 8080 }] }] }`), ['client-to-backend']);
      await expectCase(t, 'app/client', 'app/backend', 'ok', /allowed by app\/client-to-backend/);
      await expectCase(t, 'app/client', 'app/server', 'EPERM');
    });

    t.test('ingress-from-namespace-selector', async (t) => {
      await apply(netpol('server-from-other', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: other } } }] }] }`), ['server-from-other']);
      await expectCase(t, 'other/client', 'app/server', 'ok', /allowed by app\/server-from-other/);
      await expectCase(t, 'app/client', 'app/server', 'EPERM');
    });

    t.test('ports-and-named-ports', async (t) => {
      await apply(netpol('server-http-only', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ port: http }] }] }`), ['server-http-only']);
      await expectCase(t, 'app/client', 'app/server', 'ok', /allowed by app\/server-http-only/);
      // nothing listens on 9090: allowed would be ECONNREFUSED; denied is EPERM
      await expectCase(t, 'app/client', 'app/server', 'EPERM', undefined, 9090);
      await expectCase(t, 'app/client2', 'app/server', 'EPERM');
    });

    t.test('ipblock-with-except', async (t) => {
      await apply(netpol('server-from-block', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ ipBlock: { cidr: 198.18.0.0/16, except: [${POD_NETWORK.gateway}/32] } }] }] }`), ['server-from-block']);
      await expectCase(t, 'host', 'app/server', 'ETIMEDOUT');
      await expectCase(t, 'app/client', 'app/server', 'ok', /allowed by app\/server-from-block/);
      await apply(netpol('server-from-host', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ ipBlock: { cidr: ${POD_NETWORK.gateway}/32 } }] }] }`), ['server-from-host']);
      await expectCase(t, 'host', 'app/server', 'ok');
      await expectCase(t, 'app/client', 'app/server', 'EPERM');
    });

    t.test('spoofed-source-denied', async (t) => {
      const serverNs = `${PREFIX}-pod-${runtimeName('app/server')}`;
      const synRecv = async () => (await run('ip', ['netns', 'exec', serverNs, 'ss', '-tnH', 'state', 'syn-recv', 'sport', '=', ':8080'])).stdout;
      const seenBy = async (port: string | undefined) => {
        for (const deadline = Date.now() + 3000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) if ((await synRecv()).includes(`:${port}`)) return true;
        return false;
      };
      // control: with no policy a forged SYN from a host process reaches the listener (an unused address: nobody resets the SYN_RECV)
      await apply('', []);
      const control = (await probe('host', ['spoof-syn', '198.18.255.254', ip('app/server'), '8080'])).split(' ')[1];
      t.ok(await seenBy(control), 'control: with no policy, a raw SYN reaches the listener (SYN_RECV)');
      await apply(netpol('server-from-client', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }] }] }`), ['server-from-client']);
      await expectCase(t, 'app/client', 'app/server', 'ok');
      await expectCase(t, 'app/client2', 'app/server', 'EPERM');
      // a pod forges the allowed pod's address from a raw socket: dropped as it leaves, reported with both pods
      let before = counters();
      t.equal(await probe('app/client2', ['spoof-syn', ip('app/client'), ip('app/server'), '8080']), 'EPERM', 'the forging pod\'s sendto fails');
      t.equal(delta(before, counters()).pol_spoof_dropped, 1, 'dropped at the sending pod (its raw socket claimed another address)');
      t.notOk((await synRecv()).includes(`${ip('app/client')}:`), 'the listener never saw it (no SYN_RECV from the claimed address)');
      const spoofs = await untilAsync('the spoofing reported', async () => {
        const f = (await flows('security')).filter((x) => x.securityType === 'spoofing');
        return f.length > 0 && f;
      });
      t.match(spoofs[0]!.reason, /^SPOOFING app\/client2 sent as app\/client's address/, `a security event names both pods: ${spoofs[0]!.reason}`);
      t.ok((await flows()).some((f) => f.policy === 'anti-spoofing' && f.source.pod === 'client2'), 'and a denied flow');
      // a whole frame through AF_PACKET (no socket layer, no cgroup hook): the guard on the pod's veth
      const serverMac = (JSON.parse((await run('ip', ['-n', serverNs, '-j', 'link', 'show', 'eth0'])).stdout) as { address: string }[])[0]!.address;
      t.ok((agent.status().cluster!.policies.kernel?.guards ?? 0) >= 5, `status: a guard on every pod's veth (${agent.status().cluster!.policies.kernel?.guards})`);
      before = counters();
      t.match(await probe('app/client2', ['spoof-frame', 'eth0', serverMac, ip('app/client2'), ip('app/server'), '8080']), /^sent /);
      await until('the honest frame judged at the listener', () => counters().pol_syn_denied! > before.pol_syn_denied! && true);
      t.equal(delta(before, counters()).pol_guard_dropped, undefined, 'control: a frame with the pod\'s own address passes the guard (and the listener judges it: client2 is not allowed)');
      before = counters();
      t.match(await probe('app/client2', ['spoof-frame', 'eth0', serverMac, ip('app/client'), ip('app/server'), '8080']), /^sent /, 'AF_PACKET sends the forged frame');
      await until('the forged frame dropped', () => counters().pol_guard_dropped! > before.pol_guard_dropped! && true);
      t.equal(delta(before, counters()).pol_guard_dropped, 1, 'the guard on client2\'s veth drops a frame claiming client\'s address');
      t.equal(delta(before, counters()).pol_syn_denied, undefined, 'it never reached the listener');
      // a process outside every pod (no cgroup of the mesh) forges it: no ticket, so judged as an address, and denied
      before = counters();
      const fromHost = (await probe('host', ['spoof-syn', ip('app/client'), ip('app/server'), '8080'])).split(' ')[1];
      await until('the host\'s forged SYN judged', () => counters().pol_syn_denied! > before.pol_syn_denied! && true);
      const after = delta(before, counters());
      t.equal(after.pol_no_ticket, 1, 'counted as a SYN claiming a local pod without a ticket');
      t.equal(after.pol_syn_denied, 1, 'and dropped at the listener');
      t.notOk(await seenBy(fromHost), 'the listener never saw it');
    });

    t.test('udp-same-node-replies-and-egress', async (t) => {
      const udp = async (from: string) => (await probe(from, ['udp-send', ip('app/server'), '5353', '1000'])).split(' ')[0];
      await apply('', []);
      t.equal(await udp('app/client2'), 'ok', 'control: no policy, the datagram is answered');
      await apply(netpol('server-udp-from-client', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ protocol: UDP, port: 5353 }] }] }`)
        + netpol('client-no-ingress', '{ podSelector: { matchLabels: { app: client } }, policyTypes: [Ingress] }'), ['client-no-ingress', 'server-udp-from-client']);
      const before = counters();
      t.equal(await udp('app/client'), 'ok', 'a pod on the same node that a podSelector allows: its datagram passes (the kernel knows the sender by its socket), and the answer comes back to the client, whose own ingress is closed');
      const after = delta(before, counters());
      t.equal(after.pol_ticket_hit, 1, 'the server judged the datagram by the ticket its sender\'s socket left');
      t.equal(after.pol_udp_denied, undefined, 'nothing dropped, the answer included');
      t.equal(await udp('app/client2'), 'EPERM', 'a pod the policy does not allow: sendto() fails at once');
      const beforeSpoof = counters();
      t.equal(await probe('app/client2', ['spoof-udp', ip('app/client'), ip('app/server'), '5353']), 'EPERM');
      t.equal(delta(beforeSpoof, counters()).pol_spoof_dropped, 1, 'a datagram from that pod\'s raw socket claiming the allowed pod\'s address is dropped as it leaves');
      const c = await check('app/client2', 'app/server', 5353);
      t.notOk(c.allowed, 'as the evaluator says');
      await apply(netpol('client-tcp-only', `{ podSelector: { matchLabels: { app: client } }, policyTypes: [Egress],
        egress: [{ ports: [{ protocol: TCP, port: 8080 }] }] }`), ['client-tcp-only']);
      t.equal(await udp('app/client'), 'EPERM', 'egress: an unconnected UDP send the client\'s policy does not allow fails with EPERM');
      const mapped = async (from: string) => (await probe(from, ['udp-send', `::ffff:${ip('app/server')}`, '5353', '1000'])).split(' ')[0];
      t.equal(await mapped('app/client'), 'EPERM', 'and so does the same send from a dual-stack AF_INET6 socket to the v4-mapped address (sendmsg6)');
      await apply(netpol('server-udp-from-client', `{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ protocol: UDP, port: 5353 }] }] }`), ['server-udp-from-client']);
      t.equal(await mapped('app/client'), 'ok', 'control: allowed, the dual-stack send is answered');
      t.equal(await mapped('app/client2'), 'EPERM', 'the server\'s ingress judges a dual-stack send at sendto too');
      await apply(netpol('client-tcp-only', `{ podSelector: { matchLabels: { app: client } }, policyTypes: [Egress],
        egress: [{ ports: [{ protocol: TCP, port: 8080 }] }] }`), ['client-tcp-only']);
      t.equal(await connect('app/client', 'app/server'), 'ok', 'while TCP 8080 passes');
    });

    t.test('v4-mapped-and-ipv6-bypass-closed', async (t) => {
      await apply(netpol('client-deny-egress', '{ podSelector: { matchLabels: { app: client } }, policyTypes: [Egress] }'), ['client-deny-egress']);
      t.equal((await probe('app/client', ['connect', `::ffff:${ip('app/server')}`, '8080', '1000'])).split(' ')[0], 'EPERM',
        'an AF_INET6 socket dialling the v4-mapped address is judged as IPv4: EPERM');
      t.equal((await probe('app/client2', ['connect', `::ffff:${ip('app/server')}`, '8080', '1000'])).split(' ')[0], 'ok', 'control: an unselected pod connects that way');
      const serverNs = `${PREFIX}-pod-${runtimeName('app/server')}`;
      const ll = JSON.parse((await run('ip', ['-n', serverNs, '-j', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'])).stdout) as { addr_info: { local: string }[] }[];
      const serverLl = ll[0]?.addr_info[0]?.local;
      t.ok(serverLl, `the server has a link-local IPv6 address (${serverLl})`);
      await apply('', []);
      t.equal((await probe('app/client2', ['connect', `${serverLl}%eth0`, '8080', '1000'])).split(' ')[0], 'ok', 'control: with no policy the server is reachable over link-local IPv6');
      await apply(netpol('server-deny-all', '{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress] }'), ['server-deny-all']);
      const before = counters().pol_ipv6_denied!;
      t.equal((await probe('app/client2', ['connect', `${serverLl}%eth0`, '8080', '1000'])).split(' ')[0], 'ETIMEDOUT', 'an ingress-isolated pod is not reachable around its IPv4 policy');
      t.ok(counters().pol_ipv6_denied! > before, 'counted as IPv6 dropped');
    });

    t.test('policy-update-cuts-established-connections', async (t) => {
      await apply('', []);
      // a probe left running (from a pod, or the host), its output lines as they come
      const hold = (from: string, argv = ['hold', ip('app/server'), '8080', '10']) => {
        const child = from === 'host' ? execFile('ip', ['netns', 'exec', rt.nodeNetns, PROBE, ...argv]) : rt.exec(runtimeName(from), [PROBE, ...argv]);
        const lines: string[] = [];
        let buf = '';
        child.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) lines.push(buf.slice(0, i));
        });
        return { child, lines };
      };
      const pod = hold('app/client');
      const host = hold('host');
      await until('both connections established', () => pod.lines.includes('connected') && host.lines.includes('connected'));
      t.ok(agent.status().datapath.sockets! >= 2, `the pod-to-pod connection is short-circuited (${agent.status().datapath.sockets} sockets in the sockhash)`);
      const t0 = Date.now();
      await apply(netpol('server-deny-all', '{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress] }'), ['server-deny-all']);
      const applied = Date.now();
      await until('both connections ended', () => pod.lines.length >= 2 && host.lines.length >= 2);
      const ended = Date.now();
      const [podEnd] = pod.lines[1]!.split(' ');
      const [hostEnd] = host.lines[1]!.split(' ');
      t.match(podEnd, /^(ECONNABORTED|ECONNRESET)$/, `the pod's blocked read fails (${pod.lines[1]}), no hang`);
      t.match(hostEnd, /^(ECONNABORTED|ECONNRESET)$/, `the host's blocked read fails (${host.lines[1]})`);
      t.ok(ended - t0 < 2500, `both cut ${ended - t0} ms after the policy file was written (in force after ${applied - t0} ms)`);
      t.ok(agent.status().cluster!.policies.kernel!.lastCut!.cut >= 2, 'the cut pass destroyed the sockets');
      // a connected UDP socket whose destination the client's egress no longer allows
      await apply('', []);
      const { lines: udpLines } = hold('app/client', ['udp-hold', ip('app/server'), '5353', '10']);
      await until('the UDP conversation going', () => udpLines.includes('connected'));
      const u0 = Date.now();
      await apply(netpol('client-deny-egress', '{ podSelector: { matchLabels: { app: client } }, policyTypes: [Egress] }'), ['client-deny-egress']);
      await until('the UDP socket ended', () => udpLines.length >= 2);
      // aborted, the socket lost its destination: a call under way fails with ECONNABORTED, the next send with EDESTADDRREQ
      t.match(udpLines[1], /^(ECONNABORTED|EDESTADDRREQ) /, `the connected UDP socket is destroyed: its next call fails (${udpLines[1]}), ${Date.now() - u0} ms after the policy file was written`);
      await apply(netpol('server-deny-all', '{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress] }'), ['server-deny-all']);
      const cuts = await untilAsync('the cuts reported', async () => {
        const f = (await flows()).filter((x) => x.kernelEvent === 'cut' && x.destination.address.endsWith(':8080'));
        return f.length >= 2 && f;
      });
      t.ok(cuts.every((f) => f.policy === 'app/server-deny-all' && /^cut \(the policy no longer allows it\) by ingress/.test(f.reason!)), 'observe: each cut connection, with the policy that cut it');
      t.equal(agent.status().datapath.sockets, 0, 'and they left the sockhash');
    });

    t.test('invalid-policy-keeps-last-good-set', async (t) => {
      writeFileSync(join(dir, 'policies.yaml'), netpol('server-deny-all', '{ podSelector: { matchLabels: { app: server } }, policyTypes: [Ingress] }')
        + netpol('broken', '{ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/8, except: [192.168.0.0/16] } }] }] }'));
      await until('the manifests refused', () => {
        const last = (agent.status().cluster!.source as { last?: { ok: boolean; errors: string[] } }).last;
        return last && !last.ok && last;
      });
      const errors = (agent.status().cluster!.source as { last: { errors: string[] } }).last.errors.join('\n');
      t.match(errors, /policies\.yaml/, `the problem names the file: ${errors}`);
      t.match(errors, /except/, 'and the field');
      await expectCase(t, 'app/client', 'app/server', 'EPERM');
      t.same(agent.status().cluster!.policies.networkPolicies, ['app/server-deny-all'], 'the last good set is still enforced');
    });
  });
}

const APP = join(repoRoot(), 'tests', 'fixtures', 'http-app.mjs');
const CLIENT = join(repoRoot(), 'tests', 'fixtures', 'http-client.mjs');
const L7_PODS = `apiVersion: v1
kind: Namespace
metadata: { name: shop, annotations: { sockmesh.io/enabled: "true" } }
${pod('shop', 'web-1', 'app: web', [process.execPath, APP, 'web-1', '8080'], '{ name: http, containerPort: 8080 }')}---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop, annotations: { sockmesh.io/l7: "true" } }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: http }] }
${pod('shop', 'client', 'app: client', SLEEP)}${pod('shop', 'intruder', 'app: intruder', SLEEP)}`;
const L7_POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: web-from-client, namespace: shop }
spec: { podSelector: { matchLabels: { app: web } }, policyTypes: [Ingress], ingress: [{ from: [{ podSelector: { matchLabels: { app: client } } }], ports: [{ port: 8080 }] }] }
`;

if (privileged(t)) {
  t.test('NetworkPolicy and an L7 service: the client is judged against every backend, the backend accepts the node proxy', async (t) => {
    const { rt, cgroupPath, clean } = await cleanNode('smv');
    const dir = mkdtempSync(join(tmpdir(), 'sm-netpol-l7-'));
    writeFileSync(join(dir, 'pods.yaml'), L7_PODS);
    writeFileSync(join(dir, 'policies.yaml'), L7_POLICY);
    const agent = new Agent({
      manifests: dir, runtimePrefix: 'smv', datapath: { pinDir: TEST_PIN_DIR, cgroupPath }, proxy: 'mesh-proxy', ...agentEndpoints(dir), nodeName: 'netpol-l7-node',
    });
    await agent.start();
    t.teardown(async () => {
      await agent.stop({ removePods: true }).catch(() => undefined);
      await clean();
      rmSync(dir, { recursive: true, force: true });
    });
    await until('pods running, the proxy configured and the policy in the kernel', () => {
      const c = agent.status().cluster!;
      return c.pods.length === 3 && c.pods.every((p) => p.phase === 'Running') && c.l7.proxy?.running
        && agent.status().xds.proxies.some((p) => p.types.listener?.ackedVersion) && c.policies.kernel?.policies.length === 1 && c;
    });
    const call = async (from: string) => {
      const out = await rt.execOutput(runtimeName(from), [process.execPath, CLIENT, 'http://web/', '2'], { timeoutMs: 60_000 });
      return (JSON.parse(out.toString()) as { counts: Record<string, number> }).counts;
    };
    t.same(await call('shop/client'), { '200 web-1': 2 }, 'the allowed client reaches the backend through the node proxy (the backend accepts the proxy)');
    t.same(await call('shop/intruder'), { '0 EPERM': 2 }, 'the other pod is refused at connect: the policy denies it at every backend');
    const webIp = agent.status().cluster!.pods.find((p) => p.key === 'shop/web-1')!.ip!;
    const direct = async (from: string) => (await rt.execOutput(runtimeName(from), [PROBE, 'connect', webIp, '8080', '1000'])).toString().split(' ')[0];
    t.equal(await direct('shop/intruder'), 'EPERM', 'and cannot go around the proxy to the backend');
    t.equal(await direct('shop/client'), 'ok', 'the allowed client reaches the backend directly too');
  });
}
