/**
 * Envoy's own .proto files, as shipped inside @grpc/grpc-js-xds (deps/),
 * loaded once into a protobufjs Root. Every xDS wire type sockmesh builds or
 * decodes comes from here; nothing is redeclared by hand.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);

/** The include directories of the shipped protos. */
export function envoyProtoDirs(): string[] {
  const pkg = dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
  const dirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(pkg, 'deps', d));
  for (const d of dirs) if (!existsSync(d)) throw new Error(`Envoy protos missing: ${d} (reinstall @grpc/grpc-js-xds)`);
  // google/protobuf/descriptor.proto (the other well-known types are built into protobufjs)
  dirs.push(dirname(require.resolve('protobufjs/package.json')));
  return dirs;
}

/** The files whose messages sockmesh uses; their imports come along. */
export const ENVOY_PROTO_FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/discovery/v3/discovery.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/config/trace/v3/opentelemetry.proto',
  'envoy/extensions/access_loggers/grpc/v3/als.proto',
  'envoy/service/accesslog/v3/als.proto',
  'envoy/admin/v3/config_dump.proto',
] as const;

let root: protobuf.Root | undefined;

/** The Root with every Envoy type sockmesh uses, loaded on first call. */
export function envoyRoot(): protobuf.Root {
  if (root) return root;
  const dirs = envoyProtoDirs();
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    if (existsSync(target)) return target;
    for (const d of dirs) {
      const p = join(d, target);
      if (existsSync(p)) return p;
    }
    return target;
  };
  r.loadSync([...ENVOY_PROTO_FILES], { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

let adsDefinition: import('@grpc/proto-loader').PackageDefinition | undefined;

/** The ADS service and its messages, for @grpc/grpc-js (proto field names, enums as strings). */
export function adsPackageDefinition(): import('@grpc/proto-loader').PackageDefinition {
  if (adsDefinition) return adsDefinition;
  adsDefinition = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: envoyProtoDirs(),
  });
  return adsDefinition;
}

/** The ADS service's client constructor (its `.service` is the server-side definition). */
export function adsService(): grpc.ServiceClientConstructor {
  const pkg = grpc.loadPackageDefinition(adsPackageDefinition()) as unknown as {
    envoy: { service: { discovery: { v3: { AggregatedDiscoveryService: grpc.ServiceClientConstructor } } } };
  };
  return pkg.envoy.service.discovery.v3.AggregatedDiscoveryService;
}
