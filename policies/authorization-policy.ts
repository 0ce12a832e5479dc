/**
 * HTTP authorization in the schema of Istio's AuthorizationPolicy
 * (security.istio.io/v1): which workloads a policy selects, its action
 * (ALLOW, DENY, AUDIT) and its rules (`from` sources, `to` operations,
 * `when` conditions). The parser checks what Istio checks, and refuses with
 * the field what sockmesh cannot enforce (CUSTOM, JWT fields, targetRefs);
 * unknown fields are refused too, since a misspelled `notPaths` would
 * silently widen a policy.
 *
 * Istio semantics the parsed form keeps (evaluated in authz-verdict.ts,
 * compiled in rbac-compile.ts): an ALLOW policy with no rules matches
 * nothing; a rule `{}` matches every request; within a rule `from`, `to`
 * and every `when` entry are ANDed; the entries of `from` (and of `to`) are
 * ORed; the fields of a source or an operation are ANDed; the values of a
 * list are ORed; the not-fields negate.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { ProblemSink } from '../mesh-agent/cluster/problem-sink.js';
import type { Labels, ObjectMeta } from '../mesh-agent/cluster/object-meta.js';
import { parseCidr } from './cidr.js';
import { wildcardProblem } from './istio-match.js';

/** What a policy does when one of its rules matches. */
export type AuthorizationAction = 'ALLOW' | 'DENY' | 'AUDIT';

/**
 * Who sends the request. Every field present must match (AND); a list
 * matches when any of its values does (OR); a `not` list matches when none
 * of its values does. A field left out matches every caller.
 */
export interface AuthzSource {
  /** callers' identities, `cluster.local/ns/<ns>/sa/<serviceaccount>`, Istio patterns */
  principals?: string[];
  notPrincipals?: string[];
  /** callers' namespaces, Istio patterns */
  namespaces?: string[];
  notNamespaces?: string[];
  /** callers' addresses: IPs or CIDRs, as written */
  ipBlocks?: string[];
  notIpBlocks?: string[];
}

/** What the request asks for; same AND / OR / not rules as `AuthzSource`. */
export interface AuthzOperation {
  /** HTTP methods, Istio patterns */
  methods?: string[];
  notMethods?: string[];
  /** URL paths without the query string, Istio patterns */
  paths?: string[];
  notPaths?: string[];
  /** the destination workload's port */
  ports?: number[];
  notPorts?: number[];
  /** the Host (:authority) header, Istio patterns, case-insensitive */
  hosts?: string[];
  notHosts?: string[];
}

/** The `when` keys sockmesh evaluates. */
export type AuthzConditionKey = 'request.headers' | 'source.ip' | 'source.namespace' | 'source.principal' | 'destination.port';

/** One `when` entry: the key's value must match one of `values` and none of `notValues`. */
export interface AuthzCondition {
  key: AuthzConditionKey;
  /** for request.headers[<name>]: the header name, lower-cased */
  header?: string;
  values?: string[];
  notValues?: string[];
}

/**
 * One rule. It matches when some entry of `from` matches (or `from` is left
 * out) AND some entry of `to` matches (or `to` is left out) AND every `when`
 * condition holds. A rule with nothing in it matches every request.
 */
export interface AuthzRule {
  from?: AuthzSource[];
  to?: AuthzOperation[];
  when?: AuthzCondition[];
}

/** A parsed AuthorizationPolicy. */
export interface AuthorizationPolicy {
  kind: 'AuthorizationPolicy';
  meta: ObjectMeta;
  /** spec.selector.matchLabels; undefined: every workload of the policy's namespace */
  selector?: Labels;
  /** spec.action; ALLOW when left out */
  action: AuthorizationAction;
  /** spec.rules; empty: matches nothing (an ALLOW policy then denies every request to its workloads) */
  rules: AuthzRule[];
}

/** The trust domain of the principals sockmesh gives its workloads. */
export const TRUST_DOMAIN = 'cluster.local';

/** A workload's principal, as Istio writes it: cluster.local/ns/<namespace>/sa/<serviceAccount>. */
export function principalOf(namespace: string, serviceAccount: string): string {
  return `${TRUST_DOMAIN}/ns/${namespace}/sa/${serviceAccount}`;
}

/** "namespace/name" of a policy, as verdicts and compiled rules name it. */
export function policyName(p: AuthorizationPolicy): string {
  return `${p.meta.namespace}/${p.meta.name}`;
}

/** A workload as policies see it. */
export interface AuthzWorkload {
  namespace: string;
  labels: Labels;
  /** for messages only (a pod's name) */
  name?: string;
}

/** Whether the policy applies to the workload: same namespace, and every selector label on the workload. */
export function policyApplies(p: AuthorizationPolicy, w: AuthzWorkload): boolean {
  if (p.meta.namespace !== w.namespace) return false;
  if (!p.selector) return true;
  return Object.entries(p.selector).every(([k, v]) => w.labels[k] === v);
}

/** The policies that apply to the workload, ordered by namespace/name (a stable order for reports). */
export function policiesFor(policies: readonly AuthorizationPolicy[], w: AuthzWorkload): AuthorizationPolicy[] {
  return policies.filter((p) => policyApplies(p, w)).sort((a, b) => (policyName(a) < policyName(b) ? -1 : policyName(a) > policyName(b) ? 1 : 0));
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const METHOD = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

const NO_JWT = 'is not supported by sockmesh: it has no request authentication (JWT)';
const DIRECT = 'is not supported by sockmesh: it sees the caller directly, use ipBlocks / source.ip';

/** The caller's address: an IP or a CIDR. Returns the reason when it is neither. */
export function ipBlockProblem(v: string): string | undefined {
  if (!v.includes('/')) return isIPv4(v) || isIPv6(v) ? undefined : `must be an IP address or a CIDR (e.g. "10.0.0.0/8"), got ${JSON.stringify(v)}`;
  const c = parseCidr(v);
  return typeof c === 'string' ? c : undefined;
}

/** A port given as a string "1"–"65535", as Istio's schema has it; the reason when it is not one. */
function portProblem(v: unknown): string | undefined {
  if (typeof v === 'number') return `must be a port written as a string (e.g. "${v}"), got the number ${v}`;
  if (typeof v !== 'string' || !/^[0-9]{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65535) return `must be a port 1-65535 (as a string), got ${JSON.stringify(v)}`;
  return undefined;
}

function unknownFields(p: ProblemSink, o: Obj, at: string, known: readonly string[], refused: Record<string, string> = {}): void {
  for (const k of Object.keys(o)) {
    const prefix = at ? `${at}.` : '';
    if (refused[k]) p.add(`${prefix}${k}`, refused[k]!);
    else if (!known.includes(k)) p.add(`${prefix}${k}`, `unknown field (${known.join(', ')} are known)`);
  }
}

/** A list of strings: when present, non-empty, every value checked. */
function stringList(p: ProblemSink, v: unknown, at: string, check: (s: string) => string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) {
    p.add(at, `must be a list of strings, got ${JSON.stringify(v)}`);
    return undefined;
  }
  if (v.length === 0) {
    p.add(at, 'must list at least one value (leave the field out to match everything)');
    return undefined;
  }
  const out: string[] = [];
  v.forEach((s: unknown, i: number) => {
    if (typeof s !== 'string') return p.add(`${at}[${i}]`, `must be a string, got ${JSON.stringify(s)}`);
    const bad = check(s);
    if (bad) return p.add(`${at}[${i}]`, bad);
    out.push(s);
  });
  return out;
}

const patternOk = (s: string) => wildcardProblem(s);
const pathOk = (s: string) => {
  if (/\{\*\*?\}/.test(s)) return `${JSON.stringify(s)}: path templates ({*}, {**}) are not supported by sockmesh`;
  return wildcardProblem(s) ?? (s.startsWith('/') || s.startsWith('*') ? undefined : `must start with "/" (or "*" for a suffix match), got ${JSON.stringify(s)}`);
};
const methodOk = (s: string) => wildcardProblem(s) ?? (s === '*' || METHOD.test(s.replace(/^\*|\*$/g, '')) ? undefined : `must be an HTTP method such as "GET", got ${JSON.stringify(s)}`);
const ipOk = (s: string) => ipBlockProblem(s);

function portList(p: ProblemSink, v: unknown, at: string): number[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0) {
    p.add(at, Array.isArray(v) ? 'must list at least one port (leave the field out to match every port)' : `must be a list of ports as strings, got ${JSON.stringify(v)}`);
    return undefined;
  }
  const out: number[] = [];
  v.forEach((x: unknown, i: number) => {
    const bad = portProblem(x);
    if (bad) return p.add(`${at}[${i}]`, bad);
    out.push(Number(x));
  });
  return out;
}

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks'] as const;
const OPERATION_FIELDS = ['methods', 'notMethods', 'paths', 'notPaths', 'ports', 'notPorts', 'hosts', 'notHosts'] as const;

function source(p: ProblemSink, v: unknown, at: string): AuthzSource | undefined {
  if (!isObj(v)) {
    p.add(at, v === undefined ? 'required (who the rule is about)' : 'must be a map');
    return undefined;
  }
  unknownFields(p, v, at, SOURCE_FIELDS, {
    requestPrincipals: `${NO_JWT}; use principals`, notRequestPrincipals: `${NO_JWT}; use notPrincipals`,
    remoteIpBlocks: DIRECT, notRemoteIpBlocks: DIRECT,
    serviceAccounts: 'is not supported by sockmesh; use principals (cluster.local/ns/<ns>/sa/<serviceaccount>)',
    notServiceAccounts: 'is not supported by sockmesh; use notPrincipals (cluster.local/ns/<ns>/sa/<serviceaccount>)',
  });
  const out: AuthzSource = {};
  for (const f of SOURCE_FIELDS) {
    const list = stringList(p, v[f], `${at}.${f}`, f.toLowerCase().includes('ipblocks') ? ipOk : patternOk);
    if (list) out[f] = list;
  }
  if (Object.keys(v).length === 0) p.add(at, 'must not be empty: name principals, namespaces or ipBlocks (leave `from` out to match every caller)');
  return out;
}

function operation(p: ProblemSink, v: unknown, at: string): AuthzOperation | undefined {
  if (!isObj(v)) {
    p.add(at, v === undefined ? 'required (what the rule is about)' : 'must be a map');
    return undefined;
  }
  unknownFields(p, v, at, OPERATION_FIELDS);
  const out: AuthzOperation = {};
  for (const f of ['methods', 'notMethods'] as const) {
    const l = stringList(p, v[f], `${at}.${f}`, methodOk);
    if (l) out[f] = l;
  }
  for (const f of ['paths', 'notPaths'] as const) {
    const l = stringList(p, v[f], `${at}.${f}`, pathOk);
    if (l) out[f] = l;
  }
  for (const f of ['hosts', 'notHosts'] as const) {
    const l = stringList(p, v[f], `${at}.${f}`, patternOk);
    if (l) out[f] = l.map((h) => h.toLowerCase());
  }
  for (const f of ['ports', 'notPorts'] as const) {
    const l = portList(p, v[f], `${at}.${f}`);
    if (l) out[f] = l;
  }
  if (Object.keys(v).length === 0) p.add(at, 'must not be empty: name methods, paths, ports or hosts (leave `to` out to match every request)');
  return out;
}

const SUPPORTED_KEYS = 'request.headers[<name>], source.ip, source.namespace, source.principal, destination.port';

function condition(p: ProblemSink, v: unknown, at: string): AuthzCondition | undefined {
  if (!isObj(v)) {
    p.add(at, 'must be a map with key and values or notValues');
    return undefined;
  }
  unknownFields(p, v, at, ['key', 'values', 'notValues']);
  const raw = v.key;
  if (typeof raw !== 'string' || raw === '') {
    p.add(`${at}.key`, `required: one of ${SUPPORTED_KEYS}`);
    return undefined;
  }
  let key: AuthzConditionKey;
  let header: string | undefined;
  const hm = /^request\.headers\[(.*)\]$/.exec(raw);
  if (hm) {
    if (!HEADER_NAME.test(hm[1]!)) {
      p.add(`${at}.key`, `${JSON.stringify(raw)}: the header name must be a token such as "x-user", got ${JSON.stringify(hm[1])}`);
      return undefined;
    }
    key = 'request.headers';
    header = hm[1]!.toLowerCase();
  } else if (raw === 'source.ip' || raw === 'source.namespace' || raw === 'source.principal' || raw === 'destination.port') {
    key = raw;
  } else {
    const why = raw.startsWith('request.auth.') ? NO_JWT
      : raw === 'remote.ip' ? DIRECT
      : `is not supported by sockmesh (supported: ${SUPPORTED_KEYS})`;
    p.add(`${at}.key`, `${JSON.stringify(raw)} ${why}`);
    return undefined;
  }
  const check = key === 'source.ip' ? ipOk : key === 'destination.port' ? (s: string) => portProblem(s) : patternOk;
  const out: AuthzCondition = { key, ...(header !== undefined && { header }) };
  for (const f of ['values', 'notValues'] as const) {
    const l = stringList(p, v[f], `${at}.${f}`, check);
    if (l) out[f] = l;
  }
  if (v.values === undefined && v.notValues === undefined) p.add(at, `${raw}: needs values or notValues (at least one)`);
  return out;
}

function entries<T>(p: ProblemSink, v: unknown, at: string, what: string, parse: (x: unknown, at: string) => T | undefined): T[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0) {
    p.add(at, Array.isArray(v) ? `must not be empty (leave it out to match ${what})` : 'must be a list');
    return undefined;
  }
  const out: T[] = [];
  v.forEach((x: unknown, i: number) => {
    const r = parse(x, `${at}[${i}]`);
    if (r) out.push(r);
  });
  return out;
}

function rule(p: ProblemSink, r: unknown, at: string): AuthzRule | undefined {
  if (!isObj(r)) {
    p.add(at, 'must be a map (with from, to and when; {} matches every request)');
    return undefined;
  }
  unknownFields(p, r, at, ['from', 'to', 'when']);
  const out: AuthzRule = {};
  const from = entries(p, r.from, `${at}.from`, 'every caller', (x, a) => {
    if (!isObj(x)) return void p.add(a, 'must be a map with source');
    unknownFields(p, x, a, ['source']);
    return source(p, x.source, `${a}.source`);
  });
  if (from) out.from = from;
  const to = entries(p, r.to, `${at}.to`, 'every request', (x, a) => {
    if (!isObj(x)) return void p.add(a, 'must be a map with operation');
    unknownFields(p, x, a, ['operation']);
    return operation(p, x.operation, `${a}.operation`);
  });
  if (to) out.to = to;
  const when = entries(p, r.when, `${at}.when`, 'without conditions', (x, a) => condition(p, x, a));
  if (when) out.when = when;
  return out;
}

/** Parses an AuthorizationPolicy document (its metadata already parsed). */
export function parseAuthorizationPolicy(p: ProblemSink, doc: Record<string, unknown>, meta: ObjectMeta): AuthorizationPolicy {
  const policy: AuthorizationPolicy = { kind: 'AuthorizationPolicy', meta, action: 'ALLOW', rules: [] };
  const spec = doc.spec ?? {};
  if (!isObj(spec)) {
    p.add('spec', 'must be a map');
    return policy;
  }
  unknownFields(p, spec, 'spec', ['selector', 'action', 'rules'], {
    targetRef: 'is not supported by sockmesh; select workloads with spec.selector.matchLabels',
    targetRefs: 'is not supported by sockmesh; select workloads with spec.selector.matchLabels',
    provider: 'is only for action CUSTOM, which sockmesh does not support',
  });
  if (spec.selector !== undefined) {
    const sel = spec.selector;
    if (!isObj(sel)) p.add('spec.selector', 'must be a map with matchLabels');
    else {
      unknownFields(p, sel, 'spec.selector', ['matchLabels']);
      const ml = sel.matchLabels;
      if (ml !== undefined && !isObj(ml)) p.add('spec.selector.matchLabels', 'must be a map of label names to values');
      else if (ml !== undefined) {
        const labels: Record<string, string> = {};
        for (const [k, v] of Object.entries(ml)) {
          if (!LABEL_KEY.test(k)) p.add(`spec.selector.matchLabels.${k}`, `${JSON.stringify(k)} is not a label name`);
          else if (typeof v !== 'string' || !LABEL_VALUE.test(v)) p.add(`spec.selector.matchLabels.${k}`, `must be a label value (a string of up to 63 letters, digits, "-", "_", "."), got ${JSON.stringify(v)}`);
          else labels[k] = v;
        }
        if (Object.keys(ml).length > 0) policy.selector = labels;
      }
    }
  }
  const action = spec.action ?? 'ALLOW';
  if (action === 'CUSTOM') p.add('spec.action', 'CUSTOM (an external authorizer) is not supported by sockmesh; use ALLOW, DENY or AUDIT');
  else if (action !== 'ALLOW' && action !== 'DENY' && action !== 'AUDIT') p.add('spec.action', `must be ALLOW, DENY or AUDIT, got ${JSON.stringify(action)}`);
  else policy.action = action;
  if (spec.rules !== undefined) {
    if (!Array.isArray(spec.rules)) p.add('spec.rules', 'must be a list');
    else {
      spec.rules.forEach((r: unknown, i: number) => {
        const out = rule(p, r, `spec.rules[${i}]`);
        if (out) policy.rules.push(out);
      });
    }
  }
  return policy;
}
