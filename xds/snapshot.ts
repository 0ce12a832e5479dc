/**
 * An immutable, consistent set of xDS resources for one node: every
 * resource encoded once (strictly), a version per resource (a hash of its
 * bytes) and per type. Consistency means every reference resolves: an EDS
 * cluster has its endpoints, a listener's RDS name has its route
 * configuration, every cluster a route names exists.
 */
import { createHash } from 'node:crypto';
import { SockmeshError } from '../mesh-agent/errors.js';
import { packResource } from './strict-encode.js';

/** Envoy's type URLs of the four resource types sockmesh serves. */
export const TYPE_URL = Object.freeze({
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
});

export type ResourceKind = keyof typeof TYPE_URL;

/** Make-before-break push order: clusters, endpoints, listeners, routes. */
export const PUSH_ORDER: readonly ResourceKind[] = Object.freeze(['cluster', 'endpoint', 'listener', 'route']);

const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

/** A snapshot whose references do not resolve, or whose resources do not encode. */
export class XdsSnapshotError extends SockmeshError {
  readonly problems: string[];
  constructor(problems: string[]) {
    super('SOCKMESH_XDS_SNAPSHOT', `inconsistent xDS snapshot: ${problems.join('; ')}`, 'every referenced cluster, endpoint set and route configuration must be in the same snapshot');
    this.problems = problems;
  }
}

/** One encoded resource. */
export interface EncodedResource {
  name: string;
  /** the plain object it was built from (proto field names) */
  resource: Readonly<Record<string, unknown>>;
  /** google.protobuf.Any as sent on the wire */
  any: { type_url: string; value: Uint8Array };
  /** hash of the encoded bytes */
  version: string;
  /** hash of the plain object's JSON: a later snapshot reuses this encoding when it is unchanged */
  sourceHash: string;
}

export interface SnapshotInput {
  clusters?: Record<string, unknown>[];
  endpoints?: Record<string, unknown>[];
  listeners?: Record<string, unknown>[];
  routes?: Record<string, unknown>[];
}

type Obj = Record<string, unknown>;

function nameOf(kind: ResourceKind, r: Obj): string {
  const n = kind === 'endpoint' ? r.cluster_name : r.name;
  if (typeof n !== 'string' || n === '') throw new XdsSnapshotError([`a ${kind} resource has no ${kind === 'endpoint' ? 'cluster_name' : 'name'}`]);
  return n;
}

function hash(parts: (string | Uint8Array)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex').slice(0, 16);
}

/** Route configuration names a listener's HTTP connection managers (in filter chains or as an API listener, as proxyless gRPC uses) load over RDS. */
function rdsNames(listener: Obj): string[] {
  const hcms: (Obj | undefined)[] = [(listener.api_listener as Obj | undefined)?.api_listener as Obj | undefined];
  for (const chain of (listener.filter_chains as Obj[] | undefined) ?? []) {
    for (const f of (chain.filters as Obj[] | undefined) ?? []) hcms.push(f.typed_config as Obj | undefined);
  }
  return hcms.flatMap((tc) => {
    const name = tc?.['@type'] === HCM_TYPE ? (tc.rds as Obj | undefined)?.route_config_name : undefined;
    return typeof name === 'string' ? [name] : [];
  });
}

/** Cluster names a route configuration sends traffic to. */
function routeClusters(route: Obj): string[] {
  const out: string[] = [];
  for (const vh of (route.virtual_hosts as Obj[] | undefined) ?? []) {
    for (const r of (vh.routes as Obj[] | undefined) ?? []) {
      const action = r.route as Obj | undefined;
      if (!action) continue;
      if (typeof action.cluster === 'string') out.push(action.cluster);
      for (const wc of ((action.weighted_clusters as Obj | undefined)?.clusters as Obj[] | undefined) ?? []) {
        if (typeof wc.name === 'string') out.push(wc.name);
      }
    }
  }
  return out;
}

/** The name an EDS cluster asks endpoints for (service_name, else its own name); undefined when not EDS. */
function edsName(cluster: Obj): string | undefined {
  if (cluster.type !== 'EDS') return undefined;
  const sn = (cluster.eds_cluster_config as Obj | undefined)?.service_name;
  return typeof sn === 'string' && sn !== '' ? sn : (cluster.name as string);
}

export class Snapshot {
  /** per kind: name → resource, sorted by name */
  readonly resources: Readonly<Record<ResourceKind, ReadonlyMap<string, EncodedResource>>>;
  /** per kind: a version over every resource of that kind */
  readonly versions: Readonly<Record<ResourceKind, string>>;

  private constructor(resources: Record<ResourceKind, Map<string, EncodedResource>>) {
    this.resources = Object.freeze(resources);
    const versions = {} as Record<ResourceKind, string>;
    for (const kind of PUSH_ORDER) {
      versions[kind] = hash([...resources[kind].values()].flatMap((r) => [r.name, '\0', r.version, '\0']));
    }
    this.versions = Object.freeze(versions);
  }

  /**
   * Encodes and checks every resource; throws XdsSnapshotError listing every
   * problem. Resources identical to one of `previous` (same name, same
   * plain object) keep its encoding instead of being encoded again.
   */
  static create(input: SnapshotInput, previous?: Snapshot): Snapshot {
    const problems: string[] = [];
    const lists: Record<ResourceKind, Obj[]> = {
      cluster: input.clusters ?? [], endpoint: input.endpoints ?? [], listener: input.listeners ?? [], route: input.routes ?? [],
    };
    const resources = {} as Record<ResourceKind, Map<string, EncodedResource>>;
    for (const kind of PUSH_ORDER) {
      const byName = new Map<string, EncodedResource>();
      for (const r of lists[kind]) {
        const name = nameOf(kind, r);
        if (byName.has(name)) {
          problems.push(`two ${kind} resources are named "${name}"`);
          continue;
        }
        try {
          const sourceHash = hash([JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))]);
          const before = previous?.resources[kind].get(name);
          if (before?.sourceHash === sourceHash) {
            byName.set(name, before);
            continue;
          }
          const any = packResource(TYPE_URL[kind].slice('type.googleapis.com/'.length), r);
          byName.set(name, { name, resource: Object.freeze(structuredClone(r)), any, version: hash([any.value]), sourceHash });
        } catch (err) {
          problems.push((err as Error).message);
        }
      }
      resources[kind] = new Map([...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    for (const c of resources.cluster.values()) {
      const eds = edsName(c.resource as Obj);
      if (eds !== undefined && !resources.endpoint.has(eds)) problems.push(`cluster "${c.name}" needs endpoints "${eds}", which are missing`);
    }
    for (const l of resources.listener.values()) {
      for (const rn of rdsNames(l.resource as Obj)) {
        if (!resources.route.has(rn)) problems.push(`listener "${l.name}" needs route configuration "${rn}", which is missing`);
      }
    }
    for (const r of resources.route.values()) {
      for (const cn of routeClusters(r.resource as Obj)) {
        if (!resources.cluster.has(cn)) problems.push(`route configuration "${r.name}" sends to cluster "${cn}", which is missing`);
      }
    }
    if (problems.length > 0) throw new XdsSnapshotError(problems);
    return new Snapshot(resources);
  }

  /** The resources of a kind, by type URL (undefined for a type sockmesh does not serve). */
  byTypeUrl(typeUrl: string): ReadonlyMap<string, EncodedResource> | undefined {
    const kind = kindOf(typeUrl);
    return kind ? this.resources[kind] : undefined;
  }
}

/** The kind of a type URL, or undefined. */
export function kindOf(typeUrl: string): ResourceKind | undefined {
  return (Object.keys(TYPE_URL) as ResourceKind[]).find((k) => TYPE_URL[k] === typeUrl);
}
