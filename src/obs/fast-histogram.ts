// A histogram that the data plane feeds with plain arithmetic: observe() adds to a typed array
// (no label objects, no validation), and prom-client reads it only when /metrics is scraped.
// It registers with a prom-client Registry as any metric does (name, help, type, get()).

import type { Metric, MetricObjectWithValues, MetricValueWithName } from 'prom-client';

export interface HistogramData {
  readonly counts: readonly number[];
  readonly sum: number;
  readonly count: number;
}

export class HistogramSeries {
  /** per-bucket counts (not cumulative); the last slot is +Inf */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** counts, sum and count as plain numbers (what a data-plane process reports) */
  data(): HistogramData {
    return { counts: Array.from(this.counts), sum: this.sum, count: this.count };
  }

  /** Set this series to the sum of several (the control plane merging its workers' reports). */
  assignSum(list: readonly HistogramData[]): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
    for (const d of list) {
      for (let i = 0; i < this.counts.length && i < d.counts.length; i++) this.counts[i]! += d.counts[i]!;
      this.sum += d.sum;
      this.count += d.count;
    }
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export class FastHistogram {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  private readonly series = new Map<string, HistogramSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    /** the labels of a series from its key, or null for an unlabelled histogram */
    private readonly labelsOf: ((key: string) => Record<string, string>) | null = null,
  ) {}

  /** The series for one key ('' without labels); made once, then reused. */
  for(labelValue = ''): HistogramSeries {
    let s = this.series.get(labelValue);
    if (!s) {
      s = new HistogramSeries(this.bounds);
      this.series.set(labelValue, s);
    }
    return s;
  }

  /** Drop one series (a backend that is gone). */
  delete(labelValue: string): void {
    this.series.delete(labelValue);
  }

  /** every series by label value */
  entries(): IterableIterator<[string, HistogramSeries]> {
    return this.series.entries();
  }

  get(): MetricObjectWithValues<MetricValueWithName<string>> {
    const values: MetricValueWithName<string>[] = [];
    for (const [lv, s] of this.series) {
      const labels: Record<string, string | number> = this.labelsOf === null ? {} : this.labelsOf(lv);
      let acc = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        acc += s.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { le: i < this.bounds.length ? this.bounds[i]! : '+Inf', ...labels }, value: acc });
      }
      values.push({ metricName: `${this.name}_sum`, labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: s.count });
    }
    return { name: this.name, help: this.help, type: 'histogram' as never, aggregator: 'sum', values, collect: () => undefined };
  }

  /** As a prom-client Metric, for Registry.registerMetric(). */
  asMetric(): Metric {
    return this as unknown as Metric;
  }
}
