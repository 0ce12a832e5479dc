/**
 * OTLP/JSON (an ExportTraceServiceRequest) back into finished spans: the agent
 * decodes the node proxy's spans this way when they go to a collector (to the
 * trace file they are appended as they came). JSON, because the agent reads
 * it without protobuf definitions.
 */
import type { Attributes, AttributeValue, Link, SpanKind } from '@opentelemetry/api';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { finishedSpan } from './finished-span.js';

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
