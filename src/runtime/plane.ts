// The data plane as the control plane sees it: one interface, two forms. LocalPlane is the
// listener and its sessions in this process (`[runtime] workers = 1`); WorkerPool
// (runtime/workers.ts) is the same surface over several worker processes. The App (control
// plane) builds snapshots and tells the plane about them; it never reaches past this interface.

import type { HostPort } from '../config/address';
import { shownName, type AdminState } from '../core/backend';
import type { Snapshot } from '../core/snapshot';
import type { Logger } from '../obs/logger';
import type { TrafficFigures } from '../obs/metrics';
import { ProxyListener, type Open, type Pending } from '../proxy/listener';
import type { ListenSpec } from './ipc';
import { rejectionTermination, type ProxyObserver, type SessionEnd } from '../proxy/events';
import type { AccessLog } from '../obs/access-log';
import type { DrainResult } from '../proxy/registry';

export type { Pending };

export interface DataPlane {
  /** the address the first listening socket actually bound ("host:port"), "" before listening */
  readonly address: string;
  readonly listening: boolean;
  /** open client connections */
  readonly open: number;
  /** client connections accepted so far */
  readonly accepted: number;
  /** each listening service's bound address */
  addresses(): ReadonlyMap<string, string>;
  /** each service's open client connections */
  openByService(): ReadonlyMap<string, number>;
  /** each service's connections waiting in its queue (queue_timeout); absent: not known here (worker processes) */
  queuedByService?(): ReadonlyMap<string, number>;
  /** bind (or adopt the socket systemd passed) every listen address's socket; one failure fails all */
  listen(specs: readonly ListenSpec[]): Promise<void>;
  /** bind a new listen address (as the config writes it) for a reload: commit() serves it, abort() lets it go */
  prepare(address: string, addr: HostPort, udp?: boolean): Promise<Pending>;
  /** an address no service has any more stops accepting; its open connections drain with their backends */
  closeAddress(address: string): void;
  /**
   * A new snapshot is current. Connections to backends it no longer has (`gone`, by load key)
   * may live `drainTimeoutMs` from now, then are cut.
   */
  applied(snap: Snapshot, gone: ReadonlySet<string>, drainTimeoutMs: number): void;
  /**
   * Resolves once every data-plane process serves `generation` (published through applied()),
   * with the pids of the worker processes that did not say so in time (none in one process).
   */
  acknowledged(generation: number): Promise<readonly number[]>;
  /**
   * An operator changed a backend's state (`ref`: service/name; a DNS parent's applies to its
   * endpoints, `keys` their load keys); `cut` closes their open connections now (disable).
   */
  adminChanged(ref: string, keys: readonly string[], state: AdminState, cut: boolean): void;
  /** an active health check's result, already applied to the control plane's copy */
  checked(key: string, healthy: boolean, healthySince: number, ok: boolean): void;
  /**
   * An agent changed a backend's down flag or weight percentage, already applied to the control
   * plane's copy and snapshot (a changed percentage means a snapshot with the new weight).
   */
  agentChanged(key: string, down: boolean, weightPercent: number | null): void;
  /** stop accepting; open connections are untouched */
  close(): Promise<void>;
  /** wait for open connections up to timeoutMs, then cut the rest */
  drain(timeoutMs: number): Promise<DrainResult>;
  /** bring the control plane's figures up to date (a no-op in one process) */
  refresh(): Promise<void>;
  /** SIGUSR1: every process that writes the access log opens its file again (logrotate) */
  reopenLog(): void;
  /** the session ticket key changed: every worker process's TLS contexts take it (one process: the App's own terminators are the plane's) */
  setTicketKey(key: Buffer): void;
  /** per-process view for /status (null in one process) */
  processes(): WorkerProcess[] | null;
  /** data-plane processes up now, and unasked exits replaced so far */
  workerFigures(): { up: number; restarts: number };
}

/** One data-plane process as /status shows it: `pid` null while it is being replaced. */
export interface WorkerProcess {
  readonly index: number;
  readonly pid: number | null;
  readonly up: boolean;
  readonly open: number;
  readonly accepted: number;
  readonly restarts: number;
}

export interface ObserverDeps {
  readonly logger: Logger;
  readonly traffic: TrafficFigures;
  readonly now: () => number;
  /** the unhealthy_threshold of a service's health settings */
  readonly unhealthyThreshold: (service: string) => number;
  /** a line for the admin events list */
  readonly event: (kind: 'health', message: string) => void;
  readonly accessLog: AccessLog;
}

/**
 * What the data plane reports goes to the traffic figures (every connection's termination
 * counted), the access log (the sampled connections) and, at debug, to the log.
 */
export function trafficObserver(d: ObserverDeps): ProxyObserver {
  const log = d.logger;
  const t = d.traffic;
  const access = d.accessLog;
  let acceptErrorLogged = 0;
  return {
    get logSample(): number {
      return access.sampleRate;
    },
    rejected: (reason, remote, service, logClient, durationMs = 0) => {
      t.reject(reason, service);
      const termination = rejectionTermination(reason);
      const now = d.now();
      t.ended(service, termination, null, logClient ?? remote ?? null, durationMs, now);
      if (logClient !== null) access.write(rejection(service, termination, logClient, durationMs), now);
      if (log.isLevelEnabled('debug')) log.debug({ service, reason, client: remote }, 'connection rejected');
    },
    connectFailed: (b, error, willRetry) => {
      if (log.isLevelEnabled('debug')) log.debug({ service: b.service, backend: b.name, error, willRetry }, 'backend connect failed');
      if (b.load.consecutiveFailures === d.unhealthyThreshold(b.service)) {
        log.warn({ service: b.service, backend: b.name, address: b.spec.address, error }, 'backend failing on live traffic: ejected until it answers again');
        d.event('health', `${shownName(b.service, b.name)} ejected after ${b.load.consecutiveFailures} failed connects (${error})`);
      }
    },
    connected: (b, ms) => {
      t.observeConnect(b.ref, ms / 1000);
      if (log.isLevelEnabled('debug')) log.debug({ backend: b.name, connectMs: ms }, 'connection opened');
    },
    closed: (e) => {
      const now = d.now();
      const ms = e.durationMs;
      const b = e.pickedBackend;
      // a session that found no backend at all is a rejection too (lemonade_connections_rejected_total)
      if (e.termination === 'no_backend') t.reject('no_backend', e.service);
      t.ended(e.service, e.termination, b?.name ?? null, e.logClient, ms, now);
      if (e.latencyMs >= 0) t.observeLatency(e.service, e.latencyMs);
      const tls = e.tls;
      if (tls != null) t.handshake(e.service, tls.secure ? (tls.resumed ? 1 : 0) : e.termination === 'tls_handshake_timeout' ? 3 : 2, tls.handshakeMs);
      if (e.logClient !== null) access.write(e, now);
      if (!e.connected) return;
      t.lifetime.observe(ms / 1000);
      if (log.isLevelEnabled('debug')) log.debug({ backend: b!.name, durationMs: ms, bytesIn: e.bytesIn, bytesOut: e.bytesOut, termination: e.termination }, 'connection closed');
    },
    acceptError: (err) => {
      // EMFILE/ENFILE: the kernel keeps the connection queued; log at most once a second
      const now = d.now();
      if (now - acceptErrorLogged > 1000) {
        acceptErrorLogged = now;
        log.error({ error: (err as NodeJS.ErrnoException).code ?? err.message }, 'cannot accept connections (file descriptors exhausted?)');
      }
    },
  };
}

/** A connection the listener refused, as the access log reads it. */
function rejection(service: string, termination: SessionEnd['termination'], logClient: string, durationMs: number): SessionEnd {
  return { service, pickedBackend: null, connected: false, connectMs: 0, durationMs, bytesIn: 0, bytesOut: 0, retries: 0, termination, latencyMs: -1, logClient };
}

export interface LocalPlaneDeps {
  readonly current: () => Snapshot;
  readonly observer: ProxyObserver;
  /** the observer's access log: configured from each snapshot, flushed at the end of a drain */
  readonly accessLog: AccessLog;
  readonly now: () => number;
  readonly logger: Logger;
  /** several processes share the listening socket (a worker of a WorkerPool) */
  readonly shared?: boolean;
}

/** The data plane in this process: the listener, its sessions, and the drain timers of reloads. */
export class LocalPlane implements DataPlane {
  readonly listener: ProxyListener;
  /** connections of removed backends, each set cut when its timer fires */
  private readonly drains = new Map<NodeJS.Timeout, Set<Open>>();

  constructor(private readonly deps: LocalPlaneDeps) {
    this.listener = new ProxyListener({ current: deps.current, observer: deps.observer, now: deps.now, shared: deps.shared === true });
  }

  get address(): string {
    return this.listener.address;
  }
  get listening(): boolean {
    return this.listener.listening;
  }
  get open(): number {
    return this.listener.registry.size;
  }
  get accepted(): number {
    return this.listener.accepted;
  }

  addresses(): ReadonlyMap<string, string> {
    return this.listener.addresses();
  }
  openByService(): ReadonlyMap<string, number> {
    return this.listener.openByService();
  }

  async listen(specs: readonly ListenSpec[]): Promise<void> {
    // bind every address first: one that fails lets the others go
    const pending: Pending[] = [];
    try {
      for (const s of specs) {
        if ('fd' in s) await this.listener.adopt(s.address, s.fd);
        else pending.push(await this.listener.prepare(s.address, s.addr, s.udp === true));
      }
    } catch (e) {
      for (const p of pending) p.abort();
      await this.listener.close();
      throw e;
    }
    for (const p of pending) p.commit();
  }
  prepare(address: string, addr: HostPort, udp = false): Promise<Pending> {
    return this.listener.prepare(address, addr, udp);
  }
  closeAddress(address: string): void {
    this.listener.closeAddress(address);
  }

  applied(snap: Snapshot, gone: ReadonlySet<string>, drainTimeoutMs: number): void {
    this.listener.prune(snap);
    this.listener.serveQueues();
    this.deps.accessLog.configure(snap.config.access_log);
    if (this.drains.size > 0) {
      // a backend back with the same id and address takes its draining connections back
      const live = new Set(snap.backends.map((b) => b.load.key));
      for (const doomed of this.drains.values()) {
        for (const c of doomed) if (c.backendKey !== null && live.has(c.backendKey)) doomed.delete(c);
      }
    }
    if (gone.size === 0) return;
    // each connection may live drain_timeout from its own backend's removal: the timer cuts the
    // connections open now, not whatever is attached to these keys when it fires (a backend
    // removed, re-added and removed again would otherwise lose younger connections early)
    const registry = this.listener.registry;
    const doomed = new Set(registry.attachedTo(gone));
    const t = setTimeout(() => {
      this.drains.delete(t);
      let cut = 0;
      for (const c of doomed) {
        if (registry.has(c)) {
          c.cut('drain_timeout');
          cut++;
        }
      }
      if (cut > 0) this.deps.logger.info({ cut, backends: [...gone] }, 'drain timeout: closed connections to removed backends');
    }, drainTimeoutMs);
    t.unref();
    this.drains.set(t, doomed);
  }

  acknowledged(): Promise<readonly number[]> {
    // applied() made it current in this process
    return Promise.resolve([]);
  }

  adminChanged(_name: string, keys: readonly string[], _state: AdminState, cut: boolean): void {
    // disable cuts the backend's connections at once; drain lets them finish
    if (cut) this.listener.registry.cutBackends(new Set(keys), 'disabled');
    else this.listener.serveQueues();
  }

  checked(): void {
    // the checker wrote to the same load figures this process picks with: a backend up again takes queued connections
    this.listener.serveQueues();
  }

  agentChanged(): void {
    // the same figures, and the snapshot the control plane rebuilt is the one this process reads
    this.listener.serveQueues();
  }

  /** each service's connections waiting in its queue (queue_timeout) */
  queuedByService(): ReadonlyMap<string, number> {
    return this.listener.queuedByService();
  }

  close(): Promise<void> {
    return this.listener.close();
  }

  async drain(timeoutMs: number): Promise<DrainResult> {
    const r = await this.listener.registry.drain(timeoutMs);
    for (const t of this.drains.keys()) clearTimeout(t);
    this.drains.clear();
    await this.deps.accessLog.flushed(1000);
    return r;
  }

  async refresh(): Promise<void> {}

  reopenLog(): void {
    this.deps.accessLog.reopen();
  }

  setTicketKey(): void {}

  processes(): null {
    return null;
  }

  workerFigures(): { up: number; restarts: number } {
    return { up: 1, restarts: 0 };
  }
}
