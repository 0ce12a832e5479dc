/**
 * The RBAC filters of the node proxy's listeners: for each L7 service port,
 * the AuthorizationPolicies of its ready backends (their pods' namespace
 * and labels, the port each serves on) compiled by policies/rbac-compile.ts,
 * callers known by their pods' addresses and service accounts. Pure.
 */
import type { AuthorizationPolicy, Labels } from '../cluster/model.js';
import { type KnownPod, type RbacBackend, type RbacOutput, compileRbac } from '../../policies/rbac-compile.js';

/** A pod with an address, as the policies see it. */
export interface AddressedPod {
  ip: string;
  namespace: string;
  name: string;
  labels: Labels;
  serviceAccount: string;
}

export interface L7AuthorizationInput {
  /** the L7 service ports: "ns/name" and port */
  ports: readonly { service: string; port: number }[];
  policies: readonly AuthorizationPolicy[];
  /** every pod with an address (the first of an address counts) */
  pods: readonly AddressedPod[];
  /** a service port's ready backends */
  backends: (service: string, port: number) => readonly { ip: string; port: number }[] | undefined;
}

/** The compiled filters and notes per service port ("ns/name:port") that has filters or notes. */
export function l7Authorization(input: L7AuthorizationInput): Map<string, RbacOutput> {
  const out = new Map<string, RbacOutput>();
  if (input.policies.length === 0) return out;
  const byIp = new Map<string, AddressedPod>();
  for (const p of input.pods) if (!byIp.has(p.ip)) byIp.set(p.ip, p);
  const known: KnownPod[] = [...byIp.values()].map((p) => ({ ip: p.ip, namespace: p.namespace, serviceAccount: p.serviceAccount }));
  for (const lp of input.ports) {
    const unknown: string[] = [];
    const backends: RbacBackend[] = (input.backends(lp.service, lp.port) ?? []).map((b) => {
      const pod = byIp.get(b.ip);
      if (pod) return { namespace: pod.namespace, name: pod.name, labels: pod.labels, port: b.port };
      unknown.push(b.ip);
      // not a pod the agent knows: only the namespace-wide policies of the service's namespace apply
      return { namespace: lp.service.slice(0, lp.service.indexOf('/')), name: b.ip, labels: {}, port: b.port };
    });
    const r = compileRbac({ backends, policies: input.policies, pods: known });
    if (unknown.length > 0 && r.filters.length > 0) r.notes.push(`backends ${unknown.join(', ')} are no known pods: only the namespace-wide policies apply to them`);
    if (r.filters.length > 0 || r.notes.length > 0) out.set(`${lp.service}:${lp.port}`, r);
  }
  return out;
}
