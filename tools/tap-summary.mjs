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
let bailOut; // "Bail out! reason", when tap gave up
/** the failure the next line's "---" would open a YAML block for (null: a block to skip) */
let awaitingDiag;
let awaitingIndent = '';
let diagOf; // the failure whose YAML block is being read (null: skipped)
let diagIndent = '';
let diagSkip = false; // inside a key not worth repeating (the source excerpt, the at: block)

for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(line + '\n');
  const m = /^# \{ (total: .*) \}$/.exec(line);
  if (m) summary = Object.fromEntries(m[1].split(', ').map((kv) => kv.split(': ')).map(([k, v]) => [k, Number(v)]));

  if (diagOf !== undefined) {
    if (line === `${diagIndent}...`) {
      diagOf = undefined;
      continue;
    }
    if (diagOf === null) continue;
    const own = line.slice(diagIndent.length);
    const key = /^([\w.-]+):/.exec(own);
    if (key) diagSkip = key[1] === 'source' || key[1] === 'at';
    if (!diagSkip && diagOf.diag.length < DIAG_LINES) diagOf.diag.push(own);
    continue;
  }
  if (awaitingDiag !== undefined) {
    const opens = line === `${awaitingIndent}---`;
    if (opens) {
      diagOf = awaitingDiag;
      diagIndent = awaitingIndent;
      diagSkip = false;
    }
    awaitingDiag = undefined;
    if (opens) continue;
  }
  const bail = /^\s*Bail out!(.*)$/.exec(line);
  if (bail) {
    bailOut ??= `Bail out!${bail[1]}`;
    continue;
  }
  const sub = /^((?: {4})*)# Subtest: (.*)$/.exec(line);
  if (sub) {
    const depth = sub[1].length / 4;
    names.length = depth;
    names[depth] = sub[2];
    continue;
  }
  const notOk = /^((?: {4})*)not ok \d+(?: - (.*?))?(?: # time=[\d.]+m?s)?$/.exec(line);
  if (notOk) {
    const depth = notOk[1].length / 4;
    const desc = notOk[2] ?? '';
    names.length = depth;
    awaitingIndent = `${notOk[1]}  `;
    // a TODO or SKIP directive (an unescaped " # TODO"/" # SKIP"; tap writes a # in a name as \#) is not a failure
    if (/(?:^|[^\\]) # (?:TODO|SKIP)\b/i.test(desc)) {
      awaitingDiag = null;
      continue;
    }
    const path = [...names.slice(0, depth), desc];
    // A parent fails because a child did: keep the child's entry, drop the parent's echo (and its YAML).
    const last = failures.at(-1);
    if (last && last.path.length > path.length && path.every((p, i) => last.path[i] === p)) {
      awaitingDiag = null;
      continue;
    }
    const failure = { path, diag: [] };
    failures.push(failure);
    awaitingDiag = failure;
  }
}

if (bailOut) process.stdout.write(`\n${bailOut}\n`);
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
const failed = (summary.fail ?? 0) + (bailOut && !summary.fail ? 1 : 0);
process.stdout.write(`tests: ${summary.pass ?? 0} passed, ${failed} failed, ${summary.skip ?? 0} skipped\n`);
