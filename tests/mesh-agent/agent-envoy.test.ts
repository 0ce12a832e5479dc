/*
 * Privileged: the agent with an Envoy node proxy. No Envoy can be installed
 * here, so an executable stands in for its process (it records how it was
 * started and waits) and a stand-in for its tracer sends spans shaped as
 * Envoy's (tests/fixtures/envoy-tracer-stand-in.ts) over OTLP/gRPC: what is
 * checked is the agent's side (the bootstrap, the listeners' tracing, the
 * span socket and what it makes of the spans), not Envoy.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Agent } from '../../mesh-agent/agent.js';
import { renderAgent } from '../../mesh-agent/commands/datapath-commands.js';
import { ALS_CLUSTER, OTLP_CLUSTER } from '../../xds/envoy-bootstrap.js';
import { accessLogMessage, httpEntry, streamAccessLogs } from '../fixtures/envoy-access-log-stand-in.js';
import { EnvoyTracerStandIn } from '../fixtures/envoy-tracer-stand-in.js';
import { TEST_PIN_DIR, agentEndpoints, cleanNode } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';
import { until } from '../fixtures/wait.js';

const PREFIX = 'smy';
const MANIFESTS = [
  'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, annotations: { sockmesh.io/enabled: "true" } }\n',
  'apiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: shop }\nspec: { selector: { app: web }, ports: [{ port: 80, targetPort: 8080, appProtocol: http }] }\n',
  'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: web, namespace: shop }\nspec:\n  parentRefs: [{ kind: Service, name: web }]\n  rules:\n  - matches: [{ path: { type: PathPrefix, value: /api } }]\n    backendRefs: [{ name: web, port: 80 }]\n'
    + '  - matches: [{ path: { type: Exact, value: /health } }, { path: { type: PathPrefix, value: /v2 } }]\n    backendRefs: [{ name: web, port: 80 }]\n',
].join('---\n');

if (privileged(t)) {
  t.test('an Envoy node proxy gets a tracer exporting to the agent, which reads its spans back into requests', async (t) => {
    const { cgroupPath, clean } = await cleanNode(PREFIX);
    const dir = mkdtempSync(join(tmpdir(), 'sm-envoy-agent-'));
    writeFileSync(join(dir, 'app.yaml'), MANIFESTS);
    const starts = join(dir, 'starts');
    writeFileSync(join(dir, 'envoy'), `#!/bin/sh\necho "$@" >> ${starts}\ntrap 'exit 0' TERM\nwhile true; do sleep 0.1; done\n`);
    chmodSync(join(dir, 'envoy'), 0o755);
    const agent = new Agent({
      manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: TEST_PIN_DIR, cgroupPath }, proxy: join(dir, 'envoy'),
      ...agentEndpoints(dir), relaySocket: join(dir, 'relay.sock'), nodeName: 'envoy-node',
    });
    await agent.start();
    let envoy: EnvoyTracerStandIn | undefined;
    t.teardown(async () => {
      await envoy?.shutdown();
      await agent.stop({ removePods: true }).catch(() => undefined);
      await clean();
      rmSync(dir, { recursive: true, force: true });
    });
    const node = 'envoy-node~node-proxy';
    await until('the node proxy started and configured', () => existsSync(starts) && agent.status().cluster?.l7.proxy?.running === true && (() => {
      try { return (agent.configDump(node, 'listeners') as { configs: { dynamic_listeners?: unknown[] }[] }).configs[0]!.dynamic_listeners!.length === 1; } catch { return false; }
    })());
    t.equal(agent.status().cluster!.l7.proxy!.kind, 'envoy');

    const socket = join(dir, 'envoy-spans.sock');
    t.ok(statSync(socket).isSocket(), 'the agent serves Envoy\'s spans beside its relay socket');
    const args = readFileSync(starts, 'utf8').trim().split(' ');
    const bootstrap = JSON.parse(readFileSync(args[1]!, 'utf8')) as { static_resources: { clusters: { name: string; load_assignment: { endpoints: { lb_endpoints: { endpoint: { address: unknown } }[] }[] } }[] } };
    const otlp = bootstrap.static_resources.clusters.find((c) => c.name === OTLP_CLUSTER);
    t.same(otlp?.load_assignment.endpoints[0]!.lb_endpoints[0]!.endpoint.address, { pipe: { path: socket } }, 'Envoy\'s bootstrap has a cluster to it');
    const alsSocket = join(dir, 'envoy-als.sock');
    t.ok(statSync(alsSocket).isSocket(), 'and serves its access log');
    t.same(bootstrap.static_resources.clusters.find((c) => c.name === ALS_CLUSTER)?.load_assignment.endpoints[0]!.lb_endpoints[0]!.endpoint.address, { pipe: { path: alsSocket } }, 'with a cluster to that too');

    type Hcm = {
      tracing?: { provider?: { typed_config: { grpc_service: { envoy_grpc: { cluster_name: string } } } }; custom_tags: { tag: string; literal: { value: string } }[] };
      access_log?: { typed_config: { common_config: { grpc_service: { envoy_grpc: { cluster_name: string } } } } }[];
    };
    const dump = agent.configDump(node, 'listeners,routes') as { configs: Record<string, any>[] };
    const listener = dump.configs[0]!.dynamic_listeners[0].active_state.listener as { address: { socket_address: { address: string; port_value: number } }; filter_chains: { filters: { typed_config: Hcm }[] }[] };
    const hcm = listener.filter_chains[0]!.filters[0]!.typed_config;
    t.equal(hcm.tracing?.provider?.typed_config.grpc_service.envoy_grpc.cluster_name, OTLP_CLUSTER, 'its listeners\' tracer exports to that cluster');
    t.equal(hcm.access_log?.[0]?.typed_config.common_config.grpc_service.envoy_grpc.cluster_name, ALS_CLUSTER, 'and their access log streams to the agent');
    const listenerAddress = `${listener.address.socket_address.address}:${listener.address.socket_address.port_value}`;
    t.same(hcm.tracing!.custom_tags.find((c) => c.tag === 'sockmesh.listener')?.literal.value, listenerAddress, 'tagging its spans with the listener');
    const routes = dump.configs[1]!.dynamic_route_configs[0].route_config.virtual_hosts[0].routes as { decorator?: { operation: string } }[];
    t.same(routes.map((r) => r.decorator?.operation), ['/health', '/api/*', '/v2/*'], 'and naming them by route');

    envoy = new EnvoyTracerStandIn(socket, { batch: true });
    envoy.request({ caller: '198.18.0.77', listener: listenerAddress, service: 'shop/web:80', route: '/api/*', url: 'http://web.shop/api/x', status: 200, attempts: [{ backend: '198.18.0.78:8080', status: 200 }] });
    await envoy.flush();
    await until('the agent read the request from Envoy\'s spans', () => (agent.status().telemetry as { envoySpans?: { requests: number } }).envoySpans?.requests === 1);
    t.same(agent.telemetry.recentFlows({ type: 'l7' }), [], 'its flow comes from the access log, not from the spans');

    t.match(renderAgent(agent.status()), new RegExp(`envoy +spans on ${socket}: 1 exports, 1 requests read \\(1 attempts\\), 0 attempts waiting, 0 orphaned, 0 refused`), 'mesh-agent status shows them');
    const named = routes as { name: string; decorator?: { operation: string } }[];
    const nameOf = (template: string) => named.find((r) => r.decorator?.operation === template)!.name;
    const [lip, lport] = [listener.address.socket_address.address, listener.address.socket_address.port_value];
    const entry = { caller: ['198.18.0.77', 40000] as [string, number], listener: [lip, lport] as [string, number], upstream: ['198.18.0.78', 8080] as [string, number] };
    t.notOk((await streamAccessLogs(alsSocket, [accessLogMessage([
      httpEntry({ ...entry, routeName: nameOf('/api/*'), path: '/api/x' }), // no tag (an Envoy that did not write it): the name
      httpEntry({ ...entry, routeName: nameOf('/health'), path: '/health' }), // a name two matches share: no template from it
      httpEntry({ ...entry, routeName: nameOf('/health'), routeTag: '/health', path: '/health' }), // the tag says which
    ], true)])).error);
    t.match(agent.telemetry.recentFlows({ type: 'l7' }), [
      { source: { address: '198.18.0.77:40000' }, destination: { address: '198.18.0.78:8080' }, route: '/api/*', status: 200, path: 'proxy' },
      { urlPath: '/health', route: undefined }, { urlPath: '/health', route: '/health' },
    ], 'access log entries: flows, each route\'s template from its tag, else from the agent\'s own routes when the name says which');
    t.equal(nameOf('/health'), nameOf('/v2/*'), 'a rule\'s matches share its name');
    t.match(renderAgent(agent.status()), new RegExp(`envoy +access log on ${alsSocket}: 1 streams, 3 requests, 0 refused`), 'mesh-agent status shows the access log');

    agent.setTracing({ enabled: false });
    const off = agent.configDump(node, 'listeners') as { configs: Record<string, any>[] };
    t.equal(off.configs[0]!.dynamic_listeners[0].active_state.listener.filter_chains[0].filters[0].typed_config.tracing, undefined, 'tracing off: no tracer');
  });
}
