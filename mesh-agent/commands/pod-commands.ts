/** mesh-agent pod add | del | list | exec | cleanup: the local node runtime. */
import { InvalidArgumentError } from '../errors.js';
import { NodeRuntime } from '../runtime/node-runtime.js';
import { type Options, type Parsed, parse, str, table } from './args.js';

const RUNTIME_FLAGS = { prefix: { type: 'string' }, 'cgroup-root': { type: 'string' } } as const satisfies Options;
const RUNTIME_FLAGS_HELP = `  --prefix P          name prefix of the runtime's netns, links and cgroups (default sm)
  --cgroup-root DIR   cgroup v2 directory holding the pods (default <cgroup2 mount>/sockmesh)`;

const POD_HELP = `usage: mesh-agent pod <add|del|list|exec|cleanup> ...

The local node runtime: a pod is a network namespace + veth + bridge port +
cgroup v2, with an address from 198.18.0.0/16.

  pod add NAME [--ip IPV4]     create a pod (idempotent)
  pod del NAME                 remove a pod and kill its processes (idempotent)
  pod list [--json]            list pods
  pod exec NAME -- CMD [ARG..] run a command in the pod's netns and cgroup
  pod cleanup                  remove every pod and the bridge of this prefix

${RUNTIME_FLAGS_HELP}
`;

function runtime(p: Parsed): NodeRuntime {
  const prefix = str(p, 'prefix');
  const cgroupRoot = str(p, 'cgroup-root');
  return new NodeRuntime({ ...(prefix !== undefined && { prefix }), ...(cgroupRoot !== undefined && { cgroupRoot }) });
}

export async function pod(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'add': {
      const p = parse(rest, { ...RUNTIME_FLAGS, ip: { type: 'string' } }, `usage: mesh-agent pod add NAME [--ip IPV4]\n\n${RUNTIME_FLAGS_HELP}\n`);
      if (!p) return 0;
      const ip = str(p, 'ip');
      const info = await runtime(p).addPod(name(p), ip !== undefined ? { ip } : {});
      process.stdout.write(`pod ${info.name} ${info.ip} netns ${info.netns} cgroup ${info.cgroup}\n`);
      return 0;
    }
    case 'del': {
      const p = parse(rest, RUNTIME_FLAGS, `usage: mesh-agent pod del NAME\n\n${RUNTIME_FLAGS_HELP}\n`);
      if (!p) return 0;
      await runtime(p).removePod(name(p));
      process.stdout.write(`pod ${name(p)} removed\n`);
      return 0;
    }
    case 'list': {
      const p = parse(rest, { ...RUNTIME_FLAGS, json: { type: 'boolean' } }, `usage: mesh-agent pod list [--json]\n\n${RUNTIME_FLAGS_HELP}\n`, false);
      if (!p) return 0;
      const pods = await runtime(p).pods();
      process.stdout.write(p.values.json ? JSON.stringify(pods, null, 2) + '\n'
        : table(['NAME', 'IP', 'NETNS', 'CGROUP'], pods.map((x) => [x.name, x.ip || '(half-created)', x.netns, x.cgroup])) + '\n');
      return 0;
    }
    case 'exec': {
      const dash = rest.indexOf('--');
      if (rest.includes('--help') && (dash < 0 || rest.indexOf('--help') < dash)) {
        process.stdout.write(`usage: mesh-agent pod exec NAME [--prefix P] -- CMD [ARG...]\n\n${RUNTIME_FLAGS_HELP}\n`);
        return 0;
      }
      if (dash < 0 || dash === rest.length - 1) throw new InvalidArgumentError('pod exec needs NAME -- CMD [ARG...]', 'see mesh-agent pod exec --help');
      const p = parse(rest.slice(0, dash), RUNTIME_FLAGS, '')!;
      const child = runtime(p).exec(name(p), rest.slice(dash + 1), { stdio: 'inherit' });
      return await new Promise<number>((resolve, reject) => {
        child.on('error', reject);
        child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
      });
    }
    case 'cleanup': {
      const p = parse(rest, RUNTIME_FLAGS, `usage: mesh-agent pod cleanup\n\n${RUNTIME_FLAGS_HELP}\n`, false);
      if (!p) return 0;
      const rt = runtime(p);
      await rt.cleanup();
      process.stdout.write(`removed every pod and the node namespace of prefix ${rt.prefix}\n`);
      return 0;
    }
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(POD_HELP);
      return sub === undefined ? 2 : 0;
    default:
      throw new InvalidArgumentError(`unknown pod command ${JSON.stringify(sub)}`, 'see mesh-agent pod --help');
  }
}

function name(p: Parsed): string {
  if (p.positionals.length !== 1) throw new InvalidArgumentError(`expected one pod NAME, got ${p.positionals.length}`);
  return p.positionals[0]!;
}
