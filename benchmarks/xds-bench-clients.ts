/**
 * The xDS benchmark's clients, in a process of their own as proxies would
 * be: N ADS streams over real gRPC that subscribe to every resource of the
 * benchmark's mesh and ACK each response as soon as it arrives. The server
 * side times the ACKs; this process only answers.
 */
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import { adsService } from '../xds/envoy-protos.js';
import { serviceKey } from '../xds/mesh-resources.js';
import { PUSH_ORDER, TYPE_URL } from '../xds/snapshot.js';
import { benchServices } from './xds-bench-model.js';

const HELP = `usage: node dist/benchmarks/xds-bench-clients.js --port N --clients N --services N --protocol sotw|delta

Started by xds-bench.js; runs until its stdin closes.
`;

interface Resp { version_info: string; system_version_info?: string; type_url: string; nonce: string }

function main(): void {
  const { values } = parseArgs({ options: {
    port: { type: 'string' }, clients: { type: 'string' }, services: { type: 'string' }, protocol: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const port = Number(values.port);
  const nClients = Number(values.clients);
  const names = benchServices(Number(values.services)).map(serviceKey);
  const sotw = values.protocol === 'sotw';
  const named = (t: string) => t === TYPE_URL.endpoint || t === TYPE_URL.route;
  const Ads = adsService();
  const closers: (() => void)[] = [];
  for (let i = 0; i < nClients; i++) {
    const client = new Ads(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const stub = client as unknown as Record<string, () => grpc.ClientDuplexStream<unknown, Resp>>;
    const call = sotw ? stub.StreamAggregatedResources!() : stub.DeltaAggregatedResources!();
    const id = `bench-${i}`;
    const request = sotw
      ? (type_url: string, version_info = '', response_nonce = '') => call.write({
        node: { id }, type_url, version_info, response_nonce, resource_names: named(type_url) ? names : [],
      })
      : (type_url: string, _version = '', response_nonce = '') => call.write({
        node: { id }, type_url, response_nonce, resource_names_subscribe: response_nonce || !named(type_url) ? [] : names,
      });
    call.on('data', (r: Resp) => request(r.type_url, r.version_info, r.nonce));
    call.on('error', () => undefined);
    for (const k of PUSH_ORDER) request(TYPE_URL[k]);
    closers.push(() => {
      call.cancel();
      client.close();
    });
  }
  process.stdin.resume();
  process.stdin.on('end', () => {
    for (const c of closers) c();
  });
}

main();
