// The prom-client registry and every metric definition, in one place. Traffic counters and
// gauges are read from the load table at scrape time, so the data plane only adds to plain
// numbers between scrapes; histograms are observed per connection without labels.

import { Registry, Counter, Gauge, collectDefaultMetrics } from 'prom-client';
import { FastHistogram, type HistogramData, type HistogramSeries } from './fast-histogram';
import type { BackendLoad, LoadTable } from '../core/stats';
import type { Snapshot } from '../core/snapshot';
import { splitRef, type BackendState } from '../core/backend';
import { firstName, type CertificateFacts } from '../core/certificate';

const BACKEND_STATES: readonly BackendState[] = ['healthy', 'unhealthy', 'draining', 'disabled'];

import { allUdpFigures } from '../proxy/udp-flows';
import { CLEAN_TERMINATIONS, TERMINATIONS, TERMINATION_INDEX, type RejectReason, type Termination } from '../proxy/events';
export type { RejectReason };
/** the reasons a service's connection is refused for (no_route has no service: counted with service="") */
export const REJECT_REASONS: readonly RejectReason[] = ['max_connections', 'no_backend', 'acl', 'rate_limit', 'client_limit', 'proxy_header'];

/** Upper bounds (ms) of the per-service latency buckets the status page's p50/p99 are read from. */
export const LATENCY_BOUNDS_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000];
/** Most recent non-clean terminations kept (each process, and the merged list). */
export const RECENT_CAP = 50;

/** One connection that did not end cleanly, for the status page. */
export interface RecentTermination {
  readonly at: number;
  readonly service: string;
  readonly backend: string | null;
  /** "ip:port" when the access log read it, else null */
  readonly client: string | null;
  readonly termination: Termination;
  readonly duration_ms: number;
}

const CONNECT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const HANDSHAKE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** The results of a TLS handshake, as lemonade_tls_handshakes_total labels them. */
export const HANDSHAKE_RESULTS = ['ok', 'resumed', 'failed', 'timeout'] as const;
const LIFETIME_BUCKETS = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600];

/** The labels of a series kept by backend reference (service/name). */
function backendLabels(ref: string): { service: string; backend: string } {
  const { service, name } = splitRef(ref);
  return { service, backend: name };
}

/** What one data-plane process counted: rejections and the two per-connection histograms. */
export interface TrafficReport {
  /** by "service/reason" */
  readonly rejected: readonly (readonly [string, number])[];
  readonly connect: readonly (readonly [string, HistogramData])[];
  readonly lifetimes: HistogramData;
  /** by service: counts in TERMINATIONS order */
  readonly terminations: readonly (readonly [string, readonly number[]])[];
  /** by service: latency samples per LATENCY_BOUNDS_MS bucket (the last one: above them) */
  readonly latency: readonly (readonly [string, readonly number[]])[];
  readonly logDropped: number;
  /** the ordinary log's lines dropped (standard output could not keep up) */
  readonly stdoutDropped: number;
  readonly recent: readonly RecentTermination[];
  /** by service: TLS handshakes in HANDSHAKE_RESULTS order */
  readonly handshakes: readonly (readonly [string, readonly number[]])[];
  readonly handshakeTimes: readonly (readonly [string, HistogramData])[];
}

/** Per-key arrays added up, key by key. */
function sumArrays(lists: readonly (readonly (readonly [string, readonly number[]])[])[], into: Map<string, Float64Array>, size: number): void {
  into.clear();
  for (const list of lists) {
    for (const [k, v] of list) {
      let a = into.get(k);
      if (!a) into.set(k, (a = new Float64Array(size)));
      for (let i = 0; i < size && i < v.length; i++) a[i]! += v[i]!;
    }
  }
}

/**
 * The data plane's own figures beside the load table: plain numbers and typed arrays, so a
 * connection only adds to them. A worker process keeps one and reports it; the control plane
 * renders its own (one process) or the sum of its workers' reports (absorb).
 */
export class TrafficFigures {
  /** rejections by "service/reason" */
  readonly rejected = new Map<string, number>();
  readonly connect = new FastHistogram(
    'lemonade_backend_connect_duration_seconds',
    'Time to establish a TCP connection to a backend, by service and backend',
    CONNECT_BUCKETS,
    backendLabels,
  );
  readonly lifetimes = new FastHistogram('lemonade_connection_duration_seconds', 'Lifetime of proxied client connections', LIFETIME_BUCKETS);
  readonly lifetime: HistogramSeries = this.lifetimes.for();
  /** by service: counts by TERMINATION_INDEX */
  readonly terminations = new Map<string, Float64Array>();
  /** by service: latency samples by LATENCY_BOUNDS_MS bucket */
  readonly latency = new Map<string, Float64Array>();
  /** access log lines dropped (the destination could not keep up) */
  logDropped = 0;
  /** the ordinary log's lines dropped: a worker's own, reported; in the control plane, its workers' sum */
  stdoutDropped = 0;
  /** the most recent non-clean terminations, oldest first, at most RECENT_CAP */
  recent: RecentTermination[] = [];
  /** by service: TLS handshakes by HANDSHAKE_RESULTS index */
  readonly handshakes = new Map<string, Float64Array>();
  readonly handshakeTimes = new FastHistogram('lemonade_tls_handshake_duration_seconds', 'Time from accept (or from the end of the ClientHello\'s reading) to a completed TLS handshake, by service', HANDSHAKE_BUCKETS, (service) => ({ service }));

  /** A terminating service's handshake ended: `result` indexes HANDSHAKE_RESULTS; `ms` when it completed. */
  handshake(service: string, result: number, ms: number): void {
    let a = this.handshakes.get(service);
    if (!a) this.handshakes.set(service, (a = new Float64Array(HANDSHAKE_RESULTS.length)));
    a[result]!++;
    if (ms >= 0) this.handshakeTimes.for(service).observe(ms / 1000);
  }

  reject(reason: RejectReason, service: string): void {
    const k = `${service}/${reason}`;
    this.rejected.set(k, (this.rejected.get(k) ?? 0) + 1);
  }

  /** A client connection ended (`at`: ms since the epoch); a non-clean end is kept for the status page. */
  ended(service: string, termination: Termination, backend: string | null, client: string | null, durationMs: number, at: number): void {
    let a = this.terminations.get(service);
    if (!a) this.terminations.set(service, (a = new Float64Array(TERMINATIONS.length)));
    a[TERMINATION_INDEX[termination]]!++;
    if (!CLEAN_TERMINATIONS.has(termination)) {
      this.recent.push({ at, service, backend, client, termination, duration_ms: durationMs });
      if (this.recent.length > RECENT_CAP) this.recent.shift();
    }
  }

  /** A latency sample (connect + time to first byte) of a service's connection, ms. */
  observeLatency(service: string, ms: number): void {
    let a = this.latency.get(service);
    if (!a) this.latency.set(service, (a = new Float64Array(LATENCY_BOUNDS_MS.length + 1)));
    let i = 0;
    while (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]!) i++;
    a[i]!++;
  }

  /** `ref`: the backend's service/name */
  observeConnect(ref: string, seconds: number): void {
    this.connect.for(ref).observe(seconds);
  }

  rejectedTotal(): number {
    let n = 0;
    for (const v of this.rejected.values()) n += v;
    return n;
  }

  report(): TrafficReport {
    return {
      rejected: [...this.rejected],
      connect: [...this.connect.entries()].map(([name, s]) => [name, s.data()] as const),
      lifetimes: this.lifetime.data(),
      terminations: [...this.terminations].map(([k, a]) => [k, Array.from(a)] as const),
      latency: [...this.latency].map(([k, a]) => [k, Array.from(a)] as const),
      logDropped: this.logDropped,
      stdoutDropped: this.stdoutDropped,
      recent: this.recent.slice(),
      handshakes: [...this.handshakes].map(([k, a]) => [k, Array.from(a)] as const),
      handshakeTimes: [...this.handshakeTimes.entries()].map(([name, h]) => [name, h.data()] as const),
    };
  }

  /** Become the sum of these reports. */
  absorb(list: readonly TrafficReport[]): void {
    this.rejected.clear();
    for (const x of list) for (const [k, n] of x.rejected) this.rejected.set(k, (this.rejected.get(k) ?? 0) + n);
    const byName = new Map<string, HistogramData[]>();
    for (const x of list) for (const [name, d] of x.connect) (byName.get(name) ?? byName.set(name, []).get(name)!).push(d);
    for (const [name, ds] of byName) this.connect.for(name).assignSum(ds);
    // a backend no report has any more is gone: its series too
    for (const [name] of [...this.connect.entries()]) if (!byName.has(name)) this.connect.delete(name);
    this.lifetime.assignSum(list.map((x) => x.lifetimes));
    sumArrays(list.map((x) => x.terminations), this.terminations, TERMINATIONS.length);
    sumArrays(list.map((x) => x.latency), this.latency, LATENCY_BOUNDS_MS.length + 1);
    this.logDropped = list.reduce((n, x) => n + x.logDropped, 0);
    this.stdoutDropped = list.reduce((n, x) => n + x.stdoutDropped, 0);
    this.recent = mergeRecent(list.map((x) => x.recent));
    sumArrays(list.map((x) => x.handshakes), this.handshakes, HANDSHAKE_RESULTS.length);
    const times = new Map<string, HistogramData[]>();
    for (const x of list) for (const [name, d] of x.handshakeTimes) (times.get(name) ?? times.set(name, []).get(name)!).push(d);
    for (const [name, ds] of times) this.handshakeTimes.for(name).assignSum(ds);
  }
}

/** Several processes' recent terminations as one list, oldest first, the last RECENT_CAP. */
export function mergeRecent(lists: readonly (readonly RecentTermination[])[]): RecentTermination[] {
  const all = lists.flat();
  all.sort((a, b) => a.at - b.at);
  return all.slice(-RECENT_CAP);
}

export interface MetricsSources {
  readonly loads: LoadTable;
  readonly snapshot: () => Snapshot;
  /** backends removed by a reload whose connections still drain */
  readonly draining?: () => Iterable<{ readonly service: string; readonly name: string; readonly load: BackendLoad }>;
  /** each service's open client connections */
  readonly serviceOpen?: () => ReadonlyMap<string, number>;
  /** each service's connections waiting in its queue (queue_timeout), this process's */
  readonly queued?: () => ReadonlyMap<string, number>;
  readonly version: string;
  /** data-plane processes up now, and how many were replaced after exiting unasked */
  readonly workers?: () => { readonly up: number; readonly restarts: number };
  /** this process's ordinary log lines dropped (its workers' come in their reports) */
  readonly stdoutDropped?: () => number;
  /** admin API connections closed by its connection cap, by reason */
  readonly adminDropped?: () => { readonly evicted: number; readonly refused: number };
  /** every certificate served, by service (the admin API's under its own name) */
  readonly certificates?: () => Iterable<{ readonly service: string; readonly facts: CertificateFacts }>;
}

export class Metrics {
  readonly registry = new Registry();
  readonly traffic = new TrafficFigures();
  readonly healthChecks: Counter<'service' | 'backend' | 'result'>;
  readonly agentChecks: Counter<'service' | 'backend' | 'result'>;
  readonly reloads: Counter<'result'>;
  readonly generation: Gauge;
  readonly dnsLookups: Counter<'result'>;
  readonly dnsLastSuccess: Gauge<'query'>;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const { loads } = src;

    new Gauge({
      name: 'lemonade_connections_active',
      help: 'Open client connections, by service and backend (a connection counts from accept until both sockets close)',
      labelNames: ['service', 'backend'],
      registers,
      collect() {
        this.reset();
        const byRef = new Map<string, number>();
        for (const b of src.snapshot().backends) byRef.set(b.ref, (byRef.get(b.ref) ?? 0) + b.load.active);
        for (const b of src.draining?.() ?? []) {
          const ref = `${b.service}/${b.name}`;
          byRef.set(ref, (byRef.get(ref) ?? 0) + b.load.active);
        }
        for (const [ref, n] of byRef) this.set(backendLabels(ref), n);
      },
    });
    new Gauge({
      name: 'lemonade_service_connections_active',
      help: 'Open client connections, by service',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset();
        for (const s of src.snapshot().services) this.set({ service: s.name }, 0);
        for (const [service, n] of src.serviceOpen?.() ?? []) this.set({ service }, n);
      },
    });
    new Gauge({
      name: 'lemonade_queue_length',
      help: 'Connections waiting for a backend slot in the service\'s queue (queue_timeout), by service',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset();
        for (const [service, n] of src.queued?.() ?? []) this.set({ service }, n);
      },
    });
    new Counter({
      name: 'lemonade_udp_datagrams_total',
      help: 'Datagrams a UDP service relayed, by direction: in (client to backend) and out (backend to client)',
      labelNames: ['service', 'direction'],
      registers,
      collect() {
        this.reset();
        for (const [service, f] of allUdpFigures()) {
          this.inc({ service, direction: 'in' }, f.in);
          this.inc({ service, direction: 'out' }, f.out);
        }
      },
    });
    new Gauge({
      name: 'lemonade_udp_flows_active',
      help: 'Open UDP flows (a client address and port to one service), by service',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset();
        for (const s of src.snapshot().services) if (s.proxy.protocol === 'udp') this.set({ service: s.name }, 0);
        for (const [service, f] of allUdpFigures()) if (f.flows > 0) this.set({ service }, f.flows);
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
      labelNames: ['service', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) this.set({ service: b.service, backend: b.name }, b.spec.maxConnections);
      },
    });
    new Gauge({
      name: 'lemonade_backend_state',
      help: "1 for a backend's current state (healthy, unhealthy, draining, disabled), 0 for the others",
      labelNames: ['service', 'backend', 'state'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) {
          const now = b.load.state();
          for (const st of BACKEND_STATES) this.set({ service: b.service, backend: b.name, state: st }, st === now ? 1 : 0);
        }
      },
    });
    new Counter({
      name: 'lemonade_connections_total',
      help: 'Client connections forwarded to a backend',
      labelNames: ['service', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const [ref, c] of loads.allCounters()) this.inc(backendLabels(ref), c.connections);
      },
    });
    const traffic = this.traffic;
    new Counter({
      name: 'lemonade_connections_rejected_total',
      help: 'Client connections closed at once, by service and reason',
      labelNames: ['service', 'reason'],
      registers,
      collect() {
        this.reset();
        // every reason of every service is exported from 0, so a rate() sees the first one
        const snap = src.snapshot();
        for (const s of snap.services) for (const r of REJECT_REASONS) this.inc({ service: s.name, reason: r }, 0);
        // an address that routes by server name without a default route refuses with no_route
        for (const a of snap.listenAddresses()) {
          const routes = snap.routes(a)!;
          if (routes.inspect && routes.fallback === null) this.inc({ service: '', reason: 'no_route' }, 0);
        }
        for (const [k, n] of traffic.rejected) {
          const { service, name } = splitRef(k);
          this.inc({ service, reason: name }, n);
        }
      },
    });
    new Counter({
      name: 'lemonade_connection_terminations_total',
      help: 'Client connections ended, by service and termination (who or what ended them; rejections included), whether the access log logged them or not',
      labelNames: ['service', 'termination'],
      registers,
      collect() {
        this.reset();
        // every termination of every service from 0, so a rate() sees the first one
        for (const s of src.snapshot().services) for (const t of TERMINATIONS) this.inc({ service: s.name, termination: t }, 0);
        for (const [service, a] of traffic.terminations) TERMINATIONS.forEach((t, i) => this.inc({ service, termination: t }, a[i]!));
      },
    });
    new Counter({
      name: 'lemonade_access_log_dropped_total',
      help: 'Access log lines dropped because the destination could not keep up (the bounded queue was full) or a write failed',
      registers,
      collect() {
        this.reset();
        this.inc(traffic.logDropped);
      },
    });
    new Counter({
      name: 'lemonade_log_dropped_total',
      help: 'Log lines (the ordinary log, not the access log) dropped because standard output could not keep up (the bounded queue was full) or failed',
      registers,
      collect() {
        this.reset();
        this.inc(traffic.stdoutDropped + (src.stdoutDropped?.() ?? 0));
      },
    });
    new Counter({
      name: 'lemonade_admin_connections_dropped_total',
      help: 'Admin API connections closed by its connection cap: evicted (the oldest one without a request under way, to make room) or refused (every one had a request under way)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        const d = src.adminDropped?.() ?? { evicted: 0, refused: 0 };
        this.inc({ reason: 'evicted' }, d.evicted);
        this.inc({ reason: 'refused' }, d.refused);
      },
    });
    new Gauge({
      name: 'lemonade_backend_up',
      help: '1 when the backend takes new connections (healthy and enabled), else 0',
      labelNames: ['service', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) this.set({ service: b.service, backend: b.name }, b.load.state() === 'healthy' ? 1 : 0);
      },
    });
    new Counter({
      name: 'lemonade_backend_connect_errors_total',
      help: 'Failed connects to a backend (refused, timed out, unreachable)',
      labelNames: ['service', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const [ref, c] of loads.allCounters()) this.inc(backendLabels(ref), c.connectErrors);
      },
    });
    new Counter({
      name: 'lemonade_bytes_total',
      help: 'Bytes relayed; direction "in" is client to backend, "out" backend to client',
      labelNames: ['service', 'backend', 'direction'],
      registers,
      collect() {
        this.reset();
        for (const [ref, c] of loads.allCounters()) {
          const l = backendLabels(ref);
          this.inc({ ...l, direction: 'in' }, c.bytesIn);
          this.inc({ ...l, direction: 'out' }, c.bytesOut);
        }
      },
    });
    // the two per-connection histograms are plain arrays read at scrape time (fast-histogram.ts)
    this.registry.registerMetric(traffic.connect.asMetric());
    this.registry.registerMetric(traffic.lifetimes.asMetric());
    this.registry.registerMetric(traffic.handshakeTimes.asMetric());
    new Counter({
      name: 'lemonade_tls_handshakes_total',
      help: 'TLS handshakes of services that terminate TLS, by service and result (ok, resumed, failed, timeout)',
      labelNames: ['service', 'result'],
      registers,
      collect() {
        this.reset();
        // every result of every terminating service from 0, so a rate() sees the first one
        for (const s of src.snapshot().services) if (s.tls !== null) for (const r of HANDSHAKE_RESULTS) this.inc({ service: s.name, result: r }, 0);
        for (const [service, a] of traffic.handshakes) HANDSHAKE_RESULTS.forEach((r, i) => this.inc({ service, result: r }, a[i]!));
      },
    });
    new Gauge({
      name: 'lemonade_tls_certificate_expiry_timestamp_seconds',
      help: 'When each certificate served stops being valid (its not-after), Unix time, by service ("(admin)": the admin API\'s) and certificate (its first DNS name, else its CN)',
      labelNames: ['service', 'certificate'],
      registers,
      collect() {
        this.reset();
        // this process's own certificates (a worker serves the same ones): never added up over
        // workers; two of a service with the same first name (RSA and ECDSA) show the earlier end
        const earliest = new Map<string, { service: string; certificate: string; at: number }>();
        for (const { service, facts } of src.certificates?.() ?? []) {
          const certificate = firstName(facts);
          const k = `${service}\n${certificate}`;
          const had = earliest.get(k);
          if (had === undefined || facts.notAfterMs < had.at) earliest.set(k, { service, certificate, at: facts.notAfterMs });
        }
        for (const { service, certificate, at } of earliest.values()) this.set({ service, certificate }, Math.floor(at / 1000));
      },
    });
    this.healthChecks = new Counter({
      name: 'lemonade_health_checks_total',
      help: 'Active health checks, by service, backend and result (success|failure)',
      labelNames: ['service', 'backend', 'result'],
      registers,
    });
    this.agentChecks = new Counter({
      name: 'lemonade_agent_checks_total',
      help: 'Agent checks, by service, backend and result (success: the agent answered a line; failure: no answer)',
      labelNames: ['service', 'backend', 'result'],
      registers,
    });
    new Gauge({
      name: 'lemonade_backend_weight',
      help: "A backend's effective weight: the configured one, scaled by its agent's percentage when it sent one",
      labelNames: ['service', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const b of src.snapshot().backends) this.set({ service: b.service, backend: b.name }, b.baseWeight);
      },
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
    this.dnsLookups = new Counter({
      name: 'lemonade_dns_lookups_total',
      help: 'DNS lookups of backend names (resolve, srv, cached host names), by result (success|empty|partial|failure; partial: a part failed or records were left out, see /status dns notes)',
      labelNames: ['result'],
      registers,
    });
    this.dnsLastSuccess = new Gauge({
      name: 'lemonade_dns_last_success_timestamp_seconds',
      help: 'When each backend name (query "dns:NAME", "srv:NAME" or "lookup:NAME") was last looked up successfully, Unix time',
      labelNames: ['query'],
      registers,
    });
    const workers = src.workers ?? ((): { up: number; restarts: number } => ({ up: 1, restarts: 0 }));
    new Gauge({
      name: 'lemonade_workers',
      help: 'Data-plane processes running ([runtime] workers; 1 when the balancer is one process)',
      registers,
      collect() {
        this.set(workers().up);
      },
    });
    new Counter({
      name: 'lemonade_worker_restarts_total',
      help: 'Data-plane worker processes that exited unasked and were replaced',
      registers,
      collect() {
        this.reset();
        this.inc(workers().restarts);
      },
    });
    const info = new Gauge({ name: 'lemonade_build_info', help: 'Build information', labelNames: ['version'], registers });
    info.set({ version: src.version }, 1);
  }

  /**
   * Backends gone for good (no snapshot has them, nothing drains): their series go, so the
   * series follow the live backends (DNS endpoints come and go). `refs`: service/name.
   */
  forgetBackends(refs: readonly string[]): void {
    for (const ref of refs) {
      this.traffic.connect.delete(ref);
      const l = backendLabels(ref);
      for (const result of ['success', 'failure']) {
        this.healthChecks.remove({ ...l, result });
        this.agentChecks.remove({ ...l, result });
      }
    }
  }

  /** rejections so far, all reasons (of one service, when named) */
  rejectedCount(service?: string): number {
    if (service === undefined) return this.traffic.rejectedTotal();
    let n = 0;
    for (const [k, v] of this.traffic.rejected) if (k.startsWith(`${service}/`)) n += v;
    return n;
  }
}
