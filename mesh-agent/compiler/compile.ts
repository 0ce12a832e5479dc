/**
 * The pure compiler: cluster state in, the datapath's desired contents out
 * (endpoints, cgroups, services with their backends), plus the per-pod and
 * per-service views status shows. No I/O; the reconciler writes the result.
 */
import { isIPv4 } from 'node:net';
import { type Labels, type Namespace, type Pod, type Service, keyOf, selects } from '../cluster/model.js';
import { type IdentityAllocator, identityKey } from './identities.js';
import { type VipAllocator, inServiceNetwork } from './vips.js';

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
  /** pod key → cgroup id, for pods the local runtime realised */
  cgroups: ReadonlyMap<string, bigint>;
  identities: IdentityAllocator;
  /** VIPs of services without a clusterIP (local mode) */
  vips: VipAllocator;
  /** backends per service from EndpointSlices, for services without a selector: "ns/name" → port name → backends */
  sliceBackends?: ReadonlyMap<string, ReadonlyMap<string, { ip: string; port: number }[]>>;
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
  /** sorted by ip, then port */
  backends: { ip: string; port: number }[];
  /** "ns/name:portName-or-number" */
  service: string;
}

export interface ServiceView {
  key: string;
  vip?: string;
  ports: { port: number; name?: string; backends: number }[];
  /** why it is not (fully) served */
  problems: string[];
}

export interface DesiredState {
  /** pod IPv4 → identity and enrollment */
  endpoints: Map<string, { identity: number; enrolled: boolean }>;
  /** cgroup id → identity and enrollment */
  cgroups: Map<bigint, { identity: number; enrolled: boolean }>;
  /** "vip:port" → frontend */
  services: Map<string, ServiceFrontend>;
  pods: PodView[];
  serviceViews: ServiceView[];
}

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
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

function targetPortOf(pod: Pod, target: number | string, protocol: string): number | undefined {
  if (typeof target === 'number') return target;
  return pod.ports.find((p) => p.name === target && p.protocol === protocol)?.containerPort;
}

export function compile(input: CompileInput): DesiredState {
  const out: DesiredState = { endpoints: new Map(), cgroups: new Map(), services: new Map(), pods: [], serviceViews: [] };
  const liveKeys = new Set<string>();
  const podsByNamespace = new Map<string, Pod[]>();
  for (const [key, pod] of input.pods) {
    const ns = input.namespaces.get(pod.meta.namespace);
    const e = enrollment(pod, ns, input.nodeName);
    const idKey = identityKey(pod.meta.namespace, pod.meta.labels);
    liveKeys.add(idKey);
    const identity = input.identities.idFor(idKey);
    out.pods.push({
      key, namespace: pod.meta.namespace, name: pod.meta.name, ...(pod.ip !== undefined && { ip: pod.ip }),
      ready: pod.ready, phase: pod.phase, enrolled: e.enrolled, reason: e.reason, identity, local: e.local,
    });
    if (pod.ip !== undefined && !pod.hostNetwork) out.endpoints.set(pod.ip, { identity, enrolled: e.enrolled });
    const cg = input.cgroups.get(key);
    if (cg !== undefined) out.cgroups.set(cg, { identity, enrolled: e.enrolled });
    let list = podsByNamespace.get(pod.meta.namespace);
    if (!list) podsByNamespace.set(pod.meta.namespace, (list = []));
    list.push(pod);
  }
  input.identities.retain(liveKeys);
  out.pods.sort((a, b) => (a.key < b.key ? -1 : 1));

  // VIPs: given ones first (they are the user's), then allocated ones, each service in key order
  const vips = new Map<string, string>(); // vip → service key
  const sorted = [...input.services.values()].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1));
  const chosen = new Map<string, string>(); // service key → vip
  const views = new Map<string, ServiceView>();
  for (const s of sorted) views.set(keyOf(s), { key: keyOf(s), ports: [], problems: [] });
  for (const s of sorted) {
    const key = keyOf(s);
    const view = views.get(key)!;
    if (s.clusterIP === 'None') {
      view.problems.push('headless (clusterIP: None): no VIP, nothing to balance');
      continue;
    }
    if (s.clusterIP === undefined) continue;
    if (!isIPv4(s.clusterIP)) {
      view.problems.push(`clusterIP ${s.clusterIP} is not IPv4`);
      continue;
    }
    if (input.mode === 'local' && !inServiceNetwork(s.clusterIP)) {
      view.problems.push(`clusterIP ${s.clusterIP} is outside the local service range 198.19.0.0/16`);
      continue;
    }
    const other = vips.get(s.clusterIP);
    if (other) {
      view.problems.push(`clusterIP ${s.clusterIP} is already service ${other}'s`);
      continue;
    }
    vips.set(s.clusterIP, key);
    chosen.set(key, s.clusterIP);
  }
  if (input.mode === 'local') {
    const given = new Set(vips.keys());
    const allocated = new Set<string>();
    for (const s of sorted) {
      if (s.clusterIP !== undefined) continue;
      const key = keyOf(s);
      const vip = input.vips.vipFor(key, given);
      allocated.add(key);
      chosen.set(key, vip);
    }
    input.vips.retain(allocated);
  }

  for (const s of sorted) {
    const key = keyOf(s);
    const view = views.get(key)!;
    const vip = chosen.get(key);
    if (vip === undefined) {
      if (s.clusterIP === undefined && input.mode === 'kubernetes') view.problems.push('no clusterIP yet');
      out.serviceViews.push(view);
      continue;
    }
    view.vip = vip;
    const selected = s.selector === undefined ? [] : (podsByNamespace.get(s.meta.namespace) ?? []).filter((p) => selects(s.selector as Labels, p.meta.labels));
    for (const sp of s.ports) {
      if (sp.protocol !== 'TCP') {
        view.problems.push(`port ${sp.port}/${sp.protocol}: only TCP is balanced in the kernel`);
        continue;
      }
      let backends: { ip: string; port: number }[];
      if (s.selector !== undefined) {
        backends = [];
        for (const p of selected) {
          if (!p.ready || p.ip === undefined) continue;
          const port = targetPortOf(p, sp.targetPort, sp.protocol);
          if (port !== undefined) backends.push({ ip: p.ip, port });
        }
      } else {
        backends = [...(input.sliceBackends?.get(key)?.get(sp.name ?? '') ?? [])];
      }
      backends.sort((a, b) => (a.ip === b.ip ? a.port - b.port : ipToInt(a.ip) - ipToInt(b.ip)));
      const unique = backends.filter((b, i) => i === 0 || b.ip !== backends[i - 1]!.ip || b.port !== backends[i - 1]!.port);
      out.services.set(`${vip}:${sp.port}`, {
        vip, port: sp.port, anyClient: input.mode === 'local', backends: unique, service: `${key}:${sp.name ?? sp.port}`,
      });
      view.ports.push({ port: sp.port, ...(sp.name !== undefined && { name: sp.name }), backends: unique.length });
    }
    out.serviceViews.push(view);
  }
  return out;
}
