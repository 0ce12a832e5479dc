/**
 * The agent's view of the structs and enums in bpf/sockmesh.h, checked
 * against the BTF of the compiled object before anything is written to a map.
 * Counter names and flag values are read from BTF, never copied here.
 */
import { isIPv4 } from 'node:net';
import { InvalidArgumentError, LayoutMismatchError } from '../errors.js';
import type { BtfTypes } from './libbpf.js';

/** Member byte offsets the encoders below assume; checked against BTF. */
const EXPECTED_STRUCTS: Record<string, { size: number; members: Record<string, number> }> = {
  sm_sock_key: { size: 16, members: { local_ip4: 0, remote_ip4: 4, local_port: 8, remote_port: 12 } },
  sm_endpoint: { size: 8, members: { identity: 0, flags: 4 } },
  sm_svc_key: { size: 8, members: { vip4: 0, port: 4, pad: 6 } },
  sm_svc: { size: 12, members: { id: 0, count: 4, gen: 6, pad: 7, flags: 8 } },
  sm_backend_key: { size: 8, members: { svc_id: 0, slot: 4, gen: 6, pad: 7 } },
  sm_backend: { size: 8, members: { ip4: 0, port: 4, pad: 6 } },
  sm_cgroup: { size: 8, members: { identity: 0, flags: 4 } },
  sm_sock_svc: { size: 8, members: { vip4: 0, port: 4, pad: 6 } },
  sm_sock_flow: { size: 40, members: { open_ns: 0, redir_sent: 8, acked_base: 16, recv_base: 24, flags: 32, state: 36 } },
  sm_flow_event: {
    size: 80,
    members: {
      cookie: 0, ts_ns: 8, open_ns: 16, stack_sent: 24, stack_recv: 32, redir_sent: 40, local_ip4: 48, remote_ip4: 52,
      svc_ip4: 56, local_port: 60, remote_port: 64, svc_port: 68, kind: 72, flags: 76,
    },
  },
  sm_pol_subject: { size: 16, members: { subject: 0, peer: 4, flags: 8, ip4: 12 } },
  sm_ipcache_key: { size: 8, members: { prefixlen: 0, ip4: 4 } },
  sm_ipcache_val: { size: 16, members: { peer: 0, addr_peer: 4, flags: 8, pad: 12 } },
  sm_policy_key: { size: 16, members: { prefixlen: 0, subject: 4, peer: 8, dir: 12, proto: 13, port: 14 } },
  sm_policy_val: { size: 8, members: { rule: 0, flags: 4 } },
  sm_ticket_key: { size: 12, members: { saddr: 0, daddr: 4, sport: 8, dport: 10 } },
  sm_ticket: { size: 8, members: { peer: 0, flags: 4 } },
  sm_sock_pol: { size: 8, members: { peer: 0, flags: 4 } },
  sm_pol_event: {
    size: 64,
    members: {
      ts_ns: 0, cookie: 8, src_ip4: 16, dst_ip4: 20, src_port: 24, dst_port: 28, subject: 32, peer: 36, proto: 40, dir: 44,
      kind: 48, sender_ip4: 52, suppressed: 56, pad: 60,
    },
  },
  sm_pol_seen_key: { size: 16, members: { kind: 0, dir: 1, proto: 2, pad: 3, src_ip4: 4, dst_ip4: 8, dst_port: 12 } },
  sm_pol_seen: { size: 16, members: { last_ns: 0, suppressed: 8, pad: 12 } },
  sm_port: { size: 8, members: { ip4: 0, pad: 4 } },
};

/** NetworkPolicy constants of bpf/sockmesh.h, read from BTF. */
export interface PolicyLayout {
  /** enum sm_pol_flags bits */
  flagIngressIsolated: number;
  flagEgressIsolated: number;
  flagPod: number;
  flagProxy: number;
  /** enum sm_peer_class */
  peerAny: number;
  peerAnyPod: number;
  peerWorld: number;
  peerNodeProxy: number;
  /** enum sm_pol_dir */
  dirIngress: number;
  dirEgress: number;
  /** a client at an L7 service's listener, judged by its own (subject, peer) classes */
  dirL7: number;
  /** enum sm_pol_event_kind value → name (deny-connect, deny-syn, deny-udp, cut, spoof) */
  eventKinds: ReadonlyMap<number, PolicyEventKind>;
}

export type PolicyEventKind = 'deny-connect' | 'deny-syn' | 'deny-udp' | 'cut' | 'spoof';

/** Member name → byte offset, as the object's BTF has them. */
export type StructOffsets = Readonly<Record<string, number>>;

/** How to read a struct sm_flow_event record (flow-events.ts decodes with it). */
export interface FlowEventLayout {
  /** sizeof(struct sm_flow_event) */
  size: number;
  /** member byte offsets, from BTF (checked against the table above) */
  offsets: StructOffsets;
  /** enum sm_flow_kind: SM_FLOW_OPEN, SM_FLOW_CLOSE */
  kindOpen: number;
  kindClose: number;
  /** enum sm_flow_flags bits */
  flagActive: number;
  flagShortCircuited: number;
  flagService: number;
}

/** What the agent learns from the object's BTF. */
export interface DatapathLayout {
  /** counter name (e.g. "sock_inserted") → slot in sm_counters */
  counters: ReadonlyMap<string, number>;
  /** SM_EP_F_ENROLLED */
  endpointEnrolledFlag: number;
  /** SM_SVC_F_ANY_CLIENT */
  serviceAnyClientFlag: number;
  /** SM_CG_F_ENROLLED */
  cgroupEnrolledFlag: number;
  /** struct sm_flow_event and its enums */
  flowEvent: FlowEventLayout;
  /** NetworkPolicy flags, reserved classes, directions, event kinds */
  policy: PolicyLayout;
}

function enumValue(btf: BtfTypes, enumName: string, name: string): number {
  const v = btf.enums.get(enumName)?.values.get(name);
  if (v === undefined) throw new LayoutMismatchError(`enum ${enumName} lacks ${name}`);
  return v;
}

/** Checks the BTF against the encoders here and returns the learned layout. */
export function layoutFromBtf(btf: BtfTypes): DatapathLayout {
  for (const [name, want] of Object.entries(EXPECTED_STRUCTS)) {
    const got = btf.structs.get(name);
    if (!got) throw new LayoutMismatchError(`struct ${name} is missing from the BPF object's BTF`);
    if (got.size !== want.size) {
      throw new LayoutMismatchError(`struct ${name} is ${got.size} bytes in the BPF object, the agent expects ${want.size}`);
    }
    const names = got.members.map((m) => m.name).join(',');
    if (names !== Object.keys(want.members).join(',')) {
      throw new LayoutMismatchError(`struct ${name} has members ${names}, the agent expects ${Object.keys(want.members).join(',')}`);
    }
    for (const m of got.members) {
      if (m.bitOffset !== want.members[m.name]! * 8) {
        throw new LayoutMismatchError(`struct ${name}.${m.name} is at bit ${m.bitOffset}, the agent expects ${want.members[m.name]! * 8}`);
      }
    }
  }
  const ctr = btf.enums.get('sm_counter');
  if (!ctr) throw new LayoutMismatchError('enum sm_counter is missing from the BPF object\'s BTF');
  const counters = new Map<string, number>();
  for (const [name, value] of ctr.values) {
    if (name === 'SM_CTR_MAX') continue;
    counters.set(name.replace(/^SM_CTR_/, '').toLowerCase(), value);
  }
  const fe = btf.structs.get('sm_flow_event')!;
  const flowEvent: FlowEventLayout = Object.freeze({
    size: fe.size,
    offsets: Object.freeze(Object.fromEntries(fe.members.map((m) => [m.name, m.bitOffset / 8]))),
    kindOpen: enumValue(btf, 'sm_flow_kind', 'SM_FLOW_OPEN'),
    kindClose: enumValue(btf, 'sm_flow_kind', 'SM_FLOW_CLOSE'),
    flagActive: enumValue(btf, 'sm_flow_flags', 'SM_FLOW_F_ACTIVE'),
    flagShortCircuited: enumValue(btf, 'sm_flow_flags', 'SM_FLOW_F_SHORT_CIRCUITED'),
    flagService: enumValue(btf, 'sm_flow_flags', 'SM_FLOW_F_SERVICE'),
  });
  const kinds: [string, PolicyEventKind][] = [
    ['SM_PE_DENY_CONNECT', 'deny-connect'], ['SM_PE_DENY_SYN', 'deny-syn'], ['SM_PE_DENY_UDP', 'deny-udp'], ['SM_PE_CUT', 'cut'], ['SM_PE_SPOOF', 'spoof'],
  ];
  const policy: PolicyLayout = Object.freeze({
    flagIngressIsolated: enumValue(btf, 'sm_pol_flags', 'SM_POL_F_INGRESS_ISOLATED'),
    flagEgressIsolated: enumValue(btf, 'sm_pol_flags', 'SM_POL_F_EGRESS_ISOLATED'),
    flagPod: enumValue(btf, 'sm_pol_flags', 'SM_POL_F_POD'),
    flagProxy: enumValue(btf, 'sm_pol_flags', 'SM_POL_F_PROXY'),
    peerAny: enumValue(btf, 'sm_peer_class', 'SM_PEER_ANY'),
    peerAnyPod: enumValue(btf, 'sm_peer_class', 'SM_PEER_ANY_POD'),
    peerWorld: enumValue(btf, 'sm_peer_class', 'SM_PEER_WORLD'),
    peerNodeProxy: enumValue(btf, 'sm_peer_class', 'SM_PEER_NODE_PROXY'),
    dirIngress: enumValue(btf, 'sm_pol_dir', 'SM_DIR_INGRESS'),
    dirEgress: enumValue(btf, 'sm_pol_dir', 'SM_DIR_EGRESS'),
    dirL7: enumValue(btf, 'sm_pol_dir', 'SM_DIR_L7'),
    eventKinds: new Map(kinds.map(([n, k]) => [enumValue(btf, 'sm_pol_event_kind', n), k])),
  });
  return Object.freeze({
    counters,
    policy,
    endpointEnrolledFlag: enumValue(btf, 'sm_endpoint_flags', 'SM_EP_F_ENROLLED'),
    serviceAnyClientFlag: enumValue(btf, 'sm_svc_flags', 'SM_SVC_F_ANY_CLIENT'),
    cgroupEnrolledFlag: enumValue(btf, 'sm_cgroup_flags', 'SM_CG_F_ENROLLED'),
    flowEvent,
  });
}

/** Dotted IPv4 → 4 bytes in network order. */
export function encodeIPv4(ip: string): Buffer {
  if (!isIPv4(ip)) throw new InvalidArgumentError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  return Buffer.from(ip.split('.').map((x) => Number(x)));
}

/** 4 bytes in network order → dotted IPv4. */
export function decodeIPv4(b: Buffer, offset = 0): string {
  return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
}

/** struct sm_endpoint */
export interface EndpointInfo {
  identity: number;
  flags: number;
}

export function encodeEndpoint(ep: EndpointInfo): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(ep.identity >>> 0, 0);
  b.writeUInt32LE(ep.flags >>> 0, 4);
  return b;
}

export function decodeEndpoint(b: Buffer): EndpointInfo {
  return { identity: b.readUInt32LE(0), flags: b.readUInt32LE(4) };
}

/** struct sm_sock_key */
export interface SockKey {
  localIp: string;
  remoteIp: string;
  localPort: number;
  remotePort: number;
}

export function decodeSockKey(b: Buffer): SockKey {
  return {
    localIp: decodeIPv4(b, 0),
    remoteIp: decodeIPv4(b, 4),
    localPort: b.readUInt32LE(8),
    remotePort: b.readUInt32LE(12),
  };
}

export function encodeSockKey(k: SockKey): Buffer {
  const b = Buffer.alloc(16);
  encodeIPv4(k.localIp).copy(b, 0);
  encodeIPv4(k.remoteIp).copy(b, 4);
  b.writeUInt32LE(k.localPort, 8);
  b.writeUInt32LE(k.remotePort, 12);
  return b;
}

/** struct sm_svc_key: a service frontend. */
export interface ServiceKey {
  vip: string;
  port: number;
}

/** An IPv4 (network order) and a port (host order) in 8 bytes: sm_svc_key and sm_backend share it. */
function encodeAddrPort(ip: string, port: number): Buffer {
  const b = Buffer.alloc(8);
  encodeIPv4(ip).copy(b, 0);
  b.writeUInt16LE(port, 4);
  return b;
}

export function encodeServiceKey(k: ServiceKey): Buffer {
  return encodeAddrPort(k.vip, k.port);
}

export function decodeServiceKey(b: Buffer): ServiceKey {
  return { vip: decodeIPv4(b, 0), port: b.readUInt16LE(4) };
}

/** struct sm_svc */
export interface ServiceEntry {
  id: number;
  count: number;
  gen: number;
  flags: number;
}

export function encodeService(v: ServiceEntry): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(v.id >>> 0, 0);
  b.writeUInt16LE(v.count, 4);
  b.writeUInt8(v.gen, 6);
  b.writeUInt32LE(v.flags >>> 0, 8);
  return b;
}

export function decodeService(b: Buffer): ServiceEntry {
  return { id: b.readUInt32LE(0), count: b.readUInt16LE(4), gen: b.readUInt8(6), flags: b.readUInt32LE(8) };
}

/** struct sm_backend_key */
export interface BackendKey {
  svcId: number;
  slot: number;
  gen: number;
}

export function encodeBackendKey(k: BackendKey): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(k.svcId >>> 0, 0);
  b.writeUInt16LE(k.slot, 4);
  b.writeUInt8(k.gen, 6);
  return b;
}

export function decodeBackendKey(b: Buffer): BackendKey {
  return { svcId: b.readUInt32LE(0), slot: b.readUInt16LE(4), gen: b.readUInt8(6) };
}

/** struct sm_backend */
export interface Backend {
  ip: string;
  port: number;
}

export function encodeBackend(v: Backend): Buffer {
  return encodeAddrPort(v.ip, v.port);
}

export function decodeBackend(b: Buffer): Backend {
  return { ip: decodeIPv4(b, 0), port: b.readUInt16LE(4) };
}

/** A cgroup id (the cgroup directory's inode number) as the map key. */
export function encodeCgroupId(id: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(id);
  return b;
}

export function decodeCgroupId(b: Buffer): bigint {
  return b.readBigUInt64LE(0);
}

/** struct sm_cgroup (same layout as sm_endpoint) */
export const encodeCgroup = encodeEndpoint;
export const decodeCgroup = decodeEndpoint;

/** struct sm_pol_subject: a local pod (or the node proxy) as subject and source. */
export interface PolicySubject {
  subject: number;
  peer: number;
  flags: number;
  /** the pod's address; undefined for the node proxy */
  ip?: string;
}

export function encodePolicySubject(v: PolicySubject): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(v.subject >>> 0, 0);
  b.writeUInt32LE(v.peer >>> 0, 4);
  b.writeUInt32LE(v.flags >>> 0, 8);
  if (v.ip !== undefined) encodeIPv4(v.ip).copy(b, 12);
  return b;
}

export function decodePolicySubject(b: Buffer): PolicySubject {
  const ip = b.readUInt32LE(12) === 0 ? undefined : decodeIPv4(b, 12);
  return { subject: b.readUInt32LE(0), peer: b.readUInt32LE(4), flags: b.readUInt32LE(8), ...(ip ? { ip } : {}) };
}

function checkU32(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new InvalidArgumentError(`${what} must be a u32, got ${v}`);
}

/** struct sm_ipcache_key: an IPv4 prefix; the address's host bits are cleared. */
export function encodeIpcacheKey(ip: string, prefixLen: number): Buffer {
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 32) throw new InvalidArgumentError(`an ipcache prefix length must be 0..32, got ${prefixLen}`);
  const b = Buffer.alloc(8);
  b.writeUInt32LE(prefixLen, 0);
  const mask = prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
  b.writeUInt32BE((encodeIPv4(ip).readUInt32BE(0) & mask) >>> 0, 4);
  return b;
}

/** struct sm_ipcache_val */
export interface IpcacheEntry {
  peer: number;
  /** for a pod's /32: its class as a bare address */
  addrPeer: number;
  flags: number;
}

export function encodeIpcacheValue(v: IpcacheEntry): Buffer {
  checkU32(v.peer, 'peer');
  checkU32(v.addrPeer, 'addrPeer');
  const b = Buffer.alloc(16);
  b.writeUInt32LE(v.peer >>> 0, 0);
  b.writeUInt32LE(v.addrPeer >>> 0, 4);
  b.writeUInt32LE(v.flags >>> 0, 8);
  return b;
}

/** struct sm_policy_key: an allow entry; prefixLen counts the 96 bits after it. */
export interface PolicyKey {
  subject: number;
  peer: number;
  dir: number;
  proto: number;
  port: number;
  prefixLen: number;
}

export function encodePolicyKey(k: PolicyKey): Buffer {
  checkU32(k.subject, 'subject');
  checkU32(k.peer, 'peer');
  if (!Number.isInteger(k.prefixLen) || k.prefixLen < 64 || k.prefixLen > 96) {
    throw new InvalidArgumentError(`a policy entry's prefix length must be 64..96, got ${k.prefixLen}`);
  }
  const b = Buffer.alloc(16);
  b.writeUInt32LE(k.prefixLen, 0);
  b.writeUInt32LE(k.subject >>> 0, 4);
  b.writeUInt32LE(k.peer >>> 0, 8);
  b.writeUInt8(k.dir, 12);
  b.writeUInt8(k.proto, 13);
  b.writeUInt16BE(k.port, 14); // network order: the high bits are the prefix bits
  return b;
}

export function decodePolicyKey(b: Buffer): PolicyKey {
  return {
    prefixLen: b.readUInt32LE(0), subject: b.readUInt32LE(4), peer: b.readUInt32LE(8), dir: b.readUInt8(12), proto: b.readUInt8(13),
    port: b.readUInt16BE(14),
  };
}

export function encodePolicyValue(rule: number): Buffer {
  checkU32(rule, 'rule');
  const b = Buffer.alloc(8);
  b.writeUInt32LE(rule >>> 0, 0);
  return b;
}

/** One decoded struct sm_pol_event. */
export interface PolicyEventRecord {
  tsNs: bigint;
  cookie: bigint;
  kind: PolicyEventKind | 'unknown';
  /** l7: a client refused at an L7 service's listener (its egress, or some backend's ingress) */
  direction: 'ingress' | 'egress' | 'l7';
  srcIp?: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  subject: number;
  peer: number;
  proto: number;
  /** spoof: the address of the pod whose raw socket sent it (srcIp is the address it claimed) */
  senderIp?: string;
  /** identical denials the kernel folded into this record (it stands for 1 + suppressed) */
  suppressed: number;
}

/** The kernel's fold of one denial key (an sm_pol_seen value): when its last record was written, and how many denials since wrote none. */
export interface PolicySeen {
  lastNs: bigint;
  suppressed: number;
}

/** The sm_pol_seen key of a denial record's fields; undefined for a kind the layout does not know. */
export function encodePolicySeenKey(r: Pick<PolicyEventRecord, 'kind' | 'direction' | 'proto' | 'srcIp' | 'dstIp' | 'dstPort'>, layout: PolicyLayout): Buffer | undefined {
  const kind = [...layout.eventKinds].find(([, k]) => k === r.kind)?.[0];
  if (kind === undefined) return undefined;
  const k = Buffer.alloc(16);
  k.writeUInt8(kind, 0);
  k.writeUInt8(r.direction === 'egress' ? layout.dirEgress : r.direction === 'l7' ? layout.dirL7 : layout.dirIngress, 1);
  k.writeUInt8(r.proto, 2);
  if (r.srcIp !== undefined) encodeIPv4(r.srcIp).copy(k, 4);
  encodeIPv4(r.dstIp).copy(k, 8);
  k.writeUInt32LE(r.dstPort, 12);
  return k;
}

export function decodePolicySeen(v: Buffer): PolicySeen {
  return { lastNs: v.readBigUInt64LE(0), suppressed: v.readUInt32LE(8) };
}

/** sm_ports: a pod's veth (its ifindex) → the one address frames leaving the pod may carry. */
export function encodePortKey(ifindex: number): Buffer {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(ifindex);
  return k;
}

export function encodePort(ip: string): Buffer {
  return Buffer.concat([encodeIPv4(ip), Buffer.alloc(4)]);
}

export function decodePort(v: Buffer): string {
  return decodeIPv4(v, 0);
}

export function decodePolicyEvent(b: Buffer, layout: PolicyLayout): PolicyEventRecord {
  const src = b.readUInt32LE(16);
  return {
    tsNs: b.readBigUInt64LE(0),
    cookie: b.readBigUInt64LE(8),
    ...(src !== 0 ? { srcIp: decodeIPv4(b, 16) } : {}),
    dstIp: decodeIPv4(b, 20),
    srcPort: b.readUInt32LE(24),
    dstPort: b.readUInt32LE(28),
    subject: b.readUInt32LE(32),
    peer: b.readUInt32LE(36),
    proto: b.readUInt32LE(40),
    direction: ((d) => (d === layout.dirEgress ? 'egress' : d === layout.dirL7 ? 'l7' : 'ingress'))(b.readUInt32LE(44)),
    kind: layout.eventKinds.get(b.readUInt32LE(48)) ?? 'unknown',
    ...(b.readUInt32LE(52) !== 0 && { senderIp: decodeIPv4(b, 52) }),
    suppressed: b.readUInt32LE(56),
  };
}
