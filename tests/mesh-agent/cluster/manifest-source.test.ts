import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ClusterStore } from '../../../mesh-agent/cluster/cluster-store.js';
import { ManifestSource, mayHoldManifests } from '../../../mesh-agent/cluster/manifest-source.js';

t.test('which changed paths may hold manifests', async (t) => {
  for (const [name, want] of [['app.yaml', true], ['sub/app.YML', true], ['sub', true], [null, true], ['traces.otlp.jsonl', false], ['agent.log', false], ['notes.txt', false]] as const) {
    t.equal(mayHoldManifests(name), want, String(name));
  }
});

t.test('a file of another kind changing in the directory reads nothing again; a manifest does', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sm-msrc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'ns.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: { name: a }\n');
  let loads = 0;
  const src = new ManifestSource({ dir, store: new ClusterStore(), debounceMs: 20, onLoad: () => { loads++; } });
  src.start();
  t.teardown(() => src.stop());
  t.equal(loads, 1);
  for (let i = 0; i < 20; i++) appendFileSync(join(dir, 'traces.otlp.jsonl'), '{}\n');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(loads, 1, 'twenty appends to a trace file: no reload');
  mkdirSync(join(dir, 'more'));
  writeFileSync(join(dir, 'more', 'ns2.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: { name: b }\n');
  await new Promise((r) => setTimeout(r, 200));
  t.ok(loads >= 2, 'a new manifest in a new directory: reloaded');
});
