/**
 * Kubernetes LabelSelector (meta/v1): matchLabels and matchExpressions with
 * the operators In, NotIn, Exists and DoesNotExist. Parsing checks what the
 * API server checks (label key and value syntax, operator, values present
 * for In/NotIn and absent for Exists/DoesNotExist); matching follows
 * Kubernetes: every term must hold, and an empty selector selects everything.
 */
import type { ProblemSink } from '../mesh-agent/cluster/problem-sink.js';
import type { Labels } from '../mesh-agent/cluster/object-meta.js';
import { isObj, refuseUnknownFields } from './known-fields.js';

/**
 * A label key: an optional DNS-subdomain prefix and "/", then a name of at
 * most 63 characters. The same rule as metadata.labels in
 * mesh-agent/cluster/manifest-parser.ts.
 */
export const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** A label value: empty, or at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends. */
export const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** The operators of a matchExpressions term. */
export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/** One matchExpressions term. */
export interface LabelSelectorRequirement {
  key: string;
  operator: SelectorOperator;
  /** non-empty for In and NotIn, empty for Exists and DoesNotExist */
  values: readonly string[];
}

/** A parsed LabelSelector. Both parts empty: selects everything. */
export interface LabelSelector {
  matchLabels: Labels;
  matchExpressions: readonly LabelSelectorRequirement[];
}

/** The selector that selects everything (`{}`). */
export const EVERYTHING: LabelSelector = Object.freeze({ matchLabels: Object.freeze({}), matchExpressions: Object.freeze([]) });

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];
const KEY_RULE = 'a label key (an optional DNS prefix and "/", then 63 characters at most: letters, digits, \'-\', \'_\', \'.\')';
const VALUE_RULE = '63 characters at most: letters, digits, \'-\', \'_\', \'.\', starting and ending with a letter or digit';

function requirement(p: ProblemSink, v: unknown, at: string): LabelSelectorRequirement | undefined {
  if (!isObj(v)) {
    p.add(at, `must be a map with key, operator and values, got ${JSON.stringify(v)}`);
    return undefined;
  }
  refuseUnknownFields(p, v, at, 'a matchExpressions term', ['key', 'operator', 'values']);
  let ok = true;
  if (typeof v.key !== 'string' || !LABEL_KEY.test(v.key)) {
    p.add(`${at}.key`, v.key === undefined ? 'required' : `must be ${KEY_RULE}, got ${JSON.stringify(v.key)}`);
    ok = false;
  }
  const op = v.operator;
  if (typeof op !== 'string' || !OPERATORS.includes(op as SelectorOperator)) {
    p.add(`${at}.operator`, op === undefined ? 'required (In, NotIn, Exists or DoesNotExist)' : `must be In, NotIn, Exists or DoesNotExist, got ${JSON.stringify(op)}`);
    return undefined;
  }
  const values = v.values ?? [];
  if (!Array.isArray(values)) {
    p.add(`${at}.values`, `must be a list of strings, got ${JSON.stringify(values)}`);
    return undefined;
  }
  if ((op === 'In' || op === 'NotIn') && values.length === 0) {
    p.add(`${at}.values`, `must list at least one value for operator ${op}`);
    ok = false;
  }
  if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
    p.add(`${at}.values`, `must be empty for operator ${op}, got ${JSON.stringify(values)}`);
    ok = false;
  }
  values.forEach((x: unknown, i: number) => {
    if (typeof x !== 'string') {
      p.add(`${at}.values[${i}]`, `must be a string, got ${JSON.stringify(x)} (quote it: "${String(x)}")`);
      ok = false;
    } else if (!LABEL_VALUE.test(x)) {
      p.add(`${at}.values[${i}]`, `${JSON.stringify(x)} is not a label value (${VALUE_RULE})`);
      ok = false;
    }
  });
  return ok ? { key: v.key as string, operator: op as SelectorOperator, values: values as string[] } : undefined;
}

/**
 * Parses a LabelSelector at field path `at` (e.g. "spec.podSelector").
 * `null` and `{}` select everything. Problems go to `p`; the result holds
 * the terms that parsed.
 */
export function parseLabelSelector(p: ProblemSink, v: unknown, at: string): LabelSelector {
  if (v === null || v === undefined) return EVERYTHING;
  if (!isObj(v)) {
    p.add(at, `must be a label selector (a map with matchLabels and/or matchExpressions; {} selects all), got ${JSON.stringify(v)}`);
    return EVERYTHING;
  }
  refuseUnknownFields(p, v, at, 'a label selector', ['matchLabels', 'matchExpressions']);
  const matchLabels: Record<string, string> = {};
  if (v.matchLabels !== undefined && v.matchLabels !== null) {
    if (!isObj(v.matchLabels)) p.add(`${at}.matchLabels`, `must be a map of label keys to values, got ${JSON.stringify(v.matchLabels)}`);
    else {
      for (const [k, x] of Object.entries(v.matchLabels)) {
        if (!LABEL_KEY.test(k)) p.add(`${at}.matchLabels.${k}`, `${JSON.stringify(k)} is not ${KEY_RULE}`);
        else if (typeof x !== 'string') p.add(`${at}.matchLabels.${k}`, `must be a string, got ${JSON.stringify(x)} (quote it: "${String(x)}")`);
        else if (!LABEL_VALUE.test(x)) p.add(`${at}.matchLabels.${k}`, `${JSON.stringify(x)} is not a label value (${VALUE_RULE})`);
        else matchLabels[k] = x;
      }
    }
  }
  const matchExpressions: LabelSelectorRequirement[] = [];
  if (v.matchExpressions !== undefined && v.matchExpressions !== null) {
    if (!Array.isArray(v.matchExpressions)) p.add(`${at}.matchExpressions`, `must be a list of {key, operator, values}, got ${JSON.stringify(v.matchExpressions)}`);
    else {
      v.matchExpressions.forEach((e: unknown, i: number) => {
        const r = requirement(p, e, `${at}.matchExpressions[${i}]`);
        if (r) matchExpressions.push(r);
      });
    }
  }
  return { matchLabels, matchExpressions };
}

/** Whether the selector selects nothing in particular, i.e. everything. */
export function isEverything(sel: LabelSelector): boolean {
  return Object.keys(sel.matchLabels).length === 0 && sel.matchExpressions.length === 0;
}

/** Whether `labels` satisfy every term of `sel` (an empty selector matches everything). */
export function selectorMatches(sel: LabelSelector, labels: Labels): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels)) {
    if (labels[k] !== v) return false;
  }
  for (const r of sel.matchExpressions) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const value = labels[r.key];
    switch (r.operator) {
      case 'In':
        if (!has || !r.values.includes(value!)) return false;
        break;
      case 'NotIn':
        if (has && r.values.includes(value!)) return false; // a missing key is "not in"
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/**
 * The selector in kubectl's notation, for messages: `app=web,tier in (a,b),
 * env notin (prod),debug,!canary`; "{}" for the empty selector.
 */
export function describeSelector(sel: LabelSelector): string {
  const terms = Object.entries(sel.matchLabels).map(([k, v]) => `${k}=${v}`);
  for (const r of sel.matchExpressions) {
    switch (r.operator) {
      case 'In':
        terms.push(`${r.key} in (${r.values.join(',')})`);
        break;
      case 'NotIn':
        terms.push(`${r.key} notin (${r.values.join(',')})`);
        break;
      case 'Exists':
        terms.push(r.key);
        break;
      case 'DoesNotExist':
        terms.push(`!${r.key}`);
        break;
    }
  }
  return terms.length === 0 ? '{}' : terms.join(',');
}
