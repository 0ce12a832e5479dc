/** The CLI's side of the admin API: GET (and POST for changes) over the agent's unix socket. */
import { request } from 'node:http';
import { AgentNotRunningError, SockmeshError } from '../errors.js';

/** Default admin socket of a running agent. */
export const DEFAULT_ADMIN_SOCKET = '/run/sockmesh/agent.sock';

/** An error the agent answered with. */
export class AdminRequestError extends SockmeshError {
  readonly status: number;
  constructor(status: number, body: { error?: string; code?: string; hint?: string }) {
    super(body.code ?? 'SOCKMESH_ADMIN', body.error ?? `the agent answered ${status}`, body.hint);
    this.status = status;
  }
}

/** GETs path from the agent; JSON bodies are parsed. Throws AgentNotRunningError when nothing answers. */
export function adminGet(socketPath: string, path: string, timeoutMs = 10_000): Promise<{ status: number; body: unknown; text: string }> {
  return adminRequest(socketPath, 'GET', path, undefined, timeoutMs);
}

/** POSTs a change (body as JSON) to the agent; as adminGet otherwise. */
export function adminPost(socketPath: string, path: string, body: unknown, timeoutMs = 10_000): Promise<{ status: number; body: unknown; text: string }> {
  return adminRequest(socketPath, 'POST', path, JSON.stringify(body), timeoutMs);
}

function adminRequest(socketPath: string, method: 'GET' | 'POST', path: string, payload: string | undefined, timeoutMs: number): Promise<{ status: number; body: unknown; text: string }> {
  return new Promise((resolve, reject) => {
    const headers = payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
    const req = request({ socketPath, path, method, headers, timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const json = (res.headers['content-type'] ?? '').startsWith('application/json');
        let body: unknown = text;
        if (json) {
          try {
            body = JSON.parse(text);
          } catch {
            reject(new Error(`the agent sent malformed JSON for ${path}`));
            return;
          }
        }
        const status = res.statusCode ?? 0;
        if (status >= 400) reject(new AdminRequestError(status, (body ?? {}) as { error?: string; code?: string; hint?: string }));
        else resolve({ status, body, text });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`the agent did not answer ${path} within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new AgentNotRunningError(socketPath));
      else reject(err);
    });
    req.end(payload);
  });
}
