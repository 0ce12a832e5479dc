/**
 * Gateway API HTTPRoute (gateway.networking.k8s.io/v1) as mesh users write
 * it for services (GAMMA: parentRefs name Services): matches on path
 * (Exact, PathPrefix, RegularExpression), headers, query parameters and
 * method; weighted backendRefs; timeouts; the experimental retry field;
 * request and response header modifiers. Checks follow the Gateway API's
 * own validation; anything sockmesh cannot serve is refused with the field.
 */
import type { HTTPBackendRef, HTTPHeaderModifier, HTTPPathMatch, HTTPRoute, HTTPRouteMatch, HTTPRouteRule, HTTPValueMatch, ObjectMeta } from './model.js';
import type { ProblemSink } from './problem-sink.js';

type Obj = Record<string, unknown>;


const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** A Gateway API duration ("1h", "10s", "500ms", "1m30s") in milliseconds, or undefined when malformed. */
export function parseDuration(v: string): number | undefined {
  if (!DURATION.test(v)) return undefined;
  let ms = 0;
  for (const m of v.matchAll(/([0-9]+)(h|ms|m|s)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

function regexOk(v: string): string | undefined {
  try {
    new RegExp(v, 'u');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function valueMatches(p: ProblemSink, v: unknown, path: string, what: 'header' | 'query'): HTTPValueMatch[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    p.add(path, 'must be a list');
    return [];
  }
  const out: HTTPValueMatch[] = [];
  v.forEach((m: unknown, i: number) => {
    const at = `${path}[${i}]`;
    if (!isObj(m)) return p.add(at, 'must be a map');
    const type = m.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') return p.add(`${at}.type`, `must be Exact or RegularExpression, got ${JSON.stringify(type)}`);
    if (typeof m.name !== 'string' || (what === 'header' ? !HEADER_NAME.test(m.name) : m.name === '')) return p.add(`${at}.name`, `must be a ${what === 'header' ? 'header name' : 'parameter name'}, got ${JSON.stringify(m.name)}`);
    if (typeof m.value !== 'string') return p.add(`${at}.value`, 'must be a string');
    if (type === 'RegularExpression') {
      const bad = regexOk(m.value);
      if (bad) return p.add(`${at}.value`, `not a regular expression: ${bad}`);
    }
    if (out.some((x) => x.name.toLowerCase() === (m.name as string).toLowerCase() && what === 'header')) return p.add(`${at}.name`, `header ${m.name} is matched twice`);
    out.push({ type, name: what === 'header' ? m.name.toLowerCase() : m.name, value: m.value });
  });
  return out;
}

function pathMatch(p: ProblemSink, v: unknown, at: string): HTTPPathMatch {
  if (v === undefined) return { type: 'PathPrefix', value: '/' };
  if (!isObj(v)) {
    p.add(at, 'must be a map');
    return { type: 'PathPrefix', value: '/' };
  }
  const type = v.type ?? 'PathPrefix';
  const value = v.value ?? '/';
  if (type !== 'Exact' && type !== 'PathPrefix' && type !== 'RegularExpression') p.add(`${at}.type`, `must be Exact, PathPrefix or RegularExpression, got ${JSON.stringify(type)}`);
  if (typeof value !== 'string') {
    p.add(`${at}.value`, 'must be a string');
    return { type: 'PathPrefix', value: '/' };
  }
  if (type === 'RegularExpression') {
    const bad = regexOk(value);
    if (bad) p.add(`${at}.value`, `not a regular expression: ${bad}`);
  } else if (!value.startsWith('/')) {
    p.add(`${at}.value`, `must start with "/", got ${JSON.stringify(value)}`);
  } else if (/\/\/|\/\.\.?(\/|$)|%2f|%2F|#/.test(value)) {
    p.add(`${at}.value`, `${JSON.stringify(value)} holds "//", "/./", "/../", an encoded "/" or "#"`);
  }
  return { type: type as HTTPPathMatch['type'], value };
}

function headerModifier(p: ProblemSink, v: unknown, at: string): HTTPHeaderModifier | undefined {
  if (!isObj(v)) {
    p.add(at, 'must be a map');
    return undefined;
  }
  const pairs = (x: unknown, field: string) => {
    if (x === undefined) return [];
    if (!Array.isArray(x)) {
      p.add(`${at}.${field}`, 'must be a list');
      return [];
    }
    return x.flatMap((h: unknown, i: number) => {
      if (!isObj(h) || typeof h.name !== 'string' || !HEADER_NAME.test(h.name) || typeof h.value !== 'string') {
        p.add(`${at}.${field}[${i}]`, 'must have a header name and a string value');
        return [];
      }
      return [{ name: h.name.toLowerCase(), value: h.value }];
    });
  };
  const remove = v.remove === undefined ? [] : Array.isArray(v.remove) && v.remove.every((x) => typeof x === 'string' && HEADER_NAME.test(x))
    ? (v.remove as string[]).map((x) => x.toLowerCase()) : (p.add(`${at}.remove`, 'must be a list of header names'), []);
  return { set: pairs(v.set, 'set'), add: pairs(v.add, 'add'), remove };
}

function rule(p: ProblemSink, r: unknown, at: string, namespace: string): HTTPRouteRule | undefined {
  if (!isObj(r)) {
    p.add(at, 'must be a map');
    return undefined;
  }
  const matches: HTTPRouteMatch[] = [];
  if (r.matches !== undefined) {
    if (!Array.isArray(r.matches)) p.add(`${at}.matches`, 'must be a list');
    else {
      r.matches.forEach((m: unknown, i: number) => {
        const mat = `${at}.matches[${i}]`;
        if (!isObj(m)) return p.add(mat, 'must be a map');
        const method = m.method;
        if (method !== undefined && (typeof method !== 'string' || !METHODS.has(method))) p.add(`${mat}.method`, `must be an HTTP method (GET, POST, …), got ${JSON.stringify(method)}`);
        matches.push({
          path: pathMatch(p, m.path, `${mat}.path`),
          headers: valueMatches(p, m.headers, `${mat}.headers`, 'header'),
          queryParams: valueMatches(p, m.queryParams, `${mat}.queryParams`, 'query'),
          ...(typeof method === 'string' && { method }),
        });
      });
    }
  }
  if (matches.length === 0) matches.push({ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [] });
  const backendRefs: HTTPBackendRef[] = [];
  if (!Array.isArray(r.backendRefs) || r.backendRefs.length === 0) p.add(`${at}.backendRefs`, 'must list at least one backend (a Service and port)');
  else {
    r.backendRefs.forEach((b: unknown, i: number) => {
      const bat = `${at}.backendRefs[${i}]`;
      if (!isObj(b)) return p.add(bat, 'must be a map');
      if ((b.kind ?? 'Service') !== 'Service' || !['', 'core', undefined].includes(b.group as string | undefined)) return p.add(`${bat}.kind`, 'only Services are backends here');
      if (typeof b.name !== 'string' || b.name === '') return p.add(`${bat}.name`, 'required');
      if (typeof b.port !== 'number' || !Number.isInteger(b.port) || b.port < 1 || b.port > 65535) return p.add(`${bat}.port`, `must be the Service's port (1-65535), got ${JSON.stringify(b.port)}`);
      const weight = b.weight ?? 1;
      if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 1_000_000) return p.add(`${bat}.weight`, `must be a whole number 0-1000000, got ${JSON.stringify(weight)}`);
      const ns = b.namespace ?? namespace;
      if (typeof ns !== 'string') return p.add(`${bat}.namespace`, 'must be a string');
      backendRefs.push({ name: b.name, namespace: ns, port: b.port, weight });
    });
    if (backendRefs.length > 0 && backendRefs.every((b) => b.weight === 0)) p.add(`${at}.backendRefs`, 'every weight is 0: nothing would be served');
  }
  const out: HTTPRouteRule = { matches, backendRefs };
  if (r.filters !== undefined) {
    if (!Array.isArray(r.filters)) p.add(`${at}.filters`, 'must be a list');
    else {
      r.filters.forEach((f: unknown, i: number) => {
        const fat = `${at}.filters[${i}]`;
        if (!isObj(f)) return p.add(fat, 'must be a map');
        if (f.type === 'RequestHeaderModifier') {
          const m = headerModifier(p, f.requestHeaderModifier, `${fat}.requestHeaderModifier`);
          if (m) out.requestHeaderModifier = m;
        } else if (f.type === 'ResponseHeaderModifier') {
          const m = headerModifier(p, f.responseHeaderModifier, `${fat}.responseHeaderModifier`);
          if (m) out.responseHeaderModifier = m;
        } else {
          p.add(`${fat}.type`, `${JSON.stringify(f.type)} is not served (RequestHeaderModifier and ResponseHeaderModifier are)`);
        }
      });
    }
  }
  if (r.timeouts !== undefined) {
    if (!isObj(r.timeouts)) p.add(`${at}.timeouts`, 'must be a map');
    else {
      for (const [field, key] of [['request', 'requestTimeoutMs'], ['backendRequest', 'backendRequestTimeoutMs']] as const) {
        const v = r.timeouts[field];
        if (v === undefined) continue;
        const ms = typeof v === 'string' ? parseDuration(v) : undefined;
        if (ms === undefined) p.add(`${at}.timeouts.${field}`, `must be a duration such as "10s" or "500ms", got ${JSON.stringify(v)}`);
        else if (ms > 0) out[key] = ms; // 0 disables the timeout
      }
      if (out.requestTimeoutMs !== undefined && out.backendRequestTimeoutMs !== undefined && out.backendRequestTimeoutMs > out.requestTimeoutMs) {
        p.add(`${at}.timeouts.backendRequest`, 'must not be longer than timeouts.request');
      }
    }
  }
  if (r.retry !== undefined) {
    if (!isObj(r.retry)) p.add(`${at}.retry`, 'must be a map');
    else {
      const attempts = r.retry.attempts ?? 1;
      const codes = r.retry.codes ?? [500, 502, 503, 504];
      if (typeof attempts !== 'number' || !Number.isInteger(attempts) || attempts < 0 || attempts > 10) p.add(`${at}.retry.attempts`, `must be 0-10, got ${JSON.stringify(attempts)}`);
      else if (!Array.isArray(codes) || codes.some((c) => typeof c !== 'number' || c < 400 || c > 599)) p.add(`${at}.retry.codes`, 'must be a list of HTTP status codes 400-599');
      else {
        let backoffMs: number | undefined;
        if (r.retry.backoff !== undefined) {
          backoffMs = typeof r.retry.backoff === 'string' ? parseDuration(r.retry.backoff) : undefined;
          if (backoffMs === undefined) p.add(`${at}.retry.backoff`, `must be a duration such as "100ms", got ${JSON.stringify(r.retry.backoff)}`);
        }
        out.retry = { attempts, codes: codes as number[], ...(backoffMs !== undefined && { backoffMs }) };
      }
    }
  }
  return out;
}

/** Parses an HTTPRoute document (its metadata already parsed). */
export function parseHTTPRoute(p: ProblemSink, doc: Obj, m: ObjectMeta): HTTPRoute {
  const route: HTTPRoute = { kind: 'HTTPRoute', meta: m, parentRefs: [], rules: [] };
  const spec = doc.spec;
  if (!isObj(spec)) {
    p.add('spec', 'required');
    return route;
  }
  if (!Array.isArray(spec.parentRefs) || spec.parentRefs.length === 0) p.add('spec.parentRefs', 'must name at least one Service (the mesh pattern: kind: Service)');
  else {
    spec.parentRefs.forEach((r: unknown, i: number) => {
      const at = `spec.parentRefs[${i}]`;
      if (!isObj(r)) return p.add(at, 'must be a map');
      if (r.kind !== 'Service' || !['', 'core', undefined].includes(r.group as string | undefined)) {
        return p.add(`${at}.kind`, `the mesh attaches routes to Services (kind: Service, group: ""); got ${JSON.stringify(r.kind ?? 'Gateway')}`);
      }
      if (typeof r.name !== 'string' || r.name === '') return p.add(`${at}.name`, 'required');
      if (r.port !== undefined && (typeof r.port !== 'number' || r.port < 1 || r.port > 65535)) return p.add(`${at}.port`, 'must be a port number');
      const ns = r.namespace ?? m.namespace;
      if (ns !== m.namespace) return p.add(`${at}.namespace`, 'a route attaches to Services of its own namespace here');
      route.parentRefs.push({ name: r.name, namespace: ns as string, ...(typeof r.port === 'number' && { port: r.port }) });
    });
  }
  if (!Array.isArray(spec.rules) || spec.rules.length === 0) {
    p.add('spec.rules', 'must list at least one rule');
    return route;
  }
  if (spec.rules.length > 16) p.add('spec.rules', 'at most 16 rules (as the Gateway API allows)');
  spec.rules.forEach((r: unknown, i: number) => {
    const out = rule(p, r, `spec.rules[${i}]`, m.namespace);
    if (out) route.rules.push(out);
  });
  return route;
}
