/**
 * The bootstrap of the shared per-node Envoy: ADS over gRPC (HTTP/2) to the
 * agent, every other resource from ADS, admin on 127.0.0.1 only. Checked
 * against Envoy's Bootstrap message by the strict encoder, so a field Envoy
 * would refuse never reaches it. Envoy itself cannot run on these machines;
 * nothing here assumes it does.
 */
import { isIP } from 'node:net';
import { InvalidArgumentError } from '../mesh-agent/errors.js';
import { encodeStrict } from './strict-encode.js';

export interface EnvoyBootstrapOptions {
  /** node.id: what the agent's snapshot cache is keyed by. Required. */
  nodeId: string;
  /** node.cluster. Default: "sockmesh-node-proxy". */
  cluster?: string;
  /** node.locality. Default: none. */
  locality?: { region?: string; zone?: string; sub_zone?: string };
  /** Address of the agent's ADS server (an IP). Default: 127.0.0.1. */
  adsAddress?: string;
  /** Port of the agent's ADS server. Required unless adsPipe is given. */
  adsPort?: number;
  /** The agent's ADS unix socket, instead of an address and port (for an Envoy in another network namespace). */
  adsPipe?: string;
  /** Envoy admin port, bound to 127.0.0.1. Default: 15000. */
  adminPort?: number;
  /**
   * The agent's OTLP trace receiver (a unix socket): a static cluster
   * OTLP_CLUSTER (gRPC, HTTP/2) to it, which the listeners' tracer exports
   * to (l7-resources, tracing.envoy). Default: none.
   */
  otlpPipe?: string;
  /**
   * The agent's access log receiver (a unix socket): a static cluster
   * ALS_CLUSTER (gRPC, HTTP/2) to it, which the listeners' access log
   * streams every request to (l7-resources, accessLog). Default: none.
   */
  alsPipe?: string;
}

const XDS_CLUSTER = 'sockmesh-xds';
/** The bootstrap's cluster to the agent's OTLP trace receiver. */
export const OTLP_CLUSTER = 'sockmesh-otlp';
/** The bootstrap's cluster to the agent's access log receiver. */
export const ALS_CLUSTER = 'sockmesh-als';
const HTTP_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

function port(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw new InvalidArgumentError(`${name} must be a port (1-65535), got ${v}`);
  return v;
}

function pipe(name: string, path: string): string {
  if (!path.startsWith('/')) throw new InvalidArgumentError(`${name} must be an absolute path, got ${JSON.stringify(path)}`);
  return path;
}

/** A static cluster of one gRPC server (HTTP/2) at address. */
function grpcCluster(name: string, address: Record<string, unknown>): Record<string, unknown> {
  return {
    name,
    type: 'STATIC',
    connect_timeout: { seconds: 1 },
    typed_extension_protocol_options: {
      [HTTP_OPTIONS]: { '@type': `type.googleapis.com/${HTTP_OPTIONS}`, explicit_http_config: { http2_protocol_options: {} } },
    },
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address } }] }] },
  };
}

/** The bootstrap as a plain object (proto field names); JSON.stringify it for `envoy -c`. */
export function envoyBootstrap(opts: EnvoyBootstrapOptions): Record<string, unknown> {
  if (!opts.nodeId) throw new InvalidArgumentError('nodeId is required');
  const adsAddress = opts.adsAddress ?? '127.0.0.1';
  if (!isIP(adsAddress)) throw new InvalidArgumentError(`adsAddress must be an IP address, got ${JSON.stringify(adsAddress)}`);
  const ads = { ads: {}, resource_api_version: 'V3' };
  const bootstrap = {
    node: { id: opts.nodeId, cluster: opts.cluster ?? 'sockmesh-node-proxy', ...(opts.locality && { locality: opts.locality }) },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: port('adminPort', opts.adminPort ?? 15000) } } },
    dynamic_resources: {
      ads_config: {
        api_type: 'GRPC',
        transport_api_version: 'V3',
        grpc_services: [{ envoy_grpc: { cluster_name: XDS_CLUSTER } }],
        set_node_on_first_message_only: true,
      },
      cds_config: ads,
      lds_config: ads,
    },
    static_resources: {
      clusters: [
        grpcCluster(XDS_CLUSTER, opts.adsPipe !== undefined
          ? { pipe: { path: opts.adsPipe } }
          : { socket_address: { address: adsAddress, port_value: port('adsPort', opts.adsPort ?? 0) } }),
        ...(opts.otlpPipe !== undefined ? [grpcCluster(OTLP_CLUSTER, { pipe: { path: pipe('otlpPipe', opts.otlpPipe) } })] : []),
        ...(opts.alsPipe !== undefined ? [grpcCluster(ALS_CLUSTER, { pipe: { path: pipe('alsPipe', opts.alsPipe) } })] : []),
      ],
    },
    ...(opts.otlpPipe !== undefined && {
      // the tracer exports every second, or at 1,000 spans (Envoy's defaults, 5 s or 5 spans, are a call per two
      // or three requests under load, and spans later than the agent waits for a closed connection's requests);
      // the admin layer kept, as Envoy's default runtime has it
      layered_runtime: {
        layers: [
          { name: 'sockmesh', static_layer: { 'tracing.opentelemetry.flush_interval_ms': 1000, 'tracing.opentelemetry.min_flush_spans': 1000 } },
          { name: 'admin', admin_layer: {} },
        ],
      },
    }),
  };
  encodeStrict('envoy.config.bootstrap.v3.Bootstrap', bootstrap);
  return bootstrap;
}
