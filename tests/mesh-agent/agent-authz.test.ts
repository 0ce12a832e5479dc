/* Privileged end to end: AuthorizationPolicies from manifests make a service L7 and are enforced by the node proxy (403 "RBAC: access denied"), explained by policy check, and lifted when the policies go. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Agent } from '../../mesh-agent/agent.js';
import { adminGet } from '../../mesh-agent/admin/admin-client.js';
import { readTraceFiles } from '../../mesh-agent/telemetry/trace-file.js';
import { repoRoot } from '../../mesh-agent/paths.js';
import { runtimeName } from '../../mesh-agent/runtime/pod-supervisor.js';
import { telemetryOptions } from '../../telemetry/telemetry-options.js';
import { cliAsync } from '../fixtures/cli.js';
import { TEST_PIN_DIR, agentEndpoints, cleanNode } from '../fixtures/mesh.js';
import { privileged } from '../fixtures/privileged.js';
import { until } from '../fixtures/wait.js';

const APP = join(repoRoot(), 'tests', 'fixtures', 'http-app.mjs');
const CLIENT = join(repoRoot(), 'tests', 'fixtures', 'http-client.mjs');
const PREFIX = 'smz';

const PODS = `apiVersion: v1
kind: Namespace
metadata: { name: shop, annotations: { sockmesh.io/enabled: "true" } }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, namespace: shop, labels: { app: web } }
spec: { containers: [{ name: web, command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(APP)}, web-1, "8080"], ports: [{ name: http, containerPort: 8080 }] }] }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: http }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { serviceAccountName: client, containers: [{ name: c, command: [sleep, infinity] }] }
---
apiVersion: v1
kind: Pod
metadata: { name: intruder, namespace: shop, labels: { app: intruder } }
spec: { containers: [{ name: c, command: [sleep, infinity] }] }
`;
const POLICIES = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-client-public, namespace: shop }
spec:
  selector: { matchLabels: { app: web } }
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }]
    to: [{ operation: { paths: ["/public/*"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-post, namespace: shop }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
  - to: [{ operation: { methods: ["POST"] } }]
`;

if (privileged(t)) {
  t.test('L7 authorization: allowed, denied by DENY, denied for want of an ALLOW; explained; lifted', async (t) => {
    const { rt, cgroupPath, clean } = await cleanNode(PREFIX);
    const dir = mkdtempSync(join(tmpdir(), 'sm-authz-'));
    writeFileSync(join(dir, 'pods.yaml'), PODS);
    writeFileSync(join(dir, 'policies.yaml'), POLICIES);
    const agent = new Agent({
      manifests: dir, runtimePrefix: PREFIX, datapath: { pinDir: TEST_PIN_DIR, cgroupPath }, proxy: 'mesh-proxy', ...agentEndpoints(dir), nodeName: 'authz-node',
      telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: join(dir, 'traces.otlp.jsonl') }),
    });
    await agent.start();
    t.teardown(async () => {
      await agent.stop({ removePods: true }).catch(() => undefined);
      await clean();
      rmSync(dir, { recursive: true, force: true });
    });
    const acked = () => agent.status().xds.proxies.some((p) => p.types.listener?.ackedVersion && p.types.listener.ackedVersion === p.types.listener.sentVersion
      && p.types.route?.ackedVersion === p.types.route?.sentVersion);
    await until('pods running and the proxy configured', () => {
      const c = agent.status().cluster!;
      return c.pods.length === 3 && c.pods.every((p) => p.phase === 'Running') && c.l7.proxy?.running && acked() && c;
    });
    const web = agent.status().cluster!.services.find((s) => s.key === 'shop/web')!;
    t.match(agent.status().cluster!.policies, {
      networkPolicies: [], authorizationPolicies: ['shop/allow-client-public', 'shop/deny-post'], enforced: { networkPolicies: true, authorizationPolicies: true },
      kernel: { policies: [], error: null },
    }, 'status lists the policies and what enforces them');
    t.ok(web.ports[0]!.l7, `an AuthorizationPolicy makes shop/web:80 L7 (no route, no appProtocol): node proxy port ${web.ports[0]!.l7}`);
    const call = async (pod: string, path: string, method = 'GET') => {
      const out = await rt.execOutput(runtimeName(`shop/${pod}`), [process.execPath, CLIENT, `http://web${path}`, '2', `--method=${method}`], { timeoutMs: 60_000 });
      return (JSON.parse(out.toString()) as { counts: Record<string, number> }).counts;
    };
    t.same(await call('client', '/public/a'), { '200 web-1': 2 }, 'the allowed caller reads /public/*');
    t.same(await call('client', '/public/a', 'POST'), { '403 RBAC: access denied': 2 }, 'POST: denied by the DENY policy');
    t.same(await call('client', '/private'), { '403 RBAC: access denied': 2 }, 'outside /public/*: no ALLOW rule matches');
    t.same(await call('intruder', '/public/a'), { '403 RBAC: access denied': 2 }, 'another service account: no ALLOW rule matches');

    // a denial is a flow, a metric and a span event, naming the rule
    // (the proxy reports its requests every 500 ms)
    type Flow = { verdict: string; policy?: string; method?: string; source: { pod?: string } };
    let flows: Flow[] = [];
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
      flows = (await adminGet(agent.adminSocket, '/flows?type=l7&last=50')).text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Flow);
      if (flows.filter((f) => f.verdict === 'denied').length >= 6) break;
    }
    await new Promise((r) => setTimeout(r, 1500)); // the trace file is written after the records arrive
    t.ok(flows.some((f) => f.verdict === 'denied' && f.policy === 'shop/deny-post/rule-0' && f.method === 'POST' && f.source.pod === 'client'), 'observe: the POST denied by shop/deny-post rule 0');
    t.ok(flows.some((f) => f.verdict === 'denied' && f.policy === 'none' && f.source.pod === 'intruder'), 'observe: the intruder denied, no ALLOW rule matched');
    const obs = await cliAsync(['observe', '--admin-socket', agent.adminSocket, '--type', 'l7', '--pod', 'shop/client', '--last', '50']);
    t.match(obs.stdout, /shop\/client -> \?  svc web  DENIED by shop\/deny-post\/rule-0\s+L7 proxy\s+POST \/public\/a 403/, 'observe renders the denial and its rule');
    const metrics = (await adminGet(agent.adminSocket, '/metrics')).text;
    t.match(metrics, /sockmesh_policy_denials_total\{source_workload="shop\/client",destination_service="web",layer="proxy-l7",policy="shop\/deny-post\/rule-0"\} 2/, 'denials by workload pair and rule');
    const traces = await readTraceFiles(join(dir, 'traces.otlp.jsonl'));
    const deniedSpans = traces.spans.filter((s) => s.events.some((e) => e.name === 'sockmesh.policy.denied'));
    t.ok(deniedSpans.some((s) => s.kind === 'CLIENT' && s.resource['k8s.pod.name'] === 'client'
      && s.events.some((e) => e.attributes['sockmesh.policy'] === 'shop/deny-post/rule-0')), 'the caller\'s CLIENT span carries the denial as an event');

    const check = await cliAsync(['policy', 'check', '--admin-socket', agent.adminSocket, '--from', 'shop/client', '--to', 'shop/web:80', '--method', 'POST', '--path', '/public/a']);
    t.equal(check.code, 1, check.stderr);
    t.match(check.stdout, /^DENIED  service shop\/web:80  \(decided by the node proxy, L7\)[\s\S]*L7:\s+denied by shop\/deny-post \(DENY rule 0\)/, 'policy check names the deciding policy and rule');
    const ok = await cliAsync(['policy', 'check', '--admin-socket', agent.adminSocket, '--from', 'shop/client', '--to', 'shop/web:80', '--method', 'GET', '--path', '/public/a']);
    t.equal(ok.code, 0, 'GET /public/a: allowed (exit 0)');
    t.match(ok.stdout, /L7:\s+allowed by shop\/allow-client-public \(ALLOW rule 0\)/);

    writeFileSync(join(dir, 'policies.yaml'), '# no policies\n');
    let lifted: Record<string, number> = {};
    for (const deadline = Date.now() + 20_000; Date.now() < deadline;) {
      lifted = await call('client', '/public/a', 'POST');
      if (lifted['200 web-1'] === 2) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    t.same(lifted, { '200 web-1': 2 }, 'the policies removed from the manifests: POST passes again');
    t.same(await call('intruder', '/private'), { '200 web-1': 2 }, 'without policies every caller passes');
  });
}
