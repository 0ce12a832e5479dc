import t from 'tap';
import { cli } from '../fixtures/cli.js';

t.test('every command has --help', async (t) => {
  const commands = [[], ['run'], ['up'], ['down'], ['enroll'], ['unenroll'], ['status'], ['demo'],
    ['pod'], ['pod', 'add'], ['pod', 'del'], ['pod', 'list'], ['pod', 'exec'], ['pod', 'cleanup'],
    ['xds'], ['xds', 'dump'], ['xds', 'bootstrap'], ['observe'], ['traces']];
  for (const c of commands) {
    const r = cli([...c, '--help']);
    t.equal(r.code, 0, `${c.join(' ') || 'mesh-agent'} --help exits 0`);
    t.match(r.stdout, /^usage: mesh-agent/, `${c.join(' ') || 'mesh-agent'} --help prints usage`);
  }
});

t.test('bad input gets a clear error and exit code 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command "frobnicate" \[SOCKMESH_INVALID_ARGUMENT\]/],
    [['status', '--colour'], /Unknown option '--colour'/],
    [['enroll', '198.18.0.2', '--identity', 'lots'], /--identity must be a whole number/],
    [['enroll'], /expected one IPV4, got 0/],
    [['enroll', '198.18.0.300'], /not an IPv4 address: "198.18.0.300"/],
    [['unenroll', 'pod-a'], /not an IPv4 address: "pod-a"/],
    [['pod', 'add', 'Bad_Name'], /pod name "Bad_Name" is not a DNS label/],
    [['pod', 'add', 'x', '--ip', '10.0.0.1'], /pod address 10.0.0.1 is outside 198.18.0.2-198.18.255.254/],
    [['pod', 'add', 'x', '--prefix', 'TOO-LONG'], /runtime prefix must be 1-4 lowercase/],
    [['pod', 'exec', 'x'], /pod exec needs NAME -- CMD/],
    [['run', '--enroll', 'pod-a'], /not an IPv4 address: "pod-a"/],
    [['run', '--xds-address', 'localhost:15010'], /the xDS address must be IP:PORT \(e.g. 127.0.0.1:9966\), got "localhost:15010"/],
    [['run', '--admin-address', '127.0.0.1'], /the admin address must be IP:PORT/],
    [['run', '--node-name', 'no spaces'], /the node name must be a DNS-style name, got "no spaces"/],
    [['run', '--manifests', '/nonexistent-dir'], /--manifests: \/nonexistent-dir is not a directory/],
    [['run', '--manifests', 'examples', '--kubernetes'], /--manifests and --kubernetes\/--kubeconfig are two cluster sources: pick one/],
    [['run', '--kubeconfig', '/nonexistent.yaml'], /cannot load the kubeconfig \/nonexistent.yaml/],
    [['run', '--node-netns', '/proc/1/ns/net'], /--node-netns goes with --kubernetes or --kubeconfig/],
    [['run', '--kubernetes', '--node-netns', '/nonexistent-ns'], /--node-netns \/nonexistent-ns: no such file/],
    [['run', '--manifests', 'examples', '--prefix', 'TOOLONG'], /runtime prefix must be 1-4 lowercase/],
    [['xds', 'frob'], /unknown xds command "frob"/],
    [['xds', 'bootstrap'], /--node-id is required/],
    [['xds', 'bootstrap', '--node-id', 'n1', '--xds-address', '127.0.0.1:0'], /--xds-address needs the port the agent listens on, not 0/],
    [['run', '--otlp-endpoint', 'collector:4318'], /--otlp-endpoint "collector:4318": the scheme must be http or https|not a URL/],
    [['run', '--otlp-protocol', 'thrift'], /--otlp-protocol "thrift": not an OTLP protocol/],
    [['run', '--sample-ratio', '2'], /--sample-ratio "2": must be a number from 0 to 1/],
    [['run', '--tracing', 'maybe'], /--tracing "maybe": must be on or off/],
    [['observe', '--type', 'l5'], /--type must be l4, l7 or security/],
    [['xds', 'dump', '--type', 'clusters,secrets'], /--type: unknown resource type "secrets"; types: clusters, endpoints, listeners, routes/],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    t.equal(r.code, 2, `${args.join(' ')} exits 2`);
    t.match(r.stderr, message, `${args.join(' ')}: ${r.stderr.split('\n')[0]}`);
  }
});

// uid 0 with an empty capability bounding set: what a container without
// CAP_BPF / CAP_NET_ADMIN gets; it can still read the checkout wherever it is.
t.test('without the capabilities: a clear error naming them', async (t) => {
  for (const cmd of [['up'], ['status'], ['enroll', '198.18.0.2'], ['down']]) {
    const r = cli(cmd, { prefix: ['setpriv', '--inh-caps=-all', '--bounding-set=-all'] });
    t.equal(r.code, 1, `${cmd[0]} without capabilities exits 1`);
    t.match(r.stderr, /needs root or CAP_BPF \+ CAP_NET_ADMIN.*\[SOCKMESH_NOT_PRIVILEGED\]/, `${cmd[0]}: names what is missing`);
    t.match(r.stderr, /hint: run mesh-agent as root/, `${cmd[0]}: says what to do`);
  }
});

t.test('xds bootstrap prints a bootstrap for the node proxy', async (t) => {
  const r = cli(['xds', 'bootstrap', '--node-id', 'node-a~proxy', '--xds-address', '127.0.0.1:15999', '--zone', 'z1']);
  t.equal(r.code, 0, r.stderr);
  const b = JSON.parse(r.stdout) as Record<string, any>;
  t.match(b.node, { id: 'node-a~proxy', cluster: 'sockmesh-node-proxy', locality: { zone: 'z1' } });
  t.match(b.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address, { address: '127.0.0.1', port_value: 15999 }, 'ADS points at the agent');
  t.match(b.admin.address.socket_address, { address: '127.0.0.1', port_value: 15000 }, 'Envoy admin on loopback');
});

t.test('xds dump without a running agent says so', async (t) => {
  const r = cli(['xds', 'dump', '--admin-socket', '/run/sockmesh-test-none/agent.sock']);
  t.equal(r.code, 1);
  t.match(r.stderr, /no agent answers on \/run\/sockmesh-test-none\/agent.sock \[SOCKMESH_AGENT_NOT_RUNNING\]/);
  t.match(r.stderr, /hint: start it with `mesh-agent run`/);
});
