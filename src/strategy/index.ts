import type { Algorithm } from '../config/schema';
import type { StrategyFactory } from '../core/strategy';
import { roundRobin } from './round-robin';
import { weightedRoundRobin } from './weighted-round-robin';
import { leastConnections } from './least-connections';
import { fastestResponse } from './fastest-response';
import { adaptive } from './adaptive';
import { consistentHash } from './consistent-hash';

export const STRATEGIES: Readonly<Record<Algorithm, StrategyFactory>> = {
  round_robin: roundRobin,
  weighted_round_robin: weightedRoundRobin,
  least_connections: leastConnections,
  fastest_response: fastestResponse,
  adaptive,
  consistent_hash: consistentHash,
};
