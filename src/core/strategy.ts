// The strategy contract: the one signature every strategy shares, in core because the snapshot
// composes a picker from it. A strategy sees only usable candidates (healthy, enabled, not full,
// weight > 0, not already tried) and returns one of them.

import type { BackendLoad } from './stats';

export interface Candidate {
  readonly id: number;
  readonly name: string;
  /** configured weight (scaled by an agent's percentage) times the slow-start ramp, > 0 */
  readonly weight: number;
  readonly load: BackendLoad;
}

/** A backend of the pool a strategy serves, as the snapshot was built with it. */
export interface PoolMember {
  readonly id: number;
  readonly address: string;
  /** configured weight scaled by an agent's percentage (without slow start) */
  readonly weight: number;
}

export interface StrategyEnv {
  /** uniform in [0, 1) */
  readonly random: () => number;
  /** every backend of the pool (primaries, or backups) the strategy picks from: for consistent_hash's table */
  readonly pool?: readonly PoolMember[];
  /** consistent_hash's hash_balance_factor (0 = off) */
  readonly hashBalanceFactor?: number;
}

export interface Strategy {
  /** `key`: the connection's hash key (the client's IP), given only to strategies that are `keyed` */
  pick(candidates: readonly Candidate[], key?: string): Candidate | undefined;
  /**
   * Built from `env.pool` (consistent_hash): wants the key, is built anew with every snapshot
   * (never carried over a reload), one per pool.
   */
  readonly keyed?: true;
  /** the backend's share of the table, 0..1 (keyed strategies only) */
  share?(id: number): number;
}

export type StrategyFactory = (env: StrategyEnv) => Strategy;
