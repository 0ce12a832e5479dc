import * as grpc from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Snapshot, TYPE_URL } from '../../xds/snapshot.js';
import { decodeResource } from '../../xds/strict-encode.js';
import { AdsTestClient, adsFixture } from '../fixtures/ads-client.js';
import { cluster, endpoints, listener, route } from '../fixtures/xds-resources.js';

function snapshot(v2Addr = '198.18.0.3', split: [string, number][] = [['web-v1', 90], ['web-v2', 10]]): Snapshot {
  return Snapshot.create({
    clusters: [cluster('web-v1'), cluster('web-v2')],
    endpoints: [endpoints('web-v1', [['198.18.0.2', 8080]]), endpoints('web-v2', [[v2Addr, 8080]])],
    listeners: [listener('web', 15001, 'web')],
    routes: [route('web', split)],
  });
}

const setup = (t: Test) => adsFixture(t, (port, node) => new AdsTestClient(port, node));

t.test('state of the world: request, response, ACK', async (t) => {
  const { cache, server, client } = await setup(t);
  const snap = snapshot();
  cache.setSnapshot('node-1', snap);
  const c = client();
  c.request(TYPE_URL.cluster);
  const r1 = await c.next(1);
  t.equal(r1.type_url, TYPE_URL.cluster);
  t.equal(r1.version_info, snap.versions.cluster, 'the wildcard version is the snapshot\'s');
  t.same(r1.resources.map((r) => decodeResource('envoy.config.cluster.v3.Cluster', r.value).name), ['web-v1', 'web-v2']);
  c.request(TYPE_URL.cluster, { version: r1.version_info, nonce: r1.nonce });
  c.request(TYPE_URL.endpoint, { names: ['web-v2'] });
  const r2 = await c.next(2);
  t.equal(r2.resources.length, 1, 'named subscription: only what was asked for');
  t.equal(decodeResource('envoy.config.endpoint.v3.ClusterLoadAssignment', r2.resources[0]!.value).cluster_name, 'web-v2');
  t.not(r2.nonce, r1.nonce, 'every response has a fresh nonce');
  c.request(TYPE_URL.endpoint, { names: ['web-v2'], version: r2.version_info, nonce: r2.nonce });
  await sleep(100);
  t.equal(c.responses.length, 2, 'an ACK is not answered');
  const [p] = server.proxies();
  t.equal(p?.nodeId, 'node-1');
  t.equal(p?.types.cluster?.ackedVersion, snap.versions.cluster, 'status shows the ACKed cluster version');
  t.equal(p?.types.endpoint?.ackedVersion, r2.version_info, 'and the ACKed endpoint version');
  const stats = server.stats();
  t.match(stats, { streamsOpened: 1, streamsOpen: 1 }, 'stats count the stream');
  t.match(stats.types.cluster, { responses: 1, resources: 2, acks: 1, nacks: 0 }, 'and the cluster response and its ACK');
  t.match(stats.types.endpoint, { responses: 1, resources: 1, acks: 1, nacks: 0 }, 'and the endpoint response and its ACK');
  t.ok(stats.types.cluster.bytes > 0 && stats.types.route.bytes === 0, 'and the bytes sent per type');
});

t.test('a NACK keeps the version from being sent again; a new snapshot is sent', async (t) => {
  const { cache, server, client } = await setup(t);
  cache.setSnapshot('node-1', snapshot());
  const c = client();
  c.request(TYPE_URL.route, { names: ['web'] });
  const r1 = await c.next(1);
  c.request(TYPE_URL.route, { names: ['web'], version: '', nonce: r1.nonce, error: 'weights must sum to 100' });
  await sleep(150);
  t.equal(c.responses.length, 1, 'the rejected version is not re-sent');
  t.match(server.nacks(), [{ nodeId: 'node-1', typeUrl: TYPE_URL.route, version: r1.version_info, error: 'weights must sum to 100' }], 'the NACK is recorded');
  t.equal(server.proxies()[0]?.types.route?.lastNack?.error, 'weights must sum to 100', 'and shown in status');
  t.match(server.stats().types.route, { responses: 1, acks: 0, nacks: 1 }, 'and counted');
  cache.setSnapshot('node-1', snapshot('198.18.0.3', [['web-v1', 50], ['web-v2', 50]]));
  const r2 = await c.next(2);
  t.not(r2.version_info, r1.version_info, 'a changed route is pushed');
});

t.test('stale nonces are ignored; pushes go clusters, endpoints, listeners, routes', async (t) => {
  const { cache, client } = await setup(t);
  cache.setSnapshot('node-1', snapshot());
  const c = client();
  c.request(TYPE_URL.route, { names: ['web'] });
  c.request(TYPE_URL.listener);
  c.request(TYPE_URL.endpoint, { names: ['web-v1', 'web-v2'] });
  c.request(TYPE_URL.cluster);
  const first = await Promise.all([1, 2, 3, 4].map((n) => c.next(n)));
  for (const r of first) c.request(r.type_url, { names: r.type_url === TYPE_URL.route ? ['web'] : r.type_url === TYPE_URL.endpoint ? ['web-v1', 'web-v2'] : [], version: r.version_info, nonce: r.nonce });
  await sleep(50);
  c.request(TYPE_URL.route, { names: ['web', 'other'], nonce: 'not-the-last-nonce' });
  await sleep(100);
  t.equal(c.responses.length, 4, 'a request with a stale nonce changes nothing');
  // everything changes at once: one push per type, in make-before-break order
  cache.setSnapshot('node-1', Snapshot.create({
    clusters: [cluster('web-v1'), cluster('web-v3')],
    endpoints: [endpoints('web-v1', [['198.18.0.4', 8080]]), endpoints('web-v3', [['198.18.0.9', 8080]])],
    listeners: [listener('web', 15011, 'web')],
    routes: [route('web', [['web-v1', 50], ['web-v3', 50]])],
  }));
  await c.next(8);
  t.same(c.responses.slice(4).map((r) => r.type_url), [TYPE_URL.cluster, TYPE_URL.endpoint, TYPE_URL.listener, TYPE_URL.route], 'clusters, endpoints, listeners, routes');
  t.same(c.responses[5]!.resources.map((r) => decodeResource('envoy.config.endpoint.v3.ClusterLoadAssignment', r.value).cluster_name), ['web-v1'],
    'web-v2 is gone (the clusters say so), so only web-v1 of the names asked for is sent');
});

t.test('routes and endpoints: a push carries only what changed; listeners and clusters always carry all', async (t) => {
  const { cache, client } = await setup(t);
  cache.setSnapshot('node-1', snapshot());
  const c = client();
  c.request(TYPE_URL.cluster);
  c.request(TYPE_URL.endpoint, { names: ['web-v1', 'web-v2'] });
  const first = await Promise.all([1, 2].map((n) => c.next(n)));
  for (const r of first) c.request(r.type_url, { names: r.type_url === TYPE_URL.endpoint ? ['web-v1', 'web-v2'] : [], version: r.version_info, nonce: r.nonce });
  t.equal(first[1]!.resources.length, 2, 'the first endpoint response carries every name asked for');
  await sleep(50);
  const moved = snapshot('198.18.0.8');
  cache.setSnapshot('node-1', moved);
  const r3 = await c.next(3);
  t.equal(r3.type_url, TYPE_URL.endpoint, 'only endpoints changed, so only endpoints are pushed');
  t.same(r3.resources.map((r) => decodeResource('envoy.config.endpoint.v3.ClusterLoadAssignment', r.value)),
    [{ cluster_name: 'web-v2', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '198.18.0.8', port_value: 8080 } } } }] }] }],
    'and only the endpoint set that moved');
  t.equal(r3.version_info, moved.versions.endpoint, 'with the snapshot\'s endpoint version');
  c.request(TYPE_URL.endpoint, { names: ['web-v1', 'web-v2'], version: r3.version_info, nonce: r3.nonce });
  cache.setSnapshot('node-1', Snapshot.create({
    clusters: [cluster('web-v1')],
    endpoints: [endpoints('web-v1', [['198.18.0.2', 8080]])],
  }));
  const r4 = await c.next(4);
  t.equal(r4.type_url, TYPE_URL.cluster);
  t.same(r4.resources.map((r) => decodeResource('envoy.config.cluster.v3.Cluster', r.value).name), ['web-v1'], 'a cluster removed: the cluster response lists every cluster left');
  await sleep(100);
  t.equal(c.responses.length, 4, 'web-v1\'s endpoints did not change, so no endpoint response follows');
  c.request(TYPE_URL.endpoint, { names: ['web-v1'], version: r3.version_info, nonce: r3.nonce });
  const r5 = await c.next(5);
  t.equal(r5.resources.length, 1, 'a changed subscription is answered with everything it names');
});

t.test('bad streams end with a clear status; other streams keep serving', async (t) => {
  const { cache, client } = await setup(t);
  cache.setSnapshot('node-1', snapshot());
  const good = client();
  good.request(TYPE_URL.cluster);
  await good.next(1);
  const bad = client();
  bad.request('type.googleapis.com/envoy.config.nope.v3.Nope');
  const s = await bad.ended();
  t.equal(s.code, grpc.status.INVALID_ARGUMENT);
  t.match(s.details, /unknown type_url "type.googleapis.com\/envoy.config.nope.v3.Nope"/);
  const anon = client();
  anon.request(TYPE_URL.cluster, { node: false });
  t.match((await anon.ended()).details, /must carry node.id/);
  cache.setSnapshot('node-1', snapshot('198.18.0.7'));
  good.request(TYPE_URL.endpoint, { names: ['web-v2'] });
  const r = await good.next(2);
  t.equal(r.type_url, TYPE_URL.endpoint, 'the good stream still serves');
});

t.test('an undecodable request ends its stream with a clear status; other streams keep serving', async (t) => {
  const { cache, port, client } = await setup(t);
  cache.setSnapshot('node-1', snapshot());
  const good = client();
  good.request(TYPE_URL.cluster);
  await good.next(1);
  // a raw client that writes bytes that are no DiscoveryRequest
  const raw = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const call = raw.makeBidiStreamRequest('/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources', (b: Buffer) => b, (b: Buffer) => b);
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  call.on('error', () => undefined);
  // type_url (field 4) says 200 bytes follow; 3 do
  call.write(Buffer.from([0x22, 0xc8, 0x01, 0x61, 0x62, 0x63]));
  const s = await ended;
  t.equal(s.code, grpc.status.INVALID_ARGUMENT, 'the stream ends with INVALID_ARGUMENT');
  t.equal(s.details, 'undecodable request: envoy.service.discovery.v3.DiscoveryRequest: type_url: length 200 runs past the end of its message', 'and says why');
  cache.setSnapshot('node-1', snapshot('198.18.0.7'));
  good.request(TYPE_URL.endpoint, { names: ['web-v2'] });
  t.equal((await good.next(2)).type_url, TYPE_URL.endpoint, 'the good stream still serves');
});

t.test('a client reconnecting with an old version and no nonce is answered', async (t) => {
  const { cache, client } = await setup(t);
  cache.setDefaultSnapshot(snapshot());
  const c = client('node-7');
  c.request(TYPE_URL.cluster, { version: 'some-old-version' });
  const r = await c.next(1);
  t.equal(r.resources.length, 2, 'the default snapshot serves a node without one of its own');
});
