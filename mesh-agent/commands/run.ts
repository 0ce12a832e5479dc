/** mesh-agent run: the agent in the foreground. */
import { Datapath } from '../datapath/datapath.js';
import { encodeIPv4 } from '../datapath/layout.js';
import { DATAPATH_FLAGS, DATAPATH_FLAGS_HELP, int, parse } from './args.js';
import { OTHER_BUILD_WARNING, datapathOptions } from './datapath-commands.js';

const RUN_HELP = `usage: mesh-agent run [flags]

Runs the agent in the foreground: brings the datapath up (or adopts the one
pinned by an earlier agent), enrolls the given endpoints and reports the
counters. On SIGTERM or SIGINT it exits and leaves the datapath working in
the kernel (pinned), unless --down-on-exit is given. If the agent is killed,
short-circuited connections go on and new ones are still short-circuited.

${DATAPATH_FLAGS_HELP}
  --enroll IPV4       enroll this endpoint (repeatable)
  --interval-ms N     print the counters every N ms; 0 = never (default 0)
  --down-on-exit      remove the datapath when stopping
`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    ...DATAPATH_FLAGS,
    enroll: { type: 'string', multiple: true },
    'interval-ms': { type: 'string' },
    'down-on-exit': { type: 'boolean' },
  }, RUN_HELP, false);
  if (!p) return 0;
  const intervalMs = int(p, 'interval-ms') ?? 0;
  const enroll = (p.values.enroll as string[] | undefined) ?? [];
  for (const ip of enroll) encodeIPv4(ip); // bad input is reported before anything is loaded
  const dp = new Datapath(datapathOptions(p));
  const { adopted, otherBuild } = dp.start();
  for (const ip of enroll) dp.enroll(ip);
  process.stdout.write(`mesh-agent: running (pid ${process.pid}), datapath ${adopted ? 'adopted from' : 'loaded and pinned in'} ${dp.pinDir}\n`);
  if (otherBuild) process.stdout.write(OTHER_BUILD_WARNING);
  // signal listeners do not keep Node alive: this timer does (and reports when asked)
  const timer = setInterval(() => {
    if (intervalMs > 0) process.stdout.write(`counters ${JSON.stringify(dp.counters())}\n`);
  }, intervalMs > 0 ? intervalMs : 60_000);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  clearInterval(timer);
  if (p.values['down-on-exit']) {
    dp.down();
    process.stdout.write(`mesh-agent: ${signal}: datapath removed\n`);
  } else {
    dp.stop();
    process.stdout.write(`mesh-agent: ${signal}: exiting, datapath stays pinned in ${dp.pinDir}\n`);
  }
  return 0;
}
