/*
 * Conformance with an independent xDS client: @grpc/grpc-js-xds (proxyless
 * gRPC) resolves xds:///web through sockmesh's ADS server and calls real
 * grpc-js servers.
 */
import * as grpc from '@grpc/grpc-js';
import * as grpcXds from '@grpc/grpc-js-xds';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { AdsServer } from '../../xds/ads-server.js';
import { Snapshot, TYPE_URL } from '../../xds/snapshot.js';
import { SnapshotCache } from '../../xds/snapshot-cache.js';
import { apiListener, cluster, route, weightedEndpoints } from '../fixtures/xds-resources.js';

const WHO: grpc.ServiceDefinition = {
  Who: {
    path: '/sockmesh.test.Backend/Who',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

async function backend(name: string): Promise<{ port: number; server: grpc.Server }> {
  const server = new grpc.Server();
  server.addService(WHO, { Who: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(name)) });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { port, server };
}

type WhoClient = grpc.Client & { Who(req: Buffer, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): void };

function who(client: WhoClient): Promise<string> {
  return new Promise((resolve, reject) =>
    client.Who(Buffer.alloc(0), { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r!.toString()))));
}

async function tally(client: WhoClient, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const w = await who(client);
    out[w] = (out[w] ?? 0) + 1;
  }
  return out;
}

t.test('grpc-js-xds follows sockmesh\'s ADS: resolution, weighted split, EDS moves, NACK, server restart', async (t) => {
  const backends = await Promise.all(['v1a', 'v2a', 'v1b'].map(backend));
  const [v1a, v2a, v1b] = backends;
  const cache = new SnapshotCache({ debounceMs: 5 });
  let ads = new AdsServer({ cache });
  const port = await ads.start();
  const snap = (split: [string, number][], v1Port: number, v1Cluster: Record<string, unknown> = cluster('web-v1')) => Snapshot.create({
    listeners: [apiListener('web', 'web')],
    routes: [route('web', split)],
    clusters: [v1Cluster, cluster('web-v2')],
    endpoints: [weightedEndpoints('web-v1', [['127.0.0.1', v1Port]]), weightedEndpoints('web-v2', [['127.0.0.1', v2a!.port]])],
  });
  cache.setDefaultSnapshot(snap([['web-v1', 90], ['web-v2', 10]], v1a!.port));
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
    xds_servers: [{ server_uri: `127.0.0.1:${port}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    node: { id: 'grpc-client-1', cluster: 'test', locality: { region: 'local', zone: 'local' } },
  });
  grpcXds.register();
  const Ctor = grpc.makeGenericClientConstructor(WHO, 'Backend');
  const client = new Ctor('xds:///web', grpc.credentials.createInsecure()) as unknown as WhoClient;
  t.teardown(async () => {
    client.close();
    await ads.stop();
    cache.close();
    for (const b of backends) b!.server.forceShutdown();
  });

  t.match(await who(client), /^v[12]a$/, 'xds:///web resolves and calls a backend of web-v1 or web-v2');
  const split = await tally(client, 1000);
  t.ok(split.v1a! >= 850 && split.v1a! <= 950, `90/10 split observed as ${split.v1a}/${split.v2a ?? 0} of 1000`);
  const proxies = ads.proxies();
  t.equal(proxies[0]?.nodeId, 'grpc-client-1', 'the client is listed in status');
  t.equal(proxies[0]?.types.route?.ackedVersion, proxies[0]?.types.route?.sentVersion, 'and has ACKed the routes sent');

  cache.setDefaultSnapshot(snap([['web-v1', 100]], v1b!.port));
  let seen = '';
  for (let i = 0; i < 100 && seen !== 'v1b'; i++) {
    seen = await who(client);
    if (seen !== 'v1b') await sleep(20);
  }
  t.equal(seen, 'v1b', 'an endpoint moved by EDS is followed');
  t.same(await tally(client, 50), { v1b: 50 }, 'and only it serves web-v1 now');

  // a cluster the client rejects (a load-balancing policy gRPC does not have) is NACKed;
  // calls keep using the last good config
  cache.setDefaultSnapshot(snap([['web-v1', 100]], v1b!.port, { ...cluster('web-v1'), lb_policy: 'RANDOM' }));
  let nack;
  for (let i = 0; i < 100 && !nack; i++) {
    await sleep(20);
    nack = ads.nacks().find((n) => n.typeUrl === TYPE_URL.cluster);
  }
  t.ok(nack, `the client NACKed the bad cluster: ${nack?.error}`);
  t.same(await tally(client, 50), { v1b: 50 }, 'calls keep flowing, without errors, on the last good config');

  // the server restarts on the same port; the client re-subscribes and follows the new state
  await ads.stop();
  cache.setDefaultSnapshot(snap([['web-v2', 100]], v1b!.port));
  ads = new AdsServer({ cache, address: `127.0.0.1:${port}` });
  await ads.start();
  seen = '';
  for (let i = 0; i < 300 && seen !== 'v2a'; i++) {
    seen = await who(client);
    if (seen !== 'v2a') await sleep(20);
  }
  t.equal(seen, 'v2a', 'after the ADS server restarted, the client follows the new routes');
  t.equal(ads.proxies()[0]?.nodeId, 'grpc-client-1', 'the client reconnected');
});

t.test('50 independent grpc-js-xds clients at once', async (t) => {
  const b = await backend('solo');
  const cache = new SnapshotCache({ debounceMs: 5 });
  const ads = new AdsServer({ cache });
  const port = await ads.start();
  cache.setDefaultSnapshot(Snapshot.create({
    listeners: [apiListener('web', 'web')],
    routes: [route('web', [['web-v1', 100]])],
    clusters: [cluster('web-v1')],
    endpoints: [weightedEndpoints('web-v1', [['127.0.0.1', b.port]])],
  }));
  grpcXds.register();
  const Ctor = grpc.makeGenericClientConstructor(WHO, 'Backend');
  // each channel gets its own bootstrap, hence its own xDS client, ADS stream and node id
  const clients = Array.from({ length: 50 }, (_, i) => new Ctor('xds:///web', grpc.credentials.createInsecure(), {
    'grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config': JSON.stringify({
      xds_servers: [{ server_uri: `127.0.0.1:${port}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
      node: { id: `client-${i}`, locality: { region: 'local', zone: 'local' } },
    }),
  }) as unknown as WhoClient);
  t.teardown(async () => {
    for (const c of clients) c.close();
    await ads.stop();
    cache.close();
    b.server.forceShutdown();
  });
  const answers = await Promise.all(clients.map((c) => who(c)));
  t.same(new Set(answers), new Set(['solo']), 'all 50 resolved xds:///web and got an answer');
  const nodes = new Set(ads.proxies().map((p) => p.nodeId));
  t.equal(nodes.size, 50, '50 proxies are connected, each with its own node id');
  t.ok(ads.proxies().every((p) => p.types.endpoint?.ackedVersion && p.types.endpoint.ackedVersion === p.types.endpoint.sentVersion), 'and every one ACKed its endpoints');
});
