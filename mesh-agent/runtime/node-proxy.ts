/**
 * The shared L7 proxy of the node, run and supervised by the agent: Envoy
 * when one is configured or on PATH (started with the generated bootstrap),
 * else the built-in mesh-proxy. It runs in the runtime's node namespace, on
 * the pods' gateway address, in a cgroup under the pods' root so the kernel
 * short-circuits both its legs; it gets its configuration over the agent's
 * ADS unix socket. It is restarted with backoff when it exits, survives an
 * agent restart (the next agent adopts it), and drains on stop.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { envoyBootstrap } from '../../xds/envoy-bootstrap.js';
import { repoRoot } from '../paths.js';
import type { NodeRuntime } from './node-runtime.js';

export const NODE_PROXY = 'node-proxy';

export interface NodeProxyOptions {
  runtime: NodeRuntime;
  /** the agent's ADS unix socket */
  xdsSocket: string;
  /** node.id the proxy presents */
  nodeId: string;
  /** where its log, admin socket and bootstrap go */
  stateDir: string;
  /** "envoy", "mesh-proxy", or a path to an Envoy binary. Default: Envoy when one is on PATH, else mesh-proxy. */
  proxy?: string;
  /** mesh-proxy reports every request to the agent here (unix socket), the sampled ones with their traces; default: none, no spans */
  telemetrySocket?: string;
  /** Envoy: the agent's receiver of its spans (OTLP/gRPC), in its bootstrap; default none (Envoy gets no tracer cluster) */
  envoySpansSocket?: string;
  /** Envoy: the agent's receiver of its access log (gRPC), in its bootstrap; default none */
  envoyAccessLogSocket?: string;
  /** k8s.node.name on the proxy's spans */
  nodeName?: string;
  backoffMs?: number;
  maxBackoffMs?: number;
}

export interface NodeProxyStatus {
  kind: 'envoy' | 'mesh-proxy';
  binary: string;
  running: boolean;
  pid?: number;
  restarts: number;
  lastExit?: string;
  log: string;
  adminSocket?: string;
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The node proxy a --proxy choice gives: mesh-proxy, envoy (on PATH), a
 * path to an Envoy binary, or (undefined) Envoy when one is on PATH, else
 * mesh-proxy. Throws when envoy is asked for and none is on PATH.
 */
export function nodeProxyChoice(want: string | undefined): { kind: 'envoy' | 'mesh-proxy'; binary: string } {
  const meshProxy = { kind: 'mesh-proxy' as const, binary: join(repoRoot(), 'dist', 'mesh-proxy', 'cli.js') };
  if (want === 'mesh-proxy') return meshProxy;
  const envoy = want === undefined || want === 'envoy' ? onPath('envoy') : want;
  if (envoy) return { kind: 'envoy', binary: envoy };
  if (want === 'envoy') throw new Error('no envoy binary on PATH');
  return meshProxy;
}

/**
 * What the node proxy's binary is, so an agent adopts only a proxy of the
 * same build: for mesh-proxy a hash of the built JavaScript it runs (dist/,
 * benchmarks aside), for Envoy its binary's size and time (a hash of a
 * 100 MB binary would slow every start).
 */
export function nodeProxyBuild(kind: 'envoy' | 'mesh-proxy', binary: string): string {
  if (kind === 'envoy') {
    try {
      const st = statSync(binary);
      return `envoy:${st.size}:${Math.round(st.mtimeMs)}`;
    } catch {
      return 'envoy:missing';
    }
  }
  const h = createHash('sha256');
  const dist = join(repoRoot(), 'dist');
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(dir, n);
      if (n === 'benchmarks' && dir === dist) continue;
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('.js')) h.update(p.slice(dist.length)).update(readFileSync(p));
    }
  };
  walk(dist);
  return `mesh-proxy:${h.digest('hex').slice(0, 16)}`;
}

export class NodeProxy {
  readonly kind: 'envoy' | 'mesh-proxy';
  readonly binary: string;
  readonly #o: NodeProxyOptions;
  #child: ChildProcess | undefined;
  #running = false;
  #restarts = 0;
  #lastExit: string | undefined;
  #delay: number;
  #startedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #stopped = true;
  /** nodeProxyBuild's answer, worked out once */
  #buildId: string | undefined;
  /** stopped with remove: its state directory is gone and nothing writes into it again until start() */
  #removed = false;

  constructor(opts: NodeProxyOptions) {
    this.#o = opts;
    this.#delay = opts.backoffMs ?? 500;
    const chosen = nodeProxyChoice(opts.proxy);
    this.kind = chosen.kind;
    this.binary = chosen.binary;
    this.#delay = opts.backoffMs ?? 500;
  }

  #build(): string {
    return this.#buildId ??= nodeProxyBuild(this.kind, this.binary);
  }

  get log(): string {
    return join(this.#o.stateDir, `${NODE_PROXY}.log`);
  }

  /** source address → workload, for mesh-proxy (written by the agent, read by the proxy when it changes) */
  get workloadsFile(): string {
    return join(this.#o.stateDir, 'workloads.json');
  }

  writeWorkloads(json: string): void {
    if (this.#removed) return; // the agent's last passes while its pods go: the directory stays gone
    mkdirSync(this.#o.stateDir, { recursive: true });
    writeFileSync(`${this.workloadsFile}.tmp`, json);
    renameSync(`${this.workloadsFile}.tmp`, this.workloadsFile);
  }

  get adminSocket(): string {
    return join(this.#o.stateDir, `${NODE_PROXY}-admin.sock`);
  }

  #recordPath(): string {
    return join(this.#o.stateDir, `${NODE_PROXY}.json`);
  }

  #argv(): string[] {
    if (this.kind === 'envoy') {
      const text = JSON.stringify(envoyBootstrap({
        nodeId: this.#o.nodeId, adsPipe: this.#o.xdsSocket, adminPort: 15000, ...(this.#o.envoySpansSocket !== undefined && { otlpPipe: this.#o.envoySpansSocket }),
        ...(this.#o.envoyAccessLogSocket !== undefined && { alsPipe: this.#o.envoyAccessLogSocket }),
      }), null, 2);
      // named by its content: an Envoy started with another bootstrap (an earlier build's, without a cluster its
      // listeners now name) has other arguments, so it is restarted, not adopted
      const name = `envoy-bootstrap-${createHash('sha256').update(text).digest('hex').slice(0, 12)}.json`;
      mkdirSync(this.#o.stateDir, { recursive: true });
      for (const f of readdirSync(this.#o.stateDir)) if (f.startsWith('envoy-bootstrap') && f.endsWith('.json') && f !== name) rmSync(join(this.#o.stateDir, f), { force: true });
      const bootstrap = join(this.#o.stateDir, name);
      writeFileSync(bootstrap, text);
      return [this.binary, '-c', bootstrap, '--drain-time-s', '5', '--base-id', '7'];
    }
    return [process.execPath, this.binary, '--xds', `unix:${this.#o.xdsSocket}`, '--node-id', this.#o.nodeId, '--admin-socket', this.adminSocket, '--admin-address', '127.0.0.1:15000', '--access-log', join(this.#o.stateDir, `${NODE_PROXY}-access.log`), '--workloads', this.workloadsFile,
      ...(this.#o.telemetrySocket ? ['--telemetry-socket', this.#o.telemetrySocket] : []), ...(this.#o.nodeName ? ['--node', this.#o.nodeName] : []),
      // what it traces, and at which ratio, comes with its listeners (the agent's setTracing)
      '--tracing', 'xds'];
  }

  /** Starts it, or adopts the one an earlier agent left running (when it runs the same binary). */
  start(): void {
    this.#stopped = false;
    this.#removed = false;
    mkdirSync(this.#o.stateDir, { recursive: true });
    const rec = (() => {
      try {
        return JSON.parse(readFileSync(this.#recordPath(), 'utf8')) as { argv: string[]; restarts: number; build?: string };
      } catch {
        return undefined;
      }
    })();
    const argv = this.#argv();
    const running = this.#o.runtime.nodeProcessRunning(NODE_PROXY);
    // adopted only when it runs the same arguments and the same build (after an upgrade, the old code would go on)
    if (running && rec && JSON.stringify(rec.argv) === JSON.stringify(argv) && rec.build === this.#build()) {
      this.#running = true;
      this.#restarts = rec.restarts;
      this.#poll = setInterval(() => this.#watchAdopted(), 500);
      return;
    }
    if (running) {
      this.#lastExit = rec && JSON.stringify(rec.argv) === JSON.stringify(argv) ? 'replaced: it was of another build' : 'replaced: it ran other arguments';
      void this.#o.runtime.stopNodeProcess(NODE_PROXY, 'SIGKILL').then(() => this.#spawn());
    } else {
      this.#spawn();
    }
  }

  #watchAdopted(): void {
    if (this.#child || !this.#running) return;
    if (!this.#o.runtime.nodeProcessRunning(NODE_PROXY)) this.#exited(undefined, 'exited');
  }

  #spawn(): void {
    if (this.#stopped) return;
    const argv = this.#argv();
    writeFileSync(this.#recordPath(), JSON.stringify({ argv, restarts: this.#restarts, build: this.#build() }) + '\n');
    writeFileSync(this.log, `--- sockmesh: starting ${this.kind} (restart ${this.#restarts}) at ${new Date().toISOString()}\n`, { flag: 'a' });
    const child = this.#o.runtime.spawnInNode(NODE_PROXY, argv, this.log);
    this.#child = child;
    this.#running = true;
    this.#startedAt = Date.now();
    child.once('exit', (code, signal) => this.#exited(child, signal ? `killed by ${signal}` : `exit code ${code}`));
  }

  #exited(child: ChildProcess | undefined, how: string): void {
    if (child && child !== this.#child) return;
    this.#child = undefined;
    this.#running = false;
    this.#lastExit = how;
    if (this.#stopped) return;
    if (Date.now() - this.#startedAt > 30_000) this.#delay = this.#o.backoffMs ?? 500;
    const delay = this.#delay;
    this.#delay = Math.min(this.#delay * 2, this.#o.maxBackoffMs ?? 10_000);
    this.#timer = setTimeout(() => {
      this.#restarts++;
      this.#spawn();
    }, delay);
  }

  status(): NodeProxyStatus {
    return {
      kind: this.kind, binary: this.binary, running: this.#running, restarts: this.#restarts, log: this.log,
      ...(this.#child?.pid !== undefined && { pid: this.#child.pid }),
      ...(this.#lastExit !== undefined && { lastExit: this.#lastExit }),
      ...(this.kind === 'mesh-proxy' && { adminSocket: this.adminSocket }),
    };
  }

  /** The id of the proxy's cgroup (its inode), while it exists: the kernel knows the proxy's connects by it. */
  cgroupId(): bigint | undefined {
    try {
      return statSync(this.#o.runtime.nodeProcessCgroup(NODE_PROXY), { bigint: true }).ino;
    } catch {
      return undefined;
    }
  }

  /**
   * Stops supervising; with `remove`, drains it (SIGTERM, then SIGKILL),
   * removes its cgroup and its state directory (its record, its logs and
   * access log, the workloads file, the Envoy bootstrap), else leaves it
   * running for the next agent to adopt.
   */
  async stop(opts: { remove?: boolean; drainMs?: number } = {}): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#poll) clearInterval(this.#poll);
    if (!opts.remove) return;
    this.#removed = true;
    const drained = await this.#o.runtime.stopNodeProcess(NODE_PROXY, 'SIGTERM', opts.drainMs ?? 6000);
    if (!drained) await this.#o.runtime.stopNodeProcess(NODE_PROXY, 'SIGKILL');
    rmSync(this.#o.stateDir, { recursive: true, force: true });
  }
}
