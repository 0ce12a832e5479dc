#!/usr/bin/env node
/** mesh-proxy: sockmesh's built-in node proxy, configured over xDS by the agent. */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { ExportQueue } from '../telemetry/export-queue.js';
import { finishedSpan } from '../telemetry/finished-span.js';
import { asRequestTrace, requestSpans } from '../telemetry/request-spans.js';
import { createSpanExporter } from '../telemetry/span-exporter.js';
import { telemetryOptions } from '../telemetry/telemetry-options.js';
import { workloadResource } from '../telemetry/workload-resource.js';
import { AdminServer } from '../mesh-agent/admin/admin-server.js';
import { renderPrometheus } from '../mesh-agent/admin/prometheus.js';
import { AccessLogFile, MAX_TIMER_MS } from './access-log.js';
import { AgentChannel } from './agent-channel.js';
import { MeshProxy, type AccessLogEntry, type Workload } from './proxy.js';
import { XdsClient } from './xds-client.js';

const HELP = `usage: mesh-proxy --xds TARGET --node-id ID [flags]

sockmesh's built-in shared L7 proxy (one per node). It is configured over
Envoy's xDS v3 (ADS, state of the world) by mesh-agent, which starts and
supervises it; it serves HTTP/1.1 and h2c on the listeners it is given.

  --xds TARGET            the agent's ADS server: unix:/run/sockmesh/xds.sock or IP:PORT
  --node-id ID            the node.id it presents (the agent's snapshot key)
  --admin-socket PATH     admin endpoint (/config_dump, /stats, /metrics, /ready) on a unix socket
  --admin-address IP:PORT the same over TCP (default: none)
  --access-log DEST       stdout (default), none, or a file path: one JSON line per request
  --access-log-max-mb N   a file access log is renamed to FILE.1 (replacing the one before) when it
                          would pass N MiB, and started again (default 64). SIGUSR1 opens the path
                          again (after logrotate or another tool moved the file), as Envoy does
  --access-log-flush-ms N a file access log is written every N ms, or at once when 64 KiB of lines
                          wait (default 1000, as Envoy's file_flush_interval_msec); 0 writes each
                          line as it comes. A proxy killed outright loses the lines not yet written;
                          SIGTERM and SIGUSR1 write them first
  --drain-ms N            on SIGTERM, how long requests in flight may take (default 5000)
  --workloads FILE        the agent's map of pod addresses to workloads (JSON), read again when it
                          changes: the calling pod is named in the access log and spans
  --telemetry-socket PATH the agent's socket: every request is reported to it (metrics, observe), the
                          sampled ones with what the agent writes their spans from; without it, spans
                          go to OTEL_EXPORTER_OTLP_ENDPOINT when that is set, and are not made otherwise
  --node NAME             k8s.node.name on spans (default: the host name)
  --tracing on|off|xds    which listeners trace their requests. on (default; OTEL_SDK_DISABLED=true
                          turns it off): every listener, new traces kept at the listener's HCM
                          tracing.random_sampling if it has one, else at --sample-ratio. xds (what
                          the agent runs): as Envoy, only listeners whose HCM has a tracing field,
                          at its random_sampling, so the control plane switches tracing and its ratio
                          at runtime. off: none. An untraced request's traceparent passes through; the
                          agent still counts every request
  --sample-ratio R        the ratio of new traces sampled, 0..1 (default: OTEL_TRACES_SAMPLER[_ARG], else 1);
                          a caller's sampling decision (traceparent) is always kept

Spans: per request, the caller's CLIENT span and the backend's SERVER span (one per attempt),
each with its own workload's resource (service.name, k8s.namespace.name, k8s.pod.name).
`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      xds: { type: 'string' }, 'node-id': { type: 'string' }, 'admin-socket': { type: 'string' }, 'admin-address': { type: 'string' },
      'access-log': { type: 'string' }, 'access-log-max-mb': { type: 'string' }, 'access-log-flush-ms': { type: 'string' }, 'drain-ms': { type: 'string' }, workloads: { type: 'string' },
      'telemetry-socket': { type: 'string' }, node: { type: 'string' }, 'sample-ratio': { type: 'string' }, tracing: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!values.xds || !values['node-id']) {
    process.stderr.write('mesh-proxy: --xds and --node-id are required (see --help)\n');
    return 2;
  }
  const maxMb = values['access-log-max-mb'] === undefined ? 64 : Number(values['access-log-max-mb']);
  if (!(maxMb > 0)) {
    process.stderr.write(`mesh-proxy: --access-log-max-mb: not a size above 0 MiB: ${values['access-log-max-mb']}\n`);
    return 2;
  }
  const flushArg = values['access-log-flush-ms'];
  const flushMs = flushArg === undefined ? 1000 : /^\d+$/.test(flushArg) ? Number(flushArg) : Number.NaN;
  if (!(flushMs <= MAX_TIMER_MS)) {
    process.stderr.write(`mesh-proxy: --access-log-flush-ms: not a whole number of ms from 0 to ${MAX_TIMER_MS}: ${JSON.stringify(flushArg)}\n`);
    return 2;
  }
  if (values.tracing !== undefined && !['on', 'off', 'xds'].includes(values.tracing)) {
    process.stderr.write(`mesh-proxy: --tracing ${JSON.stringify(values.tracing)}: must be on, off or xds\n`);
    return 2;
  }
  const fromXds = values.tracing === 'xds';
  const tel = telemetryOptions(process.env, {
    ...(values['sample-ratio'] !== undefined && { sampleRatio: values['sample-ratio'] }), ...(values.tracing !== undefined && !fromXds && { tracing: values.tracing }),
  });
  const socket = values['telemetry-socket'];
  // every request is counted by the agent (sampled or not), and it writes the sampled ones' spans
  const channel = socket ? new AgentChannel({ socketPath: socket }) : undefined;
  // without the agent, to a collector: the spans are made here and go through the export queue
  const exporter = tel.enabled && !socket && tel.target === 'otlp' ? createSpanExporter(tel) : undefined;
  const queue = exporter && new ExportQueue(exporter, { maxQueueSize: tel.maxQueueSize, maxExportBatchSize: tel.maxExportBatchSize, scheduledDelayMs: tel.scheduledDelayMs, exportTimeoutMs: tel.timeoutMs + 1000, shutdownTimeoutMs: tel.shutdownTimeoutMs });
  // with nowhere for spans to go none are made: a caller's traceparent passes through unchanged
  const tracing = (fromXds || tel.enabled) && (channel !== undefined || queue !== undefined) ? (fromXds ? 'xds' as const : { sampleRatio: tel.sampleRatio }) : false as const;
  const node = values.node ?? hostname();
  const resources = new Map<string, Resource>();
  const resourceOf = (ip: string): Resource => {
    const w = proxy.workload(ip);
    const key = w ? `${w.namespace}/${w.pod}/${w.serviceName}` : '';
    let r = resources.get(key);
    if (!r) {
      if (resources.size > 10_000) resources.clear();
      resources.set(key, r = w ? workloadResource(w, node) : resourceFromAttributes({ 'service.name': 'sockmesh-node-proxy', 'k8s.node.name': node }));
    }
    return r;
  };
  const scope = { name: 'sockmesh.node-proxy' };
  channel?.start();
  const dest = values['access-log'] ?? 'stdout';
  const logFile = dest === 'none' || dest === 'stdout' ? undefined
    : new AccessLogFile(dest, { maxBytes: maxMb * 1024 * 1024, flushIntervalMs: flushMs }, (m) => process.stderr.write(`mesh-proxy: ${m}\n`));
  const accessLog = dest === 'stdout' ? (e: AccessLogEntry) => { process.stdout.write(`${JSON.stringify(e)}\n`); } : logFile && ((e: AccessLogEntry) => logFile.write(JSON.stringify(e)));
  const proxy = new MeshProxy({
    ...(accessLog && { accessLog }), tracing,
    ...(channel ? { onRequest: (r) => channel.record(r) } : queue && {
      onRequest: (r) => { if (r.trace) for (const o of requestSpans({ ...r, trace: asRequestTrace(r.trace, r.upstream ?? '', r.status) })) queue.push(finishedSpan({ ...o.span, resource: resourceOf(o.owner), scope })); },
    }),
  });
  const workloadsFile = values.workloads;
  if (workloadsFile) {
    const load = () => {
      try {
        proxy.setWorkloads(new Map(Object.entries(JSON.parse(readFileSync(workloadsFile, 'utf8')) as Record<string, Workload>)));
      } catch {
        // not written yet, or being replaced: the next change reads it
      }
    };
    load();
    watchFile(workloadsFile, { interval: 500 }, load);
  }
  let applying = Promise.resolve();
  const xds = new XdsClient({
    target: values.xds, nodeId: values['node-id'],
    onConfig: (cfg) => {
      applying = applying.then(() => proxy.apply(cfg)).catch((err: unknown) => { process.stderr.write(`mesh-proxy: ${(err as Error).message}\n`); });
    },
  });
  xds.start();
  let admin: AdminServer | undefined;
  if (values['admin-socket']) {
    admin = new AdminServer({
      socketPath: values['admin-socket'],
      ...(values['admin-address'] && { address: values['admin-address'] }),
      routes: {
        '/ready': () => (xds.connected && proxy.config ? { body: 'ready\n' } : { status: 503, body: 'not ready\n' }),
        '/config_dump': () => ({ body: { xds: xds.status(), listeners: proxy.listeners(), listenerErrors: Object.fromEntries(proxy.listenerErrors), config: summary(proxy) } }),
        '/stats': () => ({ body: { ...proxy.stats, xds: { connected: xds.connected, acks: xds.acks, nacks: xds.nacks }, ...(queue && { spans: queue.stats() }), ...(channel && { records: channel.stats() }), ...(logFile && { accessLog: logFile.stats() }) } }),
        '/metrics': () => ({
          body: renderPrometheus([
            { name: 'mesh_proxy_requests_total', help: 'Requests received.', type: 'counter', samples: [{ value: proxy.stats.requests }] },
            { name: 'mesh_proxy_responses_total', help: 'Responses by status class.', type: 'counter', samples: Object.entries(proxy.stats.responses).map(([k, v]) => ({ labels: { class: k }, value: v })) },
            { name: 'mesh_proxy_retries_total', help: 'Retries.', type: 'counter', samples: [{ value: proxy.stats.retries }] },
            { name: 'mesh_proxy_timeouts_total', help: 'Requests answered 504.', type: 'counter', samples: [{ value: proxy.stats.timeouts }] },
            { name: 'mesh_proxy_active_requests', help: 'Requests in flight.', type: 'gauge', samples: [{ value: proxy.stats.active }] },
            { name: 'mesh_proxy_rbac_requests_total', help: 'Requests on listeners with RBAC filters (AuthorizationPolicies), by decision: allowed, or denied with 403.', type: 'counter', samples: [
              { labels: { decision: 'allowed' }, value: proxy.stats.rbac.allowed }, { labels: { decision: 'denied' }, value: proxy.stats.rbac.denied },
            ] },
            { name: 'mesh_proxy_rbac_logged_total', help: 'Requests a LOG filter (an AUDIT policy) matched.', type: 'counter', samples: [{ value: proxy.stats.rbac.logged }] },
            ...(queue ? [
              { name: 'mesh_proxy_spans_exported_total', help: 'Spans exported to the collector.', type: 'counter' as const, samples: [{ value: queue.stats().exported }] },
              { name: 'mesh_proxy_spans_dropped_total', help: 'Spans lost: queue full, export failed, or still queued at shutdown.', type: 'counter' as const, samples: [
                { labels: { reason: 'queue_full' }, value: queue.stats().droppedQueueFull }, { labels: { reason: 'export_failed' }, value: queue.stats().failed },
                { labels: { reason: 'shutdown' }, value: queue.stats().droppedAtShutdown },
              ] },
            ] : []),
            ...(channel ? [
              { name: 'mesh_proxy_records_sent_total', help: 'Request records the agent took (its metrics, flows, and the sampled requests\' spans).', type: 'counter' as const, samples: [{ value: channel.stats().sent }] },
              { name: 'mesh_proxy_records_dropped_total', help: 'Request records lost: buffer full, or the agent did not take them.', type: 'counter' as const, samples: [
                { labels: { reason: 'buffer_full' }, value: channel.stats().dropped }, { labels: { reason: 'send_failed' }, value: channel.stats().failed },
              ] },
            ] : []),
            ...(logFile ? [
              { name: 'mesh_proxy_access_log_lines_total', help: 'Access log lines, by outcome: written, dropped (the disk fell behind by more than 8 MiB), failed (the write failed).', type: 'counter' as const, samples: [
                { labels: { outcome: 'written' }, value: logFile.stats().written }, { labels: { outcome: 'dropped' }, value: logFile.stats().dropped }, { labels: { outcome: 'failed' }, value: logFile.stats().failed },
              ] },
            ] : []),
            { name: 'mesh_proxy_xds_nacks_total', help: 'Configurations refused.', type: 'counter', samples: [{ value: xds.nacks }] },
          ]),
          contentType: 'text/plain; version=0.0.4; charset=utf-8',
        }),
      },
    });
    await admin.start();
  }
  process.stderr.write(`mesh-proxy: started (pid ${process.pid}), xDS ${values.xds} as ${values['node-id']}\n`);
  // Envoy's signal to reopen access logs (the file was moved): the next line goes to the path again
  const reopen = () => {
    logFile?.reopen().then(
      () => process.stderr.write(`mesh-proxy: SIGUSR1: access log ${dest} reopened\n`),
      (err: unknown) => process.stderr.write(`mesh-proxy: access log ${dest}: reopen: ${(err as Error).message}\n`),
    );
  };
  process.on('SIGUSR1', reopen);
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  process.off('SIGUSR1', reopen);
  process.stderr.write(`mesh-proxy: ${signal}: draining\n`);
  xds.stop();
  await proxy.stop(Number(values['drain-ms'] ?? 5000));
  await admin?.stop();
  await Promise.all([queue?.shutdown(), channel?.stop()]);
  if (workloadsFile) unwatchFile(workloadsFile);
  await logFile?.close();
  return 0;
}

function summary(proxy: MeshProxy): Record<string, unknown> {
  const c = proxy.config;
  if (!c) return {};
  return {
    listeners: [...c.listeners.values()].map((l) => ({ ...l, rbac: l.rbac.map((f) => ({ action: f.action, policies: f.policies.map((p) => p.name) })) })),
    routes: [...c.routes.values()].map((t) => ({ name: t.name, virtualHosts: t.virtualHosts.map((v) => ({ name: v.name, domains: v.domains, routes: v.routes.map((r) => ({ name: r.name, clusters: r.clusters, timeoutMs: r.timeoutMs, retry: r.retry && { ...r.retry, on: [...r.retry.on], codes: [...r.retry.codes] } })) })) })),
    clusters: [...c.clusters.values()].map((cl) => ({ ...cl, endpoints: c.endpoints.get(cl.edsName) ?? [] })),
  };
}

// exit when done: an upstream keep-alive socket or a stray timer must not keep a drained proxy alive
main().then((code) => { process.exit(code); }, (err: unknown) => {
  process.stderr.write(`mesh-proxy: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exitCode = 1;
});
