/**
 * Refusing unknown fields, as `kubectl apply --validate=strict` does: in a
 * policy a misspelt field is not harmless (an ingress rule whose `from` is
 * spelt `form` would allow every source), so it is a problem, not ignored.
 */
import type { ProblemSink } from '../mesh-agent/cluster/problem-sink.js';

/** A YAML map as parsed. */
export type Obj = Record<string, unknown>;

/** Whether `v` is a map (not null, not a list). */
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Adds a problem at `<at>.<field>` for every field of `o` not in `known`; `what` names the thing ("a peer"). */
export function refuseUnknownFields(p: ProblemSink, o: Obj, at: string, what: string, known: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) p.add(at === '' ? k : `${at}.${k}`, `unknown field; ${what} has ${known.join(', ')}`);
  }
}
