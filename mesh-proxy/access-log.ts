/**
 * The node proxy's access log file: one JSON line per request, buffered and
 * written as Envoy writes its file access logs — every flushIntervalMs (1 s)
 * or at once when flushBytes (64 KiB) are waiting — and rotated to FILE.1
 * past a size cap so a busy node's disk does not fill (at 1,000 requests/s a
 * line each, an unbounded log grew by 5 GB in a day of benchmarks here).
 * Written line by line as they came, each line was its own write through
 * libuv's thread pool: in the L7 benchmark the shared proxy's CPU per request
 * fell from 0.116-0.135 to 0.094-0.112 ms with the buffer (300 requests/s;
 * benchmarks/results/l7-access-log-ab). Never blocks a request: when the disk falls behind by more than
 * maxPendingBytes, lines are dropped and counted. A process killed outright
 * loses what was buffered (at most flushIntervalMs of lines), as Envoy's does.
 */
import { RotatingFile } from '../telemetry/rotating-file.js';

export interface AccessLogFileOptions {
  /** rotate past this many bytes; default 64 MiB */
  maxBytes?: number;
  /** bytes waiting for the disk at most; default 8 MiB */
  maxPendingBytes?: number;
  /** the longest a line waits before it is written, in ms; default 1000 (Envoy's file_flush_interval_msec); 0 writes each line as it comes */
  flushIntervalMs?: number;
  /** lines waiting are written at once when they reach this many bytes; default 64 KiB (Envoy's buffer) */
  flushBytes?: number;
}

export interface AccessLogStats {
  written: number;
  /** lines that found maxPendingBytes waiting */
  dropped: number;
  /** lines whose write failed (disk full, file not writable) */
  failed: number;
  rotations: number;
}

/** the longest delay a Node timer takes (a longer one fires after 1 ms) */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export class AccessLogFile {
  readonly #file: RotatingFile;
  readonly #maxPending: number;
  readonly #flushIntervalMs: number;
  readonly #flushBytes: number;
  #lines: string[] = [];
  /** bytes in #lines (not yet handed to a write) */
  #bufferedBytes = 0;
  /** bytes buffered or being written */
  #pendingBytes = 0;
  #writing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** flush() came while a write was out: the lines buffered since go right after it */
  #flushAsked = false;
  /** close() was called: every line is written as it comes */
  #closing = false;
  readonly #stats = { written: 0, dropped: 0, failed: 0 };
  /** the last write error, for the proxy's log (once per kind) */
  #lastError: string | undefined;
  readonly #onError: (message: string) => void;

  constructor(path: string, opts: AccessLogFileOptions = {}, onError: (message: string) => void = () => undefined) {
    this.#file = new RotatingFile(path, opts.maxBytes ?? 64 * 1024 * 1024);
    this.#maxPending = opts.maxPendingBytes ?? 8 * 1024 * 1024;
    this.#flushIntervalMs = opts.flushIntervalMs ?? 1000;
    if (!Number.isInteger(this.#flushIntervalMs) || this.#flushIntervalMs < 0 || this.#flushIntervalMs > MAX_TIMER_MS) {
      throw new RangeError(`${path}: the flush interval must be a whole number of ms from 0 to ${MAX_TIMER_MS}, got ${this.#flushIntervalMs}`);
    }
    const flushBytes = opts.flushBytes ?? 64 * 1024;
    if (!(flushBytes > 0)) throw new RangeError(`${path}: the flush size must be above 0 bytes, got ${flushBytes}`);
    // a buffer allowed to hold less than the flush size is written when it is full, not dropped from
    this.#flushBytes = Math.min(flushBytes, this.#maxPending);
    this.#onError = onError;
  }

  get path(): string {
    return this.#file.path;
  }

  stats(): AccessLogStats {
    return { ...this.#stats, rotations: this.#file.rotations };
  }

  /** Queues one line (without its newline). */
  write(line: string): void {
    const bytes = line.length + 1; // with its newline
    if (this.#pendingBytes + bytes > this.#maxPending) {
      this.#stats.dropped++;
      return;
    }
    this.#lines.push(line);
    this.#pendingBytes += bytes;
    this.#bufferedBytes += bytes;
    if (this.#writing) return; // the write out takes these lines when it is done
    if (this.#due()) this.#flushNow();
    else this.#schedule();
  }

  /** Writes the lines buffered so far; resolves when they are written (or failed). */
  flush(): Promise<void> {
    if (this.#lines.length > 0) {
      this.#flushAsked = true;
      this.#flushNow();
    }
    return this.#writing ?? Promise.resolve();
  }

  /** Opens the path again after the lines logged so far (SIGUSR1: the file was rotated from outside). */
  async reopen(): Promise<void> {
    await this.flush();
    await this.#file.reopen();
  }

  /**
   * Writes what is buffered and closes the file. Lines logged while it waits
   * for the disk (requests cut off by a drain) are written too, at once.
   */
  async close(): Promise<void> {
    this.#closing = true;
    while (this.#lines.length > 0 || this.#writing) await this.flush();
    await this.#file.close();
  }

  /** Whether the buffered lines go now rather than at the interval. */
  #due(): boolean {
    return this.#flushAsked || this.#closing || this.#flushIntervalMs === 0 || this.#bufferedBytes >= this.#flushBytes;
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => this.#flushNow(), this.#flushIntervalMs).unref();
  }

  #flushNow(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#writing ??= this.#drain();
  }

  async #drain(): Promise<void> {
    do {
      const batch = this.#lines;
      this.#lines = [];
      this.#bufferedBytes = 0;
      const text = `${batch.join('\n')}\n`;
      try {
        await this.#file.append([Buffer.from(text)]);
        this.#stats.written += batch.length;
      } catch (err) {
        this.#stats.failed += batch.length;
        const message = `access log ${this.#file.path}: ${(err as Error).message}`;
        if (message !== this.#lastError) this.#onError(message);
        this.#lastError = message;
      }
      this.#pendingBytes -= text.length;
      // what came during the write waits for the next interval, unless it is enough to write or a flush asked for it
    } while (this.#lines.length > 0 && this.#due());
    this.#flushAsked = false;
    this.#writing = undefined;
    if (this.#lines.length > 0) this.#schedule();
  }
}
