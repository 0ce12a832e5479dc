/**
 * Runs the store's pods on the local node runtime, as a kubelet would: each
 * pod scheduled here (no nodeName, or this node's) becomes a runtime pod
 * (netns + veth + cgroup) running its command, restarted per its
 * restartPolicy with backoff. Pod processes are detached: they outlive an
 * agent restart, and the next agent adopts them (the pod's cgroup says
 * whether its process still runs; a record next to its log says what it
 * runs). Status (address, ready, phase) goes back into the store. Each pod
 * gets /etc/hosts with the cluster's services.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterStore } from '../cluster/cluster-store.js';
import type { Pod } from '../cluster/model.js';
import type { NodeRuntime } from './node-runtime.js';

export interface PodSupervisorOptions {
  runtime: NodeRuntime;
  store: ClusterStore;
  /** pods with this spec.nodeName (or none) run here */
  nodeName: string;
  /** where pod logs and records go */
  stateDir: string;
  /** the working directory of pod processes (relative commands resolve here). Default: this process's. */
  workDir?: string;
  /** First restart delay; doubles up to maxBackoffMs. Default: 500 ms. */
  backoffMs?: number;
  /** Default: 10 s. */
  maxBackoffMs?: number;
  /** How often adopted pods are checked. Default: 500 ms. */
  pollMs?: number;
  /**
   * Called when a new pod has its address and cgroup, before its process
   * starts: the agent programs the pod's datapath entries here, so its very
   * first connection is already seen as the pod's.
   */
  beforeStart?: (key: string) => void;
}

/** A service as /etc/hosts lists it. */
export interface HostsService {
  namespace: string;
  name: string;
  vip: string;
}

export interface PodRunState {
  key: string;
  runtimeName: string;
  ip?: string;
  phase: string;
  restarts: number;
  lastExit?: string;
  log: string;
}

interface Realised {
  key: string;
  rt: string;
  ip: string;
  command: string[];
  restartPolicy: Pod['restartPolicy'];
  child: ChildProcess | undefined;
  /** the process runs (ours, or one adopted from an earlier agent) */
  running: boolean;
  restarts: number;
  backoffMs: number;
  startedAt: number;
  restartTimer: NodeJS.Timeout | undefined;
  phase: string;
  lastExit?: string;
  hosts: string;
  /** stopped by us (spec change, removal): its exit is not a failure */
  stopping: boolean;
  cgroupId?: bigint;
}

/** The runtime's name for a pod: "ns-name" when that is a DNS label, else a shortened form with a hash. */
export function runtimeName(key: string): string {
  const plain = key.replace('/', '-').replace(/\./g, '-');
  if (/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(plain) && plain.length <= 48) return plain;
  const h = createHash('sha256').update(key).digest('hex').slice(0, 8);
  return `${plain.slice(0, 39).replace(/-+$/, '')}-${h}`;
}

export class PodSupervisor {
  readonly #rt: NodeRuntime;
  readonly #store: ClusterStore;
  readonly #nodeName: string;
  readonly #stateDir: string;
  readonly #backoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #pollMs: number;
  readonly #workDir: string | undefined;
  readonly #beforeStart: ((key: string) => void) | undefined;
  readonly #pods = new Map<string, Realised>();
  #services: HostsService[] = [];
  #timer: NodeJS.Timeout | undefined;
  #cancel: (() => void) | undefined;
  #dirty = false;
  #syncing: Promise<void> | undefined;
  #stopped = false;
  /** the last error of a sync, for status */
  lastError: string | undefined;

  constructor(opts: PodSupervisorOptions) {
    this.#rt = opts.runtime;
    this.#store = opts.store;
    this.#nodeName = opts.nodeName;
    this.#stateDir = opts.stateDir;
    this.#backoffMs = opts.backoffMs ?? 500;
    this.#maxBackoffMs = opts.maxBackoffMs ?? 10_000;
    this.#pollMs = opts.pollMs ?? 500;
    this.#workDir = opts.workDir;
    this.#beforeStart = opts.beforeStart;
  }

  /** Brings the runtime up, adopts what runs, realises what is missing; then follows the store. */
  async start(): Promise<void> {
    await this.#rt.start();
    mkdirSync(this.#stateDir, { recursive: true });
    this.#cancel = this.#store.onChange(() => this.#kick());
    this.#timer = setInterval(() => this.#poll(), this.#pollMs);
    await this.sync();
  }

  /** Stops following; with removePods, kills and removes every pod it runs and its state directory (records, logs), else they keep running. */
  async stop(opts: { removePods?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    this.#cancel?.();
    if (this.#timer) clearInterval(this.#timer);
    await this.#syncing;
    for (const p of this.#pods.values()) if (p.restartTimer) clearTimeout(p.restartTimer);
    if (opts.removePods) {
      for (const p of [...this.#pods.values()]) await this.#remove(p);
      rmSync(this.#stateDir, { recursive: true, force: true });
    }
  }

  /** Cgroup ids of the pods it runs, by pod key. */
  cgroupIds(): Map<string, bigint> {
    const out = new Map<string, bigint>();
    for (const p of this.#pods.values()) {
      try {
        p.cgroupId ??= this.#rt.podCgroupId(p.rt);
        out.set(p.key, p.cgroupId);
      } catch {
        // being removed
      }
    }
    return out;
  }

  /** Pods as the runtime runs them. */
  states(): PodRunState[] {
    return [...this.#pods.values()].map((p) => ({
      key: p.key, runtimeName: p.rt, ip: p.ip, phase: p.phase, restarts: p.restarts,
      ...(p.lastExit !== undefined && { lastExit: p.lastExit }), log: this.#logPath(p.rt),
    }));
  }

  /** The services every pod's /etc/hosts lists; rewrites the files that change. */
  setServices(services: HostsService[]): void {
    this.#services = [...services].sort((a, b) => (`${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1));
    for (const p of this.#pods.values()) this.#writeHosts(p);
  }

  #logPath(rt: string): string {
    return join(this.#stateDir, `${rt}.log`);
  }

  #recordPath(rt: string): string {
    return join(this.#stateDir, `${rt}.json`);
  }

  #hostsFor(p: Pick<Realised, 'key' | 'ip'>): string {
    const [ns, name] = p.key.split('/') as [string, string];
    const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', `${p.ip}\t${name}`, '# services (sockmesh)'];
    for (const s of this.#services) {
      const names = [`${s.name}.${s.namespace}.svc.cluster.local`, `${s.name}.${s.namespace}`, ...(s.namespace === ns ? [s.name] : [])];
      lines.push(`${s.vip}\t${names.join(' ')}`);
    }
    return lines.join('\n') + '\n';
  }

  #writeHosts(p: Realised): void {
    const content = this.#hostsFor(p);
    if (content === p.hosts) return;
    this.#rt.writePodHosts(p.rt, content);
    p.hosts = content;
  }

  #kick(): void {
    if (this.#stopped) return;
    this.#dirty = true;
    if (!this.#syncing) void this.sync();
  }

  /** Makes the runtime match the store (serialised: a change during a sync triggers another). */
  async sync(): Promise<void> {
    if (this.#syncing) {
      this.#dirty = true;
      return this.#syncing;
    }
    this.#syncing = (async () => {
      do {
        this.#dirty = false;
        try {
          await this.#syncOnce();
          this.lastError = undefined;
        } catch (err) {
          this.lastError = (err as Error).message;
        }
      } while (this.#dirty && !this.#stopped);
    })();
    try {
      await this.#syncing;
    } finally {
      this.#syncing = undefined;
    }
  }

  #local(pod: Pod): boolean {
    return (pod.nodeName === undefined || pod.nodeName === this.#nodeName) && !pod.hostNetwork;
  }

  async #syncOnce(): Promise<void> {
    const want = new Map<string, Pod>();
    for (const [key, pod] of this.#store.pods()) if (this.#local(pod)) want.set(key, pod);
    for (const [key, pod] of this.#store.pods()) {
      if (pod.hostNetwork && (pod.nodeName === undefined || pod.nodeName === this.#nodeName) && pod.phase !== 'Unsupported') {
        this.#store.setPodStatus(key, { ready: false, phase: 'Unsupported' }); // host-network pods are not run here
      }
    }
    // adopt what an earlier agent left running (first sync), remove what is not wanted
    if (this.#pods.size === 0) {
      const existing = await this.#rt.pods();
      const names = new Map([...want.keys()].map((k) => [runtimeName(k), k]));
      for (const info of existing) {
        const key = names.get(info.name);
        if (key && info.ip) this.#adopt(key, want.get(key)!, info.name, info.ip);
        else await this.#rt.removePod(info.name);
      }
    }
    for (const p of [...this.#pods.values()]) {
      if (this.#stopped) return;
      if (!want.has(p.key)) await this.#remove(p);
    }
    for (const [key, pod] of want) {
      if (this.#stopped) return;
      const p = this.#pods.get(key);
      if (!p) {
        await this.#create(key, pod);
      } else {
        p.restartPolicy = pod.restartPolicy;
        if (JSON.stringify(p.command) !== JSON.stringify(pod.command)) await this.#restartWith(p, pod.command);
      }
    }
  }

  #adopt(key: string, pod: Pod, rt: string, ip: string): void {
    let command: string[] = [];
    let restarts = 0;
    try {
      const rec = JSON.parse(readFileSync(this.#recordPath(rt), 'utf8')) as { command: string[]; restarts?: number };
      command = rec.command;
      restarts = rec.restarts ?? 0;
    } catch {
      // no record: treated as running something else, so it is restarted
    }
    const running = this.#rt.podRunning(rt);
    const p: Realised = {
      key, rt, ip, command, restartPolicy: pod.restartPolicy, child: undefined, running, restarts, backoffMs: this.#backoffMs,
      startedAt: Date.now(), restartTimer: undefined, phase: running ? 'Running' : 'Pending', hosts: '', stopping: false,
    };
    this.#pods.set(key, p);
    this.#writeHosts(p);
    if (running) this.#store.setPodStatus(key, { ip, ready: true, phase: 'Running' });
    else this.#spawn(p);
  }

  async #create(key: string, pod: Pod): Promise<void> {
    const rt = runtimeName(key);
    const clash = [...this.#pods.values()].find((q) => q.rt === rt);
    if (clash) {
      this.#store.setPodStatus(key, { ready: false, phase: `Failed: runtime name ${rt} is already pod ${clash.key}'s` });
      return;
    }
    this.#store.setPodStatus(key, { ready: false, phase: 'ContainerCreating' });
    const info = await this.#rt.addPod(rt);
    const p: Realised = {
      key, rt, ip: info.ip, command: pod.command, restartPolicy: pod.restartPolicy, child: undefined, running: false, restarts: 0,
      backoffMs: this.#backoffMs, startedAt: 0, restartTimer: undefined, phase: 'ContainerCreating', hosts: '', stopping: false,
    };
    this.#pods.set(key, p);
    this.#writeHosts(p);
    this.#store.setPodStatus(key, { ip: info.ip, ready: false, phase: 'ContainerCreating' });
    this.#beforeStart?.(key);
    this.#spawn(p);
  }

  #spawn(p: Realised): void {
    if (this.#stopped) return;
    writeFileSync(this.#recordPath(p.rt), JSON.stringify({ key: p.key, command: p.command, restarts: p.restarts }) + '\n');
    appendLine(this.#logPath(p.rt), `--- sockmesh: starting ${JSON.stringify(p.command)} (restart ${p.restarts}) at ${new Date().toISOString()}`);
    const child = this.#rt.spawnDetached(p.rt, p.command, this.#logPath(p.rt), this.#workDir);
    p.child = child;
    p.running = true;
    p.stopping = false;
    p.startedAt = Date.now();
    p.phase = 'Running';
    child.once('error', (err) => this.#exited(p, child, `failed to start: ${err.message}`, false));
    child.once('exit', (code, signal) => this.#exited(p, child, signal ? `killed by ${signal}` : `exit code ${code}`, code === 0));
    this.#store.setPodStatus(p.key, { ip: p.ip, ready: true, phase: 'Running' });
  }

  #exited(p: Realised, child: ChildProcess | undefined, how: string, success: boolean): void {
    if (child && p.child !== child) return; // an earlier process of this pod
    p.child = undefined;
    p.running = false;
    if (p.stopping || this.#stopped || this.#pods.get(p.key) !== p) return;
    p.lastExit = how;
    const restart = p.restartPolicy === 'Always' || (p.restartPolicy === 'OnFailure' && !success);
    if (!restart) {
      p.phase = success ? 'Succeeded' : `Failed (${how})`;
      this.#store.setPodStatus(p.key, { ip: p.ip, ready: false, phase: p.phase });
      return;
    }
    if (Date.now() - p.startedAt > 10 * this.#maxBackoffMs) p.backoffMs = this.#backoffMs; // it ran a good while: start over
    const delay = p.backoffMs;
    p.backoffMs = Math.min(p.backoffMs * 2, this.#maxBackoffMs);
    p.phase = `CrashLoopBackOff (${how}; restarting in ${delay} ms)`;
    this.#store.setPodStatus(p.key, { ip: p.ip, ready: false, phase: p.phase });
    p.restartTimer = setTimeout(() => {
      p.restartTimer = undefined;
      if (this.#pods.get(p.key) !== p || this.#stopped) return;
      p.restarts++;
      this.#spawn(p);
    }, delay);
  }

  /** Adopted processes (no child handle) are watched through their cgroup. */
  #poll(): void {
    for (const p of this.#pods.values()) {
      if (p.running && !p.child && !p.stopping && !this.#rt.podRunning(p.rt)) this.#exited(p, undefined, 'exited', false);
    }
  }

  async #restartWith(p: Realised, command: string[]): Promise<void> {
    p.stopping = true;
    if (p.restartTimer) clearTimeout(p.restartTimer);
    p.restartTimer = undefined;
    this.#store.setPodStatus(p.key, { ip: p.ip, ready: false, phase: 'Restarting (spec changed)' });
    await this.#rt.killPodProcesses(p.rt);
    p.command = command;
    p.backoffMs = this.#backoffMs;
    this.#spawn(p);
  }

  async #remove(p: Realised): Promise<void> {
    p.stopping = true;
    if (p.restartTimer) clearTimeout(p.restartTimer);
    this.#pods.delete(p.key);
    await this.#rt.removePod(p.rt);
    rmSync(this.#recordPath(p.rt), { force: true });
    rmSync(this.#logPath(p.rt), { force: true });
    if (this.#store.pods().has(p.key)) this.#store.setPodStatus(p.key, { ready: false, phase: 'Pending' });
    else this.#store.setPodStatus(p.key, undefined);
  }
}

function appendLine(path: string, line: string): void {
  try {
    writeFileSync(path, `${line}\n`, { flag: 'a' });
  } catch {
    if (!existsSync(path)) throw new Error(`cannot write ${path}`);
  }
}
