/**
 * The node side of a Kubernetes pod's veth, where the anti-spoof guard goes.
 * The CNI made the pair; the agent finds it from inside the pod: a process
 * in the pod's cgroup (the sandbox's pause process, at least) is in the pod's
 * network namespace; there, the interface that holds the pod's address is
 * one end of a veth, and its peer's index names the other end in the node's
 * namespace. This works for routed CNIs (a veth per pod, a /32 route) and
 * bridged ones (the veth a port of cni0) alike, where a route lookup would
 * only find the bridge.
 */
import { execFileSync } from 'node:child_process';
import { type Dirent, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** One interface as `ip -j -d addr show` prints it (the fields used here). */
export interface IpLink {
  ifindex: number;
  ifname: string;
  /** the peer's index (a veth), in the namespace link_netnsid names when present */
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string };
  addr_info?: { family?: string; local?: string }[];
}

function holderOf(links: readonly IpLink[], ip: string): IpLink | undefined {
  return links.find((l) => l.addr_info?.some((a) => a.family === 'inet' && a.local === ip));
}

/** The pod's end: the veth holding `ip`; a reason when there is none. */
export function podEnd(links: readonly IpLink[], ip: string): IpLink | string {
  const holder = holderOf(links, ip);
  if (!holder) return `no interface in the pod's namespace holds ${ip}`;
  if (holder.linkinfo?.info_kind !== 'veth') return `${holder.ifname}, which holds ${ip}, is not a veth (${holder.linkinfo?.info_kind ?? 'a physical or unknown device'}): no node-side end to guard`;
  if (holder.link_index === undefined || holder.link_netnsid === undefined) return `${holder.ifname}'s peer is in the pod's own namespace: no node-side end to guard`;
  return holder;
}

/** The node's end of the pod's veth; a reason when the node namespace has none. */
export function nodeEnd(links: readonly IpLink[], pod: IpLink): IpLink | string {
  const peer = links.find((l) => l.ifindex === pod.link_index);
  if (!peer) return `the peer of the pod's ${pod.ifname} (index ${pod.link_index}) is not in the node's namespace`;
  if (peer.linkinfo?.info_kind !== 'veth' || peer.link_index !== pod.ifindex) return `index ${pod.link_index} in the node's namespace (${peer.ifname}) is not the peer of the pod's ${pod.ifname}`;
  return peer;
}

/**
 * A network namespace of the processes under a pod's cgroup directory (the
 * first process found, depth first); undefined when none runs yet.
 */
export function netnsOfCgroupDir(dir: string, procRoot = '/proc'): string | undefined {
  const walk = (d: string, depth: number): string | undefined => {
    let pids: string[] = [];
    try {
      pids = readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter((s) => s !== '');
    } catch {
      return undefined; // gone meanwhile
    }
    for (const pid of pids) {
      const ns = join(procRoot, pid, 'ns', 'net');
      try {
        statSync(ns);
        return ns;
      } catch {
        // exited meanwhile
      }
    }
    if (depth >= 3) return undefined;
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return undefined;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const found = walk(join(d, e.name), depth + 1);
      if (found) return found;
    }
    return undefined;
  };
  return walk(dir, 0);
}

function ipLinks(netns: string): IpLink[] {
  const out = execFileSync('nsenter', [`--net=${netns}`, 'ip', '-j', '-d', 'addr', 'show'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out) as IpLink[];
}

/** "dev:ino" of a namespace file: the same namespace has the same identity whatever path names it. */
export function netnsIdentity(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

/**
 * Finds the node-side veth of pods, one `ip` run in each namespace per pod
 * sandbox: the answer, or why there is none, is remembered by pod, sandbox
 * namespace and address.
 */
export class PodVethFinder {
  readonly #nodeNetns: string;
  readonly #known = new Map<string, string | Error>();

  /** nodeNetns: the namespace the CNI puts the node-side ends in (the agent's own, normally) */
  constructor(nodeNetns = '/proc/self/ns/net') {
    this.#nodeNetns = nodeNetns;
  }

  get nodeNetns(): string {
    return this.#nodeNetns;
  }

  /**
   * The interface name of the pod's node-side veth. Throws with the reason
   * when the pod runs no process yet, shares the node's network, or its
   * address is not on a veth.
   */
  find(podKey: string, cgroupDir: string, ip: string): string {
    const podNs = netnsOfCgroupDir(cgroupDir);
    if (!podNs) throw new Error(`no process runs in ${cgroupDir} yet`);
    const id = netnsIdentity(podNs);
    if (id === netnsIdentity(this.#nodeNetns)) throw new Error('the pod is in the node\'s network namespace');
    const key = `${podKey}|${id}|${ip}`;
    let found = this.#known.get(key);
    if (found === undefined) {
      const links = ipLinks(podNs);
      const pod = podEnd(links, ip);
      const node = typeof pod === 'string' ? pod : nodeEnd(ipLinks(this.#nodeNetns), pod);
      found = typeof node === 'string' ? new Error(node) : node.ifname;
      // an address not there yet may come; a device that is not a veth stays what it is
      if (!holderOf(links, ip)) throw found;
      this.forget(podKey);
      this.#known.set(key, found);
    }
    if (found instanceof Error) throw found;
    return found;
  }

  /** Forgets what was found for a pod (its veth went away). */
  forget(podKey: string): void {
    for (const k of this.#known.keys()) if (k.startsWith(`${podKey}|`)) this.#known.delete(k);
  }

  /** Forgets pods not in `keep` (by key). */
  retain(keep: ReadonlySet<string>): void {
    for (const k of this.#known.keys()) if (!keep.has(k.slice(0, k.indexOf('|')))) this.#known.delete(k);
  }
}
