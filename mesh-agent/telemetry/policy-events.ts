/**
 * The kernel's policy events (sm_pol_events) as the agent reports them: a
 * flow record for observe and metrics, with the evaluator's reason (the
 * same words `policy check` prints), and the event the security detectors
 * watch. The kernel records facts only (addresses, ports, classes); which
 * policy denied and why is asked of the evaluator here, through the context.
 * Pure apart from the context.
 */
import type { PolicyEventRecord } from '../datapath/layout.js';
import type { Endpoint } from '../../policies/network-verdict.js';
import type { WorkloadIdentity } from '../../telemetry/workload-resource.js';
import type { FlowRecord } from './flow-tracker.js';
import type { PolicyEvent } from './security-events.js';

/** Why a connection is denied: the deciding policies ("ns/name", comma-separated) and the evaluator's sentence. */
export interface DenialReason {
  policy: string;
  reason: string;
}

export interface PolicyEventContext {
  /** the pod behind an address, any node */
  workloadOf: (ip: string) => WorkloadIdentity | undefined;
  /** whether the kernel judged this source as the pod at its address (it saw the pod's connect), not as a bare address */
  sourceIsPod: (ev: PolicyEventRecord) => boolean;
  /** the evaluator on one connection (to a pod, or for l7 events to the service behind a node proxy listener port) */
  explain: (q: { from: Endpoint; to: Endpoint | { listenerPort: number }; port: number; protocol: 'TCP' | 'UDP' }) => DenialReason | undefined;
  /** kernel monotonic ns → Unix epoch ms */
  toEpochMs: (monoNs: bigint) => number;
}

const PROTOCOLS: Record<number, 'TCP' | 'UDP'> = { 6: 'TCP', 17: 'UDP' };

function end(ip: string | undefined, port: number | undefined, w: WorkloadIdentity | undefined): FlowRecord['source'] {
  const address = ip === undefined ? '?' : port ? `${ip}:${port}` : ip;
  return { address, ...(w && { namespace: w.namespace, pod: w.pod, service: w.serviceName }) };
}

/** One kernel policy event → the flow observe shows and the detectors' event. */
export function policyEventRecords(ev: PolicyEventRecord, ctx: PolicyEventContext): { flow: FlowRecord; event: PolicyEvent } {
  const protocol = PROTOCOLS[ev.proto] ?? 'TCP';
  if (ev.kind === 'spoof') return spoofRecords(ev, ctx, protocol);
  const src = ev.srcIp !== undefined ? ctx.workloadOf(ev.srcIp) : undefined;
  const dst = ctx.workloadOf(ev.dstIp);
  const from: Endpoint = src && ev.srcIp !== undefined && ctx.sourceIsPod(ev)
    ? { kind: 'pod', namespace: src.namespace, name: src.pod }
    : { kind: 'ip', ip: ev.srcIp ?? '0.0.0.0' };
  const to: Endpoint | { listenerPort: number } = ev.direction === 'l7'
    ? { listenerPort: ev.dstPort }
    : dst ? { kind: 'pod', namespace: dst.namespace, name: dst.pod } : { kind: 'ip', ip: ev.dstIp };
  const why = ctx.explain({ from, to, port: ev.dstPort, protocol });
  const outcome = ev.kind === 'deny-connect' ? 'refused at connect (EPERM)' : ev.kind === 'cut' ? 'cut (the policy no longer allows it)' : 'dropped';
  const where = ev.direction === 'l7' ? 'at the node proxy\'s listener' : `by ${ev.direction}`;
  const atMs = ctx.toEpochMs(ev.tsNs);
  const flow: FlowRecord = {
    type: 'l4', time: new Date(atMs).toISOString(),
    source: end(ev.srcIp, ev.srcPort, from.kind === 'pod' ? src : undefined),
    destination: end(ev.dstIp, ev.dstPort, ev.direction === 'l7' ? undefined : dst),
    verdict: 'denied', policy: why?.policy ?? 'unknown', path: 'kernel', durationMs: 0, layer: 'kernel-l4',
    reason: `${outcome} ${where}: ${why?.reason ?? 'no policy explains it any more (it changed since)'}`,
    kernelEvent: ev.kind === 'deny-connect' ? 'refused' : ev.kind === 'cut' ? 'cut' : 'dropped',
    ...(ev.suppressed > 0 && { suppressed: ev.suppressed }),
  };
  const workload = (w: WorkloadIdentity | undefined) => (w ? `${w.namespace}/${w.pod}` : undefined);
  const srcWorkload = from.kind === 'pod' ? workload(src) : undefined;
  const dstWorkload = ev.direction === 'l7' ? undefined : workload(dst);
  const event: PolicyEvent = {
    atMs, kind: ev.kind === 'cut' ? 'cut' : 'denied', protocol,
    ...(ev.direction !== 'l7' && { direction: ev.direction }),
    source: { ip: ev.srcIp ?? '0.0.0.0', ...(srcWorkload && { workload: srcWorkload }) },
    destination: { ip: ev.dstIp, port: ev.dstPort, ...(dstWorkload && { workload: dstWorkload }) },
    ...(ev.suppressed > 0 && { suppressed: ev.suppressed }),
  };
  return { flow, event };
}

const label = (w: WorkloadIdentity | undefined, ip: string) => (w ? `${w.namespace}/${w.pod}` : ip);

/** A pod sent as another address (from a raw socket, or a frame its veth's guard caught): who sent it, whom it claimed to be. */
function spoofRecords(ev: PolicyEventRecord, ctx: PolicyEventContext, protocol: 'TCP' | 'UDP'): { flow: FlowRecord; event: PolicyEvent } {
  const senderIp = ev.senderIp ?? '0.0.0.0';
  const sender = ctx.workloadOf(senderIp);
  const claimedIp = ev.srcIp ?? '0.0.0.0';
  const claimed = ctx.workloadOf(claimedIp);
  const dst = ctx.workloadOf(ev.dstIp);
  const atMs = ctx.toEpochMs(ev.tsNs);
  const flow: FlowRecord = {
    type: 'l4', time: new Date(atMs).toISOString(),
    source: end(senderIp, undefined, sender), destination: end(ev.dstIp, ev.dstPort, dst),
    verdict: 'denied', policy: 'anti-spoofing', path: 'kernel', durationMs: 0, layer: 'kernel-l4', kernelEvent: 'dropped',
    reason: `dropped as it left: ${label(sender, senderIp)} sent ${protocol} as ${claimed ? `${label(claimed, claimedIp)}'s address ${claimedIp}` : claimedIp}`,
  };
  const event: PolicyEvent = {
    atMs, kind: 'spoof', protocol,
    source: { ip: claimedIp, ...(claimed && { workload: label(claimed, claimedIp) }) },
    destination: { ip: ev.dstIp, port: ev.dstPort, ...(dst && { workload: label(dst, ev.dstIp) }) },
    spoof: { ...(sender && { sender: label(sender, senderIp) }), claimedIp, ...(claimed && { claimedWorkload: label(claimed, claimedIp) }) },
  };
  return { flow, event };
}
