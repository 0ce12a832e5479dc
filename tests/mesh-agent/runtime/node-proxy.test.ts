/*
 * Privileged: the agent's supervision of the node proxy. No Envoy can be
 * installed here, so an executable named envoy on PATH stands in for it: it
 * records how it was started and answers SIGTERM by recording that it drained.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import t from 'tap';
import { NodeProxy } from '../../../mesh-agent/runtime/node-proxy.js';
import { NodeRuntime } from '../../../mesh-agent/runtime/node-runtime.js';
import { encodeStrict } from '../../../xds/strict-encode.js';
import { testCgroupRoot } from '../../fixtures/mesh.js';
import { privileged } from '../../fixtures/privileged.js';
import { until } from '../../fixtures/wait.js';

if (privileged(t)) {
  t.test('with an envoy on PATH: started with the generated bootstrap, restarted when it dies, drained on stop', async (t) => {
    const rt = new NodeRuntime({ prefix: 'smf', cgroupRoot: testCgroupRoot() });
    await rt.cleanup();
    await rt.start();
    const dir = mkdtempSync(join(tmpdir(), 'sm-envoy-'));
    t.teardown(async () => { await rt.cleanup(); rmSync(dir, { recursive: true, force: true }); });
    const starts = join(dir, 'starts');
    writeFileSync(join(dir, 'envoy'), `#!/bin/sh\necho "$@" >> ${starts}\ntrap 'echo drained >> ${starts}; exit 0' TERM\nwhile true; do sleep 0.1; done\n`);
    chmodSync(join(dir, 'envoy'), 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${dir}${delimiter}${path}`;
    t.teardown(() => { process.env.PATH = path; });
    const proxy = new NodeProxy({ runtime: rt, xdsSocket: '/run/sockmesh/test-xds.sock', nodeId: 'n1~node-proxy', stateDir: join(dir, 'state'), backoffMs: 100, envoySpansSocket: '/run/sockmesh/test-envoy-spans.sock', envoyAccessLogSocket: '/run/sockmesh/test-envoy-als.sock' });
    t.equal(proxy.kind, 'envoy', 'an envoy on PATH is chosen over mesh-proxy');
    proxy.start();
    await until('started', () => existsSync(starts));
    const args = readFileSync(starts, 'utf8').trim().split(' ');
    t.same(args.slice(0, 1), ['-c'], `started as envoy ${args.join(' ')}`);
    t.match(args[1], /\/envoy-bootstrap-[0-9a-f]{12}\.json$/, 'the bootstrap named by its content (another bootstrap: other arguments, so a running Envoy of it is not adopted)');
    const bootstrap = JSON.parse(readFileSync(args[1]!, 'utf8')) as Record<string, any>;
    t.ok(encodeStrict('envoy.config.bootstrap.v3.Bootstrap', bootstrap).length > 0, 'with a bootstrap Envoy\'s Bootstrap message accepts');
    t.same(bootstrap.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/test-xds.sock' } }, 'ADS over the agent\'s unix socket');
    t.equal(bootstrap.node.id, 'n1~node-proxy');
    t.same(bootstrap.static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/test-envoy-spans.sock' } }, 'its tracer\'s cluster to the agent\'s span socket');
    t.same(bootstrap.static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/run/sockmesh/test-envoy-als.sock' } }, 'its access log\'s to the agent\'s');
    t.ok(rt.nodeProcessRunning('node-proxy'), 'running in its cgroup under the pods\' root');
    // an agent that stops (without removing it) leaves it running; the next agent adopts it, if it is of the same build
    const opts = { runtime: rt, xdsSocket: '/run/sockmesh/test-xds.sock', nodeId: 'n1~node-proxy', stateDir: join(dir, 'state'), backoffMs: 100, envoySpansSocket: '/run/sockmesh/test-envoy-spans.sock', envoyAccessLogSocket: '/run/sockmesh/test-envoy-als.sock' };
    await proxy.stop();
    t.ok(rt.nodeProcessRunning('node-proxy'), 'an agent stopping leaves it running');
    const same = new NodeProxy(opts);
    same.start();
    t.equal(readFileSync(starts, 'utf8').trim().split('\n').length, 1, 'the next agent adopts it (same arguments, same build)');
    await same.stop();
    writeFileSync(join(dir, 'envoy'), `${readFileSync(join(dir, 'envoy'), 'utf8')}# upgraded\n`); // another binary at the same path
    const upgraded = new NodeProxy(opts);
    upgraded.start();
    await until('the old one replaced', () => readFileSync(starts, 'utf8').trim().split('\n').length === 2 && upgraded.status().running);
    t.equal(upgraded.status().lastExit, 'replaced: it was of another build', 'another build at the same path: replaced, not adopted');
    const proxy2 = upgraded;
    await rt.stopNodeProcess('node-proxy', 'SIGKILL');
    await until('restarted', () => proxy2.status().restarts === 1 && proxy2.status().running && readFileSync(starts, 'utf8').trim().split('\n').length === 3);
    t.pass('the agent restarted it after it died');
    await proxy2.stop({ remove: true });
    t.match(readFileSync(starts, 'utf8'), /drained/, 'stop drains it with SIGTERM');
    t.notOk(rt.nodeProcessRunning('node-proxy'), 'and it is gone');
    t.notOk(existsSync(join(dir, 'state')), 'with its state directory (record, logs, bootstrap)');
  });
}
