// fastest_response: the lowest moving average of backend latency (connect time + time to first
// backend byte), over weight. Backends with no sample yet are probed first, one connection at a
// time (a backend whose probe is still out is skipped, so a burst of new connections does not all
// land on an unknown backend before its first answer). The average of a backend that gets no
// traffic decays (core/stats.ts), so one that was slow is tried again later. Ties and the
// all-unknown case rotate.

import type { Candidate, Strategy } from '../core/strategy';

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
        if (!cand.load.hasLatency) {
          if (cand.load.active === 0) return cand; // probe
          continue; // its probe is still out
        }
        const cost = cand.load.peakLatencyMs() / cand.weight;
        if (cost < bestCost) {
          bestCost = cost;
          best = cand;
        }
      }
      // every backend is unknown with a probe out: rotate
      return best ?? c[start];
    },
  };
}
