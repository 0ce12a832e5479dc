import t from 'tap';
import { parseManifestFile, parseManifests } from '../../../mesh-agent/cluster/manifest-parser.js';

const GOOD = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    sockmesh.io/enabled: "true"
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: { app: web, tier: front }
spec:
  containers:
  - name: web
    command: [node, server.js]
    args: ["--port", "8080"]
    ports: [{ name: http, containerPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: http, appProtocol: http }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: ignored }
---
`;

t.test('namespaces, pods and services parse; other kinds are listed as ignored', async (t) => {
  const r = parseManifestFile('shop.yaml', GOOD);
  t.same(r.errors, []);
  t.same(r.ignored, ['shop.yaml: document 4: apps/v1/Deployment']);
  t.same(r.objects.map((o) => `${o.kind} ${o.meta.namespace}/${o.meta.name}`), ['Namespace /shop', 'Pod shop/web-1', 'Service shop/web']);
  const [ns, pod, svc] = r.objects;
  t.same(ns!.meta.annotations, { 'sockmesh.io/enabled': 'true' });
  t.match(pod, { command: ['node', 'server.js', '--port', '8080'], ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }], hostNetwork: false, meta: { labels: { app: 'web', tier: 'front' }, source: 'shop.yaml#2' } });
  t.match(svc, { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http', protocol: 'TCP', appProtocol: 'http' }] });
  t.equal(svc!.kind === 'Service' && svc.clusterIP, undefined, 'no clusterIP: allocated later');
  const defaults = parseManifestFile('d.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432}]}\n');
  t.match(defaults.objects[0], { meta: { namespace: 'default' }, ports: [{ port: 5432, targetPort: 5432 }] }, 'namespace default, targetPort = port');
});

t.test('every problem names the file, the document, the object and the field', async (t) => {
  const bad = `apiVersion: v1
kind: Pod
metadata:
  name: Web_1
  namespace: shop
  labels: { version: 2 }
spec:
  containers:
  - name: web
    ports: [{ containerPort: 70000 }]
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.300
  ports:
  - { port: 80 }
  - { port: 80, targetPort: "Bad Name" }
---
apiVersion: v2
kind: Namespace
metadata: { name: x }
---
kind: Pod
---
a: [unclosed
`;
  const r = parseManifestFile('bad.yaml', bad);
  t.same(r.objects, [], 'a file with a problem contributes nothing');
  t.same(r.errors, [
    'bad.yaml: document 1 (Pod shop/Web_1): metadata.name: "Web_1" is not a DNS subdomain (lowercase letters, digits, \'-\', \'.\')',
    'bad.yaml: document 1 (Pod shop/Web_1): metadata.labels.version: must be a string, got 2 (quote it: "2")',
    'bad.yaml: document 1 (Pod shop/Web_1): spec.containers[0].command: required here: images are not pulled, the local runtime runs command + args on the host\'s filesystem',
    'bad.yaml: document 1 (Pod shop/Web_1): spec.containers[0].ports[0].containerPort: must be a port number (1-65535), got 70000',
    'bad.yaml: document 2 (Service shop/web): spec.type: only ClusterIP services are served, got "LoadBalancer"',
    'bad.yaml: document 2 (Service shop/web): spec.clusterIP: must be an IPv4 address or "None", got "10.0.0.300"',
    'bad.yaml: document 2 (Service shop/web): spec.ports[0].name: required when a service has more than one port',
    'bad.yaml: document 2 (Service shop/web): spec.ports[1].name: required when a service has more than one port',
    'bad.yaml: document 2 (Service shop/web): spec.ports[1].targetPort: "Bad Name" is neither a port number nor a port name',
    'bad.yaml: document 2 (Service shop/web): spec.ports[1].port: 80/TCP is listed twice',
    'bad.yaml: document 3 (Namespace x): apiVersion: a Namespace is v1, got "v2"',
    'bad.yaml: document 4: apiVersion: required',
  ].concat(r.errors.slice(12)));
  t.match(r.errors[12], /^bad\.yaml: document 5: YAML: /, 'broken YAML names its document');
  t.equal(r.errors.length, 13);
});

t.test('the same object in two files is an error naming both', async (t) => {
  const ns = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n';
  const r = parseManifests([{ file: 'a.yaml', text: ns }, { file: 'b.yaml', text: `---\n${ns}` }]);
  t.same(r.errors, ['b.yaml: document 1: Namespace shop is already defined in a.yaml: document 1']);
});
