// The one signature every strategy shares. A strategy sees only usable candidates (healthy,
// enabled, not full, weight > 0, not already tried) and returns one of them.

import type { BackendLoad } from '../core/stats';

export interface Candidate {
  readonly id: number;
  readonly name: string;
  /** configured weight times the slow-start ramp, > 0 */
  readonly weight: number;
  readonly load: BackendLoad;
}

export interface StrategyEnv {
  /** uniform in [0, 1) */
  readonly random: () => number;
}

export interface Strategy {
  pick(candidates: readonly Candidate[]): Candidate | undefined;
}

export type StrategyFactory = (env: StrategyEnv) => Strategy;
