import t from 'tap';
import { parseDuration } from '../../../mesh-agent/cluster/httproute-parser.js';
import { parseManifestFile } from '../../../mesh-agent/cluster/manifest-parser.js';

const route = (spec: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
${spec}`;

t.test('a full HTTPRoute parses into the model', async (t) => {
  const r = parseManifestFile('r.yaml', route(`  parentRefs: [{ group: "", kind: Service, name: web, port: 80 }]
  rules:
  - matches:
    - path: { type: PathPrefix, value: /api }
      headers: [{ name: X-Canary, value: "yes" }]
      queryParams: [{ type: RegularExpression, name: v, value: "^2" }]
      method: GET
    backendRefs:
    - { name: web-v2, port: 80, weight: 10 }
    - { name: web-v1, port: 80, weight: 90 }
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: { set: [{ name: X-Route, value: canary }], remove: [X-Debug] }
    timeouts: { request: 2s, backendRequest: 500ms }
    retry: { attempts: 2, codes: [503], backoff: 50ms }
  - backendRefs: [{ name: web-v1, port: 80 }]
`));
  t.same(r.errors, []);
  t.match(r.objects[0], {
    kind: 'HTTPRoute', parentRefs: [{ name: 'web', namespace: 'shop', port: 80 }],
    rules: [{
      matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ type: 'Exact', name: 'x-canary', value: 'yes' }], queryParams: [{ type: 'RegularExpression', name: 'v', value: '^2' }], method: 'GET' }],
      backendRefs: [{ name: 'web-v2', namespace: 'shop', port: 80, weight: 10 }, { name: 'web-v1', port: 80, weight: 90 }],
      requestHeaderModifier: { set: [{ name: 'x-route', value: 'canary' }], add: [], remove: ['x-debug'] },
      requestTimeoutMs: 2000, backendRequestTimeoutMs: 500, retry: { attempts: 2, codes: [503], backoffMs: 50 },
    }, {
      matches: [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [] }], backendRefs: [{ name: 'web-v1', weight: 1 }],
    }],
  });
  t.same([parseDuration('1m30s'), parseDuration('250ms'), parseDuration('1h'), parseDuration('10'), parseDuration('1.5s')], [90_000, 250, 3_600_000, undefined, undefined]);
});

t.test('what the Gateway API refuses, or sockmesh cannot serve, names the field', async (t) => {
  const r = parseManifestFile('r.yaml', route(`  parentRefs: [{ kind: Gateway, name: gw }]
  rules:
  - matches:
    - path: { type: Exact, value: api }
      method: FETCH
      headers: [{ type: RegularExpression, name: x, value: "(" }]
    backendRefs: [{ name: web, port: 80, weight: 0 }]
    filters: [{ type: RequestMirror }]
    timeouts: { request: 1s, backendRequest: 5s }
    retry: { attempts: 99 }
`));
  t.same(r.errors.map((e) => e.replace(/^r\.yaml: document 1 \(HTTPRoute shop\/web\): /, '')), [
    'spec.parentRefs[0].kind: the mesh attaches routes to Services (kind: Service, group: ""); got "Gateway"',
    'spec.rules[0].matches[0].method: must be an HTTP method (GET, POST, …), got "FETCH"',
    'spec.rules[0].matches[0].path.value: must start with "/", got "api"',
    'spec.rules[0].matches[0].headers[0].value: not a regular expression: Invalid regular expression: /(/u: Unterminated group',
    'spec.rules[0].backendRefs: every weight is 0: nothing would be served',
    'spec.rules[0].filters[0].type: "RequestMirror" is not served (RequestHeaderModifier and ResponseHeaderModifier are)',
    'spec.rules[0].timeouts.backendRequest: must not be longer than timeouts.request',
    'spec.rules[0].retry.attempts: must be 0-10, got 99',
  ]);
  t.same(r.objects, [], 'a route with one bad rule is refused whole');
});
