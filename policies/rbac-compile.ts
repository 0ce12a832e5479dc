/**
 * AuthorizationPolicies compiled into Envoy's RBAC HTTP filter
 * (envoy.extensions.filters.http.rbac.v3.RBAC, filter name
 * envoy.filters.http.rbac) for one listener of the shared node proxy: plain
 * objects with proto field names and '@type' for Any, as
 * xds/l7-resources.ts builds its listeners. Pure.
 *
 * Filters come in Istio's order: an AUDIT filter (action LOG: never
 * denies), a DENY filter, then the ALLOW filter(s). Each policy rule is one
 * RBAC policy named by `rbacPolicyKey`.
 *
 * sockmesh knows the caller by its source address, so `principals`,
 * `namespaces`, `source.principal` and `source.namespace` compile to the
 * addresses of the known pods that match (direct_remote_ip /32 or /128);
 * a caller that is not a known pod has no principal and no namespace.
 * Because the node proxy listens on an allocated port per service port,
 * the destination port is not on the wire: `ports`, `notPorts` and
 * `destination.port` are decided here from each backend's port.
 *
 * One listener serves a service whose backends may be different workloads.
 * A request must then be allowed for every backend: all DENY rules of every
 * backend are in the DENY filter, one ALLOW filter is emitted per distinct
 * ALLOW set (Envoy runs them all, so all must pass), and a note says so.
 */
import { isIPv4 } from 'node:net';
import { istioPattern } from './istio-match.js';
import {
  policiesFor, policyName, principalOf,
  type AuthorizationAction, type AuthorizationPolicy, type AuthzCondition, type AuthzOperation, type AuthzRule, type AuthzSource, type AuthzWorkload,
} from './authorization-policy.js';
import { workloadName } from './authz-verdict.js';

/** The HTTP filter's name in an HttpConnectionManager's http_filters. */
export const RBAC_FILTER_NAME = 'envoy.filters.http.rbac';
/** The type URL of the filter's typed_config. */
export const RBAC_TYPE_URL = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';

/** A backend of the service: a workload and the port it serves the service port on. */
export interface RbacBackend extends AuthzWorkload {
  port: number;
}

/** A pod the caller may be, by source address. */
export interface KnownPod {
  ip: string;
  namespace: string;
  /** spec.serviceAccountName ("default" when the pod names none) */
  serviceAccount: string;
}

export interface RbacInput {
  /** the service's backend workloads */
  backends: readonly RbacBackend[];
  /** every AuthorizationPolicy of the cluster (those applying to a backend are used) */
  policies: readonly AuthorizationPolicy[];
  /** the pods whose addresses identify callers */
  pods: readonly KnownPod[];
}

type Obj = Record<string, unknown>;

/** One entry of an HttpConnectionManager's http_filters (before the router). */
export interface RbacHttpFilter {
  name: typeof RBAC_FILTER_NAME;
  typed_config: {
    '@type': typeof RBAC_TYPE_URL;
    rules: { action: 'ALLOW' | 'DENY' | 'LOG'; policies: Record<string, Obj> };
  };
}

export interface RbacOutput {
  /** in order: LOG (AUDIT), DENY, ALLOW…; empty when no policy applies */
  filters: RbacHttpFilter[];
  /** what the filters cannot say by themselves (backends that differ, a port-dependent rule) */
  notes: string[];
}

/** The RBAC policy name of a rule: "<namespace>/<name>/rule-<index>". */
export function rbacPolicyKey(policy: string, rule: number): string {
  return `${policy}/rule-${rule}`;
}

/** The policy and rule index of an RBAC policy name (as in Envoy's access logs), or undefined. */
export function parseRbacPolicyKey(key: string): { policy: string; rule: number } | undefined {
  const m = /^(.+)\/rule-([0-9]+)(@[0-9]+)?$/.exec(key);
  return m ? { policy: m[1]!, rule: Number(m[2]) } : undefined;
}

// --- matcher algebra; Envoy's sets need at least one member, so "nothing" is not(any) ---

const ANY: Obj = { any: true };
const same = (a: Obj, b: Obj) => JSON.stringify(a) === JSON.stringify(b);

function algebra(set: { and: string; or: string; not: string; items: string }) {
  const NONE: Obj = { [set.not]: ANY };
  const dedupe = (xs: Obj[]) => xs.filter((x, i) => xs.findIndex((y) => same(x, y)) === i);
  const or = (xs: Obj[]): Obj => {
    const ys = dedupe(xs.filter((x) => !same(x, NONE)));
    if (ys.some((x) => same(x, ANY))) return ANY;
    return ys.length === 0 ? NONE : ys.length === 1 ? ys[0]! : { [set.or]: { [set.items]: ys } };
  };
  const and = (xs: Obj[]): Obj => {
    const ys = dedupe(xs.filter((x) => !same(x, ANY)));
    if (ys.some((x) => same(x, NONE))) return NONE;
    return ys.length === 0 ? ANY : ys.length === 1 ? ys[0]! : { [set.and]: { [set.items]: ys } };
  };
  const not = (x: Obj): Obj => (same(x, ANY) ? NONE : same(x, NONE) ? ANY : { [set.not]: x });
  return { and, or, not, NONE };
}

const ids = algebra({ and: 'and_ids', or: 'or_ids', not: 'not_id', items: 'ids' });
const perms = algebra({ and: 'and_rules', or: 'or_rules', not: 'not_rule', items: 'rules' });

/** An Istio value as an Envoy StringMatcher ("*" is any non-empty value, as Istio compiles it). */
function stringMatcher(v: string, ignoreCase = false): Obj {
  const p = istioPattern(v);
  const m: Obj = p.kind === 'presence' ? { safe_regex: { regex: '.+' } } : { [p.kind]: p.text };
  return ignoreCase ? { ...m, ignore_case: true } : m;
}

function headerMatcher(name: string, v: string, ignoreCase = false): Obj {
  if (istioPattern(v).kind === 'presence') return { name, present_match: true };
  return { name, string_match: stringMatcher(v, ignoreCase) };
}

function cidrRange(block: string): Obj {
  const [address, len] = block.split('/') as [string, string | undefined];
  return { address_prefix: address, prefix_len: { value: len !== undefined ? Number(len) : isIPv4(address) ? 32 : 128 } };
}

/** A yes-list and a not-list over one compiler of values. */
function both<T>(a: { or: (xs: Obj[]) => Obj; not: (x: Obj) => Obj }, yes: readonly T[] | undefined, no: readonly T[] | undefined, one: (v: T) => Obj): Obj[] {
  const out: Obj[] = [];
  if (yes) out.push(a.or(yes.map(one)));
  if (no) out.push(a.not(a.or(no.map(one))));
  return out;
}

interface Ctx {
  port: number;
  /** known pods with their principal */
  pods: { ip: string; namespace: string; principal: string }[];
}

/** The addresses of the known pods whose attribute matches the Istio value. */
function podsMatching(ctx: Ctx, attr: 'namespace' | 'principal', v: string): Obj {
  const p = istioPattern(v);
  const hit = ctx.pods.filter((pod) => {
    const x = pod[attr];
    return p.kind === 'presence' || (p.kind === 'exact' ? x === p.text : p.kind === 'prefix' ? x.startsWith(p.text) : x.endsWith(p.text));
  });
  return ids.or(hit.map((pod) => ({ direct_remote_ip: cidrRange(pod.ip) })));
}

function sourcePrincipal(ctx: Ctx, s: AuthzSource): Obj {
  return ids.and([
    ...both(ids, s.principals, s.notPrincipals, (v) => podsMatching(ctx, 'principal', v)),
    ...both(ids, s.namespaces, s.notNamespaces, (v) => podsMatching(ctx, 'namespace', v)),
    ...both(ids, s.ipBlocks, s.notIpBlocks, (v) => ({ direct_remote_ip: cidrRange(v) })),
  ]);
}

const portIs = (ctx: Ctx) => (p: number): Obj => (p === ctx.port ? ANY : perms.NONE);

function operationPermission(ctx: Ctx, o: AuthzOperation): Obj {
  return perms.and([
    ...both(perms, o.methods, o.notMethods, (v) => ({ header: headerMatcher(':method', v) })),
    ...both(perms, o.paths, o.notPaths, (v) => ({ url_path: { path: stringMatcher(v) } })),
    ...both(perms, o.hosts, o.notHosts, (v) => ({ header: headerMatcher(':authority', v, true) })),
    ...both(perms, o.ports, o.notPorts, portIs(ctx)),
  ]);
}

/** A `when` condition: on the caller (principal side) or on the destination (permission side). */
function condition(ctx: Ctx, c: AuthzCondition): { principal?: Obj; permission?: Obj } {
  switch (c.key) {
    case 'request.headers': return { principal: ids.and(both(ids, c.values, c.notValues, (v) => ({ header: headerMatcher(c.header!, v) }))) };
    case 'source.ip': return { principal: ids.and(both(ids, c.values, c.notValues, (v) => ({ direct_remote_ip: cidrRange(v) }))) };
    case 'source.namespace': return { principal: ids.and(both(ids, c.values, c.notValues, (v) => podsMatching(ctx, 'namespace', v))) };
    case 'source.principal': return { principal: ids.and(both(ids, c.values, c.notValues, (v) => podsMatching(ctx, 'principal', v))) };
    case 'destination.port': return { permission: perms.and(both(perms, c.values?.map(Number), c.notValues?.map(Number), portIs(ctx))) };
  }
}

/** One rule as an RBAC Policy: permissions and principals are one entry each (ANDed inside). */
function rulePolicy(ctx: Ctx, r: AuthzRule): Obj {
  const when = (r.when ?? []).map((c) => condition(ctx, c));
  const permission = perms.and([
    ...(r.to ? [perms.or(r.to.map((o) => operationPermission(ctx, o)))] : []),
    ...when.flatMap((w) => (w.permission ? [w.permission] : [])),
  ]);
  const principal = ids.and([
    ...(r.from ? [ids.or(r.from.map((s) => sourcePrincipal(ctx, s)))] : []),
    ...when.flatMap((w) => (w.principal ? [w.principal] : [])),
  ]);
  return { permissions: [permission], principals: [principal] };
}

function compilePolicies(ctx: Ctx, ps: readonly AuthorizationPolicy[]): Map<string, Obj> {
  const out = new Map<string, Obj>();
  for (const p of ps) p.rules.forEach((r, i) => out.set(rbacPolicyKey(policyName(p), i), rulePolicy(ctx, r)));
  return out;
}

function filter(action: 'ALLOW' | 'DENY' | 'LOG', policies: Map<string, Obj>): RbacHttpFilter {
  return { name: RBAC_FILTER_NAME, typed_config: { '@type': RBAC_TYPE_URL, rules: { action, policies: Object.fromEntries(policies) } } };
}

/** Adds b's entries to a; a key compiled differently for another backend port gets "@<port>". */
function merge(a: Map<string, Obj>, b: Map<string, Obj>, port: number): void {
  for (const [k, v] of b) {
    const have = a.get(k);
    if (!have) a.set(k, v);
    else if (!same(have, v) && !a.has(`${k}@${port}`)) a.set(`${k}@${port}`, v);
  }
}

/** Compiles the policies that apply to the service's backends into RBAC HTTP filters. */
export function compileRbac(input: RbacInput): RbacOutput {
  const notes: string[] = [];
  const pods = input.pods.map((p) => ({ ip: p.ip, namespace: p.namespace, principal: principalOf(p.namespace, p.serviceAccount) }));
  const audit = new Map<string, Obj>();
  const deny = new Map<string, Obj>();
  const allows: { policies: Map<string, Obj> }[] = [];
  const signatures = new Map<string, string[]>();
  let unrestricted = false;
  for (const b of input.backends) {
    const ctx: Ctx = { port: b.port, pods };
    const applying = policiesFor(input.policies, b);
    const of = (a: AuthorizationAction) => applying.filter((p) => p.action === a);
    merge(audit, compilePolicies(ctx, of('AUDIT')), b.port);
    merge(deny, compilePolicies(ctx, of('DENY')), b.port);
    const allow = of('ALLOW');
    if (allow.length === 0) unrestricted = true;
    else {
      const compiled = compilePolicies(ctx, allow);
      if (!allows.some((x) => same(Object.fromEntries(x.policies), Object.fromEntries(compiled)))) allows.push({ policies: compiled });
    }
    const sig = applying.map(policyName).join(', ') || 'none';
    signatures.set(sig, [...(signatures.get(sig) ?? []), workloadName(b)]);
    const portDependent = applying.some((p) => p.rules.some((r) => r.to?.some((o) => o.ports || o.notPorts) || r.when?.some((c) => c.key === 'destination.port')));
    if (portDependent && new Set(input.backends.map((x) => x.port)).size > 1 && !notes.some((n) => n.startsWith('backends serve'))) {
      notes.push('backends serve on different ports: rules on ports were decided per backend port');
    }
  }
  if (signatures.size > 1) {
    const list = [...signatures].map(([sig, ws]) => `${ws.join(', ')}: ${sig}`).join('; ');
    notes.push(`the backends differ in the policies that apply to them (${list}); a request must be allowed for every backend: `
      + `every backend's DENY rules are in the DENY filter and ${allows.length} ALLOW filter(s) must all pass`
      + (unrestricted && allows.length > 0 ? ', so backends without an ALLOW policy are restricted as much as the others' : ''));
  }
  const filters: RbacHttpFilter[] = [];
  if (audit.size > 0) filters.push(filter('LOG', audit));
  if (deny.size > 0) filters.push(filter('DENY', deny));
  for (const a of allows) filters.push(filter('ALLOW', a.policies));
  return { filters, notes };
}
