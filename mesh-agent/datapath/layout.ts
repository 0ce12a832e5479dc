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
};

/** What the agent learns from the object's BTF. */
export interface DatapathLayout {
  /** counter name (e.g. "sock_inserted") → slot in sm_counters */
  counters: ReadonlyMap<string, number>;
  /** SM_EP_F_ENROLLED */
  endpointEnrolledFlag: number;
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
  const flags = btf.enums.get('sm_endpoint_flags');
  const enrolled = flags?.values.get('SM_EP_F_ENROLLED');
  if (enrolled === undefined) throw new LayoutMismatchError('enum sm_endpoint_flags lacks SM_EP_F_ENROLLED');
  return Object.freeze({ counters, endpointEnrolledFlag: enrolled });
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
