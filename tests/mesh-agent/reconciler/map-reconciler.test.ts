import t from 'tap';
import type { DesiredState, ServiceFrontend } from '../../../mesh-agent/compiler/compile.js';
import type { HashMapName } from '../../../mesh-agent/datapath/datapath.js';
import { decodeBackendKey, decodeService, decodeServiceKey, encodeBackend, encodeBackendKey } from '../../../mesh-agent/datapath/layout.js';
import { type KernelMaps, MapReconciler } from '../../../mesh-agent/reconciler/map-reconciler.js';

/** In-memory maps that log every operation (no kernel: the privileged tests cover that). */
class FakeMaps implements KernelMaps {
  readonly maps: Record<HashMapName, Map<string, Buffer>> = { sm_endpoints: new Map(), sm_cgroups: new Map(), sm_services: new Map(), sm_backends: new Map() };
  log: string[] = [];
  entries(name: HashMapName): [Buffer, Buffer][] {
    return [...this.maps[name]].map(([k, v]) => [Buffer.from(k, 'hex'), v]);
  }
  put(name: HashMapName, key: Buffer, value: Buffer): void {
    this.maps[name].set(key.toString('hex'), value);
    this.log.push(`put ${describe(name, key)}`);
  }
  del(name: HashMapName, key: Buffer): boolean {
    this.log.push(`del ${describe(name, key)}`);
    return this.maps[name].delete(key.toString('hex'));
  }
}

function describe(name: HashMapName, key: Buffer): string {
  if (name === 'sm_services') { const k = decodeServiceKey(key); return `svc ${k.vip}:${k.port}`; }
  if (name === 'sm_backends') { const k = decodeBackendKey(key); return `be ${k.svcId}/${k.gen}/${k.slot}`; }
  if (name === 'sm_endpoints') return `ep ${[...key].join('.')}`;
  return `cg ${key.readBigUInt64LE(0)}`;
}

const FLAGS = { endpointEnrolled: 1, cgroupEnrolled: 1, serviceAnyClient: 1 };

function desired(backends: string[], opts: { extraService?: boolean; pods?: string[] } = {}): DesiredState {
  const fe = (vip: string, bs: string[]): ServiceFrontend => ({ vip, port: 80, anyClient: true, service: 's', backends: bs.map((ip) => ({ ip, port: 8080 })) });
  const services = new Map([['198.19.0.10:80', fe('198.19.0.10', backends)]]);
  if (opts.extraService) services.set('198.19.0.11:80', fe('198.19.0.11', ['198.18.0.9']));
  return {
    endpoints: new Map((opts.pods ?? ['198.18.0.2', '198.18.0.3']).map((ip) => [ip, { identity: 300, enrolled: true }])),
    cgroups: new Map([[77n, { identity: 300, enrolled: true }]]),
    services, pods: [], serviceViews: [],
  };
}

t.test('writes what differs, nothing when in step, and converges after a restart without rewriting', async (t) => {
  const maps = new FakeMaps();
  const r = new MapReconciler(maps, FLAGS);
  const s1 = r.reconcile(desired(['198.18.0.2', '198.18.0.3']));
  t.same(s1.writes, { sm_endpoints: 2, sm_cgroups: 1, sm_services: 1, sm_backends: 2 });
  t.same(maps.log, ['put ep 198.18.0.2', 'put ep 198.18.0.3', 'put cg 77', 'put be 1/0/0', 'put be 1/0/1', 'put svc 198.19.0.10:80'], 'backends before the service that names them');
  maps.log = [];
  const s2 = r.reconcile(desired(['198.18.0.2', '198.18.0.3']));
  t.same(maps.log, [], 'the same desired state writes nothing');
  t.same(s2.writes, { sm_endpoints: 0, sm_cgroups: 0, sm_services: 0, sm_backends: 0 });
  const restarted = new MapReconciler(maps, FLAGS);
  restarted.reconcile(desired(['198.18.0.2', '198.18.0.3']));
  t.same(maps.log, [], 'a new agent reading the pinned maps writes nothing either');
});

t.test('a backend set changes make-before-break', async (t) => {
  const maps = new FakeMaps();
  const r = new MapReconciler(maps, FLAGS);
  r.reconcile(desired(['198.18.0.2', '198.18.0.3']));
  maps.log = [];
  r.reconcile(desired(['198.18.0.3']));
  t.same(maps.log, ['put be 1/1/0', 'put svc 198.19.0.10:80', 'del be 1/0/0', 'del be 1/0/1'],
    'the new set under the other generation, then the flip, then the old set goes');
  const svc = decodeService([...maps.maps.sm_services.values()][0]!);
  t.same(svc, { id: 1, count: 1, gen: 1, flags: 1 });
  maps.log = [];
  r.reconcile(desired([]));
  t.same(maps.log, ['put svc 198.19.0.10:80', 'del be 1/1/0'], 'no backends: the service stays, with count 0 (connects refused)');
  t.equal(decodeService([...maps.maps.sm_services.values()][0]!).count, 0);
});

t.test('removed services, endpoints and orphans are pruned, removals last', async (t) => {
  const maps = new FakeMaps();
  // a backend a crashed agent left without a service
  maps.put('sm_backends', encodeBackendKey({ svcId: 9, slot: 0, gen: 0 }), encodeBackend({ ip: '198.18.0.99', port: 1 }));
  const r = new MapReconciler(maps, FLAGS);
  r.reconcile(desired(['198.18.0.2'], { extraService: true, pods: ['198.18.0.2', '198.18.0.9'] }));
  t.ok(maps.log.includes('del be 9/0/0'), 'the orphan backend is pruned');
  t.equal(maps.maps.sm_services.size, 2);
  maps.log = [];
  r.reconcile(desired(['198.18.0.2'], { pods: ['198.18.0.2'] }));
  t.same(maps.log, ['del svc 198.19.0.11:80', 'del be 2/0/0', 'del ep 198.18.0.9'], 'the service, then its backends, then the endpoint');
  t.same(r.services().map((s) => [s.vip, s.backends.map((b) => b.ip)]), [['198.19.0.10', ['198.18.0.2']]]);
});
