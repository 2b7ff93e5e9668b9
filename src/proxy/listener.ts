// The proxy's listening sockets, one per service. Each accepted connection reads the current
// snapshot once and takes its service from it, passes the global cap, the service's cap, ACL and
// per-client limits, then becomes a session: a RawSession on libuv's handles when this Node has
// them (./raw.ts), else a Session on net.Socket. A listening socket is always a net.Server (bind,
// systemd's socket, the cluster's shared handle); on the raw path its handle's onconnection is
// replaced, so accepted connections never become net.Socket objects. Every service's sessions
// share one registry: [proxy] max_connections caps them all.

import net, { type Server, type Socket } from 'node:net';
import type { ServiceSnapshot, Snapshot } from '../core/snapshot';
import type { HostPort } from '../core/address';
import { formatHostPort } from '../core/address';
import { BindError } from '../errors';
import { ConnectionRegistry } from '../runtime/drain';
import { ClientLimits } from './client-limits';
import { Session } from './session';
import { RawSession, peerAddress } from './raw-session';
import type { SessionBase, SessionHost } from './session-base';
import { rawAvailable, uvError, type TcpHandle } from './raw';
import type { ProxyObserver, RejectReason } from './events';

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

/** One service's listening socket, its per-client limits and its open connections. */
interface ServiceEntry {
  readonly name: string;
  server: Server | null;
  address: string;
  readonly limits: ClientLimits;
  /** client connections of this service open now (its max_connections counts them) */
  open: number;
  readonly host: SessionHost;
}

export class ProxyListener {
  readonly registry: ConnectionRegistry<Session | RawSession>;
  /** relaying on raw handles (else net.Socket): chosen at start, before the first bind */
  get raw(): boolean {
    return this.deps.raw ?? rawAvailable();
  }
  /** by service name; kept while the service's connections drain after its listener closed */
  private readonly entries = new Map<string, ServiceEntry>();
  /** client connections accepted and handed to a session */
  accepted = 0;
  /** what admission() decided for the connection just accepted (reused: no object per accept) */
  private readonly verdict = { admitted: false, remote: '' };

  constructor(private readonly deps: ListenerDeps) {
    // one coarse sweep for every connection's connect and idle timeout: a tenth of the shortest
    // one (so a timeout fires at most ~10% late), between 10 ms and 1 s
    this.registry = new ConnectionRegistry<Session | RawSession>({
      now: deps.now,
      periodMs: () => {
        let shortest = 10_000;
        for (const s of deps.current().services) shortest = Math.min(shortest, s.proxy.connectTimeoutMs, s.proxy.idleTimeoutMs);
        return Math.min(1000, Math.max(10, shortest / 10));
      },
    });
  }

  /** At least one service is listening. */
  get listening(): boolean {
    for (const e of this.entries.values()) if (e.server !== null) return true;
    return false;
  }

  /** The address the first service listening actually bound, "host:port" ("" when none). */
  get address(): string {
    for (const e of this.entries.values()) if (e.server !== null) return e.address;
    return '';
  }

  /** Each listening service's bound address. */
  addresses(): Map<string, string> {
    const out = new Map<string, string>();
    for (const e of this.entries.values()) if (e.server !== null) out.set(e.name, e.address);
    return out;
  }

  /** Each service's open client connections (services whose connections still drain included). */
  openByService(): Map<string, number> {
    const out = new Map<string, number>();
    for (const e of this.entries.values()) if (e.server !== null || e.open > 0) out.set(e.name, e.open);
    return out;
  }

  get clientTableSize(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.limits.size;
    return n;
  }

  /**
   * Bind `addr` for `service` without serving from it yet: commit() makes it the service's
   * listener (closing its old one), abort() closes it. A reload binds every new address first,
   * so a failure changes nothing.
   */
  async prepare(service: string, addr: HostPort): Promise<Pending> {
    const entry = this.entry(service);
    const own = this.deps.shared === true && reusePort();
    const options = { host: addr.host, port: addr.port, backlog: 4096, exclusive: this.deps.shared !== true || own, ...(own ? { reusePort: true } : {}) };
    const server = await this.bind(entry, (s) => s.listen(options), formatHostPort(addr));
    return {
      commit: () => this.install(entry, server),
      abort: () => {
        server.close();
        // a service that was only being added leaves nothing behind
        if (entry.server === null && entry.open === 0) this.entries.delete(service);
      },
    };
  }

  async listen(service: string, addr: HostPort): Promise<void> {
    (await this.prepare(service, addr)).commit();
  }

  /** Serve an already listening socket passed by the service manager (socket activation). */
  async adopt(service: string, fd: number): Promise<void> {
    const entry = this.entry(service);
    this.install(entry, await this.bind(entry, (s) => s.listen({ fd }), `fd ${fd}`));
  }

  /** A removed service stops accepting; its open connections are untouched (they drain). */
  closeService(service: string): void {
    const e = this.entries.get(service);
    if (!e) return;
    e.server?.close();
    e.server = null;
    e.address = '';
    if (e.open === 0) this.entries.delete(service);
  }

  private entry(name: string): ServiceEntry {
    let e = this.entries.get(name);
    if (e) return e;
    const limits = new ClientLimits(this.deps.now);
    const entry: ServiceEntry = {
      name,
      server: null,
      address: '',
      limits,
      open: 0,
      host: {
        observer: this.deps.observer,
        now: this.deps.now,
        registry: {
          delete: (s: SessionBase) => {
            this.registry.delete(s as Session | RawSession);
            entry.open--;
            if (entry.open === 0 && entry.server === null) this.entries.delete(name);
          },
        },
        released: (remoteAddress) => {
          const svc = this.deps.current().service(name);
          limits.release(remoteAddress, svc?.proxy.clientRateLimit ?? null);
        },
      },
    };
    this.entries.set(name, entry);
    e = entry;
    return e;
  }

  private install(entry: ServiceEntry, server: Server): void {
    const old = entry.server;
    entry.server = server;
    const a = server.address();
    entry.address = a && typeof a === 'object' ? formatHostPort({ host: a.address, port: a.port }) : String(a);
    if (old) old.close();
  }

  private bind(entry: ServiceEntry, start: (s: Server) => void, label: string): Promise<Server> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (c: Socket) => this.onConnection(entry, c));
    return new Promise<Server>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        server.close();
        reject(new BindError('proxy', label, err.code ?? err.message));
      };
      server.once('error', onError);
      server.once('listening', () => {
        server.off('error', onError);
        server.on('error', (err) => this.deps.observer.acceptError(err));
        if (this.raw) {
          const handle = (server as unknown as { _handle: TcpHandle | null })._handle;
          if (handle) handle.onconnection = (status: number, c: TcpHandle | undefined) => this.onRawConnection(entry, status, c);
        }
        resolve(server);
      });
      start(server);
    });
  }

  /**
   * Stop accepting on every service; open connections are untouched. Resolves once the listening
   * sockets are closed (server.close()'s own callback waits for every connection to end, so it
   * is not awaited).
   */
  async close(): Promise<void> {
    for (const e of this.entries.values()) {
      e.server?.close();
      e.server = null;
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /**
   * The global cap, the service's cap, its ACL and its per-client limits for one accepted
   * connection: the reason to refuse it, or null (then `verdict` says whether the limits counted
   * it, and the peer address when it was read). The peer address is a getpeername() system call:
   * asked only when an ACL, a limit or a keyed strategy (consistent_hash) needs it.
   */
  private admission<C>(snap: Snapshot, svc: ServiceSnapshot, entry: ServiceEntry, c: C, peerOf: (c: C) => string): RejectReason | null {
    const v = this.verdict;
    v.admitted = false;
    v.remote = '';
    const p = svc.proxy;
    if (this.registry.size >= snap.maxConnections || entry.open >= svc.maxConnections) return 'max_connections';
    if (p.allow.length > 0 || p.deny.length > 0) {
      v.remote = peerOf(c);
      if (!svc.allows(v.remote)) return 'acl';
    }
    if (p.clientRateLimit !== null || p.clientMaxConnections > 0) {
      if (v.remote === '') v.remote = peerOf(c);
      if (!entry.limits.admit(v.remote, p.clientRateLimit, p.clientMaxConnections)) return 'rate_limit';
      v.admitted = true;
    }
    // consistent_hash hashes the client's IP: read only for a service whose strategy is keyed
    if (svc.keyed && v.remote === '') v.remote = peerOf(c);
    return null;
  }

  private onConnection(entry: ServiceEntry, c: Socket): void {
    c.on('error', ignore);
    const snap = this.deps.current();
    const svc = snap.service(entry.name);
    const refused = svc ? this.admission(snap, svc, entry, c, socketPeer) : 'no_backend';
    if (refused || !svc) {
      this.deps.observer.rejected(refused ?? 'no_backend', c.remoteAddress, entry.name);
      c.destroy();
      return;
    }
    this.accepted++;
    entry.open++;
    const s = new Session(c, svc, entry.host);
    s.admitted = this.verdict.admitted;
    if (svc.keyed) s.hashKey = this.verdict.remote;
    this.registry.add(s);
    s.start();
  }

  /** The raw path's accept: the same admission, on the handle itself. */
  private onRawConnection(entry: ServiceEntry, status: number, c: TcpHandle | undefined): void {
    if (status < 0 || !c) {
      this.deps.observer.acceptError(uvError(status, 'accept'));
      return;
    }
    const snap = this.deps.current();
    const svc = snap.service(entry.name);
    const refused = svc ? this.admission(snap, svc, entry, c, peerAddress) : 'no_backend';
    if (refused || !svc) {
      this.deps.observer.rejected(refused ?? 'no_backend', this.verdict.remote || peerAddress(c), entry.name);
      c.close();
      return;
    }
    c.setNoDelay(true);
    this.accepted++;
    entry.open++;
    const s = new RawSession(c, svc, entry.host);
    s.admitted = this.verdict.admitted;
    s.remoteAddress = this.verdict.remote;
    if (svc.keyed) s.hashKey = this.verdict.remote;
    this.registry.add(s);
    s.start();
  }
}

/** listen({ reusePort }): Node 22.12+ and 23.1+ (on Linux), unless LEMONADE_LB_REUSE_PORT=0. */
export function reusePort(version: string = process.version, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env['LEMONADE_LB_REUSE_PORT'] === '0') return false;
  const [major = 0, minor = 0] = version.slice(1).split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

function socketPeer(c: Socket): string {
  return c.remoteAddress ?? '';
}

function ignore(): void {}
