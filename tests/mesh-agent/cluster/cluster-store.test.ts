/* The store: an object replaced by an equal one is no change; policies with ipBlocks (bigint addresses inside) compare too. */
import t from 'tap';
import { ClusterStore } from '../../../mesh-agent/cluster/cluster-store.js';
import { parseManifestFile } from '../../../mesh-agent/cluster/manifest-parser.js';

const policy = (cidr: string) => parseManifestFile('p.yaml', `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: from-block, namespace: shop }
spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: ${cidr} } }] }] }
`).objects;

t.test('a NetworkPolicy with an ipBlock: the same version is no change, another one is', async (t) => {
  const store = new ClusterStore();
  const changes: number[] = [];
  store.onChange((c) => changes.push(c.revision));
  store.replace('m', policy('10.0.0.0/8'));
  t.equal(changes.length, 1, 'added');
  store.replace('m', policy('10.0.0.0/8'));
  t.equal(changes.length, 1, 'the same policy read again: no change');
  store.upsert('k', policy('10.0.0.0/16')[0]!);
  t.equal(changes.length, 2, 'another cidr: a change');
  t.equal(store.networkPolicies().get('shop/from-block')?.ingress[0]?.peers[0]?.kind, 'ipBlock');
});
