/* HTTP authorization in mesh-proxy: AuthorizationPolicies compiled to RBAC filters, published over ADS on loopback, enforced on real requests. */
import { request as httpRequest } from 'node:http';
import t from 'tap';
import type { RequestRecord } from '../../mesh-proxy/proxy.js';
import { type KnownPod, type RbacHttpFilter, compileRbac } from '../../policies/rbac-compile.js';
import { type HttpFilter, l7Resources } from '../../xds/l7-resources.js';
import { Snapshot } from '../../xds/snapshot.js';
import { policy } from '../fixtures/authz-cases.js';
import { backend, freePort, l7Fixture } from '../fixtures/l7.js';
import { until } from '../fixtures/wait.js';

const web = { selector: { matchLabels: { app: 'web' } } };
const ALLOW_PUBLIC = policy('shop', 'allow-public', { ...web, rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/front'] } }], to: [{ operation: { methods: ['GET', 'POST'], paths: ['/public/*'] } }] }] });
const DENY_POST = policy('shop', 'deny-post', { ...web, action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'] } }] }] });
const AUDIT_ADMIN = policy('shop', 'audit-admin', { ...web, action: 'AUDIT', rules: [{ to: [{ operation: { paths: ['/public/admin*'] } }] }] });
/** Callers by source address: 127.0.0.1 is shop's "front" service account, 127.0.0.2 a pod of dev. */
const PODS: KnownPod[] = [{ ip: '127.0.0.1', namespace: 'shop', serviceAccount: 'front' }, { ip: '127.0.0.2', namespace: 'dev', serviceAccount: 'default' }];

t.test('RBAC filters from AuthorizationPolicies: allow, deny, audit, update, and a NACK that keeps the last good filters', async (t) => {
  const records: RequestRecord[] = [];
  const fx = await l7Fixture(t, { onRequest: (r) => records.push(r) });
  const b = await backend(t, 'web');
  const listen = await freePort();

  let snap: Snapshot | undefined;
  /** Publishes the listener with these filters; resolves once the proxy ACKed (and applied) or NACKed it. */
  const publish = async (filters: readonly HttpFilter[]) => {
    const out = l7Resources({
      proxyIp: '127.0.0.1', ports: [{ service: 'shop/web', port: 80, listenerPort: listen }], routes: new Map(), lastGood: new Map(),
      backends: () => [{ ip: '127.0.0.1', port: b.port }], httpFilters: () => filters,
    });
    snap = Snapshot.create(out.resources, snap);
    const [acks, nacks] = [fx.xds.acks, fx.xds.nacks];
    fx.cache.setDefaultSnapshot(snap);
    await until('the proxy\'s answer', () => fx.xds.acks > acks || fx.xds.nacks > nacks, 5000, 5);
    await new Promise((r) => setTimeout(r, 50)); // applied after the ACK
  };
  const compile = (...policies: typeof DENY_POST[]) => compileRbac({ backends: [{ namespace: 'shop', name: 'web-1', labels: { app: 'web' }, port: b.port }], policies, pods: PODS });
  /** One request on a new connection from `from` (the caller's source address). */
  const send = async (method: string, path: string, from = '127.0.0.1') => {
    const seen = b.seen.length;
    const r = await new Promise<{ status: number; type: string | undefined; body: string }>((resolve, reject) => {
      const q = httpRequest({ host: '127.0.0.1', port: listen, method, path, localAddress: from, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
      });
      q.on('error', reject);
      q.end(method === 'POST' ? 'x' : undefined);
    });
    return { ...r, reached: b.seen.length > seen };
  };

  const first = compile(ALLOW_PUBLIC, DENY_POST, AUDIT_ADMIN);
  t.same(first.filters.map((f: RbacHttpFilter) => f.typed_config.rules.action), ['LOG', 'DENY', 'ALLOW'], 'compiled: LOG, DENY, ALLOW');
  await publish(first.filters);
  t.equal(fx.xds.nacks, 0, 'the proxy took the RBAC filters');

  t.same(await send('GET', '/public/x'), { status: 200, type: undefined, body: 'web', reached: true }, 'GET /public/x from front: 200 from the backend');
  t.same(await send('POST', '/public/x'), { status: 403, type: 'text/plain', body: 'RBAC: access denied', reached: false }, 'POST: 403 "RBAC: access denied", the backend never saw it');
  t.equal(fx.log.at(-1)?.rbac?.policy, 'shop/deny-post/rule-0', 'the access log names the DENY rule');
  t.same([records.at(-1)?.status, records.at(-1)?.deniedBy, records.at(-1)?.upstream], [403, 'shop/deny-post/rule-0', undefined], 'the record: 403, denied by the DENY rule, no backend');
  t.same(await send('GET', '/private'), { status: 403, type: 'text/plain', body: 'RBAC: access denied', reached: false }, 'GET /private: no ALLOW rule matches, 403');
  t.equal(records.at(-1)?.deniedBy, 'none', 'the record: no policy matched (Envoy\'s "none")');
  t.same((await send('GET', '/public/x', '127.0.0.2')).status, 403, 'GET /public/x from a dev pod (another principal): 403');
  t.match(fx.log.at(-1)?.downstream, /^127\.0\.0\.2:/, 'the proxy saw the dev pod\'s address');
  t.same(await send('GET', '/public/admin'), { status: 200, type: undefined, body: 'web', reached: true }, 'an AUDIT (LOG) match lets the request through');
  t.same(fx.log.at(-1)?.rbac, { allowed: true, policy: 'shop/allow-public/rule-0', logged: ['shop/audit-admin/rule-0'] }, 'and the access log has the LOG match and the ALLOW rule');
  t.equal(records.at(-1)?.deniedBy, undefined, 'an allowed record names no denying policy');
  t.same(fx.proxy.stats.rbac, { allowed: 2, denied: 3, logged: 1 }, 'stats: 2 allowed, 3 denied, 1 logged');

  // a filter with a matcher mesh-proxy does not run: NACKed, the last good filters keep enforcing
  const bad = structuredClone(first.filters);
  bad[2]!.typed_config.rules.policies['shop/allow-public/rule-0']!.principals = [{ authenticated: { principal_name: { exact: 'spiffe://cluster.local/ns/shop/sa/front' } } }];
  await publish(bad);
  t.equal(fx.xds.nacks, 1, 'the listener is NACKed');
  t.equal(fx.xds.status().listener.lastNack?.error,
    'listener shop/web:80: http_filters[2].typed_config.rules.policies["shop/allow-public/rule-0"].principals[0].authenticated: principal not supported by mesh-proxy (any, and_ids, or_ids, not_id, direct_remote_ip, remote_ip, header)',
    'with a reason naming the listener and the field');
  t.equal((await send('POST', '/public/x')).status, 403, 'POST is still denied: the last good filters enforce');
  t.equal((await send('GET', '/public/x')).status, 200, 'and GET /public/x still passes');

  // the DENY policy removed: POST is allowed by the ALLOW rule again
  await publish(compile(ALLOW_PUBLIC).filters);
  t.same(await send('POST', '/public/x'), { status: 200, type: undefined, body: 'web', reached: true }, 'without deny-post, POST /public/x reaches the backend');
  t.equal((await send('POST', '/private')).status, 403, 'the ALLOW policy still holds elsewhere');
  // every policy removed: no filter, no RBAC at all
  await publish(compile().filters);
  t.same(await send('POST', '/private'), { status: 200, type: undefined, body: 'web', reached: true }, 'no policy: everything passes');
  t.equal(fx.log.at(-1)?.rbac, undefined, 'and the access log has no RBAC verdict');
});
