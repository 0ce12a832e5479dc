/** "ip:port" addresses the agent listens on (IPv6 in brackets). */
import { isIP } from 'node:net';
import { InvalidArgumentError } from './errors.js';

/** Splits and checks "ip:port"; `what` names the setting in the error. Port 0 means any free port. */
export function parseHostPort(what: string, v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || !isIP(host) || !Number.isInteger(port) || port > 65535) {
    throw new InvalidArgumentError(`${what} must be IP:PORT (e.g. 127.0.0.1:9966), got ${JSON.stringify(v)}`);
  }
  return { host, port };
}
