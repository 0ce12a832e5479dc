/**
 * mesh-proxy's view of Envoy resources: each xDS resource (decoded from its
 * Envoy proto) is translated into what the proxy runs, or refused with the
 * reason, which the xDS client sends back as a NACK. The proxy serves the
 * subset sockmesh's control plane emits: listeners with one HTTP connection
 * manager (RDS, RBAC filters then the router), routes matched on path (exact, prefix,
 * segment prefix, regex), headers, query parameters; clusters or weighted
 * clusters; timeouts, retries, header changes; EDS clusters balanced round
 * robin or least request.
 */
import { routeTemplate } from '../xds/route-template.js';
import { RBAC_TYPE, RbacConfigError, type RbacFilter, rbacFilter } from './rbac.js';

type Obj = Record<string, unknown>;

/** A resource the proxy cannot run: the NACK's error_detail. */
export class ProxyConfigError extends Error {}

export interface ListenerConfig {
  name: string;
  ip: string;
  port: number;
  routeConfig: string;
  /** the RBAC HTTP filters before the router, in order (empty: none) */
  rbac: RbacFilter[];
  /**
   * the HTTP connection manager's `tracing`: present, requests are traced and
   * new traces kept at random_sampling (Envoy's default 100 %); absent, the
   * listener is not traced (Envoy) unless the proxy was started to trace
   * every listener (mesh-proxy --tracing on)
   */
  tracing?: { sampleRatio: number };
}

export interface StringMatcher {
  test(v: string): boolean;
}

export interface RouteEntry {
  name: string;
  path: StringMatcher;
  /** the path match as a low-cardinality template, for http.route: "/api/*", "/health", "regex:^/v[0-9]+" */
  template: string;
  headers: { name: string; match: StringMatcher; invert: boolean; present?: boolean }[];
  query: { name: string; match: StringMatcher }[];
  clusters: { name: string; weight: number }[];
  totalWeight: number;
  /** 0: none */
  timeoutMs: number;
  retry?: { on: Set<string>; codes: Set<number>; numRetries: number; perTryTimeoutMs: number; backoffMs: number };
  requestAdd: { name: string; value: string; overwrite: boolean }[];
  requestRemove: string[];
  responseAdd: { name: string; value: string; overwrite: boolean }[];
  responseRemove: string[];
}

export interface VirtualHost {
  name: string;
  domains: string[];
  routes: RouteEntry[];
}

export interface RouteTable {
  name: string;
  virtualHosts: VirtualHost[];
}

export interface ClusterConfig {
  name: string;
  edsName: string;
  lb: 'round_robin' | 'least_request';
  connectTimeoutMs: number;
}

export type Endpoints = { ip: string; port: number }[];

const obj = (v: unknown, what: string): Obj => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ProxyConfigError(`${what} is missing`);
  return v as Obj;
};

function durationMs(d: unknown): number {
  if (d === undefined || d === null) return 0;
  const o = d as { seconds?: string | number; nanos?: number };
  return Number(o.seconds ?? 0) * 1000 + Math.round((o.nanos ?? 0) / 1e6);
}

function regex(v: unknown, where: string): RegExp {
  const r = (v as { regex?: unknown } | undefined)?.regex;
  if (typeof r !== 'string') throw new ProxyConfigError(`${where}: safe_regex without a regex`);
  try {
    return new RegExp(`^(?:${r})$`, 'u');
  } catch (err) {
    throw new ProxyConfigError(`${where}: invalid regex ${JSON.stringify(r)}: ${(err as Error).message}`);
  }
}

/** envoy.type.matcher.v3.StringMatcher */
function stringMatcher(m: Obj, where: string): StringMatcher {
  const ci = m.ignore_case === true;
  const norm = (s: string) => (ci ? s.toLowerCase() : s);
  if (typeof m.exact === 'string') { const x = norm(m.exact); return { test: (v) => norm(v) === x }; }
  if (typeof m.prefix === 'string') { const x = norm(m.prefix); return { test: (v) => norm(v).startsWith(x) }; }
  if (typeof m.suffix === 'string') { const x = norm(m.suffix); return { test: (v) => norm(v).endsWith(x) }; }
  if (typeof m.contains === 'string') { const x = norm(m.contains); return { test: (v) => norm(v).includes(x) }; }
  if (m.safe_regex !== undefined) { const r = regex(m.safe_regex, where); return { test: (v) => r.test(v) }; }
  throw new ProxyConfigError(`${where}: string matcher ${JSON.stringify(Object.keys(m))} not supported`);
}

function pathMatcher(match: Obj, where: string): StringMatcher {
  if (typeof match.prefix === 'string') { const p = match.prefix; return { test: (v) => v.startsWith(p) }; }
  if (typeof match.path === 'string') { const p = match.path; return { test: (v) => v === p }; }
  if (typeof match.path_separated_prefix === 'string') {
    const p = match.path_separated_prefix;
    return { test: (v) => v === p || v.startsWith(`${p}/`) };
  }
  if (match.safe_regex !== undefined) { const r = regex(match.safe_regex, where); return { test: (v) => r.test(v) }; }
  throw new ProxyConfigError(`${where}: path match ${JSON.stringify(Object.keys(match))} not supported`);
}

function headerOptions(list: unknown): { name: string; value: string; overwrite: boolean }[] {
  return ((list as Obj[] | undefined) ?? []).map((h) => {
    const header = obj(h.header, 'header');
    const action = h.append_action ?? (h.append === false ? 'OVERWRITE_IF_EXISTS_OR_ADD' : 'APPEND_IF_EXISTS_OR_ADD');
    return { name: String(header.key).toLowerCase(), value: String(header.value ?? ''), overwrite: action === 'OVERWRITE_IF_EXISTS_OR_ADD' };
  });
}

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';

export function listenerConfig(l: Obj): ListenerConfig {
  const name = String(l.name);
  const sa = obj(obj(l.address, `listener ${name}: address`).socket_address, `listener ${name}: address.socket_address`);
  const chains = (l.filter_chains as Obj[] | undefined) ?? [];
  if (chains.length !== 1) throw new ProxyConfigError(`listener ${name}: ${chains.length} filter chains; mesh-proxy serves exactly one`);
  const filters = (chains[0]!.filters as Obj[] | undefined) ?? [];
  if (filters.length !== 1 || (filters[0]!.typed_config as Obj | undefined)?.['@type'] !== HCM) {
    throw new ProxyConfigError(`listener ${name}: mesh-proxy serves one filter, the HTTP connection manager`);
  }
  const hcm = filters[0]!.typed_config as Obj;
  const httpFilters = (hcm.http_filters as Obj[] | undefined) ?? [];
  const rbac: RbacFilter[] = [];
  httpFilters.forEach((f, i) => {
    const field = `http_filters[${i}]`;
    const type = (f.typed_config as Obj | undefined)?.['@type'];
    if (f.disabled === true) throw new ProxyConfigError(`listener ${name}: ${field} (${String(f.name)}): disabled filters are not supported`);
    if (type === ROUTER) {
      if (i !== httpFilters.length - 1) throw new ProxyConfigError(`listener ${name}: ${field}: the router must be the last HTTP filter`);
      return;
    }
    if (type !== RBAC_TYPE) throw new ProxyConfigError(`listener ${name}: ${field}: HTTP filter ${String(f.name)} not supported (RBAC and the router)`);
    try {
      rbac.push(rbacFilter(f.typed_config as Obj));
    } catch (err) {
      if (err instanceof RbacConfigError) throw new ProxyConfigError(`listener ${name}: ${field}.typed_config.${err.message}`);
      throw err;
    }
  });
  const rds = obj(hcm.rds, `listener ${name}: rds (inline route configurations are not supported)`);
  const port = Number(sa.port_value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ProxyConfigError(`listener ${name}: port ${String(sa.port_value)}`);
  const tracing = hcm.tracing === undefined || hcm.tracing === null ? undefined : hcmTracing(hcm.tracing, `listener ${name}: tracing`);
  return { name, ip: String(sa.address), port, routeConfig: String(rds.route_config_name), rbac, ...(tracing && { tracing }) };
}

/**
 * envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing:
 * random_sampling (envoy.type.v3.Percent, 0..100, default 100) is the share of
 * new traces kept; a caller's sampled flag is followed as it is. The other
 * samplings and a provider are refused: mesh-proxy reports to the agent only.
 */
function hcmTracing(v: unknown, where: string): { sampleRatio: number } {
  const t = obj(v, where);
  for (const k of ['client_sampling', 'overall_sampling', 'provider', 'custom_tags', 'max_path_tag_length', 'spawn_upstream_span']) {
    if (t[k] !== undefined && t[k] !== null && !(Array.isArray(t[k]) && t[k].length === 0)) throw new ProxyConfigError(`${where}.${k}: not supported by mesh-proxy (random_sampling only)`);
  }
  if (t.random_sampling === undefined || t.random_sampling === null) return { sampleRatio: 1 };
  const pct = (t.random_sampling as { value?: unknown }).value ?? 0;
  if (typeof pct !== 'number' || !Number.isFinite(pct) || pct < 0 || pct > 100) throw new ProxyConfigError(`${where}.random_sampling.value: ${JSON.stringify(pct)} is not a percentage from 0 to 100`);
  return { sampleRatio: pct / 100 };
}

function routeEntry(r: Obj, where: string): RouteEntry {
  const match = obj(r.match, `${where}: match`);
  const action = r.route as Obj | undefined;
  if (!action) throw new ProxyConfigError(`${where}: only route actions are supported (no redirect or direct_response)`);
  let clusters: { name: string; weight: number }[];
  if (typeof action.cluster === 'string') clusters = [{ name: action.cluster, weight: 1 }];
  else if (action.weighted_clusters) {
    clusters = (((action.weighted_clusters as Obj).clusters as Obj[] | undefined) ?? []).map((c) => ({
      name: String(c.name), weight: Number((c.weight as { value?: number } | undefined)?.value ?? 0),
    }));
  } else throw new ProxyConfigError(`${where}: route action without cluster or weighted_clusters`);
  const totalWeight = clusters.reduce((a, c) => a + c.weight, 0);
  if (totalWeight <= 0) throw new ProxyConfigError(`${where}: weighted clusters add up to 0`);
  const rp = action.retry_policy as Obj | undefined;
  let retry: RouteEntry['retry'];
  if (rp) {
    retry = {
      on: new Set(String(rp.retry_on ?? '').split(',').map((x) => x.trim()).filter(Boolean)),
      codes: new Set(((rp.retriable_status_codes as number[] | undefined) ?? []).map(Number)),
      numRetries: Number((rp.num_retries as { value?: number } | undefined)?.value ?? 1),
      perTryTimeoutMs: durationMs(rp.per_try_timeout),
      backoffMs: durationMs((rp.retry_back_off as Obj | undefined)?.base_interval) || 25,
    };
    for (const on of retry.on) {
      if (!['5xx', 'gateway-error', 'retriable-status-codes', 'connect-failure', 'reset'].includes(on)) throw new ProxyConfigError(`${where}: retry_on ${on} not supported`);
    }
  }
  return {
    name: String(r.name ?? ''),
    path: pathMatcher(match, `${where}: match`),
    template: routeTemplate(match),
    headers: ((match.headers as Obj[] | undefined) ?? []).map((h, i) => {
      const name = String(h.name).toLowerCase();
      if (h.present_match !== undefined) return { name, match: { test: () => true }, invert: h.invert_match === true, present: Boolean(h.present_match) };
      const sm = h.string_match as Obj | undefined;
      if (!sm) throw new ProxyConfigError(`${where}: header match ${name} without string_match`);
      return { name, match: stringMatcher(sm, `${where}: headers[${i}]`), invert: h.invert_match === true };
    }),
    query: ((match.query_parameters as Obj[] | undefined) ?? []).map((q, i) => ({
      name: String(q.name), match: stringMatcher(obj(q.string_match, `${where}: query_parameters[${i}].string_match`), `${where}: query_parameters[${i}]`),
    })),
    clusters, totalWeight,
    timeoutMs: action.timeout === undefined ? 15_000 : durationMs(action.timeout), // Envoy's default, when none is given
    ...(retry && { retry }),
    requestAdd: headerOptions(r.request_headers_to_add),
    requestRemove: ((r.request_headers_to_remove as string[] | undefined) ?? []).map((h) => h.toLowerCase()),
    responseAdd: headerOptions(r.response_headers_to_add),
    responseRemove: ((r.response_headers_to_remove as string[] | undefined) ?? []).map((h) => h.toLowerCase()),
  };
}

export function routeTable(rc: Obj): RouteTable {
  const name = String(rc.name);
  return {
    name,
    virtualHosts: ((rc.virtual_hosts as Obj[] | undefined) ?? []).map((vh, i) => ({
      name: String(vh.name),
      domains: ((vh.domains as string[] | undefined) ?? []).map((d) => d.toLowerCase()),
      routes: ((vh.routes as Obj[] | undefined) ?? []).map((r, j) => routeEntry(r, `route configuration ${name}: virtual_hosts[${i}].routes[${j}]`)),
    })),
  };
}

export function clusterConfig(c: Obj): ClusterConfig {
  const name = String(c.name);
  if ((c.type ?? 'STATIC') !== 'EDS') throw new ProxyConfigError(`cluster ${name}: type ${String(c.type)} not supported (only EDS)`);
  const lb = c.lb_policy ?? 'ROUND_ROBIN';
  if (lb !== 'ROUND_ROBIN' && lb !== 'LEAST_REQUEST') throw new ProxyConfigError(`cluster ${name}: lb_policy ${String(lb)} not supported (ROUND_ROBIN, LEAST_REQUEST)`);
  const eds = (c.eds_cluster_config as Obj | undefined)?.service_name;
  return {
    name, edsName: typeof eds === 'string' && eds !== '' ? eds : name,
    lb: lb === 'ROUND_ROBIN' ? 'round_robin' : 'least_request', connectTimeoutMs: durationMs(c.connect_timeout) || 5000,
  };
}

export function endpoints(cla: Obj): Endpoints {
  const out: Endpoints = [];
  for (const loc of (cla.endpoints as Obj[] | undefined) ?? []) {
    for (const lb of (loc.lb_endpoints as Obj[] | undefined) ?? []) {
      if (lb.health_status === 'UNHEALTHY' || lb.health_status === 'DRAINING') continue;
      const sa = ((lb.endpoint as Obj | undefined)?.address as Obj | undefined)?.socket_address as Obj | undefined;
      if (sa) out.push({ ip: String(sa.address), port: Number(sa.port_value) });
    }
  }
  return out;
}

/** The route of a request: the first virtual host whose domains match the host, then the first matching route. */
export function selectRoute(table: RouteTable, host: string, path: string, query: URLSearchParams, headers: (name: string) => string | undefined): RouteEntry | undefined {
  const h = host.toLowerCase();
  const hostOnly = h.replace(/:\d+$/, '');
  const vh = table.virtualHosts.find((v) => v.domains.some((d) => d === '*' || d === h || d === hostOnly || (d.startsWith('*') && hostOnly.endsWith(d.slice(1)))));
  if (!vh) return undefined;
  return vh.routes.find((r) => r.path.test(path)
    && r.headers.every((m) => {
      const v = headers(m.name);
      const ok = m.present !== undefined ? (v !== undefined) === m.present : v !== undefined && m.match.test(v);
      return m.invert ? !ok : ok;
    })
    && r.query.every((q) => { const v = query.get(q.name); return v !== null && q.match.test(v); }));
}

/** A weighted pick. */
export function pickCluster(r: RouteEntry, random = Math.random): string {
  let x = random() * r.totalWeight;
  for (const c of r.clusters) {
    x -= c.weight;
    if (x < 0) return c.name;
  }
  return r.clusters[r.clusters.length - 1]!.name;
}
