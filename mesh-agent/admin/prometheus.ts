/**
 * Prometheus text exposition (format 0.0.4): metric families with HELP and
 * TYPE lines, label values escaped. Pure; the admin server serves it.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface Sample {
  labels?: Record<string, string>;
  value: number;
  /** a histogram's series: _bucket (with an le label), _sum or _count */
  suffix?: '_bucket' | '_sum' | '_count';
}

export interface MetricFamily {
  /** [a-zA-Z_:][a-zA-Z0-9_:]*; counters end in _total */
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function number(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Renders families; throws on a malformed name, which is a bug in the caller. */
export function renderPrometheus(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const f of families) {
    if (!NAME.test(f.name)) throw new Error(`bad metric name ${JSON.stringify(f.name)}`);
    if (seen.has(f.name)) throw new Error(`metric ${f.name} twice`);
    seen.add(f.name);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      for (const [k] of labels) if (!LABEL.test(k) || k.startsWith('__')) throw new Error(`bad label name ${JSON.stringify(k)} on ${f.name}`);
      const l = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : '';
      out.push(`${f.name}${s.suffix ?? ''}${l} ${number(s.value)}`);
    }
  }
  return out.join('\n') + '\n';
}

/** A histogram with fixed buckets, by label set. */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #series = new Map<string, { labels: Record<string, string>; counts: number[]; sum: number; count: number }>();

  /** bounds: the buckets' upper bounds, ascending (+Inf is implied) */
  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
  }

  /** key: any string unique to the label set (saves building one from the labels) */
  observe(labels: Record<string, string>, value: number, key: string = JSON.stringify(labels)): void {
    let s = this.#series.get(key);
    if (!s) {
      s = { labels, counts: new Array<number>(this.#bounds.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    for (let i = 0; i < this.#bounds.length; i++) if (value <= this.#bounds[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  samples(): Sample[] {
    const out: Sample[] = [];
    for (const s of this.#series.values()) {
      this.#bounds.forEach((b, i) => out.push({ suffix: '_bucket', labels: { ...s.labels, le: String(b) }, value: s.counts[i]! }));
      out.push({ suffix: '_bucket', labels: { ...s.labels, le: '+Inf' }, value: s.count });
      out.push({ suffix: '_sum', labels: s.labels, value: s.sum });
      out.push({ suffix: '_count', labels: s.labels, value: s.count });
    }
    return out;
  }
}
