import t from 'tap';
import { meshResources, serviceKey, serviceResources } from '../../xds/mesh-resources.js';
import { Snapshot } from '../../xds/snapshot.js';

const web = { namespace: 'shop', name: 'web', port: 80, listenerPort: 15001, endpoints: [{ ip: '198.18.0.2', port: 8080 }, { ip: '198.18.0.3', port: 8080 }] };

t.test('a plain HTTP service becomes a consistent cluster, endpoints, listener and route', async (t) => {
  const r = serviceResources(web);
  t.equal(serviceKey(web), 'shop/web:80');
  const s = Snapshot.create(r);
  t.same([...s.resources.cluster.keys()], ['shop/web:80']);
  t.same([...s.resources.listener.keys()], ['shop/web:80']);
  const bytes = ['cluster', 'endpoint', 'listener', 'route'].reduce((n, k) => n + s.resources[k as 'cluster'].get('shop/web:80')!.any.value.length, 0);
  t.ok(bytes <= 1024, `a plain HTTP service with 2 endpoints is ${bytes} bytes on the wire (target ≤ 1 KiB)`);
  const many = Snapshot.create(meshResources([web, { ...web, name: 'api', listenerPort: 15002 }]));
  t.equal(many.resources.route.size, 2);
});

t.test('bad model input is refused naming the service', async (t) => {
  t.throws(() => serviceResources({ ...web, port: 0 }), { code: 'SOCKMESH_INVALID_ARGUMENT', message: /service shop\/web port must be a port/ });
  t.throws(() => serviceResources({ ...web, endpoints: [{ ip: 'web-0', port: 80 }] }), { message: /shop\/web:80: endpoint "web-0" is not an IPv4 address/ });
});
