import t from 'tap';
import { type RbacRequest, RbacConfigError, decide, matchedPolicies, rbacFilter } from '../../mesh-proxy/rbac.js';
import { compileRbac, rbacPolicyKey } from '../../policies/rbac-compile.js';
import { decodeResource, encodeStrict } from '../../xds/strict-encode.js';
import { CASES, PODS, POLICIES, WORKLOADS } from '../fixtures/authz-cases.js';
import { rbacRequest } from '../fixtures/rbac-interpreter.js';

const HTTP_FILTER = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter';
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';

/** A filter as mesh-proxy gets it: strictly encoded, then decoded from the wire (defaults left out). */
function fromWire(f: { name: string; typed_config: Record<string, unknown> }): Record<string, unknown> {
  return (decodeResource(HTTP_FILTER, encodeStrict(HTTP_FILTER, f)) as { typed_config: Record<string, unknown> }).typed_config;
}

const req = (more: Partial<RbacRequest> & { headers?: Record<string, string> } = {}): RbacRequest => {
  const headers = more.headers ?? {};
  return { method: 'GET', path: '/', host: 'web.shop', remoteIp: '198.18.0.10', header: (n) => headers[n], ...more };
};
const cfg = (action: string | undefined, policies: Record<string, unknown>) => ({ '@type': RBAC, rules: { ...(action && { action }), policies } });
const pol = (permissions: unknown[], principals: unknown[] = [{ any: true }]) => ({ permissions, principals });

t.test('the shared case table: compiled, over the wire, run by the engine, gives the evaluator\'s verdict and deciding rule', async (t) => {
  for (const c of CASES) {
    const backend = { ...WORKLOADS[c.to]!, port: c.request.port };
    const out = compileRbac({ backends: [backend], policies: c.policies.map((n) => POLICIES[n]!), pods: PODS });
    const d = decide(out.filters.map((f) => rbacFilter(fromWire(f))), rbacRequest(c.request));
    t.equal(d.allowed, c.allowed, `${c.name}: ${c.allowed ? 'allowed' : 'denied'}`);
    if (c.decidedBy) t.equal(d.policy, rbacPolicyKey(c.decidedBy.policy, c.decidedBy.rule), `${c.name}: the deciding policy is the evaluator's rule`);
    if (!c.allowed) t.equal(d.deniedBy, c.reason.startsWith('denied by') ? 'DENY' : 'ALLOW', `${c.name}: stopped by the ${c.reason.startsWith('denied by') ? 'DENY filter' : 'ALLOW filter, nothing matched'}`);
    if (!c.allowed && !c.reason.startsWith('denied by')) t.equal(d.policy, undefined, `${c.name}: no policy decided (Envoy: "none")`);
    if (c.audits) t.same(d.logged, c.audits.map((a) => rbacPolicyKey(a.policy, a.rule)), `${c.name}: logged`);
  }
});

t.test('Envoy semantics of the filter chain', async (t) => {
  const post = { header: { name: ':method', string_match: { exact: 'POST' } } };
  const admin = { url_path: { path: { prefix: '/admin' } } };
  const log = rbacFilter(cfg('LOG', { 'a/log/rule-0': pol([admin]) }));
  const deny = rbacFilter(cfg('DENY', { 'a/deny/rule-0': pol([post]) }));
  const allow = rbacFilter(cfg(undefined, { 'a/b/rule-1': pol([{ any: true }], [{ header: { name: 'x-user', present_match: true } }]), 'a/b/rule-0': pol([admin]) }));
  t.equal(allow.action, 'ALLOW', 'no action: ALLOW (the proto default)');
  t.same(allow.policies.map((p) => p.name), ['a/b/rule-0', 'a/b/rule-1'], 'policies in name order');
  const cases: [string, RbacRequest, { allowed: boolean; policy?: string; deniedBy?: string; logged: string[] }][] = [
    ['LOG matches, ALLOW matches', req({ path: '/admin/x' }), { allowed: true, policy: 'a/b/rule-0', logged: ['a/log/rule-0'] }],
    ['DENY first', req({ method: 'POST', path: '/admin' }), { allowed: false, policy: 'a/deny/rule-0', deniedBy: 'DENY', logged: ['a/log/rule-0'] }],
    ['ALLOW without a match', req({ path: '/x' }), { allowed: false, deniedBy: 'ALLOW', logged: [] }],
    ['two ALLOW policies match: the first by name reports', req({ path: '/admin', headers: { 'x-user': 'a' } }), { allowed: true, policy: 'a/b/rule-0', logged: ['a/log/rule-0'] }],
  ];
  for (const [name, r, want] of cases) t.same(decide([log, deny, allow], r), want, name);
  t.same(decide([log], req({ path: '/admin' })), { allowed: true, logged: ['a/log/rule-0'] }, 'LOG alone never blocks');
  t.same(decide([], req({ method: 'POST' })), { allowed: true, logged: [] }, 'no filters: allowed');
  t.same(decide([rbacFilter({ '@type': RBAC })], req()), { allowed: true, logged: [] }, 'a filter without rules does nothing');
  t.same(decide([rbacFilter(cfg('ALLOW', {}))], req()), { allowed: false, deniedBy: 'ALLOW', logged: [] }, 'ALLOW with no policies denies everything');
});

t.test('matchers: what the request looks like to them', async (t) => {
  const one = (perm: unknown, principal: unknown = { any: true }) => rbacFilter(cfg('ALLOW', { p: pol([perm], [principal]) }));
  const cidr = (a: string, n: number) => ({ direct_remote_ip: { address_prefix: a, prefix_len: { value: n } } });
  const cases: [string, ReturnType<typeof one>, RbacRequest, boolean][] = [
    ['url_path ignores the query', one({ url_path: { path: { exact: '/a' } } }), req({ path: '/a?x=1' }), true],
    ['url_path ignores a fragment', one({ url_path: { path: { exact: '/a' } } }), req({ path: '/a#f' }), true],
    [':path header keeps the query', one({ header: { name: ':path', string_match: { exact: '/a' } } }), req({ path: '/a?x=1' }), false],
    [':authority with ignore_case', one({ header: { name: ':authority', string_match: { prefix: 'API.', ignore_case: true } } }), req({ host: 'api.shop' }), true],
    [':authority case-sensitive', one({ header: { name: ':authority', string_match: { prefix: 'API.' } } }), req({ host: 'api.shop' }), false],
    ['suffix', one({ url_path: { path: { suffix: '.css' } } }), req({ path: '/x/a.css' }), true],
    ['contains', one({ url_path: { path: { contains: 'mid' } } }), req({ path: '/amidb' }), true],
    ['safe_regex is a full match', one({ url_path: { path: { safe_regex: { regex: 'a+' } } } }), req({ path: '/aa' }), false],
    ['safe_regex .+', one({ url_path: { path: { safe_regex: { regex: '.+' } } } }), req({ path: '/aa' }), true],
    ['a header matcher on a missing header', one({ header: { name: 'x-a', string_match: { exact: '' } } }), req(), false],
    ['present_match', one({ any: true }, { header: { name: 'x-a', present_match: true } }), req({ headers: { 'x-a': '' } }), true],
    ['invert_match', one({ header: { name: ':method', string_match: { exact: 'GET' }, invert_match: true } }), req(), false],
    ['direct_remote_ip /32', one({ any: true }, cidr('198.18.0.10', 32)), req(), true],
    ['direct_remote_ip other address', one({ any: true }, cidr('198.18.0.11', 32)), req(), false],
    ['an IPv4-mapped address is IPv4', one({ any: true }, cidr('198.18.0.0', 16)), req({ remoteIp: '::ffff:198.18.3.4' }), true],
    ['remote_ip /0 matches any IPv4', one({ any: true }, { remote_ip: { address_prefix: '0.0.0.0', prefix_len: {} } }), req(), true],
    ['an IPv6 block never matches IPv4', one({ any: true }, cidr('::', 0)), req(), false],
    ['not_id', one({ any: true }, { not_id: cidr('198.18.0.10', 32) }), req(), false],
    ['and_rules', one({ and_rules: { rules: [{ any: true }, { not_rule: { any: true } }] } }), req(), false],
    ['or_ids', one({ any: true }, { or_ids: { ids: [cidr('10.0.0.0', 8), cidr('198.18.0.0', 24)] } }), req(), true],
  ];
  for (const [name, f, r, want] of cases) t.equal(matchedPolicies(f, r).length === 1, want, `${name}: ${want ? 'matches' : 'does not match'}`);
});

t.test('what the engine does not run is refused, naming the field', async (t) => {
  const refuse: [string, Record<string, unknown>, string, RegExp][] = [
    ['an mTLS principal', cfg('ALLOW', { p: pol([{ any: true }], [{ authenticated: { principal_name: { exact: 'x' } } }]) }), 'rules.policies["p"].principals[0].authenticated', /principal not supported/],
    ['a destination port', cfg('ALLOW', { p: pol([{ or_rules: { rules: [{ any: true }, { destination_port: 80 }] } }]) }), 'rules.policies["p"].permissions[0].or_rules.rules[1].destination_port', /permission not supported/],
    ['a CEL condition', cfg('ALLOW', { p: { ...pol([{ any: true }]), condition: {} } }), 'rules.policies["p"].condition', /permissions and principals only/],
    ['shadow rules', { '@type': RBAC, shadow_rules: {} }, 'shadow_rules', /no shadow rules/],
    ['the matcher API', { '@type': RBAC, matcher: {} }, 'matcher', /not supported/],
    ['a bad regex', cfg('DENY', { p: pol([{ url_path: { path: { safe_regex: { regex: '(' } } } }]) }), 'rules.policies["p"].permissions[0].url_path.path.safe_regex.regex', /invalid regex/],
    ['a string matcher it does not know', cfg('DENY', { p: pol([{ url_path: { path: { glob: '*' } } }]) }), 'rules.policies["p"].permissions[0].url_path.path.glob', /string matcher not supported/],
    ['an empty set', cfg('DENY', { p: pol([{ or_rules: { rules: [] } }]) }), 'rules.policies["p"].permissions[0].or_rules.rules', /at least one/],
    ['no principals', cfg('DENY', { p: { permissions: [{ any: true }] } }), 'rules.policies["p"].principals', /at least one/],
    ['an unknown action', cfg('AUDIT', {}), 'rules.action', /ALLOW, DENY or LOG/],
    ['a bad address', cfg('DENY', { p: pol([{ any: true }], [{ direct_remote_ip: { address_prefix: 'x', prefix_len: { value: 8 } } }]) }), 'rules.policies["p"].principals[0].direct_remote_ip', /not an IPv4 or IPv6 address/],
  ];
  for (const [name, c, field, reason] of refuse) {
    let err: unknown;
    try { rbacFilter(c); } catch (e) { err = e; }
    t.ok(err instanceof RbacConfigError, `${name}: refused`);
    t.equal((err as RbacConfigError | undefined)?.field, field, `${name}: the field`);
    t.match((err as Error | undefined)?.message, reason, `${name}: the reason (${(err as Error | undefined)?.message})`);
  }
});
