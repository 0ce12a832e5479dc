import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { parseManifestFile } from '../../mesh-agent/cluster/manifest-parser.js';
import type { Namespace, Pod } from '../../mesh-agent/cluster/model.js';
import type { NetworkPolicy } from '../../policies/network-policy.js';
import { explainConnection } from '../../policies/network-verdict.js';
import { parsePolicyYaml } from '../fixtures/policies.js';

const dir = join(import.meta.dirname, '../../policies/examples');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
const policies = new Map<string, NetworkPolicy>();

t.test('every NetworkPolicy example parses without problems', async (t) => {
  // the folder also holds examples of other policy kinds: those have tests of their own
  for (const f of files) {
    const docs = parseAllDocuments(readFileSync(join(dir, f), 'utf8'));
    const list = Array.isArray(docs) ? docs : [docs];
    list.forEach((d, i) => {
      t.same(d.errors, [], `${f} document ${i + 1} is YAML`);
      const js = d.toJS() as { apiVersion?: unknown; kind?: unknown };
      if (js.kind !== 'NetworkPolicy') return;
      t.equal(js.apiVersion, 'networking.k8s.io/v1', `${f} document ${i + 1}: a NetworkPolicy is networking.k8s.io/v1`);
      const { policy, problems } = parsePolicyYaml(d.toString(), `${f}#${i + 1}`);
      t.same(problems, [], `${f} document ${i + 1} has no problems`);
      policies.set(`${f}#${i + 1}`, policy);
    });
  }
  t.ok(policies.size >= 5, `at least five NetworkPolicy examples, found ${policies.size}`);
});

t.test('the examples applied to examples/shop.yaml', async (t) => {
  const shop = parseManifestFile('shop.yaml', readFileSync(join(import.meta.dirname, '../../examples/shop.yaml'), 'utf8'));
  t.same(shop.errors, [], 'examples/shop.yaml parses');
  const pods = shop.objects.filter((o): o is Pod => o.kind === 'Pod')
    .map((p) => ({ namespace: p.meta.namespace, name: p.meta.name, labels: p.meta.labels, ports: p.ports }));
  const namespaces = shop.objects.filter((o): o is Namespace => o.kind === 'Namespace').map((n) => ({ name: n.meta.name, labels: n.meta.labels }));
  const world = { namespaces, pods, policies: [...policies.values()] };
  const pod = (s: string) => {
    const [namespace, name] = s.split('/') as [string, string];
    return { kind: 'pod' as const, namespace, name };
  };
  const cases: { name: string; from: string; to: string; port: number; allowed: boolean; reason: string }[] = [
    {
      name: 'the frontend reaches catalog on its named port', from: 'shop/frontend', to: 'shop/catalog-1', port: 8080, allowed: true,
      reason: 'egress: no policy selects shop/frontend for egress; ingress: allowed by shop/frontend-to-catalog ingress[0] (peer 0, port 0)',
    },
    {
      // egress allows it (8080 is in 8080-8090); the frontend's ipBlock cannot match a pod whose address is not known yet
      name: 'loadgen may dial the frontend, which does not accept it', from: 'shop/loadgen', to: 'shop/frontend', port: 8080, allowed: false,
      reason: 'ingress: denied: shop/frontend is selected for ingress by shop/deny-all-ingress, shop/from-monitoring-namespaces, shop/frontend-from-outside; none allows ingress from pod shop/loadgen on 8080/TCP',
    },
    {
      name: 'loadgen may not dial catalog on 9000 (outside its egress range)', from: 'shop/loadgen', to: 'shop/catalog-2', port: 9000, allowed: false,
      reason: 'egress: denied: shop/loadgen is selected for egress by shop/loadgen-egress; none allows egress to pod shop/catalog-2 on 9000/TCP; '
        + 'ingress: denied: shop/catalog-2 is selected for ingress by shop/deny-all-ingress, shop/from-monitoring-namespaces, shop/frontend-to-catalog; none allows ingress from pod shop/loadgen on 9000/TCP',
    },
  ];
  for (const { name, from, to, port, allowed, reason } of cases) {
    const v = explainConnection(world, { from: pod(from), to: pod(to), port });
    t.same(v.kind === 'verdict' ? { allowed: v.allowed, reason: v.reason } : v, { allowed, reason }, name);
  }
});
