import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { AGENT_NODE_FLAGS, agentFlagsWarning, missingAgentFlags } from '../../mesh-agent/node-flags.js';
import { repoRoot } from '../../mesh-agent/paths.js';
import { CLI } from '../fixtures/cli.js';

const SHEBANG = `#!/usr/bin/env -S node ${AGENT_NODE_FLAGS.join(' ')}`;

t.test('the mesh-agent command starts node with the agent flags', async (t) => {
  t.equal(readFileSync(join(repoRoot(), 'mesh-agent', 'cli.ts'), 'utf8').split('\n')[0], SHEBANG, 'the source\'s first line');
  const built = readFileSync(CLI, 'utf8').split('\n')[0]!;
  t.equal(built, SHEBANG, 'the built command\'s first line');
  // what the kernel runs for that line: the interpreter with the rest of the line as one argument
  const [interpreter, arg] = [built.slice(2, built.indexOf(' ')), built.slice(built.indexOf(' ') + 1)];
  const probe = join(t.testdir({ 'argv.mjs': 'process.stdout.write(JSON.stringify(process.execArgv));\n' }), 'argv.mjs');
  const execArgv = JSON.parse(execFileSync(interpreter, [arg, probe], { encoding: 'utf8' })) as string[];
  t.same(execArgv, AGENT_NODE_FLAGS, 'node takes the flags from that line');
  const help = execFileSync(interpreter, [arg, CLI, 'run', '--help'], { encoding: 'utf8' });
  t.match(help, /^usage: mesh-agent run/, 'and runs the command with them');
  t.match(help, new RegExp(`starts node with ${AGENT_NODE_FLAGS.join(' ')}`), 'run --help names them');
});

t.test('missingAgentFlags', async (t) => {
  t.same(missingAgentFlags([]), AGENT_NODE_FLAGS, 'all of them from a bare node');
  t.same(missingAgentFlags(['--expose-gc', ...AGENT_NODE_FLAGS]), [], 'none when given, among others');
  t.same(missingAgentFlags(['--initial-old-space-size=64']), AGENT_NODE_FLAGS, 'another size is not the agent\'s');
});

t.test('agentFlagsWarning', async (t) => {
  t.equal(agentFlagsWarning(AGENT_NODE_FLAGS), undefined, 'nothing to say with the flags');
  const w = agentFlagsWarning(['--expose-gc']);
  t.match(w, `node runs without ${AGENT_NODE_FLAGS.join(' ')}`, 'names the missing flag');
  t.match(w, `(node ${AGENT_NODE_FLAGS.join(' ')} dist/mesh-agent/cli.js run ...)`, 'and how to give it');
  t.match(w, 'give them yourself', 'them: more than one');
  const one = agentFlagsWarning([AGENT_NODE_FLAGS[0]!]);
  t.match(one, `node runs without ${AGENT_NODE_FLAGS.slice(1).join(' ')}:`, 'one missing: only it named');
  t.match(one, `give it yourself (node ${AGENT_NODE_FLAGS.slice(1).join(' ')} dist/`, 'and only it to give');
});
