/** mesh-agent observe: the flows the mesh carries, as they happen (from the running agent). */
import { request } from 'node:http';
import { AgentNotRunningError, InvalidArgumentError } from '../errors.js';
import { AdminRequestError, DEFAULT_ADMIN_SOCKET, adminGet } from '../admin/admin-client.js';
import type { FlowRecord } from '../telemetry/flow-tracker.js';
import { int, parse, str } from './args.js';

const HELP = `usage: mesh-agent observe [flags]

Shows the flows the mesh carried: every finished TCP connection of a mesh pod
as the kernel saw it (spliced through the kernel, or over the TCP/IP stack),
and every HTTP request through the node proxy. Each line names the source and
destination workloads, the service, the verdict, the path, bytes and latency.
By default it prints the last flows and exits; --follow keeps streaming.

  --namespace NS        flows with an end in this namespace
  --pod [NS/]POD        flows with this pod at one end
  --service [NS/]NAME   flows to this service (or with a workload of that service.name)
  --type l4|l7|security connections (kernel policy denials among them), requests, or security events only
  --last N              how many recent flows first (default 20; 0 with --follow: only new ones)
  -f, --follow          keep streaming new flows until interrupted
  --json                one JSON object per line (the fields of the text output, and more)
  --admin-socket PATH   the agent's admin socket (default ${DEFAULT_ADMIN_SOCKET})
`;

function bytes(n: number | undefined): string {
  if (n === undefined) return '-';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function end(e: FlowRecord['source']): string {
  return e.pod ? `${e.namespace}/${e.pod}${e.service && e.service !== e.pod ? ` (${e.service})` : ''}` : e.address || '?';
}

/** One flow as a line of text. */
export function formatFlow(f: FlowRecord): string {
  const time = f.time.slice(11, 23);
  if (f.type === 'security') return `${time}  SECURITY ${f.reason ?? f.securityType}`;
  if (f.type === 'l4' && f.layer === 'kernel-l4') {
    return `${time}  ${end(f.source)} -> ${end(f.destination)}  DENIED by ${f.policy}  L4 kernel  ${f.reason ?? f.kernelEvent ?? ''}`;
  }
  const what = f.type === 'l4'
    ? `L4 ${f.path.padEnd(6)} ${bytes(f.bytesSent)} sent, ${bytes(f.bytesReceived)} received`
    : `L7 proxy  ${f.method} ${f.urlPath} ${f.status ?? '-'}`;
  const ms = f.durationMs < 10 ? f.durationMs.toFixed(2) : f.durationMs.toFixed(0);
  return `${time}  ${end(f.source)} -> ${end(f.destination)}${f.service ? `  svc ${f.service}` : ''}  ${f.verdict.toUpperCase()}${f.policy !== undefined ? ` by ${f.policy === 'none' ? 'no ALLOW rule' : f.policy}` : ''}  ${what}  ${ms} ms`;
}

export async function observe(argv: string[]): Promise<number> {
  const p = parse(argv, {
    namespace: { type: 'string' }, pod: { type: 'string' }, service: { type: 'string' }, type: { type: 'string' },
    last: { type: 'string' }, follow: { type: 'boolean', short: 'f' }, json: { type: 'boolean' }, 'admin-socket': { type: 'string' },
  }, HELP, false);
  if (!p) return 0;
  const q = new URLSearchParams();
  for (const k of ['namespace', 'pod', 'service'] as const) { const v = str(p, k); if (v !== undefined) q.set(k, v); }
  const type = str(p, 'type');
  if (type !== undefined && type !== 'l4' && type !== 'l7' && type !== 'security') throw new InvalidArgumentError(`--type must be l4, l7 or security, got ${JSON.stringify(type)}`);
  if (type) q.set('type', type);
  q.set('last', String(int(p, 'last') ?? 20));
  const socketPath = str(p, 'admin-socket') ?? DEFAULT_ADMIN_SOCKET;
  const json = p.values.json === true;
  const print = (f: FlowRecord) => process.stdout.write(`${json ? JSON.stringify(f) : formatFlow(f)}\n`);
  if (p.values.follow !== true) {
    const { text } = await adminGet(socketPath, `/flows?${q}`);
    for (const line of text.split('\n')) if (line) print(JSON.parse(line) as FlowRecord);
    return 0;
  }
  q.set('follow', '1');
  return await new Promise<number>((resolve, reject) => {
    const req = request({ socketPath, path: `/flows?${q}`, method: 'GET', agent: false }, (res) => {
      if ((res.statusCode ?? 0) >= 400) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let body: { error?: string; code?: string; hint?: string } = {};
          try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body; } catch { /* not JSON */ }
          reject(new AdminRequestError(res.statusCode ?? 0, body));
        });
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line) print(JSON.parse(line) as FlowRecord);
        }
      });
      res.on('end', () => resolve(0)); // the agent stopped
    });
    req.on('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new AgentNotRunningError(socketPath) : err));
    const stop = () => { req.destroy(); resolve(0); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    req.end();
  });
}
