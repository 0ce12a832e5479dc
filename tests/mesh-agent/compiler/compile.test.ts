import t from 'tap';
import { compile, type CompileInput } from '../../../mesh-agent/compiler/compile.js';
import { FIRST_IDENTITY, IdentityAllocator } from '../../../mesh-agent/compiler/identities.js';
import { VipAllocator, inServiceNetwork } from '../../../mesh-agent/compiler/vips.js';
import { byKey, ns, pod, svc } from '../../fixtures/cluster.js';

function input(over: Partial<CompileInput> = {}): CompileInput {
  return {
    namespaces: byKey(ns('shop'), ns('legacy', false)),
    pods: byKey(
      pod('shop', 'web-1', { ip: '198.18.0.2', labels: { app: 'web' } }),
      pod('shop', 'web-2', { ip: '198.18.0.3', labels: { app: 'web' } }),
      pod('shop', 'web-3', { ip: '198.18.0.4', labels: { app: 'web' }, ready: false, phase: 'Pending' }),
      pod('shop', 'db', { ip: '198.18.0.5', annotations: { 'sockmesh.io/enabled': 'false' } }),
      pod('legacy', 'old', { ip: '198.18.0.6' }),
      pod('shop', 'far', { ip: '198.18.9.9', nodeName: 'node-b' }),
      pod('shop', 'host', { hostNetwork: true }),
      pod('ghost', 'x', { ip: '198.18.0.7' }),
    ),
    services: byKey(svc('shop', 'web'), svc('shop', 'db', { selector: { app: 'db' } })),
    nodeName: 'node-a', mode: 'local', cgroups: new Map([['shop/web-1', 4242n]]),
    identities: new IdentityAllocator(), vips: new VipAllocator(),
    ...over,
  };
}

t.test('enrollment: each pod with the reason', async (t) => {
  const d = compile(input());
  t.same(d.pods.map((p) => [p.key, p.enrolled, p.reason]), [
    ['ghost/x', false, 'namespace ghost does not exist'],
    ['legacy/old', false, 'namespace legacy is not annotated sockmesh.io/enabled: "true"'],
    ['shop/db', false, 'pod opted out (sockmesh.io/enabled: "false")'],
    ['shop/far', false, 'not on this node (on node-b)'],
    ['shop/host', false, 'host network'],
    ['shop/web-1', true, 'namespace shop is enrolled'],
    ['shop/web-2', true, 'namespace shop is enrolled'],
    ['shop/web-3', true, 'namespace shop is enrolled'],
  ]);
  t.match(Object.fromEntries(d.endpoints), { '198.18.0.2': { enrolled: true }, '198.18.0.6': { enrolled: false }, '198.18.9.9': { enrolled: false } },
    'every pod address is an endpoint, enrolled or not (identity for policy)');
  t.equal(d.endpoints.size, 7, 'the host-network pod has none');
  t.same([...d.cgroups.keys()], [4242n], 'cgroups of the pods the runtime realised');
  t.equal(d.cgroups.get(4242n)?.enrolled, true);
});

t.test('identities: one per (namespace, labels), stable, freed when unused', async (t) => {
  const identities = new IdentityAllocator();
  const d = compile(input({ identities }));
  const id = (k: string) => d.pods.find((p) => p.key === k)!.identity;
  t.equal(id('shop/web-1'), id('shop/web-2'), 'same labels, same identity');
  t.not(id('shop/web-1'), id('shop/db'));
  t.ok(d.pods.every((p) => p.identity >= FIRST_IDENTITY), 'ids start above the reserved range');
  const again = compile(input({ identities }));
  t.same(again.pods.map((p) => p.identity), d.pods.map((p) => p.identity), 'a second compile keeps every id');
  const restarted = new IdentityAllocator();
  for (const [k, v] of identities.entries()) restarted.seed(k, v);
  t.same(compile(input({ identities: restarted })).pods.map((p) => p.identity), d.pods.map((p) => p.identity), 'so does an allocator seeded from the saved ones');
  compile(input({ identities, pods: byKey(pod('shop', 'web-1', { ip: '198.18.0.2', labels: { app: 'web' } })) }));
  t.equal(identities.size, 1, 'ids of label sets no pod has are freed');
});

t.test('services: VIPs, ready backends on the target port, refusals', async (t) => {
  const vips = new VipAllocator();
  const d = compile(input({ vips }));
  const web = d.serviceViews.find((v) => v.key === 'shop/web')!;
  t.ok(web.vip && inServiceNetwork(web.vip), `web got a VIP in 198.19.0.0/16: ${web.vip}`);
  const fe = d.services.get(`${web.vip}:80`)!;
  t.same(fe.backends, [{ ip: '198.18.0.2', port: 8080 }, { ip: '198.18.0.3', port: 8080 }], 'ready pods only, on the named target port');
  t.equal(fe.anyClient, true, 'local mode: every client is translated (no kube-proxy)');
  const db = d.serviceViews.find((v) => v.key === 'shop/db')!;
  t.same(db.ports, [{ port: 80, backends: 1 }], 'an opted-out pod still backs its service');
  const again = compile(input({ vips, services: byKey(svc('shop', 'aaa'), svc('shop', 'web'), svc('shop', 'db', { selector: { app: 'db' } })) }));
  t.equal(again.serviceViews.find((v) => v.key === 'shop/web')!.vip, web.vip, 'a new service does not move an existing VIP');
  const k8s = compile(input({ mode: 'kubernetes', services: byKey(svc('shop', 'web', { clusterIP: '10.96.0.10' })) }));
  t.match(k8s.services.get('10.96.0.10:80'), { anyClient: false }, 'kubernetes mode: the cluster\'s clusterIP, enrolled clients only');
});

t.test('services that cannot be served say why', async (t) => {
  const d = compile(input({
    services: byKey(
      svc('shop', 'headless', { clusterIP: 'None' }),
      svc('shop', 'outside', { clusterIP: '10.0.0.1' }),
      svc('shop', 'first', { clusterIP: '198.19.0.9' }),
      svc('shop', 'second', { clusterIP: '198.19.0.9' }),
      svc('shop', 'udp', { ports: [{ port: 53, targetPort: 53, protocol: 'UDP' }] }),
      svc('shop', 'empty', { selector: { app: 'nobody' } }),
    ),
  }));
  const problems = Object.fromEntries(d.serviceViews.map((v) => [v.key, v.problems]));
  t.same(problems, {
    'shop/empty': [],
    'shop/first': [],
    'shop/headless': ['headless (clusterIP: None): no VIP, nothing to balance'],
    'shop/outside': ['clusterIP 10.0.0.1 is outside the local service range 198.19.0.0/16'],
    'shop/second': ['clusterIP 198.19.0.9 is already service shop/first\'s'],
    'shop/udp': ['port 53/UDP: only TCP is balanced in the kernel'],
  });
  const empty = d.serviceViews.find((v) => v.key === 'shop/empty')!;
  t.same(d.services.get(`${empty.vip}:80`)?.backends, [], 'a service without backends is kept, with none (connects are refused)');
});
