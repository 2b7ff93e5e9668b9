// fastest_response: the lowest moving average of backend latency (connect time + time to first
// backend byte). Backends with no sample yet are probed first; the average of a backend that gets
// no traffic decays, so one that was slow is tried again later.

import type { Candidate, Strategy } from './types';

export function fastestResponse(): Strategy {
  let rotor = 0;
  return {
    pick(c: readonly Candidate[]): Candidate | undefined {
      const n = c.length;
      if (n === 0) return undefined;
      const start = rotor++ % n;
      rotor %= 0x40000000;
      let best: Candidate | undefined;
      let bestCost = Infinity;
      for (let k = 0; k < n; k++) {
        const cand = c[(start + k) % n]!;
        if (!cand.load.hasLatency) return cand; // probe
        const cost = cand.load.peakLatencyMs() / cand.weight;
        if (cost < bestCost) {
          bestCost = cost;
          best = cand;
        }
      }
      return best;
    },
  };
}
