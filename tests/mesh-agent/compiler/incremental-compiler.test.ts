import t from 'tap';
import { ClusterStore } from '../../../mesh-agent/cluster/cluster-store.js';
import type { ClusterObject } from '../../../mesh-agent/cluster/model.js';
import { compile } from '../../../mesh-agent/compiler/compile.js';
import { IdentityAllocator } from '../../../mesh-agent/compiler/identities.js';
import { IncrementalCompiler } from '../../../mesh-agent/compiler/incremental-compiler.js';
import { ListenerPortAllocator } from '../../../mesh-agent/compiler/listener-ports.js';
import { VipAllocator } from '../../../mesh-agent/compiler/vips.js';
import { ns, pod, svc } from '../../fixtures/cluster.js';
import { policy } from '../../fixtures/authz-cases.js';

/** A small deterministic PRNG (mulberry32), so a failure replays. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function randomChange(r: () => number, store: ClusterStore, step: number): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const nss = ['a', 'b', 'c'];
  const apps = ['web', 'db', 'api'];
  const x = r();
  if (x < 0.35) {
    const n = pick(nss);
    const name = `p${Math.floor(r() * 12)}`;
    const o = pod(n, name, {
      ip: r() < 0.9 ? `198.18.${Math.floor(r() * 3)}.${2 + Math.floor(r() * 20)}` : undefined as unknown as string,
      labels: { app: pick(apps), ...(r() < 0.3 && { tier: 'x' }) }, ready: r() < 0.8,
      annotations: r() < 0.1 ? { 'sockmesh.io/enabled': 'false' } : {},
      ...(r() < 0.1 && { hostNetwork: true }), ...(r() < 0.1 && { nodeName: 'other' }),
    });
    if (o.ip === undefined) delete (o as { ip?: string }).ip;
    store.upsert('test', o);
    return `pod ${n}/${name}`;
  }
  if (x < 0.5) {
    const keys = [...store.pods().keys()];
    if (keys.length) store.remove('Pod', pick(keys));
    return 'pod removed';
  }
  if (x < 0.7) {
    const n = pick(nss);
    const name = pick(['s1', 's2', 's3', 's4']);
    const given = r();
    store.upsert('test', svc(n, name, {
      selector: { app: pick(apps) },
      ...(given < 0.25 && { clusterIP: pick(['198.19.0.10', '198.19.0.11']) }),
      ...(given > 0.95 && { clusterIP: 'None' }),
      ports: [{ port: 80, targetPort: r() < 0.5 ? 'http' : 9090, protocol: 'TCP' }, ...(r() < 0.3 ? [{ name: 'b', port: 81, targetPort: 'http', protocol: 'TCP' as const }] : [])],
    }));
    return `service ${n}/${name}`;
  }
  if (x < 0.8) {
    const keys = [...store.services().keys()];
    if (keys.length) store.remove('Service', pick(keys));
    return 'service removed';
  }
  if (x < 0.95) {
    store.upsert('test', ns(pick(nss), r() < 0.6));
    return 'namespace';
  }
  const keys = [...store.pods().keys()];
  if (keys.length) {
    const k = pick(keys);
    const p = store.pods().get(k)!;
    store.setPodStatus(k, { ...(p.ip !== undefined && { ip: p.ip }), ready: !p.ready, phase: p.ready ? 'NotReady' : 'Running' });
  }
  void step;
  return 'readiness';
}

t.test('after any sequence of changes, the incremental result equals a full compile', async (t) => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const r = rng(seed);
    const store = new ClusterStore();
    const identities = new IdentityAllocator();
    const vips = new VipAllocator();
    const cgroups = new Map<string, bigint>();
    const c = new IncrementalCompiler({ nodeName: 'n', mode: 'local', identities, vips });
    const src = () => ({ namespaces: store.namespaces(), pods: store.pods(), services: store.services(), endpointSlices: store.endpointSlices(), cgroups });
    let touched = new Set<string>();
    store.onChange((ch) => { for (const k of ch.touched) touched.add(k); });
    c.full(src());
    let mismatch: string | undefined;
    for (let step = 0; step < 300 && !mismatch; step++) {
      const what = randomChange(r, store, step);
      if (r() < 0.3 && store.pods().size > 0) {
        // a pod's cgroup appears with its realisation, which the store reports as a change of the pod
        const k = [...store.pods().keys()][Math.floor(r() * store.pods().size)]!;
        cgroups.set(k, BigInt(step + 1));
        touched.add(`Pod ${k}`);
      }
      c.update(src(), touched);
      touched = new Set();
      // a full compile with allocators seeded from the incremental ones must give the same maps
      const ids = new IdentityAllocator();
      for (const [k, v] of identities.entries()) ids.seed(k, v);
      const vv = new VipAllocator();
      for (const [k, v] of vips.entries()) vv.seed(k, v);
      const want = compile({ ...src(), nodeName: 'n', mode: 'local', identities: ids, vips: vv });
      const got = c.state();
      const norm = (d: typeof want) => JSON.stringify({
        endpoints: [...d.endpoints].sort(), cgroups: [...d.cgroups].map(([k, v]) => [String(k), v]).sort(), services: [...d.services].sort(),
        pods: d.pods, services2: d.serviceViews.map((v) => ({ ...v, problems: [...v.problems].sort() })),
      });
      if (norm(got) !== norm(want)) mismatch = `seed ${seed} step ${step} (${what})\n got ${norm(got)}\nwant ${norm(want)}`;
    }
    t.equal(mismatch, undefined, `seed ${seed}: 300 random changes, incremental = full after each`);
  }
});

t.test('an update reports only the keys it touched', async (t) => {
  const store = new ClusterStore();
  const objs: ClusterObject[] = [ns('a'), pod('a', 'web-1', { ip: '198.18.0.2', labels: { app: 'web' } }), pod('a', 'db', { ip: '198.18.0.3', labels: { app: 'db' } }), svc('a', 'web'), svc('a', 'db')];
  store.replace('test', objs);
  const c = new IncrementalCompiler({ nodeName: 'n', mode: 'local', identities: new IdentityAllocator(), vips: new VipAllocator() });
  const src = { namespaces: store.namespaces(), pods: store.pods(), services: store.services(), cgroups: new Map() };
  c.full(src);
  store.setPodStatus('a/web-1', { ip: '198.18.0.2', ready: false, phase: 'NotReady' });
  const d = c.update(src, new Set(['Pod a/web-1']));
  const webVip = c.state().serviceViews.find((v) => v.key === 'a/web')!.vip;
  t.same([...d.endpoints], ['198.18.0.2'], 'the pod\'s endpoint');
  t.same([...d.services], [`${webVip}:80`], 'and the one service selecting it, not the other');
  t.same(c.state().services.get(`${webVip}:80`)?.backends, [], 'which lost its backend');
});

t.test('a service port whose backends an AuthorizationPolicy applies to is served at L7 by the node proxy', async (t) => {
  const store = new ClusterStore();
  store.replace('test', [
    ns('a'), ns('b'),
    pod('a', 'web-1', { ip: '198.18.0.2', labels: { app: 'web' } }), pod('a', 'db-1', { ip: '198.18.0.3', labels: { app: 'db' } }),
    svc('a', 'web', { selector: { app: 'web' } }), svc('a', 'db', { selector: { app: 'db' } }),
  ]);
  const c = new IncrementalCompiler({
    nodeName: 'n', mode: 'local', identities: new IdentityAllocator(), vips: new VipAllocator(),
    l7: { proxyIp: () => '198.18.255.254', listenerPorts: new ListenerPortAllocator(), authorizationPolicies: () => store.authorizationPolicies() },
  });
  const src = { namespaces: store.namespaces(), pods: store.pods(), services: store.services(), cgroups: new Map() };
  let touched = new Set<string>();
  store.onChange((ch) => { touched = new Set(ch.touched); });
  c.full(src);
  const l7 = () => Object.fromEntries(c.state().serviceViews.map((v) => [v.key, v.ports.map((p) => p.l7 !== undefined)]));
  t.same(l7(), { 'a/db': [false], 'a/web': [false] }, 'no policy: both at L4');

  const steps: [string, () => void, Record<string, boolean[]>][] = [
    ['a policy selecting web\'s pods', () => store.upsert('test', policy('a', 'web-only', { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{}] })), { 'a/db': [false], 'a/web': [true] }],
    ['a policy of another namespace', () => store.upsert('test', policy('b', 'all-of-b', { action: 'DENY', rules: [{}] })), { 'a/db': [false], 'a/web': [true] }],
    ['a namespace-wide policy', () => store.upsert('test', policy('a', 'all-of-a', { action: 'AUDIT', rules: [{}] })), { 'a/db': [true], 'a/web': [true] }],
    ['the namespace-wide policy removed', () => store.remove('AuthorizationPolicy', 'a/all-of-a'), { 'a/db': [false], 'a/web': [true] }],
    ['web\'s pod changed, still selected by the policy', () => store.upsert('test', pod('a', 'web-1', { ip: '198.18.0.2', labels: { app: 'web', v: '2' } })), { 'a/db': [false], 'a/web': [true] }],
    ['the policy removed', () => store.remove('AuthorizationPolicy', 'a/web-only'), { 'a/db': [false], 'a/web': [false] }],
  ];
  for (const [name, change, want] of steps) {
    change();
    const d = c.update(src, touched);
    t.same(l7(), want, `${name}: ${JSON.stringify(want)}`);
    if (name.startsWith('a namespace-wide')) t.ok(d.services.size >= 2, 'the namespace\'s services are redone');
  }
  const web = c.state().serviceViews.find((v) => v.key === 'a/web')!;
  store.upsert('test', policy('a', 'web-only', { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{}] }));
  c.update(src, touched);
  const fe = c.state().services.get(`${web.vip}:80`)!;
  t.same(fe.backends, [{ ip: '198.18.255.254', port: fe.l7!.listenerPort }], 'an L7 port sends to the node proxy\'s listener');
  t.same(c.backendsOf('a/web', 80), [{ ip: '198.18.0.2', port: 8080 }], 'and keeps its own backends for the proxy');
});
