/**
 * The embedded default exporter: OTLP/JSON lines appended to a file (one
 * ExportTraceServiceRequest per line, the encoding OTLP/HTTP JSON uses),
 * rotated to FILE.1 past a size cap. `mesh-agent traces` reads it back.
 */
import { mkdirSync } from 'node:fs';
import { open, rename, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';

const NEWLINE = Buffer.from('\n');

export interface OtlpFileExporterOptions {
  file: string;
  /** rotate past this many bytes; default 64 MiB */
  maxBytes?: number;
}

export class OtlpFileExporter implements SpanExporter {
  readonly file: string;
  readonly #maxBytes: number;
  #size: number | undefined;
  #writing: Promise<void> = Promise.resolve();
  #dirMade = false;
  #handle: FileHandle | undefined;

  constructor(opts: OtlpFileExporterOptions) {
    this.file = opts.file;
    this.#maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const bytes = JsonTraceSerializer.serializeRequest(spans);
    if (!bytes) {
      done({ code: ExportResultCode.FAILED, error: new Error('spans could not be serialized') });
      return;
    }
    const line = [Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), NEWLINE];
    this.#writing = this.#writing.then(() => this.#append(line)).then(
      () => done({ code: ExportResultCode.SUCCESS }),
      (error: Error) => done({ code: ExportResultCode.FAILED, error }),
    );
  }

  /** Writes one line (given in pieces, not copied together) through a handle kept open, rotating first when due. */
  async #append(pieces: Buffer[]): Promise<void> {
    const length = pieces.reduce((a, b) => a + b.length, 0);
    if (!this.#dirMade) {
      mkdirSync(dirname(this.file), { recursive: true });
      this.#dirMade = true;
    }
    this.#size ??= await stat(this.file).then((s) => s.size, () => 0);
    if (this.#size > 0 && this.#size + length > this.#maxBytes) {
      await this.#handle?.close();
      this.#handle = undefined;
      await rename(this.file, `${this.file}.1`);
      this.#size = 0;
    }
    this.#handle ??= await open(this.file, 'a');
    let written = 0;
    while (written < length) {
      const { bytesWritten } = await this.#handle.writev(written === 0 ? pieces : [Buffer.concat(pieces).subarray(written)]);
      written += bytesWritten;
    }
    this.#size += length;
  }

  /**
   * Appends one already serialized ExportTraceServiceRequest (OTLP/JSON, one
   * line, possibly in pieces) as a line, in order with export().
   */
  appendSerialized(json: Uint8Array | Buffer[]): Promise<void> {
    const pieces = Array.isArray(json) ? [...json, NEWLINE] : [Buffer.from(json.buffer, json.byteOffset, json.byteLength), NEWLINE];
    const p = this.#writing.then(() => this.#append(pieces));
    this.#writing = p.catch(() => undefined);
    return p;
  }

  async forceFlush(): Promise<void> {
    await this.#writing;
  }

  async shutdown(): Promise<void> {
    await this.#writing;
    await this.#handle?.close();
    this.#handle = undefined;
  }
}
