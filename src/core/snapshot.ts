// An immutable snapshot built from a validated Config: every service with its listener settings,
// its backends with their load figures, its client ACL and its picker, and the route table of
// every listen address (./sni-routes.ts). The data plane reads the current snapshot once per
// accepted connection and keeps the service it routed to; a reload replaces the whole snapshot
// with one assignment. A pick writes none of it: the snapshot, its services and backends are
// frozen; the figure a pick writes (the slow-start weight) is the load table's, and a strategy's
// position is its own.

import { SCHEMA, type BackendConfig, type Config, type ServiceConfig } from '../config/schema';
import { cidrContains, parseIp, type Cidr } from '../config/address';
import { backendKey, backendRef, type AdminState } from './backend';
import { parentOf } from './endpoints';
import { ipFamily } from './cached-lookup';
import type { BackendCounters, BackendLoad, LoadTable } from './stats';
import type { Candidate, Strategy, StrategyFactory } from './strategy';
import { routesByAddress, type AddressRoutes, type Routable } from './sni-routes';
import type { TlsOriginator, TlsTerminator } from './tls';

/** The largest weight a backend may have, also as scaled by an agent. */
const MAX_WEIGHT = SCHEMA.backends.weight.max;

/** Lowest share of its weight a slow-starting backend gets. */
const SLOW_START_FLOOR = 0.05;

export class SnapshotBackend implements Candidate {
  readonly id: number;
  readonly name: string;
  /** service/name: the key of its counters and operator state */
  readonly ref: string;
  /** an endpoint found by DNS: service/PARENT, whose operator state it follows (null: a configured backend) */
  readonly parentRef: string | null;
  /** the configured weight scaled by the agent's percentage as this snapshot was built (`NN%`) */
  readonly baseWeight: number;
  /** this process's share of the backend's max_connections (Infinity = unlimited) */
  readonly cap: number;
  /** the IP family of the configured host (4 or 6), 0 for a host name: read at every connect */
  readonly family: number;
  constructor(
    readonly service: string,
    readonly spec: BackendConfig,
    readonly load: BackendLoad,
    readonly counters: BackendCounters,
    part: Partition,
  ) {
    this.id = spec.id;
    this.name = spec.name;
    this.ref = backendRef(service, spec.name);
    const parent = parentOf(spec);
    this.parentRef = parent === undefined ? null : backendRef(service, parent);
    const pct = load.agentWeightPercent;
    this.baseWeight = pct === null ? spec.weight : Math.min(MAX_WEIGHT, (spec.weight * pct) / 100);
    this.cap = spec.maxConnections === 0 ? Infinity : shareOf(spec.maxConnections, part);
    this.family = ipFamily(spec.host);
    Object.freeze(this);
  }

  /**
   * The weight the strategy compares at this pick: baseWeight with slow start's ramp applied. The
   * picker writes it to the load figures (beside the snapshot), never to the snapshot itself.
   */
  get weight(): number {
    return this.load.pickWeight;
  }
}

/**
 * The usable backends of the pick in progress. Picks are synchronous and never nested, so one
 * array serves every service of every snapshot, and no snapshot holds what a pick changes.
 */
const CANDIDATES: SnapshotBackend[] = [];

/** Which of several data-plane processes this snapshot serves: index from 0, of count. */
export interface Partition {
  readonly index: number;
  readonly count: number;
}

export const WHOLE: Partition = Object.freeze({ index: 0, count: 1 });

/**
 * A cap split between data-plane processes so that the shares add up to the cap exactly:
 * floor(cap / count), one more for the first cap % count processes. The cap is never exceeded;
 * the cost is that a process may refuse while another still has room (see README, workers).
 */
export function shareOf(cap: number, part: Partition): number {
  if (part.count <= 1) return cap;
  return Math.floor(cap / part.count) + (part.index < cap % part.count ? 1 : 0);
}

export interface SnapshotEnv {
  readonly now: () => number;
  readonly random: () => number;
  readonly strategies: Readonly<Record<string, StrategyFactory>>;
  /** the data-plane process this snapshot is for (default: the only one) */
  readonly part?: Partition;
  /** a service's TLS termination, built from its tls table (absent: no service terminates) */
  readonly tls?: (svc: ServiceConfig) => TlsTerminator | null;
  /** a service's TLS to its backends, built from its backend_tls table (absent: no service originates) */
  readonly backendTls?: (svc: ServiceConfig) => TlsOriginator | null;
}

/** One service of a snapshot: its settings, backends and picker. */
export class ServiceSnapshot implements Routable {
  readonly name: string;
  readonly listenAddress: string;
  /** the TLS server names routed to it on its address (empty: the default route) */
  readonly sni: readonly string[];
  /** consistent_hash keyed by the TLS server name: the listener reads the ClientHello for it */
  readonly wantsServerName: boolean;
  readonly inspectTimeoutMs: number;
  /** its TLS termination; null: the bytes are relayed as they come */
  readonly tls: TlsTerminator | null;
  /** its TLS to its backends; null: plaintext */
  readonly backendTls: TlsOriginator | null;
  /** neither terminates nor originates TLS: the listener's own transport relays it (the one field read per connection) */
  readonly plain: boolean;
  readonly proxy: ServiceConfig['proxy'];
  readonly health: ServiceConfig['health'];
  readonly backends: readonly SnapshotBackend[];
  private readonly primaries: readonly SnapshotBackend[];
  private readonly backups: readonly SnapshotBackend[];
  private readonly strategy: Strategy;
  /** the backups' picker: the same as the primaries' unless the strategy is keyed (one table per pool) */
  private readonly backupStrategy: Strategy;
  /** the strategy wants the connection's key: the client's IP (the listener reads the peer address), or the server name (wantsServerName) */
  readonly keyed: boolean;
  /** this process's share of the service's max_connections (Infinity: only the global cap) */
  readonly maxConnections: number;

  /**
   * `prev`: the same service in the snapshot this one replaces. With the same algorithm its
   * strategy carries on (the round-robin position, smooth WRR's currents, adaptive's memory), so
   * frequent reloads do not restart the sequence at the first backend.
   * A keyed strategy (consistent_hash) is built anew instead: its table is made of this
   * snapshot's backends.
   */
  constructor(
    readonly svc: ServiceConfig,
    loads: LoadTable,
    private readonly env: SnapshotEnv,
    prev?: ServiceSnapshot,
  ) {
    const part = env.part ?? WHOLE;
    this.name = svc.name;
    this.listenAddress = svc.listenAddress;
    this.sni = svc.sni;
    this.inspectTimeoutMs = svc.proxy.inspectTimeoutMs;
    this.tls = svc.tls !== null && env.tls !== undefined ? env.tls(svc) : null;
    this.backendTls = svc.backendTls !== null && env.backendTls !== undefined ? env.backendTls(svc) : null;
    this.plain = this.tls === null && this.backendTls === null;
    this.proxy = svc.proxy;
    this.health = svc.health;
    this.maxConnections = svc.maxConnections === 0 ? Infinity : shareOf(svc.maxConnections, part);
    this.backends = Object.freeze(
      svc.backends.map((b) => new SnapshotBackend(svc.name, b, loads.get(backendKey(svc.name, b), backendRef(svc.name, b.name)), loads.countersFor(backendRef(svc.name, b.name)), part)),
    );
    this.primaries = this.backends.filter((b) => !b.spec.backup);
    this.backups = this.backends.filter((b) => b.spec.backup);
    // a keyed strategy (consistent_hash) builds its table from the pool here, with the snapshot:
    // never carried over, never built on the pick path
    const factory = env.strategies[svc.algorithm]!;
    const make = (pool: readonly SnapshotBackend[]): Strategy =>
      factory({ random: env.random, pool: pool.map((b) => ({ id: b.id, address: b.spec.address, weight: b.baseWeight })), hashBalanceFactor: svc.hashBalanceFactor });
    const fresh = prev !== undefined && prev.svc.algorithm === svc.algorithm && prev.keyed !== true ? prev.strategy : make(this.primaries);
    this.strategy = fresh;
    this.keyed = fresh.keyed === true;
    this.wantsServerName = this.keyed && svc.hashKey === 'sni';
    this.backupStrategy = this.keyed ? make(this.backups) : fresh;
    Object.freeze(this);
  }

  /** Is this client address allowed by the service's allow/deny? */
  allows(remoteAddress: string | undefined): boolean {
    const { allow, deny } = this.proxy;
    if (allow.length === 0 && deny.length === 0) return true;
    const ip = remoteAddress ? parseIp(remoteAddress) : null;
    if (!ip) return false;
    if (allow.length > 0 && !allow.some((c: Cidr) => cidrContains(c, ip))) return false;
    return !deny.some((c: Cidr) => cidrContains(c, ip));
  }

  /**
   * Pick a backend for a new connection, skipping those in `avoid` (already tried). Primaries
   * first; backups only when no primary is usable. undefined = no usable backend.
   */
  pick(avoid: readonly BackendLoad[] = [], key?: string): SnapshotBackend | undefined {
    return this.pickFrom(this.primaries, avoid, this.strategy, key) ?? this.pickFrom(this.backups, avoid, this.backupStrategy, key);
  }

  /** A backend's share of its pool's hash table, 0..1 (undefined when the strategy has no table). */
  hashShare(id: number): number | undefined {
    if (!this.keyed) return undefined;
    const b = this.backends.find((x) => x.id === id);
    if (!b) return undefined;
    return (b.spec.backup ? this.backupStrategy : this.strategy).share?.(id);
  }

  /**
   * Backends that can take connections, for /health: healthy, enabled, weight > 0. A backend at
   * its max_connections still counts (being full is load, not failure: a balancer should not be
   * failed over because its backends are busy).
   */
  usableCount(): number {
    let n = 0;
    for (const b of this.backends) if (b.baseWeight > 0 && b.load.isUsable()) n++;
    return n;
  }

  private usable(b: SnapshotBackend, avoid: readonly BackendLoad[]): boolean {
    return b.baseWeight > 0 && b.load.isUsable() && b.load.active < b.cap && !avoid.includes(b.load);
  }

  private pickFrom(list: readonly SnapshotBackend[], avoid: readonly BackendLoad[], strategy: Strategy, key: string | undefined): SnapshotBackend | undefined {
    const c = CANDIDATES;
    c.length = 0;
    const slow = this.health.slowStartMs;
    const now = slow > 0 ? this.env.now() : 0;
    for (const b of list) {
      if (!this.usable(b, avoid)) continue;
      if (slow > 0 && b.load.healthySince > 0) {
        const f = Math.min(1, Math.max(SLOW_START_FLOOR, (now - b.load.healthySince) / slow));
        b.load.pickWeight = b.baseWeight * f;
      } else {
        b.load.pickWeight = b.baseWeight;
      }
      c.push(b);
    }
    if (c.length === 0) return undefined;
    return strategy.pick(c, key) as SnapshotBackend | undefined;
  }
}

export class Snapshot {
  readonly services: readonly ServiceSnapshot[];
  /** every service's backends */
  readonly backends: readonly SnapshotBackend[];
  /** this process's share of [proxy] max_connections, the cap over all services */
  readonly maxConnections: number;
  private readonly byName: ReadonlyMap<string, ServiceSnapshot>;
  /** each listen address's route table, by the address as the config writes it */
  private readonly byAddress: ReadonlyMap<string, AddressRoutes<ServiceSnapshot>>;

  /** `prev`: the snapshot this one replaces (each service's strategy carries on, see ServiceSnapshot). */
  constructor(
    readonly config: Config,
    readonly generation: number,
    loads: LoadTable,
    env: SnapshotEnv,
    prev?: Snapshot,
  ) {
    this.maxConnections = shareOf(config.proxy.maxConnections, env.part ?? WHOLE);
    this.services = Object.freeze(config.services.map((svc) => new ServiceSnapshot(svc, loads, env, prev?.service(svc.name))));
    this.byName = new Map(this.services.map((s) => [s.name, s]));
    this.byAddress = routesByAddress(this.services);
    this.backends = Object.freeze(this.services.flatMap((s) => s.backends));
    Object.freeze(this);
  }

  service(name: string): ServiceSnapshot | undefined {
    return this.byName.get(name);
  }

  /** The route table of a listen address (as the config writes it); undefined when no service has it. */
  routes(address: string): AddressRoutes<ServiceSnapshot> | undefined {
    return this.byAddress.get(address);
  }

  /** The listen addresses, as the config writes them, each once. */
  listenAddresses(): IterableIterator<string> {
    return this.byAddress.keys();
  }
}

/**
 * The snapshot of a config whose backends are all live again, each with the operator's state
 * (drain and disable are kept across reloads by service and name; an endpoint without its own
 * takes its parent's, so an action on the parent also holds for endpoints that appear later)
 * and, where the service runs agent checks, its agent's down flag and weight.
 */
export function liveSnapshot(
  config: Config,
  generation: number,
  loads: LoadTable,
  env: SnapshotEnv,
  operator: ReadonlyMap<string, AdminState>,
  prev?: Snapshot,
): Snapshot {
  // a service without agent checks (any more) forgets what its agents said: down and weight
  for (const svc of config.services) {
    if (svc.health.agentPort === 0) for (const b of svc.backends) loads.peek(backendKey(svc.name, b))?.forgetAgent();
  }
  const snap = new Snapshot(config, generation, loads, env, prev);
  for (const b of snap.backends) {
    b.load.removed = false;
    b.load.admin = operator.get(b.ref) ?? (b.parentRef !== null ? operator.get(b.parentRef) : undefined) ?? 'enabled';
  }
  return snap;
}

/**
 * After `next` replaced `old`: the backends `next` no longer has are marked removed (they only
 * drain). Returns the keys `next` has, and the removed backends with connections still open.
 */
export function retire(old: Snapshot, next: Snapshot): { live: Set<string>; draining: Map<string, { service: string; spec: BackendConfig }> } {
  const live = new Set(next.backends.map((b) => b.load.key));
  const draining = new Map<string, { service: string; spec: BackendConfig }>();
  for (const b of old.backends) {
    if (live.has(b.load.key)) continue;
    b.load.removed = true;
    if (b.load.active > 0) draining.set(b.load.key, { service: b.service, spec: b.spec });
  }
  return { live, draining };
}
