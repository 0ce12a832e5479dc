/**
 * A file that only grows by appends, in order, and is bounded: past maxBytes
 * it is renamed to FILE.1 (replacing the one before) and started again, so
 * it and its one predecessor hold at most about twice the cap. The trace
 * file and the node proxy's access log both write through it.
 */
import { mkdirSync } from 'node:fs';
import { open, rename, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

export class RotatingFile {
  readonly path: string;
  readonly maxBytes: number;
  /** the file's size as this writer knows it; read from the file at the first append */
  #size: number | undefined;
  #handle: FileHandle | undefined;
  #dirMade = false;
  /** the last append's write: the next one waits for it, so lines keep their order */
  #tail: Promise<void> = Promise.resolve();
  /** times the file was rotated by this writer */
  rotations = 0;

  constructor(path: string, maxBytes: number) {
    if (!(maxBytes > 0)) throw new RangeError(`${path}: the rotation size must be above 0 bytes, got ${maxBytes}`);
    this.path = path;
    this.maxBytes = maxBytes;
  }

  /** Appends the pieces together (not copied into one buffer) after every earlier append; rejects when the write fails. */
  append(pieces: Buffer[]): Promise<void> {
    const p = this.#tail.then(() => this.#write(pieces));
    this.#tail = p.catch(() => undefined);
    return p;
  }

  /** Resolves when every append made so far is written (or failed). */
  flush(): Promise<void> {
    return this.#tail;
  }

  /**
   * After the appends made so far, lets go of the file: the next append opens
   * the path again (made anew if it is gone) and takes its size from there.
   * For a file renamed or removed from outside (logrotate), which this writer
   * would otherwise keep writing through its open handle.
   */
  reopen(): Promise<void> {
    const p = this.#tail.then(async () => {
      const h = this.#handle;
      this.#handle = undefined;
      this.#size = undefined;
      await h?.close();
    });
    this.#tail = p.catch(() => undefined);
    return p;
  }

  /** Writes what is queued and closes the file; a later append opens it again. */
  async close(): Promise<void> {
    await this.#tail;
    const h = this.#handle;
    this.#handle = undefined;
    await h?.close();
  }

  async #write(pieces: Buffer[]): Promise<void> {
    const length = pieces.reduce((a, b) => a + b.length, 0);
    if (!this.#dirMade) {
      mkdirSync(dirname(this.path), { recursive: true });
      this.#dirMade = true;
    }
    this.#size ??= await stat(this.path).then((s) => s.size, () => 0);
    // a single append larger than the cap is written whole into a fresh file
    if (this.#size > 0 && this.#size + length > this.maxBytes) {
      const h = this.#handle;
      this.#handle = undefined;
      await h?.close();
      await rename(this.path, `${this.path}.1`).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
      this.#size = 0;
      this.rotations++;
    }
    this.#handle ??= await open(this.path, 'a');
    let written = 0;
    while (written < length) {
      const { bytesWritten } = await this.#handle.writev(written === 0 ? pieces : [Buffer.concat(pieces).subarray(written)]);
      written += bytesWritten;
    }
    this.#size += length;
  }
}
