import t from 'tap';
import { encodeStrict } from '../../xds/strict-encode.js';
import { cluster, endpoints, listener, route } from '../fixtures/xds-resources.js';

const CLUSTER = 'envoy.config.cluster.v3.Cluster';
const CLA = 'envoy.config.endpoint.v3.ClusterLoadAssignment';
const ROUTE = 'envoy.config.route.v3.RouteConfiguration';
const LISTENER = 'envoy.config.listener.v3.Listener';

t.test('the fixtures comply with the validate rules', async (t) => {
  t.doesNotThrow(() => encodeStrict(CLUSTER, cluster('web')));
  t.doesNotThrow(() => encodeStrict(CLA, endpoints('web', [['198.18.0.2', 80]])));
  t.doesNotThrow(() => encodeStrict(ROUTE, route('web', [['a', 90], ['b', 10]])));
  t.doesNotThrow(() => encodeStrict(LISTENER, listener('web', 15001, 'web')));
});

t.test('values Envoy\'s validate rules refuse are refused here, with the path', async (t) => {
  const r = route('web', [['a', 100]]) as { virtual_hosts: Record<string, unknown>[] };
  const vh = r.virtual_hosts[0]!;
  const cases: [string, string, unknown, RegExp][] = [
    ['empty cluster_name', CLA, { ...endpoints('web', []), cluster_name: '' }, /at cluster_name: must have at least 1 character/],
    ['port above 65535', CLA, endpoints('web', [['198.18.0.2', 70000]]), /port_value: must be ≤ 65535/],
    ['empty socket address', CLA, endpoints('web', [['', 80]]), /socket_address.address: must have at least 1 character/],
    ['virtual host without domains', ROUTE, { ...r, virtual_hosts: [{ ...vh, domains: [] }] }, /virtual_hosts\[0\].domains: needs at least 1 item/],
    ['route without a match', ROUTE, { ...r, virtual_hosts: [{ ...vh, routes: [{ route: { cluster: 'a' } }] }] }, /routes\[0\].match: is required/],
    ['route without an action', ROUTE, { ...r, virtual_hosts: [{ ...vh, routes: [{ match: { prefix: '/' } }] }] }, /routes\[0\].action: one of route, redirect, .* is required/],
    ['negative connect timeout', CLUSTER, { ...cluster('web'), connect_timeout: { seconds: -1 } }, /connect_timeout: must be > 0 s/],
    ['listener HCM without stat_prefix', LISTENER, (() => {
      const l = listener('web', 1, 'web') as { filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[] };
      delete l.filter_chains[0]!.filters[0]!.typed_config.stat_prefix;
      return l;
    })(), /typed_config.stat_prefix: must have at least 1 character.*HttpConnectionManager/],
  ];
  for (const [name, type, obj, message] of cases) {
    t.throws(() => encodeStrict(type, obj), { code: 'SOCKMESH_XDS_ENCODE', message }, name);
  }
});
