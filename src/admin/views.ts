// What the admin API answers, built from the live state: the /health report, the /backends rows
// (draining ones included), /status, the operator's backend actions, and the AdminApi object the
// HTTP server reads through. No sockets here: admin/server.ts serves these.

import { defaultAlgorithm, type BackendConfig } from '../config/schema';
import { backendRef } from '../core/backend';
import { discovered, parentOf } from '../core/endpoints';
import type { CertificateFacts } from '../core/certificate';
import type { ServiceSnapshot } from '../core/snapshot';
import type { BackendLoad } from '../core/stats';
import type { DnsStatus } from '../discovery/dns';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { Metrics } from '../obs/metrics';
import type { LiveChart } from '../obs/live-chart';
import type { LiveState } from '../runtime/live-state';
import type { DataPlane } from '../runtime/plane';
import { setBackendAdmin } from '../runtime/backend-admin';
import type { ReloadOutcome } from '../runtime/control';
import type { ActionResult, AdminApi } from './server';
import { ADMIN_CERTIFICATE_SERVICE, type AdminAction, type BackendRow, type CertificateRow, type HealthAnswer, type HealthStatus, type ServiceRow, type StatusAnswer, type TrafficAnswer } from './wire';

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
  /** the backend names looked up in the DNS, for /status */
  readonly dns: () => readonly DnsStatus[];
  /** POST /reload: through the trigger, so it coalesces with the watcher's */
  readonly reload: (trigger: string) => Promise<ReloadOutcome>;
  readonly chart: LiveChart;
  /** the certificate the admin API serves now (null: plain HTTP) */
  readonly adminCertificate?: () => CertificateFacts | null;
}

/** A certificate served, and by what: a service's name or ADMIN_CERTIFICATE_SERVICE. */
export interface ServedCertificate {
  readonly service: string;
  readonly facts: CertificateFacts;
}

export class AdminViews {
  constructor(private readonly d: ViewDeps) {}

  /**
   * The whole balancer: 503 when no service has a usable backend (or it does not listen, or
   * stops), degraded when some service has none or some backend is unhealthy. With `service`:
   * that service alone (null when there is no such service).
   */
  health(service?: string): HealthAnswer | null {
    const snap = this.d.state.snapshot;
    const down = this.d.state.stopping || !this.d.plane.listening;
    if (service !== undefined) {
      const svc = snap.service(service);
      if (!svc) return null;
      const usable = down ? 0 : svc.usableCount();
      return { status: down ? 'unhealthy' : serviceStatus(svc, usable), usable, total: svc.backends.length, service };
    }
    const total = snap.backends.length;
    const services: Record<string, HealthStatus> = {};
    let usable = 0;
    for (const svc of snap.services) {
      const n = down ? 0 : svc.usableCount();
      usable += n;
      services[svc.name] = down ? 'unhealthy' : serviceStatus(svc, n);
    }
    const statuses = Object.values(services);
    const status: HealthStatus = down || usable === 0 ? 'unhealthy' : statuses.every((x) => x === 'healthy') ? 'healthy' : 'degraded';
    return { status, usable, total, services };
  }

  backends(): BackendRow[] {
    const snap = this.d.state.snapshot;
    const rows = snap.backends.map((b) => {
      const svc = snap.service(b.service);
      return backendRow(b.service, b.spec, b.load, b.baseWeight, svc !== undefined && svc.health.agentPort > 0, svc?.hashShare(b.id));
    });
    for (const { service, spec, load } of this.d.state.drainingBackends()) rows.push(backendRow(service, spec, load, spec.weight, load.agentLast !== null));
    return rows;
  }

  /** GET /services: each service's listener, algorithm and figures. */
  services(): ServiceRow[] {
    const { state: s, plane, metrics } = this.d;
    const addresses = plane.addresses();
    const open = plane.openByService();
    return s.snapshot.services.map((svc) => {
      let total = 0;
      for (const b of svc.backends) total += b.load.total;
      return {
        name: svc.name,
        listen_address: addresses.get(svc.name) ?? svc.svc.listenAddress,
        sni: svc.sni,
        algorithm: svc.svc.algorithm,
        active: open.get(svc.name) ?? 0,
        total,
        rejected: metrics.rejectedCount(svc.name),
        usable: svc.usableCount(),
        backends: svc.backends.length,
      };
    });
  }

  status(): StatusAnswer {
    const { state: s, plane } = this.d;
    return {
      version: this.d.version,
      uptime_seconds: Math.floor((this.d.now() - this.d.startedAt) / 1000),
      strategy: defaultAlgorithm(s.config),
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
      services: this.services(),
      dns: this.d.dns(),
      // a WorkerPool's processes (a plane in this process has none)
      ...(this.d.workers > 1 ? { workers: plane.processes() ?? [] } : {}),
    };
  }

  /**
   * An operator's drain, enable or disable of one backend. Without `service` the name must be
   * in one service only (else 'ambiguous', for a 409 naming the services). The name of a backend
   * found by DNS (a parent) acts on all its endpoints, and on those that appear later; an
   * endpoint's own name (PARENT/IP:PORT) on that endpoint alone.
   */
  backendAction(service: string | undefined, name: string, action: AdminAction): ActionResult {
    const s = this.d.state;
    const snap = s.snapshot;
    if (service !== undefined && !snap.service(service)) return { kind: 'not_found', what: `service named "${service}"` };
    const inScope = (svc: string): boolean => service === undefined || svc === service;
    const parents = s.config.services.filter((svc) => inScope(svc.name) && svc.backends.some((b) => b.name === name && discovered(b))).map((svc) => svc.name);
    const hits = snap.backends.filter((x) => x.name === name && inScope(x.service));
    const found = [...parents, ...hits.map((b) => b.service)];
    if (found.length === 0) return { kind: 'not_found', what: service === undefined ? `backend named "${name}"` : `backend named "${name}" in service "${service}"` };
    if (found.length > 1) return { kind: 'ambiguous', services: found };
    const svc = found[0]!;
    const parent = parents.length > 0;
    const backends = parent ? snap.backends.filter((b) => b.parentRef === backendRef(svc, name)) : hits;
    const state = setBackendAdmin(this.d, { service: svc, name, backends, parent }, action, 'operator');
    return { kind: 'ok', service: svc, state };
  }

  /**
   * GET /traffic: each service's last 5 minutes, one point a second, and the most recent
   * connections that did not end cleanly, newest first.
   */
  traffic(): TrafficAnswer {
    return {
      ...this.d.chart.view(),
      terminations: this.d.metrics.traffic.recent
        .slice()
        .reverse()
        .map((r) => ({ ...r, at: new Date(r.at).toISOString() })),
    };
  }

  /**
   * Every certificate served: each terminating service's (read when its terminator was built, so
   * a renewed file shows once it serves), then the admin API's. Read by /certificates and the expiry metric.
   */
  servedCertificates(): ServedCertificate[] {
    const out: ServedCertificate[] = [];
    for (const svc of this.d.state.snapshot.services) for (const facts of svc.tls?.certificates ?? []) out.push({ service: svc.name, facts });
    const admin = this.d.adminCertificate?.() ?? null;
    if (admin !== null) out.push({ service: ADMIN_CERTIFICATE_SERVICE, facts: admin });
    return out;
  }

  /** GET /certificates */
  certificates(): CertificateRow[] {
    return this.servedCertificates().map(({ service, facts: c }) => ({ service, names: c.names, not_after: new Date(c.notAfterMs).toISOString(), sha256: c.sha256, file: c.file }));
  }

  /** The interface admin/server.ts reads the balancer through. */
  api(): AdminApi {
    const { state: s, plane, metrics } = this.d;
    return {
      health: (service) => this.health(service),
      ready: () => s.ready && !s.stopping && plane.listening,
      refresh: () => plane.refresh(),
      status: () => this.status(),
      backends: () => this.backends(),
      services: () => this.services(),
      events: () => this.d.events.list(),
      traffic: () => this.traffic(),
      certificates: () => this.certificates(),
      backendAction: (svc, n, a) => this.backendAction(svc, n, a),
      reload: (t) => this.d.reload(t),
      metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      token: () => s.config.admin.token,
      allowedHosts: () => s.config.admin.allowedHosts,
    };
  }
}

/** A service's own status: unhealthy with no usable backend, degraded with an enabled one down. */
function serviceStatus(svc: ServiceSnapshot, usable: number): HealthStatus {
  if (usable === 0) return 'unhealthy';
  return svc.backends.some((b) => b.load.admin === 'enabled' && b.load.state() === 'unhealthy') ? 'degraded' : 'healthy';
}

/**
 * `effective`: the weight the strategies use (scaled by an agent); `agent`: the service runs agent
 * checks; `hashShare`: the backend's share of its service's consistent_hash table (only for such services).
 */
function backendRow(service: string, spec: BackendConfig, load: BackendLoad, effective: number, agent: boolean, hashShare?: number): BackendRow {
  const lc = load.lastCheck;
  const al = load.agentLast;
  return {
    service,
    id: spec.id,
    name: spec.name,
    ...(parentOf(spec) !== undefined ? { parent: parentOf(spec) } : {}),
    address: spec.address,
    weight: spec.weight,
    effective_weight: Math.round(effective * 1000) / 1000,
    backup: spec.backup,
    max_connections: spec.maxConnections,
    state: load.state(),
    active: load.active,
    total: load.total,
    latency_ms: load.hasLatency ? Math.round(load.latencyMs() * 1000) / 1000 : null,
    connect_errors: load.connectErrors,
    last_check: lc ? { at: new Date(lc.at).toISOString(), ok: lc.ok, error: lc.error } : null,
    agent: agent
      ? {
          state: load.agentDown ? 'down' : 'up',
          admin: load.agentAdmin,
          weight_percent: load.agentWeightPercent,
          last: al ? { at: new Date(al.at).toISOString(), reply: al.reply, error: al.error } : null,
        }
      : null,
    ...(hashShare !== undefined ? { hash_share: Math.round(hashShare * 1e6) / 1e6 } : {}),
  };
}
