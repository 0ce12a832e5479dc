/** mesh-agent policy check: the verdict on a connection or request, the layer, and the policy and rule that decided it. */
import { readFileSync, statSync } from 'node:fs';
import { InvalidArgumentError, NotFoundError } from '../errors.js';
import { DEFAULT_ADMIN_SOCKET, adminGet } from '../admin/admin-client.js';
import { parseManifests } from '../cluster/manifest-parser.js';
import { yamlFiles } from '../cluster/manifest-source.js';
import type { AuthorizationPolicy, Namespace, NetworkPolicy, Pod, Service } from '../cluster/model.js';
import { checkClusterOf, checkPolicy, queryFrom, type CheckQuery, type CheckResult } from '../../policies/policy-check.js';
import { parse, str } from './args.js';

const HELP = `usage: mesh-agent policy check --from SOURCE --to DEST [flags]

Says whether SOURCE may reach DEST, which layer decides (the kernel for
NetworkPolicy, L3/L4; the node proxy for AuthorizationPolicy, HTTP), and the
policy and rule that decided it, or that no policy selects the pod. A service
is judged for each of its backends (the kernel may pick any of them).

  --from SOURCE         namespace/pod, or an IPv4 address (a host process, a caller outside the mesh)
  --to DEST             namespace/service:port or namespace/pod:port
  --protocol P          TCP (default), UDP or SCTP
  --method M            the HTTP method, for the L7 verdict (with --path)
  --path P              the HTTP path, for the L7 verdict (with --method)
  --host H              the Host header (default: the service's name)
  --header NAME=VALUE   a request header (repeatable)
  --manifests PATH      judge from these manifests (a directory or a file) instead of asking the
                        running agent (pods have no addresses then: ipBlocks see only --from IPs)
  --json                the whole verdict as JSON
  --admin-socket PATH   the agent's admin socket (default ${DEFAULT_ADMIN_SOCKET})

Exit status: 0 allowed, 1 denied, 2 a bad question (an unknown pod or service, a bad flag).
`;

/** The verdict from manifests alone (no agent). */
export function checkManifests(path: string, q: CheckQuery): CheckResult {
  let files: string[];
  try {
    files = statSync(path).isDirectory() ? yamlFiles(path) : [path];
  } catch {
    throw new NotFoundError(`--manifests ${path}: no such file or directory`);
  }
  const parsed = parseManifests(files.map((file) => ({ file, text: readFileSync(file, 'utf8') })));
  if (parsed.errors.length > 0) throw new InvalidArgumentError(`--manifests ${path}: ${parsed.errors.length} problem(s):\n  ${parsed.errors.join('\n  ')}`, 'fix them: a file with a problem is not used');
  const of = <K extends string>(k: K) => parsed.objects.filter((o) => o.kind === k);
  return checkPolicy(checkClusterOf({
    namespaces: of('Namespace') as Namespace[], pods: of('Pod') as Pod[], services: of('Service') as Service[],
    networkPolicies: of('NetworkPolicy') as NetworkPolicy[], authorizationPolicies: of('AuthorizationPolicy') as AuthorizationPolicy[],
  }), q);
}

/** The verdict as a user reads it. */
export function formatCheck(r: CheckResult): string {
  if (r.kind === 'problem') return `cannot judge: --${r.field}: ${r.reason}`;
  const lines = [`${r.allowed ? 'ALLOWED' : 'DENIED'}  ${r.destination}  (decided by ${r.layer === 'kernel-l4' ? 'the kernel, L4' : 'the node proxy, L7'})`];
  for (const b of r.backends) {
    lines.push(`  ${b.allowed ? 'allow' : 'deny '}  ${b.pod}:${b.port}`);
    lines.push(`         L4 egress:  ${b.l4.egress.reason}`);
    lines.push(`         L4 ingress: ${b.l4.ingress.reason}`);
    if (b.l7) lines.push(`         L7:         ${b.l7.reason}${b.l7.audits.length ? ` (audited by ${b.l7.audits.map((a) => `${a.policy} rule ${a.rule}`).join(', ')})` : ''}`);
    if (b.l7Undecided) lines.push(`         L7:         ${b.l7Undecided}`);
  }
  return lines.join('\n');
}

async function check(argv: string[]): Promise<number> {
  const p = parse(argv, {
    from: { type: 'string' }, to: { type: 'string' }, protocol: { type: 'string' }, method: { type: 'string' }, path: { type: 'string' },
    host: { type: 'string' }, header: { type: 'string', multiple: true }, manifests: { type: 'string' }, json: { type: 'boolean' }, 'admin-socket': { type: 'string' },
  }, HELP, false);
  if (!p) return 0;
  const headers = (p.values.header as string[] | undefined) ?? [];
  const q = queryFrom((n) => str(p, n), headers);
  let r: CheckResult;
  const manifests = str(p, 'manifests');
  if (manifests !== undefined) {
    r = checkManifests(manifests, q);
  } else {
    const u = new URLSearchParams();
    for (const k of ['from', 'to', 'protocol', 'method', 'path', 'host'] as const) { const v = str(p, k); if (v !== undefined) u.set(k, v); }
    for (const h of headers) u.append('header', h);
    r = (await adminGet(str(p, 'admin-socket') ?? DEFAULT_ADMIN_SOCKET, `/policy/check?${u}`)).body as CheckResult;
  }
  process.stdout.write(`${p.values.json === true ? JSON.stringify(r, null, 2) : formatCheck(r)}\n`);
  return r.kind === 'problem' ? 2 : r.allowed ? 0 : 1;
}

const POLICY_HELP = `usage: mesh-agent policy <subcommand> [flags]

  check   whether a source may reach a destination, and which policy and rule decide it

Every subcommand takes --help.
`;

export async function policy(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(POLICY_HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'check') return check(rest);
  throw new InvalidArgumentError(`unknown policy subcommand ${JSON.stringify(sub)}`, 'see mesh-agent policy --help');
}
