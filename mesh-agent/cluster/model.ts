/**
 * The cluster as sockmesh sees it: the few fields of Kubernetes' v1
 * Namespace, Pod and Service (and discovery.k8s.io/v1 EndpointSlice) that
 * enrollment, identity and service load balancing need. Sources (a manifest
 * directory, the Kubernetes API) fill a ClusterStore with these; everything
 * downstream reads only these types.
 */

import type { AuthorizationPolicy } from '../../policies/authorization-policy.js';
import type { NetworkPolicy } from '../../policies/network-policy.js';
import type { Labels, ObjectMeta } from './object-meta.js';

export type { Labels, ObjectMeta } from './object-meta.js';
export type { AuthorizationPolicy } from '../../policies/authorization-policy.js';
export type { NetworkPolicy } from '../../policies/network-policy.js';

export interface Namespace {
  kind: 'Namespace';
  meta: ObjectMeta;
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol: 'TCP' | 'UDP' | 'SCTP';
}

export interface Pod {
  kind: 'Pod';
  meta: ObjectMeta;
  /** spec.nodeName; undefined: not scheduled (manifests: this node) */
  nodeName?: string;
  hostNetwork: boolean;
  /** the container's command + args, as the local runtime runs them */
  command: string[];
  /** spec.restartPolicy (default Always) */
  restartPolicy: 'Always' | 'OnFailure' | 'Never';
  ports: ContainerPort[];
  /** status.podIP, once known */
  ip?: string;
  /** the Ready condition */
  ready: boolean;
  /** spec.serviceAccountName (default "default"): its identity in AuthorizationPolicy principals */
  serviceAccount: string;
  /** the runtime's or the API's word on why it is not ready */
  phase: string;
}

export interface ServicePort {
  name?: string;
  port: number;
  /** a number, or the name of a container port */
  targetPort: number | string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
}

export interface Service {
  kind: 'Service';
  meta: ObjectMeta;
  /** spec.clusterIP; undefined: to be allocated (local mode); "None": headless */
  clusterIP?: string;
  ports: ServicePort[];
  /** undefined: no selector (endpoints managed elsewhere) */
  selector?: Labels;
}

/** discovery.k8s.io/v1 EndpointSlice, for services whose endpoints the API computes. */
export interface EndpointSlice {
  kind: 'EndpointSlice';
  meta: ObjectMeta;
  /** the kubernetes.io/service-name label */
  serviceName: string;
  ports: { name?: string; port: number; protocol: 'TCP' | 'UDP' | 'SCTP' }[];
  endpoints: { addresses: string[]; ready: boolean; nodeName?: string; podName?: string }[];
}

/** A Gateway API match: exact, prefix or regular expression. */
export interface HTTPPathMatch {
  type: 'Exact' | 'PathPrefix' | 'RegularExpression';
  value: string;
}

export interface HTTPValueMatch {
  type: 'Exact' | 'RegularExpression';
  name: string;
  value: string;
}

export interface HTTPRouteMatch {
  path: HTTPPathMatch;
  headers: HTTPValueMatch[];
  queryParams: HTTPValueMatch[];
  method?: string;
}

export interface HTTPHeaderModifier {
  set: { name: string; value: string }[];
  add: { name: string; value: string }[];
  remove: string[];
}

export interface HTTPBackendRef {
  name: string;
  namespace: string;
  port: number;
  weight: number;
}

export interface HTTPRouteRule {
  /** at least one; a rule without matches matches every request (PathPrefix /) */
  matches: HTTPRouteMatch[];
  backendRefs: HTTPBackendRef[];
  requestHeaderModifier?: HTTPHeaderModifier;
  responseHeaderModifier?: HTTPHeaderModifier;
  /** timeouts.request: the whole request, retries included */
  requestTimeoutMs?: number;
  /** timeouts.backendRequest: each try */
  backendRequestTimeoutMs?: number;
  /** retry (experimental in the Gateway API): attempts after the first, on these status codes */
  retry?: { attempts: number; codes: number[]; backoffMs?: number };
}

/** gateway.networking.k8s.io/v1 HTTPRoute attached to Services (the GAMMA mesh pattern). */
export interface HTTPRoute {
  kind: 'HTTPRoute';
  meta: ObjectMeta;
  parentRefs: { name: string; namespace: string; port?: number }[];
  rules: HTTPRouteRule[];
}

export type ClusterObject = Namespace | Pod | Service | EndpointSlice | HTTPRoute | NetworkPolicy | AuthorizationPolicy;
export type Kind = ClusterObject['kind'];

/** "namespace/name", or "name" for a namespace. */
export function keyOf(o: { meta: Pick<ObjectMeta, 'namespace' | 'name'> }): string {
  return o.meta.namespace ? `${o.meta.namespace}/${o.meta.name}` : o.meta.name;
}

/** Whether every selector label is set to its value on labels (an empty selector selects all). */
export function selects(selector: Labels, labels: Labels): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}
