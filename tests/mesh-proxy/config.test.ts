import t from 'tap';
import { ProxyConfigError, listenerConfig } from '../../mesh-proxy/config.js';
import { decodeResource, encodeStrict } from '../../xds/strict-encode.js';
import { listener } from '../fixtures/xds-resources.js';

const LISTENER = 'envoy.config.listener.v3.Listener';

/** A listener whose HCM has this tracing field (none for undefined), as the proxy gets it: encoded with Envoy's protos and decoded. */
function withTracing(tracing: unknown, encode = true): Record<string, unknown> {
  const l = listener('l', 8080, 'r') as { filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[] };
  if (tracing !== undefined) l.filter_chains[0]!.filters[0]!.typed_config.tracing = tracing;
  return encode ? decodeResource(LISTENER, encodeStrict(LISTENER, l)) : l;
}

t.test('HCM tracing: present means traced, random_sampling is the ratio of new traces kept', async (t) => {
  const cases: [string, unknown, { sampleRatio: number } | undefined][] = [
    ['no tracing field: not traced (Envoy)', undefined, undefined],
    ['an empty tracing: Envoy\'s default 100 %', {}, { sampleRatio: 1 }],
    ['random_sampling 25 %', { random_sampling: { value: 25 } }, { sampleRatio: 0.25 }],
    ['random_sampling 0 % (the value is not on the wire)', { random_sampling: { value: 0 } }, { sampleRatio: 0 }],
    ['random_sampling 0.5 %', { random_sampling: { value: 0.5 } }, { sampleRatio: 0.005 }],
  ];
  for (const [name, tracing, want] of cases) t.same(listenerConfig(withTracing(tracing)).tracing, want, name);
});

t.test('HCM tracing the proxy cannot honour is refused (NACK) with the field and the reason', async (t) => {
  t.throws(() => encodeStrict(LISTENER, withTracing({ random_sampling: { value: 150 } }, false)), 'Envoy\'s own rules refuse 150 % at the control plane');
  const cases: [unknown, RegExp][] = [
    [{ random_sampling: { value: 150 } }, /^listener l: tracing\.random_sampling\.value: 150 is not a percentage from 0 to 100$/],
    [{ random_sampling: { value: 'all' } }, /^listener l: tracing\.random_sampling\.value: "all" is not a percentage/],
    [{ provider: { name: 'envoy.tracers.zipkin' } }, /^listener l: tracing\.provider: not supported by mesh-proxy \(random_sampling only\)$/],
    [{ overall_sampling: { value: 10 } }, /^listener l: tracing\.overall_sampling: not supported/],
    ['yes', /^listener l: tracing is missing$/],
  ];
  for (const [tracing, want] of cases) t.throws(() => listenerConfig(withTracing(tracing, false)), { constructor: ProxyConfigError, message: want }, JSON.stringify(tracing));
  t.same(listenerConfig(withTracing({ custom_tags: [] }, false)).tracing, { sampleRatio: 1 }, 'an empty list is no setting');
});
