import t from 'tap';
import { envoyRoot } from '../../xds/envoy-protos.js';
import { wireProblem } from '../../xds/wire-check.js';

const req = () => envoyRoot().lookupType('envoy.service.discovery.v3.DiscoveryRequest');
const delta = () => envoyRoot().lookupType('envoy.service.discovery.v3.DeltaDiscoveryRequest');

t.test('well-formed requests pass, unknown fields included', async (t) => {
  const R = req();
  const good = R.encode(R.fromObject({
    version_info: 'v1', node: { id: 'n1', locality: { zone: 'z' }, metadata: { fields: { a: { string_value: 'b' } } } },
    resource_names: ['a', 'ß'], type_url: 'type.googleapis.com/x', response_nonce: '3', error_detail: { code: 3, message: 'no' },
  })).finish();
  t.equal(wireProblem(R, good), undefined, 'a full DiscoveryRequest');
  const D = delta();
  const d = D.encode(D.fromObject({ node: { id: 'n' }, type_url: 't', resource_names_subscribe: ['x'], initial_resource_versions: { x: 'v1', y: 'v2' } })).finish();
  t.equal(wireProblem(D, d), undefined, 'a DeltaDiscoveryRequest with a map');
  const unknown = Buffer.concat([good, Buffer.from([0xf8, 0x3e, 0x07, 0x82, 0x3f, 0x02, 0x68, 0x69])]); // fields 999 (varint) and 1008 (bytes)
  t.equal(wireProblem(R, unknown), undefined, 'fields these protos lack are skipped');
  t.equal(wireProblem(R, new Uint8Array(0)), undefined, 'an empty message');
});

t.test('garbled bytes are named', async (t) => {
  const R = req();
  const cases: [number[], string][] = [
    [[0x22, 0xc8, 0x01, 0x61], 'type_url: length 200 runs past the end of its message'],
    [[0x20, 0x01], 'type_url: wire type 0, expected 2'],
    [[0x22, 0x02, 0xc3, 0x28], 'type_url: not UTF-8'],
    [[0x22, 0xc8], 'truncated varint'],
    [[0x12, 0x02, 0x0a, 0x05], 'node.id: length 5 runs past the end of its message'],
    [[0x1b], 'resource_names: wire type 3, expected 2'],
    [[0xfb, 0x3e], '#1007: wire type 3 is not valid'],
    [[0x00, 0x01], ': field number 0'],
    [[0xb8, 0x3e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 'varint longer than 10 bytes'],
  ];
  for (const [bytes, want] of cases) t.equal(wireProblem(R, Buffer.from(bytes)), want, want);
  const D = delta();
  t.equal(wireProblem(D, Buffer.from([0x2a, 0x04, 0x0a, 0x01, 0x78, 0x10])), 'initial_resource_versions.value: wire type 0, expected 2', 'a map entry of the wrong kind');
});
