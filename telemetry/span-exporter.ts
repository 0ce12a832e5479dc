/**
 * The exporter the options ask for: the official OTLP/HTTP exporters (they
 * retry only 429/502/503/504 with exponential backoff and jitter, honour
 * Retry-After, never retry 400 or a partial success), our OTLP/gRPC exporter
 * (the official one never retries; ours retries the retryable gRPC codes the
 * same way), or the OTLP/JSON lines file.
 */
import { OTLPTraceExporter as HttpJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import { OtlpFileExporter } from './otlp-file-exporter.js';
import { OtlpGrpcTraceExporter } from './otlp-grpc-exporter.js';
import type { TelemetryOptions } from './telemetry-options.js';

export function createSpanExporter(opts: TelemetryOptions): SpanExporter {
  if (opts.target === 'file' || !opts.endpoint) return new OtlpFileExporter({ file: opts.file, maxBytes: opts.fileMaxBytes });
  const compression = opts.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE;
  if (opts.protocol === 'grpc') {
    // ours, not the official one: that one never retries
    return new OtlpGrpcTraceExporter({ url: opts.endpoint, headers: opts.headers, timeoutMs: opts.timeoutMs, compression: opts.compression });
  }
  const common = { url: opts.endpoint, headers: { ...opts.headers }, timeoutMillis: opts.timeoutMs, compression };
  return opts.protocol === 'http/json' ? new HttpJsonTraceExporter(common) : new ProtoTraceExporter(common);
}

/** One line for status: where spans go. */
export function describeExport(opts: TelemetryOptions): string {
  if (!opts.enabled) return 'off';
  return opts.target === 'file' ? `file ${opts.file}` : `OTLP ${opts.protocol} ${opts.endpoint}`;
}
