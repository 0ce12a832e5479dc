/** mesh-agent run: the agent in the foreground. */
import { existsSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { DEFAULT_ADMIN_SOCKET } from '../admin/admin-client.js';
import { InvalidArgumentError } from '../errors.js';
import { Agent, DEFAULT_ADMIN_ADDRESS, DEFAULT_XDS_ADDRESS, DEFAULT_XDS_SOCKET } from '../agent.js';
import { encodeIPv4 } from '../datapath/layout.js';
import { DATAPATH_FLAGS, DATAPATH_FLAGS_HELP, int, parse, str } from './args.js';
import { OTHER_BUILD_WARNING, datapathOptions } from './datapath-commands.js';
import { DEFAULT_TRACE_FILE, telemetryOptions } from '../../telemetry/telemetry-options.js';
import { describeExport } from '../../telemetry/span-exporter.js';
import { DEFAULT_RELAY_SOCKET } from '../telemetry/agent-telemetry.js';
import { AGENT_NODE_FLAGS, agentFlagsWarning } from '../node-flags.js';

const RUN_HELP = `usage: mesh-agent run [--manifests DIR] [flags]

Runs the agent in the foreground: brings the datapath up (or adopts the one
pinned by an earlier agent), runs the cluster in --manifests (its pods on the
local node runtime, its services balanced in the kernel, watched and
reconciled continuously), serves xDS to the node proxy and the admin API
(status, config dump, Prometheus metrics).

Pods of a namespace annotated sockmesh.io/enabled: "true" join the mesh
(a pod opts out with the same annotation set to "false"): their connections
to each other, direct or through a service, are short-circuited in the
kernel. An invalid manifest is reported (file, document, field) and the
last good set keeps running.

On SIGTERM or SIGINT it exits; the datapath stays in the kernel (pinned) and
the pods keep running, so the next agent adopts both, unless --down-on-exit
or --cleanup-on-exit is given. If the agent is killed, short-circuited
connections go on and new ones are still short-circuited.

  --manifests DIR         a directory of Kubernetes YAML (v1 Namespace, Pod, Service)
  --kubernetes            the Kubernetes API instead (~/.kube/config, $KUBECONFIG or in-cluster);
                          pods are the kubelet's, services the cluster's clusterIPs and EndpointSlices
  --kubeconfig FILE       the Kubernetes API, with this kubeconfig
  --node-netns PATH       with the Kubernetes API: the network namespace holding the node-side
                          ends of the CNI's pod veths, where the anti-spoof guards go (default:
                          the agent's own; /proc/1/ns/net when the agent runs without hostNetwork)
  --prefix P              the local runtime's name prefix (default sm)
  --cleanup-on-exit       remove the pods, the node proxy and the runtime's network when stopping,
                          with their state under /run/sockmesh (logs, the node proxy's access log)
${DATAPATH_FLAGS_HELP}
  --enroll IPV4           enroll this endpoint (repeatable)
  --xds-address IP:PORT   the ADS server over TCP (default ${DEFAULT_XDS_ADDRESS})
  --xds-socket PATH       the ADS server on a unix socket, for the node proxy (default ${DEFAULT_XDS_SOCKET})
  --proxy P               the node proxy for L7 services: mesh-proxy, envoy, a path to an Envoy
                          binary, or none (default: envoy when on PATH, else mesh-proxy)
  --admin-socket PATH     the admin API for the CLI, mode 0600 (default ${DEFAULT_ADMIN_SOCKET})
  --admin-address IP:PORT the admin API over HTTP, for Prometheus at /metrics; "none" for
                          none (default ${DEFAULT_ADMIN_ADDRESS})
  --node-name NAME        this node's name (default: the host name)
  --interval-ms N         print the counters every N ms; 0 = never (default 0)
  --down-on-exit          remove the datapath when stopping

Traces (OpenTelemetry; the standard OTEL_* variables apply, these flags win):
  --tracing on|off        export spans (default on; OTEL_SDK_DISABLED=true turns it off)
  --otlp-endpoint URL     an OTLP collector (OTEL_EXPORTER_OTLP_ENDPOINT); without one, spans go
                          to the trace file as OTLP/JSON lines, shown by mesh-agent traces
  --otlp-protocol P       http/protobuf (default), http/json or grpc (OTEL_EXPORTER_OTLP_PROTOCOL)
  --trace-file FILE       the trace file (default ${DEFAULT_TRACE_FILE}); SIGUSR1 opens it again
                          (after logrotate or another tool moved it)
  --sample-ratio R        the ratio of new traces kept, 0..1 (default 1; OTEL_TRACES_SAMPLER=
                          parentbased_traceidratio and OTEL_TRACES_SAMPLER_ARG); a caller's
                          decision (traceparent) is kept
  --relay-socket PATH     where the node proxy reports every request to the agent (default ${DEFAULT_RELAY_SOCKET})
Spans: the node proxy's requests (the caller's CLIENT span, the backend's SERVER span, each with
its pod's resource), the kernel's connections (linked to the requests they carried), and the
agent's reconcile passes and xDS pushes (service sockmesh-agent). Flows: mesh-agent observe.
With Envoy as the node proxy, its own tracer exports its spans (OTLP/gRPC) to envoy-spans.sock
beside the relay socket, and the agent gives them to their workloads the same way.

The mesh-agent command starts node with ${AGENT_NODE_FLAGS.join(' ')} (fewer major
garbage collections under traced load, for up to about 128 MB of heap, not handed back in
quiet spells); started as node dist/mesh-agent/cli.js run, give node those flags yourself
(run says so on stderr when one is missing).
`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    ...DATAPATH_FLAGS,
    enroll: { type: 'string', multiple: true },
    'xds-address': { type: 'string' },
    'xds-socket': { type: 'string' },
    proxy: { type: 'string' },
    'admin-socket': { type: 'string' },
    'admin-address': { type: 'string' },
    'node-name': { type: 'string' },
    'interval-ms': { type: 'string' },
    'down-on-exit': { type: 'boolean' },
    manifests: { type: 'string' },
    kubernetes: { type: 'boolean' },
    kubeconfig: { type: 'string' },
    'node-netns': { type: 'string' },
    prefix: { type: 'string' },
    'cleanup-on-exit': { type: 'boolean' },
    tracing: { type: 'string' },
    'otlp-endpoint': { type: 'string' },
    'otlp-protocol': { type: 'string' },
    'trace-file': { type: 'string' },
    'sample-ratio': { type: 'string' },
    'relay-socket': { type: 'string' },
  }, RUN_HELP, false);
  if (!p) return 0;
  const intervalMs = int(p, 'interval-ms') ?? 0;
  const enroll = (p.values.enroll as string[] | undefined) ?? [];
  for (const ip of enroll) encodeIPv4(ip); // bad input is reported before anything is loaded
  const adminAddress = str(p, 'admin-address');
  const nodeName = str(p, 'node-name');
  const xdsAddress = str(p, 'xds-address');
  const adminSocket = str(p, 'admin-socket');
  const xdsSocket = str(p, 'xds-socket');
  const proxy = str(p, 'proxy');
  const manifests = str(p, 'manifests');
  const prefix = str(p, 'prefix');
  const kubeconfig = str(p, 'kubeconfig');
  const useKube = p.values.kubernetes === true || kubeconfig !== undefined;
  const flag = (n: string) => str(p, n);
  const telemetry = telemetryOptions(process.env, {
    ...(flag('tracing') !== undefined && { tracing: flag('tracing')! }),
    ...(flag('otlp-endpoint') !== undefined && { otlpEndpoint: flag('otlp-endpoint')! }),
    ...(flag('otlp-protocol') !== undefined && { otlpProtocol: flag('otlp-protocol')! }),
    ...(flag('trace-file') !== undefined && { traceFile: flag('trace-file')! }),
    ...(flag('sample-ratio') !== undefined && { sampleRatio: flag('sample-ratio')! }),
  });
  const relaySocket = flag('relay-socket');
  const nodeNetns = str(p, 'node-netns');
  if (nodeNetns !== undefined && !useKube) throw new InvalidArgumentError('--node-netns goes with --kubernetes or --kubeconfig (the local runtime has its own node namespace)');
  if (nodeNetns !== undefined && !existsSync(nodeNetns)) throw new InvalidArgumentError(`--node-netns ${nodeNetns}: no such file (a network namespace file such as /proc/1/ns/net or /run/netns/NAME)`);
  if (useKube && manifests !== undefined) throw new InvalidArgumentError('--manifests and --kubernetes/--kubeconfig are two cluster sources: pick one');
  let kubeConfig: KubeConfig | undefined;
  if (useKube) {
    const k8s = await import('@kubernetes/client-node'); // loaded only for this source: it takes a while
    kubeConfig = new k8s.KubeConfig();
    try {
      if (kubeconfig !== undefined) kubeConfig.loadFromFile(kubeconfig);
      else kubeConfig.loadFromDefault();
    } catch (err) {
      throw new InvalidArgumentError(`cannot load the kubeconfig${kubeconfig ? ` ${kubeconfig}` : ''}: ${(err as Error).message}`);
    }
    if (!kubeConfig.getCurrentCluster()) throw new InvalidArgumentError(`the kubeconfig${kubeconfig ? ` ${kubeconfig}` : ''} names no current cluster`);
  }
  const flagsWarning = agentFlagsWarning(process.execArgv);
  if (flagsWarning !== undefined) process.stderr.write(`mesh-agent: ${flagsWarning}\n`);
  const agent = new Agent({
    ...(manifests !== undefined && { manifests }),
    ...(kubeConfig !== undefined && { kubernetes: { kubeConfig, ...(nodeNetns !== undefined && { nodeNetns }) } }),
    ...(prefix !== undefined && { runtimePrefix: prefix }),
    log: (line) => process.stdout.write(`mesh-agent: ${line}\n`),
    datapath: datapathOptions(p), enroll,
    ...(xdsAddress !== undefined && { xdsAddress }),
    ...(adminSocket !== undefined && { adminSocket }),
    ...(xdsSocket !== undefined && { xdsSocket }),
    ...(proxy !== undefined && { proxy }),
    ...(adminAddress !== undefined && { adminAddress: adminAddress === 'none' ? null : adminAddress }),
    ...(nodeName !== undefined && { nodeName }),
    telemetry, registerGlobalTelemetry: true,
    ...(relaySocket !== undefined && { relaySocket }),
  });
  const { adopted, otherBuild } = await agent.start();
  // before the running line: whoever waits for it may signal at once
  const reopen = () => {
    agent.telemetry.reopenTraceFile().then(
      () => process.stdout.write(`mesh-agent: SIGUSR1: ${telemetry.target === 'file' ? `trace file ${telemetry.file} reopened` : 'no trace file to reopen'}\n`),
      (err: unknown) => process.stderr.write(`mesh-agent: trace file: reopen: ${(err as Error).message}\n`),
    );
  };
  process.on('SIGUSR1', reopen);
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const st = agent.status().agent;
  process.stdout.write(`mesh-agent: running (pid ${process.pid}), datapath ${adopted ? 'adopted from' : 'loaded and pinned in'} ${agent.pinDir}\n`);
  process.stdout.write(`mesh-agent: xDS on ${st.xdsAddress}, admin on ${st.adminSocket}${st.adminAddress ? ` and http://${st.adminAddress}` : ''}\n`);
  process.stdout.write(`mesh-agent: traces: ${describeExport(telemetry)}${telemetry.enabled ? `, sampling ${telemetry.sampleRatio}` : ''}\n`);
  if (otherBuild) process.stdout.write(OTHER_BUILD_WARNING);
  // signal listeners do not keep Node alive: this timer does (and reports when asked)
  const timer = setInterval(() => {
    if (intervalMs > 0) process.stdout.write(`counters ${JSON.stringify(agent.status().datapath.counters)}\n`);
  }, intervalMs > 0 ? intervalMs : 60_000);
  const signal = await signalled;
  process.off('SIGUSR1', reopen);
  clearInterval(timer);
  const down = p.values['down-on-exit'] === true;
  const removePods = p.values['cleanup-on-exit'] === true;
  await agent.stop({ down, removePods });
  process.stdout.write(down ? `mesh-agent: ${signal}: datapath removed\n` : `mesh-agent: ${signal}: exiting, datapath stays pinned in ${agent.pinDir}\n`);
  if (manifests !== undefined) process.stdout.write(removePods ? `mesh-agent: pods removed\n` : `mesh-agent: pods keep running; the next agent adopts them\n`);
  return 0;
}
