import t from 'tap';
import type { NetworkPolicy, NetworkProtocol } from '../../policies/network-policy.js';
import { explainConnection, policiesSelecting, type ConnectionQuery, type Endpoint, type PolicyNamespace, type PolicyPod, type PolicyWorld } from '../../policies/network-verdict.js';
import { policyFromSpec } from '../fixtures/policies.js';

const namespaces: PolicyNamespace[] = [
  { name: 'shop', labels: { team: 'shop' } },
  { name: 'ops', labels: { team: 'ops', env: 'prod' } },
  { name: 'other', labels: {} },
];
const pods: PolicyPod[] = [
  { namespace: 'shop', name: 'frontend', labels: { app: 'frontend' }, ip: '198.18.0.10', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] },
  {
    namespace: 'shop', name: 'catalog', labels: { app: 'catalog' }, ip: '198.18.0.11',
    ports: [
      { name: 'http', containerPort: 8080, protocol: 'TCP' },
      { name: 'metrics', containerPort: 9090, protocol: 'TCP' },
      { name: 'dns', containerPort: 5353, protocol: 'UDP' },
    ],
  },
  { namespace: 'shop', name: 'client', labels: { app: 'client' }, ip: '198.18.0.12', ports: [] },
  { namespace: 'ops', name: 'prober', labels: { app: 'prober' }, ip: '198.18.1.10', ports: [] },
  { namespace: 'ops', name: 'client', labels: { app: 'client' }, ip: '198.18.1.11', ports: [] },
  { namespace: 'other', name: 'prober', labels: { app: 'prober' }, ports: [] },
];
const world = (policies: NetworkPolicy[]): PolicyWorld => ({ namespaces, pods, policies });
const end = (s: string): Endpoint => {
  const [namespace, name] = s.split('/');
  return name === undefined ? { kind: 'ip', ip: s } : { kind: 'pod', namespace: namespace!, name };
};
/** "shop/client -> shop/catalog:8080/TCP" or "203.0.113.7 -> shop/catalog:80" */
const query = (s: string): ConnectionQuery => {
  const m = /^(\S+) -> (.+):([0-9]+)(?:\/(TCP|UDP|SCTP))?$/.exec(s);
  if (!m) throw new Error(`bad query ${s}`);
  return { from: end(m[1]!), to: end(m[2]!), port: Number(m[3]), ...(m[4] && { protocol: m[4] as NetworkProtocol }) };
};

// Policies, by the names the cases use.
const P = {
  denyAllIngress: policyFromSpec('shop', 'deny-all-ingress', '  podSelector: {}\n  policyTypes: [Ingress]'),
  denyAllEgress: policyFromSpec('shop', 'deny-all-egress', '  podSelector: {}\n  policyTypes: [Egress]'),
  clientEgress: policyFromSpec('shop', 'client-egress', `  podSelector: { matchLabels: { app: client } }
  egress:
  - to: [{ podSelector: { matchLabels: { app: catalog } } }]
    ports: [{ port: 8080 }]`),
  fromOps: policyFromSpec('shop', 'from-ops', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { team: ops } } }]`),
  fromOtherByName: policyFromSpec('shop', 'from-other', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: other } } }]`),
  probersInOps: policyFromSpec('shop', 'probers-in-ops', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { team: ops } }, podSelector: { matchLabels: { app: prober } } }]`),
  opsOrProbers: policyFromSpec('shop', 'ops-or-probers', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { team: ops } } }, { podSelector: { matchLabels: { app: prober } } }]`),
  catalogPorts: policyFromSpec('shop', 'catalog-ports', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - ports: [{ port: http }, { protocol: UDP, port: dns }, { port: 9000, endPort: 9100 }]`),
  clientNamedEgress: policyFromSpec('shop', 'client-named', `  podSelector: { matchLabels: { app: client } }
  policyTypes: [Egress]
  egress:
  - to: [{ podSelector: { matchLabels: { app: catalog } } }]
    ports: [{ port: http }]
  - to: [{ podSelector: { matchLabels: { app: frontend } } }]
    ports: [{ port: metrics }]`),
  outsideNotHosts: policyFromSpec('shop', 'outside-not-hosts', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ ipBlock: { cidr: 0.0.0.0/0, except: [192.168.0.0/16] } }]`),
  outsideNotPods: policyFromSpec('shop', 'outside-not-pods', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ ipBlock: { cidr: 0.0.0.0/0, except: [192.168.0.0/16, 198.18.0.0/16] } }]`),
  fromProberPod: policyFromSpec('shop', 'from-prober-pod', `  podSelector: { matchLabels: { app: catalog } }
  ingress:
  - from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: prober } } }]`),
  aAllowAll: policyFromSpec('shop', 'a-allow-all', '  podSelector: { matchLabels: { app: catalog } }\n  ingress: [{}]'),
  egressOnlyWithIngressRules: policyFromSpec('shop', 'egress-only', `  podSelector: {}
  policyTypes: [Egress]
  ingress: [{ from: [{ podSelector: { matchLabels: { app: nobody } } }] }]
  egress: [{}]`),
};

interface Check {
  q: string;
  allowed: boolean;
  egress: Record<string, unknown>;
  ingress: Record<string, unknown>;
  reason?: string;
}
const open = (dir: 'Egress' | 'Ingress', pod: string) => ({ direction: dir, outcome: 'open', allowed: true, pod, reason: `no policy selects ${pod} for ${dir.toLowerCase()}` });
const notApplicable = (dir: 'Egress' | 'Ingress', what: string) => ({
  direction: dir, outcome: 'not-applicable', allowed: true, reason: `the ${dir === 'Egress' ? 'source' : 'destination'} ${what} is not a pod: no ${dir.toLowerCase()} policy applies`,
});
const allowedBy = (dir: 'Egress' | 'Ingress', pod: string, policy: string, ruleIndex: number, peerIndex: number | null, portIndex: number | null, selectedBy = [policy]) => ({
  direction: dir, outcome: 'allowed', allowed: true, pod, policy, ruleIndex, peerIndex, portIndex, selectedBy,
  reason: `allowed by ${policy} ${dir.toLowerCase()}[${ruleIndex}] (${peerIndex === null ? 'any peer' : `peer ${peerIndex}`}, ${portIndex === null ? 'any port' : `port ${portIndex}`})`,
});
const deniedBy = (dir: 'Egress' | 'Ingress', pod: string, selectedBy: string[], peer: string, portProto: string) => ({
  direction: dir, outcome: 'denied', allowed: false, pod, selectedBy,
  reason: `denied: ${pod} is selected for ${dir.toLowerCase()} by ${selectedBy.join(', ')}; none allows ${dir === 'Ingress' ? `ingress from ${peer}` : `egress to ${peer}`} on ${portProto}`,
});

const cases: { name: string; policies: NetworkPolicy[]; checks: Check[] }[] = [
  {
    name: 'no-policies',
    policies: [],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: true, egress: open('Egress', 'shop/client'), ingress: open('Ingress', 'shop/catalog'),
        reason: 'egress: no policy selects shop/client for egress; ingress: no policy selects shop/catalog for ingress' },
      { q: '203.0.113.7 -> shop/catalog:1/UDP', allowed: true, egress: notApplicable('Egress', 'address 203.0.113.7'), ingress: open('Ingress', 'shop/catalog') },
    ],
  },
  {
    name: 'all-ingress-deny',
    policies: [P.denyAllIngress],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: false, egress: open('Egress', 'shop/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/deny-all-ingress'], 'pod shop/client', '8080/TCP'),
        reason: 'ingress: denied: shop/catalog is selected for ingress by shop/deny-all-ingress; none allows ingress from pod shop/client on 8080/TCP' },
      { q: '203.0.113.7 -> shop/frontend:8080', allowed: false, egress: notApplicable('Egress', 'address 203.0.113.7'),
        ingress: deniedBy('Ingress', 'shop/frontend', ['shop/deny-all-ingress'], 'address 203.0.113.7', '8080/TCP') },
      { q: 'shop/catalog -> ops/prober:80', allowed: true, egress: open('Egress', 'shop/catalog'), ingress: open('Ingress', 'ops/prober') },
    ],
  },
  {
    name: 'all-egress-deny',
    policies: [P.denyAllEgress],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/deny-all-egress'], 'pod shop/catalog', '8080/TCP'),
        ingress: open('Ingress', 'shop/catalog'),
        reason: 'egress: denied: shop/client is selected for egress by shop/deny-all-egress; none allows egress to pod shop/catalog on 8080/TCP' },
      { q: 'shop/client -> 203.0.113.7:443', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/deny-all-egress'], 'address 203.0.113.7', '443/TCP'),
        ingress: notApplicable('Ingress', 'address 203.0.113.7') },
      { q: 'ops/client -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/client'), ingress: open('Ingress', 'shop/catalog') },
    ],
  },
  {
    name: 'client-egress',
    policies: [P.clientEgress],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: true, egress: allowedBy('Egress', 'shop/client', 'shop/client-egress', 0, 0, 0), ingress: open('Ingress', 'shop/catalog') },
      { q: 'shop/client -> shop/catalog:9090', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/client-egress'], 'pod shop/catalog', '9090/TCP'), ingress: open('Ingress', 'shop/catalog') },
      { q: 'shop/client -> shop/frontend:8080', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/client-egress'], 'pod shop/frontend', '8080/TCP'), ingress: open('Ingress', 'shop/frontend') },
      { q: 'shop/client -> 198.18.0.11:8080', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/client-egress'], 'address 198.18.0.11', '8080/TCP'),
        ingress: notApplicable('Ingress', 'address 198.18.0.11') },
      { q: 'shop/frontend -> shop/frontend:8080', allowed: true, egress: open('Egress', 'shop/frontend'), ingress: open('Ingress', 'shop/frontend') },
    ],
  },
  {
    name: 'client-ingress-from-namespace',
    policies: [P.fromOps, P.fromOtherByName],
    checks: [
      { q: 'ops/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/prober'),
        ingress: allowedBy('Ingress', 'shop/catalog', 'shop/from-ops', 0, 0, null, ['shop/from-ops', 'shop/from-other']) },
      { q: 'other/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'other/prober'),
        ingress: allowedBy('Ingress', 'shop/catalog', 'shop/from-other', 0, 0, null, ['shop/from-ops', 'shop/from-other']) },
      { q: 'shop/client -> shop/catalog:8080', allowed: false, egress: open('Egress', 'shop/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/from-ops', 'shop/from-other'], 'pod shop/client', '8080/TCP') },
      { q: '198.18.1.10 -> shop/catalog:8080', allowed: false, egress: notApplicable('Egress', 'address 198.18.1.10'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/from-ops', 'shop/from-other'], 'address 198.18.1.10', '8080/TCP') },
    ],
  },
  {
    name: 'pod-and-namespace-selector-together',
    policies: [P.probersInOps],
    checks: [
      { q: 'ops/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/prober'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/probers-in-ops', 0, 0, null) },
      { q: 'ops/client -> shop/catalog:8080', allowed: false, egress: open('Egress', 'ops/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/probers-in-ops'], 'pod ops/client', '8080/TCP') },
      { q: 'other/prober -> shop/catalog:8080', allowed: false, egress: open('Egress', 'other/prober'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/probers-in-ops'], 'pod other/prober', '8080/TCP') },
    ],
  },
  {
    name: 'pod-and-namespace-selector-separate',
    policies: [P.opsOrProbers],
    checks: [
      { q: 'ops/client -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/client'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/ops-or-probers', 0, 0, null) },
      { q: 'ops/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/prober'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/ops-or-probers', 0, 0, null) },
      // a podSelector alone means the policy's own namespace: a prober elsewhere does not match
      { q: 'other/prober -> shop/catalog:8080', allowed: false, egress: open('Egress', 'other/prober'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/ops-or-probers'], 'pod other/prober', '8080/TCP') },
    ],
  },
  {
    name: 'ports-and-named-ports',
    policies: [P.catalogPorts, P.clientNamedEgress],
    checks: [
      { q: 'ops/client -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/client'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/catalog-ports', 0, null, 0) },
      { q: 'ops/client -> shop/catalog:5353/UDP', allowed: true, egress: open('Egress', 'ops/client'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/catalog-ports', 0, null, 1) },
      { q: 'ops/client -> shop/catalog:5353/TCP', allowed: false, egress: open('Egress', 'ops/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/catalog-ports'], 'pod ops/client', '5353/TCP') },
      { q: 'ops/client -> shop/catalog:8080/UDP', allowed: false, egress: open('Egress', 'ops/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/catalog-ports'], 'pod ops/client', '8080/UDP') },
      { q: 'ops/client -> shop/catalog:9000', allowed: true, egress: open('Egress', 'ops/client'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/catalog-ports', 0, null, 2) },
      { q: 'ops/client -> shop/catalog:9100', allowed: true, egress: open('Egress', 'ops/client'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/catalog-ports', 0, null, 2) },
      { q: 'ops/client -> shop/catalog:9101', allowed: false, egress: open('Egress', 'ops/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/catalog-ports'], 'pod ops/client', '9101/TCP') },
      { q: 'ops/client -> shop/catalog:8999', allowed: false, egress: open('Egress', 'ops/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/catalog-ports'], 'pod ops/client', '8999/TCP') },
      // an egress named port resolves against the destination pod (the client has no port named http)
      { q: 'shop/client -> shop/catalog:8080', allowed: true, egress: allowedBy('Egress', 'shop/client', 'shop/client-named', 0, 0, 0), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/catalog-ports', 0, null, 0) },
      // the frontend has no port named metrics: the rule matches nothing
      { q: 'shop/client -> shop/frontend:9090', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/client-named'], 'pod shop/frontend', '9090/TCP'), ingress: open('Ingress', 'shop/frontend') },
      // a named port never matches an address
      { q: 'shop/client -> 198.18.0.11:8080', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/client-named'], 'address 198.18.0.11', '8080/TCP'), ingress: notApplicable('Ingress', 'address 198.18.0.11') },
    ],
  },
  {
    name: 'ipblock-with-except',
    policies: [P.outsideNotHosts],
    checks: [
      { q: '203.0.113.7 -> shop/catalog:8080', allowed: true, egress: notApplicable('Egress', 'address 203.0.113.7'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/outside-not-hosts', 0, 0, null) },
      { q: '192.168.122.1 -> shop/catalog:8080', allowed: false, egress: notApplicable('Egress', 'address 192.168.122.1'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/outside-not-hosts'], 'address 192.168.122.1', '8080/TCP'),
        reason: 'ingress: denied: shop/catalog is selected for ingress by shop/outside-not-hosts; none allows ingress from address 192.168.122.1 on 8080/TCP' },
      // ipBlocks match pods' addresses too
      { q: 'shop/client -> shop/catalog:8080', allowed: true, egress: open('Egress', 'shop/client'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/outside-not-hosts', 0, 0, null) },
      // a pod whose address is not known matches no ipBlock
      { q: 'other/prober -> shop/catalog:8080', allowed: false, egress: open('Egress', 'other/prober'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/outside-not-hosts'], 'pod other/prober', '8080/TCP') },
      // an IPv6 source is outside an IPv4 block
      { q: '2001:db8::1 -> shop/catalog:8080', allowed: false, egress: notApplicable('Egress', 'address 2001:db8::1'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/outside-not-hosts'], 'address 2001:db8::1', '8080/TCP') },
    ],
  },
  {
    name: 'ipblock-except-pods',
    policies: [P.outsideNotPods],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: false, egress: open('Egress', 'shop/client'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/outside-not-pods'], 'pod shop/client', '8080/TCP') },
      { q: '198.19.0.1 -> shop/catalog:8080', allowed: true, egress: notApplicable('Egress', 'address 198.19.0.1'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/outside-not-pods', 0, 0, null) },
    ],
  },
  {
    name: 'spoofed-pod-address',
    policies: [P.fromProberPod],
    checks: [
      { q: 'ops/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/prober'), ingress: allowedBy('Ingress', 'shop/catalog', 'shop/from-prober-pod', 0, 0, null) },
      // the prober's address, not from the prober: selectors match pods, never addresses
      { q: '198.18.1.10 -> shop/catalog:8080', allowed: false, egress: notApplicable('Egress', 'address 198.18.1.10'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/from-prober-pod'], 'address 198.18.1.10', '8080/TCP') },
    ],
  },
  {
    name: 'egress-and-ingress-both-needed',
    policies: [P.clientEgress, P.denyAllIngress],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: false, egress: allowedBy('Egress', 'shop/client', 'shop/client-egress', 0, 0, 0),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/deny-all-ingress'], 'pod shop/client', '8080/TCP'),
        reason: 'ingress: denied: shop/catalog is selected for ingress by shop/deny-all-ingress; none allows ingress from pod shop/client on 8080/TCP' },
    ],
  },
  {
    name: 'both-directions-denied',
    policies: [P.denyAllEgress, P.denyAllIngress],
    checks: [
      { q: 'shop/client -> shop/catalog:8080', allowed: false, egress: deniedBy('Egress', 'shop/client', ['shop/deny-all-egress'], 'pod shop/catalog', '8080/TCP'),
        ingress: deniedBy('Ingress', 'shop/catalog', ['shop/deny-all-ingress'], 'pod shop/client', '8080/TCP'),
        reason: 'egress: denied: shop/client is selected for egress by shop/deny-all-egress; none allows egress to pod shop/catalog on 8080/TCP; '
          + 'ingress: denied: shop/catalog is selected for ingress by shop/deny-all-ingress; none allows ingress from pod shop/client on 8080/TCP' },
    ],
  },
  {
    name: 'first-allowing-policy-by-name',
    // given in reverse order; the verdict names the first by namespace/name
    policies: [P.fromOps, P.denyAllIngress, P.aAllowAll],
    checks: [
      { q: 'ops/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/prober'),
        ingress: allowedBy('Ingress', 'shop/catalog', 'shop/a-allow-all', 0, null, null, ['shop/a-allow-all', 'shop/deny-all-ingress', 'shop/from-ops']) },
    ],
  },
  {
    name: 'rules-of-a-direction-not-in-policyTypes-are-ignored',
    policies: [P.egressOnlyWithIngressRules],
    checks: [
      { q: 'ops/prober -> shop/catalog:8080', allowed: true, egress: open('Egress', 'ops/prober'), ingress: open('Ingress', 'shop/catalog') },
      { q: 'shop/catalog -> ops/prober:80', allowed: true, egress: allowedBy('Egress', 'shop/catalog', 'shop/egress-only', 0, null, null), ingress: open('Ingress', 'ops/prober') },
    ],
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    for (const check of c.checks) {
      const v = explainConnection(world(c.policies), query(check.q));
      if (v.kind !== 'verdict') {
        t.fail(`${check.q}: expected a verdict, got the problem ${v.reason}`);
        continue;
      }
      t.equal(v.allowed, check.allowed, `${check.q} is ${check.allowed ? 'allowed' : 'denied'}`);
      t.same(v.egress, check.egress, `${check.q}: egress verdict`);
      t.same(v.ingress, check.ingress, `${check.q}: ingress verdict`);
      if (check.reason !== undefined) t.equal(v.reason, check.reason, `${check.q}: reason`);
    }
  });
}

t.test('queries naming nothing are problems, not verdicts', async (t) => {
  const cases: [ConnectionQuery, unknown][] = [
    [query('shop/nobody -> shop/catalog:80'), { kind: 'problem', field: 'from', reason: 'no pod shop/nobody' }],
    [query('shop/client -> nowhere/catalog:80'), { kind: 'problem', field: 'to', reason: 'no pod nowhere/catalog' }],
    [query('300.1.1.1 -> shop/catalog:80'), { kind: 'problem', field: 'from', reason: '"300.1.1.1" is not an IPv4 or IPv6 address' }],
    [{ ...query('shop/client -> shop/catalog:80'), port: 0 }, { kind: 'problem', field: 'port', reason: 'must be a port number (1-65535), got 0' }],
    [{ ...query('shop/client -> shop/catalog:80'), port: 65536 }, { kind: 'problem', field: 'port', reason: 'must be a port number (1-65535), got 65536' }],
  ];
  for (const [q, want] of cases) t.same(explainConnection(world([]), q), want, JSON.stringify(q));
});

t.test('policiesSelecting lists the policies that select a pod for a direction, by name', async (t) => {
  const all = [P.fromOps, P.denyAllIngress, P.clientEgress, P.denyAllEgress, P.catalogPorts];
  const names = (pod: { namespace: string; labels: Record<string, string> }, dir: 'Ingress' | 'Egress') =>
    policiesSelecting(all, pod, dir).map((p) => p.meta.name);
  t.same(names({ namespace: 'shop', labels: { app: 'catalog' } }, 'Ingress'), ['catalog-ports', 'deny-all-ingress', 'from-ops']);
  t.same(names({ namespace: 'shop', labels: { app: 'catalog' } }, 'Egress'), ['deny-all-egress']);
  t.same(names({ namespace: 'shop', labels: { app: 'client' } }, 'Egress'), ['client-egress', 'deny-all-egress']);
  t.same(names({ namespace: 'ops', labels: { app: 'catalog' } }, 'Ingress'), [], 'policies select pods of their own namespace only');
});
