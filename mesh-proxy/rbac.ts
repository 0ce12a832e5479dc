/**
 * Envoy's RBAC HTTP filter (envoy.extensions.filters.http.rbac.v3.RBAC) as
 * mesh-proxy runs it, for the subset policies/rbac-compile.ts emits:
 * permissions any / and_rules / or_rules / not_rule / header / url_path,
 * principals any / and_ids / or_ids / not_id / direct_remote_ip /
 * remote_ip / header; string matchers exact / prefix / suffix / contains /
 * safe_regex (a full match; ignore_case does not apply to it, as in Envoy).
 * A filter is compiled once, when its listener arrives; anything outside
 * the subset is refused with the field that holds it (the listener is
 * NACKed and the last good configuration keeps enforcing).
 *
 * Envoy's semantics: a policy matches when some permission and some
 * principal match. A filter with action ALLOW lets a request through when
 * some policy matches, DENY stops it when some policy matches, LOG never
 * stops it (its matches are recorded). Filters run in order; the first that
 * stops the request decides: 403 "RBAC: access denied". The policy a filter
 * reports is its first match by name (Envoy keeps policies in a sorted map).
 * Pure.
 */
import { type Cidr, type IpAddress, cidrContains, parseCidr, parseIp } from '../policies/cidr.js';

/** The filter's name in an HttpConnectionManager's http_filters. */
export const RBAC_FILTER = 'envoy.filters.http.rbac';
/** The type URL of its typed_config. */
export const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
/** What a denied request is answered (Envoy's local reply). */
export const RBAC_DENIED_STATUS = 403;
export const RBAC_DENIED_BODY = 'RBAC: access denied';

/** A configuration outside the subset, or malformed: `field` is the path to it inside the filter's typed_config. */
export class RbacConfigError extends Error {
  readonly field: string;
  constructor(field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.field = field;
  }
}

/** One request as the RBAC filter sees it. */
export interface RbacRequest {
  method: string;
  /** :path as sent, query included (url_path matchers see it without query and fragment) */
  path: string;
  /** :authority (the Host header) */
  host: string;
  /** a request header by lower-case name; several values joined with "," */
  header(name: string): string | undefined;
  /** the downstream remote address as the proxy sees it */
  remoteIp: string;
}

export type RbacAction = 'ALLOW' | 'DENY' | 'LOG';

/** A request prepared once for every matcher. */
interface Prepared {
  r: RbacRequest;
  ip: IpAddress | undefined;
  urlPath: string;
}

type Test = (p: Prepared) => boolean;

/** A compiled filter: its action and its policies in name order. */
export interface RbacFilter {
  action: RbacAction;
  policies: { name: string; matches: Test }[];
}

/** The outcome of a listener's RBAC filters for one request. */
export interface RbacDecision {
  allowed: boolean;
  /**
   * The policy that decided, as Envoy reports it: for a denied request the
   * DENY filter's matched policy, or undefined when an ALLOW filter matched
   * nothing (Envoy: "none"); for an allowed one the last ALLOW filter's
   * matched policy, if any.
   */
  policy?: string;
  /** the action of the filter that stopped the request */
  deniedBy?: 'ALLOW' | 'DENY';
  /** the policies the LOG filters matched, in filter then name order */
  logged: string[];
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function objAt(v: unknown, field: string): Obj {
  if (!isObj(v)) throw new RbacConfigError(field, `expected an object, got ${JSON.stringify(v)}`);
  return v;
}

function listAt(v: unknown, field: string): unknown[] {
  if (!Array.isArray(v)) throw new RbacConfigError(field, `expected a list, got ${JSON.stringify(v)}`);
  return v;
}

/** The one key of a oneof-like object (other keys with the listed names are options of it). */
function kindOf(o: Obj, field: string, options: readonly string[] = []): string {
  const keys = Object.keys(o).filter((k) => !options.includes(k));
  if (keys.length !== 1) throw new RbacConfigError(field, `expected exactly one matcher, got ${keys.length === 0 ? 'none' : keys.join(', ')}`);
  return keys[0]!;
}

function stringAt(v: unknown, field: string): string {
  if (typeof v !== 'string') throw new RbacConfigError(field, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

/** envoy.type.matcher.v3.StringMatcher */
function stringMatcher(m: Obj, field: string): (v: string) => boolean {
  const kind = kindOf(m, field, ['ignore_case']);
  const ic = m.ignore_case === true;
  const low = (s: string) => (ic ? s.toLowerCase() : s);
  switch (kind) {
    case 'exact': { const x = low(stringAt(m.exact, `${field}.exact`)); return (v) => low(v) === x; }
    case 'prefix': { const x = low(stringAt(m.prefix, `${field}.prefix`)); return (v) => low(v).startsWith(x); }
    case 'suffix': { const x = low(stringAt(m.suffix, `${field}.suffix`)); return (v) => low(v).endsWith(x); }
    case 'contains': { const x = low(stringAt(m.contains, `${field}.contains`)); return (v) => low(v).includes(x); }
    case 'safe_regex': {
      const src = stringAt(objAt(m.safe_regex, `${field}.safe_regex`).regex, `${field}.safe_regex.regex`);
      let re: RegExp;
      try {
        re = new RegExp(`^(?:${src})$`, 'u');
      } catch (err) {
        throw new RbacConfigError(`${field}.safe_regex.regex`, `invalid regex ${JSON.stringify(src)}: ${(err as Error).message}`);
      }
      return (v) => re.test(v);
    }
    default: throw new RbacConfigError(`${field}.${kind}`, 'string matcher not supported by mesh-proxy (exact, prefix, suffix, contains, safe_regex)');
  }
}

/** The value of a header as Envoy's RBAC header matcher sees it (pseudo-headers included). */
function headerOf(p: Prepared, name: string): string | undefined {
  switch (name) {
    case ':method': return p.r.method;
    case ':path': return p.r.path;
    case ':authority': case 'host': return p.r.host;
    default: return p.r.header(name);
  }
}

/** envoy.config.route.v3.HeaderMatcher: string_match or present_match, optionally inverted. */
function headerMatcher(h: Obj, field: string): Test {
  const name = stringAt(h.name, `${field}.name`).toLowerCase();
  const invert = h.invert_match === true;
  const kind = kindOf(h, field, ['name', 'invert_match']);
  let test: Test;
  if (kind === 'present_match') {
    const want = h.present_match === true;
    test = (p) => (headerOf(p, name) !== undefined) === want;
  } else if (kind === 'string_match') {
    const m = stringMatcher(objAt(h.string_match, `${field}.string_match`), `${field}.string_match`);
    test = (p) => { const v = headerOf(p, name); return v !== undefined && m(v); };
  } else {
    throw new RbacConfigError(`${field}.${kind}`, 'header matcher not supported by mesh-proxy (string_match, present_match)');
  }
  return invert ? (p) => !test(p) : test;
}

/** envoy.config.core.v3.CidrRange */
function cidrRange(c: Obj, field: string): Test {
  const address = stringAt(c.address_prefix, `${field}.address_prefix`);
  const len = Number((c.prefix_len as { value?: unknown } | undefined)?.value ?? 0);
  const block: Cidr | string = parseCidr(`${address}/${len}`);
  if (typeof block === 'string') throw new RbacConfigError(field, block);
  return (p) => p.ip !== undefined && cidrContains(block, p.ip);
}

function setOf(v: unknown, key: string, field: string, one: (x: Obj, field: string) => Test): Test[] {
  const items = listAt(objAt(v, field)[key], `${field}.${key}`);
  if (items.length === 0) throw new RbacConfigError(`${field}.${key}`, 'must have at least one entry');
  return items.map((x, i) => one(objAt(x, `${field}.${key}[${i}]`), `${field}.${key}[${i}]`));
}

/** envoy.config.rbac.v3.Permission */
function permission(p: Obj, field: string): Test {
  const kind = kindOf(p, field);
  switch (kind) {
    case 'any': return () => true;
    case 'and_rules': { const xs = setOf(p.and_rules, 'rules', `${field}.and_rules`, permission); return (q) => xs.every((x) => x(q)); }
    case 'or_rules': { const xs = setOf(p.or_rules, 'rules', `${field}.or_rules`, permission); return (q) => xs.some((x) => x(q)); }
    case 'not_rule': { const x = permission(objAt(p.not_rule, `${field}.not_rule`), `${field}.not_rule`); return (q) => !x(q); }
    case 'header': return headerMatcher(objAt(p.header, `${field}.header`), `${field}.header`);
    case 'url_path': {
      const path = objAt(objAt(p.url_path, `${field}.url_path`).path, `${field}.url_path.path`);
      const m = stringMatcher(path, `${field}.url_path.path`);
      return (q) => m(q.urlPath);
    }
    default: throw new RbacConfigError(`${field}.${kind}`, 'permission not supported by mesh-proxy (any, and_rules, or_rules, not_rule, header, url_path)');
  }
}

/** envoy.config.rbac.v3.Principal */
function principal(p: Obj, field: string): Test {
  const kind = kindOf(p, field);
  switch (kind) {
    case 'any': return () => true;
    case 'and_ids': { const xs = setOf(p.and_ids, 'ids', `${field}.and_ids`, principal); return (q) => xs.every((x) => x(q)); }
    case 'or_ids': { const xs = setOf(p.or_ids, 'ids', `${field}.or_ids`, principal); return (q) => xs.some((x) => x(q)); }
    case 'not_id': { const x = principal(objAt(p.not_id, `${field}.not_id`), `${field}.not_id`); return (q) => !x(q); }
    // no proxy in front of the node proxy: the direct peer is the remote address
    case 'direct_remote_ip': case 'remote_ip': return cidrRange(objAt(p[kind], `${field}.${kind}`), `${field}.${kind}`);
    case 'header': return headerMatcher(objAt(p.header, `${field}.header`), `${field}.header`);
    default: throw new RbacConfigError(`${field}.${kind}`, 'principal not supported by mesh-proxy (any, and_ids, or_ids, not_id, direct_remote_ip, remote_ip, header)');
  }
}

const ACTIONS: readonly RbacAction[] = ['ALLOW', 'DENY', 'LOG'];

/**
 * Compiles a filter's typed_config (as decoded from the wire: proto field
 * names, defaults left out). Throws RbacConfigError naming the field.
 */
export function rbacFilter(config: Obj): RbacFilter {
  for (const k of Object.keys(config)) {
    if (k === '@type' || k === 'rules' || k === 'rules_stat_prefix' || k === 'shadow_rules_stat_prefix' || k === 'track_per_rule_stats') continue;
    throw new RbacConfigError(k, 'not supported by mesh-proxy (rules only: no shadow rules, no matcher API)');
  }
  // no rules: Envoy's filter does nothing
  if (config.rules === undefined) return { action: 'LOG', policies: [] };
  const rules = objAt(config.rules, 'rules');
  for (const k of Object.keys(rules)) if (k !== 'action' && k !== 'policies') throw new RbacConfigError(`rules.${k}`, 'not supported by mesh-proxy (action and policies only)');
  const action = (rules.action ?? 'ALLOW') as RbacAction;
  if (!ACTIONS.includes(action)) throw new RbacConfigError('rules.action', `expected ALLOW, DENY or LOG, got ${JSON.stringify(rules.action)}`);
  const policies = Object.entries(rules.policies === undefined ? {} : objAt(rules.policies, 'rules.policies'))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, v]) => {
      const field = `rules.policies[${JSON.stringify(name)}]`;
      const pol = objAt(v, field);
      for (const k of Object.keys(pol)) if (k !== 'permissions' && k !== 'principals') throw new RbacConfigError(`${field}.${k}`, 'not supported by mesh-proxy (permissions and principals only)');
      const perms = listAt(pol.permissions ?? [], `${field}.permissions`).map((x, i) => permission(objAt(x, `${field}.permissions[${i}]`), `${field}.permissions[${i}]`));
      const ids = listAt(pol.principals ?? [], `${field}.principals`).map((x, i) => principal(objAt(x, `${field}.principals[${i}]`), `${field}.principals[${i}]`));
      if (perms.length === 0) throw new RbacConfigError(`${field}.permissions`, 'must have at least one entry');
      if (ids.length === 0) throw new RbacConfigError(`${field}.principals`, 'must have at least one entry');
      return { name, matches: (p: Prepared) => perms.some((x) => x(p)) && ids.some((x) => x(p)) };
    });
  return { action, policies };
}

function prepare(r: RbacRequest): Prepared {
  const i = r.path.search(/[?#]/);
  return { r, ip: parseIp(r.remoteIp.replace(/^::ffff:(?=\d+\.)/, '')), urlPath: i < 0 ? r.path : r.path.slice(0, i) };
}

/** The names of the filter's policies that match the request, in name order. */
export function matchedPolicies(f: RbacFilter, r: RbacRequest): string[] {
  const p = prepare(r);
  return f.policies.filter((x) => x.matches(p)).map((x) => x.name);
}

/** Runs a listener's filters in order; the first that stops the request decides. */
export function decide(filters: readonly RbacFilter[], r: RbacRequest): RbacDecision {
  const p = prepare(r);
  const logged: string[] = [];
  let policy: string | undefined;
  for (const f of filters) {
    if (f.action === 'LOG') {
      for (const x of f.policies) if (x.matches(p)) logged.push(x.name);
      continue;
    }
    const hit = f.policies.find((x) => x.matches(p))?.name;
    if (f.action === 'DENY' && hit !== undefined) return { allowed: false, policy: hit, deniedBy: 'DENY', logged };
    if (f.action === 'ALLOW') {
      if (hit === undefined) return { allowed: false, deniedBy: 'ALLOW', logged };
      policy = hit;
    }
  }
  return { allowed: true, ...(policy !== undefined && { policy }), logged };
}
