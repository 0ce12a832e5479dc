/**
 * The agent's admin HTTP API: read-only GET routes served on a unix socket
 * (for the CLI; mode 0600, root only) and optionally on a TCP address (for
 * Prometheus); POST actions (changes) on the unix socket only. A route
 * returns JSON or text; a SockmeshError thrown by a route becomes a 4xx with
 * its code, anything else a 500.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { type AddressInfo, connect, isIP } from 'node:net';
import { dirname } from 'node:path';
import { AgentRunningError, InvalidArgumentError, NotFoundError, SockmeshError } from '../errors.js';
import { parseHostPort } from '../host-port.js';

/** What a route answers. */
export interface AdminReply {
  /** Default 200. */
  status?: number;
  /** A string is sent as text/plain unless contentType says otherwise; anything else as JSON. */
  body: unknown;
  contentType?: string;
  /**
   * A stream instead of a body: after `body` (written first, as JSON lines
   * when it is an array), the route keeps writing lines until the client goes
   * away (onClose) or it calls end().
   */
  stream?: (out: AdminStream) => void;
}

export interface AdminStream {
  /** false when the client is slow (the caller may skip lines) */
  write(line: string): boolean;
  end(): void;
  onClose(cb: () => void): void;
}

export type AdminRoute = (query: URLSearchParams) => AdminReply | Promise<AdminReply>;

/** A change: the request's JSON body (undefined when empty), parsed. */
export type AdminAction = (body: unknown) => AdminReply | Promise<AdminReply>;

/** bodies of actions larger than this are refused */
const MAX_ACTION_BYTES = 64 * 1024;

export interface AdminServerOptions {
  /** Unix socket path. Required. */
  socketPath: string;
  /** "host:port" for TCP as well, host an IP; port 0 picks a free one. Default: none. */
  address?: string;
  /** path → route */
  routes: Record<string, AdminRoute>;
  /** path → action (POST, JSON body), on the unix socket only; default none */
  actions?: Record<string, AdminAction>;
}

/** Whether something accepts connections on the unix socket. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export class AdminServer {
  readonly socketPath: string;
  readonly #tcp: { host: string; port: number } | undefined;
  readonly #routes: Readonly<Record<string, AdminRoute>>;
  readonly #actions: Readonly<Record<string, AdminAction>>;
  #servers: Server[] = [];
  #tcpPort: number | undefined;

  constructor(opts: AdminServerOptions) {
    if (!opts.socketPath.startsWith('/')) throw new InvalidArgumentError(`the admin socket path must be absolute, got ${opts.socketPath}`);
    this.socketPath = opts.socketPath;
    this.#tcp = opts.address === undefined ? undefined : parseHostPort('the admin address', opts.address);
    this.#routes = Object.freeze({ ...opts.routes });
    this.#actions = Object.freeze({ ...opts.actions });
  }

  /** The TCP address served, once started. */
  get address(): string | undefined {
    if (!this.#tcp || this.#tcpPort === undefined) return undefined;
    return isIP(this.#tcp.host) === 6 ? `[${this.#tcp.host}]:${this.#tcpPort}` : `${this.#tcp.host}:${this.#tcpPort}`;
  }

  async start(): Promise<void> {
    if (existsSync(this.socketPath)) {
      if (await socketAnswers(this.socketPath)) throw new AgentRunningError(this.socketPath);
      unlinkSync(this.socketPath); // left by an agent that died
    }
    mkdirSync(dirname(this.socketPath), { recursive: true, mode: 0o755 });
    try {
      const unix = this.#server(true);
      await listen(unix, () => unix.listen(this.socketPath));
      this.#servers.push(unix);
      chmodSync(this.socketPath, 0o600);
      if (this.#tcp) {
        const tcp = this.#server(false);
        await listen(tcp, () => tcp.listen(this.#tcp!.port, this.#tcp!.host));
        this.#servers.push(tcp);
        this.#tcpPort = (tcp.address() as AddressInfo).port;
      }
    } catch (err) {
      await this.stop();
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE') throw new InvalidArgumentError(`the admin address ${this.#tcp?.host}:${this.#tcp?.port} is in use`, 'pick another with --admin-address, or "none"');
      throw err;
    }
  }

  /** Stops listening, closes open connections and removes the socket file. */
  async stop(): Promise<void> {
    const servers = this.#servers.reverse();
    this.#servers = [];
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    })));
    if (servers.length > 0 && existsSync(this.socketPath)) unlinkSync(this.socketPath);
  }

  #server(local: boolean): Server {
    return createServer((req, res) => {
      this.#handle(req, res, local).catch((err: unknown) => {
        if (!res.headersSent) send(res, { status: 500, body: { error: String((err as Error)?.message ?? err) } });
        else res.destroy();
      });
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse, local: boolean): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = Object.hasOwn(this.#routes, url.pathname) ? this.#routes[url.pathname] : undefined;
    const action = Object.hasOwn(this.#actions, url.pathname) ? this.#actions[url.pathname] : undefined;
    if (!route && !action) {
      send(res, { status: 404, body: { error: `no route ${url.pathname}; routes: ${[...Object.keys(this.#routes), ...Object.keys(this.#actions).map((a) => `${a} (POST)`)].sort().join(', ')}` } });
      return;
    }
    const allowed = [...(route !== undefined ? ['GET', 'HEAD'] : []), ...(action !== undefined ? ['POST'] : [])];
    if (!allowed.includes(req.method ?? '')) {
      res.setHeader('allow', allowed.join(', '));
      send(res, { status: 405, body: { error: `${req.method} is not allowed on ${url.pathname} (${allowed.join(', ')})` } });
      return;
    }
    if (req.method === 'POST' && !local) {
      send(res, { status: 403, body: { error: `POST ${url.pathname}: changes are taken on the agent's unix socket only, not on the TCP address` } });
      return;
    }
    try {
      if (req.method === 'POST') send(res, await action!(await jsonBody(req, url.pathname)));
      else send(res, await route!(url.searchParams), req.method === 'HEAD');
    } catch (err) {
      if (!(err instanceof SockmeshError)) throw err;
      send(res, { status: err instanceof NotFoundError ? 404 : 400, body: { error: err.message, code: err.code, hint: err.hint } });
    }
  }
}

function listen(server: Server, go: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      resolve();
    });
    go();
  });
}

function send(res: ServerResponse, reply: AdminReply, headOnly = false): void {
  if (reply.stream && !headOnly) {
    res.statusCode = reply.status ?? 200;
    res.setHeader('content-type', 'application/x-ndjson');
    res.flushHeaders();
    if (Array.isArray(reply.body)) for (const x of reply.body) res.write(`${JSON.stringify(x)}\n`);
    const closers: (() => void)[] = [];
    res.on('close', () => { for (const c of closers) c(); });
    reply.stream({
      write: (line) => res.write(line.endsWith('\n') ? line : `${line}\n`),
      end: () => res.end(),
      onClose: (cb) => closers.push(cb),
    });
    return;
  }
  const text = typeof reply.body === 'string';
  const body = text ? (reply.body as string) : JSON.stringify(reply.body, null, 2) + '\n';
  res.statusCode = reply.status ?? 200;
  res.setHeader('content-type', reply.contentType ?? (text ? 'text/plain; charset=utf-8' : 'application/json'));
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(headOnly ? undefined : body);
}

/** An action's body: JSON, at most MAX_ACTION_BYTES; undefined when empty. */
async function jsonBody(req: IncomingMessage, path: string): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_ACTION_BYTES) throw new InvalidArgumentError(`POST ${path}: the body is over ${MAX_ACTION_BYTES} bytes`);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidArgumentError(`POST ${path}: the body is not JSON: ${(err as Error).message}`);
  }
}
