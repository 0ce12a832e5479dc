import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { repoRoot } from '../../mesh-agent/paths.js';

const SUMMARY = join(repoRoot(), 'tools', 'tap-summary.mjs');

const run = (tap: string): { out: string; code: number } => {
  try {
    return { out: execFileSync(process.execPath, [SUMMARY], { input: tap, encoding: 'utf8' }), code: 0 };
  } catch (err) {
    const e = err as { stdout: string; status: number };
    return { out: e.stdout, code: e.status };
  }
};

// the shape tap's own reporter prints: nested subtests, a YAML block under each failure,
// and the parents failing in turn because of it
const FAILING = `TAP version 14
1..2
# Subtest: tests/a.test.ts
    # Subtest: outer
        not ok 1 - one is two
          ---
          compare: ===
          at:
            fileName: tests/a.test.ts
          stack: |
            Test.<anonymous> (tests/a.test.ts:3:36)
          source: |
            t.equal(1, 2, 'one is two');
          ...
        ok 2 - fine
        1..2
    not ok 1 - outer # time=15ms
      ---
      at:
        fileName: tests/a.test.ts
      ...
    1..1
not ok 1 - tests/a.test.ts # time=400ms
# Subtest: tests/b.test.ts
    ok 1 - b
    1..1
ok 2 - tests/b.test.ts # time=90ms
# { total: 3, pass: 2, fail: 1 }
`;

t.test('a failure is named by its path at the end, with its diagnostics', async (t) => {
  const { out, code } = run(FAILING);
  t.ok(out.startsWith(FAILING), 'the TAP passes through unchanged');
  const tail = out.slice(FAILING.length);
  t.equal(tail, [
    '',
    'failed (1):',
    '- tests/a.test.ts > outer > one is two',
    '    compare: ===',
    '    stack: |',
    '      Test.<anonymous> (tests/a.test.ts:3:36)',
    'tests: 2 passed, 1 failed, 0 skipped',
    '',
  ].join('\n'), 'one entry: the parents\' echoes, the source excerpt and the at: block are left out');
  t.equal(code, 0, 'the exit status is left to tap (make sees it through pipefail)');
});

// TODO and SKIP directives, failures without a YAML block, a \# in a name, a parent's YAML with a source excerpt
const MIXED = `TAP version 14
1..1
# Subtest: tests/c.test.ts
    # Subtest: todo and skip
        not ok 1 - todo fail # TODO later
        not ok 2 - skipped # SKIP no
        ok 3 - fine
        1..3
    ok 1 - todo and skip # time=2ms
    # Subtest: no diag
        not ok 1 - first
        not ok 2 - second
        1..2
    not ok 2 - no diag # time=1.4ms
      ---
      source: |
        not ok 9 - this is source, not TAP
      ...
    # Subtest: weird \\# name
        not ok 1 - a \\# b
          ---
          compare: ===
          ...
        1..1
    not ok 3 - weird \\# name # time=5ms
    1..3
not ok 1 - tests/c.test.ts # time=26ms
# { total: 6, pass: 1, fail: 3, todo: 1, skip: 1 }
`;

t.test('TODO and SKIP are not failures; failures without diagnostics are all named; a YAML block is read only after ---', async (t) => {
  const { out } = run(MIXED);
  t.equal(out.slice(MIXED.length), [
    '',
    'failed (3):',
    '- tests/c.test.ts > no diag > first',
    '- tests/c.test.ts > no diag > second',
    '- tests/c.test.ts > weird \\# name > a \\# b',
    '    compare: ===',
    'tests: 1 passed, 3 failed, 1 skipped',
    '',
  ].join('\n'));
});

t.test('a bail out is said at the end, and counted when tap counted no failure', async (t) => {
  const { out } = run('TAP version 14\n1..2\nok 1 - a\nBail out! the datapath would not load\n# { total: 1, pass: 1 }\n');
  t.match(out, /\nBail out! the datapath would not load\ntests: 1 passed, 1 failed, 0 skipped\n$/);
});

t.test('a passing run ends with the counts alone', async (t) => {
  const { out } = run('TAP version 14\n1..1\nok 1 - x\n# { total: 1, pass: 1, fail: 0 }\n');
  t.match(out, /# \{ total: 1, pass: 1, fail: 0 \}\ntests: 1 passed, 0 failed, 0 skipped\n$/);
  t.notMatch(out, /failed \(/, 'no failure list');
});

t.test('no summary line is a failure', async (t) => {
  const { out, code } = run('TAP version 14\n1..1\n');
  t.match(out, /tests: 0 passed, 1 failed \(tap printed no summary\)\n$/);
  t.equal(code, 1);
});
