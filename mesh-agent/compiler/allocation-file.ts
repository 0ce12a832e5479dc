/**
 * The agent's allocations (identities, local VIPs), saved so a restarted
 * agent hands out the same numbers and addresses. Kept under /run with the
 * datapath's record: both live exactly as long as the pinned maps (until
 * reboot or `down`).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { IdentityAllocator } from './identities.js';
import type { ListenerPortAllocator } from './listener-ports.js';
import type { VipAllocator } from './vips.js';

interface Saved {
  identities: [string, number][];
  vips: [string, string][];
  listenerPorts?: [string, number][];
}

/** Seeds the allocators from the file; a missing or unreadable file seeds nothing. */
export function loadAllocations(path: string, identities: IdentityAllocator, vips: VipAllocator): boolean {
  let saved: Saved;
  try {
    saved = JSON.parse(readFileSync(path, 'utf8')) as Saved;
  } catch {
    return false;
  }
  for (const [k, id] of saved.identities ?? []) if (typeof k === 'string' && Number.isInteger(id)) identities.seed(k, id);
  for (const [k, vip] of saved.vips ?? []) if (typeof k === 'string' && typeof vip === 'string') vips.seed(k, vip);
  return true;
}

/** Seeds the node proxy's listener ports from the file. */
export function loadListenerPorts(path: string, ports: ListenerPortAllocator): void {
  try {
    const saved = JSON.parse(readFileSync(path, 'utf8')) as Saved;
    for (const [k, p] of saved.listenerPorts ?? []) if (typeof k === 'string' && Number.isInteger(p)) ports.seed(k, p);
  } catch {
    // nothing saved
  }
}

/** Writes the file atomically; returns the text written (callers skip writes of the same text). */
export function saveAllocations(path: string, identities: IdentityAllocator, vips: VipAllocator, previous?: string, listenerPorts?: ListenerPortAllocator): string {
  const text = JSON.stringify({ identities: identities.entries(), vips: vips.entries(), ...(listenerPorts && { listenerPorts: listenerPorts.entries() }) } satisfies Saved) + '\n';
  if (text === previous) return text;
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
  return text;
}
