/**
 * OTLP trace export requests (ExportTraceServiceRequest, protobuf) read into
 * flat spans, for a receiver of another proxy's spans (the Envoy node
 * proxy's: envoy-spans.ts). Only the fields such a receiver uses are
 * declared, by their numbers in opentelemetry-proto (trace_service.proto,
 * trace.proto, common.proto, resource.proto); protobuf skips the others.
 * Both ResourceSpans.scope_spans and instrumentation_library_spans (field
 * 1000, which older senders, Envoy among them, still write) are read.
 */
import protobuf from 'protobufjs';

/** SpanKind on the wire */
export const WIRE_SPAN_KIND = { unspecified: 0, internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

/** A received span, its attribute values as strings (Envoy's tags are strings). */
export interface OtlpSpan {
  /** 32 and 16 lowercase hex digits */
  traceId: string;
  spanId: string;
  /** '' for a root span */
  parentSpanId: string;
  traceState: string;
  name: string;
  /** WIRE_SPAN_KIND */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  /** string, bool, int and double values as strings; lists, maps and bytes left out */
  attributes: Map<string, string>;
  /** the service.name of the span's resource, '' when it has none */
  serviceName: string;
}

const SCHEMA = {
  nested: {
    AnyValue: {
      oneofs: { value: { oneof: ['stringValue', 'boolValue', 'intValue', 'doubleValue', 'arrayValue', 'kvlistValue', 'bytesValue'] } },
      fields: {
        stringValue: { type: 'string', id: 1 }, boolValue: { type: 'bool', id: 2 }, intValue: { type: 'int64', id: 3 }, doubleValue: { type: 'double', id: 4 },
        arrayValue: { type: 'ArrayValue', id: 5 }, kvlistValue: { type: 'KeyValueList', id: 6 }, bytesValue: { type: 'bytes', id: 7 },
      },
    },
    ArrayValue: { fields: { values: { rule: 'repeated', type: 'AnyValue', id: 1 } } },
    KeyValueList: { fields: { values: { rule: 'repeated', type: 'KeyValue', id: 1 } } },
    KeyValue: { fields: { key: { type: 'string', id: 1 }, value: { type: 'AnyValue', id: 2 } } },
    Resource: { fields: { attributes: { rule: 'repeated', type: 'KeyValue', id: 1 } } },
    Span: {
      fields: {
        traceId: { type: 'bytes', id: 1 }, spanId: { type: 'bytes', id: 2 }, traceState: { type: 'string', id: 3 }, parentSpanId: { type: 'bytes', id: 4 },
        name: { type: 'string', id: 5 }, kind: { type: 'int32', id: 6 }, startTimeUnixNano: { type: 'fixed64', id: 7 }, endTimeUnixNano: { type: 'fixed64', id: 8 },
        attributes: { rule: 'repeated', type: 'KeyValue', id: 9 },
      },
    },
    ScopeSpans: { fields: { spans: { rule: 'repeated', type: 'Span', id: 2 } } },
    ResourceSpans: {
      fields: {
        resource: { type: 'Resource', id: 1 }, scopeSpans: { rule: 'repeated', type: 'ScopeSpans', id: 2 },
        instrumentationLibrarySpans: { rule: 'repeated', type: 'ScopeSpans', id: 1000 },
      },
    },
    ExportTraceServiceRequest: { fields: { resourceSpans: { rule: 'repeated', type: 'ResourceSpans', id: 1 } } },
    ExportTracePartialSuccess: { fields: { rejectedSpans: { type: 'int64', id: 1 }, errorMessage: { type: 'string', id: 2 } } },
    ExportTraceServiceResponse: { fields: { partialSuccess: { type: 'ExportTracePartialSuccess', id: 1 } } },
  },
};

let types: { request: protobuf.Type; response: protobuf.Type } | undefined;

function otlp(): { request: protobuf.Type; response: protobuf.Type } {
  if (!types) {
    const root = protobuf.Root.fromJSON(SCHEMA);
    types = { request: root.lookupType('ExportTraceServiceRequest'), response: root.lookupType('ExportTraceServiceResponse') };
  }
  return types;
}

interface PbValue { value?: string; stringValue?: string; boolValue?: boolean; intValue?: { toString(): string } | number; doubleValue?: number }
interface PbKeyValue { key: string; value?: PbValue }
interface PbSpan {
  traceId: Uint8Array; spanId: Uint8Array; traceState: string; parentSpanId: Uint8Array; name: string; kind: number;
  startTimeUnixNano: { toString(): string } | number; endTimeUnixNano: { toString(): string } | number; attributes: PbKeyValue[];
}
interface PbScopeSpans { spans: PbSpan[] }
interface PbResourceSpans { resource?: { attributes: PbKeyValue[] }; scopeSpans: PbScopeSpans[]; instrumentationLibrarySpans: PbScopeSpans[] }

function valueString(v: PbValue | undefined): string | undefined {
  // the oneof's virtual field names the value set (proto3 defaults would hide an empty string, false or 0)
  switch (v?.value) {
    case 'stringValue': return v.stringValue;
    case 'boolValue': return String(v.boolValue);
    case 'intValue': return String(v.intValue);
    case 'doubleValue': return String(v.doubleValue);
    default: return undefined;
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/**
 * The spans of one ExportTraceServiceRequest. Throws (protobuf's reason)
 * when the bytes are not one; a span without a 16-byte trace id or an 8-byte
 * span id is not returned but counted in `invalid`.
 */
export function decodeTraceExport(bytes: Uint8Array): { spans: OtlpSpan[]; invalid: number } {
  const req = otlp().request.decode(bytes) as unknown as { resourceSpans: PbResourceSpans[] };
  const spans: OtlpSpan[] = [];
  let invalid = 0;
  for (const rs of req.resourceSpans) {
    let serviceName = '';
    for (const kv of rs.resource?.attributes ?? []) if (kv.key === 'service.name') serviceName = valueString(kv.value) ?? '';
    // scope_spans wins when both are set (the specification's rule for receivers)
    const groups = rs.scopeSpans.length > 0 ? rs.scopeSpans : rs.instrumentationLibrarySpans;
    for (const g of groups) {
      for (const s of g.spans) {
        if (s.traceId.length !== 16 || s.spanId.length !== 8 || (s.parentSpanId.length !== 0 && s.parentSpanId.length !== 8)) {
          invalid++;
          continue;
        }
        const attributes = new Map<string, string>();
        for (const kv of s.attributes) {
          const v = valueString(kv.value);
          if (v !== undefined) attributes.set(kv.key, v);
        }
        spans.push({
          traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: s.parentSpanId.length === 0 ? '' : hex(s.parentSpanId),
          traceState: s.traceState, name: s.name, kind: s.kind,
          startNs: BigInt(s.startTimeUnixNano.toString()), endNs: BigInt(s.endTimeUnixNano.toString()), attributes, serviceName,
        });
      }
    }
  }
  return { spans, invalid };
}

/** An ExportTraceServiceResponse: empty, or a partial success naming the spans refused and why. */
export function encodeTraceExportResponse(rejected: number, message: string): Buffer {
  const { response } = otlp();
  const body = rejected > 0 || message !== '' ? { partialSuccess: { rejectedSpans: rejected, errorMessage: message } } : {};
  return Buffer.from(response.encode(response.fromObject(body)).finish());
}
