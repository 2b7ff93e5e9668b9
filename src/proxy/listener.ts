// The proxy's listening sockets, one per listen address: the services sharing an address share
// its socket (told apart by sni). Each accepted connection reads the current snapshot once and takes the
// address's route table from it. An address with one plain service routes at once, as it always
// did: no byte is read first. An address that routes by TLS server name (several services, a
// service with `sni`, or one hashing by name) reads the ClientHello first (./inspection.ts),
// then routes. An address whose services accept a PROXY header (accept_proxy) reads it first,
// from a trusted peer only, and its client is the header's from then on. Admission: the global cap is checked at accept (a connection being inspected is
// open), and so are a client every service of the address denies and a client with too many
// ClientHellos pending; the service's cap, its ACL and its per-client limits once it is routed.
// A connection that ends before it is routed is counted and logged as any other. Then it becomes
// a session of the listener's transport (./transport.ts): the raw libuv handles when the start
// chose them (./raw.ts), else net.Socket; a service that terminates TLS relays through
// ./transport-tls.ts over the connection accepted. Accept, routing and admission are one path
// whatever the transport. A listening socket is made by the transport (a net.Server for TCP: bind,
// systemd's socket, the cluster's shared handle; a dgram socket for an address whose service has
// protocol = "udp", whose "connections" are flows: ./transport-udp.ts). Every session shares one registry: [proxy]
// max_connections caps them all.

import type { ServiceSnapshot, Snapshot } from '../core/snapshot';
import type { AddressRoutes } from '../core/sni-routes';
import type { Cidr, HostPort } from '../config/address';
import { cidrContains, formatHostPort, parseIp } from '../config/address';
import type { AcceptProxy, ProxyEndpoints } from '../core/proxy-protocol';
import { PROCESS_ENV } from '../config/environment';
import { BindError } from '../errors';
import { ConnectionRegistry } from './registry';
import { ClientLimits } from './client-limits';
import { WaitQueue } from './queue';
import type { Accepted, Relay, SessionHost } from './relay';
import { rawAvailable } from './raw';
import type { ProxyObserver, RejectReason } from './events';
import type { Inspection, InspectionHost } from './inspection';
import type { Listening, Transport } from './transport';
import { RAW_TRANSPORT } from './transport-raw';
import { NET_TRANSPORT, netSession } from './transport-net';
import { tlsSession } from './transport-tls';
import { udpTransport } from './transport-udp';

export interface ListenerDeps {
  readonly current: () => Snapshot;
  readonly observer: ProxyObserver;
  readonly now: () => number;
  /**
   * Several worker processes serve one address. Where Node has listen({ reusePort }) each
   * worker binds a socket of its own with SO_REUSEPORT and the kernel spreads connections
   * evenly over them; elsewhere (or with LEMONADE_LB_REUSE_PORT=0) they bind through the
   * cluster primary and accept from its one socket. A passed socket is always the one shared.
   */
  readonly shared?: boolean;
  /** relay on raw handles; default: what the start chose (rawAvailable()) */
  readonly raw?: boolean;
}

export interface Pending {
  commit(): void;
  abort(): void;
}

/** One listening socket, serving the services of one listen address. */
interface SocketEntry {
  /** the listen address as the config writes it: the key of its route table in the snapshot */
  readonly key: string;
  server: Listening | null;
  /** the address actually bound, "host:port" */
  address: string;
  /** the service and entry the last connection went to: an address with one service skips the lookup */
  lastService: ServiceSnapshot | null;
  lastEntry: ServiceEntry | null;
  /** each client's connections whose ClientHello is being read (capped by the route table's clientMaxConnections) */
  readonly pending: ClientLimits;
  /** the route table the three below were read from (a new snapshot has a new one) */
  routes: AddressRoutes<ServiceSnapshot> | null;
  /** the address reads first: a PROXY header, a ClientHello, or both */
  reads: boolean;
  /** accept_proxy of its services (they agree), null when off; and the peers trusted to send it */
  acceptProxy: AcceptProxy | null;
  trusted: readonly Cidr[];
}

/** One service's per-client limits and open connections (kept while they drain). */
interface ServiceEntry {
  readonly name: string;
  readonly limits: ClientLimits;
  /** client connections of this service open now (its max_connections counts them; queued ones included) */
  open: number;
  readonly host: SessionHost;
  /** its connections waiting for a backend's slot (queue_timeout) */
  readonly queue: WaitQueue<Relay>;
}

/** An open client connection: relayed, or its ClientHello being read. */
export type Open = Relay | Inspection<unknown>;

export class ProxyListener {
  readonly registry: ConnectionRegistry<Open>;
  /** the transport of every connection: chosen at start, fixed at the first bind */
  private chosen: Transport<unknown> | null = null;
  private get transport(): Transport<unknown> {
    return (this.chosen ??= ((this.deps.raw ?? rawAvailable()) ? RAW_TRANSPORT : NET_TRANSPORT) as Transport<unknown>);
  }
  /** by listen address as the config writes it */
  private readonly sockets = new Map<string, SocketEntry>();
  /** by service name */
  private readonly services = new Map<string, ServiceEntry>();
  /** client connections accepted and handed to a session */
  accepted = 0;
  /** what admission() decided for the connection just routed, and what its session is built from (reused: no object per accept) */
  private readonly verdict: Accepted = { startedAt: -1, admitted: false, remote: '', logClient: null, hashKey: undefined, initial: null, clientEnded: false, proxied: null };
  private readonly inspections: InspectionHost = {
    inspected: (i, serverName, bytes, clientEnded) => this.onInspected(i, serverName, bytes, clientEnded),
    gone: (i) => this.onGone(i),
    now: () => this.deps.now(),
    proxied: (i) => this.onProxied(i),
    refused: (i, reason) => this.onRefused(i, reason),
  };

  constructor(private readonly deps: ListenerDeps) {
    // one coarse sweep for every connection's connect, idle and inspect timeout: a tenth of the
    // shortest one (so a timeout fires at most ~10% late), between 10 ms and 1 s
    this.registry = new ConnectionRegistry<Open>({
      now: deps.now,
      periodMs: () => {
        let shortest = 10_000;
        const snap = deps.current();
        for (const s of snap.services) shortest = Math.min(shortest, s.proxy.connectTimeoutMs, s.proxy.idleTimeoutMs, s.proxy.udpIdleTimeoutMs, s.tls?.handshakeTimeoutMs ?? Infinity, s.proxy.queueTimeoutMs || Infinity);
        for (const a of snap.listenAddresses()) {
          const r = snap.routes(a)!;
          if (r.inspect || (r.services[0]?.proxy.acceptProxy ?? 'off') !== 'off') shortest = Math.min(shortest, r.inspectTimeoutMs);
        }
        return Math.min(1000, Math.max(10, shortest / 10));
      },
    });
  }

  /** At least one address is listening. */
  get listening(): boolean {
    for (const e of this.sockets.values()) if (e.server !== null) return true;
    return false;
  }

  /** The address the first socket listening actually bound, "host:port" ("" when none). */
  get address(): string {
    for (const e of this.sockets.values()) if (e.server !== null) return e.address;
    return '';
  }

  /** Each listening socket's bound address, by listen address as the config writes it. */
  boundAddresses(): Map<string, string> {
    const out = new Map<string, string>();
    for (const e of this.sockets.values()) if (e.server !== null) out.set(e.key, e.address);
    return out;
  }

  /** Each service's bound address (the socket of its listen address), for the services of the current snapshot. */
  addresses(): Map<string, string> {
    const out = new Map<string, string>();
    for (const svc of this.deps.current().services) {
      const e = this.sockets.get(svc.listenAddress);
      if (e && e.server !== null) out.set(svc.name, e.address);
    }
    return out;
  }

  /** Each service's open client connections (services whose connections still drain included). */
  openByService(): Map<string, number> {
    const out = new Map<string, number>();
    for (const name of this.addresses().keys()) out.set(name, 0);
    for (const e of this.services.values()) if (out.has(e.name) || e.open > 0) out.set(e.name, e.open);
    return out;
  }

  get clientTableSize(): number {
    let n = 0;
    for (const e of this.services.values()) n += e.limits.size;
    return n;
  }

  /**
   * Bind `addr` for the listen address `key` without serving from it yet: commit() makes it the
   * address's socket (closing an old one), abort() closes it. A reload binds every new address
   * first, so a failure changes nothing. `udp`: the address's service has protocol = "udp" (a
   * dgram socket of ./transport-udp.ts; with reusePort each worker binds its own).
   */
  async prepare(key: string, addr: HostPort, udp = false): Promise<Pending> {
    const entry = this.socket(key);
    const own = this.deps.shared === true && reusePort();
    const options = { host: addr.host, port: addr.port, backlog: 4096, exclusive: this.deps.shared !== true || own, ...(own ? { reusePort: true } : {}) };
    const t = udp ? (udpTransport(key, this.deps.current, this.deps.now) as Transport<unknown>) : this.transport;
    const server = await this.bind(entry, (s) => s.listen(options), formatHostPort(addr), t);
    return {
      commit: () => this.install(entry, server),
      abort: () => {
        server.close();
        // an address that was only being added leaves nothing behind
        if (entry.server === null) this.sockets.delete(key);
      },
    };
  }

  async listen(key: string, addr: HostPort, udp = false): Promise<void> {
    (await this.prepare(key, addr, udp)).commit();
  }

  /** Serve an already listening socket passed by the service manager (socket activation). */
  async adopt(key: string, fd: number): Promise<void> {
    const entry = this.socket(key);
    this.install(entry, await this.bind(entry, (s) => s.listen({ fd }), `fd ${fd}`));
  }

  /** An address no service has any more stops accepting; open connections are untouched (they drain). */
  closeAddress(key: string): void {
    const e = this.sockets.get(key);
    if (!e) return;
    e.server?.close();
    this.sockets.delete(key);
  }

  /** Forget the per-service state of services `snap` no longer has, once their connections are gone. */
  prune(snap: Snapshot): void {
    for (const [name, e] of this.services) if (e.open === 0 && !snap.service(name)) this.services.delete(name);
  }

  /**
   * Backends may take more connections now (a new snapshot, a backend healthy or enabled again):
   * each service's queue head is offered a slot at once.
   */
  serveQueues(): void {
    for (const e of this.services.values()) if (e.queue.length !== 0) e.queue.serve();
  }

  /** Each service's connections waiting in its queue now (services of the current snapshot at 0 included). */
  queuedByService(): Map<string, number> {
    const out = new Map<string, number>();
    for (const svc of this.deps.current().services) if (svc.proxy.queueTimeoutMs > 0) out.set(svc.name, 0);
    for (const e of this.services.values()) if (e.queue.length > 0 || out.has(e.name)) out.set(e.name, e.queue.length);
    return out;
  }

  private socket(key: string): SocketEntry {
    let e = this.sockets.get(key);
    if (!e) {
      e = { key, server: null, address: '', lastService: null, lastEntry: null, pending: new ClientLimits(this.deps.now), routes: null, reads: false, acceptProxy: null, trusted: [] };
      this.sockets.set(key, e);
    }
    return e;
  }

  private service(name: string): ServiceEntry {
    const e = this.services.get(name);
    if (e) return e;
    const limits = new ClientLimits(this.deps.now);
    const queue = new WaitQueue<Relay>();
    const entry: ServiceEntry = {
      name,
      limits,
      open: 0,
      queue,
      host: {
        observer: this.deps.observer,
        now: this.deps.now,
        queue,
        current: () => this.deps.current().service(name),
        registry: {
          delete: (s: Relay) => {
            this.registry.delete(s);
            entry.open--;
            // a connection of the service ended: its backend's slot goes to the queue's head at once
            if (queue.length !== 0) queue.serve();
          },
        },
        released: (remoteAddress) => {
          const svc = this.deps.current().service(name);
          limits.release(remoteAddress, svc?.proxy.clientRateLimit ?? null);
        },
      },
    };
    this.services.set(name, entry);
    return entry;
  }

  /** The service's entry, remembered on the socket for its next connection. */
  private serviceOf(sock: SocketEntry, svc: ServiceSnapshot): ServiceEntry {
    if (sock.lastService === svc) return sock.lastEntry!;
    const e = this.service(svc.name);
    sock.lastService = svc;
    sock.lastEntry = e;
    return e;
  }

  private install(entry: SocketEntry, server: Listening): void {
    const old = entry.server;
    entry.server = server;
    const a = server.address();
    entry.address = a && typeof a === 'object' ? formatHostPort({ host: a.address, port: a.port }) : String(a);
    if (old) old.close();
  }

  private bind(entry: SocketEntry, start: (s: Listening) => void, label: string, t: Transport<unknown> = this.transport): Promise<Listening> {
    const server = t.server(
      (c) => this.onAccept(entry, t, c),
      (err) => this.deps.observer.acceptError(err),
    );
    return new Promise<Listening>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        server.close();
        reject(new BindError('proxy', label, err.code ?? err.message));
      };
      server.once('error', onError);
      server.once('listening', () => {
        server.off('error', onError);
        server.on('error', (err) => this.deps.observer.acceptError(err));
        resolve(server);
      });
      start(server);
    });
  }

  /**
   * Stop accepting on every address; open connections are untouched. Resolves once the listening
   * sockets are closed (server.close()'s own callback waits for every connection to end, so it
   * is not awaited).
   */
  async close(): Promise<void> {
    for (const e of this.sockets.values()) {
      e.server?.close();
      e.server = null;
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /**
   * The global cap, the service's cap, its ACL and its per-client limits for one connection
   * routed to `svc`: the reason to refuse it, or null (then `verdict` says whether the limits
   * counted it, and the peer address when it was read). The peer address is a getpeername()
   * system call: asked only when an ACL, a limit or a strategy keyed by it (consistent_hash)
   * needs it. A connection whose ClientHello was read (`from`) holds its place under the global
   * cap since its accept, and brings the peer address if it was read then.
   */
  private admission<C>(snap: Snapshot, svc: ServiceSnapshot, entry: ServiceEntry, c: C, t: Transport<C>, from: Inspection<C> | null): RejectReason | null {
    const v = this.verdict;
    v.admitted = false;
    v.remote = from !== null ? from.remote : '';
    const p = svc.proxy;
    if ((from === null && this.registry.size >= snap.maxConnections) || entry.open >= svc.maxConnections) return 'max_connections';
    if (p.allow.length > 0 || p.deny.length > 0) {
      if (v.remote === '') v.remote = t.remoteAddress(c) ?? '';
      if (!svc.allows(v.remote)) return 'acl';
    }
    if (p.clientRateLimit !== null || p.clientMaxConnections > 0) {
      if (v.remote === '') v.remote = t.remoteAddress(c) ?? '';
      if (!entry.limits.admit(v.remote, p.clientRateLimit, p.clientMaxConnections)) return entry.limits.refusal;
      v.admitted = true;
    }
    // consistent_hash on the client's IP: read only for a service whose strategy is keyed by it
    if (svc.keyed && !svc.wantsServerName && v.remote === '') v.remote = t.remoteAddress(c) ?? '';
    return null;
  }

  /** Is this connection one the access log samples? (false at once when the log is off) */
  private logged(): boolean {
    const rate = this.deps.observer.logSample;
    return rate > 0 && (rate >= 1 || Math.random() < rate);
  }

  /**
   * Admission at accept on an address that reads the ClientHello first, before the route is
   * known: the global cap (a connection being inspected is open), an ACL every service of the
   * address has and that denies the client in each (HAProxy's `tcp-request connection reject`),
   * and the client's ClientHellos pending here against the route table's clientMaxConnections
   * (counted until it is routed). Null: read its ClientHello (`verdict.remote`: the peer address
   * when it was read).
   */
  private screen<C>(sock: SocketEntry, snap: Snapshot, routes: AddressRoutes<ServiceSnapshot>, c: C, t: Transport<C>): RejectReason | null {
    const v = this.verdict;
    v.remote = '';
    if (this.registry.size >= snap.maxConnections) return 'max_connections';
    if (sock.acceptProxy !== null) {
      // the peer is the balancer in front: trusted to send the header, or refused; the client's ACL and limits wait for the header's address
      v.remote = t.remoteAddress(c) ?? '';
      return trusts(sock.trusted, v.remote) ? null : 'proxy_header';
    }
    return this.screenClient(sock, routes, c, t);
  }

  /** The ACL every service of the address has, and the client's ClientHellos pending (`verdict.remote`: its address, or "" when not read yet). */
  private screenClient<C>(sock: SocketEntry, routes: AddressRoutes<ServiceSnapshot>, c: C | null, t: Transport<C>): RejectReason | null {
    const v = this.verdict;
    if (routes.screened) {
      if (v.remote === '') v.remote = (c !== null ? t.remoteAddress(c) : '') ?? '';
      if (routes.deniedByAll(v.remote)) return 'acl';
    }
    if (routes.clientMaxConnections > 0) {
      if (v.remote === '') v.remote = (c !== null ? t.remoteAddress(c) : '') ?? '';
      if (!sock.pending.admit(v.remote, null, routes.clientMaxConnections)) return 'client_limit';
    }
    return null;
  }

  /** An inspection admitted by screen(): open from now on. */
  private pending(i: Inspection<unknown>, sock: SocketEntry, routes: AddressRoutes<ServiceSnapshot>, logClient: string | null): void {
    i.service = routes.fallback?.name ?? '';
    i.logClient = logClient;
    i.remote = this.verdict.remote;
    if (routes.clientMaxConnections > 0 && sock.acceptProxy === null) i.limits = sock.pending;
    this.registry.add(i);
  }

  /**
   * Its PROXY header was read: from now on the client is the header's (a LOCAL header keeps the
   * peer's own address), and what screen() did not judge at accept is judged on it, as a
   * connection without a header is judged at accept: the address's ACL and pending ClientHellos.
   */
  private onProxied(i: Inspection<unknown>): RejectReason | null {
    const e = i.client;
    if (e !== null) {
      i.remote = e.srcAddress;
      if (i.logClient !== null) i.logClient = formatHostPort({ host: e.srcAddress, port: e.srcPort });
    }
    const routes = this.deps.current().routes(i.address);
    const sock = this.sockets.get(i.address);
    if (!routes?.inspect || !sock) return null;
    this.verdict.remote = i.remote;
    const refused = this.screenClient(sock, routes, null, this.transport);
    if (refused === null && routes.clientMaxConnections > 0) i.limits = sock.pending;
    return refused;
  }

  /** Refused before it was routed (its PROXY header): the inspection closed it. */
  private onRefused(i: Inspection<unknown>, reason: RejectReason): void {
    i.limits?.release(i.remote, null);
    this.deps.observer.rejected(reason, i.remote, i.service, i.logClient, i.durationMs);
    this.registry.delete(i);
  }

  /** The client went away (or a drain cut it) before it was routed: counted and logged like any connection that ends. */
  private onGone(i: Inspection<unknown>): void {
    i.limits?.release(i.remote, null);
    this.accepted++;
    this.deps.observer.closed(i);
    this.registry.delete(i);
  }

  /**
   * The ClientHello was read (or not): route by the snapshot current now, then admit. The
   * inspection leaves the registry last, once its session is in: a drain waiting for the last
   * connection never sees none open in between.
   */
  private onInspected(i: Inspection<unknown>, serverName: string | null, bytes: Buffer, clientEnded: boolean): void {
    i.limits?.release(i.remote, null);
    const snap = this.deps.current();
    const svc = snap.routes(i.address)?.route(serverName) ?? null;
    const sock = this.sockets.get(i.address);
    const t = this.transport;
    if (!svc || !sock) {
      this.deps.observer.rejected('no_route', i.remote || t.remoteAddress(i.conn), '', i.logClient, i.durationMs);
      t.close(i.conn);
    } else {
      this.startSession(snap, svc, this.serviceOf(sock, svc), t, i.conn, i.logClient, i, bytes, serverName, clientEnded, i.client);
    }
    this.registry.delete(i);
  }

  /** A connection accepted on `sock`: read its ClientHello first, or route it at once. */
  private onAccept<C>(sock: SocketEntry, t: Transport<C>, c: C): void {
    const snap = this.deps.current();
    const routes = snap.routes(sock.key);
    const logClient = this.logged() ? t.remoteEndpoint(c) : null;
    if (routes !== sock.routes) learn(sock, routes);
    if (sock.reads) {
      const refused = this.screen(sock, snap, routes!, c, t);
      if (refused !== null) {
        this.deps.observer.rejected(refused, this.verdict.remote || t.remoteAddress(c), routes!.fallback?.name ?? '', logClient);
        t.close(c);
        return;
      }
      const i = t.inspection(c, sock.key, this.deps.now(), routes!.inspectTimeoutMs, this.inspections);
      if (sock.acceptProxy !== null) i.expectHeader(sock.acceptProxy, routes!.inspect);
      this.pending(i, sock, routes!, logClient);
      if (!i.start()) i.destroy('client_reset');
      return;
    }
    const svc = routes?.fallback;
    if (!svc) {
      this.deps.observer.rejected('no_route', t.remoteAddress(c), '', logClient);
      t.close(c);
      return;
    }
    this.startSession(snap, svc, this.serviceOf(sock, svc), t, c, logClient, null, null, null, false, null);
  }

  /** Admit it, then relay it. `from`: the inspection that read its first bytes (`initial`), else null. */
  private startSession<C>(snap: Snapshot, svc: ServiceSnapshot, entry: ServiceEntry, t: Transport<C>, c: C, logClient: string | null, from: Inspection<C> | null, initial: Buffer | null, serverName: string | null, clientEnded: boolean, proxied: ProxyEndpoints | null): void {
    const refused = this.admission(snap, svc, entry, c, t, from);
    if (refused) {
      this.deps.observer.rejected(refused, this.verdict.remote || t.remoteAddress(c), svc.name, logClient, from !== null ? from.durationMs : 0);
      t.close(c);
      return;
    }
    this.accepted++;
    entry.open++;
    const a = this.verdict;
    a.startedAt = from !== null ? from.acceptedAt : -1;
    a.logClient = logClient;
    a.initial = initial;
    a.clientEnded = clientEnded;
    a.proxied = proxied;
    a.hashKey = svc.keyed ? (svc.wantsServerName ? (serverName ?? '') : a.remote) : undefined;
    const s = svc.plain ? t.session(c, svc, entry.host, a) : secureSession(c, initial, svc, entry.host, a);
    a.initial = null;
    a.proxied = null;
    this.registry.add(s);
    s.start();
  }
}

/**
 * The session of a service that speaks TLS, on net.Socket whatever accepted it: one that
 * terminates (./transport-tls.ts; the bytes read to route it go under the TLS layer), else one
 * that only speaks TLS to its backends (./transport-net.ts).
 */
function secureSession(c: unknown, initial: Buffer | null, svc: ServiceSnapshot, host: SessionHost, a: Accepted): Relay {
  const tls = svc.tls;
  if (tls === null) return netSession(c, svc, host, a);
  a.initial = null;
  return tlsSession(c, initial, svc, tls, host, a);
}

/** What the socket's accept path reads of a new route table, once per snapshot. */
function learn(sock: SocketEntry, routes: AddressRoutes<ServiceSnapshot> | undefined): void {
  sock.routes = routes ?? null;
  const p = routes?.services[0]?.proxy;
  sock.acceptProxy = p !== undefined && p.acceptProxy !== 'off' ? (p.acceptProxy as AcceptProxy) : null;
  sock.trusted = p?.acceptProxyFrom ?? [];
  sock.reads = routes !== undefined && (routes.inspect || sock.acceptProxy !== null);
}

/** Is this peer one trusted to send a PROXY header? */
function trusts(trusted: readonly Cidr[], peer: string): boolean {
  const ip = peer !== '' ? parseIp(peer) : null;
  if (ip === null) return false;
  for (const c of trusted) if (cidrContains(c, ip)) return true;
  return false;
}

/** listen({ reusePort }): Node 22.12+ and 23.1+ (on Linux), unless LEMONADE_LB_REUSE_PORT=0. */
export function reusePort(version: string = process.version, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env[PROCESS_ENV.reusePort.name] === '0') return false;
  const [major = 0, minor = 0] = version.slice(1).split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}
