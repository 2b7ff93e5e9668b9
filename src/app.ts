// The composition root: builds every part, wires their callbacks, and hands the start and stop
// order to the lifecycle. Control plane: config, reload triggers, health checker, admin API,
// signals, systemd. Data plane: the listener and its sessions, which only read the current
// snapshot; reached through DataPlane (runtime/plane.ts): in this process, or in worker processes
// (runtime.workers). Where each part lives:
//   runtime/live-state.ts          the shared state: config, snapshot, generation, operator, draining
//   runtime/reload-transaction.ts  one reload, read to swap; runtime/reload.ts starts them
//   runtime/lifecycle.ts           start order, signals, graceful shutdown
//   discovery/dns.ts               the DNS answers backends' endpoints are made of
//   admin/views.ts                 what the admin API answers
//   obs/events.ts, obs/summary.ts  the /events list and the summary log line

import { tlsFiles, type Env, type Loaded } from './config/load';
import { LoadTable } from './core/stats';
import { shownName } from './core/backend';
import { STRATEGIES } from './strategy/index';
import { HealthChecker, type HealthEvent } from './health/checker';
import { DnsDiscovery } from './discovery/dns';
import { LocalPlane, trafficObserver, type DataPlane } from './runtime/plane';
import { WorkerPool, workerCount } from './runtime/workers';
import { AdminServer } from './admin/server';
import type { ReloadOutcome } from './runtime/control';
import { AdminViews } from './admin/views';
import { Metrics } from './obs/metrics';
import { AccessLog } from './obs/access-log';
import { processStdout } from './obs/stdout';
import { CHART_INTERVAL_MS, LiveChart } from './obs/live-chart';
import { EventRing } from './obs/events';
import { SummaryLog } from './obs/summary';
import type { Logger } from './obs/logger';
import { ReloadTrigger } from './runtime/reload';
import { TlsTerminators } from './runtime/tls-terminators';
import { TlsOriginators } from './runtime/tls-originators';
import { TicketKeys } from './runtime/ticket-keys';
import { ReloadTransaction } from './runtime/reload-transaction';
import { Lifecycle } from './runtime/lifecycle';
import { LiveState } from './runtime/live-state';
import { applyAgentAnswer } from './runtime/agent-effects';
import { SystemdNotifier } from './runtime/systemd';

export interface AppOptions {
  readonly loaded: Loaded;
  readonly logger: Logger;
  readonly version: string;
  /** the file to re-read on reload ("" = environment only, no file watching) */
  readonly configPath: string;
  readonly env?: Env;
  readonly now?: () => number;
  readonly random?: () => number;
  /** install SIGTERM/SIGINT/SIGHUP handlers (off in embedded use) */
  readonly signals?: boolean;
}

export class App {
  private readonly logger: Logger;
  private readonly loads: LoadTable;
  private readonly metrics: Metrics;
  private readonly events: EventRing;
  private readonly plane: DataPlane;
  private readonly views: AdminViews;
  private readonly admin: AdminServer;
  private readonly trigger: ReloadTrigger | null;
  private readonly transaction: ReloadTransaction;
  private readonly lifecycle: Lifecycle;
  private readonly state: LiveState;
  private readonly discovery: DnsDiscovery;
  private readonly chart = new LiveChart();
  private readonly sampleChart: () => Promise<void>;

  constructor(opts: AppOptions) {
    const env = opts.env ?? process.env;
    const logger = (this.logger = opts.logger);
    const now = opts.now ?? Date.now;
    const random = opts.random ?? Math.random;
    const startedAt = now();
    const loads = (this.loads = new LoadTable(now));
    const tls = new TlsTerminators((service, problem) => logger.warn({ service }, `tls: ${problem}`));
    const backendTls = new TlsOriginators((service, problem) => logger.warn({ service }, `backend_tls: ${problem}`));
    // one session ticket key for every context of every process, set before the first snapshot builds them
    const tickets = new TicketKeys(opts.loaded.ticketKey, {
      apply: (key) => {
        tls.setTicketKey(key);
        this.plane.setTicketKey(key);
      },
    });
    tls.setTicketKey(tickets.current);
    const s = (this.state = new LiveState(opts.loaded, loads, { now, random, strategies: STRATEGIES, tls: tls.build, backendTls: backendTls.build }));
    const metrics = (this.metrics = new Metrics({
      loads,
      snapshot: () => s.snapshot,
      draining: () => s.drainingBackends().map(({ service, spec, load }) => ({ service, name: spec.name, load })),
      serviceOpen: () => this.plane.openByService(),
      queued: () => this.plane.queuedByService?.() ?? new Map<string, number>(),
      version: opts.version,
      workers: () => this.plane.workerFigures(),
      stdoutDropped: () => processStdout().logDropped,
      adminDropped: () => this.admin.dropped,
      certificates: () => this.views.servedCertificates(),
    }));
    metrics.generation.set(1);
    const events = (this.events = new EventRing(now, () => s.config.runtime.healthCap));
    const workers = workerCount(s.config.runtime.workers);
    const plane = (this.plane =
      workers > 1
        ? new WorkerPool({
            count: workers,
            logger,
            loads,
            traffic: metrics.traffic,
            state: () => ({
              config: s.snapshot.config, // with the endpoints found by DNS
              generation: s.generation,
              operator: [...s.operator],
              health: s.snapshot.backends.map((b) => [b.load.key, b.load.health()]),
              ticketKey: tickets.current,
            }),
            event: (kind, message) => events.push(kind, message),
          })
        : localPlane(s, now, logger, metrics, events));
    const configPath = opts.loaded.path;
    const reload = (t: string): Promise<ReloadOutcome> => this.requestReload(t);
    this.views = new AdminViews({ state: s, plane, metrics, events, logger, now, startedAt, version: opts.version, configPath, workers, reload, dns: () => this.discovery.status(), chart: this.chart, adminCertificate: () => this.admin.certificate(s.config.admin.tlsCert) });
    this.sampleChart = () => plane.refresh().then(() => this.chart.sample(now(), metrics.traffic, s.snapshot.services.map((x) => x.name)));
    const admin = (this.admin = new AdminServer(this.views.api(), { now, warn: (message, fields) => logger.warn(fields, message), tls: opts.loaded.adminTls }));
    const checker = new HealthChecker({
      current: () => s.snapshot,
      now,
      random,
      onResult: (e) => this.onHealth(e),
      onAgent: (e) => applyAgentAnswer({ state: s, plane, logger, events, metrics }, e),
    });
    // what follows every new snapshot, whoever published it (a reload, a DNS answer, an agent's weight)
    s.follow({
      published: (snap, gone) => {
        plane.applied(snap, gone, s.config.runtime.drainTimeoutMs);
        checker.sync(snap);
        metrics.generation.set(snap.generation);
      },
      forgot: (refs) => metrics.forgetBackends(refs),
    });
    const discovery = (this.discovery = new DnsDiscovery({
      now,
      logger,
      metrics,
      event: (m) => events.push('dns', m),
      onChange: () => this.onAnswers(),
      // an answer never makes the balancer its own backend (a loop, or the admin API reached from outside)
      bound: () => [this.admin.address, ...this.plane.addresses().values()],
    }));
    this.trigger =
      opts.configPath === ''
        ? null
        : new ReloadTrigger({
            path: opts.configPath,
            pollMs: () => s.config.runtime.configWatchIntervalMs,
            reload: (t) => this.reload(t),
            lastHash: () => s.attemptedHash,
            files: () => tlsFiles(s.config),
            onWatchError: (e) => logger.warn({ err: e.message }, 'config watcher error'),
          });
    const systemd = new SystemdNotifier(env);
    const summary = new SummaryLog({
      now,
      logger,
      traffic: plane,
      rejected: () => metrics.rejectedCount(),
      snapshot: () => s.snapshot,
      intervalMs: () => s.config.metrics.intervalMs,
    });
    const common = { state: s, logger, plane, admin, checker, discovery, events, summary, systemd, workers };
    this.transaction = new ReloadTransaction({ ...common, path: opts.configPath, env, now, metrics, tickets });
    this.lifecycle = new Lifecycle({ ...common, env, trigger: this.trigger, configPath, signals: opts.signals !== false, reload });
  }

  get proxyAddress(): string {
    return this.plane.address;
  }

  get adminAddress(): string {
    return this.admin.address;
  }

  /** Bind, start background tasks; exited() resolves with the exit code once the process should end. */
  async start(): Promise<void> {
    await this.lifecycle.start();
    // the listeners are bound now: answers are checked against their addresses (a port 0 included)
    this.discovery.recheck();
    // the status page's chart: one point a second (an unref'd timer: it never holds the process)
    setInterval(() => void this.sampleChart(), CHART_INTERVAL_MS).unref();
  }

  /** Resolves with the process exit code after shutdown(). */
  exited(): Promise<number> {
    return this.lifecycle.exited();
  }

  /** Graceful shutdown; a second call exits at once with 130. */
  shutdown(reason: string): Promise<number> {
    return this.lifecycle.shutdown(reason);
  }

  /** Apply the config file now (the trigger calls this; it never rejects). */
  reload(trigger: string): Promise<ReloadOutcome> {
    return this.transaction.run(trigger);
  }

  statusView(): Record<string, unknown> {
    return this.views.status();
  }

  /** SIGHUP and POST /reload go through the trigger, so they coalesce with the watcher's reloads. */
  private requestReload(trigger: string): Promise<ReloadOutcome> {
    return this.trigger ? (this.trigger.request(trigger) as Promise<ReloadOutcome>) : this.reload(trigger);
  }

  /**
   * A DNS answer changed: a snapshot of the same config with the new endpoints, published as a
   * reload's is (the generation stays: the file did not change); vanished endpoints drain.
   */
  private onAnswers(): void {
    if (this.state.stopping) return;
    this.state.answered(this.discovery.answers());
  }

  private onHealth(e: HealthEvent): void {
    this.metrics.healthChecks.inc({ service: e.service, backend: e.backend, result: e.ok ? 'success' : 'failure' });
    const load = this.loads.peek(e.key);
    if (load) this.plane.checked(e.key, load.healthy, load.healthySince, e.ok);
    const shown = shownName(e.service, e.backend);
    if (e.transition === 'down') {
      this.logger.warn({ service: e.service, backend: e.backend, address: e.address, error: e.error }, 'backend is down');
      this.events.push('health', `${shown} is down: ${e.error}`);
    } else if (e.transition === 'up') {
      this.logger.info({ service: e.service, backend: e.backend, address: e.address }, 'backend is up');
      this.events.push('health', `${shown} is up`);
    } else if (this.logger.isLevelEnabled('debug')) {
      this.logger.debug({ service: e.service, backend: e.backend, ok: e.ok, error: e.error }, 'health check');
    }
  }
}

/** The data plane in this process, with its access log. */
function localPlane(s: LiveState, now: () => number, logger: Logger, metrics: Metrics, events: EventRing): LocalPlane {
  const accessLog = new AccessLog({
    now,
    warn: (what, error) => logger.warn({ error }, what),
    dropped: (n) => (metrics.traffic.logDropped += n),
    stdout: processStdout(),
  });
  accessLog.configure(s.config.access_log);
  return new LocalPlane({
    current: () => s.snapshot,
    now,
    logger,
    accessLog,
    observer: trafficObserver({
      logger,
      traffic: metrics.traffic,
      now,
      accessLog,
      unhealthyThreshold: (service) => s.snapshot.service(service)?.health.unhealthyThreshold ?? 0,
      event: (kind, message) => events.push(kind, message),
    }),
  });
}
