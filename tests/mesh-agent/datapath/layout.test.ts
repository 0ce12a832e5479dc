import t from 'tap';
import { btfOfFile, type BtfTypes } from '../../../mesh-agent/datapath/libbpf.js';
import {
  decodeBackend, decodeBackendKey, decodeCgroupId, decodeIPv4, decodeService, decodeServiceKey, decodeSockKey, encodeBackend,
  encodeBackendKey, encodeCgroupId, encodeIPv4, encodeService, encodeServiceKey, encodeSockKey, layoutFromBtf,
} from '../../../mesh-agent/datapath/layout.js';
import { defaultObjectPath } from '../../../mesh-agent/paths.js';

t.test('the compiled object agrees with the agent', async (t) => {
  const layout = layoutFromBtf(btfOfFile(defaultObjectPath()));
  t.same([...layout.counters.keys()], [
    'sock_inserted', 'sock_insert_failed', 'sock_skipped', 'msg_redirected', 'bytes_redirected',
    'msg_passed', 'bytes_passed', 'svc_translated', 'svc_no_backend', 'svc_backend_miss', 'svc_not_enrolled',
    'flow_events_lost',
  ]);
  t.equal(layout.counters.get('sock_inserted'), 0);
  t.equal(layout.endpointEnrolledFlag, 1);
  t.equal(layout.serviceAnyClientFlag, 1);
  t.equal(layout.cgroupEnrolledFlag, 1);
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
