/**
 * The agent's CPU per request when the node proxy is Envoy against
 * mesh-proxy, untraced and traced. mesh-proxy: its request records over the
 * relay socket. Envoy: its access log entries (every request, over gRPC:
 * envoy-access-log.ts) and, traced, its tracer's spans too (OTLP/gRPC, read
 * back into requests: envoy-spans.ts). Envoy cannot run here, so this is the
 * agent's share only: the same requests (one attempt each, answered), their
 * bytes made beforehand by a sender process (Envoy's spans encoded by the
 * official OTLP protobuf serializer and its log entries by Envoy's own protos,
 * shaped as Envoy writes them; mesh-proxy's records by its own encoder) and
 * sent over the real sockets, 500 requests a batch (the relay's batch at
 * 1,000 requests/s; Envoy's export at the 1,000 spans its bootstrap sets; its
 * log in messages of 250 entries, about its 64 KiB buffer). The agent runs in
 * this process with its trace file as the target; its CPU is this process's
 * own over each round (the sender's is not counted). Forms alternate inside
 * each round; medians over rounds.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { AgentTelemetry } from '../mesh-agent/telemetry/agent-telemetry.js';
import { encodeRecord } from '../mesh-proxy/agent-channel.js';
import type { RequestRecord } from '../mesh-proxy/proxy.js';
import { repoRoot } from '../mesh-agent/paths.js';
import { TRACE_EXPORT_PATH } from '../telemetry/otlp-grpc-exporter.js';
import { STREAM_ACCESS_LOGS_PATH } from '../mesh-agent/telemetry/envoy-access-log.js';
import { envoyRoot } from '../xds/envoy-protos.js';
import { postToRelay } from '../telemetry/relay-post.js';
import { epochUs } from '../telemetry/request-spans.js';
import { telemetryOptions } from '../telemetry/telemetry-options.js';
import { randomSpanId, randomTraceId } from '../telemetry/trace-ids.js';
import { bootstrapMedian, median } from './bench-stats.js';
import { gitCommit, gitDirty, machine } from './bench-meta.js';

const HELP = `usage: node dist/benchmarks/envoy-spans-bench.js [--rounds N] [--batches N] [--out DIR]

The agent's CPU per request from Envoy's access log (every request) and, traced,
its spans (OTLP/gRPC), against mesh-proxy's records (relay), untraced and
traced. Writes envoy-spans.json and envoy-spans.md to --out (default
benchmarks/results).

  --rounds N    rounds, each form once per round, alternating (default 16)
  --batches N   batches of 500 requests per form per round (default 20)
`;

const BATCH = 500;
const CALLER = '198.18.0.2';
const BACKEND = '198.18.0.3:8080';
const LISTENER = '198.18.255.254:20000';
type Form = 'untraced' | 'mesh-proxy' | 'envoy-untraced' | 'envoy';
const FORMS: Form[] = ['untraced', 'mesh-proxy', 'envoy-untraced', 'envoy'];

// ---------------------------------------------------------------------------
// The sender (a child process): bytes made before the rounds, sent on demand

function relayBody(traced: boolean): Buffer {
  const recs: string[] = [];
  for (let i = 0; i < BATCH; i++) {
    const now = epochUs();
    const r: RequestRecord = {
      endMs: Date.now(), durationMs: 0.25, method: 'GET', path: '/api/items', route: '/api/*', status: 200, caller: CALLER, callerPort: 40000 + (i % 16),
      local: '198.18.255.254', localPort: 20000, upstream: BACKEND, host: 'web.shop', attempts: 1,
      traceId: traced ? randomTraceId() : '', spanId: traced ? randomSpanId() : '', sampled: traced,
      ...(traced && { trace: { startUs: now - 250, endUs: now, parentSpanId: undefined, traceState: undefined, protocol: '1.1', serverAddress: 'web.shop', serverPort: 80, attemptSpanId: randomSpanId(), attemptStartUs: now - 200, attemptEndUs: now - 10 } }),
    };
    recs.push(JSON.stringify(encodeRecord(r)));
  }
  return Buffer.from(`{"records":[${recs.join(',')}]}`);
}

/** 500 requests' spans as Envoy's tracer writes them (one request span, one attempt span each), in one export request. */
function envoyBody(): Buffer {
  const mem = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'sockmesh-node-proxy' }), sampler: new AlwaysOnSampler(), spanProcessors: [new SimpleSpanProcessor(mem)] });
  const tracer = provider.getTracer('');
  const tags = { 'sockmesh.listener': LISTENER, 'sockmesh.service': 'shop/web:80' };
  for (let i = 0; i < BATCH; i++) {
    const t0 = Date.now();
    const req = tracer.startSpan('/api/*', { kind: SpanKind.SERVER, startTime: t0 });
    const at = tracer.startSpan('router shop/web:80 egress', { kind: SpanKind.CLIENT, startTime: t0 }, trace.setSpan(ROOT_CONTEXT, req));
    at.setAttributes({ 'http.protocol': 'HTTP/1.1', upstream_address: BACKEND, 'peer.address': BACKEND, 'http.status_code': '200', response_flags: '-', upstream_cluster: 'shop/web:80', 'upstream_cluster.name': 'shop/web:80', component: 'proxy', ...tags });
    at.end();
    req.setAttributes({
      node_id: 'n1~node-proxy', zone: '', 'http.url': 'http://web.shop/api/items', 'http.method': 'GET', downstream_cluster: '-', user_agent: 'bench', 'http.protocol': 'HTTP/1.1',
      request_size: '0', response_size: '12', 'peer.address': CALLER, 'http.status_code': '200', response_flags: '-', upstream_cluster: 'shop/web:80', 'upstream_cluster.name': 'shop/web:80', component: 'proxy', ...tags,
    });
    req.end();
  }
  const bytes = ProtobufTraceSerializer.serializeRequest(mem.getFinishedSpans());
  if (!bytes) throw new Error('the OTLP serializer gave nothing');
  return Buffer.from(bytes);
}

/** 500 requests' access log entries as Envoy's http_grpc logger sends them, in two messages of 250 (Envoy's own protos). */
function logBodies(): Buffer[] {
  const type = envoyRoot().lookupType('envoy.service.accesslog.v3.StreamAccessLogsMessage');
  const sock = (address: string, port_value: number) => ({ socket_address: { address, port_value } });
  const [bip, bport] = BACKEND.split(':') as [string, string];
  const out: Buffer[] = [];
  for (let m = 0; m < BATCH / 250; m++) {
    const now = Date.now();
    const log_entry = Array.from({ length: 250 }, (_, i) => ({
      common_properties: {
        downstream_remote_address: sock(CALLER, 40000 + (i % 16)), downstream_local_address: sock('198.18.255.254', 20000), downstream_direct_remote_address: sock(CALLER, 40000 + (i % 16)),
        upstream_remote_address: sock(bip, Number(bport)), upstream_local_address: sock('198.18.255.254', 50000 + (i % 16)), upstream_cluster: 'shop/web:80',
        start_time: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 }, duration: { nanos: 2_500_000 }, time_to_last_downstream_tx_byte: { nanos: 2_400_000 },
        route_name: 'shop/web#0', upstream_request_attempt_count: 1, response_flags: {}, custom_tags: { 'sockmesh.route': '/api/*' },
      },
      protocol_version: 'HTTP11',
      request: {
        request_method: 'GET', scheme: 'http', authority: 'web.shop', path: '/api/items', user_agent: 'bench', request_id: `f0e1d2c3-${i}`, request_headers_bytes: 120,
        request_headers: { traceparent: `00-${'0af7651916cd43dd8448eb211c8031'}${(i % 256).toString(16).padStart(2, '0')}-b7ad6b7169203331-01` },
      },
      response: { response_code: { value: 200 }, response_code_details: 'via_upstream', response_headers_bytes: 90, response_body_bytes: 12 },
    }));
    out.push(Buffer.from(type.encode(type.fromObject({ ...(m === 0 && { identifier: { node: { id: 'bench~node-proxy' }, log_name: 'sockmesh' } }), http_logs: { log_entry } })).finish()));
  }
  return out;
}

async function sender(): Promise<void> {
  const { relaySocket, envoySocket, logSocket, batches } = JSON.parse(process.argv[3]!) as { relaySocket: string; envoySocket: string; logSocket: string; batches: number };
  const relay = { untraced: Array.from({ length: batches }, () => relayBody(false)), traced: Array.from({ length: batches }, () => relayBody(true)) };
  const spans = Array.from({ length: batches }, () => envoyBody());
  const logs = Array.from({ length: batches }, () => logBodies());
  const client = new grpc.Client(`unix:${envoySocket}`, grpc.credentials.createInsecure());
  const logClient = new grpc.Client(`unix:${logSocket}`, grpc.credentials.createInsecure());
  const exportOnce = (b: Buffer) => new Promise<void>((resolve, reject) => {
    client.makeUnaryRequest(TRACE_EXPORT_PATH, (x: Buffer) => x, (x: Buffer) => x, b, (err, res) => (err ? reject(err) : res && res.length > 0 ? reject(new Error(`partial success: ${res.toString('latin1')}`)) : resolve()));
  });
  /** a log stream with these messages, ended once written; resolves when the agent answered (it read them all) */
  const logStream = (messages: Buffer[]) => new Promise<void>((resolve, reject) => {
    const call = logClient.makeClientStreamRequest(STREAM_ACCESS_LOGS_PATH, (x: Buffer) => x, (x: Buffer) => x, (err) => (err ? reject(err) : resolve()));
    for (const m of messages) call.write(m);
    call.end();
  });
  const bytes = (b: Buffer[]) => b.reduce((n, x) => n + x.length, 0) / BATCH;
  process.send!({
    ready: true,
    bytesPerRequest: { untraced: bytes([relay.untraced[0]!]), 'mesh-proxy': bytes([relay.traced[0]!]), 'envoy-untraced': bytes(logs[0]!), envoy: bytes([...logs[0]!, spans[0]!]) },
  });
  process.on('message', (m: { form: Form }) => {
    void (async () => {
      if (m.form === 'untraced' || m.form === 'mesh-proxy') {
        for (const b of m.form === 'untraced' ? relay.untraced : relay.traced) if (!(await postToRelay(relaySocket, '/v1/requests', b, {}, 10_000))) throw new Error('the relay refused a batch');
      } else {
        await logStream(logs.flat());
        if (m.form === 'envoy') for (const b of spans) await exportOnce(b);
      }
      process.send!({ done: m.form });
    })().catch((err: Error) => { process.send!({ error: err.message }); });
  });
}

// ---------------------------------------------------------------------------
// The agent and the rounds

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string' }, batches: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const rounds = Number(values.rounds ?? 16);
  const batches = Number(values.batches ?? 20);
  if (!(Number.isInteger(rounds) && rounds >= 2) || !(Number.isInteger(batches) && batches >= 1)) throw new Error('--rounds must be ≥ 2 and --batches ≥ 1 (whole numbers)');
  const out = values.out ?? join(repoRoot(), 'benchmarks', 'results');
  const dir = mkdtempSync(join(tmpdir(), 'sm-envoy-bench-'));
  const relaySocket = join(dir, 'relay.sock');
  const envoySocket = join(dir, 'envoy-spans.sock');
  const logSocket = join(dir, 'envoy-als.sock');
  const workloads: Record<string, { namespace: string; pod: string; serviceName: string }> = {
    [CALLER]: { namespace: 'shop', pod: 'client-1', serviceName: 'client' }, [BACKEND.split(':')[0]!]: { namespace: 'shop', pod: 'web-1', serviceName: 'web' },
  };
  const tel = new AgentTelemetry({
    telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: join(dir, 'traces.jsonl'), SOCKMESH_TRACES_FILE_MAX_BYTES: String(1 << 30) }), node: 'bench', relaySocket, envoySpansSocket: envoySocket,
    envoyAccessLogSocket: logSocket, routeTemplateOf: (name) => (name === 'shop/web#0' ? '/api/*' : undefined),
    workloadOf: (ip) => workloads[ip], serviceOf: () => 'shop/web',
  });
  await tel.start();
  let child: ChildProcess | undefined;
  try {
    child = fork(fileURLToPath(import.meta.url), ['--sender', JSON.stringify({ relaySocket, envoySocket, logSocket, batches })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let waiting: { resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void } | undefined;
    child.on('message', (m: Record<string, unknown>) => (m.error ? waiting?.reject(new Error(String(m.error))) : waiting?.resolve(m)));
    child.on('exit', (code) => waiting?.reject(new Error(`the sender exited (${code})`)));
    const next = () => new Promise<Record<string, unknown>>((resolve, reject) => { waiting = { resolve, reject }; });
    const ready = await next();
    process.stderr.write(`sender ready; bytes per request ${JSON.stringify(ready.bytesPerRequest)}\n`);
    const cpu: Record<Form, number[]> = { untraced: [], 'mesh-proxy': [], 'envoy-untraced': [], envoy: [] };
    for (let r = 0; r < rounds; r++) {
      // each round a different order (a rotation, reversed every other round)
      const order = FORMS.map((_, i) => FORMS[(i + r) % FORMS.length]!);
      if (r % 2 === 1) order.reverse();
      for (const form of order) {
        tel.setTracing({ enabled: form === 'mesh-proxy' || form === 'envoy' });
        const c0 = process.cpuUsage();
        child.send({ form });
        await next();
        await new Promise((res) => setTimeout(res, 150)); // what the batch left to do (the trace file's writes)
        const c = process.cpuUsage(c0);
        cpu[form].push((c.user + c.system) / (batches * BATCH));
      }
      process.stderr.write(`round ${r + 1}/${rounds}: ${FORMS.map((f) => `${f} ${cpu[f].at(-1)!.toFixed(2)} µs`).join(', ')}\n`);
    }
    const status = tel.status() as { relay: { requests: number; spans: number }; envoySpans: Record<string, number>; envoyAccessLog: Record<string, number> };
    const want = rounds * batches * BATCH;
    if (status.envoySpans.requests !== want || status.envoySpans.orphaned !== 0 || status.envoySpans.refused !== 0) throw new Error(`Envoy's spans: ${JSON.stringify(status.envoySpans)}, expected ${want} requests read and none orphaned or refused`);
    if (status.envoyAccessLog.entries !== 2 * want || status.envoyAccessLog.refused !== 0 || status.envoyAccessLog.invalid !== 0) throw new Error(`Envoy's access log: ${JSON.stringify(status.envoyAccessLog)}, expected ${2 * want} entries, none refused`);
    const med = Object.fromEntries(FORMS.map((f) => [f, median(cpu[f])])) as Record<Form, number>;
    const extra = (f: 'mesh-proxy' | 'envoy') => cpu[f].map((v, i) => v - cpu[f === 'envoy' ? 'envoy-untraced' : 'untraced'][i]!);
    const result = {
      benchmark: 'envoy-spans', commit: gitCommit(), dirty: gitDirty(), machine: machine(), at: new Date().toISOString(), node: process.version,
      rounds, requestsPerRound: batches * BATCH, batch: BATCH, bytesPerRequest: ready.bytesPerRequest,
      agentCpuUsPerRequest: med, perRound: cpu,
      tracedExtraUs: { 'mesh-proxy': median(extra('mesh-proxy')), envoy: median(extra('envoy')) },
      tracedExtraUs90: { 'mesh-proxy': bootstrapMedian(extra('mesh-proxy')), envoy: bootstrapMedian(extra('envoy')) },
      envoyOverMeshProxy: median(cpu.envoy.map((v, i) => v / cpu['mesh-proxy'][i]!)),
      counts: { relayRequests: status.relay.requests, relaySpans: status.relay.spans, envoySpans: status.envoySpans, envoyAccessLog: status.envoyAccessLog },
    };
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'envoy-spans.json'), JSON.stringify(result, null, 2) + '\n');
    const md = [
      `# The agent's CPU per request: Envoy's access log and spans against mesh-proxy's records`, '',
      `commit ${result.commit}${result.dirty ? ' (with uncommitted changes)' : ''}; ${result.machine.cores} × ${result.machine.cpu}; kernel ${result.machine.kernel}; node ${result.node}; ${result.at}`, '',
      `${rounds} rounds of ${batches * BATCH} requests per form (batches of ${BATCH}), forms alternated; the agent's own CPU (this process), medians over rounds.`,
      `Envoy cannot run here: its log entries (Envoy's own protos) and spans (the official OTLP protobuf serializer) are made beforehand, shaped as it writes them; Envoy's own cost is not in these figures.`, '',
      '| form | agent µs / request | traced extra over its untraced form, µs (90 % interval) | bytes / request |', '|---|---:|---:|---:|',
      `| mesh-proxy record, untraced | ${med.untraced.toFixed(2)} | – | ${(ready.bytesPerRequest as Record<Form, number>).untraced.toFixed(0)} |`,
      `| mesh-proxy record, traced | ${med['mesh-proxy'].toFixed(2)} | ${result.tracedExtraUs['mesh-proxy'].toFixed(2)} (${result.tracedExtraUs90['mesh-proxy'].map((x) => x.toFixed(2)).join('–')}) | ${(ready.bytesPerRequest as Record<Form, number>)['mesh-proxy'].toFixed(0)} |`,
      `| Envoy's access log entry, untraced | ${med['envoy-untraced'].toFixed(2)} | – | ${(ready.bytesPerRequest as Record<Form, number>)['envoy-untraced'].toFixed(0)} |`,
      `| Envoy's entry and spans (OTLP/gRPC), traced | ${med.envoy.toFixed(2)} | ${result.tracedExtraUs.envoy.toFixed(2)} (${result.tracedExtraUs90.envoy.map((x) => x.toFixed(2)).join('–')}) | ${(ready.bytesPerRequest as Record<Form, number>).envoy.toFixed(0)} |`, '',
      `Envoy traced over mesh-proxy traced, per round: median ratio ${result.envoyOverMeshProxy.toFixed(2)}. Every Envoy request's spans were read (${status.envoySpans.requests}), none orphaned or refused; every log entry too (${status.envoyAccessLog.entries}).`, '',
    ].join('\n');
    writeFileSync(join(out, 'envoy-spans.md'), md);
    process.stdout.write(md);
  } finally {
    child?.kill();
    await tel.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--sender') {
  sender().catch((err: Error) => { process.stderr.write(`sender: ${err.stack ?? err.message}\n`); process.exit(1); });
} else {
  main().catch((err: Error) => { process.stderr.write(`${err.stack ?? err.message}\n`); process.exit(1); });
}
