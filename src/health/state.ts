// The rise/fall threshold machine of active health checks. Pure.
//
// A backend starts "unknown" and counts as healthy until its first check: that first result
// decides at once (a dead backend at start is taken out after one check, not three). From then on
// it takes `unhealthyThreshold` consecutive failures to go down and `healthyThreshold`
// consecutive successes to come back.

export interface Thresholds {
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
}

export interface HealthState {
  readonly status: 'unknown' | 'healthy' | 'unhealthy';
  /** consecutive results in the opposite direction of status */
  readonly streak: number;
}

export const INITIAL_HEALTH: HealthState = Object.freeze({ status: 'unknown', streak: 0 });

export function isHealthy(s: HealthState): boolean {
  return s.status !== 'unhealthy';
}

export function observe(s: HealthState, ok: boolean, t: Thresholds): HealthState {
  switch (s.status) {
    case 'unknown':
      return { status: ok ? 'healthy' : 'unhealthy', streak: 0 };
    case 'healthy':
      if (ok) return s.streak === 0 ? s : { status: 'healthy', streak: 0 };
      return s.streak + 1 >= t.unhealthyThreshold ? { status: 'unhealthy', streak: 0 } : { status: 'healthy', streak: s.streak + 1 };
    case 'unhealthy':
      if (!ok) return s.streak === 0 ? s : { status: 'unhealthy', streak: 0 };
      return s.streak + 1 >= t.healthyThreshold ? { status: 'healthy', streak: 0 } : { status: 'unhealthy', streak: s.streak + 1 };
  }
}
