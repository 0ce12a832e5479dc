/**
 * Strict encoding of xDS resources: a plain object (proto field names, as in
 * Envoy's .proto files) is checked against the message type before it is
 * encoded. A field the type does not have, a wrong scalar kind, an unknown
 * enum name or two members of one oneof is an error naming the path, never
 * silently dropped. `google.protobuf.Any` is written as
 * `{ '@type': 'type.googleapis.com/<full name>', ...fields }` and checked
 * against the named type. The protoc-gen-validate rules in Envoy's protos
 * are checked too (pgv-rules.ts).
 */
import protobuf from 'protobufjs';
import { SockmeshError } from '../mesh-agent/errors.js';
import { envoyRoot } from './envoy-protos.js';
import { ruleProblems } from './pgv-rules.js';

/** A resource that does not fit its proto type. */
export class XdsEncodeError extends SockmeshError {
  /** Where in the resource, e.g. "filter_chains[0].filters[0].typed_config.codec_typ". */
  readonly path: string;
  constructor(typeName: string, path: string, reason: string) {
    super('SOCKMESH_XDS_ENCODE', `${typeName}${path ? ` at ${path}` : ''}: ${reason}`, 'fix the resource builder or the input it was built from');
    this.path = path;
  }
}

export const TYPE_URL_PREFIX = 'type.googleapis.com/';

const INT_TYPES = new Set(['int32', 'uint32', 'sint32', 'fixed32', 'sfixed32']);
const LONG_TYPES = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const FREE_FORM = new Set(['google.protobuf.Struct', 'google.protobuf.Value', 'google.protobuf.ListValue']);

function fullName(t: protobuf.ReflectionObject): string {
  return t.fullName.replace(/^\./, '');
}

function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

interface Ctx {
  top: string;
}

function checkScalar(ctx: Ctx, field: protobuf.Field, v: unknown, path: string): void {
  const t = field.type;
  const bad = (want: string) => { throw new XdsEncodeError(ctx.top, path, `expected ${want}, got ${describe(v)} ${JSON.stringify(v)}`); };
  if (t === 'string') {
    if (typeof v !== 'string') bad('a string');
  } else if (t === 'bool') {
    if (typeof v !== 'boolean') bad('a boolean');
  } else if (t === 'double' || t === 'float') {
    if (typeof v !== 'number') bad('a number');
  } else if (INT_TYPES.has(t)) {
    if (typeof v !== 'number' || !Number.isInteger(v)) bad('a whole number');
    if (t.startsWith('u') && (v as number) < 0) bad('a number ≥ 0');
  } else if (LONG_TYPES.has(t)) {
    const ok = (typeof v === 'number' && Number.isInteger(v)) || typeof v === 'bigint' || (typeof v === 'string' && /^-?\d+$/.test(v));
    if (!ok) bad('a whole number');
  } else if (t === 'bytes') {
    if (!(v instanceof Uint8Array) && typeof v !== 'string') bad('bytes');
  }
}

function checkValue(ctx: Ctx, field: protobuf.Field, v: unknown, path: string): void {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) {
    if (typeof v === 'string' ? !(v in rt.values) : !(typeof v === 'number' && Object.values(rt.values).includes(v))) {
      throw new XdsEncodeError(ctx.top, path, `${JSON.stringify(v)} is not a value of ${fullName(rt)} (${Object.keys(rt.values).join(', ')})`);
    }
  } else if (rt instanceof protobuf.Type) {
    checkMessage(ctx, rt, v, path);
  } else {
    checkScalar(ctx, field, v, path);
  }
}

function checkMessage(ctx: Ctx, type: protobuf.Type, obj: unknown, path: string): void {
  const name = fullName(type);
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new XdsEncodeError(ctx.top, path, `expected a ${name} object, got ${describe(obj)}`);
  }
  if (FREE_FORM.has(name)) return;
  const o = obj as Record<string, unknown>;
  if (name === 'google.protobuf.Any') {
    const url = o['@type'];
    if (typeof url !== 'string' || !url.startsWith(TYPE_URL_PREFIX)) {
      throw new XdsEncodeError(ctx.top, path, `an Any needs '@type': '${TYPE_URL_PREFIX}<type>'`);
    }
    const inner = lookupMessage(ctx, url.slice(TYPE_URL_PREFIX.length), path);
    const rest = { ...o };
    delete rest['@type'];
    checkMessage(ctx, inner, rest, path);
    return;
  }
  const oneofSeen = new Map<string, string>();
  for (const [key, v] of Object.entries(o)) {
    const here = path ? `${path}.${key}` : key;
    const field = type.fields[key];
    if (!field) {
      throw new XdsEncodeError(ctx.top, here, `${name} has no field "${key}"`);
    }
    if (v === undefined) continue;
    if (field.partOf) {
      const other = oneofSeen.get(field.partOf.name);
      if (other) throw new XdsEncodeError(ctx.top, here, `"${key}" and "${other}" are both set, but only one of oneof ${field.partOf.name} may be`);
      oneofSeen.set(field.partOf.name, key);
    }
    if (field instanceof protobuf.MapField) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new XdsEncodeError(ctx.top, here, `expected a map, got ${describe(v)}`);
      for (const [k, mv] of Object.entries(v)) checkValue(ctx, field, mv, `${here}[${JSON.stringify(k)}]`);
    } else if (field.repeated) {
      if (!Array.isArray(v)) throw new XdsEncodeError(ctx.top, here, `expected an array, got ${describe(v)}`);
      v.forEach((item, i) => checkValue(ctx, field, item, `${here}[${i}]`));
    } else {
      checkValue(ctx, field, v, here);
    }
  }
  const broken = ruleProblems(type, o)[0];
  if (broken) {
    const [where, reason] = broken;
    throw new XdsEncodeError(ctx.top, path ? `${path}.${where}` : where, `${reason} (a validate rule of ${name})`);
  }
}

function lookupMessage(ctx: Ctx, name: string, path: string): protobuf.Type {
  try {
    return envoyRoot().lookupType(name);
  } catch {
    throw new XdsEncodeError(ctx.top, path, `unknown message type ${name}`);
  }
}

/** A plain JSON value in the wire form of a Struct, Value or ListValue. */
function freeForm(typeName: string, v: unknown, path: string): Record<string, unknown> {
  if (typeName === 'google.protobuf.Struct') return jsonStruct(v, path);
  if (typeName === 'google.protobuf.ListValue') {
    if (!Array.isArray(v)) throw new XdsEncodeError(typeName, path, `expected an array, got ${describe(v)}`);
    return { values: v.map((x, i) => jsonValue(x, `${path}[${i}]`)) };
  }
  return jsonValue(v, path);
}

function jsonStruct(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new XdsEncodeError('google.protobuf.Struct', path, `expected an object, got ${describe(v)}`);
  return { fields: Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonValue(x, `${path}.${k}`)])) };
}

/** google.protobuf.Value (protobufjs's own definition: lowerCamelCase field names, whatever the Root's keepCase) */
function jsonValue(v: unknown, path: string): Record<string, unknown> {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number' && Number.isFinite(v)) return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map((x, i) => jsonValue(x, `${path}[${i}]`)) } };
  if (typeof v === 'object') return { structValue: jsonStruct(v, path) };
  throw new XdsEncodeError('google.protobuf.Value', path, `${describe(v)} ${String(v)} is not a JSON value`);
}

/** Replaces every Any (`'@type'` form) by { type_url, value } with the encoded bytes. */
function packAnys(type: protobuf.Type, obj: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(obj)) {
    const field = type.fields[key]!;
    const rt = field.resolvedType;
    if (!(rt instanceof protobuf.Type) || v === undefined) {
      out[key] = v;
      continue;
    }
    if (FREE_FORM.has(fullName(rt))) {
      // written as plain JSON (as Envoy's JSON and YAML take them): their wire form here, else protobuf drops them
      const free = (x: unknown) => freeForm(fullName(rt), x, key);
      out[key] = field.repeated ? (v as unknown[]).map(free) : field instanceof protobuf.MapField ? Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, free(x)])) : free(v);
      continue;
    }
    const one = (x: unknown) => packOne(rt, x as Record<string, unknown>);
    if (field instanceof protobuf.MapField) {
      out[key] = Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, one(x)]));
    } else if (field.repeated) {
      out[key] = (v as unknown[]).map(one);
    } else {
      out[key] = one(v);
    }
  }
  return out;
}

function packOne(type: protobuf.Type, obj: Record<string, unknown>): Record<string, unknown> {
  if (fullName(type) === 'google.protobuf.Any') {
    const url = obj['@type'] as string;
    const rest = { ...obj };
    delete rest['@type'];
    const inner = envoyRoot().lookupType(url.slice(TYPE_URL_PREFIX.length));
    return { type_url: url, value: inner.encode(inner.fromObject(packAnys(inner, rest))).finish() };
  }
  return packAnys(type, obj);
}

/** Checks obj against the message type and returns its wire encoding. */
export function encodeStrict(typeName: string, obj: unknown): Uint8Array {
  const ctx: Ctx = { top: typeName };
  const type = lookupMessage(ctx, typeName, '');
  checkMessage(ctx, type, obj, '');
  const packed = packOne(type, obj as Record<string, unknown>);
  return type.encode(type.fromObject(packed)).finish();
}

/** encodeStrict, wrapped as a google.protobuf.Any (what xDS responses carry). */
export function packResource(typeName: string, obj: unknown): { type_url: string; value: Uint8Array } {
  return { type_url: TYPE_URL_PREFIX + typeName, value: encodeStrict(typeName, obj) };
}

/** Decodes wire bytes back to a plain object (Anys expanded, enums as names). */
export function decodeResource(typeName: string, bytes: Uint8Array): Record<string, unknown> {
  const type = envoyRoot().lookupType(typeName);
  return type.toObject(type.decode(bytes), { enums: String, longs: String, defaults: false, json: true }) as Record<string, unknown>;
}
