/* Privileged: the agent with the Kubernetes API as its cluster source (a stand-in API server; no cluster runs here). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { Agent } from '../../mesh-agent/agent.js';
import { decodeBackend, decodeService, decodeServiceKey } from '../../mesh-agent/datapath/layout.js';
import { FakeKubeApi } from '../fixtures/fake-kube-api.js';
import { TEST_PIN_DIR, testCgroupRoot, testMesh } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';

const pod = (name: string, ip: string, node: string) => ({
  metadata: { name, namespace: 'shop', labels: { app: 'web' } },
  spec: { nodeName: node, containers: [{ name: 'web', image: 'web:1', ports: [{ name: 'http', containerPort: 8080 }] }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});

if (privileged(t)) {
  t.test('pods, services and EndpointSlices from the API reach the maps', async (t) => {
    const { datapath } = await testMesh(t);
    const api = new FakeKubeApi();
    await api.start();
    api.put('/api/v1/namespaces', { metadata: { name: 'shop', annotations: { 'sockmesh.io/enabled': 'true' } } });
    api.put('/api/v1/pods', pod('web-1', '10.244.0.5', 'node-a'));
    api.put('/api/v1/pods', pod('web-2', '10.244.1.5', 'node-b'));
    api.put('/api/v1/services', { metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } });
    api.put('/apis/discovery.k8s.io/v1/endpointslices', {
      metadata: { name: 'web-x', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: ['10.244.0.5'], conditions: { ready: true } }, { addresses: ['10.244.1.5'], conditions: { ready: true } }],
    });
    const dir = mkdtempSync(join(tmpdir(), 'sm-kube-'));
    const agent = new Agent({
      kubernetes: { kubeConfig: api.kubeConfig() }, datapath: { pinDir: TEST_PIN_DIR, cgroupPath: testCgroupRoot() },
      adminSocket: join(dir, 'agent.sock'), adminAddress: null, xdsAddress: '127.0.0.1:0', nodeName: 'node-a',
    });
    await agent.start();
    t.teardown(async () => { await agent.stop(); await api.stop(); rmSync(dir, { recursive: true, force: true }); });
    const dp = datapath();
    dp.adopt();
    t.teardown(() => dp.stop());
    const services = () => dp.entries('sm_services').map(([k, v]) => ({ ...decodeServiceKey(k), ...decodeService(v) }));
    for (let i = 0; i < 100 && services().length === 0; i++) await sleep(50);
    t.match(services(), [{ vip: '10.96.0.10', port: 80, count: 2, flags: 0 }], 'the cluster\'s clusterIP, both ready endpoints, enrolled clients only (kube-proxy serves the rest)');
    t.same(dp.entries('sm_backends').map(([, v]) => decodeBackend(v).ip).sort(), ['10.244.0.5', '10.244.1.5'], 'backends from the EndpointSlice, on any node');
    const pods = agent.status().cluster!.pods;
    t.match(pods, [{ key: 'shop/web-1', enrolled: true }, { key: 'shop/web-2', enrolled: false, reason: 'not on this node (on node-b)' }]);
    const src = agent.status().cluster!.source;
    t.match(src, { kind: 'kubernetes', server: `http://127.0.0.1:${api.port}` });
    api.delete('/api/v1/services', 'web', 'shop');
    for (let i = 0; i < 100 && services().length > 0; i++) await sleep(50);
    t.same(services(), [], 'a deleted service leaves the maps');
  });
}
