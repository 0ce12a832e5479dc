import t from 'tap';
import { decodeResource, encodeStrict, packResource } from '../../xds/strict-encode.js';

const CLUSTER = 'envoy.config.cluster.v3.Cluster';
const LISTENER = 'envoy.config.listener.v3.Listener';
const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

const cluster = {
  name: 'default/web:80',
  type: 'EDS',
  connect_timeout: { seconds: 1 },
  lb_policy: 'LEAST_REQUEST',
  eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: 'default/web:80' },
};

const listener = {
  name: 'default/web:80',
  address: { socket_address: { address: '127.0.0.1', port_value: 15001 } },
  filter_chains: [{
    filters: [{
      name: 'envoy.filters.network.http_connection_manager',
      typed_config: {
        '@type': HCM,
        stat_prefix: 'web',
        rds: { route_config_name: 'default/web:80', config_source: { ads: {}, resource_api_version: 'V3' } },
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
      },
    }],
  }],
};

t.test('well-formed resources encode and decode back to what was built', async (t) => {
  const c = decodeResource(CLUSTER, encodeStrict(CLUSTER, cluster));
  t.match(c, { name: 'default/web:80', type: 'EDS', lb_policy: 'LEAST_REQUEST', connect_timeout: { seconds: '1' } });
  const l = decodeResource(LISTENER, encodeStrict(LISTENER, listener)) as { filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[] };
  const hcm = l.filter_chains[0]!.filters[0]!.typed_config;
  t.equal(hcm['@type'], HCM, 'the Any inside carries its type URL');
  t.match(hcm, { stat_prefix: 'web', rds: { route_config_name: 'default/web:80' } }, 'and its fields');
  const any = packResource(CLUSTER, cluster);
  t.equal(any.type_url, `type.googleapis.com/${CLUSTER}`);
  t.ok(any.value.length > 0 && any.value.length < 200, `a plain cluster is ${any.value.length} bytes`);
});

t.test('anything the type does not have is an error naming the path', async (t) => {
  const hcmOf = (patch: Record<string, unknown>) => ({
    ...listener,
    filter_chains: [{ filters: [{ ...listener.filter_chains[0]!.filters[0]!, typed_config: { ...listener.filter_chains[0]!.filters[0]!.typed_config, ...patch } }] }],
  });
  const cases: [string, string, unknown, RegExp][] = [
    ['misspelled top-level field', CLUSTER, { ...cluster, lb_polcy: 'ROUND_ROBIN' }, /Cluster has no field "lb_polcy"/],
    ['misspelled nested field', CLUSTER, { ...cluster, connect_timeout: { second: 1 } }, /at connect_timeout.second: google.protobuf.Duration has no field "second"/],
    ['misspelled field inside an Any', LISTENER, hcmOf({ codec_typ: 'AUTO' }), /at filter_chains\[0\].filters\[0\].typed_config.codec_typ: .*HttpConnectionManager has no field "codec_typ"/],
    ['unknown enum name', CLUSTER, { ...cluster, lb_policy: 'FASTEST' }, /"FASTEST" is not a value of envoy.config.cluster.v3.Cluster.LbPolicy/],
    ['string for a number', LISTENER, { ...listener, address: { socket_address: { address: '127.0.0.1', port_value: '15001' } } }, /port_value: expected a whole number, got string/],
    ['negative unsigned', LISTENER, { ...listener, address: { socket_address: { address: '127.0.0.1', port_value: -1 } } }, /port_value: expected a number ≥ 0/],
    ['object for an array', LISTENER, { ...listener, filter_chains: {} }, /filter_chains: expected an array, got object/],
    ['two members of a oneof', CLUSTER, { ...cluster, cluster_type: { name: 'x' } }, /"cluster_type" and "type" are both set/],
    ['Any without @type', LISTENER, hcmOf({ '@type': undefined }), /an Any needs '@type'/],
    ['Any of an unknown type', LISTENER, hcmOf({ '@type': 'type.googleapis.com/envoy.Nope' }), /unknown message type envoy.Nope/],
  ];
  for (const [name, type, obj, message] of cases) {
    t.throws(() => encodeStrict(type, obj), { code: 'SOCKMESH_XDS_ENCODE', message }, name);
  }
  t.throws(() => encodeStrict('envoy.config.cluster.v3.Clustr', {}), { code: 'SOCKMESH_XDS_ENCODE', message: /unknown message type/ });
});

t.test('free-form fields (Struct, Value, ListValue) written as plain JSON reach the wire, not dropped', async (t) => {
  const BOOTSTRAP = 'envoy.config.bootstrap.v3.Bootstrap';
  const layer = { n: 1000, s: 'x', b: false, none: null, list: [1, 'two', { three: 3 }], nested: { deep: { er: true } } };
  const d = decodeResource(BOOTSTRAP, encodeStrict(BOOTSTRAP, { layered_runtime: { layers: [{ name: 'l', static_layer: layer }] } })) as { layered_runtime: { layers: { static_layer: { fields: Record<string, unknown> } }[] } };
  t.same(d.layered_runtime.layers[0]!.static_layer.fields, {
    n: { numberValue: 1000 }, s: { stringValue: 'x' }, b: { boolValue: false }, none: { nullValue: 'NULL_VALUE' },
    list: { listValue: { values: [{ numberValue: 1 }, { stringValue: 'two' }, { structValue: { fields: { three: { numberValue: 3 } } } }] } },
    nested: { structValue: { fields: { deep: { structValue: { fields: { er: { boolValue: true } } } } } } },
  });
  t.throws(() => encodeStrict(BOOTSTRAP, { layered_runtime: { layers: [{ name: 'l', static_layer: { f: () => 1 } }] } }), { code: 'SOCKMESH_XDS_ENCODE', message: /layered_runtime|static_layer|f: .*not a JSON value/ }, 'a value JSON cannot hold is named');
});
