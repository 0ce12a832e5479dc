/**
 * The cluster source for real clusters: the Kubernetes API, through
 * @kubernetes/client-node informers on Namespaces, Pods, Services,
 * EndpointSlices, NetworkPolicies and Istio AuthorizationPolicies (list,
 * then watch from the list's resourceVersion; a 410
 * Gone relists; a failed list or a broken watch reconnects with exponential
 * backoff). Every event lands in the ClusterStore as the model's objects.
 * A policy the API serves but sockmesh cannot take (a field it cannot
 * enforce, say) is kept out with its problems in the informer's state, and
 * the version before it, if any, keeps being enforced.
 */
import * as k8s from '@kubernetes/client-node';
import type { ClusterStore } from './cluster-store.js';
import { parseApiObject } from './manifest-parser.js';
import type { ClusterObject, ContainerPort, EndpointSlice, Kind, Labels, Namespace, ObjectMeta, Pod, Service, ServicePort } from './model.js';

export const KUBE_SOURCE_ID = 'kubernetes';

export interface KubeSourceOptions {
  store: ClusterStore;
  /** A KubeConfig (the default: ~/.kube/config, $KUBECONFIG or the in-cluster service account). */
  kubeConfig?: k8s.KubeConfig;
  /** First reconnect delay; doubles up to maxBackoffMs. Default: 500 ms. */
  backoffMs?: number;
  /** Default: 30 s. */
  maxBackoffMs?: number;
}

/** How one informer is doing, for status. */
export interface InformerState {
  resource: string;
  connected: boolean;
  /** lists done (the first, and each relist after 410 Gone or a reconnect) */
  lists: number;
  reconnects: number;
  resourceVersion: string;
  lastError?: string;
  /** objects refused, "ns/name: field: reason" (the last good version of each stays in force) */
  problems?: string[];
}

type AnyObj = { metadata?: k8s.V1ObjectMeta };

function meta(m: k8s.V1ObjectMeta | undefined): ObjectMeta {
  const owner = m?.ownerReferences?.find((o) => o.controller) ?? m?.ownerReferences?.[0];
  return {
    name: m?.name ?? '', namespace: m?.namespace ?? '', source: KUBE_SOURCE_ID, ...(m?.uid !== undefined && { uid: m.uid }),
    ...(owner && { owner: { kind: owner.kind, name: owner.name } }),
    labels: { ...(m?.labels ?? {}) } as Labels, annotations: { ...(m?.annotations ?? {}) } as Labels,
  };
}

const proto = (p: string | undefined): 'TCP' | 'UDP' | 'SCTP' => (p === 'UDP' || p === 'SCTP' ? p : 'TCP');

export function namespaceFrom(o: k8s.V1Namespace): Namespace {
  return { kind: 'Namespace', meta: meta(o.metadata) };
}

export function podFrom(o: k8s.V1Pod): Pod {
  const c = o.spec?.containers?.[0];
  const ports: ContainerPort[] = (o.spec?.containers ?? []).flatMap((ct) => (ct.ports ?? []).map((p) => ({
    ...(p.name !== undefined && { name: p.name }), containerPort: p.containerPort, protocol: proto(p.protocol),
  })));
  const ready = (o.status?.conditions ?? []).some((x) => x.type === 'Ready' && x.status === 'True');
  const rp = o.spec?.restartPolicy;
  return {
    kind: 'Pod', meta: meta(o.metadata),
    ...(o.spec?.nodeName !== undefined && { nodeName: o.spec.nodeName }),
    hostNetwork: o.spec?.hostNetwork === true,
    command: [...(c?.command ?? []), ...(c?.args ?? [])],
    restartPolicy: rp === 'Never' || rp === 'OnFailure' ? rp : 'Always',
    ports,
    ...(o.status?.podIP && { ip: o.status.podIP }),
    ready, phase: o.status?.phase ?? 'Pending', serviceAccount: o.spec?.serviceAccountName ?? 'default',
  };
}

export function serviceFrom(o: k8s.V1Service): Service {
  const ports: ServicePort[] = (o.spec?.ports ?? []).map((p) => ({
    ...(p.name !== undefined && p.name !== '' && { name: p.name }),
    port: p.port,
    targetPort: (p.targetPort as number | string | undefined) ?? p.port,
    protocol: proto(p.protocol),
    ...(p.appProtocol !== undefined && { appProtocol: p.appProtocol }),
  }));
  const ip = o.spec?.clusterIP;
  return {
    kind: 'Service', meta: meta(o.metadata), ports,
    ...(ip !== undefined && ip !== '' && { clusterIP: ip }),
    ...(o.spec?.selector !== undefined && { selector: { ...o.spec.selector } }),
  };
}

export function endpointSliceFrom(o: k8s.V1EndpointSlice): EndpointSlice {
  return {
    kind: 'EndpointSlice', meta: meta(o.metadata),
    serviceName: o.metadata?.labels?.['kubernetes.io/service-name'] ?? '',
    ports: (o.ports ?? []).flatMap((p) => (p.port === undefined ? [] : [{ ...(p.name && { name: p.name }), port: p.port, protocol: proto(p.protocol) }])),
    endpoints: (o.endpoints ?? []).map((e) => ({
      addresses: e.addresses, ready: e.conditions?.ready !== false,
      ...(e.nodeName !== undefined && { nodeName: e.nodeName }),
      ...(e.targetRef?.name !== undefined && { podName: e.targetRef.name }),
    })),
  };
}

interface InformerEntry {
  state: InformerState;
  informer: k8s.ListWatch<AnyObj>;
  timer?: NodeJS.Timeout;
  delay: number;
}

const key = (o: AnyObj) => (o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata?.name ?? '');

export class KubeSource {
  readonly #store: ClusterStore;
  readonly #kc: k8s.KubeConfig;
  readonly #backoffMs: number;
  readonly #maxBackoffMs: number;
  #informers: InformerEntry[] = [];
  #stopped = true;

  constructor(opts: KubeSourceOptions) {
    this.#store = opts.store;
    this.#kc = opts.kubeConfig ?? (() => {
      const kc = new k8s.KubeConfig();
      kc.loadFromDefault();
      return kc;
    })();
    this.#backoffMs = opts.backoffMs ?? 500;
    this.#maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  }

  /** The API server's address. */
  get server(): string {
    return this.#kc.getCurrentCluster()?.server ?? '(none)';
  }

  states(): InformerState[] {
    return this.#informers.map((i) => ({ ...i.state }));
  }

  /** Starts the informers; resolves when each has listed once (or failed to, and is retrying). */
  async start(): Promise<void> {
    this.#stopped = false;
    const core = this.#kc.makeApiClient(k8s.CoreV1Api);
    const discovery = this.#kc.makeApiClient(k8s.DiscoveryV1Api);
    const custom = this.#kc.makeApiClient(k8s.CustomObjectsApi);
    type Convert = (o: never, problems: Map<string, string[]>) => ClusterObject | undefined;
    // the policies come raw (no typed client: the manifest parser validates them, field by field)
    const policy = (kind: 'NetworkPolicy' | 'AuthorizationPolicy', group: string, version: string, plural: string) => [
      `/apis/${group}/${version}/${plural}`, kind,
      async () => (await custom.listClusterCustomObject({ group, version, plural })) as { items: AnyObj[]; metadata?: k8s.V1ListMeta },
      ((o: AnyObj & Record<string, unknown>, problems: Map<string, string[]>) => {
        const { status: _status, ...js } = o;
        void _status;
        const r = parseApiObject(kind, { ...js, kind, apiVersion: `${group}/${version}` }, `${KUBE_SOURCE_ID}:${kind} ${key(o)}`);
        if (r.object) {
          problems.delete(key(o));
          return { ...r.object, meta: { ...r.object.meta, source: KUBE_SOURCE_ID, ...(o.metadata?.uid !== undefined && { uid: o.metadata.uid }) } };
        }
        problems.set(key(o), r.problems);
        return undefined;
      }) as Convert,
    ] as const;
    const specs: (readonly [string, Kind, () => Promise<{ items: AnyObj[]; metadata?: k8s.V1ListMeta }>, Convert])[] = [
      ['/api/v1/namespaces', 'Namespace', () => core.listNamespace(), namespaceFrom as Convert],
      ['/api/v1/pods', 'Pod', () => core.listPodForAllNamespaces(), podFrom as Convert],
      ['/api/v1/services', 'Service', () => core.listServiceForAllNamespaces(), serviceFrom as Convert],
      ['/apis/discovery.k8s.io/v1/endpointslices', 'EndpointSlice', () => discovery.listEndpointSliceForAllNamespaces(), endpointSliceFrom as Convert],
      policy('NetworkPolicy', 'networking.k8s.io', 'v1', 'networkpolicies'),
      policy('AuthorizationPolicy', 'security.istio.io', 'v1', 'authorizationpolicies'),
    ];
    const started: Promise<void>[] = [];
    for (const [path, kind, list, convert] of specs) {
      const state: InformerState = { resource: path, connected: false, lists: 0, reconnects: 0, resourceVersion: '' };
      const countedList = async () => {
        const l = await list();
        state.lists++;
        return l as k8s.KubernetesListObject<AnyObj>;
      };
      const informer = k8s.makeInformer(this.#kc, path, countedList) as k8s.ListWatch<AnyObj>;
      const entry: InformerEntry = { state, informer, delay: this.#backoffMs };
      this.#informers.push(entry);
      const problems = new Map<string, string[]>();
      const upsert = (o: AnyObj) => {
        state.resourceVersion = informer.latestResourceVersion();
        state.connected = true;
        entry.delay = this.#backoffMs;
        const obj = convert(o as never, problems);
        if (problems.size > 0) state.problems = [...problems].slice(0, 50).flatMap(([k, ps]) => ps.map((x) => `${k}: ${x}`));
        else delete state.problems;
        if (obj) this.#store.upsert(KUBE_SOURCE_ID, obj);
      };
      informer.on('add', upsert);
      informer.on('update', upsert);
      informer.on('delete', (o: AnyObj) => {
        problems.delete(key(o));
        if (problems.size === 0) delete state.problems;
        this.#store.remove(kind, key(o));
      });
      informer.on('connect', () => { state.connected = true; });
      let firstDone: () => void = () => undefined;
      started.push(new Promise<void>((r) => { firstDone = r; }));
      informer.on('error', (err: unknown) => {
        state.connected = false;
        state.lastError = (err as Error)?.message ?? String(err);
        firstDone();
        if (this.#stopped) return;
        // the informer stops on an error: start it again after a while
        entry.timer = setTimeout(() => {
          entry.timer = undefined;
          state.reconnects++;
          void informer.start().catch(() => undefined);
        }, entry.delay);
        entry.delay = Math.min(entry.delay * 2, this.#maxBackoffMs);
      });
      void informer.start().then(() => {
        state.resourceVersion = informer.latestResourceVersion();
        firstDone();
      }, () => firstDone());
    }
    await Promise.all(started);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const i of this.#informers) {
      if (i.timer) clearTimeout(i.timer);
      await i.informer.stop();
    }
    this.#informers = [];
  }
}
