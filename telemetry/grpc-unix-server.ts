/**
 * One gRPC method served on a unix socket with raw bytes in and out (the
 * caller decodes them): the agent's receivers of another proxy's telemetry
 * (Envoy's spans, its access log). The socket is made world-writable (the
 * proxy may run as another user), a stale one from a crashed agent is
 * replaced, and stopping removes it.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';

const identity = (b: Buffer): Buffer => b;

export interface UnixGrpcMethod {
  /** the method's path on the wire, "/package.Service/Method" */
  path: string;
  /** a client stream (else unary) */
  requestStream: boolean;
  handler: grpc.handleUnaryCall<Buffer, Buffer> | grpc.handleClientStreamingCall<Buffer, Buffer>;
}

/** Serves the method at socketPath; resolves once it listens. */
export async function serveOnUnixSocket(socketPath: string, method: UnixGrpcMethod, maxMessageBytes = 16 * 1024 * 1024): Promise<grpc.Server> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
  if (existsSync(socketPath)) unlinkSync(socketPath);
  const server = new grpc.Server({ 'grpc.max_receive_message_length': maxMessageBytes });
  const name = method.path.slice(method.path.lastIndexOf('/') + 1);
  server.addService({
    [name]: {
      path: method.path, requestStream: method.requestStream, responseStream: false,
      requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
    },
  }, { [name]: method.handler });
  try {
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
    });
    chmodSync(socketPath, 0o666); // the proxy may run as another user
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  return server;
}

/** Stops the server (calls under way finish; a sender that keeps its calls open is cut after 2 s) and removes its socket. */
export async function stopUnixServer(server: grpc.Server | undefined, socketPath: string): Promise<void> {
  if (server) {
    await new Promise<void>((resolve) => {
      // not unref'd: stop must end
      const force = setTimeout(() => { server.forceShutdown(); resolve(); }, 2000);
      server.tryShutdown(() => { clearTimeout(force); resolve(); });
    });
  }
  if (existsSync(socketPath)) unlinkSync(socketPath);
}
