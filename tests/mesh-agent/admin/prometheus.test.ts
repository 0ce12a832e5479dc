import { createRequire } from 'node:module';
import t from 'tap';
import { renderPrometheus } from '../../../mesh-agent/admin/prometheus.js';

// an independent parser of the text format (not ours), to check what Prometheus would read
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => {
  name: string; help: string; type: string; metrics: { value: string; labels?: Record<string, string> }[];
}[];

t.test('families render as the text format a parser reads back', async (t) => {
  const text = renderPrometheus([
    { name: 'sockmesh_xds_acks_total', help: 'Responses ACKed.', type: 'counter', samples: [{ labels: { type: 'cluster' }, value: 3 }, { labels: { type: 'route' }, value: 0 }] },
    { name: 'sockmesh_datapath_up', help: 'Up.\nSecond line \\ here.', type: 'gauge', samples: [{ value: 1 }] },
    { name: 'odd_labels', help: 'Escapes.', type: 'gauge', samples: [{ labels: { node: 'a"b\\c\nd' }, value: 2.5 }, { labels: { node: 'inf' }, value: Infinity }] },
  ]);
  t.match(text, /^# HELP sockmesh_xds_acks_total Responses ACKed\.\n# TYPE sockmesh_xds_acks_total counter\nsockmesh_xds_acks_total\{type="cluster"\} 3\n/);
  t.ok(text.endsWith('\n'), 'ends with a newline');
  const back = parse(text);
  t.same(back.map((f) => [f.name, f.type]), [['sockmesh_xds_acks_total', 'COUNTER'], ['sockmesh_datapath_up', 'GAUGE'], ['odd_labels', 'GAUGE']]);
  t.same(back[0]!.metrics, [{ value: '3', labels: { type: 'cluster' } }, { value: '0', labels: { type: 'route' } }]);
  t.equal(back[1]!.help, 'Up.\nSecond line \\ here.', 'HELP text with a newline and a backslash comes back whole');
  t.same(back[2]!.metrics, [{ value: '2.5', labels: { node: 'a"b\\c\nd' } }, { value: '+Inf', labels: { node: 'inf' } }], 'label values with quotes, backslashes and newlines come back whole');
});

t.test('malformed names are refused', async (t) => {
  t.throws(() => renderPrometheus([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }]), /bad metric name "bad-name"/);
  t.throws(() => renderPrometheus([{ name: 'ok', help: '', type: 'gauge', samples: [{ labels: { 'bad-label': 'x' }, value: 1 }] }]), /bad label name "bad-label" on ok/);
  t.throws(() => renderPrometheus([{ name: 'ok', help: '', type: 'gauge', samples: [{ labels: { __reserved: 'x' }, value: 1 }] }]), /bad label name/);
  t.throws(() => renderPrometheus([{ name: 'ok', help: '', type: 'gauge', samples: [] }, { name: 'ok', help: '', type: 'gauge', samples: [] }]), /metric ok twice/);
});
