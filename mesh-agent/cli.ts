#!/usr/bin/env -S node --initial-old-space-size=128 --no-memory-reducer
/** mesh-agent: sockmesh's per-node agent and its admin commands. */
import { InvalidArgumentError } from './errors.js';
import { reportError } from './commands/args.js';

const HELP = `usage: mesh-agent <command> [flags]

sockmesh's per-node agent: a sidecar-free service mesh whose pods on one node
talk through the kernel (eBPF sockops + sk_msg on a sockhash).

commands:
  run        run the agent in the foreground (datapath, xDS server, admin API)
  up         load, attach and pin the datapath (adopts one already pinned)
  down       detach and remove the datapath and every pin
  enroll     enroll a local endpoint (IPv4) for the short-circuit
  unenroll   remove an endpoint
  status     datapath, endpoints, sockets, counters; the agent's xDS proxies (--json)
  xds        the xDS control plane: dump (config dump), bootstrap (for Envoy)
  pod        the local node runtime: add, del, list, exec, cleanup
  demo       two pods exchanging traffic through the kernel path
  observe    the flows the mesh carries (connections and requests), as they happen
  traces     recent traces from the trace file, as a waterfall
  tracing    tracing on or off and its sampling ratio, changed while the agent runs
  policy     policy check: whether a source may reach a destination, and which policy decides

Every command takes --help. Needs root (or CAP_BPF + CAP_NET_ADMIN).
`;

type Command = (argv: string[]) => number | Promise<number>;

/** Each command's module loads when it runs (the agent's libraries take a while to load). */
const COMMANDS: Record<string, () => Promise<Command>> = {
  run: async () => (await import('./commands/run.js')).run,
  up: async () => (await import('./commands/datapath-commands.js')).up,
  down: async () => (await import('./commands/datapath-commands.js')).down,
  enroll: async () => (await import('./commands/datapath-commands.js')).enroll,
  unenroll: async () => (await import('./commands/datapath-commands.js')).unenroll,
  status: async () => (await import('./commands/datapath-commands.js')).status,
  pod: async () => (await import('./commands/pod-commands.js')).pod,
  demo: async () => (await import('./commands/demo.js')).demo,
  observe: async () => (await import('./commands/observe-command.js')).observe,
  xds: async () => (await import('./commands/xds-commands.js')).xds,
  traces: async () => (await import('./commands/traces-command.js')).traces,
  tracing: async () => (await import('./commands/tracing-command.js')).tracing,
  policy: async () => (await import('./commands/policy-command.js')).policy,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP);
    return cmd === undefined ? 2 : 0;
  }
  const load = COMMANDS[cmd];
  if (!load) throw new InvalidArgumentError(`unknown command ${JSON.stringify(cmd)}`, 'see mesh-agent --help');
  return (await load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => { process.exitCode = reportError(err); },
);
