// The balancer's life: the start order (the backends' first DNS answers, systemd's sockets or our
// own binds, admin, health checks, reload trigger, summary, signals, then READY=1), the signals
// (SIGHUP reloads, SIGUSR1 reopens the access log, SIGTERM/SIGINT stop), and the graceful stop:
// no new connections, drain up to drain_timeout, background tasks up to background_timeout, the
// whole bounded by accept_timeout; a second signal exits with 130.

import type { Env } from '../config/load';
import type { HealthChecker } from '../health/checker';
import type { DnsDiscovery } from '../discovery/dns';
import { chooseRelay, logRelay } from './raw-self-test';
import { adminExposureWarnings } from '../config/admin-exposure';
import type { AdminListener, ReloadOutcome } from './control';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { SummaryLog } from '../obs/summary';
import { BindError } from '../errors';
import type { LiveState } from './live-state';
import type { DataPlane } from './plane';
import type { ReloadTrigger } from './reload';
import { passedAddress, passedSockets, type SystemdNotifier } from './systemd';
import type { ListenSpec } from './ipc';
import { backendTlsWarnings, defaultAlgorithm, type Config } from '../config/schema';
import { shownName } from '../core/backend';
import { WorkerPool } from './workers';

export interface LifecycleDeps {
  readonly state: LiveState;
  readonly env: Env;
  readonly logger: Logger;
  readonly plane: DataPlane;
  readonly admin: AdminListener;
  readonly checker: HealthChecker;
  readonly discovery: DnsDiscovery;
  /** null: no file to watch */
  readonly trigger: ReloadTrigger | null;
  readonly summary: SummaryLog;
  readonly systemd: SystemdNotifier;
  readonly events: EventRing;
  /** data-plane processes (1 = this process) */
  readonly workers: number;
  /** the config as loaded at start: its path, or "(environment)" */
  readonly configPath: string;
  /** install SIGTERM/SIGINT/SIGHUP handlers */
  readonly signals: boolean;
  /** SIGHUP: a reload through the trigger when there is one */
  readonly reload: (trigger: string) => Promise<ReloadOutcome>;
}

export class Lifecycle {
  private exitResolve: ((code: number) => void) | null = null;
  private readonly signalHandlers: [string, () => void][] = [];
  /** a stop or reload signalled while start() runs: acted on once it is done */
  private started = false;
  private pendingStop: string | null = null;
  private pendingReload = false;

  constructor(private readonly d: LifecycleDeps) {}

  /** Bind and start background tasks; exited() resolves with the exit code once stopped. */
  async start(): Promise<void> {
    // first: from the moment anything answers, a signal is a graceful stop, never the default kill
    if (this.d.signals) this.installSignals();
    try {
      await this.bind();
    } catch (e) {
      this.removeSignals();
      throw e;
    }
    this.started = true;
    if (this.pendingStop !== null) void this.shutdown(this.pendingStop);
    else if (this.pendingReload) void this.d.reload('SIGHUP');
  }

  private async bind(): Promise<void> {
    const { state: s, plane, admin } = this.d;
    const c = s.config;
    // backend names first: the balancer comes up with the endpoints the DNS gives (each query
    // is bounded by [dns] timeout; a name that does not answer keeps no endpoints until it does)
    this.d.discovery.sync(c);
    await this.d.discovery.settled(2 * c.dns.timeoutMs + 1000);
    const passed = passedSockets(this.d.env);
    const specs = listenSpecs(c, passed?.proxy ?? []);
    for (const spec of specs) if ('fd' in spec) s.passed.proxy.add(spec.address);
    s.passed.admin = passed !== null && passed.admin.length > 0;
    const relay = await chooseRelay(this.d.env);
    logRelay(this.d.logger, relay);
    await plane.listen(specs);
    try {
      if (passed && passed.admin.length > 0) await admin.adopt(passed.admin[0]!);
      else if (c.admin.listen) await admin.listen(c.admin.listen);
    } catch (e) {
      await plane.close();
      await plane.drain(0);
      throw e;
    }
    this.d.checker.sync(s.snapshot);
    await this.d.trigger?.start();
    this.d.summary.schedule();
    s.ready = true;
    const workers = this.d.workers;
    const only = c.services.length === 1 ? c.services[0]! : null;
    const what = only ? `${only.backends.length} backends, ${only.algorithm}` : `${c.services.length} services`;
    this.d.events.push('lifecycle', `listening on ${[...new Set(plane.addresses().values())].join(', ')} (${what}${workers > 1 ? `, ${workers} workers` : ''})`);
    this.d.logger.info(
      {
        listen: plane.address,
        services: Object.fromEntries([...plane.addresses()]),
        workers,
        relay: relay.relay,
        admin: admin.address || null,
        // the default service's algorithm; a file of [[services]] only has none (each is in `services`)
        ...(defaultAlgorithm(c) !== null ? { strategy: defaultAlgorithm(c) } : {}),
        backends: c.services.flatMap((svc) => svc.backends.map((b) => `${shownName(svc.name, b.name)}=${b.address}`)),
        config: this.d.configPath,
      },
      'lemonade-lb started',
    );
    for (const w of adminExposureWarnings(c)) this.d.logger.warn(w);
    for (const w of backendTlsWarnings(c)) this.d.logger.warn(w.message);
    this.d.systemd.ready(`listening on ${plane.address}`);
    this.d.systemd.startWatchdog();
  }

  /** Resolves with the process exit code after shutdown(). */
  exited(): Promise<number> {
    return new Promise((resolve) => (this.exitResolve = resolve));
  }

  private installSignals(): void {
    const on = (sig: NodeJS.Signals, f: () => void): void => {
      process.on(sig, f);
      this.signalHandlers.push([sig, f]);
    };
    on('SIGHUP', () => {
      this.d.logger.info('SIGHUP: reloading the configuration');
      if (this.started) void this.d.reload('SIGHUP');
      else this.pendingReload = true;
    });
    // logrotate's postrotate: the access log file is opened again by its name
    on('SIGUSR1', () => this.d.plane.reopenLog());
    const stop = (sig: string): void => {
      if (this.started) void this.shutdown(sig);
      else if (this.pendingStop === null) this.pendingStop = sig;
      // a second one while starting: exited() resolves now, as during a drain
      else this.finish(130);
    };
    on('SIGTERM', () => stop('SIGTERM'));
    on('SIGINT', () => stop('SIGINT'));
  }

  /** Graceful shutdown; a second call exits at once with 130. */
  async shutdown(reason: string): Promise<number> {
    const { state: s, plane, logger } = this.d;
    if (s.stopping) {
      logger.warn({ reason }, 'second signal: exiting now');
      if (plane instanceof WorkerPool) plane.kill();
      this.finish(130);
      return 130;
    }
    s.stopping = true;
    this.d.systemd.stopping();
    const rt = s.config.runtime;
    const hard = setTimeout(() => {
      logger.error({ acceptTimeoutMs: rt.acceptTimeoutMs }, 'shutdown took longer than accept_timeout_millis: exiting');
      if (plane instanceof WorkerPool) plane.kill();
      this.finish(1);
    }, rt.acceptTimeoutMs);
    hard.unref();
    await plane.refresh();
    const open = plane.open;
    logger.info({ reason, open, drainTimeoutMs: rt.drainTimeoutMs }, 'shutting down: no new connections, draining open ones');
    await plane.close();
    const result = await plane.drain(rt.drainTimeoutMs);
    this.d.discovery.stop();
    const bg = Promise.all([this.d.trigger?.stop(), Promise.resolve(this.d.checker.stop()), this.d.admin.close()]);
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
    this.d.summary.stop();
    this.d.systemd.stopWatchdog();
    logger.info({ drained: result.drained, cut: result.cut, backgroundTimedOut: timedOut }, `stopped: ${result.drained} connections drained, ${result.cut} cut`);
    clearTimeout(hard);
    this.finish(0);
    return 0;
  }

  private removeSignals(): void {
    for (const [sig, f] of this.signalHandlers) process.off(sig, f);
    this.signalHandlers.length = 0;
  }

  private finish(code: number): void {
    this.removeSignals();
    const r = this.exitResolve;
    this.exitResolve = null;
    if (r) r(code);
  }
}

/**
 * The listening sockets: one per listen address, serving every service that has it. A socket
 * systemd passed serves the address equal to the socket's bound address; with one socket and one
 * address it serves that address whatever it says (the shipped .socket unit's ListenStream=8080
 * binds [::]:8080). A passed socket that matches no service is a start error naming its address;
 * an address no socket matches is bound.
 */
export function listenSpecs(config: Config, fds: readonly number[]): ListenSpec[] {
  const services = config.services;
  const udp = new Set(services.filter((svc) => svc.proxy.protocol === 'udp').map((svc) => svc.listenAddress));
  const addresses = new Map(services.map((svc) => [svc.listenAddress, svc.listen] as const));
  if (fds.length === 1 && addresses.size === 1 && udp.size === 0) return [{ address: [...addresses.keys()][0]!, fd: fds[0]! }];
  const byFd = new Map<string, number>();
  for (const fd of fds) {
    const address = passedAddress(fd);
    if (address === null || !addresses.has(address)) {
      throw new BindError('proxy', address ?? `fd ${fd}`, `systemd passed this socket but no service has it as listen_address (services: ${services.map((x) => `${x.name}=${x.listenAddress}`).join(', ')})`);
    }
    byFd.set(address, fd);
  }
  return [...addresses].map(([address, addr]) => {
    const fd = byFd.get(address);
    if (udp.has(address)) return { address, addr, udp: true };
    return fd === undefined ? { address, addr } : { address, fd };
  });
}
