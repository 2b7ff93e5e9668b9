// The status page's live picture (GET /traffic): per service, one point a second over the last
// 5 minutes — connections ended per second, those that did not end cleanly, and p50/p99 of the
// backend latency (connect + time to first byte) over that second. Kept in the control plane
// only: each second it reads the cumulative figures (this process's, or the sum its workers
// reported, as /backends shows them) and keeps the differences, so the data plane adds nothing.

import { CLEAN_TERMINATIONS, TERMINATIONS } from '../proxy/events';
import { LATENCY_BOUNDS_MS, type TrafficFigures } from './metrics';

export const CHART_INTERVAL_MS = 1000;
/** points kept per service: 5 minutes */
export const CHART_POINTS = 300;

/** [at (ms since the epoch), connections/s, non-clean/s, p50 ms or null, p99 ms or null] */
export type ChartPoint = readonly [number, number, number, number | null, number | null];

interface Last {
  at: number;
  ends: number;
  bad: number;
  latency: Float64Array;
}

const BAD = TERMINATIONS.map((t) => !CLEAN_TERMINATIONS.has(t));

export class LiveChart {
  private readonly points = new Map<string, ChartPoint[]>();
  private readonly last = new Map<string, Last>();

  /** Take one point per service from the cumulative figures as of `at`. */
  sample(at: number, traffic: TrafficFigures, services: readonly string[]): void {
    for (const name of [...this.points.keys()]) {
      if (!services.includes(name)) {
        this.points.delete(name);
        this.last.delete(name);
      }
    }
    for (const name of services) {
      const counts = traffic.terminations.get(name);
      let ends = 0;
      let bad = 0;
      if (counts) {
        for (let i = 0; i < counts.length; i++) {
          ends += counts[i]!;
          if (BAD[i]) bad += counts[i]!;
        }
      }
      const latency = Float64Array.from(traffic.latency.get(name) ?? new Float64Array(LATENCY_BOUNDS_MS.length + 1));
      const prev = this.last.get(name);
      this.last.set(name, { at, ends, bad, latency });
      if (!prev) continue;
      const secs = Math.max(0.001, (at - prev.at) / 1000);
      // a worker's counts start again from 0 when it is replaced: never a negative rate
      const delta = latency.map((v, i) => Math.max(0, v - prev.latency[i]!));
      const list = this.points.get(name) ?? this.points.set(name, []).get(name)!;
      list.push([at, round(Math.max(0, ends - prev.ends) / secs), round(Math.max(0, bad - prev.bad) / secs), quantile(delta, 0.5), quantile(delta, 0.99)]);
      if (list.length > CHART_POINTS) list.splice(0, list.length - CHART_POINTS);
    }
  }

  /** Every service's points, oldest first. */
  view(): { interval_ms: number; services: { name: string; points: readonly ChartPoint[] }[] } {
    return { interval_ms: CHART_INTERVAL_MS, services: [...this.points].map(([name, points]) => ({ name, points })) };
  }
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}

/**
 * The q-quantile of samples counted per LATENCY_BOUNDS_MS bucket, read linearly inside its
 * bucket; null without samples. Above the last bound it says the last bound.
 */
export function quantile(counts: ArrayLike<number>, q: number): number | null {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (c > 0 && seen + c >= rank) {
      if (i >= LATENCY_BOUNDS_MS.length) return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!;
      const lo = i === 0 ? 0 : LATENCY_BOUNDS_MS[i - 1]!;
      const hi = LATENCY_BOUNDS_MS[i]!;
      return round(lo + ((hi - lo) * (rank - seen)) / c);
    }
    seen += c;
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!;
}
