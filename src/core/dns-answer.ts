// What the resolver said about one backend name, turned into the addresses its endpoints are made
// of: the step between the bytes of a DNS answer and the snapshot, bounded whatever the answer.
// A failed part (the AAAA query, one SRV target) keeps its share of the last answer; a record
// that cannot be used (port 0, a bad address, the balancer's own address, past max_endpoints) is
// left out and said in a note. Pure: discovery/dns.ts asks the questions and reports the notes.

import { formatHostPort, parseIp, type HostPort } from '../config/address';
import type { Target } from './endpoints';

export type Family = 'any' | 'ipv4' | 'ipv6';

/** The resolver's reply to one question: its records, or the code it failed with. */
export type Reply<T> = { readonly records: readonly T[] } | { readonly error: string };

export interface AddressRecord {
  readonly address: string;
  /** seconds (absent: the system's lookup gives none) */
  readonly ttl?: number;
}

export interface SrvRecord {
  readonly name: string;
  readonly port: number;
  readonly weight: number;
  readonly priority: number;
}

/** One name's A and AAAA replies, as asked ([dns] family: a family not asked is absent). */
export interface AddressReplies {
  readonly v4?: Reply<AddressRecord>;
  readonly v6?: Reply<AddressRecord>;
}

/** Everything one lookup got: `dns`, a name's A/AAAA; `srv`, the SRV records and their targets' addresses; `lookup`, the system's lookup. */
export type RawAnswer =
  | { readonly kind: 'dns'; readonly addresses: AddressReplies }
  | { readonly kind: 'lookup'; readonly system: Reply<AddressRecord>; readonly ttl: number | null }
  | { readonly kind: 'srv'; readonly srv: Reply<SrvRecord>; readonly targets: ReadonlyMap<string, AddressReplies> };

/** The balancer's own listen and admin addresses; `local`: this host's interface addresses (a wildcard listener is reached at each). */
export interface OwnAddresses {
  readonly addresses: readonly HostPort[];
  readonly local: readonly string[];
}

export interface AnswerContext {
  readonly family: Family;
  readonly maxEndpoints: number;
  /** the ports the backends asking a `dns` or `lookup` name connect to (SRV records carry theirs) */
  readonly ports: readonly number[];
  readonly own: OwnAddresses;
  /** the last answer taken, null before the first: a failed part keeps its share of it */
  readonly last: readonly Target[] | null;
}

export interface Taken {
  /** the addresses to use, at most maxEndpoints; null: the lookup failed as a whole (the last answer stays) */
  readonly targets: Target[] | null;
  /** the smallest TTL of the records used, seconds; null when none gave one */
  readonly ttl: number | null;
  /** why the lookup failed (targets null) */
  readonly error: string | null;
  /** a part failed and kept its share of the last answer (looked up again soon) */
  readonly partial: boolean;
  /** what was failed, refused or left out, one short line each, at most MAX_NOTES */
  readonly notes: readonly string[];
}

/** node:dns codes that say the name has no such records: an answer (empty), not a failure. */
export const NO_RECORDS: ReadonlySet<string> = new Set(['ENODATA', 'ENOTFOUND']);
/** lines of notes per lookup, and names shown per line */
export const MAX_NOTES = 8;
const SHOWN = 4;
const SHOWN_CHARS = 80;
/** SRV weights and priorities are 16-bit */
const U16 = 65535;

const wants = (family: Family): { v4: boolean; v6: boolean } => ({ v4: family !== 'ipv6', v6: family !== 'ipv4' });

/** A name or code as a note shows it: bounded, printable. */
function shown(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > SHOWN_CHARS ? `${clean.slice(0, SHOWN_CHARS)}…` : clean;
}

/** A few of the items, sorted (the same answer always reads the same), and how many more. */
function listed(items: readonly string[]): string {
  const head = [...items].sort().slice(0, SHOWN).map(shown).join(', ');
  return items.length > SHOWN ? `${head} and ${items.length - SHOWN} more` : head;
}

/** 32 hex digits of an address's 16 bytes (IPv4 as IPv4-mapped), or null for no IP address. */
function ipKey(ip: string): string | null {
  const p = parseIp(ip);
  if (p === null) return null;
  let k = '';
  for (const b of p.bytes) k += (b < 16 ? '0' : '') + b.toString(16);
  return k;
}

const V4_MAPPED = '00000000000000000000ffff';
const isV4Key = (k: string): boolean => k.startsWith(V4_MAPPED);
const LOOPBACK6 = '00000000000000000000000000000001';
const ANY6 = '00000000000000000000000000000000';
const ANY4 = `${V4_MAPPED}00000000`;

/** An address that connects to this host: loopback, or unspecified (Linux connects 0.0.0.0 and :: to the host itself). */
function isSelf(k: string): boolean {
  return k === LOOPBACK6 || k === ANY6 || k === ANY4 || (isV4Key(k) && k.slice(24, 26) === '7f');
}

/** Tells whether IP:PORT reaches one of the balancer's own listeners. */
export function ownMatcher(own: OwnAddresses): (ip: string, port: number) => boolean {
  const exact = new Set<string>();
  const wildcard = new Map<number, 'v4' | 'any'>();
  for (const a of own.addresses) {
    if (a.port === 0) continue;
    const host = a.host.toLowerCase();
    if (host === 'localhost') {
      exact.add(`${V4_MAPPED}7f000001|${a.port}`);
      exact.add(`${LOOPBACK6}|${a.port}`);
      continue;
    }
    const k = ipKey(host);
    if (k === null) continue;
    if (k === ANY4) wildcard.set(a.port, wildcard.get(a.port) === 'any' ? 'any' : 'v4');
    else if (k === ANY6) wildcard.set(a.port, 'any');
    else exact.add(`${k}|${a.port}`);
  }
  const local = new Set<string>();
  for (const ip of own.local) {
    const k = ipKey(ip);
    if (k !== null) local.add(k);
  }
  return (ip, port) => {
    const k = ipKey(ip);
    if (k === null) return false;
    if (exact.has(`${k}|${port}`)) return true;
    // 0.0.0.0 or :: as a target connects to the host itself: as if it were loopback
    if ((k === ANY4 || k === ANY6) && (exact.has(`${V4_MAPPED}7f000001|${port}`) || exact.has(`${LOOPBACK6}|${port}`))) return true;
    const w = wildcard.get(port);
    if (w === undefined) return false;
    if (w === 'v4' && !isV4Key(k) && k !== ANY6) return false;
    return isSelf(k) || local.has(k);
  };
}

/** The SRV records a lookup uses: port 0, an empty or "." target left out; then the lowest priority. */
function usableSrv(records: readonly SrvRecord[], notes: Notes): SrvRecord[] {
  const portZero = new Tally();
  const ok: SrvRecord[] = [];
  for (const r of records) {
    if (typeof r.name !== 'string' || r.name === '' || r.name === '.') continue; // "." : decidedly not offered (RFC 2782)
    const port = Math.trunc(Number(r.port));
    if (!(port >= 1 && port <= U16)) {
      portZero.add(`${r.name}:${r.port}`);
      continue;
    }
    ok.push({ name: r.name, port, weight: clamp16(r.weight), priority: clamp16(r.priority) });
  }
  if (portZero.n > 0) notes.add(`left out ${portZero.n} SRV records without a usable port: ${listed(portZero.shown)}`);
  let lowest = Infinity;
  for (const r of ok) if (r.priority < lowest) lowest = r.priority;
  return ok.filter((r) => r.priority === lowest);
}

function clamp16(v: unknown): number {
  const n = Math.trunc(Number(v));
  return n >= 0 ? Math.min(U16, n) : 0;
}

/**
 * The SRV target names to look up the addresses of, at most maxEndpoints (the first by name):
 * each name is one lookup, so the count is bounded before any is made.
 */
export function srvTargetNames(srv: Reply<SrvRecord>, maxEndpoints: number): string[] {
  if ('error' in srv) return [];
  const names = new Set<string>();
  for (const r of usableSrv(srv.records, new Notes())) if (parseIp(r.name) === null) names.add(r.name);
  return [...names].sort().slice(0, maxEndpoints);
}

/** A count, and the first few items for a note. */
class Tally {
  n = 0;
  readonly shown: string[] = [];
  add(item: string): void {
    this.n++;
    if (this.shown.length < SHOWN * 2) this.shown.push(item);
  }
}

class Notes {
  readonly lines: string[] = [];
  add(line: string): void {
    if (this.lines.length < MAX_NOTES) this.lines.push(line);
  }
}

/**
 * A name's addresses from its replies; null when every family asked failed (then `failed` says
 * why). Of a reply with more than `limit` records, the first `limit` usable ones by address are
 * read (the others are counted in `over`): the work per name stays bounded.
 */
function addressesOf(replies: AddressReplies | undefined, family: Family, failed: string[], bad: Tally, limit: number, over: { n: number }): { ips: string[]; ttl: number | null; failedV4: boolean; failedV6: boolean } | null {
  const w = wants(family);
  const ips: string[] = [];
  let ttl: number | null = null;
  let answered = 0;
  let failedV4 = false;
  let failedV6 = false;
  for (const [v4, reply] of [[true, replies?.v4], [false, replies?.v6]] as const) {
    if (!(v4 ? w.v4 : w.v6)) continue;
    if (reply === undefined || 'error' in reply) {
      const code = reply === undefined ? 'no reply' : reply.error;
      if (reply !== undefined && NO_RECORDS.has(code)) {
        answered++;
        continue;
      }
      failed.push(`${v4 ? 'A' : 'AAAA'} ${code}`);
      if (v4) failedV4 = true;
      else failedV6 = true;
      continue;
    }
    answered++;
    let records = reply.records;
    if (records.length > limit) {
      const byText = new Map<string, AddressRecord>();
      for (const r of records) byText.set(String(r.address), r);
      records = [...byText.keys()].sort().map((k) => byText.get(k)!);
    }
    let taken = 0;
    for (let i = 0; i < records.length; i++) {
      if (taken >= limit) {
        over.n += records.length - i;
        break;
      }
      const r = records[i]!;
      const text = String(r.address);
      // an A reply holds IPv4 addresses, an AAAA reply IPv6 ones (IPv4-mapped included): the
      // family is told by a colon before anything is parsed
      const p = v4 === text.includes(':') ? null : parseIp(text);
      if (p === null || (v4 && !p.v4)) {
        bad.add(text);
        continue;
      }
      ips.push(text);
      taken++;
      const t = Number(r.ttl);
      if (Number.isFinite(t) && t >= 0) ttl = ttl === null ? t : Math.min(ttl, t);
    }
  }
  return answered === 0 ? null : { ips, ttl, failedV4, failedV6 };
}

const familyOf = (ip: string): 'v4' | 'v6' => (ip.includes(':') ? 'v6' : 'v4');

/** An address of a family whose query failed this time: the last answer's is kept for it. */
const lostFamily = (a: { failedV4: boolean; failedV6: boolean }, ip: string): boolean => (familyOf(ip) === 'v4' ? a.failedV4 : a.failedV6);

/** The targets of a lookup, with the failed parts kept from the last answer, bounded and checked. */
export function takeAnswer(raw: RawAnswer, ctx: AnswerContext): Taken {
  const notes = new Notes();
  const max = Math.max(1, Math.trunc(ctx.maxEndpoints));
  const isOwn = ownMatcher(ctx.own);
  const w = wants(ctx.family);
  const bad = new Tally();
  let partial = false;
  let ttl: number | null = null;
  const minTtl = (t: number | null): void => {
    if (t !== null) ttl = ttl === null ? t : Math.min(ttl, t);
  };
  const out = new Collector(max, isOwn, ctx.ports);
  const over = { n: 0 };

  switch (raw.kind) {
    case 'dns': {
      const failed: string[] = [];
      const a = addressesOf(raw.addresses, ctx.family, failed, bad, max, over);
      if (a === null) return failure(failed.join(', '));
      minTtl(a.ttl);
      const kept = failed.length === 0 ? [] : (ctx.last ?? []).filter((t) => lostFamily(a, t.ip));
      out.addAll(sortedUnique([...a.ips, ...kept.map((t) => t.ip)]), (ip) => ({ ip }));
      if (failed.length > 0) {
        partial = true;
        notes.add(`${failed.join(', ')}: kept what answered${kept.length > 0 ? ` and ${kept.length} addresses of the last answer` : ''}`);
      }
      break;
    }
    case 'lookup': {
      if ('error' in raw.system) return failure(raw.system.error);
      minTtl(raw.ttl);
      // in the system's order: a connect by name tries them in it
      const ips: string[] = [];
      for (const r of raw.system.records) {
        const text = String(r.address);
        if (parseIp(text) === null) bad.add(text);
        else if (familyOf(text) === 'v4' ? w.v4 : w.v6) ips.push(text);
      }
      out.addAll([...new Set(ips)], (ip) => ({ ip }));
      break;
    }
    case 'srv': {
      if ('error' in raw.srv) {
        if (!NO_RECORDS.has(raw.srv.error)) return failure(raw.srv.error);
        break;
      }
      const used = usableSrv(raw.srv.records, notes);
      const names = new Set(srvTargetNames(raw.srv, max));
      const failedNames: string[] = [];
      const failedParts: string[] = [];
      const skipped = new Set<string>();
      let answeredNames = 0;
      const addressesByName = new Map<string, string[] | null>();
      for (const r of used) {
        if (addressesByName.has(r.name)) continue;
        if (parseIp(r.name) !== null) {
          addressesByName.set(r.name, w[familyOf(r.name)] ? [r.name] : []);
          answeredNames++;
          continue;
        }
        if (!names.has(r.name)) {
          skipped.add(r.name);
          addressesByName.set(r.name, []);
          continue;
        }
        const failed: string[] = [];
        const a = addressesOf(raw.targets.get(r.name), ctx.family, failed, bad, max, over);
        if (a === null) {
          failedNames.push(`${r.name} (${failed.join(', ')})`);
          addressesByName.set(r.name, null);
          continue;
        }
        answeredNames++;
        minTtl(a.ttl);
        const ips = [...a.ips];
        if (failed.length > 0) {
          partial = true;
          for (const t of ctx.last ?? []) {
            if (t.from === r.name && lostFamily(a, t.ip) && !ips.includes(t.ip)) ips.push(t.ip);
          }
          failedParts.push(...failed.map((f) => `${r.name} ${f}`));
        }
        addressesByName.set(r.name, ips);
      }
      if (answeredNames === 0 && failedNames.length > 0) return failure(`targets failed: ${listed(failedNames)}`);
      if (skipped.size > 0) notes.add(`${skipped.size} SRV targets not looked up ([dns] max_endpoints = ${max}): ${listed([...skipped])}`);
      if (failedNames.length > 0) {
        partial = true;
        notes.add(`SRV targets that did not answer kept their last addresses: ${listed(failedNames)}`);
      }
      if (failedParts.length > 0) notes.add(`failed queries of SRV targets, kept what answered: ${listed(failedParts)}`);
      // by target name and port, each name's addresses in order: the same answer always gives the same endpoints
      used.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : x.port - y.port || x.weight - y.weight));
      const sorted = new Map<string, string[]>();
      for (const r of used) {
        const ips = addressesByName.get(r.name);
        if (ips === null) {
          // a failed target: its endpoints of the last answer stay
          out.addAll((ctx.last ?? []).filter((t) => t.from === r.name && t.port === r.port), (t) => t);
          continue;
        }
        let list = sorted.get(r.name);
        if (list === undefined) sorted.set(r.name, (list = sortedUnique(ips ?? [])));
        out.addAll(list, (ip) => ({ ip, port: r.port, weight: r.weight, priority: r.priority, from: r.name }));
      }
      break;
    }
  }
  if (bad.n > 0) notes.add(`left out ${bad.n} records that are not IP addresses of the type asked: ${listed(bad.shown)}`);

  if (out.refused > 0) notes.add(`refused ${out.refused} addresses that are the balancer's own listen or admin address: ${listed(out.refusedShown)}`);
  if (out.more + over.n > 0) notes.add(`${out.more + over.n} more addresses not used ([dns] max_endpoints = ${max})`);
  const taken = [...out.values()];
  return { targets: raw.kind === 'lookup' ? taken : sortTargets(taken), ttl, error: null, partial, notes: notes.lines };

  function failure(error: string): Taken {
    return { targets: null, ttl: null, error: shown(error.length > 0 ? error : 'no reply'), partial: false, notes: notes.lines };
  }
}

function sortedUnique(list: readonly string[]): string[] {
  return [...new Set(list)].sort();
}

/**
 * The targets taken, one per address (IP, or IP:PORT for SRV; the weights of duplicates add up),
 * the first `max` of them; the balancer's own addresses refused. Once full, the rest is only
 * counted, not gone through: the work stays bounded however many records an answer holds.
 */
class Collector {
  private readonly taken = new Map<string, Target>();
  refused = 0;
  readonly refusedShown: string[] = [];
  more = 0;

  constructor(
    private readonly max: number,
    private readonly isOwn: (ip: string, port: number) => boolean,
    private readonly ports: readonly number[],
  ) {}

  addAll<T>(items: readonly T[], target: (item: T) => Target): void {
    for (let i = 0; i < items.length; i++) {
      if (this.taken.size >= this.max) {
        this.more += items.length - i;
        return;
      }
      this.add(target(items[i]!));
    }
  }

  private add(t: Target): void {
    const own = (t.port !== undefined ? [t.port] : this.ports).find((p) => this.isOwn(t.ip, p));
    if (own !== undefined) {
      this.refused++;
      if (this.refusedShown.length < SHOWN * 2) this.refusedShown.push(formatHostPort({ host: t.ip, port: own }));
      return;
    }
    const k = t.port === undefined ? t.ip : `${t.ip}|${t.port}`;
    const prev = this.taken.get(k);
    if (prev === undefined) this.taken.set(k, t);
    else if (prev.weight !== undefined || t.weight !== undefined) this.taken.set(k, { ...prev, weight: Math.min(1_000_000, (prev.weight ?? 0) + (t.weight ?? 0)) });
  }

  values(): IterableIterator<Target> {
    return this.taken.values();
  }
}

export function sortTargets(list: Target[]): Target[] {
  const k = (t: Target): string => `${t.ip}|${t.port ?? ''}|${t.weight ?? ''}`;
  return list.sort((a, b) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0));
}
