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
};

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
  return Object.freeze({
    counters,
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
