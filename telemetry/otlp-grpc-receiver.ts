/**
 * An OTLP/gRPC trace receiver (TraceService/Export) on a unix socket: the
 * agent's end of the Envoy node proxy's tracer (its bootstrap's
 * sockmesh-otlp cluster). Each export's spans go to onSpans, which says how
 * many it refused and why; the answer is OTLP's: empty when all were taken,
 * a partial success naming the refused count and the first reason
 * otherwise, INVALID_ARGUMENT when the bytes are not an export request (the
 * sender must not retry either).
 */
import * as grpc from '@grpc/grpc-js';
import { serveOnUnixSocket, stopUnixServer } from './grpc-unix-server.js';
import { decodeTraceExport, encodeTraceExportResponse, type OtlpSpan } from './otlp-trace-decoder.js';
import { TRACE_EXPORT_PATH } from './otlp-grpc-exporter.js';

export interface OtlpGrpcReceiverOptions {
  /** the unix socket to serve on (made, and removed on stop) */
  socketPath: string;
  /** an export's spans; returns the reasons of the spans refused (empty: all taken) */
  onSpans: (spans: OtlpSpan[]) => string[];
  /** the largest export taken, bytes; default 16 MiB */
  maxMessageBytes?: number;
  /** the span attributes read (others skipped unread); default all */
  attributes?: ReadonlySet<string>;
}

export interface OtlpGrpcReceiverStats {
  exports: number;
  spans: number;
  refused: number;
  /** exports that were not export requests */
  invalid: number;
}

export class OtlpGrpcReceiver {
  readonly #o: Required<Omit<OtlpGrpcReceiverOptions, 'attributes'>> & Pick<OtlpGrpcReceiverOptions, 'attributes'>;
  #server: grpc.Server | undefined;
  readonly stats: OtlpGrpcReceiverStats = { exports: 0, spans: 0, refused: 0, invalid: 0 };

  constructor(opts: OtlpGrpcReceiverOptions) {
    if (!opts.socketPath.startsWith('/')) throw new RangeError(`the OTLP receiver's socket must be an absolute path, got ${opts.socketPath}`);
    this.#o = { maxMessageBytes: 16 * 1024 * 1024, ...opts };
  }

  get socketPath(): string {
    return this.#o.socketPath;
  }

  async start(): Promise<void> {
    const path = this.#o.socketPath;
    this.#server = await serveOnUnixSocket(path, {
      path: TRACE_EXPORT_PATH, requestStream: false,
      handler: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        this.stats.exports++;
        let decoded: ReturnType<typeof decodeTraceExport>;
        try {
          decoded = decodeTraceExport(call.request, this.#o.attributes ? { attributes: this.#o.attributes } : {});
        } catch (err) {
          this.stats.invalid++;
          done({ code: grpc.status.INVALID_ARGUMENT, details: `${path}: not an ExportTraceServiceRequest: ${(err as Error).message}` });
          return;
        }
        let reasons: string[];
        try {
          reasons = this.#o.onSpans(decoded.spans);
        } catch (err) {
          reasons = decoded.spans.map(() => (err as Error).message);
        }
        const refused = reasons.length + decoded.invalid;
        this.stats.spans += decoded.spans.length + decoded.invalid;
        this.stats.refused += refused;
        const why = reasons[0] ?? (decoded.invalid > 0 ? `${decoded.invalid} spans without a 16-byte trace id and an 8-byte span id` : '');
        done(null, encodeTraceExportResponse(refused, refused > 0 ? `${refused} of ${decoded.spans.length + decoded.invalid} spans refused; first: ${why}` : ''));
      },
    }, this.#o.maxMessageBytes);
  }

  /** Stops taking exports (those under way finish) and removes the socket. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    await stopUnixServer(server, this.#o.socketPath);
  }
}
