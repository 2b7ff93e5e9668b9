// The messages between the control plane (cluster primary) and its data-plane workers, and the
// merging of the workers' reports. Sent with the 'advanced' serialization (structured clone), so
// a validated Config crosses as it is.

import type { Config } from '../config/schema';
import type { HostPort } from '../config/address';
import type { AdminState } from '../core/backend';
import { mergeLoadReports, type HealthFigures, type LoadReport } from '../core/stats';
import type { TrafficReport } from '../obs/metrics';
import { TrafficFigures } from '../obs/metrics';
import type { HistogramData } from '../obs/fast-histogram';
import type { UdpFigures } from '../proxy/udp-flows';

/**
 * One listening socket: the listen address as the config writes it (every service with it is
 * served there), and the address to bind or the socket systemd passed.
 */
/**
 * `udp`: the address's service has protocol = "udp" (never passed by systemd; with several
 * workers bound by each with SO_REUSEPORT, else by worker 0 only: udpBinder)
 */
export type ListenSpec = { readonly address: string } & ({ readonly addr: HostPort; readonly udp?: boolean } | { readonly fd: number });

export interface CountersReport {
  readonly connections: number;
  readonly connectErrors: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** Everything one worker counted, as of when it answered. */
export interface WorkerReport {
  readonly open: number;
  /** open client connections by service */
  readonly serviceOpen: readonly (readonly [string, number])[];
  readonly accepted: number;
  readonly loads: readonly (readonly [string, LoadReport])[];
  readonly counters: readonly (readonly [string, CountersReport])[];
  readonly traffic: TrafficReport;
  /** each UDP service's datagrams and open flows */
  readonly udp: readonly (readonly [string, UdpFigures])[];
}

/**
 * Does worker `index` bind a UDP service's socket? With SO_REUSEPORT (`reuse`) every worker does
 * and the kernel hashes each client's address and port to one of them, so a flow stays on one
 * worker. Without it a shared socket would hand a flow's datagrams to whichever worker reads
 * first, and workers share no flows: worker 0 alone serves the address.
 */
export function udpBinder(index: number, reuse: boolean): boolean {
  return reuse || index === 0;
}

/** A backend's health as a new worker starts from it: the figures' own view (core/stats.ts). */
export type HealthView = HealthFigures;

/** primary → worker */
export type ToWorker =
  | {
      readonly t: 'init';
      readonly index: number;
      readonly count: number;
      readonly config: Config;
      readonly generation: number;
      readonly operator: readonly (readonly [string, AdminState])[];
      readonly health: readonly (readonly [string, HealthView])[];
      readonly listen: readonly ListenSpec[];
      /** the session ticket key of every TLS context (a secret) */
      readonly ticketKey: Uint8Array;
    }
  | { readonly t: 'snapshot'; readonly config: Config; readonly generation: number; readonly operator: readonly (readonly [string, AdminState])[] }
  /** `name`: a backend's reference, service/name (a DNS parent's: its endpoints follow it); `keys`: the load keys it applies to */
  | { readonly t: 'admin'; readonly name: string; readonly keys: readonly string[]; readonly state: AdminState; readonly cut: boolean }
  | { readonly t: 'check'; readonly key: string; readonly healthy: boolean; readonly healthySince: number; readonly ok: boolean }
  /** an agent's down flag or weight percentage changed (a changed percentage: a 'snapshot' follows) */
  | { readonly t: 'agent'; readonly key: string; readonly down: boolean; readonly weightPercent: number | null }
  | { readonly t: 'prepare'; readonly id: number; readonly listen: ListenSpec }
  /** an address no service has any more stops accepting (its connections drain) */
  | { readonly t: 'close-address'; readonly address: string }
  | { readonly t: 'commit'; readonly id: number }
  | { readonly t: 'abort'; readonly id: number }
  | { readonly t: 'report'; readonly id: number }
  | { readonly t: 'close'; readonly id: number }
  /** the session ticket key changed (a rotation, a reload's key_file): new handshakes use it */
  | { readonly t: 'ticket-key'; readonly key: Uint8Array }
  /** SIGUSR1 reached the primary: open the access log file again */
  | { readonly t: 'reopen-log' }
  | { readonly t: 'drain'; readonly id: number; readonly timeoutMs: number };

/** worker → primary: answers carry the id of the request */
export type FromWorker =
  /** each listen address (as the config writes it) with the address bound */
  | { readonly t: 'listening'; readonly addresses: readonly (readonly [string, string])[] }
  | { readonly t: 'listen-failed'; readonly address: string; readonly reason: string }
  | { readonly t: 'answer'; readonly id: number; readonly error?: string; readonly report?: WorkerReport; readonly drained?: number; readonly cut?: number }
  /** a 'snapshot' of this generation is current here (an address no service has is closed before it) */
  | { readonly t: 'applied'; readonly generation: number }
  | { readonly t: 'event'; readonly kind: 'health'; readonly message: string };

function sumHist(list: readonly HistogramData[]): HistogramData {
  const counts: number[] = [];
  let sum = 0;
  let count = 0;
  for (const d of list) {
    d.counts.forEach((v, i) => (counts[i] = (counts[i] ?? 0) + v));
    sum += d.sum;
    count += d.count;
  }
  return { counts, sum, count };
}

function group<V>(list: readonly (readonly (readonly [string, V])[])[]): Map<string, V[]> {
  const m = new Map<string, V[]>();
  for (const entries of list) {
    for (const [k, v] of entries) {
      const a = m.get(k);
      if (a) a.push(v);
      else m.set(k, [v]);
    }
  }
  return m;
}

/** Several reports as one: counts add up, loads merge as in mergeLoadReports. */
export function mergeReports(list: readonly WorkerReport[]): WorkerReport {
  const loads = [...group(list.map((r) => r.loads))].map(([k, v]) => [k, mergeLoadReports(v)] as const);
  const counters = [...group(list.map((r) => r.counters))].map(
    ([k, v]) =>
      [
        k,
        v.reduce((a, c) => ({
          connections: a.connections + c.connections,
          connectErrors: a.connectErrors + c.connectErrors,
          bytesIn: a.bytesIn + c.bytesIn,
          bytesOut: a.bytesOut + c.bytesOut,
        })),
      ] as const,
  );
  const rejected = [...group(list.map((r) => r.traffic.rejected))].map(([k, v]) => [k, v.reduce((a, b) => a + b, 0)] as const);
  const serviceOpen = [...group(list.map((r) => r.serviceOpen))].map(([k, v]) => [k, v.reduce((a, b) => a + b, 0)] as const);
  const connect = [...group(list.map((r) => r.traffic.connect))].map(([k, v]) => [k, sumHist(v)] as const);
  const udp = [...group(list.map((r) => r.udp))].map(
    ([k, v]) => [k, v.reduce((a, f) => ({ in: a.in + f.in, out: a.out + f.out, dropped: a.dropped + f.dropped, flows: a.flows + f.flows }))] as const,
  );
  // the arrays, the dropped lines and the recent list merge as the control plane absorbs them
  const t = new TrafficFigures();
  t.absorb(list.map((r) => r.traffic));
  const { terminations, latency, logDropped, stdoutDropped, recent, handshakes, handshakeTimes } = t.report();
  return {
    open: list.reduce((n, r) => n + r.open, 0),
    serviceOpen,
    accepted: list.reduce((n, r) => n + r.accepted, 0),
    loads,
    counters,
    traffic: { rejected, connect, lifetimes: sumHist(list.map((r) => r.traffic.lifetimes)), terminations, latency, logDropped, stdoutDropped, recent, handshakes, handshakeTimes },
    udp,
  };
}

/**
 * What stays of a worker that ended: its counts (so the sums stay monotonic, as Prometheus
 * counters must), not its open connections, ejections or latency.
 */
export function retiredPart(r: WorkerReport): WorkerReport {
  return {
    ...r,
    open: 0,
    serviceOpen: [],
    loads: r.loads.map(([k, l]) => [k, { ...l, active: 0, ejectedUntil: 0, consecutiveFailures: 0, samples: 0, latencyMs: 0 }] as const),
    udp: r.udp.map(([k, f]) => [k, { ...f, flows: 0 }] as const),
  };
}

export const EMPTY_REPORT: WorkerReport = Object.freeze({
  open: 0,
  serviceOpen: [],
  accepted: 0,
  loads: [],
  counters: [],
  traffic: new TrafficFigures().report(),
  udp: [],
});
