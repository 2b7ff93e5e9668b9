// adaptive: power of two distinct random choices over
//   cost = peak-sensitive latency average × (active + 1) / weight × (1 + recent failure penalty).
// A backend without latency samples gets a pessimistic default (twice the slowest known average),
// so it is tried but not flooded. The latency average decays while unused, so a backend that
// turned slow and recovered gets traffic back.

import type { Candidate, Strategy, StrategyEnv } from './types';

/** Latency assumed when no backend has a sample yet, ms. */
export const DEFAULT_LATENCY_MS = 10;
/** How much one recent failure multiplies the cost by (decaying). */
export const FAILURE_PENALTY = 4;

export function adaptiveCost(c: Candidate, unknownLatencyMs: number): number {
  const lat = c.load.hasLatency ? Math.max(c.load.peakLatencyMs(), 0.01) : unknownLatencyMs;
  return ((lat * (c.load.active + 1)) / c.weight) * (1 + FAILURE_PENALTY * c.load.failureScore());
}

export function adaptive(env: StrategyEnv): Strategy {
  return {
    pick(c: readonly Candidate[]): Candidate | undefined {
      const n = c.length;
      if (n <= 1) return c[0];
      const i = Math.floor(env.random() * n) % n;
      let j = Math.floor(env.random() * (n - 1)) % (n - 1);
      if (j >= i) j++;
      const a = c[i]!;
      const b = c[j]!;
      let unknown = DEFAULT_LATENCY_MS;
      if (!a.load.hasLatency || !b.load.hasLatency) {
        let slowest = 0;
        for (const x of c) if (x.load.hasLatency) slowest = Math.max(slowest, x.load.peakLatencyMs());
        if (slowest > 0) unknown = slowest * 2;
      }
      return adaptiveCost(b, unknown) < adaptiveCost(a, unknown) ? b : a;
    },
  };
}
