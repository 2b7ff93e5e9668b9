// The route table of one listen address (SPEC §8): the services that share it, told apart by the
// server name of the client's TLS ClientHello. Exact names first, then wildcards, the longest
// suffix first; a name nothing matches (or no name) takes the default route, the one service
// without `sni`. Built with the snapshot, read once per connection. Pure.

/** What the table needs of a service. */
export interface Routable {
  readonly name: string;
  /** names lower case, `*.example.org` for a wildcard; empty: the default route */
  readonly sni: readonly string[];
  /** the service wants the server name for itself (consistent_hash with hash_key = "sni") */
  readonly wantsServerName: boolean;
  readonly inspectTimeoutMs: number;
}

export class AddressRoutes<T extends Routable> {
  /** read the ClientHello before routing: several services, a service with sni, or one hashing by name */
  readonly inspect: boolean;
  /** the service taking connections with no name, an unknown one, or no ClientHello (null: they are refused, no_route) */
  readonly fallback: T | null;
  /** how long a client may take to send its ClientHello (the services of one address agree on it) */
  readonly inspectTimeoutMs: number;
  private readonly exact = new Map<string, T>();
  /** by suffix with its leading dot, ".example.org" for "*.example.org" */
  private readonly wildcards = new Map<string, T>();

  constructor(
    readonly address: string,
    readonly services: readonly T[],
  ) {
    let fallback: T | null = null;
    for (const s of services) {
      if (s.sni.length === 0) fallback ??= s;
      for (const n of s.sni) {
        if (n.startsWith('*.')) {
          if (!this.wildcards.has(n.slice(1))) this.wildcards.set(n.slice(1), s);
        } else if (!this.exact.has(n)) this.exact.set(n, s);
      }
    }
    this.fallback = fallback;
    this.inspect = services.length > 1 || services.some((s) => s.sni.length > 0 || s.wantsServerName);
    this.inspectTimeoutMs = Math.max(0, ...services.map((s) => s.inspectTimeoutMs));
  }

  /** The service for a server name (lower case; null: none was sent). */
  route(serverName: string | null): T | null {
    if (serverName !== null && serverName !== '') {
      const e = this.exact.get(serverName);
      if (e !== undefined) return e;
      if (this.wildcards.size > 0) {
        // ".b.example.org" before ".example.org": the longest suffix first; a label before it is required
        for (let i = serverName.indexOf('.'); i > 0; i = serverName.indexOf('.', i + 1)) {
          const w = this.wildcards.get(serverName.slice(i));
          if (w !== undefined) return w;
        }
      }
    }
    return this.fallback;
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
