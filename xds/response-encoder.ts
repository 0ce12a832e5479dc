/**
 * Wire encoding of ADS responses from pre-encoded parts. Protobuf lets a
 * message be written as concatenated pieces (fields in any order), so each
 * resource's field bytes are encoded once per snapshot and shared by every
 * stream that gets it; only the small header (version, type, nonce) is
 * encoded per response. The ADS service's serializer passes these Buffers
 * through untouched.
 */
import type * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { envoyRoot } from './envoy-protos.js';
import type { EncodedResource } from './snapshot.js';

let types: { sotw: protobuf.Type; delta: protobuf.Type } | undefined;

function responseTypes(): { sotw: protobuf.Type; delta: protobuf.Type } {
  types ??= {
    sotw: envoyRoot().lookupType('envoy.service.discovery.v3.DiscoveryResponse'),
    delta: envoyRoot().lookupType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
  };
  return types;
}

/** `resources` field bytes of one resource, per protocol: encoded on first use, kept as long as the resource lives. */
const sotwField = new WeakMap<EncodedResource, Uint8Array>();
const deltaField = new WeakMap<EncodedResource, Uint8Array>();
/** A whole `resources` list, for lists shared by many streams (wildcard subscriptions). */
const bodies = new WeakMap<ReadonlyMap<string, EncodedResource>, Buffer>();

function fieldOf(r: EncodedResource, protocol: 'sotw' | 'delta'): Uint8Array {
  const cache = protocol === 'sotw' ? sotwField : deltaField;
  let f = cache.get(r);
  if (!f) {
    const { sotw, delta } = responseTypes();
    f = protocol === 'sotw'
      ? sotw.encode(sotw.fromObject({ resources: [r.any] })).finish()
      : delta.encode(delta.fromObject({ resources: [{ name: r.name, version: r.version, resource: r.any }] })).finish();
    cache.set(r, f);
  }
  return f;
}

/** The `resources` of every resource of a kind in a snapshot, encoded once. */
function wholeKind(all: ReadonlyMap<string, EncodedResource>): Buffer {
  let b = bodies.get(all);
  if (!b) {
    b = Buffer.concat([...all.values()].map((r) => fieldOf(r, 'sotw')));
    bodies.set(all, b);
  }
  return b;
}

/**
 * A state-of-the-world DiscoveryResponse. `all` is the kind's whole map in
 * the snapshot: when `chosen` is all of it, the shared body is used.
 */
export function encodeSotwResponse(
  header: { version_info: string; type_url: string; nonce: string },
  chosen: readonly EncodedResource[],
  all: ReadonlyMap<string, EncodedResource>,
): Buffer {
  const { sotw } = responseTypes();
  const head = sotw.encode(sotw.fromObject(header)).finish();
  const body = chosen.length === all.size && chosen.length > 0 ? wholeKind(all) : Buffer.concat(chosen.map((r) => fieldOf(r, 'sotw')));
  return Buffer.concat([head, body]);
}

/** A DeltaDiscoveryResponse. */
export function encodeDeltaResponse(
  header: { system_version_info: string; type_url: string; nonce: string; removed_resources: string[] },
  resources: readonly EncodedResource[],
): Buffer {
  const { delta } = responseTypes();
  const head = delta.encode(delta.fromObject(header)).finish();
  return Buffer.concat([head, ...resources.map((r) => fieldOf(r, 'delta'))]);
}

/**
 * The ADS service definition with a response serializer that sends
 * pre-encoded Buffers as they are (and encodes anything else as before).
 */
export function passThroughResponses(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  return Object.fromEntries(Object.entries(service).map(([method, def]) => {
    const encode = def.responseSerialize;
    return [method, { ...def, responseSerialize: (v: unknown) => (Buffer.isBuffer(v) ? v : encode(v)) }];
  }));
}
