import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import * as errors from '../../mesh-agent/errors.js';
import { repoRoot } from '../../mesh-agent/paths.js';

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

t.test('every error code in the code is documented, and every documented code exists', async (t) => {
  const used = new Set<string>();
  for (const f of ['mesh-agent', 'xds'].flatMap((d) => sources(join(repoRoot(), d)))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/'(SOCKMESH_[A-Z0-9_]+)'/g)) used.add(m[1]!);
  }
  const documented = new Set([...readFileSync(join(repoRoot(), 'docs', 'errors.md'), 'utf8').matchAll(/^\| `(SOCKMESH_[A-Z0-9_]+)`/gm)].map((m) => m[1]!));
  t.ok(used.size >= 10, `found ${used.size} codes`);
  t.same([...used].sort(), [...documented].sort());
});

t.test('errors keep their code, hint and errno', async (t) => {
  const e = new errors.BpfError('bpf_map_update_elem', 7);
  t.ok(e instanceof errors.SockmeshError);
  t.equal(e.code, 'SOCKMESH_BPF');
  t.equal(e.errno, 7);
  t.match(e.message, /bpf_map_update_elem failed: E2BIG \(errno 7\)/);
  t.equal(new errors.NotUpError('/sys/fs/bpf/x').hint, 'run `mesh-agent up` first');
  t.equal(errors.errnoName(4242), 'errno 4242');
});
