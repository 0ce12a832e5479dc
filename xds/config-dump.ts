/**
 * A snapshot rendered as Envoy's admin config dump (envoy.admin.v3.ConfigDump,
 * proto field names, Anys with '@type'), so `mesh-agent xds dump` reads like
 * Envoy's /config_dump of the proxy it configures. Pure.
 */
import { type EncodedResource, type ResourceKind, type Snapshot, TYPE_URL } from './snapshot.js';

const ADMIN = 'type.googleapis.com/envoy.admin.v3.';

type Obj = Record<string, unknown>;

/** The resource as a google.protobuf.Any in JSON form. */
function any(kind: ResourceKind, r: EncodedResource): Obj {
  return { '@type': TYPE_URL[kind], ...r.resource };
}

function list(snap: Snapshot, kind: ResourceKind): EncodedResource[] {
  return [...snap.resources[kind].values()];
}

/** Which kinds a dump holds, in Envoy's order (clusters, endpoints, listeners, routes). */
export const DUMP_KINDS: readonly ResourceKind[] = Object.freeze(['cluster', 'endpoint', 'listener', 'route']);

/** The ConfigDump of one snapshot; `kinds` limits it to some resource kinds. */
export function configDump(snap: Snapshot, kinds: readonly ResourceKind[] = DUMP_KINDS): Obj {
  const configs: Obj[] = [];
  for (const kind of DUMP_KINDS) {
    if (!kinds.includes(kind)) continue;
    const version_info = snap.versions[kind];
    switch (kind) {
      case 'cluster':
        configs.push({
          '@type': `${ADMIN}ClustersConfigDump`, version_info,
          dynamic_active_clusters: list(snap, kind).map((r) => ({ version_info: r.version, cluster: any(kind, r) })),
        });
        break;
      case 'endpoint':
        configs.push({
          '@type': `${ADMIN}EndpointsConfigDump`,
          dynamic_endpoint_configs: list(snap, kind).map((r) => ({ version_info: r.version, endpoint_config: any(kind, r) })),
        });
        break;
      case 'listener':
        configs.push({
          '@type': `${ADMIN}ListenersConfigDump`, version_info,
          dynamic_listeners: list(snap, kind).map((r) => ({ name: r.name, active_state: { version_info: r.version, listener: any(kind, r) } })),
        });
        break;
      case 'route':
        configs.push({
          '@type': `${ADMIN}RoutesConfigDump`,
          dynamic_route_configs: list(snap, kind).map((r) => ({ version_info: r.version, route_config: any(kind, r) })),
        });
        break;
    }
  }
  return { configs };
}

/** The dump's names for resource kinds, as `--type` takes them. */
export const DUMP_TYPE_NAMES: Readonly<Record<string, ResourceKind>> = Object.freeze({
  clusters: 'cluster', endpoints: 'endpoint', listeners: 'listener', routes: 'route',
});
