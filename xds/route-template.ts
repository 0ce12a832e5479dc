/**
 * A route's path match as a low-cardinality template, for http.route:
 * "/api/*", "/health", "regex:^/v[0-9]+". One mapping for both proxies:
 * mesh-proxy puts it on its request records; Envoy gets it as a literal
 * custom tag on each route (l7-resources), which its spans carry.
 */
export function routeTemplate(match: Record<string, unknown>): string {
  if (typeof match.path === 'string') return match.path;
  if (typeof match.prefix === 'string') return match.prefix.endsWith('/') ? `${match.prefix}*` : `${match.prefix}/*`;
  if (typeof match.path_separated_prefix === 'string') return `${match.path_separated_prefix}/*`;
  const re = (match.safe_regex as Record<string, unknown> | undefined)?.regex;
  return typeof re === 'string' ? `regex:${re}` : '/*';
}
