// Passes TAP through and ends with what a reader of the last lines needs: each failed test
// by its path (file > subtest > assertion) with the first lines of its diagnostics, then one
// plain line, "tests: N passed, N failed, N skipped", counted from the top-level summary tap
// prints ("# { total: N, pass: N, fail: N, skip: N }").
import { createInterface } from 'node:readline';

const DIAG_LINES = 14;
const MAX_FAILURES = 20;

let summary;
const names = []; // the open "# Subtest:" names, by depth (4 spaces a level)
const failures = []; // { path, diag: string[] }
let diagOf; // the failure whose YAML block is being read
let diagIndent = '';
let diagSkip = false; // inside a key not worth repeating (the source excerpt, the at: block)

for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(line + '\n');
  const m = /^# \{ (total: .*) \}$/.exec(line);
  if (m) summary = Object.fromEntries(m[1].split(', ').map((kv) => kv.split(': ')).map(([k, v]) => [k, Number(v)]));

  if (diagOf) {
    if (line === `${diagIndent}...`) {
      diagOf = undefined;
      continue;
    }
    const own = line.slice(diagIndent.length);
    const key = /^([\w.-]+):/.exec(own);
    if (key) diagSkip = key[1] === 'source' || key[1] === 'at';
    if (line !== `${diagIndent}---` && !diagSkip && diagOf.diag.length < DIAG_LINES) diagOf.diag.push(own);
    continue;
  }
  const sub = /^((?: {4})*)# Subtest: (.*)$/.exec(line);
  if (sub) {
    const depth = sub[1].length / 4;
    names.length = depth;
    names[depth] = sub[2];
    continue;
  }
  const notOk = /^((?: {4})*)not ok \d+ - (.*?)(?: # time=.*)?$/.exec(line);
  if (notOk) {
    const depth = notOk[1].length / 4;
    const path = [...names.slice(0, depth), notOk[2]];
    names.length = depth;
    // A parent fails because a child did: keep the child's entry, drop the parent's echo.
    const last = failures.at(-1);
    if (last && last.path.length > path.length && path.every((p, i) => last.path[i] === p)) continue;
    const failure = { path, diag: [] };
    failures.push(failure);
    diagOf = failure;
    diagIndent = `${notOk[1]}  `;
  }
}

if (failures.length > 0) {
  process.stdout.write(`\nfailed (${failures.length}):\n`);
  for (const f of failures.slice(0, MAX_FAILURES)) {
    process.stdout.write(`- ${f.path.join(' > ')}\n`);
    for (const d of f.diag) process.stdout.write(`    ${d}\n`);
  }
  if (failures.length > MAX_FAILURES) process.stdout.write(`- and ${failures.length - MAX_FAILURES} more, above\n`);
}
if (!summary) {
  process.stdout.write('tests: 0 passed, 1 failed (tap printed no summary)\n');
  process.exit(1);
}
const failed = summary.fail ?? 0;
process.stdout.write(`tests: ${summary.pass ?? 0} passed, ${failed} failed, ${summary.skip ?? 0} skipped\n`);
