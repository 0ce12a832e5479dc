import t from 'tap';
import { configDump } from '../../xds/config-dump.js';
import { Snapshot, TYPE_URL } from '../../xds/snapshot.js';
import { decodeResource, encodeStrict } from '../../xds/strict-encode.js';
import { cluster, endpoints, listener, route } from '../fixtures/xds-resources.js';

const snap = () => Snapshot.create({
  clusters: [cluster('web-v1'), cluster('web-v2')],
  endpoints: [endpoints('web-v1', [['198.18.0.2', 8080]]), endpoints('web-v2', [['198.18.0.3', 8080]])],
  listeners: [listener('web', 15001, 'web')],
  routes: [route('web', [['web-v1', 90], ['web-v2', 10]])],
});

t.test('a snapshot dumps as Envoy\'s admin ConfigDump', async (t) => {
  const s = snap();
  const dump = configDump(s);
  const bytes = encodeStrict('envoy.admin.v3.ConfigDump', dump);
  t.ok(bytes.length > 0, 'the dump encodes strictly as envoy.admin.v3.ConfigDump');
  const back = decodeResource('envoy.admin.v3.ConfigDump', bytes) as { configs: Record<string, unknown>[] };
  t.same(back.configs.map((c) => c['@type']), [
    'type.googleapis.com/envoy.admin.v3.ClustersConfigDump', 'type.googleapis.com/envoy.admin.v3.EndpointsConfigDump',
    'type.googleapis.com/envoy.admin.v3.ListenersConfigDump', 'type.googleapis.com/envoy.admin.v3.RoutesConfigDump',
  ], 'clusters, endpoints, listeners, routes, as Envoy orders them');
  const clusters = dump.configs as Record<string, unknown>[];
  t.equal(clusters[0]!.version_info, s.versions.cluster, 'with the snapshot\'s version per type');
  t.match(clusters[0], { dynamic_active_clusters: [{ version_info: s.resources.cluster.get('web-v1')!.version, cluster: { '@type': TYPE_URL.cluster, name: 'web-v1' } }, { cluster: { name: 'web-v2' } }] },
    'and every resource with its own version');
  t.match(clusters[2], { dynamic_listeners: [{ name: 'web', active_state: { listener: { name: 'web', address: { socket_address: { port_value: 15001 } } } } }] });
  t.match(clusters[3], { dynamic_route_configs: [{ route_config: { '@type': TYPE_URL.route, name: 'web' } }] });
  t.same(JSON.parse(JSON.stringify(dump)), dump, 'it is plain JSON');
});

t.test('a dump limited to some kinds', async (t) => {
  const dump = configDump(snap(), ['route', 'cluster']);
  t.same((dump.configs as Record<string, unknown>[]).map((c) => c['@type']), [
    'type.googleapis.com/envoy.admin.v3.ClustersConfigDump', 'type.googleapis.com/envoy.admin.v3.RoutesConfigDump',
  ], 'only those kinds, still in Envoy\'s order');
  t.same(configDump(Snapshot.create({})), {
    configs: [
      { '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump', version_info: Snapshot.create({}).versions.cluster, dynamic_active_clusters: [] },
      { '@type': 'type.googleapis.com/envoy.admin.v3.EndpointsConfigDump', dynamic_endpoint_configs: [] },
      { '@type': 'type.googleapis.com/envoy.admin.v3.ListenersConfigDump', version_info: Snapshot.create({}).versions.listener, dynamic_listeners: [] },
      { '@type': 'type.googleapis.com/envoy.admin.v3.RoutesConfigDump', dynamic_route_configs: [] },
    ],
  }, 'an empty snapshot dumps empty lists');
});
