// The scrape-time histogram renders the same Prometheus text a prom-client Histogram would.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry, Histogram } from 'prom-client';
import { FastHistogram } from '../../src/obs/fast-histogram';

test('FastHistogram matches prom-client Histogram output, labelled and not', async () => {
  const bounds = [0.01, 0.1, 1];
  const samples = [0.005, 0.01, 0.02, 0.5, 0.5, 3, 0.1];
  for (const label of [null, 'backend'] as const) {
    const ours = new Registry();
    const theirs = new Registry();
    const f = new FastHistogram('x_seconds', 'help text', bounds, label === null ? null : (v) => ({ [label]: v }));
    ours.registerMetric(f.asMetric());
    const h = new Histogram({ name: 'x_seconds', help: 'help text', buckets: bounds, labelNames: label ? [label] : [], registers: [theirs] });
    for (const [i, v] of samples.entries()) {
      const lv = label ? (i % 2 ? 'a' : 'b') : '';
      f.for(lv).observe(v);
      if (label) h.observe({ [label]: lv }, v);
      else h.observe(v);
    }
    const norm = (s: string): string[] => s.trim().split('\n').sort();
    assert.deepEqual(norm(await ours.metrics()), norm(await theirs.metrics()));
  }
});
