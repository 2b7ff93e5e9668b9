// A data-plane worker process (`[runtime] workers` > 1): the listener and its sessions over the
// socket the cluster primary shares, with its own load figures, fed by the primary with
// validated configs, operator states, health results and agent answers. It never reads the config file, never
// runs health checks and never handles signals: the primary decides, the worker applies.

import process from 'node:process';
import type { Config } from '../config/schema';
import type { AdminState } from '../core/backend';
import { liveSnapshot, retire, type Partition, type Snapshot } from '../core/snapshot';
import { LoadTable } from '../core/stats';
import { STRATEGIES } from '../strategy/index';
import { createLogger, exitOnUncaught, exitWhenFlushed } from '../obs/logger';
import { TlsTerminators } from './tls-terminators';
import { TlsOriginators } from './tls-originators';
import { processStdout } from '../obs/stdout';
import { TrafficFigures } from '../obs/metrics';
import { AccessLog } from '../obs/access-log';
import { BindError } from '../errors';
import { LocalPlane, trafficObserver, type Pending } from './plane';
import { chooseRelay, logRelay } from './raw-self-test';
import { udpBinder, type FromWorker, type ListenSpec, type ToWorker, type WorkerReport } from './ipc';
import { reusePort } from '../proxy/listener';
import { allUdpFigures } from '../proxy/udp-flows';

function send(m: FromWorker, then?: () => void): void {
  if (process.connected) process.send!(m, undefined, undefined, then);
  else then?.();
}

/** Runs until the primary says drain (or goes away). */
export function runDataPlaneWorker(): void {
  // the primary owns the signals: Ctrl-C reaches the whole process group, and systemd may signal
  // every process of the unit; the primary then drains the workers in order
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1'] as const) process.on(sig, () => undefined);
  process.once('message', (m: ToWorker) => {
    if (m.t !== 'init') throw new Error(`data-plane worker: expected init, got ${m.t}`);
    new Worker(m).start();
  });
}

class Worker {
  private snapshot: Snapshot;
  private readonly loads = new LoadTable(Date.now);
  private readonly traffic = new TrafficFigures();
  private readonly operator: Map<string, AdminState>;
  private readonly plane: LocalPlane;
  private readonly part: Partition;
  private readonly pending = new Map<number, Pending>();
  private readonly logger;
  private readonly tls: TlsTerminators;
  private readonly backendTls: TlsOriginators;

  constructor(private readonly init: Extract<ToWorker, { t: 'init' }>) {
    this.part = { index: init.index, count: init.count };
    this.logger = createLogger().child({ worker: init.index });
    this.tls = new TlsTerminators((service, problem) => this.logger.warn({ service }, `tls: ${problem}`));
    this.backendTls = new TlsOriginators((service, problem) => this.logger.warn({ service }, `backend_tls: ${problem}`));
    // the primary's key, before the first snapshot builds its contexts: every worker issues and reads the same tickets
    this.tls.setTicketKey(Buffer.from(init.ticketKey));
    exitOnUncaught(this.logger);
    this.operator = new Map(init.operator);
    for (const [key, h] of init.health) this.loads.get(key).restoreHealth(h);
    this.snapshot = this.build(init.config, init.generation);
    // this worker's own connections, appended to the same file as the others (access-log.ts)
    const accessLog = new AccessLog({
      now: Date.now,
      warn: (what, error) => this.logger.warn({ error }, what),
      dropped: (n) => (this.traffic.logDropped += n),
      stdout: processStdout(),
    });
    accessLog.configure(init.config.access_log);
    // SIGUSR1 sent to every process of the unit reopens here too (the primary forwards it as well)
    process.on('SIGUSR1', () => accessLog.reopen());
    this.plane = new LocalPlane({
      current: () => this.snapshot,
      now: Date.now,
      logger: this.logger,
      shared: true,
      accessLog,
      observer: trafficObserver({
        accessLog,
        logger: this.logger,
        traffic: this.traffic,
        now: Date.now,
        unhealthyThreshold: (service) => this.snapshot.service(service)?.health.unhealthyThreshold ?? 0,
        event: (kind, message) => send({ t: 'event', kind, message }),
      }),
    });
  }

  start(): void {
    process.on('message', (m: ToWorker) => this.onMessage(m));
    chooseRelay(process.env)
      .then((relay) => {
        logRelay(this.logger, relay);
        return this.plane.listen(this.init.listen.filter((spec) => this.binds(spec)));
      })
      .then(
        () => send({ t: 'listening', addresses: [...this.plane.listener.boundAddresses()] }),
        (e: unknown) => {
          const [address, reason] = e instanceof BindError ? [e.address, e.reason] : [this.init.listen.map(label).join(', '), String(e)];
          send({ t: 'listen-failed', address, reason }, () => exitWhenFlushed(1));
        },
      );
  }

  /** A UDP service's socket is this worker's too (else another worker serves it: ipc.ts udpBinder). */
  private binds(spec: ListenSpec): boolean {
    return !('addr' in spec) || spec.udp !== true || udpBinder(this.init.index, reusePort());
  }

  private build(config: Config, generation: number, prev?: Snapshot): Snapshot {
    return liveSnapshot(config, generation, this.loads, { now: Date.now, random: Math.random, strategies: STRATEGIES, part: this.part, tls: this.tls.build, backendTls: this.backendTls.build }, this.operator, prev);
  }

  /**
   * This process's one writer of its current snapshot: built from the config the primary
   * published, with this process's figures, made current in one assignment; the backends it
   * dropped drain here.
   */
  private publish(config: Config, generation: number): void {
    const old = this.snapshot;
    const snap = this.build(config, generation, old);
    this.snapshot = snap;
    const { live, draining } = retire(old, snap);
    // a backend gone with no connection left: its counters and connect-time series go too
    for (const ref of this.loads.sweep(live)) this.traffic.connect.delete(ref);
    this.plane.applied(snap, new Set(draining.keys()), config.runtime.drainTimeoutMs);
  }

  private onMessage(m: ToWorker): void {
    switch (m.t) {
      case 'snapshot': {
        this.operator.clear();
        for (const [n, s] of m.operator) this.operator.set(n, s);
        this.publish(m.config, m.generation);
        // the reload waits for it (the 'close-address' before it is done too: the messages come in order)
        send({ t: 'applied', generation: m.generation });
        return;
      }
      case 'admin': {
        if (m.state === 'enabled') this.operator.delete(m.name);
        else this.operator.set(m.name, m.state);
        // m.name is the backend's reference, service/name (as the operator map keys it); a DNS
        // parent's endpoints follow it (the primary cleared their own states)
        for (const b of this.snapshot.backends) {
          if (b.ref === m.name || b.parentRef === m.name) b.load.admin = m.state;
          if (b.parentRef === m.name) this.operator.delete(b.ref);
        }
        this.plane.adminChanged(m.name, m.keys, m.state, m.cut);
        return;
      }
      case 'check':
        this.loads.peek(m.key)?.applyCheck(m.healthy, m.healthySince, m.ok);
        this.plane.checked();
        return;
      case 'agent':
        // a changed weight percentage comes with the snapshot the primary published after it
        this.loads.peek(m.key)?.applyAgent(m.down, m.weightPercent);
        this.plane.agentChanged();
        return;
      case 'prepare': {
        const spec = m.listen;
        const none: Pending = { commit: () => undefined, abort: () => undefined };
        ('fd' in spec ? Promise.reject(new Error('a passed socket cannot be prepared')) : !this.binds(spec) ? Promise.resolve(none) : this.plane.prepare(spec.address, spec.addr, spec.udp === true)).then(
          (p) => {
            this.pending.set(m.id, p);
            send({ t: 'answer', id: m.id });
          },
          (e: unknown) => send({ t: 'answer', id: m.id, error: e instanceof BindError ? e.reason : String(e) }),
        );
        return;
      }
      case 'commit':
      case 'abort': {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.t === 'commit') p?.commit();
        else p?.abort();
        return;
      }
      case 'report':
        send({ t: 'answer', id: m.id, report: this.report() });
        return;
      case 'close-address':
        this.plane.closeAddress(m.address);
        return;
      case 'close':
        void this.plane.close().then(() => send({ t: 'answer', id: m.id }));
        return;
      case 'drain':
        void this.plane.drain(m.timeoutMs).then((r) => {
          send({ t: 'answer', id: m.id, drained: r.drained, cut: r.cut, report: this.report() }, () => exitWhenFlushed(0));
        });
        return;
      case 'reopen-log':
        this.plane.reopenLog();
        return;
      case 'ticket-key':
        this.tls.setTicketKey(Buffer.from(m.key));
        return;
      case 'init':
        return;
    }
  }

  private report(): WorkerReport {
    this.traffic.stdoutDropped = processStdout().logDropped;
    return {
      open: this.plane.open,
      serviceOpen: [...this.plane.openByService()],
      accepted: this.plane.accepted,
      loads: [...this.loads.values()].map((l) => [l.key, l.report()] as const),
      counters: [...this.loads.allCounters()].map(
        ([name, c]) => [name, { connections: c.connections, connectErrors: c.connectErrors, bytesIn: c.bytesIn, bytesOut: c.bytesOut }] as const,
      ),
      traffic: this.traffic.report(),
      udp: [...allUdpFigures()].map(([service, f]) => [service, { in: f.in, out: f.out, dropped: f.dropped, flows: f.flows }] as const),
    };
  }
}

function label(spec: ListenSpec): string {
  return 'fd' in spec ? `fd ${spec.fd}` : `${spec.addr.host}:${spec.addr.port}`;
}
