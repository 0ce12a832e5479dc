import t from 'tap';
import { parseManifestFile } from '../../mesh-agent/cluster/manifest-parser.js';
import type { AuthorizationPolicy, Namespace, NetworkPolicy, Pod, Service } from '../../mesh-agent/cluster/model.js';
import { checkClusterOf, checkPolicy, queryFrom, type CheckQuery } from '../../policies/policy-check.js';
import { POLICY_SHOP } from '../fixtures/policy-shop.js';

const parsed = parseManifestFile('shop.yaml', POLICY_SHOP);
const of = (k: string) => parsed.objects.filter((o) => o.kind === k);
const cluster = checkClusterOf({
  namespaces: of('Namespace') as Namespace[], pods: (of('Pod') as Pod[]).map((p, i) => ({ ...p, ip: `198.18.0.${10 + i}` })), services: of('Service') as Service[],
  networkPolicies: of('NetworkPolicy') as NetworkPolicy[], authorizationPolicies: of('AuthorizationPolicy') as AuthorizationPolicy[],
});

t.test('the manifests parse, policies included', async (t) => {
  t.same(parsed.errors, []);
  t.same(parsed.objects.map((o) => o.kind).filter((k) => k.endsWith('Policy')), ['NetworkPolicy', 'NetworkPolicy', 'AuthorizationPolicy', 'AuthorizationPolicy']);
  t.equal((of('Pod') as Pod[]).find((p) => p.meta.name === 'frontend')!.serviceAccount, 'frontend', 'spec.serviceAccountName');
  t.equal((of('Pod') as Pod[]).find((p) => p.meta.name === 'web-1')!.serviceAccount, 'default', 'the default service account');
});

const cases: { name: string; q: CheckQuery; allowed: boolean; layer: string; reason: RegExp }[] = [
  { name: 'client-ingress-allowed (a selected pod, the allowed peer)', q: { from: 'shop/frontend', to: 'shop/catalog:80' }, allowed: true, layer: 'kernel-l4',
    reason: /^ALLOWED: shop\/catalog-1: allowed in the kernel \(L4\): .*allowed by shop\/frontend-to-catalog ingress\[0\].*no AuthorizationPolicy applies to shop\/catalog-1$/ },
  { name: 'all backends judged: one of two denied', q: { from: 'other/client', to: 'shop/catalog:80' }, allowed: false, layer: 'kernel-l4',
    reason: /^DENIED \(for 1 of 2 backends\): shop\/catalog-2: denied in the kernel \(L4\): .*selected for ingress by shop\/frontend-to-catalog/ },
  { name: 'an address outside the mesh', q: { from: '203.0.113.9', to: 'shop/catalog-1:8080' }, allowed: false, layer: 'kernel-l4',
    reason: /denied in the kernel \(L4\): .*shop\/frontend-to-catalog, shop\/other-to-catalog-1/ },
  { name: 'l7 allow GET /public', q: { from: 'shop/frontend', to: 'shop/web:80', method: 'GET', path: '/public/index.html' }, allowed: true, layer: 'proxy-l7',
    reason: /^ALLOWED: allowed in the node proxy \(L7\): allowed by shop\/allow-public-get \(ALLOW rule 0\)$/ },
  { name: 'l7 DENY beats ALLOW', q: { from: 'shop/frontend', to: 'shop/web:80', method: 'POST', path: '/public/form' }, allowed: false, layer: 'proxy-l7',
    reason: /^DENIED: denied \(403\) in the node proxy \(L7\): denied by shop\/deny-post \(DENY rule 0\)$/ },
  { name: 'l7 no ALLOW rule matches another namespace', q: { from: 'other/client', to: 'shop/web:80', method: 'GET', path: '/public/x' }, allowed: false, layer: 'proxy-l7',
    reason: /no ALLOW policy of shop\/web-1 matches \(shop\/allow-public-get\)/ },
  { name: 'l7 policies apply but no request given', q: { from: 'shop/frontend', to: 'shop/web:80' }, allowed: true, layer: 'kernel-l4',
    reason: /the HTTP verdict needs --method and --path \(shop\/allow-public-get, shop\/deny-post apply\)/ },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const r = checkPolicy(cluster, c.q);
    if (r.kind !== 'verdict') {
      t.fail(`a problem: ${r.reason}`);
      return;
    }
    t.equal(r.allowed, c.allowed, 'the verdict');
    t.equal(r.layer, c.layer, 'the layer that decided');
    t.match(r.reason, c.reason, r.reason);
  });
}

t.test('a bad question names the field', async (t) => {
  t.match(checkPolicy(cluster, { from: 'shop/nope', to: 'shop/web:80' }), { kind: 'problem', field: 'from', reason: 'no pod shop/nope' });
  t.match(checkPolicy(cluster, { from: 'shop/frontend', to: 'shop/web:81' }), { kind: 'problem', field: 'port', reason: 'service shop/web has no TCP port 81 (it has 80/TCP)' });
  t.match(checkPolicy(cluster, { from: 'shop/frontend', to: 'shop/web' }), { kind: 'problem', field: 'to', reason: /must be namespace\/name:port/ });
  t.match(checkPolicy(cluster, { from: 'shop/frontend', to: 'shop/ghost:80' }), { kind: 'problem', field: 'to', reason: 'no service or pod shop/ghost' });
  t.throws(() => queryFrom(() => undefined, []), /--from is required/);
  t.throws(() => queryFrom((n) => ({ from: 'a/b', to: 'a/c:1', method: 'GET' } as Record<string, string>)[n], []), /--method and --path go together/);
  t.throws(() => queryFrom((n) => ({ from: 'a/b', to: 'a/c:1' } as Record<string, string>)[n], ['nope']), /--header must be NAME=VALUE/);
  t.same(queryFrom((n) => ({ from: 'a/b', to: 'a/c:1', method: 'get', path: '/x' } as Record<string, string>)[n], ['X-Env=prod']),
    { from: 'a/b', to: 'a/c:1', protocol: 'TCP', method: 'GET', path: '/x', headers: { 'x-env': 'prod' } });
});
