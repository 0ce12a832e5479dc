import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import type { ObjectMeta } from '../../mesh-agent/cluster/model.js';
import { parseAuthorizationPolicy, principalOf, type AuthorizationPolicy } from '../../policies/authorization-policy.js';
import { authorizeRequest, type AuthzRequest } from '../../policies/authz-verdict.js';

const DIR = join(import.meta.dirname, '../../policies/examples');

/** Every AuthorizationPolicy document of the examples, with its problems (other kinds are skipped). */
function load(): { where: string; policy: AuthorizationPolicy; problems: string[] }[] {
  const out: { where: string; policy: AuthorizationPolicy; problems: string[] }[] = [];
  for (const file of readdirSync(DIR).filter((f) => f.endsWith('.yaml')).sort()) {
    parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).forEach((d, i) => {
      const doc = d.toJS() as Record<string, any>;
      if (doc?.kind !== 'AuthorizationPolicy') return;
      const where = `${file}#${i + 1}`;
      const problems: string[] = [];
      if (doc.apiVersion !== 'security.istio.io/v1') problems.push(`apiVersion: ${doc.apiVersion}`);
      const meta: ObjectMeta = { name: doc.metadata?.name, namespace: doc.metadata?.namespace, labels: {}, annotations: {}, source: where };
      out.push({ where, policy: parseAuthorizationPolicy({ add: (f, r) => problems.push(`${f}: ${r}`) }, doc, meta), problems });
    });
  }
  return out;
}

const examples = load();

t.test('every AuthorizationPolicy example parses cleanly', async (t) => {
  t.ok(examples.length >= 5, `found ${examples.length} AuthorizationPolicy documents`);
  for (const e of examples) t.same(e.problems, [], `${e.where} (${e.policy.meta.namespace}/${e.policy.meta.name})`);
});

t.test('the examples do what their comments say', async (t) => {
  const policies = examples.map((e) => e.policy);
  const req = (ns: string | undefined, sa: string | undefined, method: string, path: string, headers: AuthzRequest['headers'] = {}): AuthzRequest => ({
    source: { ip: '198.18.0.9', ...(ns && { namespace: ns }), ...(ns && sa && { principal: principalOf(ns, sa) }) }, method, path, host: 'x', port: 8080, headers,
  });
  const web = { namespace: 'shop', name: 'web-1', labels: { app: 'web' } };
  const payments = { namespace: 'shop', name: 'payments-1', labels: { app: 'payments' } };
  const cases: [string, typeof web, AuthzRequest, boolean, RegExp][] = [
    ['frontend reads a public page', web, req('frontend', 'default', 'GET', '/public/a'), true, /allowed by shop\/allow-public-get/],
    ['another namespace does not', web, req('dev', 'default', 'GET', '/public/a'), false, /no ALLOW policy of shop\/web-1 matches/],
    ['POST is denied', web, req('shop', 'default', 'POST', '/public/a'), false, /denied by shop\/deny-post \(DENY rule 0\)/],
    ['checkout pays with a tenant', payments, req('shop', 'checkout', 'POST', '/v1/pay', { 'x-tenant': 't1' }), true, /allowed by shop\/allow-checkout \(ALLOW rule 0\)/],
    ['without a tenant it may not', payments, req('shop', 'checkout', 'POST', '/v1/pay'), false, /no ALLOW policy of shop\/payments-1 matches/],
    ['health checks from anywhere', payments, req(undefined, undefined, 'GET', '/healthz'), true, /allowed by shop\/allow-checkout \(ALLOW rule 1\)/],
    ['vault takes nothing', { namespace: 'shop', name: 'vault-0', labels: { app: 'vault' } }, req('shop', 'checkout', 'GET', '/'), false, /no ALLOW policy of shop\/vault-0 matches \(shop\/allow-nothing\)/],
  ];
  for (const [name, w, r, allowed, reason] of cases) {
    const v = authorizeRequest(policies, w, r);
    t.equal(v.allowed, allowed, `${name}: ${v.reason}`);
    t.match(v.reason, reason, `${name}: reason`);
  }
  const admin = authorizeRequest(policies, web, req('frontend', 'default', 'GET', '/admin/x'));
  t.same(admin.audits, [{ policy: 'shop/audit-admin', action: 'AUDIT', rule: 0 }], 'an admin page is audited');
});
