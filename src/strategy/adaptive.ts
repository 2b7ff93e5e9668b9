// adaptive: power of two distinct random choices (plus the last winner, see below) over
//   cost = peak-sensitive latency average × (active + 1) / weight × (1 + recent failure penalty).
// A backend without latency samples is probed, one connection at a time (so every backend gets
// measured, and a burst does not land on an unknown one); while its probe is out it gets a
// pessimistic default (twice the slowest known average). The latency average decays while
// unused, so a backend that turned slow and recovered gets traffic back.

import type { Candidate, Strategy, StrategyEnv } from '../core/strategy';

/** Latency assumed when no backend has a sample yet, ms. */
export const DEFAULT_LATENCY_MS = 10;
/** How much one recent failure multiplies the cost by (decaying). */
export const FAILURE_PENALTY = 4;
/** The last winner overrides the random pair only when it is this many times cheaper. */
export const MEMORY_MARGIN = 2;

export function adaptiveCost(c: Candidate, unknownLatencyMs: number): number {
  const lat = c.load.hasLatency ? Math.max(c.load.peakLatencyMs(), 0.01) : unknownLatencyMs;
  return ((lat * (c.load.active + 1)) / c.weight) * (1 + FAILURE_PENALTY * c.load.failureScore());
}

export function adaptive(env: StrategyEnv): Strategy {
  // "Two choices with memory": besides the two distinct random choices, the winner of the last
  // pick is a third contender (when it is still in the list, found in O(1) by index and id).
  // Plain P2C over a handful of backends is weak when most of them are slow: with three backends
  // of which two are slow, a third of all pairs hold only slow ones and must pick one of them.
  // The remembered winner is the cheapest recently seen, so such a pair is usually beaten. It
  // only overrides the pair when it is MEMORY_MARGIN times cheaper than the pair's best, so
  // between backends of about the same cost plain P2C spreads the load (without the margin, light
  // sequential traffic stuck to one backend). It cannot herd: its cost grows with every
  // connection it gets (active + 1), and once another contender wins, that one is remembered.
  let memId = -1;
  let memIdx = -1;
  return {
    pick(c: readonly Candidate[]): Candidate | undefined {
      const n = c.length;
      if (n <= 1) return c[0];
      for (let k = 0; k < n; k++) {
        const x = c[k]!;
        if (!x.load.hasLatency && x.load.active === 0) return x; // probe
      }
      const i = Math.floor(env.random() * n) % n;
      let j = Math.floor(env.random() * (n - 1)) % (n - 1);
      if (j >= i) j++;
      const a = c[i]!;
      const b = c[j]!;
      const m = memIdx >= 0 && memIdx < n && c[memIdx]!.id === memId ? c[memIdx]! : undefined;
      let unknown = DEFAULT_LATENCY_MS;
      if (!a.load.hasLatency || !b.load.hasLatency || (m !== undefined && !m.load.hasLatency)) {
        let slowest = 0;
        for (const x of c) if (x.load.hasLatency) slowest = Math.max(slowest, x.load.peakLatencyMs());
        if (slowest > 0) unknown = slowest * 2;
      }
      let best = a;
      let bestIdx = i;
      let bestCost = adaptiveCost(a, unknown);
      const costB = adaptiveCost(b, unknown);
      if (costB < bestCost) {
        best = b;
        bestIdx = j;
        bestCost = costB;
      }
      if (m !== undefined && m !== a && m !== b && adaptiveCost(m, unknown) * MEMORY_MARGIN < bestCost) {
        best = m;
        bestIdx = memIdx;
      }
      memId = best.id;
      memIdx = bestIdx;
      return best;
    },
  };
}
