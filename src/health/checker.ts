// Active health checks: one probe per backend every [health] interval, each bounded by
// [health] timeout, on jittered unref'd timers (tcp connect, http GET, or send_expect steps);
// beside it, when [health] agent_port is set, an agent check on its own period. Check results go
// through the threshold machine into the backend's load figures (kept across reloads), and are
// reported to a listener; agent answers are reported as they come. With
// [proxy] proxy_protocol on, every check connection starts with a PROXY header, as the proxied
// ones do: a backend that requires it resets a check without one (nginx `listen … proxy_protocol`).
// A service with backend_tls checks over TLS, verified as its connections are: a tcp check passes
// once the handshake is done, http and send_expect speak inside the TLS.

import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import http from 'node:http';
import type { ProxyProtocol } from '../config/schema';
import type { ServiceSnapshot, Snapshot, SnapshotBackend } from '../core/snapshot';
import { checkProxyHeader } from '../core/proxy-protocol';
import type { BackendLoad } from '../core/stats';
import { INITIAL_HEALTH, isHealthy, observe, type HealthState } from './state';
import { cachedLookup } from '../core/cached-lookup';
import { Conversation, stepsOf, type Step } from './send-expect';
import { play } from './play';
import { AgentLine, type AgentAnswer } from './agent';
import { udpSendExpectProbe } from './udp-probe';

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
  /** an agent check's answer (services with [health] agent_port set) */
  readonly onAgent?: (e: AgentEvent) => void;
}

/** An agent check: the agent's line, or why there is none (then nothing changes, as HAProxy). */
export interface AgentEvent {
  readonly at: number;
  /** the backend's load key */
  readonly key: string;
  readonly service: string;
  readonly backend: string;
  readonly reply: string | null;
  readonly error: string | null;
}

/** One periodic task of a backend: its active check, or its agent check. */
interface Lane {
  timer: NodeJS.Timeout | null;
  /** when the pending timer fires (deps.now() time) */
  dueAt: number;
  inflight: (() => void) | null;
}

type LaneName = 'check' | 'agent';

interface Probe {
  readonly key: string;
  backend: SnapshotBackend;
  /** the backend's service: its health and PROXY settings */
  svc: ServiceSnapshot;
  state: HealthState;
  readonly check: Lane;
  readonly agent: Lane;
}

/** Fraction of the interval by which each wait is randomly shortened or lengthened. */
const JITTER = 0.1;

const idle = (): Lane => ({ timer: null, dueAt: 0, inflight: null });

/** A lane's period in a service: the agent check's defaults to the active check's. */
function periodOf(svc: ServiceSnapshot, lane: LaneName): number {
  const h = svc.health;
  return lane === 'agent' && h.agentIntervalMs > 0 ? h.agentIntervalMs : h.intervalMs;
}

export class HealthChecker {
  private readonly probes = new Map<string, Probe>();
  private stopped = false;

  constructor(private readonly deps: CheckerDeps) {}

  /**
   * Start probes for a snapshot's backends (first round at once); call again after each reload.
   * A reload that shortens the interval brings forward checks still waiting out the old one; one
   * that sets agent_port starts agent checks, one that clears it stops them.
   */
  sync(snap: Snapshot): void {
    if (this.stopped) return;
    const live = new Set<string>();
    const now = this.deps.now();
    for (const svc of snap.services) {
      const agentOn = svc.health.agentPort > 0;
      for (const b of svc.backends) {
        live.add(b.load.key);
        let p = this.probes.get(b.load.key);
        if (!p) {
          p = { key: b.load.key, backend: b, svc, state: INITIAL_HEALTH, check: idle(), agent: idle() };
          this.probes.set(b.load.key, p);
          this.schedule(p, 'check', 0);
          if (agentOn) this.schedule(p, 'agent', 0);
          continue;
        }
        p.backend = b;
        p.svc = svc;
        for (const lane of ['check', 'agent'] as const) {
          const l = p[lane];
          if (lane === 'agent' && !agentOn) {
            stopLane(l);
            continue;
          }
          const period = periodOf(svc, lane);
          if (l.timer && l.dueAt - now > period * (1 + JITTER)) {
            clearTimeout(l.timer);
            this.schedule(p, lane, this.jittered(period));
          } else if (!l.timer && !l.inflight) {
            this.schedule(p, lane, 0);
          }
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
    stopLane(p.check);
    stopLane(p.agent);
    this.probes.delete(p.key);
  }

  private schedule(p: Probe, lane: LaneName, delay: number): void {
    const l = p[lane];
    l.dueAt = this.deps.now() + delay;
    l.timer = setTimeout(() => (lane === 'check' ? this.run(p) : this.runAgent(p)), delay);
    l.timer.unref();
  }

  /** The interval, randomly shortened or lengthened by up to JITTER. */
  private jittered(interval: number): number {
    return interval * (1 + (this.deps.random() * 2 - 1) * JITTER);
  }

  /** A lane's probe finished: the next one is due a jittered period after this one started. */
  private finished(p: Probe, lane: LaneName, started: number): boolean {
    p[lane].inflight = null;
    if (this.stopped || this.probes.get(p.key) !== p) return false;
    if (lane === 'agent' && p.svc.health.agentPort === 0) return false; // turned off meanwhile
    const elapsed = this.deps.now() - started;
    this.schedule(p, lane, Math.max(0, this.jittered(periodOf(p.svc, lane)) - elapsed));
    return true;
  }

  private run(p: Probe): void {
    p.check.timer = null;
    if (this.stopped || this.probes.get(p.key) !== p) return;
    // the settings of the backend's service in the current snapshot (sync() keeps p.svc current)
    const { health: h, proxy } = p.svc;
    const started = this.deps.now();
    const done = (error: string | null): void => {
      if (this.finished(p, 'check', started)) this.record(p, error);
    };
    const { host } = p.backend.spec;
    const port = h.port > 0 ? h.port : p.backend.spec.port;
    const pp = proxy.proxyProtocol;
    const lookup = cachedLookup(p.backend.spec); // a host name's cached addresses: no lookup
    const secure = p.svc.backendTls?.optionsFor(host) ?? null;
    p.check.inflight =
      h.kind === 'http'
        ? httpProbe(host, port, h.path, h.timeoutMs, pp, done, lookup, secure)
        : h.kind === 'send_expect'
          ? proxy.protocol === 'udp'
            ? udpSendExpectProbe(host, port, stepsOf(h), h.timeoutMs, done)
            : sendExpectProbe(host, port, stepsOf(h), h.timeoutMs, pp, done, lookup, secure)
          : tcpProbe(host, port, h.timeoutMs, pp, done, lookup, secure);
  }

  private runAgent(p: Probe): void {
    p.agent.timer = null;
    if (this.stopped || this.probes.get(p.key) !== p) return;
    const h = p.svc.health;
    if (h.agentPort === 0) return;
    const started = this.deps.now();
    p.agent.inflight = agentProbe(p.backend.spec.host, h.agentPort, h.timeoutMs, ({ reply, error }) => {
      if (!this.finished(p, 'agent', started)) return;
      this.deps.onAgent?.({ at: this.deps.now(), key: p.key, service: p.backend.service, backend: p.backend.name, reply, error });
    }, cachedLookup(p.backend.spec));
  }

  /** A check's result goes through the threshold machine; the backend's figures own what follows. */
  private record(p: Probe, error: string | null): void {
    const ok = error === null;
    const load: BackendLoad = p.backend.load;
    p.state = observe(p.state, ok, p.svc.health);
    const now = this.deps.now();
    const wasHealthy = load.healthy;
    const healthy = isHealthy(p.state);
    load.applyCheck(healthy, healthy && !wasHealthy ? now : load.healthySince, ok, { at: now, ok, error });
    const transition = healthy === wasHealthy ? null : healthy ? 'up' : 'down';
    this.deps.onResult({ at: now, key: p.key, service: p.backend.service, backend: p.backend.name, address: p.backend.spec.address, ok, error, transition });
  }
}

function stopLane(l: Lane): void {
  if (l.timer) clearTimeout(l.timer);
  l.timer = null;
  l.inflight?.();
  l.inflight = null;
}

type Done = (error: string | null) => void;

/** tls.connect()'s options for a check of a service with backend_tls (core/tls.ts's TlsOriginator), else null */
type Secure = Readonly<Record<string, unknown>> | null;

/**
 * A check's own connection, ended exactly once: by `finish` with the check's result, by the
 * timeout (`late()` says what was still pending), by a socket error, or by `abort`, which a probe
 * returns to its caller (then nothing is reported).
 */
function checkConnection<R>(
  host: string,
  port: number,
  timeoutMs: number,
  late: () => R,
  failed: (error: string) => R,
  done: (r: R) => void,
  opts: { readonly allowHalfOpen?: boolean; readonly lookup?: net.LookupFunction | undefined; readonly secure?: Secure; readonly pp?: ProxyProtocol } = {},
): { readonly s: net.Socket; readonly ready: 'connect' | 'secureConnect'; readonly finish: (r: R) => void; readonly abort: () => void; readonly over: () => boolean } {
  let finished = false;
  const to = { host, port, allowHalfOpen: opts.allowHalfOpen === true, ...(opts.lookup ? { lookup: opts.lookup } : {}) };
  const secure = opts.secure ?? null;
  // over TLS the check is connected once the handshake is done and the backend verified
  const s = secure === null ? net.connect(to) : secureConnect(to, secure, opts.pp ?? 'off');
  const ready = secure === null ? ('connect' as const) : ('secureConnect' as const);
  const abort = (): void => {
    finished = true;
    clearTimeout(t);
    s.destroy();
  };
  const finish = (r: R): void => {
    if (finished) return;
    abort();
    done(r);
  };
  const t = setTimeout(() => finish(late()), timeoutMs);
  t.unref();
  s.once('error', (e: NodeJS.ErrnoException) => finish(failed(e.code ?? e.message)));
  return { s, ready, finish, abort, over: () => finished };
}

const asError = (error: string): string | null => error;

/**
 * A check's TLS connection. With a PROXY header it goes first and in clear, then the handshake,
 * as the service's own connections do (proxy/transport-net.ts).
 */
function secureConnect(to: net.TcpNetConnectOpts, secure: NonNullable<Secure>, pp: ProxyProtocol): tls.TLSSocket {
  if (pp === 'off') return tls.connect({ ...to, ...secure });
  const raw = net.connect(to);
  // on before tls.connect's own: the header is written ahead of the ClientHello
  raw.once('connect', () => raw.write(checkProxyHeader(pp, raw)));
  const s = tls.connect({ ...secure, socket: raw });
  raw.once('error', (e) => s.destroy(e));
  return s;
}

/**
 * Returns a function that aborts the probe. With a PROXY header the check sends it, closes its
 * side and passes once that is done: the backend reads a complete header, then a clean end of
 * stream. A bare connect and close is, to such a backend, a client that broke off mid-header.
 */
function tcpProbe(host: string, port: number, timeoutMs: number, pp: ProxyProtocol, done: Done, lookup?: net.LookupFunction, secure: Secure = null): () => void {
  const { s, ready, finish, abort } = checkConnection<string | null>(host, port, timeoutMs, () => `timeout after ${timeoutMs} ms`, asError, done, { lookup, secure, pp });
  s.once(ready, () => {
    // over TLS the header went before the handshake
    if (pp === 'off' || secure !== null) return finish(null);
    s.end(checkProxyHeader(pp, s));
    s.once('finish', () => finish(null));
  });
  return abort;
}

function httpProbe(host: string, port: number, path: string, timeoutMs: number, pp: ProxyProtocol, done: Done, lookup?: net.LookupFunction, secure: Secure = null): () => void {
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
      // over TLS: the request goes inside a TLS connection verified as the service's connections are
      ...(secure !== null ? { createConnection: () => secureConnect({ host, port, ...(lookup ? { lookup } : {}) }, secure, pp) } : pp === 'off' ? { agent: false } : { createConnection: headerFirst(pp) }),
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

/**
 * A send_expect check: the PROXY header if on, then the steps' conversation (health/send-expect.ts);
 * it passes once the last step matched and the check's side is closed. The whole check, connect
 * included, is bounded by timeoutMs.
 */
function sendExpectProbe(host: string, port: number, steps: readonly Step[], timeoutMs: number, pp: ProxyProtocol, done: Done, lookup?: net.LookupFunction, secure: Secure = null): () => void {
  const conv = new Conversation(steps);
  const { s, ready, finish, abort, over } = checkConnection<string | null>(host, port, timeoutMs, () => `timeout after ${timeoutMs} ms: ${conv.waiting()}`, asError, done, { allowHalfOpen: true, lookup, secure, pp });
  const { act, stop } = play(
    conv,
    (bytes) => s.write(bytes),
    (error) => {
      if (error !== null) return finish(error);
      s.end();
      s.once('finish', () => finish(null));
    },
    over,
  );
  s.once(ready, () => {
    if (pp !== 'off' && secure === null) s.write(checkProxyHeader(pp, s));
    act(conv.start());
  });
  s.on('data', (d: Buffer) => act(conv.receive(d, performance.now())));
  s.once('end', () => act(conv.ended()));
  s.once('close', stop);
  return abort;
}

/**
 * An agent check: connect to the agent's port, read its first line (health/agent.ts's AgentLine:
 * at most MAX_AGENT_REPLY bytes, or what came before it closed), bounded by timeoutMs. No PROXY
 * header: the agent is not the service. `reply` is null when `error` says why there is none.
 */
function agentProbe(host: string, port: number, timeoutMs: number, done: (a: AgentAnswer) => void, lookup?: net.LookupFunction): () => void {
  const line = new AgentLine();
  const late = (): AgentAnswer => ({ reply: null, error: `timeout after ${timeoutMs} ms${line.pending()}` });
  const { s, finish, abort } = checkConnection(host, port, timeoutMs, late, (error) => ({ reply: null, error }), done, { lookup });
  s.setEncoding('latin1');
  s.on('data', (d: string) => {
    const a = line.push(d);
    if (a !== null) finish(a);
  });
  s.once('end', () => finish(line.end()));
  return abort;
}
