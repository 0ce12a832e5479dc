/* The kernel's policy events as the agent reports them: the flow with the evaluator's reason, the metric, and the detectors' input. */
import t from 'tap';
import type { PolicyEventRecord } from '../../../mesh-agent/datapath/layout.js';
import { FlowMetrics } from '../../../mesh-agent/telemetry/flow-metrics.js';
import { type PolicyEventContext, policyEventRecords } from '../../../mesh-agent/telemetry/policy-events.js';
import type { Endpoint } from '../../../policies/network-verdict.js';

const WORKLOADS = new Map([
  ['198.18.0.2', { namespace: 'app', pod: 'client', serviceName: 'client' }],
  ['198.18.0.3', { namespace: 'app', pod: 'server', serviceName: 'server' }],
]);

function context(asked: unknown[]): PolicyEventContext {
  return {
    workloadOf: (ip) => WORKLOADS.get(ip),
    sourceIsPod: (ev) => ev.peer === 17,
    explain: (q) => {
      asked.push(q);
      return { policy: 'app/server-deny-all', reason: 'denied: app/server is selected for ingress by app/server-deny-all; none allows it' };
    },
    toEpochMs: (ns) => Number(ns / 1_000_000n),
  };
}

const base: PolicyEventRecord = {
  tsNs: 1_764_000_000_000_000_000n, cookie: 7n, kind: 'deny-connect', direction: 'ingress', srcIp: '198.18.0.2', dstIp: '198.18.0.3',
  srcPort: 0, dstPort: 8080, subject: 20, peer: 17, proto: 6, suppressed: 0,
};

t.test('a connect refused by the destination\'s ingress: both pods named, the evaluator asked about the pods', async (t) => {
  const asked: unknown[] = [];
  const { flow, event } = policyEventRecords(base, context(asked));
  t.same(asked, [{ from: { kind: 'pod', namespace: 'app', name: 'client' }, to: { kind: 'pod', namespace: 'app', name: 'server' }, port: 8080, protocol: 'TCP' }]);
  t.match(flow, {
    type: 'l4', verdict: 'denied', layer: 'kernel-l4', kernelEvent: 'refused', policy: 'app/server-deny-all', path: 'kernel',
    source: { address: '198.18.0.2', namespace: 'app', pod: 'client' }, destination: { address: '198.18.0.3:8080', pod: 'server' },
    reason: 'refused at connect (EPERM) by ingress: denied: app/server is selected for ingress by app/server-deny-all; none allows it',
    time: new Date(1_764_000_000_000).toISOString(),
  });
  t.same(event, {
    atMs: 1_764_000_000_000, kind: 'denied', protocol: 'TCP', direction: 'ingress',
    source: { ip: '198.18.0.2', workload: 'app/client' }, destination: { ip: '198.18.0.3', port: 8080, workload: 'app/server' },
  });
});

t.test('a SYN dropped whose source the kernel judged as an address: the pod at that address is not blamed', async (t) => {
  const asked: { from: Endpoint }[] = [];
  const { flow, event } = policyEventRecords({ ...base, kind: 'deny-syn', peer: 2, srcPort: 40000 }, context(asked as unknown[]));
  t.same(asked[0]!.from, { kind: 'ip', ip: '198.18.0.2' }, 'asked as an address');
  t.equal(flow.kernelEvent, 'dropped');
  t.equal(flow.source.pod, undefined);
  t.equal(flow.source.address, '198.18.0.2:40000');
  t.same(event.source, { ip: '198.18.0.2' });
});

t.test('a client refused at an L7 listener, and a cut connection', async (t) => {
  const asked: { to: unknown }[] = [];
  const l7 = policyEventRecords({ ...base, direction: 'l7', dstIp: '198.18.0.1', dstPort: 15001 }, context(asked as unknown[]));
  t.same(asked[0]!.to, { listenerPort: 15001 }, 'the service behind the listener is asked about');
  t.match(l7.flow.reason, /^refused at connect \(EPERM\) at the node proxy's listener: /);
  t.notOk('direction' in l7.event, 'no direction for the detectors');
  const cut = policyEventRecords({ ...base, kind: 'cut', srcPort: 41000 }, context([]));
  t.equal(cut.flow.kernelEvent, 'cut');
  t.match(cut.flow.reason, /^cut \(the policy no longer allows it\) by ingress: /);
  t.equal(cut.event.kind, 'cut');
});

t.test('no explanation any more (the policy changed since): said so, not invented', async (t) => {
  const ctx = { ...context([]), explain: () => undefined };
  const { flow } = policyEventRecords({ ...base, proto: 17, kind: 'deny-udp' }, ctx);
  t.equal(flow.policy, 'unknown');
  t.match(flow.reason, /no policy explains it any more/);
});

t.test('metrics: kernel denials by pair, layer and policy; not counted as connections', async (t) => {
  const m = new FlowMetrics();
  const { flow } = policyEventRecords(base, context([]));
  m.record(flow);
  m.record(flow);
  m.record({ ...flow, destination: { address: '203.0.113.9:443' } });
  const folded = policyEventRecords({ ...base, suppressed: 4 }, context([]));
  t.equal(folded.flow.suppressed, 4, 'a folded record says how many it stands for');
  t.equal(folded.event.suppressed, 4, 'and so does the detectors\' event');
  m.record(folded.flow);
  m.record({ type: 'security', time: flow.time, securityType: 'scan', source: { address: '198.18.0.2' }, destination: { address: '' }, verdict: 'denied', path: 'kernel', durationMs: 0 });
  const fam = Object.fromEntries(m.families().map((f) => [f.name, f.samples]));
  t.same(fam.sockmesh_policy_denials_total, [
    { labels: { source_workload: 'app/client', destination_service: 'app/server', layer: 'kernel-l4', policy: 'app/server-deny-all' }, value: 7 },
    { labels: { source_workload: 'app/client', destination_service: '203.0.113.9', layer: 'kernel-l4', policy: 'app/server-deny-all' }, value: 1 },
  ]);
  t.same(fam.sockmesh_connections_total, [], 'a refused connect is no connection');
  t.same(fam.sockmesh_security_events_total, [{ labels: { type: 'scan' }, value: 1 }]);
});

t.test('a forged source address: the sending pod (from its cgroup) and the pod it claimed to be, for the spoofing detector', async (t) => {
  const WITH_EVIL = new Map([...WORKLOADS, ['198.18.0.9', { namespace: 'app', pod: 'evil', serviceName: 'evil' }]]);
  const asked: unknown[] = [];
  const ctx = { ...context(asked), workloadOf: (ip: string) => WITH_EVIL.get(ip) };
  const { flow, event } = policyEventRecords({ ...base, kind: 'spoof', direction: 'egress', srcIp: '198.18.0.2', srcPort: 41000, senderIp: '198.18.0.9' }, ctx);
  t.same(asked, [], 'no policy to explain: forging is never allowed');
  t.match(flow, { verdict: 'denied', policy: 'anti-spoofing', kernelEvent: 'dropped', source: { pod: 'evil' }, destination: { pod: 'server' } });
  t.equal(flow.reason, 'dropped as it left: app/evil sent TCP as app/client\'s address 198.18.0.2');
  t.same(event.spoof, { sender: 'app/evil', claimedIp: '198.18.0.2', claimedWorkload: 'app/client' });
  t.equal(event.kind, 'spoof');
});
