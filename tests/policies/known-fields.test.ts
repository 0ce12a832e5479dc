import t from 'tap';
import { isObj, refuseUnknownFields } from '../../policies/known-fields.js';
import { RecordingSink } from '../fixtures/policies.js';

t.test('unknown fields are problems at their path', async (t) => {
  const cases: [Record<string, unknown>, string, string[]][] = [
    [{ from: [], ports: [] }, 'spec.ingress[0]', []],
    [{ form: [] }, 'spec.ingress[0]', ['spec.ingress[0].form: unknown field; a rule has from, ports']],
    [{ a: 1, b: 2 }, '', ['a: unknown field; a rule has from, ports', 'b: unknown field; a rule has from, ports']],
  ];
  for (const [o, at, want] of cases) {
    const p = new RecordingSink();
    refuseUnknownFields(p, o, at, 'a rule', ['from', 'ports']);
    t.same(p.problems, want, JSON.stringify(o));
  }
});

t.test('isObj is true for maps only', async (t) => {
  const cases: [unknown, boolean][] = [[{}, true], [[], false], [null, false], ['x', false], [1, false]];
  for (const [v, want] of cases) t.equal(isObj(v), want, JSON.stringify(v));
});
