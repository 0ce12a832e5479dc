/**
 * The compiler: cluster state in, the datapath's desired contents out
 * (endpoints, cgroups, services with their backends), plus the per-pod and
 * per-service views status shows. No I/O; the reconciler writes the result.
 * `compile` does it all at once; the IncrementalCompiler (incremental-
 * compiler.ts) keeps the result and redoes only what a change touches.
 */
import type { EndpointSlice, HTTPRoute, Namespace, Pod, Service } from '../cluster/model.js';
import type { IdentityAllocator } from './identities.js';
import { IncrementalCompiler } from './incremental-compiler.js';
import type { VipAllocator } from './vips.js';

/** The annotation that enrolls a namespace ("true") or takes a pod out ("false"). */
export const ENROLL_ANNOTATION = 'sockmesh.io/enabled';


export interface CompileInput {
  namespaces: ReadonlyMap<string, Namespace>;
  pods: ReadonlyMap<string, Pod>;
  services: ReadonlyMap<string, Service>;
  /** this node's name: pods scheduled elsewhere are not enrolled here */
  nodeName: string;
  /**
   * 'local': the local runtime, no kube-proxy: services get VIPs from
   * 198.19.0.0/16 and are translated for every client. 'kubernetes': the
   * cluster's clusterIPs, translated for enrolled clients (kube-proxy serves
   * the rest).
   */
  mode: 'local' | 'kubernetes';
  /** pod key → cgroup id, for pods whose cgroup is known (asked only for pods being compiled) */
  cgroups: Pick<ReadonlyMap<string, bigint>, 'get'>;
  identities: IdentityAllocator;
  /** VIPs of services without a clusterIP (local mode) */
  vips: VipAllocator;
  /** EndpointSlices: the backends of every service in kubernetes mode (of services without a selector in local mode) */
  endpointSlices?: ReadonlyMap<string, EndpointSlice>;
  /** HTTPRoutes: a service one attaches to is served at L7 */
  httpRoutes?: ReadonlyMap<string, HTTPRoute>;
}

export interface PodView {
  key: string;
  namespace: string;
  name: string;
  ip?: string;
  ready: boolean;
  phase: string;
  enrolled: boolean;
  /** why enrolled or not, in words */
  reason: string;
  identity: number;
  local: boolean;
}

export interface ServiceFrontend {
  vip: string;
  port: number;
  /** translate for clients that are not enrolled too */
  anyClient: boolean;
  /** sorted by ip, then port; for an L7 port, the node proxy's listener alone */
  backends: { ip: string; port: number }[];
  /** "ns/name:portName-or-number" */
  service: string;
  /** set when this port is served by the node proxy: its listener port, and the service's own backends */
  l7?: { listenerPort: number; backends: { ip: string; port: number }[] };
}

/** Annotation that sends every port of a service through the node proxy. */
export const L7_ANNOTATION = 'sockmesh.io/l7';

export interface ServiceView {
  key: string;
  vip?: string;
  /** l7: the node proxy's listener port when the port is served at L7 */
  ports: { port: number; name?: string; backends: number; l7?: number }[];
  /** why it is not (fully) served */
  problems: string[];
}

export interface DesiredState {
  /** pod IPv4 → identity and enrollment */
  endpoints: ReadonlyMap<string, { identity: number; enrolled: boolean }>;
  /** cgroup id → identity and enrollment */
  cgroups: ReadonlyMap<bigint, { identity: number; enrolled: boolean }>;
  /** "vip:port" → frontend */
  services: ReadonlyMap<string, ServiceFrontend>;
  /** sorted by key */
  pods: PodView[];
  /** sorted by key */
  serviceViews: ServiceView[];
}

/** The keys of a DesiredState whose entries may have changed (or gone) in one update. */
export interface DesiredDelta {
  endpoints: Set<string>;
  cgroups: Set<bigint>;
  services: Set<string>;
}

/** Why a pod is or is not enrolled. */
export function enrollment(pod: Pod, ns: Namespace | undefined, nodeName: string): { enrolled: boolean; local: boolean; reason: string } {
  const local = pod.nodeName === undefined || pod.nodeName === nodeName;
  if (!local) return { enrolled: false, local, reason: `not on this node (on ${pod.nodeName})` };
  if (pod.hostNetwork) return { enrolled: false, local, reason: 'host network' };
  if (!ns) return { enrolled: false, local, reason: `namespace ${pod.meta.namespace} does not exist` };
  if (ns.meta.annotations[ENROLL_ANNOTATION] !== 'true') {
    return { enrolled: false, local, reason: `namespace ${ns.meta.name} is not annotated ${ENROLL_ANNOTATION}: "true"` };
  }
  if (pod.meta.annotations[ENROLL_ANNOTATION] === 'false') return { enrolled: false, local, reason: `pod opted out (${ENROLL_ANNOTATION}: "false")` };
  return { enrolled: true, local, reason: `namespace ${ns.meta.name} is enrolled` };
}

export function targetPortOf(pod: Pod, target: number | string, protocol: string): number | undefined {
  if (typeof target === 'number') return target;
  return pod.ports.find((p) => p.name === target && p.protocol === protocol)?.containerPort;
}

/** Pure: the whole desired state of a cluster (an IncrementalCompiler run once). */
export function compile(input: CompileInput): DesiredState {
  const c = new IncrementalCompiler({ nodeName: input.nodeName, mode: input.mode, identities: input.identities, vips: input.vips });
  c.full(input);
  return c.state();
}
