/**
 * Ports of the node proxy's listeners, one per L7 service port, from
 * 20000-29999: a service port keeps its listener port while it is L7 (and
 * across agent restarts, from the saved allocations).
 */
export const LISTENER_PORTS = Object.freeze({ first: 20000, last: 29999 });

export class ListenerPortAllocator {
  /** bumped by every change (to know when to save) */
  revision = 0;
  #byKey = new Map<string, number>();
  #owner = new Map<number, string>();
  #next: number = LISTENER_PORTS.first;

  /** Claims a port for "ns/name:port" (saved from before); ignored when either is taken or out of range. */
  seed(key: string, port: number): void {
    if (port < LISTENER_PORTS.first || port > LISTENER_PORTS.last || this.#byKey.has(key) || this.#owner.has(port)) return;
    this.#byKey.set(key, port);
    this.#owner.set(port, key);
    this.revision++;
  }

  portFor(key: string): number {
    const have = this.#byKey.get(key);
    if (have !== undefined) return have;
    const size = LISTENER_PORTS.last - LISTENER_PORTS.first + 1;
    for (let i = 0; i < size; i++) {
      const port = this.#next;
      this.#next = port >= LISTENER_PORTS.last ? LISTENER_PORTS.first : port + 1;
      if (!this.#owner.has(port)) {
        this.#byKey.set(key, port);
        this.#owner.set(port, key);
        this.revision++;
        return port;
      }
    }
    throw new RangeError(`the node proxy's listener ports ${LISTENER_PORTS.first}-${LISTENER_PORTS.last} are all taken`);
  }

  release(key: string): void {
    const port = this.#byKey.get(key);
    if (port === undefined) return;
    this.#byKey.delete(key);
    this.#owner.delete(port);
    this.revision++;
  }

  /** Frees the ports of keys not in `live`. */
  retain(live: ReadonlySet<string>): void {
    for (const key of [...this.#byKey.keys()]) if (!live.has(key)) this.release(key);
  }

  entries(): [string, number][] {
    return [...this.#byKey].sort(([a], [b]) => (a < b ? -1 : 1));
  }
}
