/**
 * The embedded default exporter: OTLP/JSON lines appended to a file (one
 * ExportTraceServiceRequest per line, the encoding OTLP/HTTP JSON uses),
 * rotated to FILE.1 past a size cap. `mesh-agent traces` reads it back.
 */
import { mkdirSync } from 'node:fs';
import { appendFile, rename, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';

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
    const line = Buffer.concat([Buffer.from(bytes), Buffer.from('\n')]);
    this.#writing = this.#writing.then(() => this.#append(line)).then(
      () => done({ code: ExportResultCode.SUCCESS }),
      (error: Error) => done({ code: ExportResultCode.FAILED, error }),
    );
  }

  async #append(line: Buffer): Promise<void> {
    if (!this.#dirMade) {
      mkdirSync(dirname(this.file), { recursive: true });
      this.#dirMade = true;
    }
    this.#size ??= await stat(this.file).then((s) => s.size, () => 0);
    if (this.#size > 0 && this.#size + line.length > this.#maxBytes) {
      await rename(this.file, `${this.file}.1`);
      this.#size = 0;
    }
    await appendFile(this.file, line);
    this.#size += line.length;
  }

  async forceFlush(): Promise<void> {
    await this.#writing;
  }

  async shutdown(): Promise<void> {
    await this.#writing;
  }
}
