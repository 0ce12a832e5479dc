import t from 'tap';
import { PUSH_ORDER, Snapshot, TYPE_URL } from '../../xds/snapshot.js';
import { cluster, endpoints, listener, route } from '../fixtures/xds-resources.js';

const input = () => ({
  clusters: [cluster('web-v1'), cluster('web-v2')],
  endpoints: [endpoints('web-v1', [['198.18.0.2', 8080]]), endpoints('web-v2', [['198.18.0.3', 8080]])],
  listeners: [listener('web', 15001, 'web')],
  routes: [route('web', [['web-v1', 90], ['web-v2', 10]])],
});

t.test('a consistent snapshot: encoded once, versioned per resource and per type', async (t) => {
  const s = Snapshot.create(input());
  t.same([...s.resources.cluster.keys()], ['web-v1', 'web-v2']);
  t.equal(s.byTypeUrl(TYPE_URL.endpoint)?.get('web-v2')?.any.type_url, TYPE_URL.endpoint);
  t.equal(s.byTypeUrl('type.googleapis.com/envoy.config.core.v3.Node'), undefined);
  t.same(PUSH_ORDER, ['cluster', 'endpoint', 'listener', 'route'], 'clusters, then endpoints, listeners, routes');
  const again = Snapshot.create(input());
  t.same(again.versions, s.versions, 'the same input gives the same versions');
  const moved = input();
  moved.endpoints[1] = endpoints('web-v2', [['198.18.0.4', 8080]]);
  const m = Snapshot.create(moved);
  t.not(m.versions.endpoint, s.versions.endpoint, 'moving an endpoint changes the endpoint version');
  t.equal(m.resources.endpoint.get('web-v1')!.version, s.resources.endpoint.get('web-v1')!.version, 'but not the other resource');
  for (const k of ['cluster', 'listener', 'route'] as const) t.equal(m.versions[k], s.versions[k], `nor the ${k} version`);
  t.ok(Object.isFrozen(s.resources) && Object.isFrozen(s.resources.cluster.get('web-v1')!.resource), 'it is immutable');
});

t.test('a snapshot built on an earlier one re-encodes only what changed', async (t) => {
  const s = Snapshot.create(input());
  const moved = input();
  moved.endpoints[1] = endpoints('web-v2', [['198.18.0.4', 8080]]);
  const m = Snapshot.create(moved, s);
  t.equal(m.resources.endpoint.get('web-v1'), s.resources.endpoint.get('web-v1'), 'an unchanged resource is the same encoded resource');
  t.equal(m.resources.cluster.get('web-v2'), s.resources.cluster.get('web-v2'), 'of every kind');
  t.not(m.resources.endpoint.get('web-v2'), s.resources.endpoint.get('web-v2'), 'a changed one is encoded anew');
  t.same(m.versions, Snapshot.create(moved).versions, 'and the versions are those of a snapshot built from scratch');
  const bad = input();
  (bad.clusters[0] as Record<string, unknown>).lb_polcy = 'ROUND_ROBIN';
  t.throws(() => Snapshot.create(bad, s), /lb_polcy/, 'a changed resource is checked again');
});

t.test('references that do not resolve are all reported at once', async (t) => {
  const bad = input();
  bad.endpoints.pop();
  bad.routes = [route('web', [['web-v1', 90], ['web-v3', 10]])];
  bad.listeners.push(listener('api', 15002, 'api'));
  t.throws(() => Snapshot.create(bad), {
    code: 'SOCKMESH_XDS_SNAPSHOT',
    problems: [
      'cluster "web-v2" needs endpoints "web-v2", which are missing',
      'listener "api" needs route configuration "api", which is missing',
      'route configuration "web" sends to cluster "web-v3", which is missing',
    ],
  });
  const dup = input();
  dup.clusters.push(cluster('web-v1'));
  t.throws(() => Snapshot.create(dup), { code: 'SOCKMESH_XDS_SNAPSHOT', problems: ['two cluster resources are named "web-v1"'] });
  const misspelled = input();
  (misspelled.clusters[0] as Record<string, unknown>).lb_polcy = 'RANDOM';
  t.throws(() => Snapshot.create(misspelled), { code: 'SOCKMESH_XDS_SNAPSHOT', message: /Cluster has no field "lb_polcy"/ });
});
