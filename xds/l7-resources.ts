/**
 * The node proxy's configuration from the mesh: for each L7 service port a
 * listener (on the proxy's address and the port the kernel sends that
 * service's connects to), a route configuration compiled from the
 * HTTPRoutes attached to the service (or "everything to the service" when
 * none is), and an EDS cluster per service port a route sends traffic to.
 * Pure. Gateway API semantics: matches are ordered by precedence (exact
 * path, then longer prefixes, then method, header and query matches, then
 * route name), a request no rule matches gets 404, weights split traffic.
 * HTTP filters the caller gives a service port (its AuthorizationPolicies
 * compiled to RBAC filters) run before the router.
 * A route that cannot be served (a backend that does not exist) is refused
 * with the reason; its last good version keeps serving.
 */
import type { HTTPHeaderModifier, HTTPRoute, HTTPRouteMatch, HTTPRouteRule } from '../mesh-agent/cluster/model.js';
import { routeTemplate } from './route-template.js';
import type { SnapshotInput } from './snapshot.js';

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const ADS = { ads: {}, resource_api_version: 'V3' };
const OTEL_TRACER = 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig';
const GRPC_ACCESS_LOG = 'type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig';
/** The log_name of the node proxy's access log to the agent (the first message of each stream names it). */
export const ENVOY_ACCESS_LOG_NAME = 'sockmesh';
/** The filter_metadata key of a route's sockmesh metadata ({ route: its template }) */
const ROUTE_METADATA = 'sockmesh';
/** The access log's tag holding the route's template (read by the agent: envoy-access-log.ts) */
export const ENVOY_ROUTE_TAG = 'sockmesh.route';

/** The literal span tags an Envoy node proxy's HCM adds to its spans (the agent reads them: telemetry/envoy-spans.ts). */
export const ENVOY_SPAN_TAGS = { listener: 'sockmesh.listener', service: 'sockmesh.service' } as const;
/** The service.name of an Envoy node proxy's spans, before the agent gives them to workloads. */
export const ENVOY_TRACING_SERVICE = 'sockmesh-node-proxy';

export interface L7Port {
  /** "ns/name" */
  service: string;
  port: number;
  listenerPort: number;
}

export interface L7Input {
  proxyIp: string;
  ports: L7Port[];
  /** every HTTPRoute in the cluster (those attached to L7 ports are used) */
  routes: ReadonlyMap<string, HTTPRoute>;
  /** a service port's ready backends; undefined when there is no such service port */
  backends: (service: string, port: number) => { ip: string; port: number }[] | undefined;
  /** a service's load-balancing policy (annotation sockmesh.io/lb) */
  lbPolicy?: (service: string) => 'ROUND_ROBIN' | 'LEAST_REQUEST';
  /** the last version of each route that was accepted (updated in place) */
  lastGood: Map<string, HTTPRoute>;
  /**
   * A service port's HTTP filters to run before the router, in order (the
   * RBAC filters its AuthorizationPolicies compile to: policies/rbac-compile.ts);
   * none when absent or empty.
   */
  httpFilters?: (service: string, port: number) => readonly HttpFilter[] | undefined;
  /**
   * Request tracing on every listener: its HCM's `tracing`, new traces kept at
   * random_sampling = sampleRatio × 100 %. Absent: no tracing field, so the
   * proxy does not trace (Envoy's rule; mesh-proxy --tracing xds).
   * `envoy`: the node proxy is Envoy, which writes its spans itself: its HCMs
   * also get the OpenTelemetry tracer exporting to the bootstrap's cluster
   * `otlpCluster` (the agent's receiver), a span per upstream attempt, and
   * what the agent needs to give each span to its workload: the listener's
   * address and the service as literal tags, each route's template as the
   * route's decorator (the name of the request's span). mesh-proxy reports
   * its requests to the agent itself and refuses these fields.
   */
  tracing?: { sampleRatio: number; envoy?: { otlpCluster: string } };
  /**
   * Envoy as the node proxy: every request logged to the agent over gRPC
   * (Envoy's access log service, to the bootstrap's cluster `cluster`),
   * traced or not, for its flows and metrics; mesh-proxy reports its
   * requests itself and refuses this field. Absent: no access log.
   */
  accessLog?: { cluster: string };
}

/** An HttpConnectionManager's http_filters entry: a name and a typed_config with '@type'. */
export interface HttpFilter {
  name: string;
  typed_config: { '@type': string } & Record<string, unknown>;
}

export interface RouteStatus {
  /** accepted: served as written; stale: refused, its last good version serves; refused: refused, nothing of it serves */
  state: 'accepted' | 'stale' | 'refused';
  reasons: string[];
}

export interface L7Output {
  resources: Required<SnapshotInput>;
  routeStatus: Map<string, RouteStatus>;
}

type Obj = Record<string, unknown>;

/** Resource name of a service port: "ns/name:port". */
export const portName = (service: string, port: number) => `${service}:${port}`;

function pathMatch(m: HTTPRouteMatch): Obj {
  const { type, value } = m.path;
  if (type === 'Exact') return { path: value };
  if (type === 'RegularExpression') return { safe_regex: { regex: value } };
  // Gateway API prefixes match whole path segments: /api matches /api and /api/x, not /apix
  const trimmed = value.replace(/\/+$/, '');
  return trimmed === '' ? { prefix: '/' } : { path_separated_prefix: trimmed };
}

function stringMatch(type: 'Exact' | 'RegularExpression', value: string): Obj {
  return type === 'Exact' ? { exact: value } : { safe_regex: { regex: value } };
}

function routeMatch(m: HTTPRouteMatch): Obj {
  const headers: Obj[] = m.headers.map((h) => ({ name: h.name, string_match: stringMatch(h.type, h.value) }));
  if (m.method) headers.push({ name: ':method', string_match: { exact: m.method } });
  return {
    ...pathMatch(m),
    ...(headers.length > 0 && { headers }),
    ...(m.queryParams.length > 0 && { query_parameters: m.queryParams.map((q) => ({ name: q.name, string_match: stringMatch(q.type, q.value) })) }),
  };
}

function headersToAdd(mod: HTTPHeaderModifier | undefined): Obj[] {
  if (!mod) return [];
  return [
    ...mod.set.map((h) => ({ header: { key: h.name, value: h.value }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' })),
    ...mod.add.map((h) => ({ header: { key: h.name, value: h.value }, append_action: 'APPEND_IF_EXISTS_OR_ADD' })),
  ];
}

function ms(n: number): Obj {
  return { seconds: Math.floor(n / 1000), nanos: (n % 1000) * 1_000_000 };
}

function routeAction(rule: HTTPRouteRule): Obj {
  const live = rule.backendRefs.filter((b) => b.weight > 0);
  const target = live.length === 1
    ? { cluster: portName(`${live[0]!.namespace}/${live[0]!.name}`, live[0]!.port) }
    : { weighted_clusters: { clusters: live.map((b) => ({ name: portName(`${b.namespace}/${b.name}`, b.port), weight: { value: b.weight } })) } };
  const action: Obj = { ...target, timeout: ms(rule.requestTimeoutMs ?? 0) };
  if (rule.retry || rule.backendRequestTimeoutMs !== undefined) {
    action.retry_policy = {
      retry_on: rule.retry ? 'retriable-status-codes' : '',
      num_retries: { value: rule.retry?.attempts ?? 0 },
      ...(rule.retry && { retriable_status_codes: rule.retry.codes }),
      ...(rule.backendRequestTimeoutMs !== undefined && { per_try_timeout: ms(rule.backendRequestTimeoutMs) }),
      ...(rule.retry?.backoffMs !== undefined && { retry_back_off: { base_interval: ms(Math.max(1, rule.retry.backoffMs)) } }),
    };
  }
  return action;
}

/** Gateway API precedence of a match (lower sorts first). */
function precedence(m: HTTPRouteMatch): number[] {
  const typeRank = m.path.type === 'Exact' ? 0 : m.path.type === 'RegularExpression' ? 1 : 2;
  return [typeRank, -m.path.value.length, m.method ? 0 : 1, -m.headers.length, -m.queryParams.length];
}

function cmp(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** Why a route cannot be served, or nothing. */
function problems(route: HTTPRoute, input: L7Input): string[] {
  const out: string[] = [];
  route.rules.forEach((r, i) => {
    for (const b of r.backendRefs) {
      if (input.backends(`${b.namespace}/${b.name}`, b.port) === undefined) out.push(`rules[${i}]: backend ${b.namespace}/${b.name}:${b.port} is no service port with a VIP`);
    }
  });
  return out;
}

export function l7Resources(input: L7Input): L7Output {
  const out: Required<SnapshotInput> = { clusters: [], endpoints: [], listeners: [], routes: [] };
  const routeStatus = new Map<string, RouteStatus>();
  const clusters = new Set<string>();
  const addCluster = (service: string, port: number) => {
    const name = portName(service, port);
    if (clusters.has(name)) return;
    clusters.add(name);
    out.clusters.push({
      name, type: 'EDS', connect_timeout: { seconds: 1 }, lb_policy: input.lbPolicy?.(service) ?? 'ROUND_ROBIN',
      eds_cluster_config: { eds_config: ADS, service_name: name },
    });
    out.endpoints.push({
      cluster_name: name,
      endpoints: [{ lb_endpoints: (input.backends(service, port) ?? []).map((b) => ({ endpoint: { address: { socket_address: { address: b.ip, port_value: b.port } } } })) }],
    });
  };
  // each route: as written when it can be served, else its last good version
  const usable = new Map<string, HTTPRoute>();
  for (const [key, route] of input.routes) {
    const p = problems(route, input);
    if (p.length === 0) {
      usable.set(key, route);
      input.lastGood.set(key, route);
      routeStatus.set(key, { state: 'accepted', reasons: [] });
      continue;
    }
    const last = input.lastGood.get(key);
    if (last && problems(last, input).length === 0) {
      usable.set(key, last);
      routeStatus.set(key, { state: 'stale', reasons: p });
    } else {
      routeStatus.set(key, { state: 'refused', reasons: p });
    }
  }
  for (const key of [...input.lastGood.keys()]) if (!input.routes.has(key)) input.lastGood.delete(key);

  for (const lp of [...input.ports].sort((a, b) => (portName(a.service, a.port) < portName(b.service, b.port) ? -1 : 1))) {
    const name = portName(lp.service, lp.port);
    const entries: { prec: number[]; route: string; rule: number; match: Obj; rule_: HTTPRouteRule }[] = [];
    for (const [key, route] of usable) {
      if (!route.parentRefs.some((p) => `${p.namespace}/${p.name}` === lp.service && (p.port === undefined || p.port === lp.port))) continue;
      route.rules.forEach((rule, ri) => {
        for (const m of rule.matches) entries.push({ prec: precedence(m), route: key, rule: ri, match: routeMatch(m), rule_: rule });
      });
    }
    entries.sort((a, b) => cmp(a.prec, b.prec) || (a.route < b.route ? -1 : a.route > b.route ? 1 : a.rule - b.rule));
    const routes: Obj[] = entries.map((e) => {
      for (const b of e.rule_.backendRefs) addCluster(`${b.namespace}/${b.name}`, b.port);
      const reqAdd = headersToAdd(e.rule_.requestHeaderModifier);
      const resAdd = headersToAdd(e.rule_.responseHeaderModifier);
      return {
        name: `${e.route}#${e.rule}`,
        match: e.match,
        ...envoyRouteTemplate(input, e.match),
        route: routeAction(e.rule_),
        ...(reqAdd.length > 0 && { request_headers_to_add: reqAdd }),
        ...(e.rule_.requestHeaderModifier?.remove.length && { request_headers_to_remove: e.rule_.requestHeaderModifier.remove }),
        ...(resAdd.length > 0 && { response_headers_to_add: resAdd }),
        ...(e.rule_.responseHeaderModifier?.remove.length && { response_headers_to_remove: e.rule_.responseHeaderModifier.remove }),
      };
    });
    if (entries.length === 0) {
      addCluster(lp.service, lp.port);
      const match = { prefix: '/' };
      routes.push({ name: `${name}#default`, match, route: { cluster: name, timeout: ms(0) }, ...envoyRouteTemplate(input, match) });
    }
    out.routes.push({ name, virtual_hosts: [{ name, domains: ['*'], routes }] });
    out.listeners.push({
      name,
      address: { socket_address: { address: input.proxyIp, port_value: lp.listenerPort } },
      filter_chains: [{
        filters: [{
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': HCM, stat_prefix: name, codec_type: 'AUTO',
            rds: { route_config_name: name, config_source: ADS },
            http_filters: [...(input.httpFilters?.(lp.service, lp.port) ?? []), { name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
            ...(input.tracing && { tracing: hcmTracing(input.tracing, input.proxyIp, lp) }),
            ...(input.accessLog && {
              access_log: [{
                name: 'envoy.access_loggers.http_grpc',
                typed_config: {
                  '@type': GRPC_ACCESS_LOG,
                  common_config: {
                    log_name: ENVOY_ACCESS_LOG_NAME, grpc_service: { envoy_grpc: { cluster_name: input.accessLog.cluster } }, transport_api_version: 'V3',
                    // sent every half second or at 64 KiB, as mesh-proxy's batches
                    buffer_flush_interval: ms(500), buffer_size_bytes: { value: 65536 },
                    custom_tags: [{ tag: ENVOY_ROUTE_TAG, metadata: { kind: { route: {} }, metadata_key: { key: ROUTE_METADATA, path: [{ key: 'route' }] } } }],
                  },
                  // a sampled request's trace id, for its flow
                  additional_request_headers_to_log: ['traceparent'],
                },
              }],
            }),
          },
        }],
      }],
    });
  }
  return { resources: out, routeStatus };
}

/**
 * What tells Envoy a route's template (http.route), none for mesh-proxy: the
 * decorator names the request's span after it (not sent upstream), and the
 * route's metadata holds it for the access log to tag each entry with
 * (route names repeat: one per match of a rule).
 */
function envoyRouteTemplate(input: L7Input, match: Obj): Obj {
  if (!input.tracing?.envoy && !input.accessLog) return {};
  const template = routeTemplate(match);
  return {
    ...(input.tracing?.envoy && { decorator: { operation: template, propagate: { value: false } } }),
    ...(input.accessLog && { metadata: { filter_metadata: { [ROUTE_METADATA]: { route: template } } } }),
  };
}

/** An HCM's tracing; Envoy also gets its tracer and the tags its spans are attributed by. */
function hcmTracing(tracing: NonNullable<L7Input['tracing']>, proxyIp: string, lp: L7Port): Obj {
  // a percentage without float noise in the config dump (0.07 × 100 = 7.000000000000001)
  const random_sampling = { value: Math.round(tracing.sampleRatio * 1e8) / 1e6 };
  if (!tracing.envoy) return { random_sampling };
  return {
    random_sampling,
    provider: {
      name: 'envoy.tracers.opentelemetry',
      typed_config: { '@type': OTEL_TRACER, grpc_service: { envoy_grpc: { cluster_name: tracing.envoy.otlpCluster } }, service_name: ENVOY_TRACING_SERVICE },
    },
    // one CLIENT span per attempt (the backend's traceparent names it), the request's span a SERVER span
    spawn_upstream_span: { value: true },
    max_path_tag_length: { value: 2048 },
    custom_tags: [
      { tag: ENVOY_SPAN_TAGS.listener, literal: { value: `${proxyIp}:${lp.listenerPort}` } },
      { tag: ENVOY_SPAN_TAGS.service, literal: { value: portName(lp.service, lp.port) } },
    ],
  };
}
