/** mesh-agent tracing: shows tracing, or turns it on or off and sets the sampling ratio of the running agent. */
import { InvalidArgumentError } from '../errors.js';
import { DEFAULT_ADMIN_SOCKET, adminGet, adminPost } from '../admin/admin-client.js';
import { parse, str } from './args.js';

const HELP = `usage: mesh-agent tracing [on|off] [--sample-ratio R] [flags]

Shows whether the running agent makes spans and the ratio of new traces it
keeps, or changes them without a restart: the agent's own spans and the
kernel's connection spans at once, the node proxy's request spans as soon as
it has the new listeners (pushed over xDS, in their HTTP connection manager's
tracing.random_sampling). A caller's sampled flag (traceparent) is always
followed. The change lasts until the agent stops: its --tracing and
--sample-ratio flags (or OTEL_SDK_DISABLED, OTEL_TRACES_SAMPLER[_ARG]) are the
value at start.

  on | off              make spans, or not (untraced requests pass a caller's traceparent through)
  --sample-ratio R      the ratio of new traces kept, 0..1
  --json                the state as JSON
  --admin-socket PATH   the agent's admin socket (default ${DEFAULT_ADMIN_SOCKET})

Examples:
  mesh-agent tracing                       # on, sampling 1
  mesh-agent tracing on --sample-ratio 0.1
  mesh-agent tracing off
`;

interface TracingState { enabled: boolean; sampleRatio: number }

export async function tracing(argv: string[]): Promise<number> {
  const p = parse(argv, { 'sample-ratio': { type: 'string' }, json: { type: 'boolean' }, 'admin-socket': { type: 'string' } }, HELP);
  if (!p) return 0;
  if (p.positionals.length > 1) throw new InvalidArgumentError(`one of on or off, got ${p.positionals.map((x) => JSON.stringify(x)).join(' ')}`, 'see mesh-agent tracing --help');
  const [onOff] = p.positionals;
  if (onOff !== undefined && onOff !== 'on' && onOff !== 'off') throw new InvalidArgumentError(`${JSON.stringify(onOff)}: must be on or off`, 'see mesh-agent tracing --help');
  const ratioFlag = str(p, 'sample-ratio');
  const ratio = ratioFlag === undefined ? undefined : Number(ratioFlag);
  if (ratioFlag !== undefined && (ratioFlag.trim() === '' || !(ratio! >= 0 && ratio! <= 1))) throw new InvalidArgumentError(`--sample-ratio ${JSON.stringify(ratioFlag)}: must be a number from 0 to 1`);
  const socket = str(p, 'admin-socket') ?? DEFAULT_ADMIN_SOCKET;
  const change = { ...(onOff !== undefined && { enabled: onOff === 'on' }), ...(ratio !== undefined && { sampleRatio: ratio }) };
  const state = (Object.keys(change).length === 0 ? await adminGet(socket, '/tracing') : await adminPost(socket, '/tracing', change)).body as TracingState;
  process.stdout.write(p.values.json === true ? `${JSON.stringify(state)}\n` : `${state.enabled ? 'on' : 'off'}, sampling ${state.sampleRatio}\n`);
  return 0;
}
