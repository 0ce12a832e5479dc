import t from 'tap';
import { ALS_CLUSTER, OTLP_CLUSTER, envoyBootstrap } from '../../xds/envoy-bootstrap.js';
import { decodeResource, encodeStrict } from '../../xds/strict-encode.js';

t.test('the bootstrap is a valid Envoy Bootstrap: ADS to the agent, admin on loopback', async (t) => {
  const b = envoyBootstrap({ nodeId: 'node-a', adsPort: 18000, locality: { region: 'local', zone: 'node-a' } });
  const d = decodeResource('envoy.config.bootstrap.v3.Bootstrap', encodeStrict('envoy.config.bootstrap.v3.Bootstrap', b)) as Record<string, any>;
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
  const d = decodeResource('envoy.config.bootstrap.v3.Bootstrap', encodeStrict('envoy.config.bootstrap.v3.Bootstrap', b)) as Record<string, any>;
  t.same(d.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/xds.sock' } });
});

t.test('with the agent\'s OTLP socket, a second static gRPC cluster reaches it; without, none', async (t) => {
  const b = envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock', otlpPipe: '/run/sockmesh/envoy-otlp.sock' });
  const d = decodeResource('envoy.config.bootstrap.v3.Bootstrap', encodeStrict('envoy.config.bootstrap.v3.Bootstrap', b)) as Record<string, any>;
  const otlp = d.static_resources.clusters.find((c: { name: string }) => c.name === OTLP_CLUSTER);
  t.same(otlp.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/envoy-otlp.sock' } });
  t.ok(otlp.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config.http2_protocol_options, 'over HTTP/2, as gRPC needs');
  t.same(envoyBootstrap({ nodeId: 'node-a~node-proxy', adsPipe: '/run/sockmesh/xds.sock' }).static_resources, { clusters: [(b.static_resources as { clusters: unknown[] }).clusters[0]] }, 'no socket: the xDS cluster alone');
  t.same(d.layered_runtime.layers.map((l: { name: string }) => l.name), ['sockmesh', 'admin'], 'a static runtime layer, and the admin layer Envoy has by default');
  t.same(d.layered_runtime.layers[0].static_layer, { fields: { 'tracing.opentelemetry.flush_interval_ms': { numberValue: 1000 }, 'tracing.opentelemetry.min_flush_spans': { numberValue: 1000 } } },
    'the tracer exports every second or at 1,000 spans (on the wire as a Struct)');
  t.notOk('layered_runtime' in envoyBootstrap({ nodeId: 'n', adsPipe: '/x.sock' }), 'no socket: Envoy\'s default runtime');
  t.throws(() => envoyBootstrap({ nodeId: 'n', adsPipe: '/x.sock', otlpPipe: 'otlp.sock' }), { code: 'SOCKMESH_INVALID_ARGUMENT', message: /otlpPipe must be an absolute path/ });
});

t.test('with the agent\'s access log socket, a static gRPC cluster to it', async (t) => {
  const b = envoyBootstrap({ nodeId: 'n', adsPipe: '/run/sockmesh/xds.sock', alsPipe: '/run/sockmesh/envoy-als.sock' });
  const d = decodeResource('envoy.config.bootstrap.v3.Bootstrap', encodeStrict('envoy.config.bootstrap.v3.Bootstrap', b)) as Record<string, any>;
  const als = d.static_resources.clusters.find((c: { name: string }) => c.name === ALS_CLUSTER);
  t.same(als.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/envoy-als.sock' } });
  t.ok(als.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config.http2_protocol_options, 'over HTTP/2');
  t.throws(() => envoyBootstrap({ nodeId: 'n', adsPipe: '/x.sock', alsPipe: 'als.sock' }), { message: /alsPipe must be an absolute path/ });
});
