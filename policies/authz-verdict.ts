/**
 * The verdict on one HTTP request to a workload under AuthorizationPolicies,
 * with the reason: Istio's order of evaluation, without a proxy. Pure: the
 * same answer the compiled Envoy RBAC filters give (rbac-compile.ts), used
 * by `mesh-agent policy check` and to explain denied requests.
 *
 * Order (Istio): any matching DENY rule denies; else, when ALLOW policies
 * apply to the workload and none of their rules matches, the request is
 * denied; else it is allowed. AUDIT rules never change the verdict; every
 * matching one is reported. A denied request is answered 403 by Envoy's
 * RBAC filter ("RBAC: access denied").
 */
import { parseCidr, parseIp, cidrContains } from './cidr.js';
import { anyMatches } from './istio-match.js';
import {
  policiesFor, policyName,
  type AuthorizationAction, type AuthorizationPolicy, type AuthzCondition, type AuthzOperation, type AuthzRule, type AuthzSource, type AuthzWorkload,
} from './authorization-policy.js';

/** One HTTP request as the node proxy sees it. */
export interface AuthzRequest {
  /** the caller, from its source address: namespace and principal when it is a known workload */
  source: { ip: string; namespace?: string; principal?: string };
  method: string;
  /** the request target; a query string is ignored for path matching */
  path: string;
  /** the Host / :authority header */
  host: string;
  /** the destination workload's port */
  port: number;
  /** request headers; names in any case, several values joined with "," */
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

/** A rule of a policy: which one decided, or which AUDIT rule matched. */
export interface AuthzRuleRef {
  /** "namespace/name" */
  policy: string;
  action: AuthorizationAction;
  /** index in spec.rules */
  rule: number;
}

/** The verdict and why. */
export interface AuthzVerdict {
  allowed: boolean;
  /** the rule that decided; undefined when no rule did (nothing applies, or no ALLOW rule matched) */
  decidedBy?: AuthzRuleRef;
  /** e.g. "denied by shop/deny-post (DENY rule 0)" */
  reason: string;
  /** every matching AUDIT rule, in policy order */
  audits: AuthzRuleRef[];
}

/** The HTTP status and body Envoy's RBAC filter answers a denied request with. */
export const RBAC_DENIED = { status: 403, body: 'RBAC: access denied' } as const;

function inBlocks(blocks: readonly string[], ip: string): boolean {
  const a = parseIp(ip);
  if (!a) return false;
  return blocks.some((b) => {
    if (!b.includes('/')) {
      const x = parseIp(b);
      return x !== undefined && x.family === a.family && x.value === a.value;
    }
    const c = parseCidr(b);
    return typeof c !== 'string' && cidrContains(c, a);
  });
}

/** A list field: absent matches everything, else some value must match; a not-list: no value may match. */
function field(yes: readonly string[] | undefined, no: readonly string[] | undefined, test: (vs: readonly string[]) => boolean): boolean {
  return (yes === undefined || test(yes)) && (no === undefined || !test(no));
}

function sourceMatches(s: AuthzSource, r: AuthzRequest): boolean {
  return field(s.principals, s.notPrincipals, (vs) => anyMatches(vs, r.source.principal))
    && field(s.namespaces, s.notNamespaces, (vs) => anyMatches(vs, r.source.namespace))
    && field(s.ipBlocks, s.notIpBlocks, (vs) => inBlocks(vs, r.source.ip));
}

/** The path without its query string or fragment, as Envoy's url_path matcher sees it. */
export function urlPath(path: string): string {
  const i = path.search(/[?#]/);
  return i < 0 ? path : path.slice(0, i);
}

function operationMatches(o: AuthzOperation, r: AuthzRequest): boolean {
  const ports = (vs: readonly number[] | undefined) => vs?.map(String);
  return field(o.methods, o.notMethods, (vs) => anyMatches(vs, r.method))
    && field(o.paths, o.notPaths, (vs) => anyMatches(vs, urlPath(r.path)))
    && field(o.hosts, o.notHosts, (vs) => anyMatches(vs, r.host, true))
    && field(ports(o.ports), ports(o.notPorts), (vs) => vs.includes(String(r.port)));
}

/** A header's value, looked up in any case; several values joined with "," (as Envoy matches them). */
export function headerValue(headers: AuthzRequest['headers'], name: string): string | undefined {
  const want = name.toLowerCase();
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== want || v === undefined) continue;
    return typeof v === 'string' ? v : v.join(',');
  }
  return undefined;
}

function conditionHolds(c: AuthzCondition, r: AuthzRequest): boolean {
  let test: (vs: readonly string[]) => boolean;
  switch (c.key) {
    case 'request.headers': test = (vs) => anyMatches(vs, headerValue(r.headers, c.header!)); break;
    case 'source.ip': test = (vs) => inBlocks(vs, r.source.ip); break;
    case 'source.namespace': test = (vs) => anyMatches(vs, r.source.namespace); break;
    case 'source.principal': test = (vs) => anyMatches(vs, r.source.principal); break;
    case 'destination.port': test = (vs) => vs.includes(String(r.port)); break;
  }
  return field(c.values, c.notValues, test);
}

/** Whether one rule matches the request (Istio: from AND to AND every when; entries of from / to ORed). */
export function ruleMatches(rule: AuthzRule, r: AuthzRequest): boolean {
  return (rule.from === undefined || rule.from.some((s) => sourceMatches(s, r)))
    && (rule.to === undefined || rule.to.some((o) => operationMatches(o, r)))
    && (rule.when === undefined || rule.when.every((c) => conditionHolds(c, r)));
}

function matching(policies: readonly AuthorizationPolicy[], r: AuthzRequest): AuthzRuleRef[] {
  return policies.flatMap((p) => p.rules.flatMap((rule, i) => (ruleMatches(rule, r) ? [{ policy: policyName(p), action: p.action, rule: i }] : [])));
}

/** "shop/web-1", or the namespace and labels when the workload has no name. */
export function workloadName(w: AuthzWorkload): string {
  if (w.name) return `${w.namespace}/${w.name}`;
  const labels = Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(',');
  return `${w.namespace}/{${labels}}`;
}

const refText = (d: AuthzRuleRef) => `${d.policy} (${d.action} rule ${d.rule})`;

/**
 * The verdict on a request to the workload under the given policies (all of
 * the cluster's; those that apply to the workload are picked here).
 */
export function authorizeRequest(policies: readonly AuthorizationPolicy[], workload: AuthzWorkload, request: AuthzRequest): AuthzVerdict {
  const applying = policiesFor(policies, workload);
  const of = (a: AuthorizationAction) => applying.filter((p) => p.action === a);
  const audits = matching(of('AUDIT'), request);
  const deny = matching(of('DENY'), request)[0];
  if (deny) return { allowed: false, decidedBy: deny, reason: `denied by ${refText(deny)}`, audits };
  const allows = of('ALLOW');
  const wl = workloadName(workload);
  if (allows.length > 0) {
    const allow = matching(allows, request)[0];
    if (allow) return { allowed: true, decidedBy: allow, reason: `allowed by ${refText(allow)}`, audits };
    return { allowed: false, reason: `no ALLOW policy of ${wl} matches (${allows.map(policyName).join(', ')})`, audits };
  }
  if (applying.length === 0) return { allowed: true, reason: `no policy applies to ${wl}`, audits };
  return { allowed: true, reason: `no ALLOW policy applies to ${wl} and no DENY rule matches (${applying.map(policyName).join(', ')})`, audits };
}
