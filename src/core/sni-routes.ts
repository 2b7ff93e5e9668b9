// The route table of one listen address: the services that share it, told apart by the
// server name of the client's TLS ClientHello. Exact names first, then wildcards, the longest
// suffix first; a name nothing matches (or no name) takes the default route, the one service
// without `sni`. Built with the snapshot, read once per connection. Pure.

/** A DNS name is at most 255 bytes: a longer server name is not a name (routed as none). */
export const MAX_SERVER_NAME = 255;

/** What the table needs of a service. */
export interface Routable {
  readonly name: string;
  /** names lower case, `*.example.org` for a wildcard; empty: the default route */
  readonly sni: readonly string[];
  /** the service wants the server name for itself (consistent_hash with hash_key = "sni") */
  readonly wantsServerName: boolean;
  readonly inspectTimeoutMs: number;
  /** its ACL (empty lists: none) and its per-client cap (0: none) */
  readonly proxy: { readonly allow: readonly unknown[]; readonly deny: readonly unknown[]; readonly clientMaxConnections: number };
  /** does its ACL let this client address in? */
  allows(remoteAddress: string): boolean;
}

/** A wildcard's suffix (".example.org"), and the next one with the same hash. */
interface Wildcard<T> {
  readonly suffix: string;
  readonly service: T;
  next: Wildcard<T> | null;
}

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
/** hashes kept to 30 bits: a small integer as a Map key, never a boxed number */
const HASH_MASK = 0x3fffffff;

/** The hash of s[from, end) read right to left, as AddressRoutes.route() computes it label by label. */
function suffixHash(s: string, from: number): number {
  let h = FNV_OFFSET;
  for (let i = s.length - 1; i >= from; i--) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h & HASH_MASK;
}

export class AddressRoutes<T extends Routable> {
  /** read the ClientHello before routing: several services, a service with sni, or one hashing by name */
  readonly inspect: boolean;
  /** the service taking connections with no name, an unknown one, or no ClientHello (null: they are refused, no_route) */
  readonly fallback: T | null;
  /** how long a client may take to send its ClientHello (the services of one address agree on it) */
  readonly inspectTimeoutMs: number;
  /**
   * Every service has an ACL: a client all of them deny is refused at accept, before its
   * ClientHello is read (a client one of them allows is read, then judged by its route's ACL).
   */
  readonly screened: boolean;
  /**
   * The most ClientHellos one client address may have pending on this address: the largest
   * client_max_connections of its services when each has one, else 0 (no cap before routing).
   */
  readonly clientMaxConnections: number;
  private readonly exact = new Map<string, T>();
  /** by the hash of the suffix with its leading dot (".example.org" for "*.example.org") */
  private readonly wildcards = new Map<number, Wildcard<T>>();

  constructor(
    readonly address: string,
    readonly services: readonly T[],
  ) {
    let fallback: T | null = null;
    for (const s of services) {
      if (s.sni.length === 0) fallback ??= s;
      for (const n of s.sni) {
        if (n.startsWith('*.')) this.addWildcard(n.slice(1), s);
        else if (!this.exact.has(n)) this.exact.set(n, s);
      }
    }
    this.fallback = fallback;
    this.inspect = services.length > 1 || services.some((s) => s.sni.length > 0 || s.wantsServerName);
    this.inspectTimeoutMs = Math.max(0, ...services.map((s) => s.inspectTimeoutMs));
    this.screened = services.length > 0 && services.every((s) => s.proxy.allow.length > 0 || s.proxy.deny.length > 0);
    this.clientMaxConnections = services.every((s) => s.proxy.clientMaxConnections > 0) ? Math.max(0, ...services.map((s) => s.proxy.clientMaxConnections)) : 0;
  }

  private addWildcard(suffix: string, s: T): void {
    const h = suffixHash(suffix, 0);
    const head = this.wildcards.get(h);
    for (let w: Wildcard<T> | null | undefined = head; w; w = w.next) if (w.suffix === suffix) return; // the first service listing it keeps it
    this.wildcards.set(h, { suffix, service: s, next: head ?? null });
  }

  /** Does every service of the address deny this client? (ask only when `screened`) */
  deniedByAll(remoteAddress: string): boolean {
    for (const s of this.services) if (s.allows(remoteAddress)) return false;
    return true;
  }

  /** The service for a server name (lower case; null: none was sent; longer than MAX_SERVER_NAME: none). */
  route(serverName: string | null): T | null {
    if (serverName === null || serverName.length === 0 || serverName.length > MAX_SERVER_NAME) return this.fallback;
    const e = this.exact.get(serverName);
    if (e !== undefined) return e;
    return this.wildcards.size > 0 ? (this.wildcard(serverName) ?? this.fallback) : this.fallback;
  }

  /**
   * The service of the longest wildcard suffix of `name` that has a label before it, or null.
   * One pass from the right, hashing the suffix as it grows: linear in the name's length, and no
   * string is made (a hash that matches is checked against the suffix itself).
   */
  wildcard(name: string): T | null {
    const n = name.length;
    if (n === 0 || name.charCodeAt(0) === 0x2e) return null; // a name starting with a dot has no label before any suffix
    let found: T | null = null;
    let h = FNV_OFFSET;
    for (let i = n - 1; i > 0; i--) {
      const c = name.charCodeAt(i);
      h = Math.imul(h ^ c, FNV_PRIME);
      if (c !== 0x2e) continue;
      // going left, each suffix found is longer than the last: the last one found wins
      for (let w: Wildcard<T> | null | undefined = this.wildcards.get(h & HASH_MASK); w; w = w.next) {
        if (w.suffix.length === n - i && name.endsWith(w.suffix)) {
          found = w.service;
          break;
        }
      }
    }
    return found;
  }
}

/** The route table of every listen address, in the order the services come. */
export function routesByAddress<T extends Routable & { readonly listenAddress: string }>(services: readonly T[]): Map<string, AddressRoutes<T>> {
  const groups = new Map<string, T[]>();
  for (const s of services) {
    const g = groups.get(s.listenAddress);
    if (g) g.push(s);
    else groups.set(s.listenAddress, [s]);
  }
  return new Map([...groups].map(([a, list]) => [a, new AddressRoutes(a, list)]));
}
