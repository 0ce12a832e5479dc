import t from 'tap';
import { parseManifestFile } from '../../mesh-agent/cluster/manifest-parser.js';
import type { HTTPRoute } from '../../mesh-agent/cluster/model.js';
import { ENVOY_ACCESS_LOG_NAME, ENVOY_ROUTE_TAG, ENVOY_SPAN_TAGS, ENVOY_TRACING_SERVICE, l7Resources } from '../../xds/l7-resources.js';
import { compileRbac } from '../../policies/rbac-compile.js';
import { decodeResource } from '../../xds/strict-encode.js';
import { PODS, POLICIES, WORKLOADS } from '../fixtures/authz-cases.js';
import { Snapshot } from '../../xds/snapshot.js';

function routes(yaml: string): Map<string, HTTPRoute> {
  const r = parseManifestFile('r.yaml', yaml);
  if (r.errors.length) throw new Error(r.errors.join('\n'));
  return new Map(r.objects.map((o) => [`${o.meta.namespace}/${o.meta.name}`, o as HTTPRoute]));
}

const ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: split, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: web }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /api/ } }]
    backendRefs: [{ name: web-v1, port: 80, weight: 90 }, { name: web-v2, port: 80, weight: 10 }]
    timeouts: { request: 2s, backendRequest: 500ms }
    retry: { attempts: 2, codes: [503], backoff: 20ms }
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: { add: [{ name: X-Served-By, value: mesh }], remove: [server] }
  - matches: [{ path: { type: Exact, value: /health }, method: GET }, { headers: [{ name: x-canary, value: "1" }] }]
    backendRefs: [{ name: web-v2, port: 80 }]
`;

const backends = (svc: string, port: number) => ({ 'shop/web:80': [{ ip: '198.18.0.2', port: 8080 }], 'shop/web-v1:80': [{ ip: '198.18.0.3', port: 8080 }], 'shop/web-v2:80': [{ ip: '198.18.0.4', port: 8080 }] } as Record<string, { ip: string; port: number }[]>)[`${svc}:${port}`];

t.test('HTTPRoutes compile into listeners, routes and clusters Envoy accepts', async (t) => {
  const lastGood = new Map<string, HTTPRoute>();
  const out = l7Resources({ proxyIp: '198.18.255.254', ports: [{ service: 'shop/web', port: 80, listenerPort: 20000 }, { service: 'shop/db', port: 5432, listenerPort: 20001 }], routes: routes(ROUTE), backends, lastGood });
  t.same([...out.routeStatus], [['shop/split', { state: 'accepted', reasons: [] }]]);
  const snap = Snapshot.create(out.resources);
  t.same([...snap.resources.listener.keys()], ['shop/db:5432', 'shop/web:80'], 'a listener per L7 service port');
  t.same([...snap.resources.cluster.keys()], ['shop/db:5432', 'shop/web-v1:80', 'shop/web-v2:80'], 'a cluster per backend service port');
  const rc = snap.resources.route.get('shop/web:80')!.resource as { virtual_hosts: { routes: { name: string; match: Record<string, unknown>; route: Record<string, unknown> }[] }[] };
  const rs = rc.virtual_hosts[0]!.routes;
  t.same(rs.map((r) => r.name), ['shop/split#1', 'shop/split#0', 'shop/split#1'], 'exact path first, then the prefix, then a header-only match (prefix /)');
  t.same(rs[1]!.match, { path_separated_prefix: '/api' }, 'a Gateway API prefix matches whole segments');
  t.match(rs[1]!.route, {
    weighted_clusters: { clusters: [{ name: 'shop/web-v1:80', weight: { value: 90 } }, { name: 'shop/web-v2:80', weight: { value: 10 } }] },
    timeout: { seconds: 2 }, retry_policy: { retry_on: 'retriable-status-codes', retriable_status_codes: [503], num_retries: { value: 2 }, per_try_timeout: { nanos: 500_000_000 } },
  });
  t.match(rs[0]!.match, { path: '/health', headers: [{ name: ':method', string_match: { exact: 'GET' } }] });
  t.match(snap.resources.route.get('shop/db:5432')!.resource, { virtual_hosts: [{ routes: [{ match: { prefix: '/' }, route: { cluster: 'shop/db:5432' } }] }] }, 'no route attached: everything to the service itself');
  t.match(snap.resources.listener.get('shop/web:80')!.resource, { address: { socket_address: { address: '198.18.255.254', port_value: 20000 } } });
});

t.test('a route whose backend does not exist is refused; its last good version serves', async (t) => {
  const lastGood = new Map<string, HTTPRoute>();
  const ports = [{ service: 'shop/web', port: 80, listenerPort: 20000 }];
  l7Resources({ proxyIp: '198.18.255.254', ports, routes: routes(ROUTE), backends, lastGood });
  const broken = routes(ROUTE.replace('name: web-v2, port: 80 }]\n', 'name: web-v3, port: 80 }]\n'));
  const out = l7Resources({ proxyIp: '198.18.255.254', ports, routes: broken, backends, lastGood });
  t.same(out.routeStatus.get('shop/split'), { state: 'stale', reasons: ['rules[1]: backend shop/web-v3:80 is no service port with a VIP'] });
  t.ok(Snapshot.create(out.resources).resources.cluster.has('shop/web-v2:80'), 'the last good version still sends to web-v2');
  const fresh = l7Resources({ proxyIp: '198.18.255.254', ports, routes: broken, backends, lastGood: new Map() });
  t.equal(fresh.routeStatus.get('shop/split')?.state, 'refused', 'with no good version before, nothing of it serves');
  t.match(Snapshot.create(fresh.resources).resources.route.get('shop/web:80')!.resource, { virtual_hosts: [{ routes: [{ name: 'shop/web:80#default' }] }] });
});

t.test('a service port\'s RBAC filters go before the router, in order, and the listener still encodes strictly', async (t) => {
  const ports = [{ service: 'shop/web', port: 80, listenerPort: 20000 }, { service: 'shop/db', port: 5432, listenerPort: 20001 }];
  const rbac = compileRbac({ backends: [WORKLOADS.web!], policies: ['audit-admin', 'deny-post', 'allow-get'].map((n) => POLICIES[n]!), pods: PODS });
  t.same(rbac.filters.map((f) => f.typed_config.rules.action), ['LOG', 'DENY', 'ALLOW'], 'three filters compiled');
  const base = { proxyIp: '198.18.255.254', ports, routes: routes(ROUTE), backends };
  const out = l7Resources({ ...base, lastGood: new Map(), httpFilters: (svc, port) => (svc === 'shop/web' && port === 80 ? rbac.filters : undefined) });
  const snap = Snapshot.create(out.resources); // packs every resource strictly: Envoy's protos and validate rules
  type L = { filter_chains: { filters: { typed_config: { http_filters: { name: string; typed_config: Record<string, unknown> }[] } }[] }[] };
  const filtersOf = (l: unknown) => (l as L).filter_chains[0]!.filters[0]!.typed_config.http_filters;
  const web = filtersOf(snap.resources.listener.get('shop/web:80')!.resource);
  t.same(web.map((f) => f.name), ['envoy.filters.http.rbac', 'envoy.filters.http.rbac', 'envoy.filters.http.rbac', 'envoy.filters.http.router'], 'RBAC filters, then the router');
  t.same(web.slice(0, 3), rbac.filters, 'the filters as compiled, in order');
  t.same(filtersOf(snap.resources.listener.get('shop/db:5432')!.resource).map((f) => f.name), ['envoy.filters.http.router'], 'a port without filters: the router alone');
  const wire = decodeResource('envoy.config.listener.v3.Listener', snap.resources.listener.get('shop/web:80')!.any.value) as L;
  t.same(filtersOf(wire).slice(0, 3).map((f) => (f.typed_config.rules as { action?: string } | undefined)?.action ?? 'ALLOW'), ['LOG', 'DENY', 'ALLOW'], 'the actions survive the wire');

  const none = l7Resources({ ...base, lastGood: new Map() });
  const empty = l7Resources({ ...base, lastGood: new Map(), httpFilters: () => [] });
  t.same(empty.resources, none.resources, 'no policies: exactly the output without the option');
  t.same(filtersOf(none.resources.listeners[0]), [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }], 'which is the router alone');
});

t.test('tracing: every listener\'s HCM carries it at the ratio in percent, and none without it; both encode strictly', async (t) => {
  const ports = [{ service: 'shop/web', port: 80, listenerPort: 20000 }, { service: 'shop/db', port: 5432, listenerPort: 20001 }];
  const base = { proxyIp: '198.18.255.254', ports, routes: routes(ROUTE), backends };
  type L = { filter_chains: { filters: { typed_config: { tracing?: unknown } }[] }[] };
  const tracingOf = (l: unknown) => (l as L).filter_chains[0]!.filters[0]!.typed_config.tracing;
  for (const [ratio, pct] of [[1, 100], [0.1, 10], [0.07, 7], [0, 0]] as const) {
    const snap = Snapshot.create(l7Resources({ ...base, lastGood: new Map(), tracing: { sampleRatio: ratio } }).resources);
    for (const [name, l] of snap.resources.listener) {
      t.same(tracingOf(l.resource), { random_sampling: { value: pct } }, `${name} at ${ratio}`);
      const wire = tracingOf(decodeResource('envoy.config.listener.v3.Listener', l.any.value)) as { random_sampling?: { value?: number } } | undefined;
      t.equal(wire?.random_sampling?.value ?? (wire?.random_sampling ? 0 : undefined), pct, 'on the wire too');
    }
  }
  const off = Snapshot.create(l7Resources({ ...base, lastGood: new Map() }).resources);
  t.ok([...off.resources.listener.values()].every((l) => tracingOf(l.resource) === undefined && tracingOf(decodeResource('envoy.config.listener.v3.Listener', l.any.value)) === undefined), 'no tracing option: no tracing field');
});

t.test('an Envoy node proxy\'s access log: every listener streams every request to the agent over gRPC; it encodes strictly', async (t) => {
  const ports = [{ service: 'shop/web', port: 80, listenerPort: 20000 }];
  const snap = Snapshot.create(l7Resources({ proxyIp: '198.18.255.254', ports, routes: routes(ROUTE), backends, lastGood: new Map(), accessLog: { cluster: 'sockmesh-als' } }).resources);
  type L = { filter_chains: { filters: { typed_config: { access_log?: Record<string, any>[]; tracing?: unknown } }[] }[] };
  const hcm = (decodeResource('envoy.config.listener.v3.Listener', snap.resources.listener.get('shop/web:80')!.any.value) as L).filter_chains[0]!.filters[0]!.typed_config;
  t.equal(hcm.access_log?.length, 1);
  t.equal(hcm.access_log![0]!.name, 'envoy.access_loggers.http_grpc');
  t.match(hcm.access_log![0]!.typed_config, { common_config: { log_name: ENVOY_ACCESS_LOG_NAME, grpc_service: { envoy_grpc: { cluster_name: 'sockmesh-als' } }, transport_api_version: 'V3', buffer_flush_interval: { nanos: 500_000_000 } } },
    'its Any decoded as HttpGrpcAccessLogConfig');
  t.equal(hcm.access_log![0]!.typed_config.common_config.buffer_size_bytes.value, 65536);
  t.same(hcm.access_log![0]!.typed_config.common_config.custom_tags, [{ tag: ENVOY_ROUTE_TAG, metadata: { kind: { route: {} }, metadata_key: { key: 'sockmesh', path: [{ key: 'route' }] } } }],
    'each entry tagged with its route\'s template, from the route\'s metadata');
  t.same(hcm.access_log![0]!.typed_config.additional_request_headers_to_log, ['traceparent'], 'and the traceparent, for a sampled request\'s trace id');
  const rc = decodeResource('envoy.config.route.v3.RouteConfiguration', snap.resources.route.get('shop/web:80')!.any.value) as { virtual_hosts: { routes: { name: string; metadata?: { filter_metadata: Record<string, { fields: Record<string, { stringValue: string }> }> } }[] }[] };
  t.same(rc.virtual_hosts[0]!.routes.map((r) => [r.name, r.metadata?.filter_metadata.sockmesh?.fields.route?.stringValue]), [['shop/split#1', '/health'], ['shop/split#0', '/api/*'], ['shop/split#1', '/*']],
    'every route its template as metadata, on the wire (a rule\'s matches share its name, not its template)');
  t.equal(hcm.tracing, undefined, 'independent of tracing');
  const plain = l7Resources({ proxyIp: '198.18.255.254', ports, routes: routes(ROUTE), backends, lastGood: new Map() }).resources;
  t.notOk(JSON.stringify(plain.listeners).includes('access_log'), 'without it (mesh-proxy): none');
});

t.test('tracing for an Envoy node proxy: its OpenTelemetry tracer to the agent, a span per attempt, the tags and route names its spans are attributed by; all encode strictly', async (t) => {
  const ports = [{ service: 'shop/web', port: 80, listenerPort: 20000 }, { service: 'shop/db', port: 5432, listenerPort: 20001 }];
  const base = { proxyIp: '198.18.255.254', ports, routes: routes(ROUTE), backends };
  const snap = Snapshot.create(l7Resources({ ...base, lastGood: new Map(), tracing: { sampleRatio: 0.25, envoy: { otlpCluster: 'sockmesh-otlp' } } }).resources);
  type L = { filter_chains: { filters: { typed_config: { tracing?: Record<string, any> } }[] }[] };
  const wire = decodeResource('envoy.config.listener.v3.Listener', snap.resources.listener.get('shop/web:80')!.any.value) as L;
  const tr = wire.filter_chains[0]!.filters[0]!.typed_config.tracing!;
  t.equal(tr.random_sampling.value, 25, 'the ratio as before');
  t.equal(tr.provider.name, 'envoy.tracers.opentelemetry');
  t.match(tr.provider.typed_config, { grpc_service: { envoy_grpc: { cluster_name: 'sockmesh-otlp' } }, service_name: ENVOY_TRACING_SERVICE }, 'exporting to the bootstrap\'s cluster (its Any decoded as OpenTelemetryConfig)');
  t.equal(tr.spawn_upstream_span.value, true, 'a span per upstream attempt');
  t.same(tr.custom_tags.map((c: { tag: string; literal: { value: string } }) => [c.tag, c.literal.value]),
    [[ENVOY_SPAN_TAGS.listener, '198.18.255.254:20000'], [ENVOY_SPAN_TAGS.service, 'shop/web:80']], 'the listener and the service as literal tags');
  const db = decodeResource('envoy.config.listener.v3.Listener', snap.resources.listener.get('shop/db:5432')!.any.value) as L;
  t.equal(db.filter_chains[0]!.filters[0]!.typed_config.tracing!.custom_tags[0].literal.value, '198.18.255.254:20001', 'each listener its own');
  const rc = decodeResource('envoy.config.route.v3.RouteConfiguration', snap.resources.route.get('shop/web:80')!.any.value) as { virtual_hosts: { routes: { name: string; decorator?: { operation: string; propagate?: { value: boolean } } }[] }[] };
  const decorated = rc.virtual_hosts[0]!.routes.map((r) => [r.decorator?.operation, r.decorator?.propagate?.value]);
  t.same(decorated, [['/health', false], ['/api/*', false], ['/*', false]], 'each route named by its template (http.route), the name not sent upstream');
  const dflt = Snapshot.create(l7Resources({ ...base, routes: new Map(), lastGood: new Map(), tracing: { sampleRatio: 1, envoy: { otlpCluster: 'sockmesh-otlp' } } }).resources);
  const drc = decodeResource('envoy.config.route.v3.RouteConfiguration', dflt.resources.route.get('shop/web:80')!.any.value) as typeof rc;
  t.same(drc.virtual_hosts[0]!.routes.map((r) => r.decorator?.operation), ['/*'], 'a service without routes: its one route named too');

  // mesh-proxy gets none of it, so its configuration is what it was
  const plain = l7Resources({ ...base, lastGood: new Map(), tracing: { sampleRatio: 0.25 } }).resources;
  t.notOk(JSON.stringify(plain.routes).includes('decorator'), 'mesh-proxy: no decorators');
  t.same(Object.keys((plain.listeners[0] as L).filter_chains[0]!.filters[0]!.typed_config.tracing!), ['random_sampling'], 'mesh-proxy: random_sampling alone');
});
