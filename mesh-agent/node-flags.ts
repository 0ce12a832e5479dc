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
 *
 * --no-memory-reducer: V8's memory reducer (made for idle browser tabs)
 * decided the agent was idle while traced batches came every 500 ms at
 * 1,000 requests a second: three full collections in a row in the middle of
 * the load, after which the young generation it had shrunk was collected at
 * every batch, promoting the batch being processed. Rounds where that
 * happened cost the agent 21-25 µs a request against 6-7. Without it the
 * heap is not handed back in a quiet spell: it stays within the old
 * generation's 128 MB and the young generation until the next collection.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128', '--no-memory-reducer'];

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
    `The mesh-agent command gives node ${missing.length === 1 ? 'the flag' : 'these flags'}; started through node, give ${missing.length === 1 ? 'it' : 'them'} yourself (node ${missing.join(' ')} dist/mesh-agent/cli.js run ...)`;
}
