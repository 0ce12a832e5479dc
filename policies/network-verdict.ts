/**
 * The pure NetworkPolicy evaluator: given namespaces, pods and policies,
 * says whether one connection (from a pod or an address, to a pod, on a
 * port and protocol) is allowed, and explains each direction's verdict with
 * the policy, rule, peer and port that decided it.
 *
 * A connection passes when egress (at the source pod) and ingress (at the
 * destination pod) both allow it. In each direction, Kubernetes semantics:
 * a pod no policy selects for that direction is open; a selected pod lets
 * through only what some selecting policy's rule allows.
 *
 * Identity: a source or destination given as an address is not a pod, even
 * when a pod has that address: pod and namespace selectors never match it,
 * only ipBlocks do. sockmesh keys identity on what a pod cannot forge (its
 * cgroup), so a packet from elsewhere carrying a pod's address is treated
 * as that address, not as that pod. ipBlocks match pods' addresses too (as
 * in Kubernetes' conformance tests).
 */
import type { Labels } from '../mesh-agent/cluster/object-meta.js';
import { cidrContains, parseIp, type IpAddress } from './cidr.js';
import { selectorMatches } from './label-selector.js';
import type { NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule, NetworkProtocol, PolicyType } from './network-policy.js';

/** The label Kubernetes puts on every namespace, with its name as value; added here when missing. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

/** A namespace as the evaluator needs it. */
export interface PolicyNamespace {
  name: string;
  labels: Labels;
}

/** A container port of a pod, for named ports. */
export interface PolicyPodPort {
  name?: string;
  containerPort: number;
  protocol: NetworkProtocol;
}

/** A pod as the evaluator needs it. */
export interface PolicyPod {
  namespace: string;
  name: string;
  labels: Labels;
  /** its address, when known (for ipBlock peers) */
  ip?: string;
  ports: readonly PolicyPodPort[];
}

/** Everything a verdict depends on. */
export interface PolicyWorld {
  namespaces: readonly PolicyNamespace[];
  pods: readonly PolicyPod[];
  policies: readonly NetworkPolicy[];
}

/** An end of a connection: a pod by namespace and name, or an address (a host, or outside the cluster). */
export type Endpoint = { kind: 'pod'; namespace: string; name: string } | { kind: 'ip'; ip: string };

/** The connection to judge. */
export interface ConnectionQuery {
  from: Endpoint;
  to: Endpoint;
  /** the destination port */
  port: number;
  /** default TCP */
  protocol?: NetworkProtocol;
}

/** "namespace/name" of a policy or pod. */
export type ObjectKey = string;

/** The verdict of one direction, with the reason a user reads. */
export type DirectionVerdict =
  /** the end this direction is judged at is not a pod (egress from an address, ingress to an address): no policy applies */
  | { direction: PolicyType; outcome: 'not-applicable'; allowed: true; reason: string }
  /** no policy selects the pod for this direction */
  | { direction: PolicyType; outcome: 'open'; allowed: true; pod: ObjectKey; reason: string }
  /**
   * the first allowing rule, policies ordered by namespace/name and rules in
   * order; peerIndex / portIndex are null when the rule has no peers (every
   * peer) / no ports (every port)
   */
  | {
      direction: PolicyType; outcome: 'allowed'; allowed: true; pod: ObjectKey; selectedBy: readonly ObjectKey[];
      policy: ObjectKey; ruleIndex: number; peerIndex: number | null; portIndex: number | null; reason: string;
    }
  /** selected by some policies, allowed by none */
  | { direction: PolicyType; outcome: 'denied'; allowed: false; pod: ObjectKey; selectedBy: readonly ObjectKey[]; reason: string };

/** The verdict on a connection: allowed only when both directions allow it. */
export interface ConnectionVerdict {
  kind: 'verdict';
  allowed: boolean;
  egress: DirectionVerdict;
  ingress: DirectionVerdict;
  /** the denying direction's reason(s), or both directions' reasons when allowed */
  reason: string;
}

/** The query names something that does not exist or is malformed. */
export interface QueryProblem {
  kind: 'problem';
  field: 'from' | 'to' | 'port';
  reason: string;
}

/** "namespace/name" of a policy. */
export const policyKey = (p: NetworkPolicy): ObjectKey => `${p.meta.namespace}/${p.meta.name}`;

const byKey = (a: NetworkPolicy, b: NetworkPolicy): number =>
  a.meta.namespace < b.meta.namespace ? -1 : a.meta.namespace > b.meta.namespace ? 1 : a.meta.name < b.meta.name ? -1 : a.meta.name > b.meta.name ? 1 : 0;

/**
 * The policies that select `pod` for `direction` (same namespace, podSelector
 * matches, direction in policyTypes), ordered by namespace/name. Empty: the
 * pod is open in that direction ("no policy selects the pod").
 */
export function policiesSelecting(policies: readonly NetworkPolicy[], pod: { namespace: string; labels: Labels }, direction: PolicyType): NetworkPolicy[] {
  return policies
    .filter((p) => p.meta.namespace === pod.namespace && p.policyTypes.includes(direction) && selectorMatches(p.podSelector, pod.labels))
    .sort(byKey);
}

/** A resolved end: the pod (if any) and the address (if known). */
interface End {
  pod?: PolicyPod;
  address?: IpAddress;
  /** for messages: "pod shop/web" or "address 203.0.113.7" */
  text: string;
}

function namespaceLabels(world: PolicyWorld, name: string): Labels {
  const ns = world.namespaces.find((n) => n.name === name);
  return { ...ns?.labels, [NAMESPACE_NAME_LABEL]: name };
}

function peerMatches(world: PolicyWorld, policy: NetworkPolicy, peer: NetworkPolicyPeer, remote: End): boolean {
  if (peer.kind === 'ipBlock') {
    const a = remote.address;
    return a !== undefined && cidrContains(peer.ipBlock.block, a) && !peer.ipBlock.except.some((e) => cidrContains(e, a));
  }
  const pod = remote.pod;
  if (!pod) return false;
  const inNamespace = peer.namespaceSelector === undefined
    ? pod.namespace === policy.meta.namespace
    : selectorMatches(peer.namespaceSelector, namespaceLabels(world, pod.namespace));
  return inNamespace && selectorMatches(peer.podSelector, pod.labels);
}

function portMatches(port: NetworkPolicyPort, q: { port: number; protocol: NetworkProtocol }, destination: End): boolean {
  if (port.protocol !== q.protocol) return false;
  if (port.port === undefined) return true;
  if (typeof port.port === 'number') return port.endPort === undefined ? q.port === port.port : q.port >= port.port && q.port <= port.endPort;
  // a named port: the destination pod's container port of that name and protocol
  const named = port.port;
  return destination.pod?.ports.some((c) => c.name === named && c.protocol === port.protocol && c.containerPort === q.port) ?? false;
}

function firstMatch<T>(items: readonly T[], match: (x: T) => boolean): number | null | undefined {
  if (items.length === 0) return null; // an empty list matches everything
  const i = items.findIndex(match);
  return i < 0 ? undefined : i;
}

function judge(world: PolicyWorld, direction: PolicyType, local: End, remote: End, q: { port: number; protocol: NetworkProtocol }, destination: End): DirectionVerdict {
  const dir = direction.toLowerCase();
  if (!local.pod) {
    return { direction, outcome: 'not-applicable', allowed: true, reason: `the ${direction === 'Egress' ? 'source' : 'destination'} ${local.text} is not a pod: no ${dir} policy applies` };
  }
  const pod = `${local.pod.namespace}/${local.pod.name}`;
  const selecting = policiesSelecting(world.policies, local.pod, direction);
  if (selecting.length === 0) return { direction, outcome: 'open', allowed: true, pod, reason: `no policy selects ${pod} for ${dir}` };
  const selectedBy = selecting.map(policyKey);
  for (const policy of selecting) {
    const rules: readonly NetworkPolicyRule[] = direction === 'Ingress' ? policy.ingress : policy.egress;
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i]!;
      const peerIndex = firstMatch(rule.peers, (peer) => peerMatches(world, policy, peer, remote));
      if (peerIndex === undefined) continue;
      const portIndex = firstMatch(rule.ports, (port) => portMatches(port, q, destination));
      if (portIndex === undefined) continue;
      const key = policyKey(policy);
      const peerText = peerIndex === null ? 'any peer' : `peer ${peerIndex}`;
      const portText = portIndex === null ? 'any port' : `port ${portIndex}`;
      return {
        direction, outcome: 'allowed', allowed: true, pod, selectedBy, policy: key, ruleIndex: i, peerIndex, portIndex,
        reason: `allowed by ${key} ${dir}[${i}] (${peerText}, ${portText})`,
      };
    }
  }
  const what = direction === 'Ingress' ? `ingress from ${remote.text}` : `egress to ${remote.text}`;
  return {
    direction, outcome: 'denied', allowed: false, pod, selectedBy,
    reason: `denied: ${pod} is selected for ${dir} by ${selectedBy.join(', ')}; none allows ${what} on ${q.port}/${q.protocol}`,
  };
}

function resolve(world: PolicyWorld, e: Endpoint, field: 'from' | 'to'): End | QueryProblem {
  if (e.kind === 'ip') {
    const address = parseIp(e.ip);
    if (!address) return { kind: 'problem', field, reason: `${JSON.stringify(e.ip)} is not an IPv4 or IPv6 address` };
    return { address, text: `address ${e.ip}` };
  }
  const pod = world.pods.find((p) => p.namespace === e.namespace && p.name === e.name);
  if (!pod) return { kind: 'problem', field, reason: `no pod ${e.namespace}/${e.name}` };
  const address = pod.ip === undefined ? undefined : parseIp(pod.ip);
  return { pod, ...(address && { address }), text: `pod ${e.namespace}/${e.name}` };
}

/**
 * Judges one connection: egress at the source (when it is a pod), ingress at
 * the destination (when it is a pod). Returns the verdict with both
 * directions explained, or the problem with the query (an unknown pod, a
 * malformed address, a port outside 1-65535).
 */
export function explainConnection(world: PolicyWorld, query: ConnectionQuery): ConnectionVerdict | QueryProblem {
  if (!Number.isInteger(query.port) || query.port < 1 || query.port > 65535) return { kind: 'problem', field: 'port', reason: `must be a port number (1-65535), got ${query.port}` };
  const from = resolve(world, query.from, 'from');
  if ('kind' in from) return from;
  const to = resolve(world, query.to, 'to');
  if ('kind' in to) return to;
  const q = { port: query.port, protocol: query.protocol ?? 'TCP' };
  const egress = judge(world, 'Egress', from, to, q, to);
  const ingress = judge(world, 'Ingress', to, from, q, to);
  const denied = [egress, ingress].filter((v) => !v.allowed);
  return {
    kind: 'verdict', allowed: denied.length === 0, egress, ingress,
    reason: (denied.length === 0 ? [egress, ingress] : denied).map((v) => `${v.direction.toLowerCase()}: ${v.reason}`).join('; '),
  };
}
