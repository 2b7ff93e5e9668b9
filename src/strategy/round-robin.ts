// round_robin: cycles through the usable backends, ignoring weight.

import type { Candidate, Strategy } from '../core/strategy';

export function roundRobin(): Strategy {
  let next = 0;
  return {
    pick(c: readonly Candidate[]): Candidate | undefined {
      if (c.length === 0) return undefined;
      const i = next % c.length;
      next = (next + 1) % 0x40000000;
      return c[i];
    },
  };
}
