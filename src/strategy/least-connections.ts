// least_connections: the fewest active connections relative to weight, compared without
// division (a.active * b.weight < b.active * a.weight). Ties rotate so they spread evenly.

import type { Candidate, Strategy } from '../core/strategy';

export function leastConnections(): Strategy {
  let rotor = 0;
  return {
    pick(c: readonly Candidate[]): Candidate | undefined {
      const n = c.length;
      if (n === 0) return undefined;
      const start = rotor++ % n;
      rotor %= 0x40000000;
      let best = c[start]!;
      for (let k = 1; k < n; k++) {
        const cand = c[(start + k) % n]!;
        if (cand.load.active * best.weight < best.load.active * cand.weight) best = cand;
      }
      return best;
    },
  };
}
