/**
 * Kubernetes NetworkPolicy (networking.k8s.io/v1), unchanged: the types
 * sockmesh keeps and the parser that checks a document as the API server
 * would (plus refusing unknown fields, as `kubectl --validate=strict`).
 *
 * Semantics kept from Kubernetes (the evaluator in network-verdict.ts
 * implements them):
 * - a pod is open in a direction until a policy whose policyTypes include
 *   that direction selects it; then only what some such policy allows passes;
 * - a rule with no peers (`from`/`to` missing or empty) matches every peer;
 *   a rule with no ports matches every port and protocol;
 * - policyTypes missing or empty: Ingress, plus Egress when `egress` is present;
 * - `ingress: []`, or no `ingress` with Ingress in policyTypes, allows no
 *   ingress (the same for egress).
 * IPv6 ipBlocks are valid and kept, marked `ipv6: true`: sockmesh's kernel
 * enforcement is IPv4 only, so the agent should warn about them.
 */
import type { ProblemSink } from '../mesh-agent/cluster/problem-sink.js';
import type { ObjectMeta } from '../mesh-agent/cluster/object-meta.js';
import { cidrCovers, parseCidr, type Cidr } from './cidr.js';
import { isObj, refuseUnknownFields, type Obj } from './known-fields.js';
import { EVERYTHING, parseLabelSelector, type LabelSelector } from './label-selector.js';

/** A direction of traffic, as spec.policyTypes names it. */
export type PolicyType = 'Ingress' | 'Egress';

/** An L4 protocol a NetworkPolicy port can name. */
export type NetworkProtocol = 'TCP' | 'UDP' | 'SCTP';

/** spec.ingress[].from[].ipBlock or spec.egress[].to[].ipBlock. */
export interface IPBlock {
  /** as written */
  cidr: string;
  /** parsed and normalised (host bits cleared) */
  block: Cidr;
  /** the except entries, parsed, in order; each lies strictly inside `block` */
  except: readonly Cidr[];
  /** an IPv6 block: valid Kubernetes, but not enforced by sockmesh's kernel programs */
  ipv6: boolean;
}

/**
 * One entry of `from` or `to`.
 * - `pods`: pods matching `podSelector` (EVERYTHING when the field is absent)
 *   in the namespaces matching `namespaceSelector`, or, when that is
 *   undefined, in the policy's own namespace;
 * - `ipBlock`: addresses in `cidr` and in none of `except`.
 */
export type NetworkPolicyPeer =
  | { kind: 'pods'; podSelector: LabelSelector; namespaceSelector?: LabelSelector }
  | { kind: 'ipBlock'; ipBlock: IPBlock };

/**
 * One entry of `ports`. No `port`: every port of `protocol`. A number with
 * `endPort`: the range port..endPort. A string: a named container port of
 * the destination pod, with this protocol.
 */
export interface NetworkPolicyPort {
  protocol: NetworkProtocol;
  port?: number | string;
  endPort?: number;
}

/** One ingress or egress rule. */
export interface NetworkPolicyRule {
  /** `from` (ingress) or `to` (egress); empty: every peer */
  peers: readonly NetworkPolicyPeer[];
  /** empty: every port and protocol */
  ports: readonly NetworkPolicyPort[];
}

/** A parsed NetworkPolicy. */
export interface NetworkPolicy {
  kind: 'NetworkPolicy';
  meta: ObjectMeta;
  /** the pods of meta.namespace this policy applies to */
  podSelector: LabelSelector;
  /** explicit, or the default: Ingress, plus Egress when spec.egress is present */
  policyTypes: readonly PolicyType[];
  /** spec.ingress; only consulted when policyTypes include Ingress */
  ingress: readonly NetworkPolicyRule[];
  /** spec.egress; only consulted when policyTypes include Egress */
  egress: readonly NetworkPolicyRule[];
}

/** The Kubernetes IANA_SVC_NAME rule for named ports. */
export function isPortName(s: string): boolean {
  return s.length >= 1 && s.length <= 15 && /^[-a-z0-9]+$/.test(s) && /[a-z]/.test(s) && !s.includes('--') && !s.startsWith('-') && !s.endsWith('-');
}

const PROTOCOLS: readonly NetworkProtocol[] = ['TCP', 'UDP', 'SCTP'];
const PORT_NAME_RULE = 'a port name: 15 characters at most, lowercase letters, digits and single \'-\' inside, at least one letter';
const absent = (v: unknown): boolean => v === undefined || v === null;

function list(p: ProblemSink, v: unknown, at: string, of: string): unknown[] {
  if (absent(v)) return [];
  if (!Array.isArray(v)) {
    p.add(at, `must be a list of ${of}, got ${JSON.stringify(v)}`);
    return [];
  }
  return v;
}

function ipBlock(p: ProblemSink, v: unknown, at: string): IPBlock | undefined {
  if (!isObj(v)) {
    p.add(at, `must be a map with cidr and optional except, got ${JSON.stringify(v)}`);
    return undefined;
  }
  refuseUnknownFields(p, v, at, 'an ipBlock', ['cidr', 'except']);
  if (typeof v.cidr !== 'string') {
    p.add(`${at}.cidr`, absent(v.cidr) ? 'required (e.g. "10.0.0.0/8")' : `must be a CIDR string such as "10.0.0.0/8", got ${JSON.stringify(v.cidr)}`);
    return undefined;
  }
  const block = parseCidr(v.cidr);
  if (typeof block === 'string') {
    p.add(`${at}.cidr`, block);
    return undefined;
  }
  const except: Cidr[] = [];
  list(p, v.except, `${at}.except`, 'CIDR strings').forEach((x, i) => {
    const eat = `${at}.except[${i}]`;
    if (typeof x !== 'string') return p.add(eat, `must be a CIDR string, got ${JSON.stringify(x)}`);
    const e = parseCidr(x);
    if (typeof e === 'string') return p.add(eat, e);
    // Kubernetes: "must be a strict subset of cidr"
    if (!cidrCovers(block, e) || e.prefix === block.prefix) return p.add(eat, `must lie strictly inside cidr ${block.text} (same family, a longer prefix), got ${e.text}`);
    except.push(e);
  });
  return { cidr: v.cidr, block, except, ipv6: block.family === 6 };
}

function peer(p: ProblemSink, v: unknown, at: string): NetworkPolicyPeer | undefined {
  if (!isObj(v)) {
    p.add(at, `must be a map with podSelector and/or namespaceSelector, or ipBlock, got ${JSON.stringify(v)}`);
    return undefined;
  }
  refuseUnknownFields(p, v, at, 'a peer', ['podSelector', 'namespaceSelector', 'ipBlock']);
  const hasPods = !absent(v.podSelector);
  const hasNs = !absent(v.namespaceSelector);
  if (!absent(v.ipBlock)) {
    if (hasPods || hasNs) {
      p.add(at, `ipBlock cannot be combined with ${hasPods ? 'podSelector' : 'namespaceSelector'} in one peer; make them two entries (either one then allows)`);
      return undefined;
    }
    const b = ipBlock(p, v.ipBlock, `${at}.ipBlock`);
    return b && { kind: 'ipBlock', ipBlock: b };
  }
  if (!hasPods && !hasNs) {
    p.add(at, 'an empty peer selects nothing: give podSelector, namespaceSelector (both: pods matching in namespaces matching) or ipBlock; to allow every peer leave out the whole from/to list');
    return undefined;
  }
  const podSelector = hasPods ? parseLabelSelector(p, v.podSelector, `${at}.podSelector`) : EVERYTHING;
  return hasNs ? { kind: 'pods', podSelector, namespaceSelector: parseLabelSelector(p, v.namespaceSelector, `${at}.namespaceSelector`) } : { kind: 'pods', podSelector };
}

function policyPort(p: ProblemSink, v: unknown, at: string): NetworkPolicyPort | undefined {
  if (!isObj(v)) {
    p.add(at, `must be a map with protocol, port and endPort, got ${JSON.stringify(v)}`);
    return undefined;
  }
  refuseUnknownFields(p, v, at, 'a port', ['protocol', 'port', 'endPort']);
  let protocol: NetworkProtocol = 'TCP';
  if (!absent(v.protocol)) {
    if (typeof v.protocol === 'string' && PROTOCOLS.includes(v.protocol as NetworkProtocol)) protocol = v.protocol as NetworkProtocol;
    else {
      p.add(`${at}.protocol`, `must be TCP, UDP or SCTP, got ${JSON.stringify(v.protocol)}`);
      return undefined;
    }
  }
  const out: NetworkPolicyPort = { protocol };
  if (!absent(v.port)) {
    if (typeof v.port === 'number') {
      if (!Number.isInteger(v.port) || v.port < 1 || v.port > 65535) {
        p.add(`${at}.port`, `must be a port number (1-65535) or a port name, got ${JSON.stringify(v.port)}`);
        return undefined;
      }
    } else if (typeof v.port !== 'string' || !isPortName(v.port)) {
      p.add(`${at}.port`, `must be a port number (1-65535) or ${PORT_NAME_RULE}, got ${JSON.stringify(v.port)}`);
      return undefined;
    }
    out.port = v.port;
  }
  if (!absent(v.endPort)) {
    const e = v.endPort;
    if (typeof e !== 'number' || !Number.isInteger(e) || e < 1 || e > 65535) {
      p.add(`${at}.endPort`, `must be a port number (1-65535), got ${JSON.stringify(e)}`);
      return undefined;
    }
    if (typeof out.port !== 'number') {
      p.add(`${at}.endPort`, out.port === undefined ? 'needs a numeric port: the range is port..endPort' : `needs a numeric port, not the named port ${JSON.stringify(out.port)}: the range is port..endPort`);
      return undefined;
    }
    if (e < out.port) {
      p.add(`${at}.endPort`, `must be at least port (${out.port}), got ${e}`);
      return undefined;
    }
    out.endPort = e;
  }
  return out;
}

function rules(p: ProblemSink, v: unknown, at: string, peersField: 'from' | 'to'): NetworkPolicyRule[] {
  const out: NetworkPolicyRule[] = [];
  list(p, v, at, `rules ({${peersField}, ports})`).forEach((r, i) => {
    const rat = `${at}[${i}]`;
    if (!isObj(r)) return p.add(rat, `must be a map with ${peersField} and ports (both optional; {} allows everything), got ${JSON.stringify(r)}`);
    refuseUnknownFields(p, r, rat, `${at.endsWith('ingress') ? 'an ingress' : 'an egress'} rule`, [peersField, 'ports']);
    const peers = list(p, r[peersField], `${rat}.${peersField}`, 'peers').map((x, j) => peer(p, x, `${rat}.${peersField}[${j}]`));
    const ports = list(p, r.ports, `${rat}.ports`, 'ports').map((x, j) => policyPort(p, x, `${rat}.ports[${j}]`));
    out.push({ peers: peers.filter((x): x is NetworkPolicyPeer => x !== undefined), ports: ports.filter((x): x is NetworkPolicyPort => x !== undefined) });
  });
  return out;
}

function policyTypes(p: ProblemSink, spec: Obj): PolicyType[] {
  // Kubernetes defaults an empty list too
  if (absent(spec.policyTypes) || (Array.isArray(spec.policyTypes) && spec.policyTypes.length === 0)) return absent(spec.egress) ? ['Ingress'] : ['Ingress', 'Egress'];
  const out: PolicyType[] = [];
  list(p, spec.policyTypes, 'spec.policyTypes', '"Ingress" and/or "Egress"').forEach((t, i) => {
    if (t !== 'Ingress' && t !== 'Egress') return p.add(`spec.policyTypes[${i}]`, `must be Ingress or Egress, got ${JSON.stringify(t)}`);
    if (!out.includes(t)) out.push(t);
  });
  return out;
}

/**
 * Parses a NetworkPolicy document whose metadata is already parsed into
 * `meta`. Problems go to `p` with their field path; a document with any
 * problem must be refused whole (the returned object then holds only what
 * parsed and must not be enforced).
 */
export function parseNetworkPolicy(p: ProblemSink, doc: Obj, meta: ObjectMeta): NetworkPolicy {
  const out: NetworkPolicy = { kind: 'NetworkPolicy', meta, podSelector: EVERYTHING, policyTypes: ['Ingress'], ingress: [], egress: [] };
  const spec = doc.spec;
  if (!isObj(spec)) {
    p.add('spec', absent(spec) ? 'required (at least spec.podSelector; {} selects every pod of the namespace)' : `must be a map, got ${JSON.stringify(spec)}`);
    return out;
  }
  refuseUnknownFields(p, spec, 'spec', 'a NetworkPolicy spec', ['podSelector', 'policyTypes', 'ingress', 'egress']);
  if (spec.podSelector === undefined) p.add('spec.podSelector', 'required: the pods this policy applies to ({} selects every pod of the namespace)');
  else out.podSelector = parseLabelSelector(p, spec.podSelector, 'spec.podSelector');
  out.policyTypes = policyTypes(p, spec);
  out.ingress = rules(p, spec.ingress, 'spec.ingress', 'from');
  out.egress = rules(p, spec.egress, 'spec.egress', 'to');
  return out;
}
