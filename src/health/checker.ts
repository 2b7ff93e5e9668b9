// Active health checks: one probe per backend every [health] interval, each bounded by
// [health] timeout, on jittered unref'd timers. Results go through the threshold machine into the
// backend's load figures (kept across reloads), and are reported to a listener.

import net from 'node:net';
import http from 'node:http';
import type { Snapshot, SnapshotBackend } from '../core/snapshot';
import type { BackendLoad } from '../core/stats';
import { INITIAL_HEALTH, isHealthy, observe, type HealthState } from './state';

export interface HealthEvent {
  readonly at: number;
  /** the backend's load key */
  readonly key: string;
  readonly backend: string;
  readonly address: string;
  readonly ok: boolean;
  readonly error: string | null;
  /** set when the backend changed state with this check */
  readonly transition: 'up' | 'down' | null;
}

export interface CheckerDeps {
  readonly current: () => Snapshot;
  readonly now: () => number;
  readonly random: () => number;
  readonly onResult: (e: HealthEvent) => void;
}

interface Probe {
  readonly key: string;
  backend: SnapshotBackend;
  state: HealthState;
  timer: NodeJS.Timeout | null;
  /** when the pending timer fires (deps.now() time) */
  dueAt: number;
  inflight: (() => void) | null;
}

/** Fraction of the interval by which each wait is randomly shortened or lengthened. */
const JITTER = 0.1;

export class HealthChecker {
  private readonly probes = new Map<string, Probe>();
  private stopped = false;

  constructor(private readonly deps: CheckerDeps) {}

  /**
   * Start probes for a snapshot's backends (first round at once); call again after each reload.
   * A reload that shortens the interval brings forward checks still waiting out the old one.
   */
  sync(snap: Snapshot): void {
    if (this.stopped) return;
    const live = new Set<string>();
    const interval = snap.config.health.intervalMs;
    const now = this.deps.now();
    for (const b of snap.backends) {
      live.add(b.load.key);
      const p = this.probes.get(b.load.key);
      if (p) {
        p.backend = b;
        if (p.timer && p.dueAt - now > interval * (1 + JITTER)) {
          clearTimeout(p.timer);
          this.schedule(p, this.jittered(interval));
        }
      } else {
        const probe: Probe = { key: b.load.key, backend: b, state: INITIAL_HEALTH, timer: null, dueAt: 0, inflight: null };
        this.probes.set(b.load.key, probe);
        this.schedule(probe, 0);
      }
    }
    for (const [key, p] of this.probes) {
      if (!live.has(key)) this.stopProbe(p);
    }
  }


  stop(): void {
    this.stopped = true;
    for (const p of this.probes.values()) this.stopProbe(p);
  }

  private stopProbe(p: Probe): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    p.inflight?.();
    this.probes.delete(p.key);
  }

  private schedule(p: Probe, delay: number): void {
    p.dueAt = this.deps.now() + delay;
    p.timer = setTimeout(() => this.run(p), delay);
    p.timer.unref();
  }

  /** The interval, randomly shortened or lengthened by up to JITTER. */
  private jittered(interval: number): number {
    return interval * (1 + (this.deps.random() * 2 - 1) * JITTER);
  }

  private run(p: Probe): void {
    p.timer = null;
    if (this.stopped || this.probes.get(p.key) !== p) return;
    const h = this.deps.current().config.health;
    const started = this.deps.now();
    const done = (error: string | null): void => {
      p.inflight = null;
      if (this.stopped || this.probes.get(p.key) !== p) return;
      this.record(p, error);
      const elapsed = this.deps.now() - started;
      this.schedule(p, Math.max(0, this.jittered(this.deps.current().config.health.intervalMs) - elapsed));
    };
    const { host, port } = p.backend.spec;
    p.inflight = h.kind === 'http' ? httpProbe(host, port, h.path, h.timeoutMs, done) : tcpProbe(host, port, h.timeoutMs, done);
  }

  private record(p: Probe, error: string | null): void {
    const ok = error === null;
    const load: BackendLoad = p.backend.load;
    const before = p.state;
    const h = this.deps.current().config.health;
    p.state = observe(before, ok, h);
    const now = this.deps.now();
    load.lastCheck = { at: now, ok, error };
    const wasHealthy = load.healthy;
    load.healthy = isHealthy(p.state);
    let transition: 'up' | 'down' | null = null;
    if (load.healthy && !wasHealthy) {
      transition = 'up';
      load.healthySince = now;
      load.ejectedUntil = 0;
      load.consecutiveFailures = 0;
    } else if (!load.healthy && wasHealthy) {
      transition = 'down';
    }
    if (ok && load.isEjected() && load.consecutiveFailures > 0) {
      // a passing active check ends a passive ejection early
      load.ejectedUntil = 0;
      load.consecutiveFailures = 0;
    }
    this.deps.onResult({ at: now, key: p.key, backend: p.backend.name, address: p.backend.spec.address, ok, error, transition });
  }
}

type Done = (error: string | null) => void;

/** Returns a function that aborts the probe. */
function tcpProbe(host: string, port: number, timeoutMs: number, done: Done): () => void {
  let finished = false;
  const s = net.connect({ host, port });
  const finish = (err: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(t);
    s.destroy();
    done(err);
  };
  const t = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs);
  t.unref();
  s.once('connect', () => finish(null));
  s.once('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  return () => {
    finished = true;
    clearTimeout(t);
    s.destroy();
  };
}

function httpProbe(host: string, port: number, path: string, timeoutMs: number, done: Done): () => void {
  let finished = false;
  const finish = (err: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(t);
    req.destroy();
    done(err);
  };
  const req = http.request({ host, port, path, method: 'GET', agent: false, headers: { 'user-agent': 'lemonade-lb health check', connection: 'close' } }, (res) => {
    const code = res.statusCode ?? 0;
    res.resume();
    finish(code >= 200 && code < 400 ? null : `HTTP ${code}`);
  });
  const t = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs);
  t.unref();
  req.once('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  req.end();
  return () => {
    finished = true;
    clearTimeout(t);
    req.destroy();
  };
}
