import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import t from 'tap';
import { NodeRuntime, isPodAddress, nextPodAddress } from '../../../mesh-agent/runtime/node-runtime.js';
import { testCgroupRoot } from '../../fixtures/mesh.js';
import { privileged } from '../../fixtures/privileged.js';

t.test('pod addresses come from 198.18.0.0/16 only', async (t) => {
  for (const ok of ['198.18.0.2', '198.18.1.0', '198.18.255.254']) t.ok(isPodAddress(ok), ok);
  for (const bad of ['198.18.0.0', '198.18.0.1', '198.18.255.255', '198.19.0.2', '10.0.0.2', '127.0.0.1', '198.18.0.256', 'a.b.c.d']) {
    t.notOk(isPodAddress(bad), bad);
  }
  t.equal(nextPodAddress([]), '198.18.0.2');
  t.equal(nextPodAddress(['198.18.0.2', '198.18.0.4']), '198.18.0.3');
  t.equal(nextPodAddress(Array.from({ length: 254 }, (_, i) => `198.18.0.${i + 2}`)), '198.18.1.0');
});

t.test('options are validated up front', async (t) => {
  t.throws(() => new NodeRuntime({ prefix: 'Bad!' }), { code: 'SOCKMESH_INVALID_ARGUMENT' });
  t.throws(() => new NodeRuntime({ cgroupRoot: 'relative' }), { code: 'SOCKMESH_INVALID_ARGUMENT' });
});

const netnsList = () => execFileSync('ip', ['netns', 'list']).toString();

if (privileged(t)) {
  t.test('pods: created, run commands in their netns and cgroup, removed idempotently', async (t) => {
    const rt = new NodeRuntime({ prefix: 'smt', cgroupRoot: testCgroupRoot() });
    await rt.cleanup();
    t.teardown(async () => { await rt.cleanup(); rt.removeCgroupRootIfEmpty(); });
    const a = await rt.addPod('a', { ip: '198.18.0.10' });
    t.same(await rt.addPod('a', { ip: '198.18.0.10' }), a, 'adding the same pod again changes nothing');
    const b = await rt.addPod('b');
    t.equal(b.ip, '198.18.0.2', 'the next free address');
    await t.rejects(rt.addPod('c', { ip: '198.18.0.10' }), { code: 'SOCKMESH_INVALID_ARGUMENT', message: /already pod a's/ });

    const addr = (await rt.execOutput('a', ['ip', '-4', '-o', 'addr', 'show', 'eth0'])).toString();
    t.match(addr, /inet 198\.18\.0\.10\/16/, 'eth0 carries the pod address inside the pod');
    const cg = (await rt.execOutput('a', ['cat', '/proc/self/cgroup'])).toString();
    t.match(cg, /^0::.*\/smt-pod-a$/m, 'the command runs in the pod cgroup');
    const ping = await rt.execOutput('a', ['ping', '-c', '1', '-W', '2', b.ip]).catch((e: Error) => Buffer.from(e.message));
    t.match(ping.toString(), /1 received/, 'pods reach each other over the bridge');
    t.notMatch(execFileSync('ip', ['-o', 'addr']).toString(), /198\.18\./, 'nothing of the pod network is in the host namespace');

    const sleeper = rt.exec('a', ['sleep', '300'], { stdio: 'ignore' });
    const exited = new Promise((r) => sleeper.on('exit', r));
    await new Promise((r) => setTimeout(r, 200));
    await rt.removePod('a');
    await exited;
    t.notOk(existsSync(a.cgroup), 'the pod cgroup is gone');
    t.notMatch(netnsList(), /smt-pod-a\b/, 'the pod netns is gone');
    await rt.removePod('a');
    t.pass('removing it again is harmless');
  });

  t.test('cleanup removes what a crashed run left behind', async (t) => {
    const crashed = new NodeRuntime({ prefix: 'smt', cgroupRoot: testCgroupRoot() });
    await crashed.cleanup();
    await crashed.addPod('x');
    await crashed.addPod('y');
    crashed.exec('x', ['sleep', '300'], { stdio: 'ignore', detached: true }).unref();
    const next = new NodeRuntime({ prefix: 'smt', cgroupRoot: testCgroupRoot() });
    const other = new NodeRuntime({ prefix: 'smo', cgroupRoot: testCgroupRoot() });
    await other.addPod('keep');
    t.teardown(async () => { await other.cleanup(); other.removeCgroupRootIfEmpty(); });
    await next.cleanup();
    t.notMatch(netnsList(), /^smt-/m, 'no netns of the prefix is left');
    t.match(netnsList(), /^smo-pod-keep/m, 'another prefix is left alone');
    t.same(await next.pods(), []);
    t.notOk(readFileSync('/proc/mounts', 'utf8').includes('smt-pod'), 'no mount of the prefix is left');
  });
}
