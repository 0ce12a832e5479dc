import t from 'tap';
import { parse } from 'yaml';
import { describeSelector, EVERYTHING, isEverything, parseLabelSelector, selectorMatches } from '../../policies/label-selector.js';
import { RecordingSink } from '../fixtures/policies.js';

const sel = (yaml: string) => {
  const p = new RecordingSink();
  const s = parseLabelSelector(p, parse(yaml), 'spec.podSelector');
  return { s, problems: p.problems };
};

t.test('valid selectors parse and describe themselves in kubectl notation', async (t) => {
  const cases: [string, string][] = [
    ['{}', '{}'],
    ['null', '{}'],
    ['{ matchLabels: { app: web } }', 'app=web'],
    ['{ matchLabels: { app: web, example.com/tier: "" } }', 'app=web,example.com/tier='],
    [`{ matchExpressions: [
        { key: tier, operator: In, values: [a, b] },
        { key: env, operator: NotIn, values: [prod] },
        { key: debug, operator: Exists },
        { key: canary, operator: DoesNotExist, values: [] } ] }`, 'tier in (a,b),env notin (prod),debug,!canary'],
  ];
  for (const [yaml, want] of cases) {
    const { s, problems } = sel(yaml);
    t.same(problems, [], `${yaml} has no problems`);
    t.equal(describeSelector(s), want, `${yaml} is described as ${want}`);
  }
  t.ok(isEverything(sel('{}').s), '{} is everything');
  t.notOk(isEverything(sel('{ matchLabels: { a: b } }').s), 'matchLabels is not everything');
});

t.test('invalid selectors name the field and the reason', async (t) => {
  const cases: [string, string[]][] = [
    ['[app]', ['spec.podSelector: must be a label selector (a map with matchLabels and/or matchExpressions; {} selects all), got ["app"]']],
    ['{ app: web }', ['spec.podSelector.app: unknown field; a label selector has matchLabels, matchExpressions']],
    ['{ matchLabels: { app: 1 } }', ['spec.podSelector.matchLabels.app: must be a string, got 1 (quote it: "1")']],
    ['{ matchLabels: { "-bad": x } }', ['spec.podSelector.matchLabels.-bad: "-bad" is not a label key (an optional DNS prefix and "/", then 63 characters at most: letters, digits, \'-\', \'_\', \'.\')']],
    ['{ matchLabels: { app: "a b" } }', ['spec.podSelector.matchLabels.app: "a b" is not a label value (63 characters at most: letters, digits, \'-\', \'_\', \'.\', starting and ending with a letter or digit)']],
    ['{ matchLabels: [app] }', ['spec.podSelector.matchLabels: must be a map of label keys to values, got ["app"]']],
    ['{ matchExpressions: { key: a } }', ['spec.podSelector.matchExpressions: must be a list of {key, operator, values}, got {"key":"a"}']],
    ['{ matchExpressions: [ { key: a, operator: Equals, values: [x] } ] }', ['spec.podSelector.matchExpressions[0].operator: must be In, NotIn, Exists or DoesNotExist, got "Equals"']],
    ['{ matchExpressions: [ { key: a } ] }', ['spec.podSelector.matchExpressions[0].operator: required (In, NotIn, Exists or DoesNotExist)']],
    ['{ matchExpressions: [ { operator: Exists } ] }', ['spec.podSelector.matchExpressions[0].key: required']],
    ['{ matchExpressions: [ { key: a, operator: In } ] }', ['spec.podSelector.matchExpressions[0].values: must list at least one value for operator In']],
    ['{ matchExpressions: [ { key: a, operator: NotIn, values: [] } ] }', ['spec.podSelector.matchExpressions[0].values: must list at least one value for operator NotIn']],
    ['{ matchExpressions: [ { key: a, operator: Exists, values: [x] } ] }', ['spec.podSelector.matchExpressions[0].values: must be empty for operator Exists, got ["x"]']],
    ['{ matchExpressions: [ { key: a, operator: In, values: [1, "b c"] } ] }', [
      'spec.podSelector.matchExpressions[0].values[0]: must be a string, got 1 (quote it: "1")',
      'spec.podSelector.matchExpressions[0].values[1]: "b c" is not a label value (63 characters at most: letters, digits, \'-\', \'_\', \'.\', starting and ending with a letter or digit)',
    ]],
    ['{ matchExpressions: [ { key: a, operator: In, value: [x] } ] }', [
      'spec.podSelector.matchExpressions[0].value: unknown field; a matchExpressions term has key, operator, values',
      'spec.podSelector.matchExpressions[0].values: must list at least one value for operator In',
    ]],
  ];
  for (const [yaml, want] of cases) t.same(sel(yaml).problems, want, yaml);
});

t.test('matching follows Kubernetes', async (t) => {
  const labels = { app: 'web', tier: 'front' };
  const cases: [string, Record<string, string>, boolean][] = [
    ['{}', {}, true],
    ['{}', labels, true],
    ['{ matchLabels: { app: web } }', labels, true],
    ['{ matchLabels: { app: web, tier: back } }', labels, false],
    ['{ matchLabels: { app: web } }', {}, false],
    ['{ matchExpressions: [ { key: tier, operator: In, values: [front, back] } ] }', labels, true],
    ['{ matchExpressions: [ { key: tier, operator: In, values: [back] } ] }', labels, false],
    ['{ matchExpressions: [ { key: env, operator: In, values: [""] } ] }', labels, false],
    ['{ matchExpressions: [ { key: tier, operator: NotIn, values: [front] } ] }', labels, false],
    ['{ matchExpressions: [ { key: env, operator: NotIn, values: [prod] } ] }', labels, true],
    ['{ matchExpressions: [ { key: app, operator: Exists } ] }', labels, true],
    ['{ matchExpressions: [ { key: env, operator: Exists } ] }', labels, false],
    ['{ matchExpressions: [ { key: env, operator: DoesNotExist } ] }', labels, true],
    ['{ matchExpressions: [ { key: app, operator: DoesNotExist } ] }', labels, false],
    ['{ matchLabels: { app: web }, matchExpressions: [ { key: tier, operator: NotIn, values: [front] } ] }', labels, false],
  ];
  for (const [yaml, l, want] of cases) {
    const { s, problems } = sel(yaml);
    t.same(problems, [], `${yaml} parses`);
    t.equal(selectorMatches(s, l), want, `${describeSelector(s)} ${want ? 'matches' : 'does not match'} ${JSON.stringify(l)}`);
  }
  t.ok(selectorMatches(EVERYTHING, { x: 'y' }), 'EVERYTHING matches');
  t.notOk(selectorMatches({ matchLabels: {}, matchExpressions: [{ key: 'toString', operator: 'Exists', values: [] }] }, {}), 'inherited properties are not labels');
});
