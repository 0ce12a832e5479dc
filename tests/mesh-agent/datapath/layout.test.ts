import t from 'tap';
import { btfOfFile, type BtfTypes } from '../../../mesh-agent/datapath/libbpf.js';
import {
  decodeBackend, decodeBackendKey, decodeCgroupId, decodeIPv4, decodeService, decodeServiceKey, decodeSockKey, encodeBackend,
  encodeBackendKey, encodeCgroupId, encodeIPv4, encodeService, encodeServiceKey, encodeSockKey, layoutFromBtf,
  decodePolicyEvent, decodePolicyKey, decodePolicySubject, encodeIpcacheKey, encodeIpcacheValue, encodePolicyKey, encodePolicySubject, encodePolicyValue,
} from '../../../mesh-agent/datapath/layout.js';
import { defaultObjectPath } from '../../../mesh-agent/paths.js';

t.test('the compiled object agrees with the agent', async (t) => {
  const layout = layoutFromBtf(btfOfFile(defaultObjectPath()));
  t.same([...layout.counters.keys()], [
    'sock_inserted', 'sock_insert_failed', 'sock_skipped', 'msg_redirected', 'bytes_redirected',
    'msg_passed', 'bytes_passed', 'svc_translated', 'svc_no_backend', 'svc_backend_miss', 'svc_not_enrolled',
    'flow_events_lost', 'pol_allowed', 'pol_egress_denied', 'pol_ingress_denied', 'pol_syn_denied',
    'pol_udp_denied', 'pol_ticket_hit', 'pol_no_ticket', 'pol_cut', 'pol_events_lost', 'pol_ipv6_denied', 'pol_spoof_dropped', 'pol_guard_dropped',
  ]);
  t.equal(layout.counters.get('sock_inserted'), 0);
  t.equal(layout.endpointEnrolledFlag, 1);
  t.equal(layout.serviceAnyClientFlag, 1);
  t.equal(layout.cgroupEnrolledFlag, 1);
  t.same({ ...layout.policy, eventKinds: [...layout.policy.eventKinds] }, {
    flagIngressIsolated: 1, flagEgressIsolated: 2, flagPod: 4, flagProxy: 8, peerAny: 0, peerAnyPod: 1, peerWorld: 2, peerNodeProxy: 3,
    dirIngress: 0, dirEgress: 1, dirL7: 2, eventKinds: [[1, 'deny-connect'], [2, 'deny-syn'], [3, 'deny-udp'], [4, 'cut'], [5, 'spoof']],
  });
});

t.test('policy entries are encoded as the kernel reads them', async (t) => {
  const layout = layoutFromBtf(btfOfFile(defaultObjectPath()));
  // prefixlen (LE) | subject | peer | dir | proto | port big-endian: the port's high bits come first
  const k = encodePolicyKey({ subject: 17, peer: 2, dir: 1, proto: 6, port: 8080, prefixLen: 88 });
  t.equal(k.toString('hex'), '58000000' + '11000000' + '02000000' + '01' + '06' + '1f90');
  t.same(decodePolicyKey(k), { prefixLen: 88, subject: 17, peer: 2, dir: 1, proto: 6, port: 8080 });
  t.throws(() => encodePolicyKey({ subject: 1, peer: 1, dir: 0, proto: 6, port: 1, prefixLen: 97 }), /64..96, got 97/);
  t.throws(() => encodePolicyKey({ subject: -1, peer: 1, dir: 0, proto: 6, port: 1, prefixLen: 96 }), /subject must be a u32, got -1/);
  // every port of UDP for every pod; a port block of 32768 ports (81 bits)
  t.equal(encodePolicyKey({ subject: 17, peer: 1, dir: 0, proto: 17, port: 0, prefixLen: 80 }).toString('hex'), '50000000' + '11000000' + '01000000' + '00' + '11' + '0000');
  t.equal(encodePolicyKey({ subject: 18, peer: 2, dir: 1, proto: 132, port: 32768, prefixLen: 81 }).toString('hex'), '51000000' + '12000000' + '02000000' + '01' + '84' + '8000');
  t.equal(encodePolicyValue(258).toString('hex'), '02010000' + '00000000');
  t.equal(encodeIpcacheKey('10.1.2.3', 8).toString('hex'), '08000000' + '0a000000', 'host bits cleared');
  t.equal(encodeIpcacheKey('0.0.0.0', 0).toString('hex'), '00000000' + '00000000');
  t.throws(() => encodeIpcacheKey('2001:db8::1', 32), /not an IPv4 address/);
  t.equal(encodeIpcacheKey('198.18.0.0', 16).toString('hex'), '10000000' + 'c6120000');
  t.throws(() => encodeIpcacheKey('198.18.0.0', 33), /0..32, got 33/);
  t.equal(encodeIpcacheValue({ peer: 16, addrPeer: 2, flags: 4 }).toString('hex'), '10000000' + '02000000' + '04000000' + '00000000');
  const subj = { subject: 20, peer: 21, flags: 3, ip: '198.18.0.7' };
  t.same(decodePolicySubject(encodePolicySubject(subj)), subj);
  t.same(decodePolicySubject(encodePolicySubject({ subject: 0, peer: 3, flags: 0 })), { subject: 0, peer: 3, flags: 0 });
  const ev = Buffer.alloc(64);
  ev.writeBigUInt64LE(5n, 0);
  ev.writeBigUInt64LE(99n, 8);
  encodeIPv4('198.18.0.2').copy(ev, 16);
  encodeIPv4('198.18.0.3').copy(ev, 20);
  ev.writeUInt32LE(40000, 24);
  ev.writeUInt32LE(80, 28);
  ev.writeUInt32LE(17, 32);
  ev.writeUInt32LE(18, 36);
  ev.writeUInt32LE(6, 40);
  ev.writeUInt32LE(0, 44);
  ev.writeUInt32LE(2, 48);
  t.same(decodePolicyEvent(ev, layout.policy), {
    tsNs: 5n, cookie: 99n, srcIp: '198.18.0.2', dstIp: '198.18.0.3', srcPort: 40000, dstPort: 80, subject: 17, peer: 18, proto: 6,
    direction: 'ingress', kind: 'deny-syn', suppressed: 0,
  });
  ev.writeUInt32LE(5, 48);
  encodeIPv4('198.18.0.9').copy(ev, 52);
  t.match(decodePolicyEvent(ev, layout.policy), { kind: 'spoof', senderIp: '198.18.0.9', srcIp: '198.18.0.2' }, 'a spoof record names its sender');
});

function btfWith(change: (b: BtfTypes) => void): BtfTypes {
  const b = btfOfFile(defaultObjectPath());
  change(b);
  return b;
}

t.test('a layout the agent does not expect is refused, naming the difference', async (t) => {
  const cases: [string, (b: BtfTypes) => void, RegExp][] = [
    ['struct missing', (b) => b.structs.delete('sm_sock_key'), /struct sm_sock_key is missing/],
    ['struct resized', (b) => { b.structs.get('sm_endpoint')!.size = 12; }, /sm_endpoint is 12 bytes/],
    ['member moved', (b) => { b.structs.get('sm_sock_key')!.members[2]!.bitOffset = 80; }, /sm_sock_key.local_port is at bit 80/],
    ['member renamed', (b) => { b.structs.get('sm_endpoint')!.members[0]!.name = 'id'; }, /has members id,flags/],
    ['counters missing', (b) => b.enums.delete('sm_counter'), /enum sm_counter is missing/],
    ['flag missing', (b) => b.enums.get('sm_endpoint_flags')!.values.delete('SM_EP_F_ENROLLED'), /lacks SM_EP_F_ENROLLED/],
    ['service struct moved', (b) => { b.structs.get('sm_svc')!.members[4]!.bitOffset = 32; }, /sm_svc.flags is at bit 32/],
    ['service flag missing', (b) => b.enums.delete('sm_svc_flags'), /enum sm_svc_flags lacks SM_SVC_F_ANY_CLIENT/],
    ['flow event member moved', (b) => { b.structs.get('sm_flow_event')!.members[13]!.bitOffset = 0; }, /sm_flow_event.flags is at bit 0/],
    ['flow event kinds missing', (b) => b.enums.delete('sm_flow_kind'), /enum sm_flow_kind lacks SM_FLOW_OPEN/],
  ];
  for (const [name, change, message] of cases) {
    t.throws(() => layoutFromBtf(btfWith(change)), { code: 'SOCKMESH_LAYOUT_MISMATCH', message }, name);
  }
});

t.test('IPv4 and 4-tuple encoding round-trips in network order', async (t) => {
  t.same([...encodeIPv4('198.18.0.2')], [198, 18, 0, 2]);
  t.equal(decodeIPv4(encodeIPv4('198.18.255.254')), '198.18.255.254');
  for (const bad of ['198.18.0', '198.18.0.256', 'pod-a', '', '::1']) {
    t.throws(() => encodeIPv4(bad), { code: 'SOCKMESH_INVALID_ARGUMENT' }, bad);
  }
  const k = { localIp: '198.18.0.2', remoteIp: '198.18.0.3', localPort: 40000, remotePort: 7000 };
  t.same(decodeSockKey(encodeSockKey(k)), k);
});

t.test('service, backend and cgroup entries round-trip', async (t) => {
  const sk = { vip: '198.19.0.10', port: 8080 };
  t.same([...encodeServiceKey(sk)], [198, 19, 0, 10, 0x90, 0x1f, 0, 0], 'VIP in network order, port in host order');
  t.same(decodeServiceKey(encodeServiceKey(sk)), sk);
  const sv = { id: 70000, count: 3, gen: 1, flags: 1 };
  t.same(decodeService(encodeService(sv)), sv);
  const bk = { svcId: 70000, slot: 65535, gen: 1 };
  t.same(decodeBackendKey(encodeBackendKey(bk)), bk);
  const be = { ip: '198.18.3.4', port: 65535 };
  t.same(decodeBackend(encodeBackend(be)), be);
  t.equal(decodeCgroupId(encodeCgroupId(2n ** 63n + 5n)), 2n ** 63n + 5n);
});
