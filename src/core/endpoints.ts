// Backends found by DNS, turned into the backends a snapshot is built from. A backend with
// `resolve = "dns"` or `srv` becomes one endpoint per address of its last good answer, each a
// backend of its own named PARENT/IP:PORT; a host-name backend without `resolve` carries its
// name's cached addresses, which the sessions connect to instead of looking the name up. The
// answers come from discovery/dns.ts. Pure.

import { DEFAULT_SERVICE, type BackendConfig, type Config, type ServiceConfig } from '../config/schema';
import { formatHostPort, parseIp } from '../config/address';

/** One address of an answer: where to connect and, for SRV, the record's port, weight and priority. */
export interface Target {
  readonly ip: string;
  readonly port?: number;
  readonly weight?: number;
  readonly priority?: number;
  /** the SRV target name it was found at (a failed target keeps its addresses of the last answer) */
  readonly from?: string;
}

/** The last good answers, by query key (queryKey()). */
export type Answers = ReadonlyMap<string, readonly Target[]>;

/**
 * What a backend asks the DNS: `dns`, the A/AAAA records of `address`'s name; `srv`, the SRV
 * records of `srv` (and its targets' addresses); `lookup`, the system's lookup of a host name
 * without `resolve` (getaddrinfo, as a connect by name does), cached.
 */
export interface Query {
  readonly kind: 'dns' | 'srv' | 'lookup';
  readonly name: string;
}

/** The query a backend needs, or null for a literal IP address. */
export function queryOf(b: BackendConfig): Query | null {
  if (b.srv !== '') return { kind: 'srv', name: b.srv };
  if (parseIp(b.host) !== null) return null;
  return { kind: b.resolve === 'dns' ? 'dns' : 'lookup', name: b.host };
}

export function queryKey(q: Query): string {
  return `${q.kind}:${q.name}`;
}

/** An endpoint: a backend made from a DNS answer, with the name of the configured backend it comes from. */
export type EndpointSpec = BackendConfig & { readonly parent: string };

/** The configured backend an endpoint comes from (undefined for a configured backend). */
export function parentOf(spec: BackendConfig): string | undefined {
  return (spec as Partial<EndpointSpec>).parent;
}

/** A host-name backend without `resolve`, with its name's addresses as the system's lookup last gave them. */
export type CachedSpec = BackendConfig & { readonly addresses: readonly string[] };

/** The cached addresses of a host-name backend (undefined: an IP address, or no answer yet; empty: none usable, no connect). */
export function cachedAddresses(spec: BackendConfig): readonly string[] | undefined {
  return (spec as Partial<CachedSpec>).addresses;
}

/** Is this backend replaced by its endpoints (resolve = "dns" or srv)? */
export function discovered(b: BackendConfig): boolean {
  return b.resolve === 'dns' || b.srv !== '';
}

/**
 * The SRV rules: only the records of the lowest priority value are used (RFC 2782's first
 * choice; the others are not a fallback here); a record's weight is its endpoint's weight, except
 * that when every record of that priority has weight 0 they all get 1.
 */
export function srvTargets(records: readonly Target[]): Target[] {
  if (records.length === 0) return [];
  let lowest = Infinity;
  for (const r of records) lowest = Math.min(lowest, r.priority ?? 0);
  const set = records.filter((r) => (r.priority ?? 0) === lowest);
  const allZero = set.every((r) => (r.weight ?? 0) === 0);
  return set.map((r) => ({ ip: r.ip, port: r.port, weight: allZero ? 1 : (r.weight ?? 0) }));
}

/**
 * A backend's endpoints for its answer: one per distinct IP:PORT (the weights of duplicates add
 * up), sorted by name so that the order does not follow the DNS server's rotation. `idOf` gives
 * each endpoint name an id that stays the same while the name does, so its figures carry over.
 */
export function endpointsOf(b: BackendConfig, targets: readonly Target[], idOf: (name: string) => number): EndpointSpec[] {
  const list: readonly Target[] = b.srv !== '' ? srvTargets(targets) : targets.map((t) => ({ ip: t.ip }));
  const byName = new Map<string, { ip: string; port: number; weight: number }>();
  for (const t of list) {
    const port = t.port ?? b.port;
    const address = formatHostPort({ host: t.ip, port });
    const weight = b.weight === 0 ? 0 : b.srv !== '' ? (t.weight ?? 0) : b.weight;
    const prev = byName.get(address);
    if (prev) prev.weight = Math.min(1_000_000, prev.weight + weight);
    else byName.set(address, { ip: t.ip, port, weight });
  }
  return [...byName]
    .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
    .map(([address, t]) => {
      const name = `${b.name}/${address}`;
      return Object.freeze({ ...b, id: idOf(name), name, address, host: t.ip, port: t.port, weight: t.weight, resolve: 'none' as const, srv: '', parent: b.name });
    });
}

/**
 * The config a snapshot is built from: every discovered backend replaced by its endpoints (none
 * before its first answer), every host-name backend given its name's cached addresses (its
 * `address`, and so its figures' key, stays the name). `idOf(service, name)`: see endpointsOf.
 */
export function withEndpoints(config: Config, answers: Answers, idOf: (service: string, name: string) => number): Config {
  if (answers.size === 0 && !config.services.some((s) => s.backends.some(discovered))) return config;
  const expand = (service: string, backends: readonly BackendConfig[]): readonly BackendConfig[] =>
    Object.freeze(
      backends.flatMap((b): BackendConfig[] => {
        const q = queryOf(b);
        if (discovered(b)) return endpointsOf(b, q === null ? [{ ip: b.host }] : (answers.get(queryKey(q)) ?? []), (n) => idOf(service, n));
        const found = q === null ? undefined : answers.get(queryKey(q));
        // an answer with no address left (every one refused) is kept as such: the name is not looked up again at connect
        return [found === undefined ? b : Object.freeze({ ...b, addresses: Object.freeze(found.map((t) => t.ip)) })];
      }),
    );
  const services = config.services.map((svc): ServiceConfig => Object.freeze({ ...svc, backends: expand(svc.name, svc.backends) }));
  const top = services.find((s) => s.name === DEFAULT_SERVICE);
  return Object.freeze({ ...config, services: Object.freeze(services), backends: top !== undefined && config.backends.length > 0 ? top.backends : config.backends });
}
