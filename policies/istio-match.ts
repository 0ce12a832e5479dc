/**
 * Istio's string matching for AuthorizationPolicy values: "abc" exact,
 * "abc*" prefix, "*abc" suffix, "*" presence (any value, as long as there
 * is one). A "*" anywhere else is not a pattern Istio accepts. Pure; shared
 * by validation, the evaluator and the RBAC compiler so the three agree.
 */

/** A value of an AuthorizationPolicy list, classified. */
export type IstioPattern =
  | { kind: 'exact' | 'prefix' | 'suffix'; text: string }
  | { kind: 'presence' };

/** Classifies a value; call `wildcardProblem` first, a misplaced "*" is taken literally here. */
export function istioPattern(v: string): IstioPattern {
  if (v === '*') return { kind: 'presence' };
  if (v.length > 1 && v.endsWith('*') && !v.slice(0, -1).includes('*')) return { kind: 'prefix', text: v.slice(0, -1) };
  if (v.length > 1 && v.startsWith('*') && !v.slice(1).includes('*')) return { kind: 'suffix', text: v.slice(1) };
  return { kind: 'exact', text: v };
}

/** Why a value is not an Istio match value (a "*" in the middle, two of them, empty), or undefined. */
export function wildcardProblem(v: string): string | undefined {
  if (v === '') return 'must not be empty';
  if (v === '*') return undefined;
  const inner = v.slice(1, -1);
  if (inner.includes('*') || (v.startsWith('*') && v.endsWith('*'))) {
    return `${JSON.stringify(v)}: "*" may only stand alone, start the value (suffix match) or end it (prefix match)`;
  }
  return undefined;
}

/**
 * Whether `value` matches the Istio pattern. An absent value (undefined)
 * matches nothing, not even "*". `ignoreCase` is for hosts.
 */
export function istioMatches(pattern: string, value: string | undefined, ignoreCase = false): boolean {
  if (value === undefined) return false;
  const p = istioPattern(ignoreCase ? pattern.toLowerCase() : pattern);
  const v = ignoreCase ? value.toLowerCase() : value;
  switch (p.kind) {
    case 'presence': return true;
    case 'exact': return v === p.text;
    case 'prefix': return v.startsWith(p.text);
    case 'suffix': return v.endsWith(p.text);
  }
}

/** Whether any pattern of the list matches (values in a list are ORed). */
export function anyMatches(patterns: readonly string[], value: string | undefined, ignoreCase = false): boolean {
  return patterns.some((p) => istioMatches(p, value, ignoreCase));
}
