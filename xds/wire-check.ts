/**
 * A structural check of protobuf wire bytes against a message type, done
 * before decoding requests: protobufjs decodes truncated or mistyped input
 * without complaint (a string past the end of the buffer comes back short),
 * so a garbled request would otherwise look like an empty, valid one.
 * Checked: every tag and wire type is well formed, lengths stay inside their
 * message, a known field has the wire type its type needs, strings are
 * UTF-8, embedded messages (and map entries) recursively. Unknown fields are
 * skipped, not refused: a newer client may send fields these protos lack.
 */
import { isUtf8 } from 'node:buffer';
import protobuf from 'protobufjs';

const VARINT = new Set(['int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'bool']);
const FIXED64 = new Set(['fixed64', 'sfixed64', 'double']);
const FIXED32 = new Set(['fixed32', 'sfixed32', 'float']);
const MAX_DEPTH = 64;

class WireError extends Error {}

/** The wire types a field of this scalar/enum/message type may arrive with. */
function allowed(type: string, resolved: protobuf.ReflectionObject | null, repeated: boolean): number[] {
  if (resolved instanceof protobuf.Type) return [2];
  const packable = repeated ? [2] : [];
  if (resolved instanceof protobuf.Enum || VARINT.has(type)) return [0, ...packable];
  if (FIXED64.has(type)) return [1, ...packable];
  if (FIXED32.has(type)) return [5, ...packable];
  return [2]; // string, bytes
}

function varint(buf: Uint8Array, pos: number, end: number): [number, number] {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new WireError('truncated varint');
    const b = buf[pos++]!;
    value += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return [value, pos];
  }
  throw new WireError('varint longer than 10 bytes');
}

function checkMessage(type: protobuf.Type, buf: Uint8Array, start: number, end: number, path: string, depth: number): void {
  if (depth > MAX_DEPTH) throw new WireError(`${path}: nested deeper than ${MAX_DEPTH}`);
  let pos = start;
  while (pos < end) {
    let tag: number;
    [tag, pos] = varint(buf, pos, end);
    const id = Math.floor(tag / 8);
    const wire = tag & 7;
    if (id === 0) throw new WireError(`${path}: field number 0`);
    const field = type.fieldsById[id];
    const where = field ? `${path}${path ? '.' : ''}${field.name}` : `${path}${path ? '.' : ''}#${id}`;
    if (field) {
      const ok = field instanceof protobuf.MapField ? [2] : allowed(field.type, field.resolvedType, field.repeated);
      if (!ok.includes(wire)) throw new WireError(`${where}: wire type ${wire}, expected ${ok.join(' or ')}`);
    }
    switch (wire) {
      case 0:
        [, pos] = varint(buf, pos, end);
        break;
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        let len: number;
        [len, pos] = varint(buf, pos, end);
        if (pos + len > end) throw new WireError(`${where}: length ${len} runs past the end of its message`);
        if (field instanceof protobuf.MapField) {
          checkMapEntry(field, buf, pos, pos + len, where, depth + 1);
        } else if (field?.resolvedType instanceof protobuf.Type) {
          checkMessage(field.resolvedType, buf, pos, pos + len, where, depth + 1);
        } else if (field?.type === 'string' && !isUtf8(buf.subarray(pos, pos + len))) {
          throw new WireError(`${where}: not UTF-8`);
        }
        pos += len;
        break;
      }
      default:
        throw new WireError(`${where}: wire type ${wire} is not valid`);
    }
    if (pos > end) throw new WireError(`${where}: value runs past the end of its message`);
  }
}

function checkMapEntry(field: protobuf.MapField, buf: Uint8Array, start: number, end: number, path: string, depth: number): void {
  const entry = new protobuf.Type('Entry')
    .add(new protobuf.Field('key', 1, field.keyType))
    .add(new protobuf.Field('value', 2, field.type));
  if (field.resolvedType) entry.fieldsById[2]!.resolvedType = field.resolvedType;
  checkMessage(entry, buf, start, end, path, depth);
}

/** Undefined when buf is a well-formed `type`, else what is wrong and where. */
export function wireProblem(type: protobuf.Type, buf: Uint8Array): string | undefined {
  try {
    checkMessage(type, buf, 0, buf.length, '', 0);
    return undefined;
  } catch (err) {
    if (err instanceof WireError) return err.message;
    throw err;
  }
}
