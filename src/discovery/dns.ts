// The DNS answers the backends are built from, kept fresh in the background: each name the config
// needs (core/endpoints.ts queryOf) is looked up at once, then again after its TTL clamped to
// [dns] min_ttl..max_ttl. A failed lookup keeps the last good answer and is reported (a warning,
// lemonade_dns_lookups_total{result="failure"}, /status); an answer that differs from the last
// calls onChange, and the App builds a new snapshot. Connections never wait here: they use the
// endpoints of the current snapshot, none before a name's first answer.
//
// SRV records carry no TTL in node:dns's answer: an SRV name is looked up again after the
// smallest TTL of its targets' addresses (clamped the same way).

import { lookup, promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import type { Config } from '../config/schema';
import { formatHostPort } from '../core/address';
import { queryKey, queryOf, type Answers, type Query, type Target } from '../core/endpoints';
import type { Logger } from '../obs/logger';
import type { Metrics } from '../obs/metrics';

/** node:dns codes that say the name has no such records: an answer (empty), not a failure. */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);
/** attempts per query (each bounded by [dns] timeout) */
const TRIES = 2;

type DnsSettings = Config['dns'];

interface Entry {
  readonly q: Query;
  readonly key: string;
  /** the last good answer (null before the first) */
  targets: readonly Target[] | null;
  lastSuccess: number;
  lastError: string | null;
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

/** What one lookup found: the addresses and the TTL to refresh after (seconds; null = none given). */
interface Found {
  readonly targets: Target[];
  readonly ttl: number | null;
}

/** How names are looked up (nodeLookups: node:dns). */
interface Lookups {
  /** A and AAAA records with their TTLs, through the [dns] servers */
  addresses(name: string): Promise<Found>;
  /** SRV records, through the [dns] servers */
  srv(name: string): Promise<{ name: string; port: number; weight: number; priority: number }[]>;
  /** the system's lookup (getaddrinfo: /etc/hosts, then DNS), in its order */
  system(name: string): Promise<string[]>;
}

export interface DiscoveryDeps {
  readonly now: () => number;
  readonly logger: Logger;
  readonly metrics: Pick<Metrics, 'dnsLookups' | 'dnsLastSuccess'>;
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
}

export class DnsDiscovery {
  private readonly entries = new Map<string, Entry>();
  private settings: DnsSettings | null = null;
  private lookups: Lookups | null = null;
  private stopped = false;
  private notifyQueued = false;
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
    const wanted = new Map<string, Query>();
    for (const svc of config.services) {
      for (const b of svc.backends) {
        const q = queryOf(b);
        if (q !== null) wanted.set(queryKey(q), q);
      }
    }
    let dropped = false;
    for (const [key, e] of this.entries) {
      if (wanted.has(key)) continue;
      if (e.timer) clearTimeout(e.timer);
      this.entries.delete(key);
      this.d.metrics.dnsLastSuccess.remove({ query: key });
      dropped = true;
    }
    for (const [key, q] of wanted) {
      const e = this.entries.get(key);
      if (!e) {
        const fresh: Entry = { q, key, targets: null, lastSuccess: 0, lastError: null, failures: 0, timer: null, dueAt: 0, inflight: false, redo: false, ttlHint: null };
        this.entries.set(key, fresh);
        void this.lookup(fresh);
      } else if (resolverChanged || (prev !== null && e.dueAt - this.d.now() > s.maxTtlMs)) {
        // other servers answer now, or a shorter max_ttl brings the next lookup forward
        void this.lookup(e);
      }
    }
    if (dropped) this.notify();
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
    let found: Found | null = null;
    let error: string | null = null;
    try {
      found = await this.find(e);
    } catch (err) {
      const x = err as NodeJS.ErrnoException & { hostname?: string };
      error = x.code ? `${x.code}${x.hostname ? ` (${x.hostname})` : ''}` : String(x.message ?? x);
    }
    e.inflight = false;
    if (this.stopped || this.entries.get(e.key) !== e) return;
    if (e.redo) {
      // the settings changed while this one ran: its answer stands until the new lookup's
      e.redo = false;
      setImmediate(() => void this.lookup(e));
    }
    const s = this.settings!;
    const now = this.d.now();
    if (found === null) {
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
    this.d.metrics.dnsLookups.inc({ result: found.targets.length === 0 ? 'empty' : 'success' });
    this.d.metrics.dnsLastSuccess.set({ query: e.key }, now / 1000);
    if (e.failures > 0) {
      this.d.logger.info({ query: e.key, failures: e.failures }, 'DNS lookup answers again');
      this.d.event(`${e.key}: answers again after ${e.failures} failed lookups`);
    }
    e.failures = 0;
    e.lastError = null;
    e.lastSuccess = now;
    const ttlMs = found.ttl === null ? s.minTtlMs : Math.min(s.maxTtlMs, Math.max(s.minTtlMs, found.ttl * 1000));
    this.schedule(e, ttlMs);
    if (e.targets !== null && sameTargets(e.targets, found.targets)) return;
    const before = e.targets;
    e.targets = Object.freeze(found.targets.map((t) => Object.freeze(t)));
    if (found.targets.length === 0) this.d.logger.warn({ query: e.key }, 'DNS: the name has no addresses now; its endpoints drain');
    if (before !== null) {
      const shown = e.targets.map(shownTarget).join(', ') || 'none';
      this.d.logger.info({ query: e.key, addresses: shown }, 'DNS answer changed');
      this.d.event(`${e.key}: now ${shown}`);
    }
    this.notify();
  }

  private async find(e: Entry): Promise<Found> {
    const l = this.lookups!;
    const q = e.q;
    switch (q.kind) {
      case 'dns':
        return l.addresses(q.name);
      case 'lookup': {
        // the addresses a connect by name would use; the DNS says how long they hold, and is
        // not waited for: its TTL sets the lookup after next (a name from /etc/hosts alone has
        // none: looked up again after min_ttl)
        void l.addresses(q.name).then(
          (f) => (e.ttlHint = f.ttl),
          () => (e.ttlHint = null),
        );
        const ips = await l.system(q.name);
        return { targets: ips.map((ip) => ({ ip })), ttl: e.ttlHint };
      }
      case 'srv': {
        const records = await l.srv(q.name).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== undefined && NO_RECORDS.has(e.code)) return [];
          throw e;
        });
        let lowest = Infinity;
        for (const r of records) lowest = Math.min(lowest, r.priority);
        // "." as the target: the service is decidedly not offered there (RFC 2782)
        const used = records.filter((r) => r.priority === lowest && r.name !== '' && r.name !== '.');
        const byTarget = new Map<string, Promise<Found>>();
        for (const r of used) {
          if (!byTarget.has(r.name)) byTarget.set(r.name, isIP(r.name) !== 0 ? Promise.resolve({ targets: [{ ip: r.name }], ttl: null }) : l.addresses(r.name));
        }
        const found = new Map<string, Found>();
        for (const [name, p] of byTarget) found.set(name, await p);
        let ttl: number | null = null;
        for (const f of found.values()) if (f.ttl !== null) ttl = ttl === null ? f.ttl : Math.min(ttl, f.ttl);
        const targets = used.flatMap((r) => found.get(r.name)!.targets.map((t) => ({ ip: t.ip, port: r.port, weight: r.weight, priority: r.priority })));
        return { targets: sortTargets(targets), ttl };
      }
    }
  }

  private schedule(e: Entry, ms: number): void {
    if (e.timer) clearTimeout(e.timer);
    e.dueAt = this.d.now() + ms;
    e.timer = setTimeout(() => void this.lookup(e), ms);
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

function sortTargets(list: Target[]): Target[] {
  const k = (t: Target): string => `${t.ip}|${t.port ?? ''}|${t.weight ?? ''}`;
  return list.sort((a, b) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0));
}

function sameTargets(a: readonly Target[], b: readonly Target[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.ip !== y.ip || x.port !== y.port || x.weight !== y.weight || x.priority !== y.priority) return false;
  }
  return true;
}

/** node:dns: a Resolver on the [dns] servers (the system's when none) and getaddrinfo. */
function nodeLookups(s: DnsSettings): Lookups {
  const r = new dnsPromises.Resolver({ timeout: s.timeoutMs, tries: TRIES });
  if (s.servers.length > 0) r.setServers([...s.servers]);
  const family = (p: Promise<{ address: string; ttl: number }[]>): Promise<{ address: string; ttl: number }[]> =>
    p.catch((e: NodeJS.ErrnoException) => {
      if (e.code !== undefined && NO_RECORDS.has(e.code)) return [];
      throw e;
    });
  return {
    async addresses(name) {
      const [v4, v6] = await Promise.all([family(r.resolve4(name, { ttl: true })), family(r.resolve6(name, { ttl: true }))]);
      const all = [...v4, ...v6];
      let ttl: number | null = null;
      for (const a of all) ttl = ttl === null ? a.ttl : Math.min(ttl, a.ttl);
      return { targets: sortTargets(all.map((a) => ({ ip: a.address }))), ttl };
    },
    srv: (name) => r.resolveSrv(name),
    system: (name) =>
      new Promise((resolve, reject) =>
        lookup(name, { all: true }, (err, found) => (err ? reject(err) : resolve(found.map((a) => a.address)))),
      ),
  };
}
