/**
 * The V8 flags the agent's process runs with. The `mesh-agent` command
 * carries them in its first line (`#!/usr/bin/env -S node …`, a test keeps
 * the two the same); benchmarks that host an agent start node with them.
 *
 * --initial-old-space-size=128: the old generation may reach 128 MB before a
 * major collection is due. The agent's live heap is about 26 MB. Without the
 * flag, once V8's memory reducer has shrunk the heap (any quiet spell of a few
 * seconds), the limit sits about 23 MB above what is live and, while traced
 * batches come, incremental marking starts every 2.5 s; at 1,000 traced
 * requests a second those collections cost the agent 10-20 µs a request, more
 * than writing the spans. The price is memory: the heap may hold up to
 * about 128 MB of old objects between collections.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/** The agent's flags a node process was not started with (process.execArgv). */
export function missingAgentFlags(execArgv: readonly string[]): string[] {
  return AGENT_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}

/**
 * What the agent says when node was started without its flags (as
 * `node dist/mesh-agent/cli.js run` is), or undefined when it has them.
 */
export function agentFlagsWarning(execArgv: readonly string[]): string | undefined {
  const missing = missingAgentFlags(execArgv);
  if (missing.length === 0) return undefined;
  return `node runs without ${missing.join(' ')}: under traced load the agent spends more CPU on major garbage collections. ` +
    `The mesh-agent command gives node the flag; started through node, give it yourself (node ${missing.join(' ')} dist/mesh-agent/cli.js run ...)`;
}
