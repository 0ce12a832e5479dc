import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Snapshot, TYPE_URL } from '../../xds/snapshot.js';
import { DeltaTestClient, adsFixture } from '../fixtures/ads-client.js';
import { cluster, endpoints, listener, route } from '../fixtures/xds-resources.js';

function snapshot(clusters: string[], routeTo = clusters, v1Addr = '198.18.0.2'): Snapshot {
  return Snapshot.create({
    clusters: clusters.map(cluster),
    endpoints: clusters.map((c) => endpoints(c, [[c === 'web-v1' ? v1Addr : '198.18.0.3', 8080]])),
    listeners: [listener('web', 15001, 'web')],
    routes: [route('web', routeTo.map((c) => [c, Math.floor(100 / routeTo.length)] as [string, number]))],
  });
}

const setup = (t: Test) => adsFixture(t, (port, node) => new DeltaTestClient(port, node));

const names = (r: { resources: { name: string }[] }) => r.resources.map((x) => x.name);

t.test('delta: wildcard clusters, then only what changed, then removals', async (t) => {
  const { cache, server, client } = await setup(t);
  cache.setSnapshot('node-1', snapshot(['web-v1', 'web-v2']));
  const c = client();
  c.request(TYPE_URL.cluster);
  const r1 = await c.next(1);
  t.same(names(r1), ['web-v1', 'web-v2'], 'a wildcard subscription gets every cluster');
  t.same(r1.removed_resources, []);
  c.request(TYPE_URL.cluster, { nonce: r1.nonce });
  await sleep(50);
  t.equal(server.proxies()[0]?.protocol, 'delta');
  t.ok(server.proxies()[0]?.types.cluster?.ackedVersion, 'the ACK is recorded');
  cache.setSnapshot('node-1', Snapshot.create({
    clusters: [{ ...cluster('web-v1'), connect_timeout: { seconds: 2 } }, cluster('web-v2')],
    endpoints: [endpoints('web-v1', [['198.18.0.2', 8080]]), endpoints('web-v2', [['198.18.0.3', 8080]])],
    listeners: [listener('web', 15001, 'web')],
    routes: [route('web', [['web-v1', 50], ['web-v2', 50]])],
  }));
  const r2 = await c.next(2);
  t.same(names(r2), ['web-v1'], 'only the changed cluster is sent');
  c.request(TYPE_URL.cluster, { nonce: r2.nonce });
  cache.setSnapshot('node-1', snapshot(['web-v1']));
  const r3 = await c.next(3);
  t.same(names(r3), ['web-v1'], 'web-v1 changed back');
  const r4 = await c.next(4);
  t.same(r4.removed_resources, ['web-v2'], 'and web-v2 is removed, after the additions');
});

t.test('delta: named endpoints, unsubscribe, re-subscribe, known versions, NACK', async (t) => {
  const { cache, server, client } = await setup(t);
  const snap = snapshot(['web-v1', 'web-v2']);
  cache.setSnapshot('node-1', snap);
  const c = client();
  c.request(TYPE_URL.endpoint, { subscribe: ['web-v1'] });
  const r1 = await c.next(1);
  t.same(names(r1), ['web-v1'], 'only the subscribed name');
  c.request(TYPE_URL.endpoint, { nonce: r1.nonce, subscribe: ['web-v2'] });
  const r2 = await c.next(2);
  t.same(names(r2), ['web-v2'], 'a new subscription sends just the new name');
  c.request(TYPE_URL.endpoint, { nonce: r2.nonce, unsubscribe: ['web-v1'] });
  await sleep(100);
  t.equal(c.responses.length, 2, 'unsubscribing sends nothing');
  c.request(TYPE_URL.endpoint, { subscribe: ['web-v1'] });
  const r3 = await c.next(3);
  t.same(names(r3), ['web-v1'], 're-subscribing sends it again');
  c.request(TYPE_URL.endpoint, { nonce: r3.nonce, error: 'endpoint address rejected' });
  await sleep(50);
  t.match(server.nacks(), [{ typeUrl: TYPE_URL.endpoint, error: 'endpoint address rejected' }], 'a NACK is recorded');
  await sleep(100);
  t.equal(c.responses.length, 3, 'and the rejected resource is not sent again');

  const again = client();
  const v1 = snap.resources.endpoint.get('web-v1')!.version;
  again.request(TYPE_URL.endpoint, { subscribe: ['web-v1', 'web-v2'], initial: { 'web-v1': v1, 'web-v2': 'stale' } });
  const a1 = await again.next(1);
  t.same(names(a1), ['web-v2'], 'a reconnecting client is sent only what it does not have in the current version');
});
