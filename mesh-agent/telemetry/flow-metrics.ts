/**
 * Prometheus metrics of what the mesh carried: connections and bytes by path
 * (kernel splice or TCP/IP stack), requests through the node proxy and their
 * latency by workload pair. Fed by flow records; rendered by the admin API.
 */
import { Histogram, type MetricFamily } from '../admin/prometheus.js';
import type { FlowRecord } from './flow-tracker.js';

const LATENCY_BOUNDS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function workload(w: FlowRecord['source']): string {
  return w.pod !== undefined ? `${w.namespace}/${w.service ?? w.pod}` : 'unknown';
}

export class FlowMetrics {
  readonly #connections = new Map<string, number>();
  readonly #bytes = new Map<string, number>();
  readonly #requests = new Map<string, { labels: Record<string, string>; value: number }>();
  readonly #latency = new Histogram(LATENCY_BOUNDS_S);
  readonly #denials = new Map<string, { labels: Record<string, string>; value: number }>();
  readonly #security = new Map<string, number>();

  #deny(src: string, dst: string, layer: string, policy: string, n = 1): void {
    const dk = `${src}\0${dst}\0${layer}\0${policy}`;
    const d = this.#denials.get(dk);
    if (d) d.value += n;
    else this.#denials.set(dk, { labels: { source_workload: src, destination_service: dst, layer, policy }, value: n });
  }

  record(f: FlowRecord): void {
    if (f.type === 'security') {
      this.#security.set(f.securityType ?? 'unknown', (this.#security.get(f.securityType ?? 'unknown') ?? 0) + 1);
      return;
    }
    if (f.type === 'l4' && f.verdict === 'denied') {
      // refused, dropped or cut by the kernel: no connection carried bytes; the destination is the workload it asked for
      this.#deny(workload(f.source), f.destination.pod !== undefined ? workload(f.destination) : f.destination.address.replace(/:\d+$/, ''), f.layer ?? 'kernel-l4', f.policy ?? 'unknown', 1 + (f.suppressed ?? 0));
      return;
    }
    if (f.type === 'l4') {
      this.#connections.set(f.path, (this.#connections.get(f.path) ?? 0) + 1);
      this.#bytes.set(`${f.path}|sent`, (this.#bytes.get(`${f.path}|sent`) ?? 0) + (f.bytesSent ?? 0));
      this.#bytes.set(`${f.path}|received`, (this.#bytes.get(`${f.path}|received`) ?? 0) + (f.bytesReceived ?? 0));
      return;
    }
    const src = workload(f.source);
    const dst = workload(f.destination);
    const cls = f.status ? `${Math.floor(f.status / 100)}xx` : 'none';
    const pairKey = `${src}\0${dst}`;
    const key = `${pairKey}\0${cls}`;
    const c = this.#requests.get(key);
    if (c) c.value++;
    else this.#requests.set(key, { labels: { source_workload: src, destination_workload: dst, status_class: cls }, value: 1 });
    this.#latency.observe({ source_workload: src, destination_workload: dst }, f.durationMs / 1000, pairKey);
    if (f.verdict === 'denied') {
      // a denied request reached no workload: its destination is the service it asked for
      this.#deny(src, f.service ?? 'unknown', 'proxy-l7', f.policy ?? 'unknown');
    }
  }

  families(): MetricFamily[] {
    return [
      { name: 'sockmesh_connections_total', help: 'Finished TCP connections of mesh pods, by the path their bytes took (kernel: spliced socket to socket; stack: the TCP/IP stack).', type: 'counter',
        samples: [...this.#connections].map(([path, value]) => ({ labels: { path }, value })) },
      { name: 'sockmesh_connection_bytes_total', help: 'Bytes of finished connections, by path and direction (as the client sees it).', type: 'counter',
        samples: [...this.#bytes].map(([k, value]) => { const [path, direction] = k.split('|') as [string, string]; return { labels: { path, direction }, value }; }) },
      { name: 'sockmesh_requests_total', help: 'HTTP requests through the node proxy, by calling and serving workload (namespace/service) and status class.', type: 'counter',
        samples: [...this.#requests.values()] },
      { name: 'sockmesh_policy_denials_total', help: 'Requests and connections a policy denied, by calling workload, the service (L7) or workload or address (L4) asked for, the layer (proxy-l7: the node proxy\'s RBAC; kernel-l4: NetworkPolicy, connects refused, packets dropped and connections cut) and the policy ("none": no ALLOW rule matched).', type: 'counter',
        samples: [...this.#denials.values()] },
      { name: 'sockmesh_security_events_total', help: 'Cross-workload security events reported (scan, repeated-denials, spoofing), each once per episode.', type: 'counter',
        samples: [...this.#security].map(([type, value]) => ({ labels: { type }, value })) },
      { name: 'sockmesh_request_duration_seconds', help: 'HTTP request latency through the node proxy, as the caller sees it, by workload pair.', type: 'histogram',
        samples: this.#latency.samples() },
    ];
  }
}
