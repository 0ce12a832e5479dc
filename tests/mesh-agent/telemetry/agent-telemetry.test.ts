/* The agent's telemetry over its real relay socket: the node proxy's request records linked to the kernel's connections. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { AgentTelemetry } from '../../../mesh-agent/telemetry/agent-telemetry.js';
import type { KernelFlowEvent } from '../../../mesh-agent/telemetry/flow-tracker.js';
import { encodeRecord } from '../../../mesh-proxy/agent-channel.js';
import type { RequestRecord } from '../../../mesh-proxy/proxy.js';
import { postToRelay } from '../../../telemetry/relay-post.js';
import { telemetryOptions } from '../../../telemetry/telemetry-options.js';
import { epochUs } from '../../../telemetry/request-spans.js';

const CALLER = { ip: '198.18.0.2', port: 40000 };
const PROXY = { ip: '198.19.0.10', port: 80 };
const WORKLOADS = { '198.18.0.2': { namespace: 'shop', pod: 'loadgen-1', serviceName: 'loadgen' }, '198.18.0.3': { namespace: 'shop', pod: 'web-1', serviceName: 'web' } } as const;

function record(i: number): RequestRecord {
  const now = epochUs();
  return {
    endMs: Date.now(), durationMs: 0.25, method: 'GET', path: '/', status: 200, caller: CALLER.ip, callerPort: CALLER.port, local: PROXY.ip, localPort: PROXY.port,
    upstream: '198.18.0.3:8080', host: 'web', attempts: 1, traceId: `${i}`.padStart(32, 'a'), spanId: `${i}`.padStart(16, 'b'), sampled: true,
    trace: { startUs: now - 250, endUs: now, protocol: '1.1', serverAddress: 'web', serverPort: 80, retries: [], attempts: [{ spanId: `${i}`.padStart(16, 'c'), startUs: now - 200, endUs: now - 10, peer: '198.18.0.3:8080', status: 200 }] },
  } as RequestRecord;
}

const kernel = (kind: 'open' | 'close', tsNs: bigint): KernelFlowEvent => ({ kind, cookie: 7n, tsNs, local: CALLER, remote: PROXY, active: true, shortCircuited: false, stackSentBytes: 10, stackRecvBytes: 20, redirSentBytes: 0 });

t.test('each batch of the node proxy\'s records is linked after the kernel\'s events waiting to be read (beforeRequests), and a closed connection waits for the batch', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-agent-tel-'));
  const pending: KernelFlowEvent[] = [];
  let drained = 0;
  const tel: AgentTelemetry = new AgentTelemetry({
    telemetry: telemetryOptions({ SOCKMESH_TRACES_FILE: join(dir, 'traces.jsonl') }), node: 'n1', relaySocket: join(dir, 'relay.sock'),
    workloadOf: (ip) => WORKLOADS[ip as keyof typeof WORKLOADS], serviceOf: () => 'shop/web', flowLingerMs: 200,
    // as the agent does: the flow ring drained before a batch (here: the events the "kernel" wrote since the last poll)
    beforeRequests: () => { drained++; tel.onFlowEvents(pending.splice(0)); },
  });
  await tel.start();
  t.teardown(async () => { await tel.stop(); rmSync(dir, { recursive: true, force: true }); });
  const post = async (records: RequestRecord[]) => t.ok(await postToRelay(tel.relaySocket, '/v1/requests', Buffer.from(JSON.stringify({ records: records.map(encodeRecord) })), {}, 5000), 'the relay took the batch');
  const linked = () => (tel.status().relay as { linked: number }).linked;

  pending.push(kernel('open', 1_000_000n)); // opened, not yet polled when the records come
  await post([record(1)]);
  t.equal(drained, 1, 'the kernel\'s events were drained first');
  t.equal(linked(), 1, 'so the request links to the connection it rode');

  pending.push(kernel('close', 9_000_000n));
  await post([]); // a batch the proxy cut before the close: it drains the close, but cannot hold the close's last requests
  t.equal(drained, 2);
  await new Promise((r) => setTimeout(r, 300)); // the wait ends 5 lingers (1 s) after the close at the latest
  t.equal(tel.recentFlows({ type: 'l4' }).length, 0, 'closed, its linger over, the proxy busy and only the batch that drained the close since: it waits for late requests');
  await post([record(2)]);
  t.equal(linked(), 2, 'the late request links too');
  await new Promise((r) => setTimeout(r, 100)); // it looks again every quarter linger
  t.match(tel.recentFlows({ type: 'l4' }), [{ type: 'l4', source: { pod: 'loadgen-1' } }], 'after the second batch the connection is reported');
});
