/**
 * The node proxy hands its spans to the agent over a unix socket as OTLP/HTTP
 * JSON (POST /v1/traces): the agent links them to the kernel's connection
 * spans, counts requests by workload pair, streams them to `observe`, and
 * exports them with its own queue and exporter. JSON, because the agent
 * decodes it without protobuf definitions.
 */
import { request } from 'node:http';
import type { Attributes, AttributeValue, Link, SpanKind } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { finishedSpan } from './finished-span.js';

export interface RelayExporterOptions {
  socketPath: string;
  /** default 5000 */
  timeoutMs?: number;
}

/** Sends batches to the agent's relay socket; a failure is reported to the queue, not retried (the agent is local). */
export class RelayExporter implements SpanExporter {
  readonly #socketPath: string;
  readonly #timeoutMs: number;
  #pending = new Set<Promise<void>>();

  constructor(opts: RelayExporterOptions) {
    this.#socketPath = opts.socketPath;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const body = JsonTraceSerializer.serializeRequest(spans);
    if (!body) {
      done({ code: ExportResultCode.FAILED, error: new Error('spans could not be serialized') });
      return;
    }
    const p = new Promise<void>((resolve) => {
      const finish = (r: ExportResult) => { resolve(); done(r); };
      const req = request({ socketPath: this.#socketPath, path: '/v1/traces', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length, 'x-sockmesh-spans': spans.length } }, (res) => {
        res.resume();
        res.on('end', () => finish(res.statusCode === 200 ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: new Error(`relay answered ${res.statusCode}`) }));
        res.on('error', (error) => finish({ code: ExportResultCode.FAILED, error }));
      });
      req.setTimeout(this.#timeoutMs, () => req.destroy(new Error(`relay did not answer in ${this.#timeoutMs} ms`)));
      req.on('error', (error) => finish({ code: ExportResultCode.FAILED, error }));
      req.end(body);
    });
    this.#pending.add(p);
    void p.then(() => this.#pending.delete(p));
  }

  async forceFlush(): Promise<void> {
    await Promise.all(this.#pending);
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.#pending);
  }
}

// ---- decoding (the agent's side) ----

interface JsonAnyValue {
  stringValue?: string; boolValue?: boolean; intValue?: number | string; doubleValue?: number;
  arrayValue?: { values?: JsonAnyValue[] }; bytesValue?: string; kvlistValue?: { values?: JsonKeyValue[] };
}
interface JsonKeyValue { key: string; value?: JsonAnyValue }
interface JsonSpan {
  traceId: string; spanId: string; parentSpanId?: string; name: string; kind?: number; flags?: number;
  startTimeUnixNano: string | number; endTimeUnixNano: string | number;
  attributes?: JsonKeyValue[]; events?: { timeUnixNano: string | number; name: string; attributes?: JsonKeyValue[] }[];
  links?: { traceId: string; spanId: string; attributes?: JsonKeyValue[] }[]; status?: { code?: number; message?: string };
}
interface JsonRequest {
  resourceSpans?: { resource?: { attributes?: JsonKeyValue[] }; scopeSpans?: { scope?: { name?: string; version?: string }; spans?: JsonSpan[] }[] }[];
}

function scalar(v: JsonAnyValue | undefined): AttributeValue | undefined {
  if (!v) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map((x) => scalar(x)).filter((x) => x !== undefined && !Array.isArray(x)) as string[];
  if (v.bytesValue !== undefined) return v.bytesValue;
  return undefined;
}

export function attributesOf(kvs: JsonKeyValue[] | undefined): Attributes {
  const out: Attributes = {};
  for (const kv of kvs ?? []) {
    const v = scalar(kv.value);
    if (v !== undefined) out[kv.key] = v;
  }
  return out;
}

const HEX = /^[0-9a-f]+$/;

function id(s: unknown, len: number, what: string): string {
  if (typeof s !== 'string' || s.length !== len || !HEX.test(s)) throw new Error(`${what} must be ${len} lowercase hex digits`);
  return s;
}

/**
 * Decodes an OTLP/JSON ExportTraceServiceRequest into finished spans
 * (resources are shared between spans with the same attributes). Throws
 * naming the span and field when the request is malformed.
 */
export function decodeOtlpJson(body: unknown, resources = new Map<string, Resource>()): ReadableSpan[] {
  const req = body as JsonRequest;
  if (typeof req !== 'object' || req === null || !Array.isArray(req.resourceSpans)) throw new Error('resourceSpans: missing');
  const out: ReadableSpan[] = [];
  req.resourceSpans.forEach((rs, i) => {
    const rattrs = attributesOf(rs.resource?.attributes);
    const rkey = JSON.stringify(rattrs);
    let resource = resources.get(rkey);
    if (!resource) {
      resource = resourceFromAttributes(rattrs);
      if (resources.size > 10_000) resources.clear();
      resources.set(rkey, resource);
    }
    (rs.scopeSpans ?? []).forEach((ss, j) => {
      const scope = { name: ss.scope?.name ?? '', ...(ss.scope?.version && { version: ss.scope.version }) };
      (ss.spans ?? []).forEach((s, k) => {
        const where = `resourceSpans[${i}].scopeSpans[${j}].spans[${k}]`;
        try {
          const traceId = id(s.traceId, 32, 'traceId');
          const links: Link[] = (s.links ?? []).map((l) => ({ context: { traceId: id(l.traceId, 32, 'links.traceId'), spanId: id(l.spanId, 16, 'links.spanId'), traceFlags: 1 }, attributes: attributesOf(l.attributes) }));
          out.push(finishedSpan({
            name: String(s.name), kind: Math.max(0, (s.kind ?? 1) - 1) as SpanKind, traceId, spanId: id(s.spanId, 16, 'spanId'),
            ...(s.parentSpanId && { parentSpanId: id(s.parentSpanId, 16, 'parentSpanId') }),
            sampled: ((s.flags ?? 1) & 1) === 1,
            startNs: BigInt(s.startTimeUnixNano), endNs: BigInt(s.endTimeUnixNano),
            attributes: attributesOf(s.attributes), links,
            events: (s.events ?? []).map((e) => ({ name: e.name, timeNs: BigInt(e.timeUnixNano), attributes: attributesOf(e.attributes) })),
            status: { code: s.status?.code ?? 0, ...(s.status?.message && { message: s.status.message }) },
            resource: resource!, scope,
          }));
        } catch (err) {
          throw new Error(`${where}: ${(err as Error).message}`);
        }
      });
    });
  });
  return out;
}
