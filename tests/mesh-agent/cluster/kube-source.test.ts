/*
 * The Kubernetes source against a stand-in API server that speaks list and
 * watch (tests/fixtures/fake-kube-api.ts); no real API server can run here.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { ClusterStore } from '../../../mesh-agent/cluster/cluster-store.js';
import { KubeSource } from '../../../mesh-agent/cluster/kube-source.js';
import { compile } from '../../../mesh-agent/compiler/compile.js';
import { IdentityAllocator } from '../../../mesh-agent/compiler/identities.js';
import { VipAllocator } from '../../../mesh-agent/compiler/vips.js';
import { FakeKubeApi } from '../../fixtures/fake-kube-api.js';
import { until } from '../../fixtures/wait.js';

const NS = '/api/v1/namespaces';
const PODS = '/api/v1/pods';
const SVCS = '/api/v1/services';
const SLICES = '/apis/discovery.k8s.io/v1/endpointslices';

const pod = (name: string, ip: string, ready = true) => ({
  metadata: { name, namespace: 'shop', labels: { app: 'web' } },
  spec: { nodeName: 'node-a', containers: [{ name: 'web', image: 'web:1', ports: [{ name: 'http', containerPort: 8080 }] }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});

const slice = (ips: string[]) => ({
  metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node-a' })),
});

t.test('list, then watch; 410 Gone relists; a lost server is reconnected with backoff', async (t) => {
  const api = new FakeKubeApi();
  await api.start();
  api.put(NS, { metadata: { name: 'shop', annotations: { 'sockmesh.io/enabled': 'true' } } });
  api.put(PODS, pod('web-1', '10.244.0.5'));
  api.put(SVCS, { metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] } });
  api.put(SLICES, slice(['10.244.0.5']));
  const store = new ClusterStore();
  const source = new KubeSource({ store, kubeConfig: api.kubeConfig(), backoffMs: 50, maxBackoffMs: 400 });
  t.teardown(async () => { await source.stop(); await api.stop(); });
  await source.start();
  await until('the first list', () => store.pods().size === 1 && store.endpointSlices().size === 1);
  t.match(store.pods().get('shop/web-1'), { ip: '10.244.0.5', ready: true, nodeName: 'node-a', ports: [{ name: 'http', containerPort: 8080 }], meta: { source: 'kubernetes' } }, 'pods as the model has them');
  t.match(store.services().get('shop/web'), { clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 'http' }] });
  t.equal(store.namespaces().get('shop')?.meta.annotations['sockmesh.io/enabled'], 'true');
  const d = compile({
    namespaces: store.namespaces(), pods: store.pods(), services: store.services(), endpointSlices: store.endpointSlices(),
    nodeName: 'node-a', mode: 'kubernetes', cgroups: new Map(), identities: new IdentityAllocator(), vips: new VipAllocator(),
  });
  t.same(d.services.get('10.96.0.10:80')?.backends, [{ ip: '10.244.0.5', port: 8080 }], 'backends from the EndpointSlice');
  t.ok(d.pods.find((p) => p.key === 'shop/web-1')?.enrolled, 'the pod on this node in an annotated namespace is enrolled');

  // watch events
  api.put(PODS, pod('web-2', '10.244.0.6'));
  await until('web-2 added', () => store.pods().has('shop/web-2'));
  api.put(PODS, pod('web-1', '10.244.0.5', false));
  await until('web-1 not ready', () => store.pods().get('shop/web-1')?.ready === false);
  api.delete(PODS, 'web-2', 'shop');
  await until('web-2 deleted', () => !store.pods().has('shop/web-2'));
  t.pass('added, modified and deleted arrive through the watch');
  const listsBefore = api.lists.get(PODS)!;

  // the watch misses events, ends, and its history is gone: 410 Gone, then a relist that also catches a missed delete
  api.freeze();
  api.delete(PODS, 'web-1', 'shop');
  api.put(PODS, pod('web-3', '10.244.0.7'));
  api.compact();
  api.dropWatches();
  await until('relisted', () => store.pods().has('shop/web-3') && !store.pods().has('shop/web-1'));
  t.ok(api.gone >= 1, `the watch from an old resourceVersion got 410 Gone (${api.gone})`);
  t.ok(api.lists.get(PODS)! > listsBefore, 'and the informer listed again');

  // the API server goes away and comes back on the same port
  const port = api.port;
  await api.stop();
  await until('the error seen', () => source.states().some((s) => !s.connected && s.lastError !== undefined));
  api.put(PODS, pod('web-4', '10.244.0.8'));
  await sleep(300);
  await api.start(port);
  await until('reconnected', () => store.pods().has('shop/web-4'), 15_000);
  const st = source.states().find((s) => s.resource === PODS)!;
  t.ok(st.reconnects >= 1, `reconnected after ${st.reconnects} attempts (last error: ${st.lastError})`);
  api.put(PODS, pod('web-5', '10.244.0.9'));
  await until('events flow again', () => store.pods().has('shop/web-5'));
  t.pass('events flow again after the reconnect');
});

t.test('NetworkPolicies and AuthorizationPolicies from the API: validated like manifests; a refused version keeps the last good one', async (t) => {
  const NETPOL = '/apis/networking.k8s.io/v1/networkpolicies';
  const AUTHZ = '/apis/security.istio.io/v1/authorizationpolicies';
  const api = new FakeKubeApi();
  await api.start();
  const denyAll = {
    metadata: { name: 'deny-all', namespace: 'shop', uid: 'u-1', resourceVersion: '7', creationTimestamp: '2026-11-26T00:00:00Z' },
    spec: { podSelector: {}, policyTypes: ['Ingress'] },
  };
  api.put(NETPOL, denyAll);
  api.put(AUTHZ, {
    metadata: { name: 'deny-post', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'] } }] }] },
    status: { validationMessages: [] },
  });
  const store = new ClusterStore();
  const source = new KubeSource({ store, kubeConfig: api.kubeConfig(), backoffMs: 50, maxBackoffMs: 400 });
  t.teardown(async () => { await source.stop(); await api.stop(); });
  await source.start();
  await until('the policies listed', () => store.networkPolicies().size === 1 && store.authorizationPolicies().size === 1);
  t.match(store.networkPolicies().get('shop/deny-all'), { policyTypes: ['Ingress'], ingress: [], meta: { source: 'kubernetes', uid: 'u-1' } }, 'a NetworkPolicy as the evaluator reads it');
  t.match(store.authorizationPolicies().get('shop/deny-post'), { action: 'DENY' }, 'an AuthorizationPolicy (its status ignored)');

  // a new version sockmesh cannot take: refused with the field, the last good version stays
  api.put(NETPOL, { ...denyAll, spec: { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] } }] }] } });
  const state = () => source.states().find((s) => s.resource === NETPOL)!;
  await until('the bad version refused', () => state().problems?.length);
  t.match(state().problems, [/^shop\/deny-all: spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except\[0\]: must lie strictly inside cidr 10\.0\.0\.0\/8/], 'the problem names the object, field and reason');
  t.same(store.networkPolicies().get('shop/deny-all')?.ingress, [], 'the last good version is still the one in force');
  api.put(NETPOL, { ...denyAll, spec: { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' } }] }] } });
  await until('the fixed version taken', () => store.networkPolicies().get('shop/deny-all')?.ingress.length === 1);
  t.equal(state().problems, undefined, 'and the problem is gone');
  api.delete(NETPOL, 'deny-all', 'shop');
  await until('deleted', () => store.networkPolicies().size === 0);
  t.equal(store.networkPolicies().size, 0, 'a deleted policy leaves the store');
});
