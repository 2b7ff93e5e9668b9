// Per-backend mutable load figures, kept beside the immutable snapshots (keyed by backendKey) so
// they survive a reload. acquire() returns a lease that is released exactly once. Clock injected.

import type { AdminState, BackendState } from './backend';

export type Clock = () => number;

/** Time constant of the latency average's decay, ms. */
export const LATENCY_DECAY_MS = 2000;
/** Half-life of the recent-failure score, ms. */
export const FAILURE_HALF_LIFE_MS = 5000;

export interface LastCheck {
  readonly at: number;
  readonly ok: boolean;
  readonly error: string | null;
}

export interface AgentLast {
  readonly at: number;
  readonly reply: string | null;
  readonly error: string | null;
}

/** An agent's admin word. */
export type AgentAdmin = 'ready' | 'drain' | 'maint';

/** A backend's health as the control plane hands it to a new data-plane process. */
export interface HealthFigures {
  readonly healthy: boolean;
  readonly healthySince: number;
  readonly agentDown: boolean;
  readonly agentWeightPercent: number | null;
}

export class BackendLoad {
  active = 0;
  /** connections established (failed connect attempts are not counted; see connectErrors) */
  total = 0;
  connectErrors = 0;
  /** operator state, kept across reloads */
  admin: AdminState = 'enabled';
  /** set when a reload removed this backend: it only drains */
  removed = false;
  /** the weight the picker compares for this backend at the pick in progress (slow start applied); the picker's only */
  pickWeight = 0;

  // Health: this object is its one owner. Active checks (applyCheck), passive failures
  // (recordFailure) and agents (applyAgent, noteAgent) report here; everyone else reads.
  #healthy = true;
  #healthySince = 0;
  #ejectedUntil = 0;
  #consecutiveFailures = 0;
  #lastCheck: LastCheck | null = null;
  #agentDown = false;
  #agentWeightPercent: number | null = null;
  #agentAdmin: AgentAdmin | null = null;
  #agentLast: AgentLast | null = null;

  /** peak-sensitive moving average of latency (connect + time to first byte), ms */
  private peak = 0;
  /** plain moving average, ms */
  private ewma = 0;
  private samples = 0;
  private stamp = 0;
  private failScore = 0;
  private failStamp = 0;

  constructor(
    readonly key: string,
    private readonly clock: Clock,
  ) {}

  /** from the active health checker's threshold machine */
  get healthy(): boolean {
    return this.#healthy;
  }
  /** when it last turned healthy (for slow start); 0 = since the start */
  get healthySince(): number {
    return this.#healthySince;
  }
  /** passive health: not used before this time */
  get ejectedUntil(): number {
    return this.#ejectedUntil;
  }
  get consecutiveFailures(): number {
    return this.#consecutiveFailures;
  }
  get lastCheck(): LastCheck | null {
    return this.#lastCheck;
  }
  /** the agent check said down (`down` in its reply): no new connections until it says up */
  get agentDown(): boolean {
    return this.#agentDown;
  }
  /** the agent's weight, a percentage of the configured one; null = never said */
  get agentWeightPercent(): number | null {
    return this.#agentWeightPercent;
  }
  /** the agent's last admin word (`ready`, `drain`, `maint`), null = none yet; control plane only */
  get agentAdmin(): AgentAdmin | null {
    return this.#agentAdmin;
  }
  /** the last agent check: its line, or why there is none; control plane only */
  get agentLast(): AgentLast | null {
    return this.#agentLast;
  }

  /** Count one more connection in flight to this backend (from pick until its socket closes). */
  acquire(): Lease {
    this.active++;
    return new Lease(this);
  }

  /** @internal called by Lease */
  releaseOne(): void {
    this.active--;
  }

  get hasLatency(): boolean {
    return this.samples > 0;
  }

  /** Record one latency sample (ms). The peak average jumps up at once and decays down. */
  observeLatency(ms: number): void {
    const now = this.clock();
    if (this.samples === 0) {
      this.peak = ms;
      this.ewma = ms;
    } else {
      const w = Math.exp(-Math.max(0, now - this.stamp) / LATENCY_DECAY_MS);
      this.ewma = this.ewma * w + ms * (1 - w);
      const peakNow = this.peakLatencyMs();
      this.peak = ms > peakNow ? ms : peakNow * w + ms * (1 - w);
    }
    this.samples++;
    this.stamp = now;
  }

  /** The moving average of latency, ms (0 without samples). */
  latencyMs(): number {
    return this.samples === 0 ? 0 : this.ewma;
  }

  /**
   * The peak-sensitive average as read now: it decays toward zero while the backend gets no
   * traffic, so a backend that was slow is tried again after a while.
   */
  peakLatencyMs(): number {
    if (this.samples === 0) return 0;
    const w = Math.exp(-Math.max(0, this.clock() - this.stamp) / (LATENCY_DECAY_MS * 4));
    return this.peak * w;
  }

  /**
   * A connect failed (passive health): counted, and once `ejectAfter` failed in a row, the backend
   * takes no new connections before `ejectUntil`.
   */
  recordFailure(ejectAfter = Infinity, ejectUntil = 0): void {
    const now = this.clock();
    this.failScore = this.failureScore() + 1;
    this.failStamp = now;
    this.#consecutiveFailures++;
    this.connectErrors++;
    if (this.#consecutiveFailures >= ejectAfter) this.#ejectedUntil = ejectUntil;
  }

  /** A connect succeeded: one more connection established (total), and the failure streak ends. */
  recordSuccess(): void {
    this.total++;
    this.#consecutiveFailures = 0;
  }

  /** Recent failures, decaying with FAILURE_HALF_LIFE_MS. */
  failureScore(): number {
    if (this.failScore === 0) return 0;
    return this.failScore * Math.pow(0.5, (this.clock() - this.failStamp) / FAILURE_HALF_LIFE_MS);
  }

  /** What a data-plane process reports of this backend to the control plane. */
  report(): LoadReport {
    return {
      active: this.active,
      total: this.total,
      connectErrors: this.connectErrors,
      ejectedUntil: this.#ejectedUntil,
      consecutiveFailures: this.#consecutiveFailures,
      latencyMs: this.latencyMs(),
      samples: this.samples,
    };
  }

  /**
   * The control plane with several data-plane processes: take the figures merged from their
   * reports (mergeLoadReports) as this backend's. Only the control plane's copy is set this way;
   * it never picks, so its latency is a plain value.
   */
  absorb(r: LoadReport): void {
    this.active = r.active;
    this.total = r.total;
    this.connectErrors = r.connectErrors;
    this.#ejectedUntil = r.ejectedUntil;
    this.#consecutiveFailures = r.consecutiveFailures;
    this.samples = r.samples;
    this.ewma = r.latencyMs;
    this.peak = r.latencyMs;
    this.stamp = this.clock();
  }

  /**
   * An active check's result, through the threshold machine (health/state.ts): on the checker's
   * copy with `last`, and in each data-plane process as the control plane sends it. An up
   * transition, or a passing check while passively ejected, ends the ejection.
   */
  applyCheck(healthy: boolean, healthySince: number, ok: boolean, last?: LastCheck): void {
    if (last !== undefined) this.#lastCheck = last;
    const wasHealthy = this.#healthy;
    this.#healthy = healthy;
    this.#healthySince = healthySince;
    if ((healthy && !wasHealthy) || (ok && this.isEjected() && this.#consecutiveFailures > 0)) {
      this.#ejectedUntil = 0;
      this.#consecutiveFailures = 0;
    }
  }

  /** What an agent said that the data plane acts on: down, and its weight percentage. */
  applyAgent(down: boolean, weightPercent: number | null): void {
    this.#agentDown = down;
    this.#agentWeightPercent = weightPercent;
  }

  /** The control plane's record of an agent check: its last answer, and its last admin word. */
  noteAgent(last: AgentLast, admin: AgentAdmin | null = this.#agentAdmin): void {
    this.#agentLast = last;
    this.#agentAdmin = admin;
  }

  /** Agent checks are off: what the agent said no longer applies (a drain it asked for is the operator's). */
  forgetAgent(): void {
    this.#agentDown = false;
    this.#agentWeightPercent = null;
    this.#agentAdmin = null;
    this.#agentLast = null;
  }

  /** The health a new data-plane process starts from (the control plane's view). */
  health(): HealthFigures {
    return { healthy: this.#healthy, healthySince: this.#healthySince, agentDown: this.#agentDown, agentWeightPercent: this.#agentWeightPercent };
  }

  /** A new data-plane process takes the control plane's view of the health. */
  restoreHealth(h: HealthFigures): void {
    this.#healthy = h.healthy;
    this.#healthySince = h.healthySince;
    this.#agentDown = h.agentDown;
    this.#agentWeightPercent = h.agentWeightPercent;
  }

  isEjected(): boolean {
    // checked per backend on every pick: read the clock only when an ejection was ever set
    return this.#ejectedUntil !== 0 && this.#ejectedUntil > this.clock();
  }

  /** May this backend take new connections (ignoring caps and weight)? */
  isUsable(): boolean {
    return this.#healthy && !this.#agentDown && this.admin === 'enabled' && !this.removed && !this.isEjected();
  }

  /** An agent's 0 % shows as draining, as HAProxy shows a zero weight as DRAIN. */
  state(): BackendState {
    if (this.admin === 'disabled') return 'disabled';
    if (this.admin === 'draining' || this.removed || this.#agentWeightPercent === 0) return 'draining';
    return this.#healthy && !this.#agentDown && !this.isEjected() ? 'healthy' : 'unhealthy';
  }
}

/** One backend's figures as one data-plane process sees them. */
export interface LoadReport {
  readonly active: number;
  readonly total: number;
  readonly connectErrors: number;
  readonly ejectedUntil: number;
  readonly consecutiveFailures: number;
  readonly latencyMs: number;
  readonly samples: number;
}

/**
 * Several processes' figures of one backend as one: counts add up, the latency is the mean
 * weighted by samples, the ejection lasts as long as the longest (a backend ejected by one
 * process shows as unhealthy).
 */
export function mergeLoadReports(list: readonly LoadReport[]): LoadReport {
  let active = 0, total = 0, connectErrors = 0, ejectedUntil = 0, consecutiveFailures = 0, samples = 0, weighted = 0;
  for (const r of list) {
    active += r.active;
    total += r.total;
    connectErrors += r.connectErrors;
    if (r.ejectedUntil > ejectedUntil) ejectedUntil = r.ejectedUntil;
    if (r.consecutiveFailures > consecutiveFailures) consecutiveFailures = r.consecutiveFailures;
    samples += r.samples;
    weighted += r.latencyMs * r.samples;
  }
  return { active, total, connectErrors, ejectedUntil, consecutiveFailures, samples, latencyMs: samples > 0 ? weighted / samples : 0 };
}

export class Lease {
  private released = false;
  constructor(readonly load: BackendLoad) {}
  /** Releases the backend's active count; later calls do nothing. */
  release(): boolean {
    if (this.released) return false;
    this.released = true;
    this.load.releaseOne();
    return true;
  }
}

/**
 * Monotonic traffic counters of one backend name (never reset, so they serve as Prometheus
 * counters read at scrape time: the data plane only adds to plain numbers).
 */
export class BackendCounters {
  connections = 0;
  connectErrors = 0;
  bytesIn = 0;
  bytesOut = 0;
}

/**
 * The table of load figures, by backend key, and of counters, by backend reference (service/name).
 * Both hold what the snapshots hold plus what still drains, no more (sweep): endpoints found by
 * DNS come and go, and what they leave behind is freed.
 */
export class LoadTable {
  private readonly map = new Map<string, BackendLoad>();
  private readonly counters = new Map<string, BackendCounters>();
  /** the backend reference of each load key (its counters' key) */
  private readonly refOf = new Map<string, string>();
  constructor(private readonly clock: Clock) {}

  countersFor(name: string): BackendCounters {
    let c = this.counters.get(name);
    if (!c) {
      c = new BackendCounters();
      this.counters.set(name, c);
    }
    return c;
  }

  values(): IterableIterator<BackendLoad> {
    return this.map.values();
  }

  allCounters(): ReadonlyMap<string, BackendCounters> {
    return this.counters;
  }

  /** A backend's counters if it has some (no new entry). */
  peekCounters(ref: string): BackendCounters | undefined {
    return this.counters.get(ref);
  }

  /** `ref`: the backend's service/name, whose counters live as long as one of its loads does. */
  get(key: string, ref?: string): BackendLoad {
    let l = this.map.get(key);
    if (!l) {
      l = new BackendLoad(key, this.clock);
      this.map.set(key, l);
    }
    if (ref !== undefined) this.refOf.set(key, ref);
    return l;
  }

  peek(key: string): BackendLoad | undefined {
    return this.map.get(key);
  }

  /**
   * Forget figures of backends no longer configured once their last connection closed, and the
   * counters no remaining backend has. Returns the references whose counters went (their metric
   * series go with them).
   */
  sweep(live: ReadonlySet<string>): string[] {
    for (const [k, l] of this.map) {
      if (!live.has(k) && l.active === 0) {
        this.map.delete(k);
        this.refOf.delete(k);
      }
    }
    const kept = new Set(this.refOf.values());
    const dropped: string[] = [];
    for (const ref of this.counters.keys()) {
      if (!kept.has(ref)) {
        this.counters.delete(ref);
        dropped.push(ref);
      }
    }
    return dropped;
  }

}
