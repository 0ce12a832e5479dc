import t from 'tap';
import { type AddressedPod, l7Authorization } from '../../../mesh-agent/compiler/l7-authorization.js';
import { policy } from '../../fixtures/authz-cases.js';

const PODS: AddressedPod[] = [
  { ip: '198.18.0.2', namespace: 'shop', name: 'web-1', labels: { app: 'web' }, serviceAccount: 'web' },
  { ip: '198.18.0.3', namespace: 'shop', name: 'db-1', labels: { app: 'db' }, serviceAccount: 'db' },
  { ip: '198.18.0.10', namespace: 'shop', name: 'front-1', labels: { app: 'front' }, serviceAccount: 'front' },
];
const BACKENDS: Record<string, { ip: string; port: number }[]> = {
  'shop/web:80': [{ ip: '198.18.0.2', port: 8080 }], 'shop/db:5432': [{ ip: '198.18.0.3', port: 5432 }], 'shop/ext:80': [{ ip: '203.0.113.9', port: 80 }],
};
const ports = [{ service: 'shop/web', port: 80 }, { service: 'shop/db', port: 5432 }, { service: 'shop/ext', port: 80 }];
const backends = (svc: string, port: number) => BACKENDS[`${svc}:${port}`];
const FROM_FRONT = policy('shop', 'web-from-front', { selector: { matchLabels: { app: 'web' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/front'] } }] }] });
const DENY_ALL_NS = policy('shop', 'deny-delete', { action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] });

t.test('each L7 service port gets the filters of its backends\' policies, callers by their pods\' addresses', async (t) => {
  t.same(l7Authorization({ ports, policies: [], pods: PODS, backends }), new Map(), 'no policy: no filters');
  const out = l7Authorization({ ports, policies: [FROM_FRONT], pods: PODS, backends });
  t.same([...out.keys()], ['shop/web:80'], 'only the port whose backend the policy selects');
  const web = out.get('shop/web:80')!;
  t.same(web.filters.map((f) => f.typed_config.rules.action), ['ALLOW']);
  t.same(web.filters[0]!.typed_config.rules.policies['shop/web-from-front/rule-0']?.principals, [{ direct_remote_ip: { address_prefix: '198.18.0.10', prefix_len: { value: 32 } } }], 'the principal is the front pod\'s address');
  t.same(web.notes, [], 'no notes');

  const all = l7Authorization({ ports, policies: [FROM_FRONT, DENY_ALL_NS], pods: PODS, backends });
  t.same([...all.keys()], ['shop/web:80', 'shop/db:5432', 'shop/ext:80'], 'a namespace-wide policy: every port of the namespace');
  t.same(all.get('shop/db:5432')!.filters.map((f) => f.typed_config.rules.action), ['DENY'], 'db: the DENY filter alone');
  t.match(all.get('shop/ext:80')!.notes, [/backends 203\.0\.113\.9 are no known pods: only the namespace-wide policies apply/], 'a backend that is no known pod: a note');
});
