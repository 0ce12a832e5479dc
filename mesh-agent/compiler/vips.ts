/**
 * Service VIPs for the local mode, from 198.19.0.0/16: a service keeps the
 * VIP it was given for as long as it exists (and across agent restarts, from
 * the agent's saved allocations); a new one starts at a hash of its name and
 * takes the next free address.
 */
import { intToIp, ipToInt } from '../ipv4.js';

/** The local service range: 198.19.0.0/16 (RFC 2544), without its first and last address. */
export const SERVICE_NETWORK = Object.freeze({ base: ((198 << 24) | (19 << 16)) >>> 0, size: 1 << 16 });

export function inServiceNetwork(ip: string): boolean {
  const n = ipToInt(ip);
  return n > SERVICE_NETWORK.base && n < SERVICE_NETWORK.base + SERVICE_NETWORK.size - 1;
}

/** FNV-1a of the service key: where its search for a free VIP starts. */
function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export class VipAllocator {
  /** bumped by every change (to know when to save) */
  revision = 0;
  #byKey = new Map<string, string>();
  #owner = new Map<string, string>();

  /** Claims a VIP for a service (saved from before); ignored when either is taken or it is out of range. */
  seed(key: string, vip: string): void {
    if (!inServiceNetwork(vip) || this.#byKey.has(key) || this.#owner.has(vip)) return;
    this.#byKey.set(key, vip);
    this.revision++;
    this.#owner.set(vip, key);
  }

  /** Who holds a VIP. */
  ownerOf(vip: string): string | undefined {
    return this.#owner.get(vip);
  }

  /** The service's VIP, allocating one when it has none; `taken` says which VIPs users gave other services. */
  vipFor(key: string, taken: (vip: string) => boolean): string {
    const have = this.#byKey.get(key);
    if (have !== undefined && !taken(have)) return have;
    if (have !== undefined) this.#owner.delete(have);
    const usable = SERVICE_NETWORK.size - 2;
    let n = (fnv(key) % usable) + 1;
    for (let i = 0; i < usable; i++, n = (n % usable) + 1) {
      const vip = intToIp(SERVICE_NETWORK.base + n);
      if (!this.#owner.has(vip) && !taken(vip)) {
        this.#byKey.set(key, vip);
    this.revision++;
        this.#owner.set(vip, key);
        return vip;
      }
    }
    throw new RangeError('the service range 198.19.0.0/16 is full');
  }

  /** Frees one service's VIP. */
  release(key: string): void {
    const vip = this.#byKey.get(key);
    if (vip === undefined) return;
    this.#byKey.delete(key);
    this.revision++;
    this.#owner.delete(vip);
  }

  /** The VIP a service holds, if any. */
  held(key: string): string | undefined {
    return this.#byKey.get(key);
  }

  /** Frees the VIPs of services not in `live`. */
  retain(live: ReadonlySet<string>): void {
    for (const [key, vip] of this.#byKey) {
      if (!live.has(key)) {
        this.#byKey.delete(key);
    this.revision++;
        this.#owner.delete(vip);
      }
    }
  }

  /** key → VIP, for saving. */
  entries(): [string, string][] {
    return [...this.#byKey].sort(([a], [b]) => (a < b ? -1 : 1));
  }
}
