// weighted_round_robin: smooth weighted round robin (as nginx). Over any sum(weights)
// consecutive picks from an unchanged set, each backend is picked exactly weight times, spread out.

import type { Candidate, Strategy } from '../core/strategy';

export function weightedRoundRobin(): Strategy {
  const current = new Map<number, number>();
  return {
    pick(c: readonly Candidate[]): Candidate | undefined {
      if (c.length === 0) return undefined;
      let total = 0;
      let best: Candidate | undefined;
      let bestCur = -Infinity;
      for (const cand of c) {
        const cur = (current.get(cand.id) ?? 0) + cand.weight;
        current.set(cand.id, cur);
        total += cand.weight;
        if (cur > bestCur) {
          bestCur = cur;
          best = cand;
        }
      }
      current.set(best!.id, bestCur - total);
      return best;
    },
  };
}
