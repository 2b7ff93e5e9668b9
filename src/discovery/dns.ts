// The DNS answers the backends are built from, kept fresh in the background: each name the config
// needs (core/endpoints.ts queryOf) is looked up at once, then again after its TTL clamped to
// [dns] min_ttl..max_ttl. A failed lookup keeps the last good answer and is reported (a warning,
// lemonade_dns_lookups_total{result="failure"}, /status); an answer that differs from the last
// calls onChange, and the App builds a new snapshot. Connections never wait here: they use the
// endpoints of the current snapshot, none before a name's first answer.
//
// SRV records carry no TTL in node:dns's answer: an SRV name is looked up again after the
// smallest TTL of its targets' addresses (clamped the same way).
//
// Nothing an answer holds can throw here or grow the process: each query resolves to its records
// or its error code, and core/dns-answer.ts turns them into at most [dns] max_endpoints addresses,
// a failed part (AAAA refused or timed out, one SRV target) keeping its share of the last answer,
// the balancer's own addresses refused; what it left out is reported when it changes.

import { lookup, promises as dnsPromises } from 'node:dns';
import { networkInterfaces } from 'node:os';
import type { Config } from '../config/schema';
import { formatHostPort, parseHostPort, type HostPort } from '../config/address';
import { srvTargetNames, takeAnswer, type AddressRecord, type AddressReplies, type Family, type OwnAddresses, type RawAnswer, type Reply, type SrvRecord } from '../core/dns-answer';
import { queryKey, queryOf, type Answers, type Query, type Target } from '../core/endpoints';
import type { Logger } from '../obs/logger';
import type { Metrics } from '../obs/metrics';

/** attempts per query (each bounded by [dns] timeout) */
const TRIES = 2;

type DnsSettings = Config['dns'];

interface Entry {
  readonly q: Query;
  readonly key: string;
  /** the ports the backends asking this name connect to (own addresses are refused on them) */
  ports: readonly number[];
  /** the last good answer (null before the first) */
  targets: readonly Target[] | null;
  lastSuccess: number;
  lastError: string | null;
  /** what the last answer left out or could not get (reported when it changes) */
  notes: readonly string[];
  /** failed lookups in a row */
  failures: number;
  timer: NodeJS.Timeout | null;
  dueAt: number;
  inflight: boolean;
  /** asked again while a lookup was in flight (other servers): looked up again once it ends */
  redo: boolean;
  /** a `lookup` name's TTL as the DNS last gave it (null: none known) */
  ttlHint: number | null;
}

/**
 * How names are looked up (nodeLookups: node:dns). Every call resolves, never rejects: a failed
 * query is a reply with its error code, so no answer can become an unhandled rejection.
 */
interface Lookups {
  /** the A and AAAA records [dns] family asks for, with their TTLs, through the [dns] servers */
  addresses(name: string): Promise<AddressReplies>;
  /** SRV records, through the [dns] servers */
  srv(name: string): Promise<Reply<SrvRecord>>;
  /** the system's lookup (getaddrinfo: /etc/hosts, then DNS), in its order */
  system(name: string): Promise<Reply<AddressRecord>>;
}

export interface DiscoveryDeps {
  readonly now: () => number;
  readonly logger: Logger;
  readonly metrics: Pick<Metrics, 'dnsLookups' | 'dnsLastSuccess'>;
  /** the addresses the balancer's listeners and admin API are bound to now (ownAddressesOf adds the config's) */
  readonly bound: () => readonly string[];
  /** an answer changed: build a new snapshot from answers() */
  readonly onChange: () => void;
  /** a line for the admin events list */
  readonly event: (message: string) => void;
}

/** One name as /status shows it. */
export interface DnsStatus {
  readonly query: string;
  readonly addresses: readonly string[] | null;
  readonly last_success: string | null;
  readonly last_error: string | null;
  readonly failures: number;
  readonly next_lookup: string | null;
  /** what the last answer left out (refused, past max_endpoints, a failed part), [] when nothing */
  readonly notes: readonly string[];
}

export class DnsDiscovery {
  private readonly entries = new Map<string, Entry>();
  private settings: DnsSettings | null = null;
  private lookups: Lookups | null = null;
  private stopped = false;
  private notifyQueued = false;
  /** own addresses and this host's interface addresses, as the last sync or recheck found them */
  private own: OwnAddresses = { addresses: [], local: [] };
  private ownSignature = '';
  private config: Config | null = null;
  /** waiting in settled() */
  private readonly waiters = new Set<() => void>();

  constructor(private readonly d: DiscoveryDeps) {}

  /** Follow the names `config` needs (at start and after each reload): new ones are looked up at once. */
  sync(config: Config): void {
    if (this.stopped) return;
    const s = config.dns;
    const prev = this.settings;
    const resolverChanged = prev === null || prev.timeoutMs !== s.timeoutMs || prev.servers.join() !== s.servers.join();
    this.settings = s;
    if (resolverChanged) this.lookups = nodeLookups(s);
    const wanted = new Map<string, { q: Query; ports: Set<number> }>();
    for (const svc of config.services) {
      for (const b of svc.backends) {
        const q = queryOf(b);
        if (q === null) continue;
        const key = queryKey(q);
        const w = wanted.get(key) ?? wanted.set(key, { q, ports: new Set() }).get(key)!;
        if (q.kind !== 'srv') w.ports.add(b.port);
      }
    }
    this.config = config;
    const ownChanged = this.refreshOwn();
    let dropped = false;
    for (const [key, e] of this.entries) {
      if (wanted.has(key)) continue;
      if (e.timer) clearTimeout(e.timer);
      this.entries.delete(key);
      this.d.metrics.dnsLastSuccess.remove({ query: key });
      dropped = true;
    }
    const askedChanged = prev !== null && (prev.family !== s.family || prev.maxEndpoints !== s.maxEndpoints);
    for (const [key, { q, ports }] of wanted) {
      const e = this.entries.get(key);
      const portList = [...ports].sort((a, b) => a - b);
      if (!e) {
        const fresh: Entry = { q, key, ports: portList, targets: null, lastSuccess: 0, lastError: null, notes: [], failures: 0, timer: null, dueAt: 0, inflight: false, redo: false, ttlHint: null };
        this.entries.set(key, fresh);
        this.run(fresh);
        continue;
      }
      const portsChanged = e.ports.join() !== portList.join();
      e.ports = portList;
      // other servers or record types, other own addresses or ports to check the answer against,
      // or a shorter max_ttl that brings the next lookup forward
      if (resolverChanged || askedChanged || ownChanged || portsChanged || (prev !== null && e.dueAt - this.d.now() > s.maxTtlMs)) this.run(e);
    }
    if (dropped) this.notify();
  }

  /**
   * Look every name up again now, against the own addresses as they are now: the start calls it
   * once its listeners are bound (a port 0 in the config is known only then).
   */
  recheck(): void {
    if (this.stopped || !this.refreshOwn()) return;
    for (const e of this.entries.values()) this.run(e);
  }

  /** Read the own addresses again; true when they changed. */
  private refreshOwn(): boolean {
    const local: string[] = [];
    try {
      for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) local.push(a.address);
    } catch {
      // no interface list (a sandbox): loopback and the exact addresses still count
    }
    const addresses = this.config === null ? [] : ownAddressesOf(this.config, this.d.bound());
    const signature = [...addresses.map((a) => formatHostPort(a)), '|', ...local].join(',');
    if (signature === this.ownSignature) return false;
    this.ownSignature = signature;
    this.own = { addresses, local };
    return true;
  }

  /** A lookup in the background; whatever goes wrong in it is logged, never thrown. */
  private run(e: Entry): void {
    this.lookup(e).catch((err: unknown) => {
      e.inflight = false;
      this.d.logger.error({ query: e.key, err: String(err) }, 'DNS lookup: unexpected error');
      if (!this.stopped && this.entries.get(e.key) === e && this.settings) this.schedule(e, this.settings.minTtlMs);
    });
  }

  /** The last good answer of every name that has one. */
  answers(): Answers {
    const out = new Map<string, readonly Target[]>();
    for (const [key, e] of this.entries) if (e.targets !== null) out.set(key, e.targets);
    return out;
  }

  status(): DnsStatus[] {
    return [...this.entries.values()].map((e) => ({
      query: e.key,
      addresses: e.targets === null ? null : e.targets.map(shownTarget),
      last_success: e.lastSuccess > 0 ? new Date(e.lastSuccess).toISOString() : null,
      last_error: e.lastError,
      failures: e.failures,
      next_lookup: e.timer ? new Date(e.dueAt).toISOString() : null,
      notes: e.notes,
    }));
  }

  /**
   * Resolves once every name has had its first lookup (answered or failed), or after `boundMs`:
   * the start waits for it, so that a balancer comes up with its endpoints when the DNS answers.
   */
  settled(boundMs: number): Promise<void> {
    if (this.isSettled()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, boundMs);
      t.unref();
      this.waiters.add(done);
    });
  }

  private wakeIfSettled(): void {
    if (this.waiters.size > 0 && this.isSettled()) for (const w of [...this.waiters]) w();
  }

  private isSettled(): boolean {
    for (const e of this.entries.values()) if (e.lastSuccess === 0 && e.failures === 0) return false;
    return true;
  }

  stop(): void {
    this.stopped = true;
    for (const w of [...this.waiters]) w();
    for (const e of this.entries.values()) if (e.timer) clearTimeout(e.timer);
    this.entries.clear();
  }

  private async lookup(e: Entry): Promise<void> {
    if (this.stopped) return;
    if (e.inflight) {
      e.redo = true;
      return;
    }
    e.inflight = true;
    if (e.timer) clearTimeout(e.timer);
    e.timer = null;
    const raw = await this.find(e);
    const s = this.settings!;
    const taken = takeAnswer(raw, { family: s.family, maxEndpoints: s.maxEndpoints, ports: e.ports, own: this.own, last: e.targets });
    e.inflight = false;
    if (this.stopped || this.entries.get(e.key) !== e) return;
    if (e.redo) {
      // the settings changed while this one ran: its answer stands until the new lookup's
      e.redo = false;
      setImmediate(() => this.run(e));
    }
    const now = this.d.now();
    this.noted(e, taken.notes);
    if (taken.targets === null) {
      const error = taken.error;
      e.failures++;
      e.lastError = error;
      this.d.metrics.dnsLookups.inc({ result: 'failure' });
      if (e.failures === 1) {
        const kept = e.targets === null ? 'no endpoints yet' : `keeping the last answer (${e.targets.length} addresses)`;
        this.d.logger.warn({ query: e.key, error, kept: e.targets?.length ?? null }, `DNS lookup failed: ${kept}`);
        this.d.event(`${e.key}: lookup failed (${error}); ${kept}`);
      }
      this.schedule(e, s.minTtlMs);
      this.wakeIfSettled();
      return;
    }
    const targets = taken.targets;
    this.d.metrics.dnsLookups.inc({ result: taken.notes.length > 0 ? 'partial' : targets.length === 0 ? 'empty' : 'success' });
    this.d.metrics.dnsLastSuccess.set({ query: e.key }, now / 1000);
    if (e.failures > 0) {
      this.d.logger.info({ query: e.key, failures: e.failures }, 'DNS lookup answers again');
      this.d.event(`${e.key}: answers again after ${e.failures} failed lookups`);
    }
    e.failures = 0;
    e.lastError = null;
    e.lastSuccess = now;
    // a part that failed is asked again soon; what answered holds meanwhile
    const ttlMs = taken.partial || taken.ttl === null ? s.minTtlMs : Math.min(s.maxTtlMs, Math.max(s.minTtlMs, taken.ttl * 1000));
    this.schedule(e, ttlMs);
    if (e.targets !== null && sameTargets(e.targets, targets)) return;
    const before = e.targets;
    e.targets = Object.freeze(targets.map((t) => Object.freeze(t)));
    if (targets.length === 0) this.d.logger.warn({ query: e.key }, 'DNS: the name has no addresses now; its endpoints drain');
    if (before !== null) {
      const shown = e.targets.map(shownTarget).join(', ') || 'none';
      this.d.logger.info({ query: e.key, addresses: shown }, 'DNS answer changed');
      this.d.event(`${e.key}: now ${shown}`);
    }
    this.notify();
  }

  /** What the answer left out, reported when it differs from the last lookup's (not at every lookup). */
  private noted(e: Entry, notes: readonly string[]): void {
    if (notes.join('\n') === e.notes.join('\n')) return;
    e.notes = Object.freeze([...notes]);
    if (notes.length === 0) return;
    this.d.logger.warn({ query: e.key, notes }, 'DNS answer: records not used');
    for (const n of notes) this.d.event(`${e.key}: ${n}`);
  }

  /** Ask what the name's kind needs; every part's failure is in the answer, nothing throws. */
  private async find(e: Entry): Promise<RawAnswer> {
    const l = this.lookups!;
    const q = e.q;
    switch (q.kind) {
      case 'dns':
        return { kind: 'dns', addresses: await l.addresses(q.name) };
      case 'lookup': {
        // the addresses a connect by name would use; the DNS says how long they hold, and is
        // not waited for: its TTL sets the lookup after next (a name from /etc/hosts alone has
        // none: looked up again after min_ttl)
        l.addresses(q.name).then(
          (f) => (e.ttlHint = ttlOf(f)),
          () => (e.ttlHint = null),
        );
        const system = await l.system(q.name);
        return { kind: 'lookup', system, ttl: e.ttlHint };
      }
      case 'srv': {
        const srv = await l.srv(q.name);
        // the targets looked up are bounded before any is asked
        const names = srvTargetNames(srv, this.settings!.maxEndpoints);
        const replies = await Promise.all(names.map((n) => l.addresses(n)));
        return { kind: 'srv', srv, targets: new Map(names.map((n, i) => [n, replies[i]!])) };
      }
    }
  }

  private schedule(e: Entry, ms: number): void {
    if (e.timer) clearTimeout(e.timer);
    e.dueAt = this.d.now() + ms;
    e.timer = setTimeout(() => this.run(e), ms);
    e.timer.unref();
  }

  /** One onChange for the answers that arrive together (several names looked up at once). */
  private notify(): void {
    if (this.notifyQueued) return;
    this.notifyQueued = true;
    setImmediate(() => {
      this.notifyQueued = false;
      if (!this.stopped) this.d.onChange();
      this.wakeIfSettled();
    });
  }
}

/** An address as /status and the events show it: IP, or IP:PORT for an SRV target. */
function shownTarget(t: Target): string {
  return t.port === undefined ? t.ip : formatHostPort({ host: t.ip, port: t.port });
}

function sameTargets(a: readonly Target[], b: readonly Target[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.ip !== y.ip || x.port !== y.port || x.weight !== y.weight || x.priority !== y.priority || x.from !== y.from) return false;
  }
  return true;
}

/** The balancer's own addresses: every listen address of the config and `bound` (as "ip:port"), port 0 left out. */
export function ownAddressesOf(config: Config, bound: readonly string[]): HostPort[] {
  const out: HostPort[] = [];
  for (const svc of config.services) out.push(svc.listen);
  if (config.admin.listen !== null) out.push(config.admin.listen);
  for (const b of bound) {
    const hp = b === '' ? null : parseHostPort(b, true);
    if (hp !== null && typeof hp !== 'string') out.push(hp);
  }
  return out.filter((a) => a.port > 0);
}

/** The smallest TTL of a name's replies, seconds (null: none). */
function ttlOf(r: AddressReplies): number | null {
  let ttl: number | null = null;
  for (const reply of [r.v4, r.v6]) {
    if (reply === undefined || 'error' in reply) continue;
    for (const a of reply.records) if (a.ttl !== undefined) ttl = ttl === null ? a.ttl : Math.min(ttl, a.ttl);
  }
  return ttl;
}

/** A promise as a reply: its records, or its error's code. Never rejects. */
function settle<T>(p: Promise<readonly T[]>): Promise<Reply<T>> {
  return p.then(
    (records) => ({ records }),
    (e: NodeJS.ErrnoException) => ({ error: e?.code ?? String(e?.message ?? e) }),
  );
}

/**
 * node:dns: a Resolver on the [dns] servers (the system's when none) and getaddrinfo. With both
 * families asked, the one that answers first waits for the other at most one `timeout` more: a
 * server that drops AAAA queries delays the A answer by that, not by every retry.
 */
function nodeLookups(s: DnsSettings): Lookups {
  const r = new dnsPromises.Resolver({ timeout: s.timeoutMs, tries: TRIES });
  if (s.servers.length > 0) r.setServers([...s.servers]);
  const family: Family = s.family;
  const grace = s.timeoutMs;
  return {
    async addresses(name) {
      const v4 = family === 'ipv6' ? null : settle(r.resolve4(name, { ttl: true }));
      const v6 = family === 'ipv4' ? null : settle(r.resolve6(name, { ttl: true }));
      if (v4 === null) return { v6: await v6! };
      if (v6 === null) return { v4: await v4 };
      const late: Reply<AddressRecord> = { error: 'ETIMEOUT' };
      const first = await Promise.race([v4.then(() => 4), v6.then(() => 6)]);
      let t: NodeJS.Timeout | undefined;
      const bound = new Promise<Reply<AddressRecord>>((res) => {
        t = setTimeout(() => res(late), grace);
        t.unref();
      });
      const [a, b] = first === 4 ? [await v4, await Promise.race([v6, bound])] : [await Promise.race([v4, bound]), await v6];
      clearTimeout(t);
      return { v4: a, v6: b };
    },
    srv: (name) => settle(r.resolveSrv(name)),
    system: (name) =>
      new Promise((resolve) =>
        lookup(name, { all: true, family: family === 'ipv4' ? 4 : family === 'ipv6' ? 6 : 0 }, (err, found) =>
          resolve(err ? { error: err.code ?? err.message } : { records: found.map((a) => ({ address: a.address })) }),
        ),
      ),
  };
}
