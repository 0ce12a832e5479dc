// Passes TAP through and ends with one plain line, "tests: N passed, N failed, N skipped",
// counted from the top-level summary tap prints ("# { total: N, pass: N, fail: N, skip: N }").
import { createInterface } from 'node:readline';

let summary;
for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(line + '\n');
  const m = /^# \{ (total: .*) \}$/.exec(line);
  if (m) summary = Object.fromEntries(m[1].split(', ').map((kv) => kv.split(': ')).map(([k, v]) => [k, Number(v)]));
}
if (!summary) {
  process.stdout.write('tests: 0 passed, 1 failed (tap printed no summary)\n');
  process.exit(1);
}
const failed = summary.fail ?? 0;
process.stdout.write(`tests: ${summary.pass ?? 0} passed, ${failed} failed, ${summary.skip ?? 0} skipped\n`);
