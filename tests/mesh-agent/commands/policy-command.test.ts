/* mesh-agent policy check, offline (--manifests): the verdict, the layer, the policy and rule, and the exit status. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cli } from '../../fixtures/cli.js';
import { POLICY_SHOP } from '../../fixtures/policy-shop.js';

const dir = mkdtempSync(join(tmpdir(), 'sm-policy-check-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'shop.yaml'), POLICY_SHOP);
const check = (...args: string[]) => cli(['policy', 'check', '--manifests', dir, ...args]);

t.test('--help, and a bad command line', async (t) => {
  t.match(cli(['policy', 'check', '--help']).stdout, /usage: mesh-agent policy check --from SOURCE --to DEST/);
  t.match(cli(['policy', '--help']).stdout, /check\s+whether a source may reach a destination/);
  t.match(cli(['--help']).stdout, /policy\s+policy check/);
  const r = check('--to', 'shop/web:80');
  t.equal(r.code, 2);
  t.match(r.stderr, /--from is required/);
  t.match(cli(['policy', 'frobnicate']).stderr, /unknown policy subcommand "frobnicate"/);
});

t.test('allowed in the kernel: exit 0, the policy and rule named', async (t) => {
  const r = check('--from', 'shop/frontend', '--to', 'shop/catalog:80');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^ALLOWED  service shop\/catalog:80  \(decided by the kernel, L4\)/);
  t.match(r.stdout, /allow  shop\/catalog-1:8080\n\s+L4 egress:  no policy selects shop\/frontend for egress.*\n\s+L4 ingress: allowed by shop\/frontend-to-catalog ingress\[0\]/);
});

t.test('denied at L7: exit 1, the DENY policy named; --json', async (t) => {
  const r = check('--from', 'shop/frontend', '--to', 'shop/web:80', '--method', 'POST', '--path', '/public/form');
  t.equal(r.code, 1);
  t.match(r.stdout, /^DENIED  service shop\/web:80  \(decided by the node proxy, L7\)/);
  t.match(r.stdout, /L7:\s+denied by shop\/deny-post \(DENY rule 0\)/);
  const j = check('--from', 'shop/frontend', '--to', 'shop/web:80', '--method', 'GET', '--path', '/public/a', '--json');
  t.equal(j.code, 0);
  t.match(JSON.parse(j.stdout), { kind: 'verdict', allowed: true, layer: 'proxy-l7', backends: [{ pod: 'shop/web-1', l7: { decidedBy: { policy: 'shop/allow-public-get', action: 'ALLOW', rule: 0 } } }] });
});

t.test('a bad question: exit 2 naming the field; bad manifests are refused with their problems', async (t) => {
  const r = check('--from', 'shop/frontend', '--to', 'shop/ghost:80');
  t.equal(r.code, 2);
  t.match(r.stdout, /cannot judge: --to: no service or pod shop\/ghost/);
  const bad = mkdtempSync(join(tmpdir(), 'sm-policy-bad-'));
  t.teardown(() => rmSync(bad, { recursive: true, force: true }));
  writeFileSync(join(bad, 'p.yaml'), 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: x, namespace: shop }\nspec: { podSelector: {}, ingress: [{ from: [{}] }] }\n');
  const b = cli(['policy', 'check', '--manifests', bad, '--from', 'shop/a', '--to', 'shop/b:80']);
  t.equal(b.code, 2);
  t.match(b.stderr, /p\.yaml: document 1 \(NetworkPolicy shop\/x\): spec\.ingress\[0\]\.from\[0\]/);
});
