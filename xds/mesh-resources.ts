/**
 * Builders from the mesh model to Envoy resources: one plain HTTP service
 * becomes a cluster (EDS), its endpoints, a listener on the node proxy and
 * a route configuration. Pure: no I/O, no state. Routes beyond "all to the
 * service" (HTTPRoute matches, splits, retries) come with issue 5.
 */
import { isIPv4 } from 'node:net';
import { InvalidArgumentError } from '../mesh-agent/errors.js';
import type { SnapshotInput } from './snapshot.js';

/** A service as the xDS builders see it. */
export interface MeshService {
  namespace: string;
  name: string;
  /** the service port clients dial */
  port: number;
  /** the node proxy's listener port for this service */
  listenerPort: number;
  /** ready backends */
  endpoints: { ip: string; port: number }[];
}

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const ADS = { ads: {}, resource_api_version: 'V3' };

/** "namespace/name:port": the name of every resource of a service. */
export function serviceKey(s: Pick<MeshService, 'namespace' | 'name' | 'port'>): string {
  return `${s.namespace}/${s.name}:${s.port}`;
}

function checkPort(what: string, p: number): void {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new InvalidArgumentError(`${what} must be a port (1-65535), got ${p}`);
}

/** The four resources of one plain HTTP service. */
export function serviceResources(s: MeshService): Required<SnapshotInput> {
  checkPort(`service ${s.namespace}/${s.name} port`, s.port);
  checkPort(`service ${s.namespace}/${s.name} listenerPort`, s.listenerPort);
  for (const e of s.endpoints) {
    if (!isIPv4(e.ip)) throw new InvalidArgumentError(`service ${serviceKey(s)}: endpoint ${JSON.stringify(e.ip)} is not an IPv4 address`);
    checkPort(`service ${serviceKey(s)} endpoint port`, e.port);
  }
  const key = serviceKey(s);
  const host = `${s.name}.${s.namespace}.svc.cluster.local`;
  return {
    clusters: [{
      name: key,
      type: 'EDS',
      connect_timeout: { seconds: 1 },
      lb_policy: 'ROUND_ROBIN',
      eds_cluster_config: { eds_config: ADS, service_name: key },
    }],
    endpoints: [{
      cluster_name: key,
      endpoints: [{
        lb_endpoints: s.endpoints.map((e) => ({ endpoint: { address: { socket_address: { address: e.ip, port_value: e.port } } } })),
      }],
    }],
    listeners: [{
      name: key,
      address: { socket_address: { address: '127.0.0.1', port_value: s.listenerPort } },
      filter_chains: [{
        filters: [{
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': HCM,
            stat_prefix: key,
            rds: { route_config_name: key, config_source: ADS },
            http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
          },
        }],
      }],
    }],
    routes: [{
      name: key,
      virtual_hosts: [{
        name: key,
        domains: [host, `${s.name}.${s.namespace}`, s.name, `${host}:${s.port}`, `${s.name}:${s.port}`, '*'],
        routes: [{ match: { prefix: '/' }, route: { cluster: key } }],
      }],
    }],
  };
}

/** Every service's resources, merged into one snapshot input. */
export function meshResources(services: MeshService[]): Required<SnapshotInput> {
  const out: Required<SnapshotInput> = { clusters: [], endpoints: [], listeners: [], routes: [] };
  for (const s of services) {
    const r = serviceResources(s);
    out.clusters.push(...r.clusters);
    out.endpoints.push(...r.endpoints);
    out.listeners.push(...r.listeners);
    out.routes.push(...r.routes);
  }
  return out;
}
