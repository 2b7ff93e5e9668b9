// The prom-client registry and every metric definition, in one place. Traffic counters and
// gauges are read from the load table at scrape time, so the data plane only adds to plain
// numbers between scrapes; histograms are observed per connection without labels.

import { Registry, Counter, Gauge, collectDefaultMetrics } from 'prom-client';
import { FastHistogram, type HistogramSeries } from './fast-histogram';
import type { LoadTable } from '../core/stats';
import type { Snapshot } from '../core/snapshot';
import type { BackendState } from '../core/backend';

const BACKEND_STATES: readonly BackendState[] = ['healthy', 'unhealthy', 'draining', 'disabled'];

import type { RejectReason } from '../proxy/events';
export type { RejectReason };
export const REJECT_REASONS: readonly RejectReason[] = ['max_connections', 'no_backend', 'acl', 'rate_limit'];

export interface MetricsSources {
  readonly loads: LoadTable;
  readonly snapshot: () => Snapshot;
  readonly version: string;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly rejected: Counter<'reason'>;
  private readonly rejectedChildren: Record<RejectReason, { inc(): void }>;
  private readonly connectDuration: FastHistogram;
  readonly connectionDuration: HistogramSeries;
  readonly healthChecks: Counter<'backend' | 'result'>;
  readonly reloads: Counter<'result'>;
  readonly generation: Gauge;
  private rejectedTotal = 0;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const { loads } = src;

    new Gauge({
      name: 'lemonade_connections_active',
      help: 'Open client connections, by backend (a connection counts from accept until both sockets close)',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        const byName = new Map<string, number>();
        for (const b of src.snapshot().backends) byName.set(b.name, (byName.get(b.name) ?? 0) + b.load.active);
        for (const [name, n] of byName) this.set({ backend: name }, n);
      },
    });
    new Gauge({
      name: 'lemonade_max_connections',
      help: 'The configured [proxy] max_connections (the cap on concurrent client connections)',
      registers,
      collect() {
        this.set(src.snapshot().config.proxy.maxConnections);
      },
    });
    new Gauge({
      name: 'lemonade_backend_max_connections',
      help: "A backend's configured max_connections (0 = unlimited)",
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) this.set({ backend: b.name }, b.spec.maxConnections);
      },
    });
    new Gauge({
      name: 'lemonade_backend_state',
      help: "1 for a backend's current state (healthy, unhealthy, draining, disabled), 0 for the others",
      labelNames: ['backend', 'state'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) {
          const now = b.load.state();
          for (const st of BACKEND_STATES) this.set({ backend: b.name, state: st }, st === now ? 1 : 0);
        }
      },
    });
    new Counter({
      name: 'lemonade_connections_total',
      help: 'Client connections forwarded to a backend',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const [name, c] of loads.allCounters()) this.inc({ backend: name }, c.connections);
      },
    });
    this.rejected = new Counter({
      name: 'lemonade_connections_rejected_total',
      help: 'Client connections closed at once, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.rejectedChildren = Object.fromEntries(REJECT_REASONS.map((r) => [r, this.rejected.labels(r)])) as Record<RejectReason, { inc(): void }>;
    for (const r of REJECT_REASONS) this.rejected.inc({ reason: r }, 0);
    new Gauge({
      name: 'lemonade_backend_up',
      help: '1 when the backend takes new connections (healthy and enabled), else 0',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) this.set({ backend: b.name }, b.load.state() === 'healthy' ? 1 : 0);
      },
    });
    new Counter({
      name: 'lemonade_backend_connect_errors_total',
      help: 'Failed connects to a backend (refused, timed out, unreachable)',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const [name, c] of loads.allCounters()) this.inc({ backend: name }, c.connectErrors);
      },
    });
    new Counter({
      name: 'lemonade_bytes_total',
      help: 'Bytes relayed; direction "in" is client to backend, "out" backend to client',
      labelNames: ['backend', 'direction'],
      registers,
      collect() {
        this.reset();
        for (const [name, c] of loads.allCounters()) {
          this.inc({ backend: name, direction: 'in' }, c.bytesIn);
          this.inc({ backend: name, direction: 'out' }, c.bytesOut);
        }
      },
    });
    // the two per-connection histograms are plain arrays read at scrape time (fast-histogram.ts)
    this.connectDuration = new FastHistogram(
      'lemonade_backend_connect_duration_seconds',
      'Time to establish a TCP connection to a backend, by backend',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      'backend',
    );
    this.registry.registerMetric(this.connectDuration.asMetric());
    const lifetimes = new FastHistogram(
      'lemonade_connection_duration_seconds',
      'Lifetime of proxied client connections',
      [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600],
    );
    this.registry.registerMetric(lifetimes.asMetric());
    this.connectionDuration = lifetimes.for();
    this.healthChecks = new Counter({
      name: 'lemonade_health_checks_total',
      help: 'Active health checks, by backend and result (success|failure)',
      labelNames: ['backend', 'result'],
      registers,
    });
    this.reloads = new Counter({
      name: 'lemonade_config_reloads_total',
      help: 'Configuration reloads, by result (success|failure)',
      labelNames: ['result'],
      registers,
    });
    this.reloads.inc({ result: 'success' }, 0);
    this.reloads.inc({ result: 'failure' }, 0);
    this.generation = new Gauge({
      name: 'lemonade_config_generation',
      help: 'Generation of the applied configuration (1 at start, +1 per applied reload)',
      registers,
    });
    const info = new Gauge({ name: 'lemonade_build_info', help: 'Build information', labelNames: ['version'], registers });
    info.set({ version: src.version }, 1);
  }

  /** Observe a backend connect time (the series of a backend name is made once). */
  observeConnect(backend: string, seconds: number): void {
    this.connectDuration.for(backend).observe(seconds);
  }

  reject(reason: RejectReason): void {
    this.rejectedTotal++;
    this.rejectedChildren[reason].inc();
  }

  /** rejections so far, all reasons */
  rejectedCount(): number {
    return this.rejectedTotal;
  }
}
