// The proxy's listening socket(s). Each accepted connection reads the current snapshot once,
// passes the global cap, the ACL and the per-client limits, then becomes a session: a RawSession
// on libuv's handles when this Node has them (./raw.ts), else a Session on net.Socket. The
// listening socket is always a net.Server (bind, systemd's socket, the cluster's shared handle);
// on the raw path its handle's onconnection is replaced, so accepted connections never become
// net.Socket objects.

import net, { type Server, type Socket } from 'node:net';
import type { Snapshot } from '../core/snapshot';
import type { HostPort } from '../core/address';
import { formatHostPort } from '../core/address';
import { BindError } from '../errors';
import { ConnectionRegistry } from '../runtime/drain';
import { ClientLimits } from './client-limits';
import { Session } from './session';
import { RawSession, peerAddress } from './raw-session';
import type { SessionHost } from './session-base';
import { rawAvailable, uvError, type TcpHandle } from './raw';
import type { ProxyObserver, RejectReason } from './events';

export interface ListenerDeps {
  readonly current: () => Snapshot;
  readonly observer: ProxyObserver;
  readonly now: () => number;
  /**
   * Several worker processes serve one address: bind through the cluster primary (not
   * exclusive), and every worker accepts from the same socket.
   */
  readonly shared?: boolean;
}

export interface Pending {
  commit(): void;
  abort(): void;
}

export class ProxyListener {
  readonly registry: ConnectionRegistry<Session | RawSession>;
  /** relaying on raw handles (else net.Socket) */
  readonly raw = rawAvailable();
  private server: Server | null = null;
  /** client connections accepted and handed to a session */
  accepted = 0;
  private boundAddress = '';
  private readonly limits: ClientLimits;
  private readonly host: SessionHost;
  /** what admission() decided for the connection just accepted (reused: no object per accept) */
  private readonly verdict = { admitted: false, remote: '' };

  constructor(private readonly deps: ListenerDeps) {
    this.limits = new ClientLimits(deps.now);
    // one coarse sweep for every connection's connect and idle timeout: a tenth of the shorter
    // one (so a timeout fires at most ~10% late), between 10 ms and 1 s
    this.registry = new ConnectionRegistry<Session | RawSession>({
      now: deps.now,
      periodMs: () => {
        const p = deps.current().config.proxy;
        return Math.min(1000, Math.max(10, Math.min(p.connectTimeoutMs, p.idleTimeoutMs) / 10));
      },
    });
    this.host = {
      observer: deps.observer,
      registry: this.registry,
      now: deps.now,
      released: (remoteAddress) => {
        this.limits.release(remoteAddress, this.deps.current().config.proxy.clientRateLimit);
      },
    };
  }

  get listening(): boolean {
    return this.server !== null;
  }

  /** The address actually bound, "host:port" (the port is real when 0 was asked). */
  get address(): string {
    return this.boundAddress;
  }

  get clientTableSize(): number {
    return this.limits.size;
  }

  /**
   * Bind `addr` without serving from it yet: commit() makes it the listener (closing the old one),
   * abort() closes it. A reload binds every new address first, so a failure changes nothing.
   */
  async prepare(addr: HostPort): Promise<Pending> {
    const server = await this.bind((s) => s.listen({ host: addr.host, port: addr.port, backlog: 4096, exclusive: this.deps.shared !== true }), formatHostPort(addr));
    return {
      commit: () => this.install(server),
      abort: () => server.close(),
    };
  }

  async listen(addr: HostPort): Promise<void> {
    (await this.prepare(addr)).commit();
  }

  /** Serve an already listening socket passed by the service manager (socket activation). */
  async adopt(fd: number): Promise<void> {
    this.install(await this.bind((s) => s.listen({ fd }), `fd ${fd}`));
  }

  private install(server: Server): void {
    const old = this.server;
    this.server = server;
    const a = server.address();
    this.boundAddress = a && typeof a === 'object' ? formatHostPort({ host: a.address, port: a.port }) : String(a);
    if (old) old.close();
  }

  private bind(start: (s: Server) => void, label: string): Promise<Server> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, this.onConnection);
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
          if (handle) handle.onconnection = this.onRawConnection;
        }
        resolve(server);
      });
      start(server);
    });
  }

  /**
   * Stop accepting; open connections are untouched. Resolves once the listening socket is closed
   * (server.close()'s own callback waits for every connection to end, so it is not awaited).
   */
  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.close();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /**
   * The global cap, the ACL and the per-client limits for one accepted connection: the reason to
   * refuse it, or null (then `verdict` says whether the limits counted it, and the peer address
   * when it was read). The peer address is a getpeername() system call: asked only when an ACL
   * or a limit needs it.
   */
  private admission<C>(snap: Snapshot, c: C, peerOf: (c: C) => string): RejectReason | null {
    const v = this.verdict;
    v.admitted = false;
    v.remote = '';
    const p = snap.config.proxy;
    if (this.registry.size >= snap.maxConnections) return 'max_connections';
    if (p.allow.length > 0 || p.deny.length > 0) {
      v.remote = peerOf(c);
      if (!snap.allows(v.remote)) return 'acl';
    }
    if (p.clientRateLimit !== null || p.clientMaxConnections > 0) {
      if (v.remote === '') v.remote = peerOf(c);
      if (!this.limits.admit(v.remote, p.clientRateLimit, p.clientMaxConnections)) return 'rate_limit';
      v.admitted = true;
    }
    return null;
  }

  private readonly onConnection = (c: Socket): void => {
    c.on('error', ignore);
    const snap = this.deps.current();
    const refused = this.admission(snap, c, socketPeer);
    if (refused) {
      this.deps.observer.rejected(refused, c.remoteAddress);
      c.destroy();
      return;
    }
    this.accepted++;
    const s = new Session(c, snap, this.host);
    s.admitted = this.verdict.admitted;
    this.registry.add(s);
    s.start();
  };

  /** The raw path's accept: the same admission, on the handle itself. */
  private readonly onRawConnection = (status: number, c: TcpHandle | undefined): void => {
    if (status < 0 || !c) {
      this.deps.observer.acceptError(uvError(status, 'accept'));
      return;
    }
    const snap = this.deps.current();
    const refused = this.admission(snap, c, peerAddress);
    if (refused) {
      this.deps.observer.rejected(refused, this.verdict.remote || peerAddress(c));
      c.close();
      return;
    }
    c.setNoDelay(true);
    this.accepted++;
    const s = new RawSession(c, snap, this.host);
    s.admitted = this.verdict.admitted;
    s.remoteAddress = this.verdict.remote;
    this.registry.add(s);
    s.start();
  };
}

function socketPeer(c: Socket): string {
  return c.remoteAddress ?? '';
}

function ignore(): void {}
