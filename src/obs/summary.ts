// The periodic "summary" log line: every [metrics] interval_millis, open and accepted connections,
// rejections, and per backend its state, open connections, rate since the last line and latency.

import { shownName } from '../core/backend';
import type { Snapshot } from '../core/snapshot';
import type { Logger } from './logger';

export interface SummaryDeps {
  readonly now: () => number;
  readonly logger: Logger;
  /** the data plane's figures; refresh() brings them up to date (several processes) */
  readonly traffic: { refresh(): Promise<void>; readonly open: number; readonly accepted: number };
  readonly rejected: () => number;
  readonly snapshot: () => Snapshot;
  readonly intervalMs: () => number;
}

export class SummaryLog {
  private timer: NodeJS.Timeout | null = null;
  private lastAt = 0;
  private readonly lastTotal = new Map<string, number>();

  constructor(private readonly d: SummaryDeps) {}

  /** (Re)start the timer with the current interval; the next line's rates count from now. */
  schedule(): void {
    if (this.timer) clearInterval(this.timer);
    this.lastAt = this.d.now();
    this.timer = setInterval(() => void this.d.traffic.refresh().then(() => this.log()), this.d.intervalMs());
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private log(): void {
    const now = this.d.now();
    const secs = Math.max(0.001, (now - this.lastAt) / 1000);
    const backends: Record<string, unknown> = {};
    const seen = new Set<string>();
    for (const b of this.d.snapshot().backends) {
      seen.add(b.load.key);
      // a backend not summarised yet started from 0 (its figures are new with its key)
      const prev = this.lastTotal.get(b.load.key) ?? 0;
      backends[shownName(b.service, b.name)] = {
        state: b.load.state(),
        active: b.load.active,
        rate: Math.round(((b.load.total - prev) / secs) * 100) / 100,
        latency_ms: b.load.hasLatency ? Math.round(b.load.latencyMs() * 10) / 10 : null,
      };
      this.lastTotal.set(b.load.key, b.load.total);
    }
    // only the backends there now: endpoints found by DNS come and go
    for (const k of [...this.lastTotal.keys()]) if (!seen.has(k)) this.lastTotal.delete(k);
    this.lastAt = now;
    const t = this.d.traffic;
    this.d.logger.info({ active: t.open, total: t.accepted, rejected: this.d.rejected(), backends }, 'summary');
  }
}
