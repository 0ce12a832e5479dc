/**
 * IP addresses and CIDR blocks, IPv4 and IPv6, as numbers: enough to check
 * that a NetworkPolicy `except` lies inside its `cidr` and that an address
 * falls in a block. Addresses are bigints so both families share one code
 * path. Pure.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** An address as a number, with its family. */
export interface IpAddress {
  family: 4 | 6;
  value: bigint;
}

/** A CIDR block, normalised to its network address (host bits cleared). */
export interface Cidr {
  family: 4 | 6;
  /** the network address */
  network: bigint;
  /** the prefix length: 0-32 for IPv4, 0-128 for IPv6 */
  prefix: number;
  /** canonical text: the network address and prefix, e.g. "10.0.0.0/8" */
  text: string;
}

const bitsOf = (family: 4 | 6): number => (family === 4 ? 32 : 128);

function ipv4Value(text: string): bigint {
  return text.split('.').reduce((n, part) => (n << 8n) | BigInt(Number(part)), 0n);
}

function ipv6Value(text: string): bigint {
  let s = text;
  const tail: number[] = [];
  const dot = s.lastIndexOf(':');
  if (s.includes('.')) {
    // an embedded IPv4 address in the last 32 bits: ::ffff:192.0.2.1
    const v4 = Number(ipv4Value(s.slice(dot + 1)));
    tail.push(v4 >>> 16, v4 & 0xffff);
    s = s.slice(0, dot + 1); // "::ffff:" or "::"
    if (!s.endsWith('::')) s = s.slice(0, -1);
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const groups = (x: string) => (x === '' ? [] : x.split(':').map((g) => parseInt(g, 16)));
  const left = groups(head);
  const right = rest === undefined ? [] : groups(rest);
  const fill = 8 - tail.length - left.length - right.length;
  const all = [...left, ...(rest === undefined ? [] : new Array<number>(fill).fill(0)), ...right, ...tail];
  return all.reduce((n, g) => (n << 16n) | BigInt(g), 0n);
}

/** Parses an IPv4 or IPv6 address (no zone); undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  if (isIPv4(text)) return { family: 4, value: ipv4Value(text) };
  if (isIPv6(text) && !text.includes('%')) return { family: 6, value: ipv6Value(text) };
  return undefined;
}

/** Formats an address back to text (IPv6 without zero compression). */
export function formatIp(a: IpAddress): string {
  if (a.family === 4) return [24n, 16n, 8n, 0n].map((s) => String((a.value >> s) & 255n)).join('.');
  const out: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) out.push(((a.value >> s) & 0xffffn).toString(16));
  return out.join(':');
}

function mask(family: 4 | 6, prefix: number): bigint {
  const bits = BigInt(bitsOf(family));
  const all = (1n << bits) - 1n;
  return all ^ ((1n << (bits - BigInt(prefix))) - 1n);
}

/**
 * Parses "address/prefix". Host bits may be set ("10.1.2.3/8" is 10.0.0.0/8),
 * as Kubernetes accepts. Returns the block, or the reason it is not one.
 */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/');
  if (slash < 0) return `must be a CIDR (an address and a prefix length, e.g. "10.0.0.0/8"), got ${JSON.stringify(text)}`;
  const ip = parseIp(text.slice(0, slash));
  if (!ip) return `${JSON.stringify(text.slice(0, slash))} is not an IPv4 or IPv6 address`;
  const p = text.slice(slash + 1);
  const bits = bitsOf(ip.family);
  if (!/^[0-9]{1,3}$/.test(p) || Number(p) > bits) return `the prefix length must be 0-${bits} for an IPv${ip.family} address, got ${JSON.stringify(p)}`;
  const prefix = Number(p);
  const network = ip.value & mask(ip.family, prefix);
  return { family: ip.family, network, prefix, text: `${formatIp({ family: ip.family, value: network })}/${prefix}` };
}

/** Whether the address lies in the block (an address of the other family never does). */
export function cidrContains(c: Cidr, a: IpAddress): boolean {
  return c.family === a.family && (a.value & mask(c.family, c.prefix)) === c.network;
}

/** Whether `inner` lies inside `outer` (equal blocks count as inside). */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && inner.prefix >= outer.prefix && cidrContains(outer, { family: inner.family, value: inner.network });
}
