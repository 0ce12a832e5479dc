/** mesh-agent run: the agent in the foreground. */
import { DEFAULT_ADMIN_SOCKET } from '../admin/admin-client.js';
import { Agent, DEFAULT_ADMIN_ADDRESS, DEFAULT_XDS_ADDRESS } from '../agent.js';
import { encodeIPv4 } from '../datapath/layout.js';
import { DATAPATH_FLAGS, DATAPATH_FLAGS_HELP, int, parse, str } from './args.js';
import { OTHER_BUILD_WARNING, datapathOptions } from './datapath-commands.js';

const RUN_HELP = `usage: mesh-agent run [flags]

Runs the agent in the foreground: brings the datapath up (or adopts the one
pinned by an earlier agent), enrolls the given endpoints, serves xDS to the
node proxy and the admin API (status, config dump, Prometheus metrics). On
SIGTERM or SIGINT it exits and leaves the datapath working in the kernel
(pinned), unless --down-on-exit is given. If the agent is killed,
short-circuited connections go on and new ones are still short-circuited.

${DATAPATH_FLAGS_HELP}
  --enroll IPV4           enroll this endpoint (repeatable)
  --xds-address IP:PORT   where the node proxy reaches the ADS server (default ${DEFAULT_XDS_ADDRESS})
  --admin-socket PATH     the admin API for the CLI, mode 0600 (default ${DEFAULT_ADMIN_SOCKET})
  --admin-address IP:PORT the admin API over HTTP, for Prometheus at /metrics; "none" for
                          none (default ${DEFAULT_ADMIN_ADDRESS})
  --node-name NAME        this node's name (default: the host name)
  --interval-ms N         print the counters every N ms; 0 = never (default 0)
  --down-on-exit          remove the datapath when stopping
`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    ...DATAPATH_FLAGS,
    enroll: { type: 'string', multiple: true },
    'xds-address': { type: 'string' },
    'admin-socket': { type: 'string' },
    'admin-address': { type: 'string' },
    'node-name': { type: 'string' },
    'interval-ms': { type: 'string' },
    'down-on-exit': { type: 'boolean' },
  }, RUN_HELP, false);
  if (!p) return 0;
  const intervalMs = int(p, 'interval-ms') ?? 0;
  const enroll = (p.values.enroll as string[] | undefined) ?? [];
  for (const ip of enroll) encodeIPv4(ip); // bad input is reported before anything is loaded
  const adminAddress = str(p, 'admin-address');
  const nodeName = str(p, 'node-name');
  const xdsAddress = str(p, 'xds-address');
  const adminSocket = str(p, 'admin-socket');
  const agent = new Agent({
    datapath: datapathOptions(p), enroll,
    ...(xdsAddress !== undefined && { xdsAddress }),
    ...(adminSocket !== undefined && { adminSocket }),
    ...(adminAddress !== undefined && { adminAddress: adminAddress === 'none' ? null : adminAddress }),
    ...(nodeName !== undefined && { nodeName }),
  });
  const { adopted, otherBuild } = await agent.start();
  const st = agent.status().agent;
  process.stdout.write(`mesh-agent: running (pid ${process.pid}), datapath ${adopted ? 'adopted from' : 'loaded and pinned in'} ${agent.pinDir}\n`);
  process.stdout.write(`mesh-agent: xDS on ${st.xdsAddress}, admin on ${st.adminSocket}${st.adminAddress ? ` and http://${st.adminAddress}` : ''}\n`);
  if (otherBuild) process.stdout.write(OTHER_BUILD_WARNING);
  // signal listeners do not keep Node alive: this timer does (and reports when asked)
  const timer = setInterval(() => {
    if (intervalMs > 0) process.stdout.write(`counters ${JSON.stringify(agent.status().datapath.counters)}\n`);
  }, intervalMs > 0 ? intervalMs : 60_000);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  clearInterval(timer);
  const down = p.values['down-on-exit'] === true;
  await agent.stop({ down });
  process.stdout.write(down ? `mesh-agent: ${signal}: datapath removed\n` : `mesh-agent: ${signal}: exiting, datapath stays pinned in ${agent.pinDir}\n`);
  return 0;
}
