import t from 'tap';
import { isPortName, parseNetworkPolicy } from '../../policies/network-policy.js';
import { describeSelector } from '../../policies/label-selector.js';
import { parsePolicyYaml, RecordingSink, testMeta } from '../fixtures/policies.js';

const doc = (spec: string) => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: np, namespace: shop }
spec:
${spec}`;

t.test('a full NetworkPolicy parses into the model', async (t) => {
  const { policy, problems } = parsePolicyYaml(doc(`  podSelector: { matchLabels: { app: catalog } }
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: { matchLabels: { app: frontend } }
    - namespaceSelector: { matchLabels: { team: ops } }
      podSelector: { matchLabels: { app: prober } }
    - namespaceSelector: {}
    - ipBlock: { cidr: 10.1.2.3/8, except: [10.9.0.0/16] }
    - ipBlock: { cidr: "2001:db8::/32" }
    ports:
    - { port: http }
    - { protocol: UDP, port: 53 }
    - { port: 8000, endPort: 8080 }
    - { protocol: SCTP }
  egress:
  - {}
`));
  t.same(problems, [], 'no problems');
  t.equal(describeSelector(policy.podSelector), 'app=catalog');
  t.same(policy.policyTypes, ['Ingress', 'Egress']);
  t.equal(policy.ingress.length, 1, 'one ingress rule');
  const [r] = policy.ingress;
  t.match(r!.peers, [
    { kind: 'pods', podSelector: { matchLabels: { app: 'frontend' } } },
    { kind: 'pods', podSelector: { matchLabels: { app: 'prober' } }, namespaceSelector: { matchLabels: { team: 'ops' } } },
    { kind: 'pods', podSelector: { matchLabels: {}, matchExpressions: [] }, namespaceSelector: { matchLabels: {} } },
    { kind: 'ipBlock', ipBlock: { cidr: '10.1.2.3/8', block: { text: '10.0.0.0/8' }, except: [{ text: '10.9.0.0/16' }], ipv6: false } },
    { kind: 'ipBlock', ipBlock: { cidr: '2001:db8::/32', ipv6: true, except: [] } },
  ]);
  t.notOk('namespaceSelector' in r!.peers[0]!, 'a podSelector alone means the policy\'s namespace (no namespaceSelector)');
  t.same(r!.ports, [
    { protocol: 'TCP', port: 'http' },
    { protocol: 'UDP', port: 53 },
    { protocol: 'TCP', port: 8000, endPort: 8080 },
    { protocol: 'SCTP' },
  ]);
  t.same(policy.egress, [{ peers: [], ports: [] }], 'an empty egress rule: every peer, every port');
});

t.test('policyTypes defaults as Kubernetes does', async (t) => {
  const cases: [string, string[], number, number][] = [
    ['  podSelector: {}', ['Ingress'], 0, 0],
    ['  podSelector: {}\n  policyTypes: []', ['Ingress'], 0, 0],
    ['  podSelector: {}\n  ingress: []', ['Ingress'], 0, 0],
    ['  podSelector: {}\n  egress: [{}]', ['Ingress', 'Egress'], 0, 1],
    ['  podSelector: {}\n  egress: []', ['Ingress', 'Egress'], 0, 0],
    ['  podSelector: {}\n  policyTypes: [Egress]', ['Egress'], 0, 0],
    ['  podSelector: {}\n  policyTypes: [Egress, Egress]', ['Egress'], 0, 0],
    ['  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]', ['Egress'], 1, 0],
  ];
  for (const [spec, types, nIn, nEg] of cases) {
    const { policy, problems } = parsePolicyYaml(doc(spec));
    t.same(problems, [], `${JSON.stringify(spec)} parses`);
    t.same(policy.policyTypes, types, `${JSON.stringify(spec)}: policyTypes ${types.join(',')}`);
    t.same([policy.ingress.length, policy.egress.length], [nIn, nEg], `${JSON.stringify(spec)}: rule counts`);
  }
});

t.test('what Kubernetes refuses (and misspelt fields) names the field and the reason', async (t) => {
  const cases: [string, string, string[]][] = [
    ['no spec', '', ['spec: required (at least spec.podSelector; {} selects every pod of the namespace)']],
    ['no podSelector', '  ingress: []', ['spec.podSelector: required: the pods this policy applies to ({} selects every pod of the namespace)']],
    ['unknown spec field', '  podSelector: {}\n  ingres: []', ['spec.ingres: unknown field; a NetworkPolicy spec has podSelector, policyTypes, ingress, egress']],
    ['misspelt from', '  podSelector: {}\n  ingress: [{ form: [{ podSelector: {} }] }]', ['spec.ingress[0].form: unknown field; an ingress rule has from, ports']],
    ['misspelt to', '  podSelector: {}\n  egress: [{ too: [] }]', ['spec.egress[0].too: unknown field; an egress rule has to, ports']],
    ['bad policyType', '  podSelector: {}\n  policyTypes: [Ingress, ingress]', ['spec.policyTypes[1]: must be Ingress or Egress, got "ingress"']],
    ['policyTypes not a list', '  podSelector: {}\n  policyTypes: Ingress', ['spec.policyTypes: must be a list of "Ingress" and/or "Egress", got "Ingress"']],
    ['ingress not a list', '  podSelector: {}\n  ingress: { from: [] }', ['spec.ingress: must be a list of rules ({from, ports}), got {"from":[]}']],
    ['rule not a map', '  podSelector: {}\n  ingress: [allow]', ['spec.ingress[0]: must be a map with from and ports (both optional; {} allows everything), got "allow"']],
    ['empty peer', '  podSelector: {}\n  ingress: [{ from: [{ podSelector: {} }, {}] }]', ['spec.ingress[0].from[1]: an empty peer selects nothing: give podSelector, namespaceSelector (both: pods matching in namespaces matching) or ipBlock; to allow every peer leave out the whole from/to list']],
    ['ipBlock with podSelector', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/8 }, podSelector: {} }] }]', ['spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector in one peer; make them two entries (either one then allows)']],
    ['ipBlock with namespaceSelector', '  podSelector: {}\n  egress: [{ to: [{ ipBlock: { cidr: 10.0.0.0/8 }, namespaceSelector: {} }] }]', ['spec.egress[0].to[0]: ipBlock cannot be combined with namespaceSelector in one peer; make them two entries (either one then allows)']],
    ['unknown peer field', '  podSelector: {}\n  ingress: [{ from: [{ podSelector: {}, serviceAccount: x }] }]', ['spec.ingress[0].from[0].serviceAccount: unknown field; a peer has podSelector, namespaceSelector, ipBlock']],
    ['bad peer selector', '  podSelector: {}\n  ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "a/b" } } }] }]', ['spec.ingress[0].from[0].namespaceSelector.matchLabels.team: "a/b" is not a label value (63 characters at most: letters, digits, \'-\', \'_\', \'.\', starting and ending with a letter or digit)']],
    ['no cidr', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { except: [10.0.0.0/8] } }] }]', ['spec.ingress[0].from[0].ipBlock.cidr: required (e.g. "10.0.0.0/8")']],
    ['bad cidr', '  podSelector: {}\n  ingress: [{ from: [{ podSelector: {} }, { ipBlock: { cidr: 10.0.0.0 } }] }]', ['spec.ingress[0].from[1].ipBlock.cidr: must be a CIDR (an address and a prefix length, e.g. "10.0.0.0/8"), got "10.0.0.0"']],
    ['except outside', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/8, except: [10.1.0.0/16, 11.0.0.0/16] } }] }]', ['spec.ingress[0].from[0].ipBlock.except[1]: must lie strictly inside cidr 10.0.0.0/8 (same family, a longer prefix), got 11.0.0.0/16']],
    ['except wider', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { cidr: 10.1.0.0/16, except: [10.0.0.0/8] } }] }]', ['spec.ingress[0].from[0].ipBlock.except[0]: must lie strictly inside cidr 10.1.0.0/16 (same family, a longer prefix), got 10.0.0.0/8']],
    ['except equal', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/8, except: [10.0.0.0/8] } }] }]', ['spec.ingress[0].from[0].ipBlock.except[0]: must lie strictly inside cidr 10.0.0.0/8 (same family, a longer prefix), got 10.0.0.0/8']],
    ['except other family', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { cidr: 0.0.0.0/0, except: ["::1/128"] } }] }]', ['spec.ingress[0].from[0].ipBlock.except[0]: must lie strictly inside cidr 0.0.0.0/0 (same family, a longer prefix), got 0:0:0:0:0:0:0:1/128']],
    ['bad except', '  podSelector: {}\n  ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/8, except: [10.1.0.0/40] } }] }]', ['spec.ingress[0].from[0].ipBlock.except[0]: the prefix length must be 0-32 for an IPv4 address, got "40"']],
    ['bad protocol', '  podSelector: {}\n  ingress: [{ ports: [{ protocol: tcp, port: 80 }] }]', ['spec.ingress[0].ports[0].protocol: must be TCP, UDP or SCTP, got "tcp"']],
    ['port 0', '  podSelector: {}\n  ingress: [{ ports: [{ port: 0 }] }]', ['spec.ingress[0].ports[0].port: must be a port number (1-65535) or a port name, got 0']],
    ['port too big', '  podSelector: {}\n  egress: [{ ports: [{ port: 70000 }] }]', ['spec.egress[0].ports[0].port: must be a port number (1-65535) or a port name, got 70000']],
    ['numeric string port', '  podSelector: {}\n  ingress: [{ ports: [{ port: "80" }] }]', ['spec.ingress[0].ports[0].port: must be a port number (1-65535) or a port name: 15 characters at most, lowercase letters, digits and single \'-\' inside, at least one letter, got "80"']],
    ['bad port name', '  podSelector: {}\n  ingress: [{ ports: [{ port: Web_Port }] }]', ['spec.ingress[0].ports[0].port: must be a port number (1-65535) or a port name: 15 characters at most, lowercase letters, digits and single \'-\' inside, at least one letter, got "Web_Port"']],
    ['endPort below port', '  podSelector: {}\n  ingress: [{ ports: [{ port: 8080, endPort: 8000 }] }]', ['spec.ingress[0].ports[0].endPort: must be at least port (8080), got 8000']],
    ['endPort too big', '  podSelector: {}\n  ingress: [{ ports: [{ port: 8080, endPort: 65536 }] }]', ['spec.ingress[0].ports[0].endPort: must be a port number (1-65535), got 65536']],
    ['endPort with a named port', '  podSelector: {}\n  ingress: [{ ports: [{ port: http, endPort: 90 }] }]', ['spec.ingress[0].ports[0].endPort: needs a numeric port, not the named port "http": the range is port..endPort']],
    ['endPort without port', '  podSelector: {}\n  ingress: [{ ports: [{ endPort: 90 }] }]', ['spec.ingress[0].ports[0].endPort: needs a numeric port: the range is port..endPort']],
    ['unknown port field', '  podSelector: {}\n  ingress: [{ ports: [{ port: 80, targetPort: 8080 }] }]', ['spec.ingress[0].ports[0].targetPort: unknown field; a port has protocol, port, endPort']],
    ['two problems in two rules', '  podSelector: { matchLabels: { app: 1 } }\n  ingress: [{ ports: [{ port: -1 }] }]\n  egress: [{ to: [{}] }]', [
      'spec.podSelector.matchLabels.app: must be a string, got 1 (quote it: "1")',
      'spec.ingress[0].ports[0].port: must be a port number (1-65535) or a port name, got -1',
      'spec.egress[0].to[0]: an empty peer selects nothing: give podSelector, namespaceSelector (both: pods matching in namespaces matching) or ipBlock; to allow every peer leave out the whole from/to list',
    ]],
  ];
  for (const [name, spec, want] of cases) {
    const text = spec === '' ? 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: np, namespace: shop }\n' : doc(spec);
    t.same(parsePolicyYaml(text).problems, want, name);
  }
});

t.test('a non-map spec is refused', async (t) => {
  const p = new RecordingSink();
  parseNetworkPolicy(p, { spec: [1] }, testMeta('shop', 'np'));
  t.same(p.problems, ['spec: must be a map, got [1]']);
});

t.test('port names follow IANA_SVC_NAME', async (t) => {
  const cases: [string, boolean][] = [
    ['http', true], ['http-alt', true], ['h2c', true], ['a', true], ['abcdefghijklmno', true],
    ['abcdefghijklmnop', false], ['80', false], ['-http', false], ['http-', false], ['ht--tp', false], ['HTTP', false], ['', false], ['web_port', false],
  ];
  for (const [name, ok] of cases) t.equal(isPortName(name), ok, `${JSON.stringify(name)} ${ok ? 'is' : 'is not'} a port name`);
});
