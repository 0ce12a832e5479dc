/**
 * One POST from the node proxy to the agent's relay socket (a batch of request
 * records). Resolves whether the agent took it (200); never rejects, and a
 * silent agent is cut at timeoutMs.
 */
import { request } from 'node:http';

export function postToRelay(socketPath: string, path: string, body: Buffer, headers: Record<string, string | number>, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length, ...headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
      res.on('error', () => resolve(false));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`the agent did not answer in ${timeoutMs} ms`)));
    req.on('error', () => resolve(false));
    req.end(body);
  });
}
