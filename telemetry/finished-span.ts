/**
 * Finished spans built from plain fields: the spans the agent makes from
 * kernel events and from the node proxy's request records enter the same
 * exporters as SDK spans.
 */
import { TraceFlags, type Attributes, type HrTime, type Link, type SpanContext, type SpanKind, type SpanStatus } from '@opentelemetry/api';
import { TraceState, type InstrumentationScope } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';

/** A finished span's own fields (its resource and scope aside). */
export interface SpanData {
  name: string;
  kind: SpanKind;
  traceId: string;
  spanId: string;
  /** the parent's span id (same trace), if any */
  parentSpanId?: string;
  /** whether the parent came from another process (a traceparent); default true */
  parentRemote?: boolean;
  /** the W3C tracestate the span carries */
  traceState?: string;
  sampled?: boolean;
  startNs: bigint;
  endNs: bigint;
  attributes: Attributes;
  links?: Link[];
  events?: { name: string; timeNs: bigint; attributes?: Attributes }[];
  status?: SpanStatus;
}

export interface SpanFields extends SpanData {
  resource: Resource;
  scope: InstrumentationScope;
}

export function hrTime(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

export function finishedSpan(f: SpanFields): ReadableSpan {
  const flags = f.sampled === false ? TraceFlags.NONE : TraceFlags.SAMPLED;
  const ctx: SpanContext = { traceId: f.traceId, spanId: f.spanId, traceFlags: flags, ...(f.traceState && { traceState: new TraceState(f.traceState) }) };
  const events: TimedEvent[] = (f.events ?? []).map((e) => ({ name: e.name, time: hrTime(e.timeNs), ...(e.attributes && { attributes: e.attributes }) }));
  const end = f.endNs < f.startNs ? f.startNs : f.endNs;
  return {
    name: f.name,
    kind: f.kind,
    spanContext: () => ctx,
    ...(f.parentSpanId && { parentSpanContext: { traceId: f.traceId, spanId: f.parentSpanId, traceFlags: flags, isRemote: f.parentRemote !== false } }),
    startTime: hrTime(f.startNs),
    endTime: hrTime(end),
    duration: hrTime(end - f.startNs),
    status: f.status ?? { code: 0 },
    attributes: f.attributes,
    links: f.links ?? [],
    events,
    ended: true,
    resource: f.resource,
    instrumentationScope: f.scope,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}
