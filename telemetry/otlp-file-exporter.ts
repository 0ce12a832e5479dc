/**
 * The embedded default exporter: OTLP/JSON lines appended to a file (one
 * ExportTraceServiceRequest per line, the encoding OTLP/HTTP JSON uses),
 * rotated to FILE.1 past a size cap. `mesh-agent traces` reads it back.
 */
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { RotatingFile } from './rotating-file.js';

const NEWLINE = Buffer.from('\n');

export interface OtlpFileExporterOptions {
  file: string;
  /** rotate past this many bytes; default 64 MiB */
  maxBytes?: number;
}

export class OtlpFileExporter implements SpanExporter {
  readonly file: string;
  readonly #out: RotatingFile;

  constructor(opts: OtlpFileExporterOptions) {
    this.file = opts.file;
    this.#out = new RotatingFile(opts.file, opts.maxBytes ?? 64 * 1024 * 1024);
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const bytes = JsonTraceSerializer.serializeRequest(spans);
    if (!bytes) {
      done({ code: ExportResultCode.FAILED, error: new Error('spans could not be serialized') });
      return;
    }
    this.#out.append([Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), NEWLINE]).then(
      () => done({ code: ExportResultCode.SUCCESS }),
      (error: Error) => done({ code: ExportResultCode.FAILED, error }),
    );
  }

  /**
   * Appends one already serialized ExportTraceServiceRequest (OTLP/JSON, one
   * line, possibly in pieces) as a line, in order with export().
   */
  appendSerialized(json: Uint8Array | Buffer[]): Promise<void> {
    return this.#out.append(Array.isArray(json) ? [...json, NEWLINE] : [Buffer.from(json.buffer, json.byteOffset, json.byteLength), NEWLINE]);
  }

  /** Opens the path again after what was written so far (the file was rotated from outside). */
  reopen(): Promise<void> {
    return this.#out.reopen();
  }

  async forceFlush(): Promise<void> {
    await this.#out.flush();
  }

  async shutdown(): Promise<void> {
    await this.#out.close();
  }
}
