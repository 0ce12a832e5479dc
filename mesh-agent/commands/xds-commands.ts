/** mesh-agent xds dump | bootstrap */
import { DUMP_TYPE_NAMES } from '../../xds/config-dump.js';
import { envoyBootstrap } from '../../xds/envoy-bootstrap.js';
import { DEFAULT_ADMIN_SOCKET, adminGet } from '../admin/admin-client.js';
import { DEFAULT_XDS_ADDRESS } from '../agent.js';
import { InvalidArgumentError } from '../errors.js';
import { parseHostPort } from '../host-port.js';
import { int, parse, str } from './args.js';

const XDS_HELP = `usage: mesh-agent xds <command> [flags]

The xDS control plane the node proxy (Envoy or mesh-proxy) is configured by.

commands:
  dump       the running agent's snapshots, as Envoy's config dump (JSON)
  bootstrap  an Envoy bootstrap that connects to this agent over ADS (JSON)

Every command takes --help.
`;

const DUMP_HELP = `usage: mesh-agent xds dump [--node ID] [--type T[,T...]] [--admin-socket PATH]

Prints the running agent's xDS snapshots as JSON. Without --node: every
snapshot it holds (the default one, served to every node proxy without one
of its own, first), with the proxies it is served to and when it was set,
each as an envoy.admin.v3.ConfigDump. With --node: the ConfigDump that node
is served now, exactly as Envoy's /config_dump shapes it.

  --node ID            one node proxy's view (its node.id)
  --type T[,T...]      only these: clusters, endpoints, listeners, routes
  --admin-socket PATH  the agent's admin socket (default ${DEFAULT_ADMIN_SOCKET})
`;

const BOOTSTRAP_HELP = `usage: mesh-agent xds bootstrap --node-id ID [flags]

Prints the bootstrap for the shared per-node Envoy: ADS over gRPC to the
agent, every other resource from ADS, admin on 127.0.0.1. Checked against
Envoy's Bootstrap message before it is printed. Save it and run
\`envoy -c bootstrap.json\`.

  --node-id ID           node.id (required)
  --cluster NAME         node.cluster (default sockmesh-node-proxy)
  --xds-address IP:PORT  the agent's ADS server (default ${DEFAULT_XDS_ADDRESS})
  --admin-port N         Envoy's admin port on 127.0.0.1 (default 15000)
  --region R, --zone Z   node.locality
`;

async function dump(argv: string[]): Promise<number> {
  const p = parse(argv, { node: { type: 'string' }, type: { type: 'string' }, 'admin-socket': { type: 'string' } }, DUMP_HELP, false);
  if (!p) return 0;
  const types = str(p, 'type');
  for (const t of types?.split(',') ?? []) {
    if (!(t.trim() in DUMP_TYPE_NAMES)) throw new InvalidArgumentError(`--type: unknown resource type ${JSON.stringify(t)}; types: ${Object.keys(DUMP_TYPE_NAMES).join(', ')}`);
  }
  const q = new URLSearchParams();
  const node = str(p, 'node');
  if (node !== undefined) q.set('node', node);
  if (types !== undefined) q.set('types', types);
  const qs = q.toString();
  const r = await adminGet(str(p, 'admin-socket') ?? DEFAULT_ADMIN_SOCKET, `/config_dump${qs ? `?${qs}` : ''}`);
  process.stdout.write(JSON.stringify(r.body, null, 2) + '\n');
  return 0;
}

function bootstrap(argv: string[]): number {
  const p = parse(argv, {
    'node-id': { type: 'string' }, cluster: { type: 'string' }, 'xds-address': { type: 'string' },
    'admin-port': { type: 'string' }, region: { type: 'string' }, zone: { type: 'string' },
  }, BOOTSTRAP_HELP, false);
  if (!p) return 0;
  const nodeId = str(p, 'node-id');
  if (!nodeId) throw new InvalidArgumentError('--node-id is required', 'see --help');
  const ads = parseHostPort('--xds-address', str(p, 'xds-address') ?? DEFAULT_XDS_ADDRESS);
  if (ads.port === 0) throw new InvalidArgumentError('--xds-address needs the port the agent listens on, not 0');
  const region = str(p, 'region');
  const zone = str(p, 'zone');
  const cluster = str(p, 'cluster');
  const adminPort = int(p, 'admin-port', 1);
  const b = envoyBootstrap({
    nodeId, adsAddress: ads.host, adsPort: ads.port,
    ...(cluster !== undefined && { cluster }),
    ...(adminPort !== undefined && { adminPort }),
    ...((region !== undefined || zone !== undefined) && { locality: { ...(region !== undefined && { region }), ...(zone !== undefined && { zone }) } }),
  });
  process.stdout.write(JSON.stringify(b, null, 2) + '\n');
  return 0;
}

const COMMANDS: Record<string, (argv: string[]) => number | Promise<number>> = { dump, bootstrap };

export async function xds(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h') {
    process.stdout.write(XDS_HELP);
    return cmd === undefined ? 2 : 0;
  }
  const fn = COMMANDS[cmd];
  if (!fn) throw new InvalidArgumentError(`unknown xds command ${JSON.stringify(cmd)}`, 'see mesh-agent xds --help');
  return fn(rest);
}
