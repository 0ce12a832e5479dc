import t from 'tap';
import { ALS_CLUSTER, OTLP_CLUSTER, envoyBootstrap } from '../../xds/envoy-bootstrap.js';
import { decodeResource, encodeStrict } from '../../xds/strict-encode.js';

/** The bootstrap as Envoy's Bootstrap message reads it back off the wire. */
const wire = (b: Record<string, unknown>) => decodeResource('envoy.config.bootstrap.v3.Bootstrap', encodeStrict('envoy.config.bootstrap.v3.Bootstrap', b)) as Record<string, any>;

t.test('the bootstrap is a valid Envoy Bootstrap: ADS to the agent, admin on loopback', async (t) => {
  const b = envoyBootstrap({ nodeId: 'node-a', adsPort: 18000, locality: { region: 'local', zone: 'node-a' } });
  const d = wire(b);
  t.match(d.node, { id: 'node-a', cluster: 'sockmesh-node-proxy', locality: { region: 'local', zone: 'node-a' } });
  t.same(d.admin.address.socket_address, { address: '127.0.0.1', port_value: 15000 }, 'admin is bound to 127.0.0.1');
  t.match(d.dynamic_resources.ads_config, { api_type: 'GRPC', transport_api_version: 'V3', grpc_services: [{ envoy_grpc: { cluster_name: 'sockmesh-xds' } }] });
  t.match(d.dynamic_resources.cds_config, { ads: {}, resource_api_version: 'V3' }, 'clusters come over ADS');
  t.match(d.dynamic_resources.lds_config, { ads: {}, resource_api_version: 'V3' }, 'listeners come over ADS');
  const xds = d.static_resources.clusters[0];
  t.equal(xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value, 18000, 'the xDS cluster points at the agent');
  t.ok(xds.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config.http2_protocol_options, 'over HTTP/2, as gRPC needs');
});

t.test('bad options are refused with the option named', async (t) => {
  t.throws(() => envoyBootstrap({ nodeId: '', adsPort: 18000 }), { code: 'SOCKMESH_INVALID_ARGUMENT', message: /nodeId is required/ });
  t.throws(() => envoyBootstrap({ nodeId: 'n', adsPort: 70000 }), { message: /adsPort must be a port/ });
  t.throws(() => envoyBootstrap({ nodeId: 'n', adsPort: 1, adminPort: 0 }), { message: /adminPort must be a port/ });
  t.throws(() => envoyBootstrap({ nodeId: 'n', adsPort: 1, adsAddress: 'agent.local' }), { message: /adsAddress must be an IP address/ });
});

t.test('an Envoy in another network namespace reaches the agent over its unix socket', async (t) => {
  const b = envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock' });
  const d = wire(b);
  t.same(d.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/xds.sock' } });
});

t.test('each of the agent\'s telemetry sockets gets a static gRPC cluster to it; without them, the xDS cluster alone', async (t) => {
  const cases = [['otlpPipe', OTLP_CLUSTER, '/run/sockmesh/envoy-otlp.sock'], ['alsPipe', ALS_CLUSTER, '/run/sockmesh/envoy-als.sock']] as const;
  for (const [option, cluster, path] of cases) {
    const c = wire(envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock', [option]: path })).static_resources.clusters.find((x: { name: string }) => x.name === cluster);
    t.same(c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path } }, `${option}: ${cluster} reaches it`);
    t.ok(c.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config.http2_protocol_options, `${option}: over HTTP/2, as gRPC needs`);
    t.throws(() => envoyBootstrap({ nodeId: 'n', adsPipe: '/x.sock', [option]: 'relative.sock' }), { code: 'SOCKMESH_INVALID_ARGUMENT', message: new RegExp(`${option} must be an absolute path`) });
  }
  const both = envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock', otlpPipe: cases[0][2], alsPipe: cases[1][2] });
  t.same(envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock' }).static_resources, { clusters: [(both.static_resources as { clusters: unknown[] }).clusters[0]] }, 'no socket: the xDS cluster alone');
});

t.test('with the OTLP socket, a runtime layer has the tracer export every second or at 1,000 spans', async (t) => {
  const d = wire(envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock', otlpPipe: '/run/sockmesh/envoy-otlp.sock' }));
  t.same(d.layered_runtime.layers.map((l: { name: string }) => l.name), ['sockmesh', 'admin'], 'a static runtime layer, and the admin layer Envoy has by default');
  t.same(d.layered_runtime.layers[0].static_layer, { fields: { 'tracing.opentelemetry.flush_interval_ms': { numberValue: 1000 }, 'tracing.opentelemetry.min_flush_spans': { numberValue: 1000 } } },
    'on the wire as a Struct');
  t.notOk('layered_runtime' in envoyBootstrap({ nodeId: 'n', adsPipe: '/x.sock' }), 'no socket: Envoy\'s default runtime');
});
