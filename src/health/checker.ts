// Active health checks: one probe per backend every [health] interval, each bounded by
// [health] timeout, on jittered unref'd timers. Results go through the threshold machine into the
// backend's load figures (kept across reloads), and are reported to a listener. With
// [proxy] proxy_protocol on, every check connection starts with a PROXY header, as the proxied
// ones do: a backend that requires it resets a check without one (nginx `listen … proxy_protocol`).

import net from 'node:net';
import http from 'node:http';
import type { ProxyProtocol } from '../config/schema';
import type { ServiceSnapshot, Snapshot, SnapshotBackend } from '../core/snapshot';
import { checkProxyHeader } from '../proxy/proxy-protocol';
import type { BackendLoad } from '../core/stats';
import { INITIAL_HEALTH, isHealthy, observe, type HealthState } from './state';
import { cachedLookup } from '../discovery/cached-lookup';

export interface HealthEvent {
  readonly at: number;
  /** the backend's load key */
  readonly key: string;
  readonly service: string;
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
  /** the backend's service: its health and PROXY settings */
  svc: ServiceSnapshot;
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
    const now = this.deps.now();
    for (const svc of snap.services) {
      const interval = svc.health.intervalMs;
      for (const b of svc.backends) {
        live.add(b.load.key);
        const p = this.probes.get(b.load.key);
        if (p) {
          p.backend = b;
          p.svc = svc;
          if (p.timer && p.dueAt - now > interval * (1 + JITTER)) {
            clearTimeout(p.timer);
            this.schedule(p, this.jittered(interval));
          }
        } else {
          const probe: Probe = { key: b.load.key, backend: b, svc, state: INITIAL_HEALTH, timer: null, dueAt: 0, inflight: null };
          this.probes.set(b.load.key, probe);
          this.schedule(probe, 0);
        }
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
    // the settings of the backend's service in the current snapshot (sync() keeps p.svc current)
    const { health: h, proxy } = p.svc;
    const started = this.deps.now();
    const done = (error: string | null): void => {
      p.inflight = null;
      if (this.stopped || this.probes.get(p.key) !== p) return;
      this.record(p, error);
      const elapsed = this.deps.now() - started;
      this.schedule(p, Math.max(0, this.jittered(p.svc.health.intervalMs) - elapsed));
    };
    const { host, port } = p.backend.spec;
    const pp = proxy.proxyProtocol;
    const lookup = cachedLookup(p.backend.spec); // a host name's cached addresses: no lookup
    p.inflight = h.kind === 'http' ? httpProbe(host, port, h.path, h.timeoutMs, pp, done, lookup) : tcpProbe(host, port, h.timeoutMs, pp, done, lookup);
  }

  private record(p: Probe, error: string | null): void {
    const ok = error === null;
    const load: BackendLoad = p.backend.load;
    const before = p.state;
    p.state = observe(before, ok, p.svc.health);
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
    this.deps.onResult({ at: now, key: p.key, service: p.backend.service, backend: p.backend.name, address: p.backend.spec.address, ok, error, transition });
  }
}

type Done = (error: string | null) => void;

/**
 * Returns a function that aborts the probe. With a PROXY header the check sends it, closes its
 * side and passes once that is done: the backend reads a complete header, then a clean end of
 * stream. A bare connect and close is, to such a backend, a client that broke off mid-header.
 */
function tcpProbe(host: string, port: number, timeoutMs: number, pp: ProxyProtocol, done: Done, lookup?: net.LookupFunction): () => void {
  let finished = false;
  const s = net.connect({ host, port, ...(lookup ? { lookup } : {}) });
  const finish = (err: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(t);
    s.destroy();
    done(err);
  };
  const t = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs);
  t.unref();
  s.once('connect', () => {
    if (pp === 'off') return finish(null);
    s.end(checkProxyHeader(pp, s));
    s.once('finish', () => finish(null));
  });
  s.once('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  return () => {
    finished = true;
    clearTimeout(t);
    s.destroy();
  };
}

function httpProbe(host: string, port: number, path: string, timeoutMs: number, pp: ProxyProtocol, done: Done, lookup?: net.LookupFunction): () => void {
  let finished = false;
  // the connection until it carries the request (the request owns it from then on)
  let pending: net.Socket | null = null;
  const finish = (err: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(t);
    pending?.destroy();
    req.destroy();
    done(err);
  };
  // The PROXY header must be the first bytes, and v1's names the connection's local address:
  // the request gets the socket once it is connected and the header is written.
  const headerFirst = (v: 'v1' | 'v2') => (_o: unknown, oncreate: (err: Error | null, s: net.Socket) => void): undefined => {
    const s = net.connect({ host, port, ...(lookup ? { lookup } : {}) });
    pending = s;
    // stays on: an error before the request has put its own handlers on must not go unhandled
    s.on('error', (e) => {
      if (pending === s) oncreate(e, s);
    });
    s.once('connect', () => {
      pending = null;
      s.write(checkProxyHeader(v, s));
      oncreate(null, s);
    });
    return undefined;
  };
  const req = http.request(
    {
      host,
      port,
      path,
      method: 'GET',
      ...(lookup ? { lookup } : {}),
      headers: { 'user-agent': 'lemonade-lb health check', connection: 'close' },
      // no agent: with `agent: false` node makes one, and it ignores createConnection
      ...(pp === 'off' ? { agent: false } : { createConnection: headerFirst(pp) }),
    },
    (res) => {
      const code = res.statusCode ?? 0;
      res.resume();
      finish(code >= 200 && code < 400 ? null : `HTTP ${code}`);
    },
  );
  const t = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs);
  t.unref();
  req.once('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  req.end();
  return () => {
    finished = true;
    clearTimeout(t);
    pending?.destroy();
    req.destroy();
  };
}
