// What the admin API answers, built from the live state: the /health report, the /backends rows
// (draining ones included), /status, the operator's backend actions, and the AdminApi object the
// HTTP server reads through. No sockets here: admin/server.ts serves these.

import type { BackendConfig } from '../config/schema';
import type { AdminState } from '../core/backend';
import type { BackendLoad } from '../core/stats';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { Metrics } from '../obs/metrics';
import type { LiveState } from '../runtime/live-state';
import type { DataPlane } from '../runtime/plane';
import type { AdminAction, AdminApi, HealthReport, ReloadOutcome } from './server';

export interface ViewDeps {
  readonly state: LiveState;
  readonly plane: DataPlane;
  readonly metrics: Metrics;
  readonly events: EventRing;
  readonly logger: Logger;
  readonly now: () => number;
  readonly startedAt: number;
  readonly version: string;
  /** the config as loaded at start: its path, or "(environment)" */
  readonly configPath: string;
  /** data-plane processes (1 = this process) */
  readonly workers: number;
  /** POST /reload: through the trigger, so it coalesces with the watcher's */
  readonly reload: (trigger: string) => Promise<ReloadOutcome>;
}

export class AdminViews {
  constructor(private readonly d: ViewDeps) {}

  health(): HealthReport {
    const snap = this.d.state.snapshot;
    const total = snap.backends.length;
    if (this.d.state.stopping || !this.d.plane.listening) return { status: 'unhealthy', usable: 0, total };
    const usable = snap.usableCount();
    if (usable === 0) return { status: 'unhealthy', usable, total };
    const considered = snap.backends.filter((b) => b.load.admin === 'enabled');
    const down = considered.some((b) => b.load.state() === 'unhealthy');
    return { status: down ? 'degraded' : 'healthy', usable, total };
  }

  backends(): Record<string, unknown>[] {
    const rows = this.d.state.snapshot.backends.map((b) => backendRow(b.spec, b.load));
    for (const { spec, load } of this.d.state.drainingBackends()) rows.push(backendRow(spec, load));
    return rows;
  }

  status(): Record<string, unknown> {
    const { state: s, plane } = this.d;
    return {
      version: this.d.version,
      uptime_seconds: Math.floor((this.d.now() - this.d.startedAt) / 1000),
      strategy: s.config.strategy,
      listen_address: plane.address,
      ready: s.ready && !s.stopping,
      admin_token_set: s.config.admin.token !== '',
      config: {
        path: this.d.configPath,
        generation: s.generation,
        hash: s.shownHash,
        last_reload: s.lastReload,
      },
      connections: {
        active: plane.open,
        total: plane.accepted,
        rejected: this.d.metrics.rejectedCount(),
      },
      backends: this.backends(),
      ...(this.d.workers > 1 ? { workers: plane.processes() } : {}),
    };
  }

  backendAction(name: string, action: AdminAction): 'ok' | 'not_found' {
    const b = this.d.state.snapshot.backends.find((x) => x.name === name);
    if (!b) return 'not_found';
    const state: AdminState = action === 'enable' ? 'enabled' : action === 'drain' ? 'draining' : 'disabled';
    if (state === 'enabled') this.d.state.operator.delete(name);
    else this.d.state.operator.set(name, state);
    b.load.admin = state;
    this.d.logger.info({ backend: name, action }, `backend ${name}: ${action}`);
    this.d.events.push('admin', `${name}: ${action}`);
    // disable cuts the backend's connections at once; drain lets them finish
    this.d.plane.adminChanged(name, b.load.key, state, action === 'disable');
    return 'ok';
  }

  /** The interface admin/server.ts reads the balancer through. */
  api(): AdminApi {
    const { state: s, plane, metrics } = this.d;
    return {
      health: () => this.health(),
      ready: () => s.ready && !s.stopping && plane.listening,
      refresh: () => plane.refresh(),
      status: () => this.status(),
      backends: () => this.backends(),
      events: () => this.d.events.list(),
      backendAction: (n, a) => this.backendAction(n, a),
      reload: (t) => this.d.reload(t),
      metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      token: () => s.config.admin.token,
      allowedHosts: () => s.config.admin.allowedHosts,
    };
  }
}

function backendRow(spec: BackendConfig, load: BackendLoad): Record<string, unknown> {
  const lc = load.lastCheck;
  return {
    id: spec.id,
    name: spec.name,
    address: spec.address,
    weight: spec.weight,
    backup: spec.backup,
    max_connections: spec.maxConnections,
    state: load.state(),
    active: load.active,
    total: load.total,
    latency_ms: load.hasLatency ? Math.round(load.latencyMs() * 1000) / 1000 : null,
    connect_errors: load.connectErrors,
    last_check: lc ? { at: new Date(lc.at).toISOString(), ok: lc.ok, error: lc.error } : null,
  };
}
