import t from 'tap';
import type { ObjectMeta } from '../../mesh-agent/cluster/model.js';
import { parseAuthorizationPolicy, policiesFor, principalOf, type AuthorizationPolicy } from '../../policies/authorization-policy.js';

const meta: ObjectMeta = { name: 'p', namespace: 'shop', labels: {}, annotations: {}, source: 'test.yaml#1' };

function parse(spec: unknown): { policy: AuthorizationPolicy; problems: [string, string][] } {
  const problems: [string, string][] = [];
  const policy = parseAuthorizationPolicy({ add: (f, r) => problems.push([f, r]) }, spec === undefined ? {} : { spec }, meta);
  return { policy, problems };
}

t.test('well-formed policies parse to the typed form', async (t) => {
  const cases: [string, unknown, Partial<AuthorizationPolicy>][] = [
    ['no spec: ALLOW with no rules (allow nothing)', undefined, { action: 'ALLOW', rules: [] }],
    ['empty spec: the same', {}, { action: 'ALLOW', rules: [] }],
    ['a rule {} matches everything', { rules: [{}] }, { action: 'ALLOW', rules: [{}] }],
    ['DENY POST with a selector', { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'] } }] }] },
      { action: 'DENY', selector: { app: 'web' }, rules: [{ to: [{ methods: ['POST'] }] }] }],
    ['sources, operations and conditions', {
      action: 'AUDIT',
      rules: [{
        from: [{ source: { principals: ['cluster.local/ns/shop/sa/front'], notNamespaces: ['dev*'], ipBlocks: ['10.0.0.0/8', '198.18.0.5'], notIpBlocks: ['10.1.0.0/16'] } }],
        to: [{ operation: { paths: ['/public/*', '*.js', '/exact'], notPaths: ['/public/secret'], ports: ['8080'], notPorts: ['9090'], hosts: ['Web.Shop*'], notMethods: ['DELETE'] } }],
        when: [
          { key: 'request.headers[X-User]', values: ['alice', 'bob*'] },
          { key: 'source.ip', notValues: ['198.18.0.9/32'] },
          { key: 'source.namespace', values: ['shop'] },
          { key: 'source.principal', values: ['*'] },
          { key: 'destination.port', values: ['8080'] },
        ],
      }],
    }, {
      action: 'AUDIT',
      rules: [{
        from: [{ principals: ['cluster.local/ns/shop/sa/front'], notNamespaces: ['dev*'], ipBlocks: ['10.0.0.0/8', '198.18.0.5'], notIpBlocks: ['10.1.0.0/16'] }],
        to: [{ paths: ['/public/*', '*.js', '/exact'], notPaths: ['/public/secret'], ports: [8080], notPorts: [9090], hosts: ['web.shop*'], notMethods: ['DELETE'] }],
        when: [
          { key: 'request.headers', header: 'x-user', values: ['alice', 'bob*'] },
          { key: 'source.ip', notValues: ['198.18.0.9/32'] },
          { key: 'source.namespace', values: ['shop'] },
          { key: 'source.principal', values: ['*'] },
          { key: 'destination.port', values: ['8080'] },
        ],
      }],
    }],
  ];
  for (const [name, spec, want] of cases) {
    const { policy, problems } = parse(spec);
    t.same(problems, [], `${name}: no problems`);
    t.match(policy, { kind: 'AuthorizationPolicy', meta, ...want }, `${name}: parsed form`);
    if (want.rules) t.same(policy.rules, want.rules, `${name}: exactly these rules`);
  }
});

t.test('problems name the field and say what was expected and what was got', async (t) => {
  const r0 = (rule: unknown) => ({ rules: [rule] });
  const from = (source: unknown) => r0({ from: [{ source }] });
  const to = (operation: unknown) => r0({ to: [{ operation }] });
  const when = (c: unknown) => r0({ when: [c] });
  const cases: [string, unknown, string, RegExp][] = [
    ['spec not a map', 'x', 'spec', /must be a map/],
    ['CUSTOM', { action: 'CUSTOM' }, 'spec.action', /CUSTOM .* not supported by sockmesh/],
    ['unknown action', { action: 'allow' }, 'spec.action', /must be ALLOW, DENY or AUDIT, got "allow"/],
    ['provider', { provider: { name: 'x' } }, 'spec.provider', /only for action CUSTOM/],
    ['targetRefs', { targetRefs: [{ kind: 'Service', name: 'web' }] }, 'spec.targetRefs', /not supported by sockmesh; select workloads with spec.selector.matchLabels/],
    ['typo in spec', { rule: [] }, 'spec.rule', /unknown field \(selector, action, rules are known\)/],
    ['selector label value', { selector: { matchLabels: { app: 7 } } }, 'spec.selector.matchLabels.app', /must be a label value .* got 7/],
    ['selector without matchLabels', { selector: { app: 'web' } }, 'spec.selector.app', /unknown field \(matchLabels are known\)/],
    ['rules not a list', { rules: {} }, 'spec.rules', /must be a list/],
    ['rule not a map', { rules: ['x'] }, 'spec.rules[0]', /must be a map/],
    ['empty from', r0({ from: [] }), 'spec.rules[0].from', /must not be empty \(leave it out to match every caller\)/],
    ['from without source', r0({ from: [{}] }), 'spec.rules[0].from[0].source', /required/],
    ['empty source', from({}), 'spec.rules[0].from[0].source', /must not be empty/],
    ['requestPrincipals', from({ requestPrincipals: ['iss/sub'] }), 'spec.rules[0].from[0].source.requestPrincipals', /not supported by sockmesh: it has no request authentication \(JWT\)/],
    ['remoteIpBlocks', from({ remoteIpBlocks: ['1.2.3.4'] }), 'spec.rules[0].from[0].source.remoteIpBlocks', /sees the caller directly/],
    ['bad CIDR', from({ ipBlocks: ['10.0.0.0/33'] }), 'spec.rules[0].from[0].source.ipBlocks[0]', /prefix length must be 0-32 .* got "33"/],
    ['not an IP', from({ notIpBlocks: ['10.0.0.0', 'web'] }), 'spec.rules[0].from[0].source.notIpBlocks[1]', /must be an IP address or a CIDR .* got "web"/],
    ['empty principals list', from({ principals: [] }), 'spec.rules[0].from[0].source.principals', /at least one value/],
    ['star in the middle', from({ principals: ['cluster.local/ns/*/sa/x'] }), 'spec.rules[0].from[0].source.principals[0]', /"\*" may only stand alone, start the value .* or end it/],
    ['number for a namespace', from({ namespaces: [1] }), 'spec.rules[0].from[0].source.namespaces[0]', /must be a string, got 1/],
    ['empty to', r0({ to: [] }), 'spec.rules[0].to', /must not be empty/],
    ['empty operation', to({}), 'spec.rules[0].to[0].operation', /must not be empty/],
    ['empty method', to({ methods: [''] }), 'spec.rules[0].to[0].operation.methods[0]', /must not be empty/],
    ['method with a space', to({ methods: ['GE T'] }), 'spec.rules[0].to[0].operation.methods[0]', /must be an HTTP method such as "GET", got "GE T"/],
    ['port as a number', to({ ports: [8080] }), 'spec.rules[0].to[0].operation.ports[0]', /must be a port written as a string \(e.g. "8080"\), got the number 8080/],
    ['port 0', to({ notPorts: ['0'] }), 'spec.rules[0].to[0].operation.notPorts[0]', /must be a port 1-65535 .* got "0"/],
    ['port too big', to({ ports: ['65536'] }), 'spec.rules[0].to[0].operation.ports[0]', /must be a port 1-65535/],
    ['path without /', to({ paths: ['public'] }), 'spec.rules[0].to[0].operation.paths[0]', /must start with "\/" .* got "public"/],
    ['path template', to({ paths: ['/a/{*}/b'] }), 'spec.rules[0].to[0].operation.paths[0]', /path templates .* not supported/],
    ['typo in operation', to({ notPath: ['/x'] }), 'spec.rules[0].to[0].operation.notPath', /unknown field/],
    ['when without values', when({ key: 'source.ip' }), 'spec.rules[0].when[0]', /needs values or notValues/],
    ['when without key', when({ values: ['x'] }), 'spec.rules[0].when[0].key', /required: one of request.headers\[<name>\]/],
    ['JWT claim key', when({ key: 'request.auth.claims[iss]', values: ['x'] }), 'spec.rules[0].when[0].key', /"request.auth.claims\[iss\]" is not supported by sockmesh: it has no request authentication/],
    ['unknown key', when({ key: 'connection.sni', values: ['x'] }), 'spec.rules[0].when[0].key', /"connection.sni" is not supported by sockmesh \(supported: request.headers\[<name>\], source.ip/],
    ['remote.ip', when({ key: 'remote.ip', values: ['1.2.3.4'] }), 'spec.rules[0].when[0].key', /sees the caller directly/],
    ['bad header name', when({ key: 'request.headers[a b]', values: ['x'] }), 'spec.rules[0].when[0].key', /header name must be a token/],
    ['bad source.ip value', when({ key: 'source.ip', values: ['x'] }), 'spec.rules[0].when[0].values[0]', /must be an IP address or a CIDR/],
    ['bad destination.port value', when({ key: 'destination.port', notValues: ['http'] }), 'spec.rules[0].when[0].notValues[0]', /must be a port 1-65535 .* got "http"/],
  ];
  for (const [name, spec, field, reason] of cases) {
    const { problems } = parse(spec);
    const hit = problems.find(([f]) => f === field);
    t.ok(hit, `${name}: a problem at ${field} (got ${JSON.stringify(problems)})`);
    if (hit) t.match(hit[1], reason, `${name}: the reason`);
  }
});

t.test('a policy applies to the workloads of its namespace its selector picks', async (t) => {
  const mk = (name: string, namespace: string, selector?: Record<string, string>): AuthorizationPolicy => ({
    kind: 'AuthorizationPolicy', meta: { ...meta, name, namespace }, action: 'ALLOW', rules: [], ...(selector && { selector }),
  });
  const ps = [mk('z-all', 'shop'), mk('web', 'shop', { app: 'web' }), mk('db', 'shop', { app: 'db' }), mk('other', 'dev')];
  const names = (labels: Record<string, string>, namespace = 'shop') => policiesFor(ps, { namespace, labels }).map((p) => p.meta.name);
  t.same(names({ app: 'web', v: '1' }), ['web', 'z-all'], 'matching selector and no selector, in name order');
  t.same(names({ app: 'api' }), ['z-all'], 'only the namespace-wide one');
  t.same(names({ app: 'web' }, 'prod'), [], 'nothing from other namespaces');
  t.equal(principalOf('shop', 'front'), 'cluster.local/ns/shop/sa/front');
});
