// The composition root: builds every part, owns the start and stop order, and applies reloads.
// Control plane: config, reload triggers, health checker, admin API, signals, systemd.
// Data plane: the listener and its sessions, which only read the current snapshot; reached
// through DataPlane (runtime/plane.ts): in this process, or in worker processes (runtime.workers).

import type { Config } from './config/schema';
import { loadFromText, readConfigText, sha256, type Env, type Loaded } from './config/load';
import { diff, summarize } from './config/diff';
import { liveSnapshot, retire, type Snapshot } from './core/snapshot';
import { LoadTable, type BackendLoad } from './core/stats';
import type { AdminState } from './core/backend';
import { STRATEGIES } from './strategy/index';
import { HealthChecker, type HealthEvent } from './health/checker';
import type { Pending } from './proxy/listener';
import { LocalPlane, trafficObserver, type DataPlane } from './runtime/plane';
import { WorkerPool } from './runtime/workers';
import { rawAvailable } from './proxy/raw';
import { adminExposureWarnings } from './admin/exposure';
import { AdminServer, type AdminAction, type AdminApi, type HealthReport, type ReloadOutcome } from './admin/server';
import { Metrics } from './obs/metrics';
import { EventRing } from './obs/events';
import { SummaryLog } from './obs/summary';
import type { Logger } from './obs/logger';
import { ReloadTrigger } from './runtime/reload';
import { SystemdNotifier, passedAddress, passedSockets } from './runtime/systemd';
import { BindError, ConfigInvalidError, LemonadeError, ShuttingDownError } from './errors';
import type { BackendConfig } from './config/schema';
import { availableParallelism } from 'node:os';

/** `[runtime] workers`: 0 = one per CPU. */
export function workerCount(configured: number): number {
  return configured === 0 ? availableParallelism() : configured;
}

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

interface LastReload {
  at: string;
  result: 'success' | 'failure';
  error: string | null;
}

export class App {
  private config: Config;
  private snapshot: Snapshot;
  private generation = 1;
  private hash: string;
  /** hash of the content last applied or attempted (the watcher compares against it) */
  private attemptedHash: string;
  private readonly path: string;
  private readonly env: Env;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly loads: LoadTable;
  private readonly metrics: Metrics;
  private readonly plane: DataPlane;
  /** data-plane processes (1 = this process is the data plane too) */
  private readonly workers: number;
  private readonly admin: AdminServer;
  private readonly checker: HealthChecker;
  private readonly trigger: ReloadTrigger | null;
  private readonly systemd: SystemdNotifier;
  private readonly operatorState = new Map<string, AdminState>();
  /** specs of backends removed by a reload whose connections still drain, by load key */
  private readonly draining = new Map<string, BackendConfig>();
  private readonly events: EventRing;
  private readonly summary: SummaryLog;
  private lastReload: LastReload | null = null;
  private readonly startedAt: number;
  private ready = false;
  private stopping = false;
  private exitResolve: ((code: number) => void) | null = null;
  private readonly signalHandlers: [string, () => void][] = [];
  /** listeners served from sockets systemd passed: their addresses belong to the .socket unit */
  private readonly passed = { proxy: false, admin: false };

  constructor(private readonly opts: AppOptions) {
    this.config = opts.loaded.config;
    this.hash = opts.loaded.shownHash;
    this.attemptedHash = opts.loaded.hash;
    this.path = opts.configPath;
    this.env = opts.env ?? process.env;
    this.logger = opts.logger;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.startedAt = this.now();
    this.loads = new LoadTable(this.now);
    this.snapshot = this.buildSnapshot(this.config, 1);
    this.metrics = new Metrics({
      loads: this.loads,
      snapshot: () => this.snapshot,
      draining: () => this.drainingBackends().map(({ spec, load }) => ({ name: spec.name, load })),
      version: opts.version,
      workers: () => this.plane.workerFigures(),
    });
    this.metrics.generation.set(1);
    this.events = new EventRing(this.now, () => this.config.runtime.healthCap);
    this.workers = workerCount(this.config.runtime.workers);
    this.plane =
      this.workers > 1
        ? new WorkerPool({
            count: this.workers,
            logger: this.logger,
            loads: this.loads,
            traffic: this.metrics.traffic,
            state: () => ({
              config: this.config,
              generation: this.generation,
              operator: [...this.operatorState],
              health: this.snapshot.backends.map((b) => [b.load.key, { healthy: b.load.healthy, healthySince: b.load.healthySince }]),
            }),
            event: (kind, message) => this.events.push(kind, message),
          })
        : new LocalPlane({
            current: () => this.snapshot,
            now: this.now,
            logger: this.logger,
            observer: trafficObserver({
              logger: this.logger,
              traffic: this.metrics.traffic,
              now: this.now,
              unhealthyThreshold: () => this.config.health.unhealthyThreshold,
              event: (kind, message) => this.events.push(kind, message),
            }),
          });
    this.admin = new AdminServer(this.adminApi());
    this.checker = new HealthChecker({
      current: () => this.snapshot,
      now: this.now,
      random: this.random,
      onResult: (e) => this.onHealth(e),
    });
    this.trigger =
      this.path === ''
        ? null
        : new ReloadTrigger({
            path: this.path,
            pollMs: () => this.config.runtime.configWatchIntervalMs,
            reload: (t) => this.reload(t),
            lastHash: () => this.attemptedHash,
            onWatchError: (e) => this.logger.warn({ err: e.message }, 'config watcher error'),
          });
    this.systemd = new SystemdNotifier(this.env);
    this.summary = new SummaryLog({
      now: this.now,
      logger: this.logger,
      traffic: this.plane,
      rejected: () => this.metrics.rejectedCount(),
      snapshot: () => this.snapshot,
      intervalMs: () => this.config.metrics.intervalMs,
    });
  }

  get proxyAddress(): string {
    return this.plane.address;
  }

  get adminAddress(): string {
    return this.admin.address;
  }

  /** Bind, start background tasks, and resolve with the exit code once the process should end. */
  async start(): Promise<void> {
    const c = this.config;
    const passed = passedSockets(this.env);
    if (passed && passed.proxy.length > 1) {
      // one [proxy] listen_address serves one socket: an extra one would be silently ignored
      const addresses = await Promise.all(passed.proxy.map(passedAddress));
      throw new BindError('proxy', addresses.join(', '), `systemd passed ${addresses.length} proxy sockets and one [proxy] listen_address serves one: keep one ListenStream= (besides the one named "admin") in the .socket unit`);
    }
    this.passed.proxy = passed !== null && passed.proxy.length === 1;
    this.passed.admin = passed !== null && passed.admin.length > 0;
    if (passed && passed.proxy.length > 0) {
      await this.plane.adopt(passed.proxy[0]!);
    } else {
      await this.plane.listen(c.proxy.listen);
    }
    try {
      if (passed && passed.admin.length > 0) await this.admin.adopt(passed.admin[0]!);
      else if (c.admin.listen) await this.admin.listen(c.admin.listen);
    } catch (e) {
      await this.plane.close();
      await this.plane.drain(0);
      throw e;
    }
    this.checker.sync(this.snapshot);
    await this.trigger?.start();
    this.summary.schedule();
    if (this.opts.signals !== false) this.installSignals();
    this.ready = true;
    this.events.push('lifecycle', `listening on ${this.plane.address} (${c.backends.length} backends, ${c.strategy}${this.workers > 1 ? `, ${this.workers} workers` : ''})`);
    this.logger.info(
      {
        listen: this.plane.address,
        workers: this.workers,
        relay: rawAvailable() ? 'raw' : 'net.Socket',
        admin: this.admin.address || null,
        strategy: c.strategy,
        backends: c.backends.map((b) => `${b.name}=${b.address}`),
        config: this.opts.loaded.path,
      },
      'lemonade-lb started',
    );
    for (const w of adminExposureWarnings(c)) this.logger.warn(w);
    this.systemd.ready(`listening on ${this.plane.address}`);
    this.systemd.startWatchdog();
  }

  /** Resolves with the process exit code after shutdown(). */
  exited(): Promise<number> {
    return new Promise((resolve) => (this.exitResolve = resolve));
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots and reload

  private buildSnapshot(config: Config, generation: number, prev?: Snapshot): Snapshot {
    return liveSnapshot(config, generation, this.loads, { now: this.now, random: this.random, strategies: STRATEGIES }, this.operatorState, prev);
  }

  async reload(trigger: string): Promise<ReloadOutcome> {
    if (this.stopping) return { result: 'failure', generation: this.generation, error: new ShuttingDownError().message };
    this.systemd.reloading();
    try {
      return await this.reloadNow(trigger);
    } finally {
      this.systemd.ready(`generation ${this.generation}`);
    }
  }

  private async reloadNow(trigger: string): Promise<ReloadOutcome> {
    let loaded: Loaded;
    try {
      // the file served from must still exist (the environment alone does not replace it)
      const text = readConfigText({ path: this.path, explicit: true }, this.env);
      // remember what was attempted, so the watcher does not retry the same bytes
      if (text !== null) this.attemptedHash = sha256(text);
      loaded = loadFromText(this.path, text, this.env);
    } catch (e) {
      return this.reloadFailed(trigger, e);
    }
    const next = loaded.config;
    const changes = diff(this.config, next);
    const adminRemoved = next.admin.listenAddress === '' && this.config.admin.listenAddress !== '';
    const pending: Pending[] = [];
    try {
      this.checkSocketOwner(next);
      if (next.proxy.listenAddress !== this.config.proxy.listenAddress) pending.push(await this.plane.prepare(next.proxy.listen));
      if (next.admin.listenAddress !== this.config.admin.listenAddress && next.admin.listen) {
        pending.push(await this.admin.prepare(next.admin.listen));
      }
    } catch (e) {
      for (const p of pending) p.abort();
      return this.reloadFailed(trigger, e);
    }
    if (this.stopping) {
      // a stop began while the new addresses were bound: installing them would reopen a listener
      // during the drain
      for (const p of pending) p.abort();
      return this.reloadFailed(trigger, new ShuttingDownError());
    }
    // ---- commit: from here on nothing can fail, and the swap is one assignment
    const generation = this.generation + 1;
    const oldSnap = this.snapshot;
    const snap = this.buildSnapshot(next, generation, oldSnap);
    this.snapshot = snap;
    this.config = next;
    this.generation = generation;
    this.hash = loaded.shownHash;
    this.attemptedHash = loaded.hash;
    for (const p of pending) p.commit();
    if (adminRemoved) void this.admin.close();
    this.retireRemoved(oldSnap, snap);
    this.checker.sync(snap);
    this.metrics.generation.set(generation);
    this.metrics.reloads.inc({ result: 'success' });
    this.lastReload = { at: new Date(this.now()).toISOString(), result: 'success', error: null };
    let summary = summarize(changes);
    if (workerCount(next.runtime.workers) !== this.workers) {
      // the number of processes is set at start, as HAProxy's nbthread
      summary += `; runtime.workers stays ${this.workers} until a restart`;
      this.logger.warn({ running: this.workers, configured: next.runtime.workers }, 'runtime.workers changes only with a restart');
    }
    this.events.push('reload', `generation ${generation} (${trigger}): ${summary}`);
    this.logger.info({ generation, trigger, changes: summary, hash: loaded.shownHash.slice(0, 12) }, `config reloaded: ${summary}`);
    this.summary.schedule();
    return { result: 'success', generation, changes: summary };
  }

  /** A listener served from a socket systemd passed keeps it: its address is the .socket unit's. */
  private checkSocketOwner(next: Config): void {
    const moved: [string, boolean, string, string][] = [
      ['proxy', this.passed.proxy, next.proxy.listenAddress, this.config.proxy.listenAddress],
      ['admin', this.passed.admin, next.admin.listenAddress, this.config.admin.listenAddress],
    ];
    for (const [what, passed, to, from] of moved) {
      if (passed && to !== from) {
        const serving = what === 'proxy' ? this.plane.address : this.admin.address;
        throw new BindError(
          what,
          to || '""',
          `the ${what} listener serves the socket systemd passed (${serving}): the .socket unit owns that address, so change ListenStream= there and restart; the socket is kept`,
        );
      }
    }
  }

  private reloadFailed(trigger: string, e: unknown): ReloadOutcome {
    const err = e instanceof LemonadeError ? e.message : `unexpected error: ${String((e as Error)?.stack ?? e)}`;
    this.metrics.reloads.inc({ result: 'failure' });
    this.lastReload = { at: new Date(this.now()).toISOString(), result: 'failure', error: err };
    this.events.push('reload', `reload failed (${trigger}); still serving generation ${this.generation}: ${err.split('\n')[0]}`);
    this.logger.error({ trigger, generation: this.generation, error: err }, 'config reload failed; the running configuration is unchanged');
    const errors = e instanceof ConfigInvalidError ? e.issues.map((i) => ({ ...i })) : undefined;
    return errors ? { result: 'failure', generation: this.generation, error: err, errors } : { result: 'failure', generation: this.generation, error: err };
  }

  /** Backends gone from the new snapshot drain: no new connections, cut after drain_timeout. */
  private retireRemoved(oldSnap: Snapshot, snap: Snapshot): void {
    const { live, draining } = retire(oldSnap, snap);
    for (const [k, spec] of draining) this.draining.set(k, spec);
    for (const k of this.draining.keys()) {
      if (live.has(k)) this.draining.delete(k);
    }
    this.loads.sweep(new Set([...live, ...this.draining.keys()]));
    this.plane.applied(snap, new Set(draining.keys()), this.config.runtime.drainTimeoutMs);
  }

  // -------------------------------------------------------------------------------------------
  // Health

  private onHealth(e: HealthEvent): void {
    this.metrics.healthChecks.inc({ backend: e.backend, result: e.ok ? 'success' : 'failure' });
    const load = this.loads.peek(e.key);
    if (load) this.plane.checked(e.key, load.healthy, load.healthySince, e.ok);
    if (e.transition === 'down') {
      this.logger.warn({ backend: e.backend, address: e.address, error: e.error }, 'backend is down');
      this.events.push('health', `${e.backend} is down: ${e.error}`);
    } else if (e.transition === 'up') {
      this.logger.info({ backend: e.backend, address: e.address }, 'backend is up');
      this.events.push('health', `${e.backend} is up`);
    } else if (this.logger.isLevelEnabled('debug')) {
      this.logger.debug({ backend: e.backend, ok: e.ok, error: e.error }, 'health check');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Admin API

  healthReport(): HealthReport {
    const snap = this.snapshot;
    const total = snap.backends.length;
    if (this.stopping || !this.plane.listening) return { status: 'unhealthy', usable: 0, total };
    const usable = snap.usableCount();
    if (usable === 0) return { status: 'unhealthy', usable, total };
    const considered = snap.backends.filter((b) => b.load.admin === 'enabled');
    const down = considered.some((b) => b.load.state() === 'unhealthy');
    return { status: down ? 'degraded' : 'healthy', usable, total };
  }

  backendsView(): Record<string, unknown>[] {
    const rows = this.snapshot.backends.map((b) => this.backendRow(b.spec, b.load));
    for (const { spec, load } of this.drainingBackends()) rows.push(this.backendRow(spec, load));
    return rows;
  }

  /** Backends removed by a reload with connections still open; forgotten after their last one. */
  private drainingBackends(): { spec: BackendConfig; load: BackendLoad }[] {
    const out: { spec: BackendConfig; load: BackendLoad }[] = [];
    for (const [key, spec] of this.draining) {
      const load = this.loads.peek(key);
      if (load && load.active > 0) out.push({ spec, load });
      else this.draining.delete(key);
    }
    return out;
  }

  private backendRow(spec: BackendConfig, load: BackendLoad): Record<string, unknown> {
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

  statusView(): Record<string, unknown> {
    return {
      version: this.opts.version,
      uptime_seconds: Math.floor((this.now() - this.startedAt) / 1000),
      strategy: this.config.strategy,
      listen_address: this.plane.address,
      ready: this.ready && !this.stopping,
      admin_token_set: this.config.admin.token !== '',
      config: {
        path: this.opts.loaded.path,
        generation: this.generation,
        hash: this.hash,
        last_reload: this.lastReload,
      },
      connections: {
        active: this.plane.open,
        total: this.plane.accepted,
        rejected: this.metrics.rejectedCount(),
      },
      backends: this.backendsView(),
      ...(this.workers > 1 ? { workers: this.plane.processes() } : {}),
    };
  }

  backendAction(name: string, action: AdminAction): 'ok' | 'not_found' {
    const b = this.snapshot.backends.find((x) => x.name === name);
    if (!b) return 'not_found';
    const state: AdminState = action === 'enable' ? 'enabled' : action === 'drain' ? 'draining' : 'disabled';
    if (state === 'enabled') this.operatorState.delete(name);
    else this.operatorState.set(name, state);
    b.load.admin = state;
    this.logger.info({ backend: name, action }, `backend ${name}: ${action}`);
    this.events.push('admin', `${name}: ${action}`);
    // disable cuts the backend's connections at once; drain lets them finish
    this.plane.adminChanged(name, b.load.key, state, action === 'disable');
    return 'ok';
  }

  private adminApi(): AdminApi {
    return {
      health: () => this.healthReport(),
      ready: () => this.ready && !this.stopping && this.plane.listening,
      refresh: () => this.plane.refresh(),
      status: () => this.statusView(),
      backends: () => this.backendsView(),
      events: () => this.events.list(),
      backendAction: (n, a) => this.backendAction(n, a),
      reload: (t) => (this.trigger ? (this.trigger.request(t) as Promise<ReloadOutcome>) : this.reload(t)),
      metrics: async () => ({ contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() }),
      token: () => this.config.admin.token,
      allowedHosts: () => this.config.admin.allowedHosts,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Signals and shutdown

  private installSignals(): void {
    const on = (sig: NodeJS.Signals, f: () => void): void => {
      process.on(sig, f);
      this.signalHandlers.push([sig, f]);
    };
    on('SIGHUP', () => {
      this.logger.info('SIGHUP: reloading the configuration');
      if (this.trigger) void this.trigger.request('SIGHUP');
      else void this.reload('SIGHUP');
    });
    on('SIGTERM', () => void this.shutdown('SIGTERM'));
    on('SIGINT', () => void this.shutdown('SIGINT'));
  }

  /** Graceful shutdown; a second call exits at once with 130. */
  async shutdown(reason: string): Promise<number> {
    if (this.stopping) {
      this.logger.warn({ reason }, 'second signal: exiting now');
      if (this.plane instanceof WorkerPool) this.plane.kill();
      this.finish(130);
      return 130;
    }
    this.stopping = true;
    this.systemd.stopping();
    const rt = this.config.runtime;
    const hard = setTimeout(() => {
      this.logger.error({ acceptTimeoutMs: rt.acceptTimeoutMs }, 'shutdown took longer than accept_timeout_millis: exiting');
      if (this.plane instanceof WorkerPool) this.plane.kill();
      this.finish(1);
    }, rt.acceptTimeoutMs);
    hard.unref();
    await this.plane.refresh();
    const open = this.plane.open;
    this.logger.info({ reason, open, drainTimeoutMs: rt.drainTimeoutMs }, 'shutting down: no new connections, draining open ones');
    await this.plane.close();
    const result = await this.plane.drain(rt.drainTimeoutMs);
    const bg = Promise.all([this.trigger?.stop(), Promise.resolve(this.checker.stop()), this.admin.close()]);
    let timedOut = false;
    await Promise.race([
      bg,
      new Promise<void>((r) => {
        const t = setTimeout(() => {
          timedOut = true;
          r();
        }, rt.backgroundTimeoutMs);
        t.unref();
      }),
    ]);
    this.summary.stop();
    this.systemd.stopWatchdog();
    this.logger.info({ drained: result.drained, cut: result.cut, backgroundTimedOut: timedOut }, `stopped: ${result.drained} connections drained, ${result.cut} cut`);
    clearTimeout(hard);
    this.finish(0);
    return 0;
  }

  private finish(code: number): void {
    for (const [sig, f] of this.signalHandlers) process.off(sig, f);
    this.signalHandlers.length = 0;
    const r = this.exitResolve;
    this.exitResolve = null;
    if (r) r(code);
  }
}
