import t from 'tap';
import { authorizeRequest, headerValue, urlPath } from '../../policies/authz-verdict.js';
import { CASES, POLICIES, WORKLOADS } from '../fixtures/authz-cases.js';

t.test('verdicts and reasons (Istio order: DENY, then ALLOW, AUDIT only reports)', async (t) => {
  for (const c of CASES) {
    const v = authorizeRequest(c.policies.map((n) => POLICIES[n]!), WORKLOADS[c.to]!, c.request);
    t.equal(v.allowed, c.allowed, `${c.name}: ${c.allowed ? 'allowed' : 'denied'} (${v.reason})`);
    t.equal(v.reason, c.reason, `${c.name}: the reason`);
    if (c.decidedBy) t.same(v.decidedBy, c.decidedBy, `${c.name}: decided by that rule`);
    if (c.audits) t.same(v.audits, c.audits, `${c.name}: the audits reported`);
    if (!v.decidedBy) t.notOk(/^(allowed|denied) by/.test(v.reason), `${c.name}: no rule named when none decided`);
  }
});

t.test('the verdict does not depend on the order policies are given in', async (t) => {
  const all = Object.values(POLICIES);
  for (const c of CASES.slice(0, 12)) {
    const a = authorizeRequest(c.policies.map((n) => POLICIES[n]!), WORKLOADS[c.to]!, c.request);
    const b = authorizeRequest(c.policies.map((n) => POLICIES[n]!).reverse(), WORKLOADS[c.to]!, c.request);
    t.same(b, a, `${c.name}: same verdict reversed`);
    if (c.policies.length === 0) t.ok(authorizeRequest(all, { namespace: 'empty', labels: {} }, c.request).allowed, 'a namespace without policies allows');
  }
});

t.test('workload without a name is described by its labels; helpers', async (t) => {
  const v = authorizeRequest([POLICIES['allow-nothing']!], { namespace: 'shop', labels: { app: 'locked' } }, CASES[0]!.request);
  t.equal(v.reason, 'no ALLOW policy of shop/{app=locked} matches (shop/allow-nothing)');
  t.equal(urlPath('/a/b?x=1#f'), '/a/b', 'query dropped');
  t.equal(urlPath('/a#f'), '/a', 'fragment dropped');
  t.equal(headerValue({ 'X-A': ['1', '2'] }, 'x-a'), '1,2', 'several values joined');
  t.equal(headerValue({ 'x-a': undefined }, 'x-a'), undefined, 'undefined is absent');
});
