/**
 * The protoc-gen-validate rules carried in Envoy's protos
 * (`(validate.rules)` on fields, `(validate.required)` on oneofs), applied
 * where they say something about values sockmesh builds: required messages
 * and oneofs, string lengths, number bounds, repeated and map sizes,
 * duration bounds, enum values to avoid. Rules PGV has and this does not
 * check (regexes, well-known string formats, `in` lists) are left to Envoy.
 */
import protobuf from 'protobufjs';

type Rules = Record<string, Record<string, unknown>>;

/** The field's `(validate.rules)` as one object, or undefined. */
export function rulesOf(field: protobuf.Field): Rules | undefined {
  const parsed = (field as unknown as { parsedOptions?: Record<string, unknown>[] }).parsedOptions;
  const found = parsed?.find((o) => '(validate.rules)' in o)?.['(validate.rules)'];
  return found as Rules | undefined;
}

const NUMBER_KINDS = ['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64', 'double', 'float'];

function bounds(v: number, r: Record<string, unknown>, unit = ''): string | undefined {
  const n = (k: string) => (r[k] === undefined ? undefined : Number(r[k]));
  if (n('const') !== undefined && v !== n('const')) return `must be ${n('const')}${unit}`;
  if (n('gt') !== undefined && !(v > n('gt')!)) return `must be > ${n('gt')}${unit}`;
  if (n('gte') !== undefined && !(v >= n('gte')!)) return `must be ≥ ${n('gte')}${unit}`;
  if (n('lt') !== undefined && !(v < n('lt')!)) return `must be < ${n('lt')}${unit}`;
  if (n('lte') !== undefined && !(v <= n('lte')!)) return `must be ≤ ${n('lte')}${unit}`;
  return undefined;
}

function durationSeconds(d: unknown): number {
  const o = (d ?? {}) as { seconds?: number | string; nanos?: number };
  return Number(o.seconds ?? 0) + Number(o.nanos ?? 0) / 1e9;
}

function durationBounds(v: number, r: Record<string, unknown>): string | undefined {
  const limits: Record<string, unknown> = {};
  for (const k of ['const', 'gt', 'gte', 'lt', 'lte']) if (r[k] !== undefined) limits[k] = durationSeconds(r[k]);
  return bounds(v, limits, ' s');
}

/** Problems of one value against one kind of rule ("string", "uint32", ...); empty when it complies. */
function valueProblems(kind: string, r: Record<string, unknown>, v: unknown): string[] {
  const out: string[] = [];
  if (kind === 'string') {
    const s = typeof v === 'string' ? v : '';
    const len = [...s].length;
    if (r.min_len !== undefined && len < Number(r.min_len)) out.push(`must have at least ${r.min_len} character(s)`);
    if (r.max_len !== undefined && len > Number(r.max_len)) out.push(`must have at most ${r.max_len} character(s)`);
    if (r.min_bytes !== undefined && Buffer.byteLength(s) < Number(r.min_bytes)) out.push(`must have at least ${r.min_bytes} byte(s)`);
    if (typeof r.prefix === 'string' && !s.startsWith(r.prefix)) out.push(`must start with ${JSON.stringify(r.prefix)}`);
  } else if (NUMBER_KINDS.includes(kind)) {
    const p = bounds(Number(v ?? 0), r);
    if (p) out.push(p);
  } else if (kind === 'duration') {
    if (v !== undefined) {
      const p = durationBounds(durationSeconds(v), r);
      if (p) out.push(p);
    }
  } else if (kind === 'enum') {
    if (Array.isArray(r.not_in) && r.not_in.some((x) => x === v)) out.push(`must not be ${JSON.stringify(v)}`);
  }
  return out;
}

/**
 * Problems of a message object's fields against their rules, as
 * [field path suffix, reason] pairs. `obj` has been checked for shape.
 */
export function ruleProblems(type: protobuf.Type, obj: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  for (const field of type.fieldsArray) {
    const rules = rulesOf(field);
    const v = obj[field.name];
    // rules of a oneof member apply only to the member that is set
    if (!rules || (field.partOf && v === undefined)) continue;
    for (const [kind, r] of Object.entries(rules)) {
      if (kind === 'message') {
        if (r.required && v === undefined) out.push([field.name, 'is required']);
      } else if (kind === 'repeated' && field.repeated) {
        const items = Array.isArray(v) ? v : [];
        if (r.min_items !== undefined && items.length < Number(r.min_items)) out.push([field.name, `needs at least ${r.min_items} item(s)`]);
        if (r.max_items !== undefined && items.length > Number(r.max_items)) out.push([field.name, `takes at most ${r.max_items} item(s)`]);
        const itemRules = r.items as Rules | undefined;
        for (const [ik, ir] of Object.entries(itemRules ?? {})) {
          items.forEach((item, i) => { for (const p of valueProblems(ik, ir, item)) out.push([`${field.name}[${i}]`, p]); });
        }
      } else if (kind === 'map' && field instanceof protobuf.MapField) {
        const n = Object.keys((v as object | undefined) ?? {}).length;
        if (r.min_pairs !== undefined && n < Number(r.min_pairs)) out.push([field.name, `needs at least ${r.min_pairs} entr(ies)`]);
      } else if (kind === 'duration' && r.required && v === undefined) {
        out.push([field.name, 'is required']);
      } else if (!field.repeated && !(field instanceof protobuf.MapField)) {
        // scalars are validated at their default when unset, as PGV does; messages only when set
        const isMessage = field.resolvedType instanceof protobuf.Type;
        if (isMessage && v === undefined) continue;
        const value = isMessage && kind !== 'duration' ? (v as { value?: unknown })?.value : v;
        for (const p of valueProblems(kind, r, value)) out.push([field.name, p]);
      }
    }
  }
  for (const oneof of type.oneofsArray) {
    if (oneof.options?.['(validate.required)'] && !oneof.fieldsArray.some((f) => obj[f.name] !== undefined)) {
      out.push([oneof.name, `one of ${oneof.fieldsArray.map((f) => f.name).join(', ')} is required`]);
    }
  }
  return out;
}
