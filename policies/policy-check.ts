/**
 * `mesh-agent policy check`: the verdict on one connection (and, through the
 * node proxy, one request), with the layer and the policy and rule that
 * decided it, from the cluster as the agent sees it. Pure: the cluster in,
 * the explanation out; the agent's admin API and the offline --manifests
 * mode both call it.
 *
 * The destination may be a Service (its ready backends are judged one by
 * one, on the target port each resolves to, as the kernel's load balancing
 * may pick any of them) or a pod. L3/L4 first (NetworkPolicy, enforced in the
 * kernel): egress of the source pod, ingress of the destination pod. When it
 * passes and AuthorizationPolicies apply to the destination, the request is
 * judged at L7 (the node proxy) with the caller's identity as the proxy sees
 * it: its source address, and the namespace and service account of the pod
 * behind it.
 */
import type { AuthorizationPolicy } from './authorization-policy.js';
import { policiesFor, principalOf } from './authorization-policy.js';
import { authorizeRequest, type AuthzVerdict } from './authz-verdict.js';
import type { NetworkPolicy } from './network-policy.js';
import { explainConnection, type ConnectionVerdict, type Endpoint, type PolicyPod } from './network-verdict.js';
import type { Namespace, Pod, Service } from '../mesh-agent/cluster/model.js';
import type { Labels } from '../mesh-agent/cluster/object-meta.js';
import { InvalidArgumentError } from '../mesh-agent/errors.js';

/** The cluster as the check needs it. */
export interface CheckCluster {
  namespaces: readonly { name: string; labels: Labels }[];
  pods: readonly (PolicyPod & { serviceAccount: string })[];
  services: readonly {
    namespace: string; name: string; selector?: Labels;
    ports: readonly { name?: string; port: number; targetPort: number | string; protocol: 'TCP' | 'UDP' | 'SCTP' }[];
  }[];
  networkPolicies: readonly NetworkPolicy[];
  authorizationPolicies: readonly AuthorizationPolicy[];
}

export interface CheckQuery {
  /** "namespace/pod", or an IPv4 address (a host process or a caller outside the mesh) */
  from: string;
  /** "namespace/name:port": a Service and its port, or a pod and its port */
  to: string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  /** the HTTP request, for the L7 verdict */
  method?: string;
  path?: string;
  /** the Host header; default the service's (or pod's) name */
  host?: string;
  headers?: Readonly<Record<string, string>>;
}

/** One backend's verdict. */
export interface BackendCheck {
  /** "namespace/pod" */
  pod: string;
  port: number;
  l4: ConnectionVerdict;
  /** undefined: no AuthorizationPolicy applies, or L4 denied, or no request was given */
  l7?: AuthzVerdict;
  /** AuthorizationPolicies apply to the backend but no --method/--path was given */
  l7Undecided?: string;
  allowed: boolean;
  /** kernel-l4 or proxy-l7: where the verdict was made (for an allowed one, the last layer that judged) */
  layer: 'kernel-l4' | 'proxy-l7';
  reason: string;
}

export type CheckResult =
  | { kind: 'problem'; field: 'from' | 'to' | 'port'; reason: string }
  | {
      kind: 'verdict';
      allowed: boolean;
      /** the layer of the deciding backend's verdict */
      layer: 'kernel-l4' | 'proxy-l7';
      /** the destination as resolved: "service ns/name:port" or "pod ns/name:port" */
      destination: string;
      backends: BackendCheck[];
      /** one line: the verdict, the layer, the policy and rule */
      reason: string;
    };

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function selects(selector: Labels, labels: Labels): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

export function checkPolicy(c: CheckCluster, q: CheckQuery): CheckResult {
  const protocol = q.protocol ?? 'TCP';
  // the source
  let from: Endpoint;
  let source: { ip: string; namespace?: string; principal?: string };
  if (IPV4.test(q.from)) {
    from = { kind: 'ip', ip: q.from };
    source = { ip: q.from };
  } else {
    const [ns, name, extra] = q.from.split('/');
    if (!ns || !name || extra !== undefined) return { kind: 'problem', field: 'from', reason: `must be namespace/pod or an IPv4 address, got ${JSON.stringify(q.from)}` };
    const pod = c.pods.find((p) => p.namespace === ns && p.name === name);
    if (!pod) return { kind: 'problem', field: 'from', reason: `no pod ${ns}/${name}` };
    from = { kind: 'pod', namespace: ns, name };
    source = { ip: pod.ip ?? '', namespace: ns, principal: principalOf(ns, pod.serviceAccount) };
  }
  // the destination: a service's backends, or a pod
  const m = /^([^/]+)\/([^/:]+):(\d+)$/.exec(q.to);
  if (!m) return { kind: 'problem', field: 'to', reason: `must be namespace/name:port (a service or a pod), got ${JSON.stringify(q.to)}` };
  const [, ns, name, portText] = m as unknown as [string, string, string, string];
  const port = Number(portText);
  if (port < 1 || port > 65535) return { kind: 'problem', field: 'port', reason: `must be 1-65535, got ${portText}` };
  const targets: { pod: PolicyPod & { serviceAccount: string }; port: number }[] = [];
  let destination: string;
  const svc = c.services.find((s) => s.namespace === ns && s.name === name);
  if (svc) {
    const sp = svc.ports.find((p) => p.port === port && p.protocol === protocol);
    if (!sp) return { kind: 'problem', field: 'port', reason: `service ${ns}/${name} has no ${protocol} port ${port} (it has ${svc.ports.map((p) => `${p.port}/${p.protocol}`).join(', ') || 'none'})` };
    destination = `service ${ns}/${name}:${port}`;
    const backends = svc.selector ? c.pods.filter((p) => p.namespace === ns && selects(svc.selector!, p.labels)) : [];
    for (const b of [...backends].sort((x, y) => (x.name < y.name ? -1 : 1))) {
      const tp = typeof sp.targetPort === 'number' ? sp.targetPort : b.ports.find((p) => p.name === sp.targetPort && p.protocol === protocol)?.containerPort;
      if (tp !== undefined) targets.push({ pod: b, port: tp });
    }
    if (targets.length === 0) return { kind: 'problem', field: 'to', reason: `service ${ns}/${name} has no backend serving port ${port}` };
  } else {
    const pod = c.pods.find((p) => p.namespace === ns && p.name === name);
    if (!pod) return { kind: 'problem', field: 'to', reason: `no service or pod ${ns}/${name}` };
    destination = `pod ${ns}/${name}:${port}`;
    targets.push({ pod, port });
  }
  const world = { namespaces: c.namespaces, pods: c.pods, policies: c.networkPolicies };
  const backends: BackendCheck[] = [];
  for (const t of targets) {
    const key = `${t.pod.namespace}/${t.pod.name}`;
    const l4 = explainConnection(world, { from, to: { kind: 'pod', namespace: t.pod.namespace, name: t.pod.name }, port: t.port, protocol });
    if (l4.kind === 'problem') return { kind: 'problem', field: l4.field, reason: l4.reason };
    if (!l4.allowed) {
      backends.push({ pod: key, port: t.port, l4, allowed: false, layer: 'kernel-l4', reason: `denied in the kernel (L4): ${l4.reason}` });
      continue;
    }
    const workload = { namespace: t.pod.namespace, labels: t.pod.labels, name: t.pod.name };
    const applying = policiesFor(c.authorizationPolicies, workload);
    if (applying.length === 0) {
      backends.push({ pod: key, port: t.port, l4, allowed: true, layer: 'kernel-l4', reason: `allowed in the kernel (L4): ${l4.reason}; no AuthorizationPolicy applies to ${key}` });
      continue;
    }
    if (q.method === undefined || q.path === undefined) {
      const names = applying.map((p) => `${p.meta.namespace}/${p.meta.name}`).join(', ');
      backends.push({
        pod: key, port: t.port, l4, allowed: true, layer: 'kernel-l4', l7Undecided: `AuthorizationPolicies apply to ${key} (${names}): give --method and --path for the HTTP verdict`,
        reason: `allowed in the kernel (L4): ${l4.reason}; the HTTP verdict needs --method and --path (${names} apply)`,
      });
      continue;
    }
    const l7 = authorizeRequest(c.authorizationPolicies, workload, {
      source, method: q.method, path: q.path, host: q.host ?? name, port: t.port, headers: q.headers ?? {},
    });
    backends.push({
      pod: key, port: t.port, l4, l7, allowed: l7.allowed, layer: 'proxy-l7',
      reason: `${l7.allowed ? 'allowed' : 'denied (403)'} in the node proxy (L7): ${l7.reason}${l7.audits.length > 0 ? `; audited by ${l7.audits.map((a) => `${a.policy} rule ${a.rule}`).join(', ')}` : ''}`,
    });
  }
  const decider = backends.find((b) => !b.allowed) ?? backends[0]!;
  const allowed = backends.every((b) => b.allowed);
  const some = !allowed && backends.some((b) => b.allowed) ? ` (for ${backends.filter((b) => !b.allowed).length} of ${backends.length} backends)` : '';
  return {
    kind: 'verdict', allowed, layer: decider.layer, destination, backends,
    reason: `${allowed ? 'ALLOWED' : 'DENIED'}${some}: ${backends.length > 1 ? `${decider.pod}: ` : ''}${decider.reason}`,
  };
}

/** The check's view of cluster objects (a store's, or manifests parsed offline). */
export function checkClusterOf(o: {
  namespaces: Iterable<Namespace>; pods: Iterable<Pod>; services: Iterable<Service>;
  networkPolicies: Iterable<NetworkPolicy>; authorizationPolicies: Iterable<AuthorizationPolicy>;
}): CheckCluster {
  return {
    namespaces: [...o.namespaces].map((n) => ({ name: n.meta.name, labels: n.meta.labels })),
    pods: [...o.pods].map((p) => ({
      namespace: p.meta.namespace, name: p.meta.name, labels: p.meta.labels, ...(p.ip !== undefined && { ip: p.ip }),
      ports: p.ports.map((x) => ({ ...(x.name !== undefined && { name: x.name }), containerPort: x.containerPort, protocol: x.protocol })), serviceAccount: p.serviceAccount,
    })),
    services: [...o.services].map((s) => ({
      namespace: s.meta.namespace, name: s.meta.name, ...(s.selector && { selector: s.selector }),
      ports: s.ports.map((p) => ({ ...(p.name !== undefined && { name: p.name }), port: p.port, targetPort: p.targetPort, protocol: p.protocol })),
    })),
    networkPolicies: [...o.networkPolicies],
    authorizationPolicies: [...o.authorizationPolicies],
  };
}

/** The query from the flags (the admin API takes the same names). */
export function queryFrom(get: (name: string) => string | undefined, headers: string[]): CheckQuery {
  const from = get('from');
  const to = get('to');
  if (!from) throw new InvalidArgumentError('--from is required (namespace/pod or an IPv4 address)');
  if (!to) throw new InvalidArgumentError('--to is required (namespace/service:port or namespace/pod:port)');
  const protocol = (get('protocol') ?? 'TCP').toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') throw new InvalidArgumentError(`--protocol must be TCP, UDP or SCTP, got ${JSON.stringify(get('protocol'))}`);
  const method = get('method');
  const path = get('path');
  if ((method === undefined) !== (path === undefined)) throw new InvalidArgumentError('--method and --path go together (the HTTP request to judge)');
  if (path !== undefined && !path.startsWith('/')) throw new InvalidArgumentError(`--path must start with "/", got ${JSON.stringify(path)}`);
  const hs: Record<string, string> = {};
  for (const h of headers) {
    const i = h.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`--header must be NAME=VALUE, got ${JSON.stringify(h)}`);
    hs[h.slice(0, i).toLowerCase()] = h.slice(i + 1);
  }
  const host = get('host');
  return { from, to, protocol, ...(method !== undefined && { method: method.toUpperCase() }), ...(path !== undefined && { path }), ...(host !== undefined && { host }), headers: hs };
}
