/* Privileged: the agent composed (datapath, xDS, admin API), seen through the CLI and /metrics. */
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { Agent, type AgentStatus } from '../../mesh-agent/agent.js';
import { meshResources } from '../../xds/mesh-resources.js';
import { TYPE_URL } from '../../xds/snapshot.js';
import { AdsTestClient } from '../fixtures/ads-client.js';
import { cliAsync as cli } from '../fixtures/cli.js';
import { TEST_PIN_DIR, testCgroupRoot, testMesh } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';

const parseMetrics = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => {
  name: string; metrics: { value: string; labels?: Record<string, string> }[];
}[];

function httpGet(address: string, path: string): Promise<string> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    request({ host, port: Number(port), path, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve(body));
    }).on('error', reject).end();
  });
}

const web = (ip: string) => ({ namespace: 'shop', name: 'web', port: 80, listenerPort: 15101, endpoints: [{ ip, port: 8080 }] });

if (privileged(t)) {
  t.test('status, config dump and metrics show the xDS state and connected proxies', async (t) => {
    await testMesh(t);
    const dir = mkdtempSync(join(tmpdir(), 'sm-agent-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const adminSocket = join(dir, 'agent.sock');
    const agent = new Agent({
      datapath: { pinDir: TEST_PIN_DIR, cgroupPath: testCgroupRoot() },
      enroll: ['198.18.0.2'], xdsAddress: '127.0.0.1:0', xdsSocket: join(dir, 'xds.sock'), adminSocket, adminAddress: '127.0.0.1:0', nodeName: 'node-a',
    });
    const { adopted } = await agent.start();
    t.notOk(adopted, 'the agent loaded the datapath');
    let stopped = false;
    t.teardown(async () => { if (!stopped) await agent.stop(); });
    const snap = agent.publish(meshResources([web('198.18.0.3')]));
    const xdsPort = Number(agent.status().agent.xdsAddress.split(':')[1]);
    t.ok(xdsPort > 0, `xDS listens on ${agent.status().agent.xdsAddress}`);

    const proxy = new AdsTestClient(xdsPort, 'node-a~proxy');
    t.teardown(() => proxy.close());
    proxy.request(TYPE_URL.cluster);
    const r1 = await proxy.next(1);
    proxy.request(TYPE_URL.cluster, { version: r1.version_info, nonce: r1.nonce });
    proxy.request(TYPE_URL.route, { names: ['shop/web:80'] });
    const r2 = await proxy.next(2);
    proxy.request(TYPE_URL.route, { names: ['shop/web:80'], nonce: r2.nonce, error: 'test: route refused' });
    await sleep(100);

    const st = await cli(['status', '--json', '--pin-dir', TEST_PIN_DIR, '--admin-socket', adminSocket]);
    t.equal(st.code, 0, st.stderr);
    const status = JSON.parse(st.stdout) as AgentStatus['datapath'] & { agent: AgentStatus['agent']; xds: AgentStatus['xds'] };
    t.ok(status.up, 'status: the datapath is up');
    t.same(status.endpoints?.map((e) => e.ip), ['198.18.0.2'], 'with the endpoint the agent enrolled');
    t.match(status.agent, { pid: process.pid, nodeName: 'node-a', adminSocket }, 'the agent answers');
    t.match(status.xds.snapshots, [{ node: null, versions: snap.versions, resources: { cluster: 1, endpoint: 1, listener: 1, route: 1 }, servedTo: ['node-a~proxy'] }],
      'the snapshot served, and to whom');
    const [p] = status.xds.proxies;
    t.match(p, { nodeId: 'node-a~proxy', protocol: 'sotw' }, 'the connected proxy');
    t.equal(p?.types.cluster?.ackedVersion, snap.versions.cluster, 'with the cluster version it ACKed');
    t.match(p?.types.route?.lastNack, { error: 'test: route refused', version: snap.versions.route }, 'and its last NACK');
    t.match(status.xds.nacks, [{ nodeId: 'node-a~proxy', typeUrl: TYPE_URL.route, error: 'test: route refused' }]);
    const human = await cli(['status', '--pin-dir', TEST_PIN_DIR, '--admin-socket', adminSocket]);
    t.match(human.stdout, /agent +running \(pid \d+\).*node node-a/, 'the human status shows the agent');
    t.match(human.stdout, new RegExp(`node-a~proxy +\\d+ +sotw +${snap.versions.cluster.slice(0, 8)} +- +- +- \\(NACKed ${snap.versions.route.slice(0, 8)}\\)`), 'a row per proxy: ACKed, unsubscribed, NACKed');
    t.match(human.stdout, /NACK .* node-a~proxy RouteConfiguration [0-9a-f]{8}: test: route refused/, 'and the NACK with its reason');

    const dump = await cli(['xds', 'dump', '--admin-socket', adminSocket]);
    t.equal(dump.code, 0, dump.stderr);
    const all = JSON.parse(dump.stdout) as { snapshots: { node: string | null; served_to: string[]; config_dump: { configs: Record<string, any>[] } }[] };
    t.match(all.snapshots, [{ node: null, served_to: ['node-a~proxy'] }], 'xds dump: every snapshot, and who is served it');
    t.same(all.snapshots[0]!.config_dump.configs[0]!.dynamic_active_clusters.map((c: any) => c.cluster.name), ['shop/web:80'], 'as Envoy\'s config dump');
    const one = await cli(['xds', 'dump', '--admin-socket', adminSocket, '--node', 'node-a~proxy', '--type', 'endpoints']);
    const od = JSON.parse(one.stdout) as { configs: Record<string, any>[] };
    t.equal(od.configs.length, 1, '--node --type: one node\'s ConfigDump of one type');
    t.same(od.configs[0]!.dynamic_endpoint_configs[0].endpoint_config.endpoints[0].lb_endpoints[0].endpoint.address.socket_address, { address: '198.18.0.3', port_value: 8080 });

    const metrics = parseMetrics(await httpGet(agent.adminAddress!, '/metrics'));
    const value = (name: string, labels: Record<string, string> = {}) => Number(metrics.find((m) => m.name === name)?.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v))?.value);
    t.equal(value('sockmesh_datapath_up'), 1, '/metrics: datapath up');
    t.equal(value('sockmesh_datapath_endpoints'), 1);
    t.ok(value('sockmesh_datapath_sock_inserted_total') >= 0, 'datapath counters');
    t.equal(value('sockmesh_xds_streams'), 1, 'one stream open');
    t.equal(value('sockmesh_xds_acks_total', { type: 'cluster' }), 1, 'the ACK counted');
    t.equal(value('sockmesh_xds_nacks_total', { type: 'route' }), 1, 'the NACK counted');
    t.equal(value('sockmesh_xds_snapshot_resources', { type: 'listener' }), 1);

    // a configuration that does not hold together is refused; the last good one keeps serving
    const broken = meshResources([web('198.18.0.9')]);
    broken.clusters = [];
    t.throws(() => agent.publish(broken), { code: 'SOCKMESH_XDS_SNAPSHOT', message: /needs|sends to cluster "shop\/web:80", which is missing/ });
    await sleep(100);
    t.equal(proxy.responses.length, 2, 'nothing is pushed');
    const after = JSON.parse((await cli(['status', '--json', '--pin-dir', TEST_PIN_DIR, '--admin-socket', adminSocket])).stdout) as { xds: AgentStatus['xds'] };
    t.match(after.xds.lastSnapshotFailure, { code: 'SOCKMESH_XDS_SNAPSHOT', error: /which is missing/ }, 'status shows what was refused and why');
    t.same(after.xds.snapshots[0]!.versions, snap.versions, 'and the snapshot served is the last good one');
    t.equal(Number(parseMetrics(await httpGet(agent.adminAddress!, '/metrics')).find((m) => m.name === 'sockmesh_xds_snapshot_failures_total')?.metrics[0]?.value), 1, 'and /metrics counts it');

    // a good change reaches the proxy
    const moved = agent.publish(meshResources([web('198.18.0.4')]));
    t.not(moved.versions.endpoint, snap.versions.endpoint);
    t.equal(moved.resources.cluster.get('shop/web:80'), snap.resources.cluster.get('shop/web:80'), 'an unchanged resource keeps its encoding');

    await agent.stop();
    stopped = true;
    t.notOk(existsSync(adminSocket), 'stop removes the admin socket');
    t.ok(existsSync(join(TEST_PIN_DIR, 'link_sockops')), 'and leaves the datapath pinned');
    const gone = await cli(['xds', 'dump', '--admin-socket', adminSocket]);
    t.match(gone.stderr, /SOCKMESH_AGENT_NOT_RUNNING/, 'the CLI then says no agent runs');
  });
}
