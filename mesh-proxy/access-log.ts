/**
 * The node proxy's access log file: one JSON line per request, appended in
 * batches (the lines that come while a write is out go in the next one),
 * rotated to FILE.1 past a size cap so a busy node's disk does not fill (at
 * 1,000 requests/s a line each, an unbounded log grew by 5 GB in a day of
 * benchmarks here). Never blocks a request: when the disk falls behind by
 * more than maxPendingBytes, lines are dropped and counted.
 */
import { RotatingFile } from '../telemetry/rotating-file.js';

export interface AccessLogFileOptions {
  /** rotate past this many bytes; default 64 MiB */
  maxBytes?: number;
  /** bytes waiting for the disk at most; default 8 MiB */
  maxPendingBytes?: number;
}

export interface AccessLogStats {
  written: number;
  /** lines that found maxPendingBytes waiting */
  dropped: number;
  /** lines whose write failed (disk full, file not writable) */
  failed: number;
  rotations: number;
}

export class AccessLogFile {
  readonly #file: RotatingFile;
  readonly #maxPending: number;
  #lines: string[] = [];
  #pendingBytes = 0;
  #writing: Promise<void> | undefined;
  readonly #stats = { written: 0, dropped: 0, failed: 0 };
  /** the last write error, for the proxy's log (once per kind) */
  #lastError: string | undefined;
  readonly #onError: (message: string) => void;

  constructor(path: string, opts: AccessLogFileOptions = {}, onError: (message: string) => void = () => undefined) {
    this.#file = new RotatingFile(path, opts.maxBytes ?? 64 * 1024 * 1024);
    this.#maxPending = opts.maxPendingBytes ?? 8 * 1024 * 1024;
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
    this.#writing ??= this.#drain();
  }

  /** Opens the path again after the lines written so far (SIGUSR1: the file was rotated from outside). */
  reopen(): Promise<void> {
    return this.#file.reopen();
  }

  /** Writes what is queued and closes the file. */
  async close(): Promise<void> {
    await this.#writing;
    await this.#file.close();
  }

  async #drain(): Promise<void> {
    while (this.#lines.length > 0) {
      const batch = this.#lines;
      this.#lines = [];
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
    }
    this.#writing = undefined;
  }
}
