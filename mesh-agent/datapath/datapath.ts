/**
 * The kernel short-circuit as one unit: load and attach bpf/sockmesh.bpf.o,
 * pin its maps and links so it outlives the agent, adopt those pins on the
 * next start, and read and write its maps.
 *
 * Attach order keeps the byte-order rule of the programs: sk_msg is attached
 * to the sockhash before sockops can put a socket into it.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, constants as fsc, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BpfError, InvalidArgumentError, NotUpError, PinMismatchError, VerifierRejectedError } from '../errors.js';
import { DEFAULT_PIN_DIR, STATE_DIR, defaultObjectPath } from '../paths.js';
import { checkKernel, checkPrivileges, ensureBpffs, findCgroup2 } from './host-checks.js';
import { FlowEventReader, type FlowEventReaderOptions, RingRecordReader, type RingRecordReaderOptions } from './flow-events.js';
import {
  BPF, BpfObject, btfOfFile, ifIndex, inNetns, linkCreate, linkInfo, mapDelete, mapInfo, mapKeys, mapLookup, mapUpdate, objGet, objPin,
  possibleCpus, progAttach, runIterator, silenceLibbpf,
} from './libbpf.js';
import {
  type DatapathLayout, type EndpointInfo, type PolicyEventRecord, type PolicySeen, type SockKey, decodeEndpoint, decodePolicyEvent, decodePolicySeen, encodePolicySeenKey, decodeIPv4, decodePort, decodeSockKey, encodeEndpoint, encodePort, encodePortKey,
  encodeIPv4, encodeSockKey, layoutFromBtf,
} from './layout.js';

/** Options of a Datapath. Frozen after validation. */
export interface DatapathOptions {
  /** The compiled BPF object. Default: bpf/build/sockmesh.bpf.o in the checkout. */
  objectPath?: string;
  /** bpffs directory for maps and links. Default: /sys/fs/bpf/sockmesh. */
  pinDir?: string;
  /**
   * cgroup v2 directory the sockops program attaches to: the root of the
   * pods' cgroups. Default: `<cgroup2 mount>/sockmesh` (created if absent).
   */
  cgroupPath?: string;
}

/** The maps and links, by pin name. */
const MAPS = [
  'sm_endpoints', 'sm_sock_hash', 'sm_sock_state', 'sm_counters', 'sm_services', 'sm_backends', 'sm_cgroups', 'sm_sock_svc',
  'sm_sock_flow', 'sm_flow_events', 'sm_pol_cgroups', 'sm_pol_pods', 'sm_ipcache', 'sm_policy', 'sm_tickets', 'sm_sock_pol',
  'sm_pol_events', 'sm_l7_ports', 'sm_udp_peers', 'sm_pol_seen', 'sm_ports',
] as const;
type MapName = (typeof MAPS)[number];
/** Hash maps the agent reconciles, with their key and value sizes. */
export const HASH_MAPS = Object.freeze({ sm_endpoints: [4, 8], sm_services: [8, 12], sm_backends: [8, 8], sm_cgroups: [8, 8] } as const);
export type HashMapName = keyof typeof HASH_MAPS;
/** The NetworkPolicy maps the agent writes (two hashes, two LPM tries), with their key and value sizes. */
export const POLICY_MAPS = Object.freeze({ sm_pol_cgroups: [8, 16], sm_pol_pods: [4, 16], sm_ipcache: [8, 16], sm_policy: [16, 8], sm_l7_ports: [4, 4] } as const);
export type PolicyMapName = keyof typeof POLICY_MAPS;
/** Every map the agent writes entry by entry: the reconciler's and the policy enforcer's. */
const TABLES: Readonly<Record<HashMapName | PolicyMapName, readonly [number, number]>> = Object.freeze({ ...HASH_MAPS, ...POLICY_MAPS });
export type TableName = keyof typeof TABLES;
const LINK_POL_CUT = 'link_pol_cut';
const LINK_POL_CUT_UDP = 'link_pol_cut_udp';
/** the guard program, pinned: each pod's veth gets a link of its own (`guard-<ifname>-<ifindex>`) */
const PROG_POL_GUARD = 'prog_pol_guard';
const GUARD_PIN = /^guard-(.+)-(\d+)$/;
const LINK_SOCKOPS = 'link_sockops';
/** cgroup programs attached through pinned links, by program: pin name */
const CGROUP_LINKS = Object.freeze({
  sm_connect4: 'link_connect4', sm_getpeername4: 'link_getpeername4', sm_getpeername6: 'link_getpeername6', sm_pol_ingress: 'link_pol_ingress',
  sm_sendmsg4: 'link_sendmsg4', sm_connect6: 'link_connect6', sm_sendmsg6: 'link_sendmsg6', sm_pol_egress: 'link_pol_egress',
} as const);
const LINK_SK_MSG = 'link_sk_msg';
const PROG_SK_MSG = 'prog_sk_msg';

/** What `status` reports. */
export interface DatapathStatus {
  up: boolean;
  pinDir: string;
  cgroupPath?: string;
  objectPath?: string;
  objectSha256?: string;
  loadedAt?: string;
  skMsgAttach?: 'link' | 'prog';
  links?: {
    sockops?: { id: number; progId: number; cgroupId: string };
    skMsg?: { id: number; progId: number };
    connect4?: { id: number; progId: number };
    getpeername4?: { id: number; progId: number };
    policyIngress?: { id: number; progId: number };
    policyCut?: { id: number; progId: number };
  };
  endpoints?: { ip: string; identity: number; enrolled: boolean }[];
  sockets?: number;
  counters?: Record<string, number>;
}

interface StateRecord {
  cgroupPath: string;
  /** whether start() made the cgroup directory, so down() removes it when empty */
  createdCgroup: boolean;
  objectPath: string;
  objectSha256: string;
  loadedAt: string;
  skMsgAttach: 'link' | 'prog';
}

function validate(opts: DatapathOptions): Required<Omit<DatapathOptions, 'cgroupPath'>> & { cgroupPath: string | undefined } {
  const pinDir = (opts.pinDir ?? DEFAULT_PIN_DIR).replace(/\/+$/, '');
  if (!pinDir.startsWith('/')) throw new InvalidArgumentError(`pinDir must be absolute, got ${pinDir}`);
  if (opts.cgroupPath !== undefined && !opts.cgroupPath.startsWith('/')) {
    throw new InvalidArgumentError(`cgroupPath must be absolute, got ${opts.cgroupPath}`);
  }
  return { objectPath: opts.objectPath ?? defaultObjectPath(), pinDir, cgroupPath: opts.cgroupPath };
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export class Datapath {
  readonly options: Readonly<ReturnType<typeof validate>>;
  #fds = new Map<MapName, number>();
  #layout: DatapathLayout | undefined;
  #cpus = 0;

  constructor(opts: DatapathOptions = {}) {
    this.options = Object.freeze(validate(opts));
  }

  get pinDir(): string {
    return this.options.pinDir;
  }

  #statePath(): string {
    const id = createHash('sha256').update(this.pinDir).digest('hex').slice(0, 12);
    return join(STATE_DIR, `${basename(this.pinDir)}-${id}.json`);
  }

  #pin(name: string): string {
    return join(this.pinDir, name);
  }

  /** True when every map and the links are pinned. */
  isUp(): boolean {
    return MAPS.every((m) => existsSync(this.#pin(m))) && existsSync(this.#pin(LINK_SOCKOPS))
      && Object.values(CGROUP_LINKS).every((l) => existsSync(this.#pin(l))) && existsSync(this.#pin(LINK_POL_CUT)) && existsSync(this.#pin(LINK_POL_CUT_UDP)) && existsSync(this.#pin(PROG_POL_GUARD))
      && (existsSync(this.#pin(LINK_SK_MSG)) || existsSync(this.#pin(PROG_SK_MSG)));
  }

  /**
   * Brings the datapath up, or adopts the one already pinned. Returns
   * whether it adopted, and whether the adopted programs were loaded from
   * another build of the object than this agent's (an upgrade then needs
   * down and up). Holds map fds until stop().
   */
  start(): { adopted: boolean; otherBuild: boolean } {
    checkPrivileges();
    silenceLibbpf();
    ensureBpffs(this.pinDir);
    this.#learnLayout();
    if (this.isUp()) {
      this.#adopt();
      const pinnedSha = this.#record()?.objectSha256;
      return { adopted: true, otherBuild: pinnedSha !== undefined && pinnedSha !== sha256File(this.options.objectPath) };
    }
    checkKernel();
    // a crash between the first pin and the last leaves a partial set: start over
    this.#removePins();
    const cgroupPath = this.options.cgroupPath ?? join(findCgroup2(), 'sockmesh');
    const createdCgroup = !existsSync(cgroupPath);
    mkdirSync(cgroupPath, { recursive: true });
    this.#load(cgroupPath, createdCgroup);
    return { adopted: false, otherBuild: false };
  }

  /** Opens the pinned datapath; throws NotUpError when nothing is pinned. */
  adopt(): void {
    checkPrivileges();
    if (!this.isUp()) throw new NotUpError(this.pinDir);
    this.#learnLayout();
    if (this.#fds.size === 0) this.#adopt();
  }

  /** Reads the object's layout (checked against the agent's) and the CPU count, once. */
  #learnLayout(): void {
    this.#layout ??= layoutFromBtf(btfOfFile(this.options.objectPath));
    this.#cpus ||= possibleCpus();
  }

  #adopt(): void {
    for (const m of MAPS) this.#fds.set(m, objGet(this.#pin(m)));
    const want: Record<MapName, readonly [number, number]> = {
      ...HASH_MAPS, sm_sock_hash: [16, 8], sm_sock_state: [4, 8], sm_counters: [4, 8], sm_sock_svc: [4, 8],
      sm_sock_flow: [4, 40], sm_flow_events: [0, 0], // a ring buffer has neither key nor value
      ...POLICY_MAPS, sm_tickets: [12, 8], sm_sock_pol: [4, 8], sm_pol_events: [0, 0], sm_udp_peers: [12, 8], sm_pol_seen: [16, 16], sm_ports: [4, 8],
    };
    for (const m of MAPS) {
      const info = mapInfo(this.#fd(m));
      const [k, v] = want[m];
      if (info.keySize !== k || info.valueSize !== v) {
        this.stop();
        throw new PinMismatchError(
          `pinned map ${this.#pin(m)} has key/value ${info.keySize}/${info.valueSize} bytes, this agent expects ${k}/${v}`,
          `a different sockmesh version pinned it; run \`mesh-agent down --pin-dir ${this.pinDir}\` and bring it up again`,
        );
      }
    }
  }

  #load(cgroupPath: string, createdCgroup: boolean): void {
    const obj = BpfObject.open(this.options.objectPath);
    const created: string[] = [];
    try {
      const sockops = obj.program('sm_sockops');
      const skMsg = obj.program('sm_sk_msg');
      const cgroupProgs = (Object.keys(CGROUP_LINKS) as (keyof typeof CGROUP_LINKS)[]).map((n) => [obj.program(n), CGROUP_LINKS[n]] as const);
      const cut = obj.program('sm_pol_cut');
      const cutUdp = obj.program('sm_pol_cut_udp');
      const guard = obj.program('sm_pol_guard');
      const programs = [sockops, skMsg, ...cgroupProgs.map(([p]) => p), cut, cutUdp, guard];
      for (const p of programs) p.captureVerifierLog(1 << 22);
      const ret = obj.load();
      if (ret < 0) {
        for (const p of programs) {
          const log = p.verifierLog();
          if (log) throw new VerifierRejectedError(p.name, -ret, log);
        }
        throw new BpfError(`bpf_object__load(${this.options.objectPath})`, -ret);
      }
      mkdirSync(this.pinDir, { recursive: true });
      for (const m of MAPS) {
        const fd = obj.mapFd(m);
        objPin(fd, this.#pin(m));
        created.push(this.#pin(m));
      }
      // sk_msg first: a socket entering the hash takes the programs attached at that moment
      const hashFd = obj.mapFd('sm_sock_hash');
      let skMsgAttach: 'link' | 'prog';
      try {
        const linkFd = linkCreate(skMsg.fd, hashFd, BPF.ATTACH_SK_MSG_VERDICT);
        try {
          objPin(linkFd, this.#pin(LINK_SK_MSG));
        } finally {
          closeSync(linkFd);
        }
        skMsgAttach = 'link';
      } catch (err) {
        // kernels before 6.10 have no sockmap links: attach to the map, which is pinned
        if (!(err instanceof BpfError) || (err.errno !== 22 && err.errno !== 95 && err.errno !== 524)) throw err;
        progAttach(skMsg.fd, hashFd, BPF.ATTACH_SK_MSG_VERDICT);
        objPin(skMsg.fd, this.#pin(PROG_SK_MSG));
        skMsgAttach = 'prog';
      }
      created.push(this.#pin(skMsgAttach === 'link' ? LINK_SK_MSG : PROG_SK_MSG));
      // the service programs before sockops: a translated connect is then short-circuited too
      const cgFd = openSync(cgroupPath, fsc.O_RDONLY | fsc.O_DIRECTORY);
      try {
        for (const [prog, pin] of [...cgroupProgs, [sockops, LINK_SOCKOPS] as const]) {
          const link = prog.attachCgroup(cgFd);
          try {
            link.pin(this.#pin(pin));
          } finally {
            link.release();
          }
          created.push(this.#pin(pin));
        }
      } finally {
        closeSync(cgFd);
      }
      // the cut pass's iterators (TCP, UDP): links each run opens an iterator from
      for (const [prog, pin] of [[cut, LINK_POL_CUT], [cutUdp, LINK_POL_CUT_UDP]] as const) {
        const iterFd = linkCreate(prog.fd, 0, BPF.ATTACH_TRACE_ITER);
        try {
          objPin(iterFd, this.#pin(pin));
        } finally {
          closeSync(iterFd);
        }
        created.push(this.#pin(pin));
      }
      objPin(guard.fd, this.#pin(PROG_POL_GUARD));
      created.push(this.#pin(PROG_POL_GUARD));
      const record: StateRecord = {
        cgroupPath,
        createdCgroup,
        objectPath: this.options.objectPath,
        objectSha256: sha256File(this.options.objectPath),
        loadedAt: new Date().toISOString(),
        skMsgAttach,
      };
      mkdirSync(STATE_DIR, { recursive: true });
      writeFileSync(this.#statePath(), JSON.stringify(record, null, 2) + '\n');
      this.#adopt();
    } catch (err) {
      for (const p of created.reverse()) rmSync(p, { force: true });
      for (const dir of [this.pinDir, ...(createdCgroup ? [cgroupPath] : [])]) {
        try {
          rmdirSync(dir);
        } catch {
          // not empty or already gone
        }
      }
      throw err;
    } finally {
      obj.close();
    }
  }

  /** Releases this process's fds. The datapath stays in the kernel. */
  stop(): void {
    for (const fd of this.#fds.values()) closeSync(fd);
    this.#fds.clear();
  }

  /** Detaches the programs and removes every map, link and pin. Idempotent. */
  down(): void {
    checkPrivileges();
    this.stop();
    this.#removePins();
  }

  #removePins(): void {
    const record = this.#record();
    // links first: programs detach before the maps they use go away
    for (const p of this.#guardPins()) rmSync(this.#pin(p.pin), { force: true });
    for (const p of [LINK_SOCKOPS, ...Object.values(CGROUP_LINKS), LINK_POL_CUT, LINK_POL_CUT_UDP, PROG_POL_GUARD, LINK_SK_MSG, PROG_SK_MSG, ...MAPS]) rmSync(this.#pin(p), { force: true });
    try {
      rmdirSync(this.pinDir);
    } catch (err) {
      // absent, or holding pins that are not sockmesh's: those are left alone
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw err;
    }
    rmSync(this.#statePath(), { force: true });
    if (record?.createdCgroup) {
      try {
        rmdirSync(record.cgroupPath);
      } catch {
        // pods still live in it: theirs to remove
      }
    }
  }

  #record(): StateRecord | undefined {
    try {
      return JSON.parse(readFileSync(this.#statePath(), 'utf8')) as StateRecord;
    } catch {
      return undefined;
    }
  }

  #fd(m: MapName): number {
    const fd = this.#fds.get(m);
    if (fd === undefined) throw new NotUpError(this.pinDir);
    return fd;
  }

  /** Kernel ids of the maps, by name. */
  mapIds(): Record<MapName, number> {
    return Object.fromEntries(MAPS.map((m) => [m, mapInfo(this.#fd(m)).id])) as Record<MapName, number>;
  }

  /** Enrolls (or updates) a local endpoint: its connections get short-circuited. */
  enroll(ip: string, identity = 0): void {
    if (!Number.isInteger(identity) || identity < 0 || identity > 0xffffffff) {
      throw new InvalidArgumentError(`identity must be a 32-bit unsigned number, got ${identity}`);
    }
    mapUpdate(this.#fd('sm_endpoints'), encodeIPv4(ip), encodeEndpoint({ identity, flags: this.#layout!.endpointEnrolledFlag }));
  }

  /** Removes an endpoint. New connections stop being short-circuited; open ones keep their path. */
  unenroll(ip: string): boolean {
    return mapDelete(this.#fd('sm_endpoints'), encodeIPv4(ip));
  }

  endpoints(): { ip: string; info: EndpointInfo }[] {
    const fd = this.#fd('sm_endpoints');
    const out: { ip: string; info: EndpointInfo }[] = [];
    for (const k of mapKeys(fd, 4)) {
      const v = mapLookup(fd, k, 8);
      if (v) out.push({ ip: decodeIPv4(k), info: decodeEndpoint(v) });
    }
    return out.sort((a, b) => a.ip.localeCompare(b.ip, 'en', { numeric: true }));
  }

  /** Every entry of a map the agent writes (hash maps and LPM tries alike), raw. */
  entries(name: TableName): [Buffer, Buffer][] {
    const fd = this.#fd(name);
    const [keySize, valueSize] = TABLES[name];
    const out: [Buffer, Buffer][] = [];
    for (const k of mapKeys(fd, keySize)) {
      const v = mapLookup(fd, k, valueSize);
      if (v) out.push([k, v]); // deleted between the two calls: gone
    }
    return out;
  }

  /** Creates or replaces one entry. */
  put(name: TableName, key: Buffer, value: Buffer): void {
    mapUpdate(this.#fd(name), key, value);
  }

  /** Deletes one entry; false when it was not there. */
  del(name: TableName, key: Buffer): boolean {
    return mapDelete(this.#fd(name), key);
  }

  /**
   * The cut pass: in each network namespace given (pods' and the node's),
   * judges every established TCP socket and connected UDP socket a pod holds against the maps as they
   * are now, and destroys those no longer allowed (the process sees
   * ECONNABORTED, its peer a reset). Returns how many sockets it destroyed
   * (from the kernel's counter) and the namespaces it could not enter.
   */
  cutDenied(netnsPaths: readonly string[]): { cut: number; failed: { netns: string; error: string }[] } {
    const before = this.counters().pol_cut ?? 0;
    const failed: { netns: string; error: string }[] = [];
    const links = [objGet(this.#pin(LINK_POL_CUT)), objGet(this.#pin(LINK_POL_CUT_UDP))];
    try {
      for (const ns of netnsPaths) {
        try {
          inNetns(ns, () => {
            for (const link of links) runIterator(link);
          });
        } catch (err) {
          failed.push({ netns: ns, error: (err as Error).message });
        }
      }
    } finally {
      for (const fd of links) closeSync(fd);
    }
    return { cut: (this.counters().pol_cut ?? 0) - before, failed };
  }

  #guardPins(): { pin: string; ifname: string; ifindex: number }[] {
    let names: string[];
    try {
      names = readdirSync(this.pinDir);
    } catch {
      return [];
    }
    return names.flatMap((n) => {
      const m = GUARD_PIN.exec(n);
      return m ? [{ pin: n, ifname: m[1]!, ifindex: Number(m[2]) }] : [];
    });
  }

  /** The pods' veths the anti-spoof guard is attached to: interface name and the address it allows. */
  guards(): { ifname: string; ifindex: number; ip?: string }[] {
    const fd = this.#fd('sm_ports');
    return this.#guardPins().map((g) => {
      const v = mapLookup(fd, encodePortKey(g.ifindex), 8);
      return { ifname: g.ifname, ifindex: g.ifindex, ...(v && { ip: decodePort(v) }) };
    });
  }

  /**
   * Attaches the anti-spoof guard to a pod's host-side veth `ifname` in the
   * network namespace at `netnsPath` (a TCX ingress link, pinned): frames
   * leaving the pod must carry `ip`. Idempotent; a guard of a deleted veth
   * (its link gone with the device) is replaced.
   */
  guardPort(netnsPath: string, ifname: string, ip: string): void {
    const ifindex = inNetns(netnsPath, () => ifIndex(ifname));
    if (ifindex === 0) throw new InvalidArgumentError(`no interface ${ifname} in ${netnsPath}`);
    const pin = `guard-${ifname}-${ifindex}`;
    mapUpdate(this.#fd('sm_ports'), encodePortKey(ifindex), encodePort(ip));
    if (existsSync(this.#pin(pin))) return;
    for (const old of this.#guardPins().filter((g) => g.ifname === ifname)) rmSync(this.#pin(old.pin), { force: true });
    const prog = objGet(this.#pin(PROG_POL_GUARD));
    try {
      const link = inNetns(netnsPath, () => linkCreate(prog, ifindex, BPF.ATTACH_TCX_INGRESS));
      try {
        objPin(link, this.#pin(pin));
      } finally {
        closeSync(link);
      }
    } finally {
      closeSync(prog);
    }
  }

  /** Detaches guards whose veth is not in `keep` (pods gone), and forgets their addresses. */
  unguardPortsExcept(keep: ReadonlySet<string>): number {
    let n = 0;
    for (const g of this.#guardPins()) {
      if (keep.has(g.ifname)) continue;
      rmSync(this.#pin(g.pin), { force: true });
      mapDelete(this.#fd('sm_ports'), encodePortKey(g.ifindex));
      n++;
    }
    return n;
  }

  /** bpffs path of the sm_pol_events ring buffer. */
  get policyEventsPin(): string {
    return this.#pin('sm_pol_events');
  }

  /** The layout learned from the object's BTF (flag values, counter slots). */
  get layout(): DatapathLayout {
    if (!this.#layout) throw new NotUpError(this.pinDir);
    return this.#layout;
  }

  /** bpffs path of the sm_flow_events ring buffer. */
  get flowEventsPin(): string {
    return this.#pin('sm_flow_events');
  }

  /**
   * A reader of this datapath's flow events (not started: its start() opens
   * the pinned ring buffer). Needs start() or adopt() first, for the layout.
   */
  flowEventReader(opts: Omit<FlowEventReaderOptions, 'mapPath' | 'layout'>): FlowEventReader {
    return new FlowEventReader({ ...opts, mapPath: this.flowEventsPin, layout: this.layout });
  }

  /**
   * A reader of this datapath's policy events (denied connects and packets,
   * cut connections); not started. Needs start() or adopt() first.
   */
  policyEventReader(opts: Omit<RingRecordReaderOptions<PolicyEventRecord>, 'mapPath' | 'decode'>): RingRecordReader<PolicyEventRecord> {
    const layout = this.layout.policy;
    return new RingRecordReader({ ...opts, mapPath: this.policyEventsPin, decode: (r) => decodePolicyEvent(r, layout) });
  }

  /** The kernel's fold of one denial key (sm_pol_seen): its last record's time and the denials since that wrote none. */
  policySeen(r: Parameters<typeof encodePolicySeenKey>[0]): PolicySeen | undefined {
    const k = encodePolicySeenKey(r, this.layout.policy);
    const v = k && mapLookup(this.#fd('sm_pol_seen'), k, 16);
    return v ? decodePolicySeen(v) : undefined;
  }

  /** 4-tuples of the sockets currently short-circuited. */
  sockets(): SockKey[] {
    return mapKeys(this.#fd('sm_sock_hash'), 16).map(decodeSockKey);
  }

  /**
   * Takes one socket out of the short-circuit. Its peer's later sends miss
   * and go to the stack for good.
   */
  evictSocket(key: SockKey): boolean {
    return mapDelete(this.#fd('sm_sock_hash'), encodeSockKey(key));
  }

  /** Counters summed over CPUs, by name (e.g. bytes_redirected). */
  counters(): Record<string, number> {
    const fd = this.#fd('sm_counters');
    const out: Record<string, number> = {};
    const key = Buffer.alloc(4);
    for (const [name, slot] of this.#layout!.counters) {
      key.writeUInt32LE(slot);
      const v = mapLookup(fd, key, 8 * this.#cpus);
      let sum = 0n;
      for (let i = 0; v && i < this.#cpus; i++) sum += v.readBigUInt64LE(i * 8);
      out[name] = Number(sum);
    }
    return out;
  }

  /** Everything `mesh-agent status` shows. Works whether or not start() ran. */
  status(): DatapathStatus {
    const up = this.isUp();
    const st: DatapathStatus = { up, pinDir: this.pinDir };
    if (!up) return st;
    const r = this.#record();
    if (r) {
      Object.assign(st, {
        cgroupPath: r.cgroupPath, objectPath: r.objectPath, objectSha256: r.objectSha256,
        loadedAt: r.loadedAt, skMsgAttach: r.skMsgAttach,
      });
    }
    const links: NonNullable<DatapathStatus['links']> = {};
    const lfd = objGet(this.#pin(LINK_SOCKOPS));
    try {
      const li = linkInfo(lfd);
      links.sockops = { id: li.id, progId: li.progId, cgroupId: li.cgroupId.toString() };
    } finally {
      closeSync(lfd);
    }
    for (const [name, pin] of [
      ['connect4', CGROUP_LINKS.sm_connect4], ['getpeername4', CGROUP_LINKS.sm_getpeername4],
      ['policyIngress', CGROUP_LINKS.sm_pol_ingress], ['policyCut', LINK_POL_CUT],
    ] as const) {
      const fd = objGet(this.#pin(pin));
      try {
        const li = linkInfo(fd);
        links[name] = { id: li.id, progId: li.progId };
      } finally {
        closeSync(fd);
      }
    }
    if (existsSync(this.#pin(LINK_SK_MSG))) {
      const mfd = objGet(this.#pin(LINK_SK_MSG));
      try {
        const li = linkInfo(mfd);
        links.skMsg = { id: li.id, progId: li.progId };
      } finally {
        closeSync(mfd);
      }
    }
    st.links = links;
    st.endpoints = this.endpoints().map((e) => ({
      ip: e.ip, identity: e.info.identity, enrolled: (e.info.flags & this.#layout!.endpointEnrolledFlag) !== 0,
    }));
    st.sockets = this.sockets().length;
    st.counters = this.counters();
    return st;
  }
}
