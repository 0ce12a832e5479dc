/**
 * Kubernetes-shaped YAML (multi-document files) into the cluster model:
 * v1 Namespace, Pod and Service, Gateway API HTTPRoute, NetworkPolicy and
 * Istio's AuthorizationPolicy. Every problem is reported with the file,
 * the document (1-based, and its kind and name when known), the field path
 * and the reason; a file with any problem contributes nothing. Kinds sockmesh
 * does not read are listed as ignored, not refused. Pure: text in, objects out.
 */
import { isIPv4 } from 'node:net';
import { parseAllDocuments } from 'yaml';
import { parseAuthorizationPolicy } from '../../policies/authorization-policy.js';
import { LABEL_KEY, LABEL_VALUE } from '../../policies/label-selector.js';
import { parseNetworkPolicy } from '../../policies/network-policy.js';
import { parseHTTPRoute } from './httproute-parser.js';
import type { ClusterObject, ContainerPort, Labels, Namespace, ObjectMeta, Pod, Service, ServicePort } from './model.js';

export interface ParsedManifests {
  objects: ClusterObject[];
  /** "file: document N (Kind ns/name): field: reason" */
  errors: string[];
  /** "file: document N: apiVersion/kind" of documents no part of sockmesh reads */
  ignored: string[];
}

type Obj = Record<string, unknown>;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/;
const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);

/** Collects the problems of one document. */
class Problems {
  readonly list: string[] = [];
  add(field: string, reason: string): void {
    this.list.push(`${field}: ${reason}`);
  }
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(p: Problems, o: Obj, key: string, path: string, opts: { required?: boolean } = {}): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (opts.required) p.add(`${path}${key}`, 'required');
    return undefined;
  }
  if (typeof v !== 'string') {
    p.add(`${path}${key}`, `must be a string, got ${JSON.stringify(v)}`);
    return undefined;
  }
  return v;
}

function stringMap(p: Problems, v: unknown, path: string, checkKey?: RegExp, checkValue?: RegExp): Labels {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) {
    p.add(path, 'must be a map of strings');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') {
      p.add(`${path}.${k}`, `must be a string, got ${JSON.stringify(x)} (quote it: "${String(x)}")`);
      continue;
    }
    if (checkKey && !checkKey.test(k)) p.add(`${path}.${k}`, 'is not a valid label key');
    if (checkValue && !checkValue.test(x)) p.add(`${path}.${k}`, `value ${JSON.stringify(x)} is not a valid label value (63 characters at most: letters, digits, '-', '_', '.')`);
    out[k] = x;
  }
  return out;
}

function port(p: Problems, v: unknown, path: string): number | undefined {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    p.add(path, `must be a port number (1-65535), got ${JSON.stringify(v)}`);
    return undefined;
  }
  return v;
}

function protocol(p: Problems, v: unknown, path: string): 'TCP' | 'UDP' | 'SCTP' {
  if (v === undefined || v === null) return 'TCP';
  if (typeof v !== 'string' || !PROTOCOLS.has(v)) {
    p.add(path, `must be TCP, UDP or SCTP, got ${JSON.stringify(v)}`);
    return 'TCP';
  }
  return v as 'TCP' | 'UDP' | 'SCTP';
}

function stringList(p: Problems, v: unknown, path: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    p.add(path, 'must be a list of strings');
    return [];
  }
  return v as string[];
}

function meta(p: Problems, doc: Obj, source: string, namespaced: boolean, nameRule: RegExp, nameRuleText: string): ObjectMeta {
  const m = doc.metadata;
  if (!isObj(m)) {
    p.add('metadata', 'required');
    return { name: '', namespace: '', labels: {}, annotations: {}, source };
  }
  const name = str(p, m, 'name', 'metadata.', { required: true }) ?? '';
  if (name && !nameRule.test(name)) p.add('metadata.name', `${JSON.stringify(name)} is not ${nameRuleText}`);
  let namespace = '';
  if (namespaced) {
    namespace = str(p, m, 'namespace', 'metadata.') ?? 'default';
    if (!DNS_LABEL.test(namespace)) p.add('metadata.namespace', `${JSON.stringify(namespace)} is not a DNS label`);
  } else if (m.namespace !== undefined) {
    p.add('metadata.namespace', 'a Namespace has no namespace');
  }
  const owner = ownerOf(p, m.ownerReferences);
  return {
    name, namespace, source,
    labels: stringMap(p, m.labels, 'metadata.labels', LABEL_KEY, LABEL_VALUE),
    annotations: stringMap(p, m.annotations, 'metadata.annotations'),
    ...(owner && { owner }),
  };
}

/** The controller (else the first) of metadata.ownerReferences: its kind and name name the workload. */
function ownerOf(p: Problems, refs: unknown): { kind: string; name: string } | undefined {
  if (refs === undefined) return undefined;
  if (!Array.isArray(refs)) {
    p.add('metadata.ownerReferences', 'must be a list');
    return undefined;
  }
  const ok = refs.filter((r, i) => {
    if (isObj(r) && typeof r.kind === 'string' && r.kind && typeof r.name === 'string' && r.name) return true;
    p.add(`metadata.ownerReferences[${i}]`, 'needs kind and name (strings)');
    return false;
  }) as { kind: string; name: string; controller?: unknown }[];
  const o = ok.find((r) => r.controller === true) ?? ok[0];
  return o && { kind: o.kind, name: o.name };
}

function parseNamespace(p: Problems, doc: Obj, source: string): Namespace {
  return { kind: 'Namespace', meta: meta(p, doc, source, false, DNS_LABEL, 'a DNS label (lowercase letters, digits, \'-\'; 63 at most)') };
}

function parsePod(p: Problems, doc: Obj, source: string): Pod {
  const m = meta(p, doc, source, true, DNS_SUBDOMAIN, 'a DNS subdomain (lowercase letters, digits, \'-\', \'.\')');
  const spec = doc.spec;
  const pod: Pod = { kind: 'Pod', meta: m, hostNetwork: false, command: [], restartPolicy: 'Always', ports: [], ready: false, phase: 'Pending', serviceAccount: 'default' };
  if (!isObj(spec)) {
    p.add('spec', 'required');
    return pod;
  }
  const nodeName = str(p, spec, 'nodeName', 'spec.');
  if (nodeName !== undefined) pod.nodeName = nodeName;
  if (spec.hostNetwork !== undefined && typeof spec.hostNetwork !== 'boolean') p.add('spec.hostNetwork', 'must be true or false');
  pod.hostNetwork = spec.hostNetwork === true;
  const sa = str(p, spec, 'serviceAccountName', 'spec.');
  if (sa !== undefined) {
    if (DNS_SUBDOMAIN.test(sa)) pod.serviceAccount = sa;
    else p.add('spec.serviceAccountName', `${JSON.stringify(sa)} is not a DNS subdomain (lowercase letters, digits, '-', '.')`);
  }
  const rp = str(p, spec, 'restartPolicy', 'spec.');
  if (rp !== undefined) {
    if (rp === 'Always' || rp === 'OnFailure' || rp === 'Never') pod.restartPolicy = rp;
    else p.add('spec.restartPolicy', `must be Always, OnFailure or Never, got ${JSON.stringify(rp)}`);
  }
  const containers = spec.containers;
  if (!Array.isArray(containers) || containers.length === 0) {
    p.add('spec.containers', 'must list at least one container');
    return pod;
  }
  if (containers.length > 1) p.add('spec.containers', 'one container per pod here: the local runtime runs one command per pod');
  const c = containers[0];
  if (!isObj(c)) {
    p.add('spec.containers[0]', 'must be a map');
    return pod;
  }
  str(p, c, 'name', 'spec.containers[0].', { required: true });
  const command = [...stringList(p, c.command, 'spec.containers[0].command'), ...stringList(p, c.args, 'spec.containers[0].args')];
  if (command.length === 0) p.add('spec.containers[0].command', 'required here: images are not pulled, the local runtime runs command + args on the host\'s filesystem');
  pod.command = command;
  const ports: ContainerPort[] = [];
  if (c.ports !== undefined) {
    if (!Array.isArray(c.ports)) p.add('spec.containers[0].ports', 'must be a list');
    else {
      c.ports.forEach((cp: unknown, i: number) => {
        const path = `spec.containers[0].ports[${i}]`;
        if (!isObj(cp)) return p.add(path, 'must be a map');
        const n = port(p, cp.containerPort, `${path}.containerPort`);
        const name = str(p, cp, 'name', `${path}.`);
        if (name !== undefined && !PORT_NAME.test(name)) p.add(`${path}.name`, `${JSON.stringify(name)} is not a port name (15 characters at most, lowercase letters, digits, '-', at least one letter)`);
        if (name !== undefined && ports.some((q) => q.name === name)) p.add(`${path}.name`, `${JSON.stringify(name)} is used twice`);
        if (n !== undefined) ports.push({ ...(name !== undefined && { name }), containerPort: n, protocol: protocol(p, cp.protocol, `${path}.protocol`) });
      });
    }
  }
  pod.ports = ports;
  return pod;
}

function parseService(p: Problems, doc: Obj, source: string): Service {
  const m = meta(p, doc, source, true, DNS_LABEL, 'a DNS label (lowercase letters, digits, \'-\'; 63 at most)');
  const svc: Service = { kind: 'Service', meta: m, ports: [] };
  const spec = doc.spec;
  if (!isObj(spec)) {
    p.add('spec', 'required');
    return svc;
  }
  const type = str(p, spec, 'type', 'spec.');
  if (type !== undefined && type !== 'ClusterIP') p.add('spec.type', `only ClusterIP services are served, got ${JSON.stringify(type)}`);
  const clusterIP = str(p, spec, 'clusterIP', 'spec.');
  if (clusterIP !== undefined && clusterIP !== '') {
    if (clusterIP !== 'None' && !isIPv4(clusterIP)) p.add('spec.clusterIP', `must be an IPv4 address or "None", got ${JSON.stringify(clusterIP)}`);
    else svc.clusterIP = clusterIP;
  }
  if (spec.selector !== undefined) svc.selector = stringMap(p, spec.selector, 'spec.selector', LABEL_KEY, LABEL_VALUE);
  if (!Array.isArray(spec.ports) || spec.ports.length === 0) {
    p.add('spec.ports', 'must list at least one port');
    return svc;
  }
  const ports: ServicePort[] = [];
  const many = spec.ports.length > 1;
  spec.ports.forEach((sp: unknown, i: number) => {
    const path = `spec.ports[${i}]`;
    if (!isObj(sp)) return p.add(path, 'must be a map');
    const n = port(p, sp.port, `${path}.port`);
    const name = str(p, sp, 'name', `${path}.`);
    if (name === undefined && many) p.add(`${path}.name`, 'required when a service has more than one port');
    if (name !== undefined && !DNS_LABEL.test(name)) p.add(`${path}.name`, `${JSON.stringify(name)} is not a DNS label`);
    let target: number | string | undefined = n;
    if (sp.targetPort !== undefined && sp.targetPort !== null) {
      if (typeof sp.targetPort === 'string') {
        if (!PORT_NAME.test(sp.targetPort)) p.add(`${path}.targetPort`, `${JSON.stringify(sp.targetPort)} is neither a port number nor a port name`);
        target = sp.targetPort;
      } else {
        target = port(p, sp.targetPort, `${path}.targetPort`);
      }
    }
    const appProtocol = str(p, sp, 'appProtocol', `${path}.`);
    const proto = protocol(p, sp.protocol, `${path}.protocol`);
    if (n !== undefined && ports.some((q) => q.port === n && q.protocol === proto)) p.add(`${path}.port`, `${n}/${proto} is listed twice`);
    if (name !== undefined && ports.some((q) => q.name === name)) p.add(`${path}.name`, `${JSON.stringify(name)} is used twice`);
    if (n !== undefined && target !== undefined) {
      ports.push({ ...(name !== undefined && { name }), port: n, targetPort: target, protocol: proto, ...(appProtocol !== undefined && { appProtocol }) });
    }
  });
  svc.ports = ports;
  return svc;
}

const SUBDOMAIN_RULE = 'a DNS subdomain (lowercase letters, digits, \'-\', \'.\')';
const KINDS: Record<string, { apiVersion: string; also?: string[]; parse: (p: Problems, doc: Obj, source: string) => ClusterObject }> = {
  Namespace: { apiVersion: 'v1', parse: parseNamespace },
  Pod: { apiVersion: 'v1', parse: parsePod },
  Service: { apiVersion: 'v1', parse: parseService },
  HTTPRoute: {
    apiVersion: 'gateway.networking.k8s.io/v1',
    parse: (p, doc, source) => parseHTTPRoute(p, doc, meta(p, doc, source, true, DNS_SUBDOMAIN, SUBDOMAIN_RULE)),
  },
  NetworkPolicy: {
    apiVersion: 'networking.k8s.io/v1',
    parse: (p, doc, source) => parseNetworkPolicy(p, doc, meta(p, doc, source, true, DNS_SUBDOMAIN, SUBDOMAIN_RULE)),
  },
  AuthorizationPolicy: {
    // v1beta1 is the same schema under its older name, still what many users write
    apiVersion: 'security.istio.io/v1', also: ['security.istio.io/v1beta1'],
    parse: (p, doc, source) => parseAuthorizationPolicy(p, doc, meta(p, doc, source, true, DNS_SUBDOMAIN, SUBDOMAIN_RULE)),
  },
};

/**
 * One object as the Kubernetes API serves it (a list item or a watch event),
 * validated like a manifest: the object, or the problems (field and reason)
 * that keep it out. Only the policy kinds come this way; the others have
 * typed converters in kube-source.ts.
 */
export function parseApiObject(kind: 'NetworkPolicy' | 'AuthorizationPolicy', js: Obj, source: string): { object?: ClusterObject; problems: string[] } {
  const p = new Problems();
  const obj = KINDS[kind]!.parse(p, js, source);
  return p.list.length === 0 ? { object: obj, problems: [] } : { problems: p.list };
}

/** Parses one file's text. `file` names it in messages. */
export function parseManifestFile(file: string, text: string): ParsedManifests {
  const out: ParsedManifests = { objects: [], errors: [], ignored: [] };
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const where = `${file}: document ${i + 1}`;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) out.errors.push(`${where}: YAML: ${e.message.split('\n')[0]}`);
      return;
    }
    const js: unknown = doc.toJS({ maxAliasCount: 100 });
    if (js === null || js === undefined) return; // an empty document (a trailing ---)
    if (!isObj(js)) {
      out.errors.push(`${where}: must be a map with apiVersion and kind`);
      return;
    }
    const kind = js.kind;
    const apiVersion = js.apiVersion;
    if (typeof kind !== 'string' || typeof apiVersion !== 'string') {
      out.errors.push(`${where}: ${typeof kind !== 'string' ? 'kind' : 'apiVersion'}: required`);
      return;
    }
    const k = KINDS[kind];
    if (!k) {
      out.ignored.push(`${where}: ${apiVersion}/${kind}`);
      return;
    }
    const p = new Problems();
    if (apiVersion !== k.apiVersion && !k.also?.includes(apiVersion)) p.add('apiVersion', `a ${kind} is ${[k.apiVersion, ...(k.also ?? [])].join(' or ')}, got ${JSON.stringify(apiVersion)}`);
    const obj = k.parse(p, js, `${file}#${i + 1}`);
    const name = obj.meta.namespace ? `${obj.meta.namespace}/${obj.meta.name}` : obj.meta.name;
    for (const e of p.list) out.errors.push(`${where} (${kind} ${name || '?'}): ${e}`);
    if (p.list.length === 0) out.objects.push(obj);
  });
  if (out.errors.length > 0) out.objects = [];
  return out;
}

/** Parses several files; the same object defined twice is an error naming both places. */
export function parseManifests(files: { file: string; text: string }[]): ParsedManifests {
  const out: ParsedManifests = { objects: [], errors: [], ignored: [] };
  const seen = new Map<string, string>();
  for (const { file, text } of files) {
    const r = parseManifestFile(file, text);
    out.errors.push(...r.errors);
    out.ignored.push(...r.ignored);
    for (const o of r.objects) {
      const key = `${o.kind} ${o.meta.namespace ? `${o.meta.namespace}/` : ''}${o.meta.name}`;
      const before = seen.get(key);
      if (before) {
        out.errors.push(`${o.meta.source.replace('#', ': document ')}: ${key} is already defined in ${before.replace('#', ': document ')}`);
        continue;
      }
      seen.set(key, o.meta.source);
      out.objects.push(o);
    }
  }
  return out;
}
