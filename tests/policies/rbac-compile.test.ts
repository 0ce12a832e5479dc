import t, { type Test } from 'tap';
import { compileRbac, parseRbacPolicyKey, rbacPolicyKey, RBAC_TYPE_URL, type RbacHttpFilter, type RbacInput } from '../../policies/rbac-compile.js';
import { decodeResource, encodeStrict } from '../../xds/strict-encode.js';
import { CASES, PODS, POLICIES, WORKLOADS, policy, request } from '../fixtures/authz-cases.js';
import { runFilters } from '../fixtures/rbac-interpreter.js';

const HTTP_FILTER = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter';
const pick = (...names: string[]) => names.map((n) => POLICIES[n]!);
const compile = (policies: string[], backends: RbacInput['backends'] = [WORKLOADS.web!]) => compileRbac({ backends, policies: pick(...policies), pods: PODS });
const rulesOf = (f: RbacHttpFilter | undefined) => f?.typed_config.rules;

/** Every filter strictly encoded as an HttpFilter (Envoy's protos and validate rules), decoded back equal. */
function assertEncodes(t: Test, filters: RbacHttpFilter[], what: string): void {
  filters.forEach((f, i) => {
    let bytes: Uint8Array | undefined;
    t.doesNotThrow(() => { bytes = encodeStrict(HTTP_FILTER, f); }, `${what}: filter ${i} (${f.typed_config.rules.action}) encodes strictly`);
    if (!bytes) return;
    const back = decodeResource(HTTP_FILTER, bytes) as { name: string; typed_config: Record<string, unknown> };
    t.equal(back.name, 'envoy.filters.http.rbac', `${what}: filter ${i} name`);
    t.equal(back.typed_config['@type'], RBAC_TYPE_URL, `${what}: filter ${i} type`);
    const policies = Object.keys(f.typed_config.rules.policies);
    t.same(Object.keys((back.typed_config.rules as { policies?: object } | undefined)?.policies ?? {}).sort(), policies.sort(), `${what}: filter ${i} policies survive the wire`);
  });
}

t.test('compiled filters give the evaluator\'s verdict on every case, and encode strictly', async (t) => {
  for (const c of CASES) {
    const backend = { ...WORKLOADS[c.to]!, port: c.request.port };
    const out = compileRbac({ backends: [backend], policies: pick(...c.policies), pods: PODS });
    const run = runFilters(out.filters, c.request);
    t.equal(run.allowed, c.allowed, `${c.name}: the filters ${c.allowed ? 'allow' : 'deny (403)'}`);
    if (c.audits) t.same(run.logged, c.audits.map((a) => rbacPolicyKey(a.policy, a.rule)), `${c.name}: the LOG filter matches the audited rules`);
    t.same(out.notes, [], `${c.name}: one backend, no notes`);
    assertEncodes(t, out.filters, c.name);
  }
});

t.test('structure: order LOG, DENY, ALLOW; Istio matchers', async (t) => {
  t.same(compile([]), { filters: [], notes: [] }, 'no policy: no filter');
  t.same(compile(['other-ns']).filters, [], 'a policy of another namespace: no filter');

  const l7 = compile(['allow-get', 'deny-post', 'audit-admin']).filters;
  t.same(l7.map((f) => f.typed_config.rules.action), ['LOG', 'DENY', 'ALLOW'], 'AUDIT as LOG first, then DENY, then ALLOW');
  t.same(rulesOf(l7[1]), {
    action: 'DENY',
    policies: { 'shop/deny-post/rule-0': { permissions: [{ header: { name: ':method', string_match: { exact: 'POST' } } }], principals: [{ any: true }] } },
  }, 'DENY POST: a :method header matcher, any caller');
  t.same(rulesOf(l7[2]), {
    action: 'ALLOW',
    policies: {
      'shop/allow-get/rule-0': {
        permissions: [{ and_rules: { rules: [
          { or_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }, { header: { name: ':method', string_match: { exact: 'HEAD' } } }] } },
          { url_path: { path: { prefix: '/public/' } } },
        ] } }],
        principals: [{ any: true }],
      },
    },
  }, 'ALLOW GET|HEAD /public/*: methods ORed, ANDed with a url_path prefix');
  t.same(rulesOf(l7[0])?.policies, { 'shop/audit-admin/rule-0': { permissions: [{ url_path: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } }, 'AUDIT rule');

  t.same(rulesOf(compile(['allow-nothing'], [WORKLOADS.locked!]).filters[0]), { action: 'ALLOW', policies: {} }, 'ALLOW without rules: an ALLOW filter with no policies (denies all)');
  t.same(rulesOf(compile(['allow-any']).filters[0])?.policies, { 'shop/allow-any/rule-0': { permissions: [{ any: true }], principals: [{ any: true }] } }, 'rule {}: any/any');

  t.same(rulesOf(compile(['allow-front']).filters[0])?.policies['shop/allow-front/rule-0']?.principals,
    [{ direct_remote_ip: { address_prefix: '198.18.0.10', prefix_len: { value: 32 } } }], 'a principal: the source address of its pod');
  t.same(rulesOf(compile(['allow-dev-ns']).filters[0])?.policies['shop/allow-dev-ns/rule-0']?.principals,
    [{ direct_remote_ip: { address_prefix: '198.18.0.30', prefix_len: { value: 32 } } }], 'a namespace prefix: the addresses of its pods');
  t.same(rulesOf(compile(['allow-net'], [WORKLOADS.api!]).filters[0])?.policies['shop/allow-net/rule-0']?.principals, [{ and_ids: { ids: [
    { direct_remote_ip: { address_prefix: '198.18.0.0', prefix_len: { value: 24 } } },
    { not_id: { direct_remote_ip: { address_prefix: '198.18.0.30', prefix_len: { value: 32 } } } },
  ] } }], 'ipBlocks and notIpBlocks');
  t.same(rulesOf(compile(['deny-writes'], [WORKLOADS.api!]).filters[0])?.policies['shop/deny-writes/rule-0']?.permissions, [{ and_rules: { rules: [
    { not_rule: { or_rules: { rules: [{ header: { name: ':method', string_match: { exact: 'GET' } } }, { header: { name: ':method', string_match: { exact: 'HEAD' } } }] } } },
    { not_rule: { url_path: { path: { exact: '/healthz' } } } },
  ] } }], 'notMethods and notPaths negate');
  t.same(rulesOf(compile(['allow-header'], [WORKLOADS.api!]).filters[0])?.policies['shop/allow-header/rule-0']?.principals, [{ and_ids: { ids: [
    { or_ids: { ids: [{ header: { name: 'x-user', string_match: { exact: 'alice' } } }, { header: { name: 'x-user', string_match: { prefix: 'adm' } } }] } },
    { not_id: { header: { name: 'x-user', string_match: { exact: 'admin-revoked' } } } },
  ] } }], 'when request.headers: header matchers, lower-case name');
  const port = (p: number) => rulesOf(compile(['allow-port'], [{ ...WORKLOADS.api!, port: p }]).filters[0])?.policies['shop/allow-port/rule-0']?.permissions;
  t.same(port(8080), [{ header: { name: ':authority', string_match: { prefix: 'api.shop', ignore_case: true } } }], 'ports decided for the backend port; hosts ignore case');
  t.same(port(9090), [{ not_rule: { any: true } }], 'a port the backend does not serve: the rule matches nothing');
});

t.test('values with no known pod, presence and suffix values compile to valid matchers', async (t) => {
  const p = policy('shop', 'odd', { rules: [
    { from: [{ source: { principals: ['cluster.local/ns/nowhere/sa/x'] } }] },
    { from: [{ source: { notNamespaces: ['nowhere'] } }], to: [{ operation: { paths: ['*'], hosts: ['*'], methods: ['*'] } }] },
    { to: [{ operation: { paths: ['*.css'] } }], when: [{ key: 'request.headers[x-a]', values: ['*'] }, { key: 'source.principal', values: ['*'] }, { key: 'destination.port', notValues: ['8080'] }] },
  ] });
  const out = compileRbac({ backends: [WORKLOADS.web!], policies: [p], pods: PODS });
  const pol = out.filters[0]!.typed_config.rules.policies;
  t.same(pol['shop/odd/rule-0']!.principals, [{ not_id: { any: true } }], 'a principal no pod has: matches nothing (never an empty or_ids)');
  t.same(pol['shop/odd/rule-1']!.principals, [{ any: true }], 'not a namespace no pod is in: any caller');
  t.same(pol['shop/odd/rule-1']!.permissions, [{ and_rules: { rules: [
    { header: { name: ':method', present_match: true } },
    { url_path: { path: { safe_regex: { regex: '.+' } } } },
    { header: { name: ':authority', present_match: true } },
  ] } }], '"*": presence');
  t.same(pol['shop/odd/rule-2']!.permissions, [{ not_rule: { any: true } }], 'notValues of destination.port holding the backend port: nothing');
  assertEncodes(t, out.filters, 'odd values');
  t.throws(() => encodeStrict(HTTP_FILTER, { name: 'envoy.filters.http.rbac', typed_config: { '@type': RBAC_TYPE_URL, rules: { policies: { x: { permissions: [{ any: true }], principals: [{ or_ids: { ids: [] } }] } } } } }),
    /ids/, 'the strict encoder does refuse an empty set (so the check above can fail)');
  const star = compileRbac({ backends: [WORKLOADS.web!], policies: [p], pods: PODS });
  t.same(runFilters(star.filters, request('198.18.0.10', 'GET', '/a.css', { headers: { 'x-a': '' }, port: 9090 })).allowed, true, 'rule 2 port decided statically at 8080 does not match; rule 1 does');
});

t.test('backends that differ in their policies: every backend must allow', async (t) => {
  const v2 = { namespace: 'shop', name: 'web-2', labels: { app: 'web', track: 'canary' }, port: 8080 };
  const canary = policy('shop', 'canary-front', { selector: { matchLabels: { track: 'canary' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/front'] } }] }] });
  const canaryDeny = policy('shop', 'canary-deny-delete', { selector: { matchLabels: { track: 'canary' } }, action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] });
  const out = compileRbac({ backends: [WORKLOADS.web!, v2], policies: [...pick('allow-get', 'deny-post'), canary, canaryDeny], pods: PODS });
  t.same(out.filters.map((f) => [f.typed_config.rules.action, Object.keys(f.typed_config.rules.policies)]), [
    ['DENY', ['shop/deny-post/rule-0', 'shop/canary-deny-delete/rule-0']],
    ['ALLOW', ['shop/allow-get/rule-0']],
    ['ALLOW', ['shop/allow-get/rule-0', 'shop/canary-front/rule-0']],
  ], 'the DENY rules of both backends, one ALLOW filter per distinct ALLOW set');
  t.equal(out.notes.length, 1, 'one note');
  t.match(out.notes[0], /backends differ in the policies .*shop\/web-1: shop\/allow-get, shop\/deny-post; shop\/web-2: .*shop\/canary-front.*must be allowed for every backend.*2 ALLOW filter/, 'the note names the backends and their policies');
  t.notOk(runFilters(out.filters, request('198.18.0.10', 'GET', '/private')).allowed, 'front GET /private: web-2 allows it (canary-front), web-1 does not → denied');
  t.ok(runFilters(out.filters, request('198.18.0.10', 'GET', '/public/a')).allowed, 'front GET /public: allowed by both');
  t.notOk(runFilters(out.filters, request('198.18.0.10', 'DELETE', '/public/a')).allowed, 'DELETE: denied by the canary DENY');
  assertEncodes(t, out.filters, 'two backends');

  const open = compileRbac({ backends: [{ ...WORKLOADS.web!, labels: { app: 'other' } }, WORKLOADS.web!], policies: pick('allow-get'), pods: PODS });
  t.equal(open.filters.length, 1, 'a backend without ALLOW policies adds no filter…');
  t.match(open.notes[0], /backends without an ALLOW policy are restricted as much as the others/, '…and the note says it is restricted too');

  const same = compileRbac({ backends: [WORKLOADS.web!, { ...WORKLOADS.web!, name: 'web-3' }], policies: pick('allow-get', 'deny-post'), pods: PODS });
  t.same([same.filters.length, same.notes], [2, []], 'backends with the same policies: one DENY and one ALLOW filter, no note');
});

t.test('policy keys name the policy and rule', async (t) => {
  t.equal(rbacPolicyKey('shop/deny-post', 3), 'shop/deny-post/rule-3');
  t.same(parseRbacPolicyKey('shop/deny-post/rule-3'), { policy: 'shop/deny-post', rule: 3 });
  t.same(parseRbacPolicyKey('shop/deny-post/rule-3@9090'), { policy: 'shop/deny-post', rule: 3 }, 'a per-port variant');
  t.equal(parseRbacPolicyKey('nonsense'), undefined);
});
