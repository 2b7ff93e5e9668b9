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
import { Session, type SessionHost } from './session';
import { RawSession, endpoints, peerAddress, type RawSessionHost } from './raw-session';
import { rawAvailable, uvError, type TcpHandle } from './raw';
import type { ProxyObserver } from './events';
import { encodeProxyHeader, proxyHeader } from './proxy-protocol';

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
  private readonly rawHost: RawSessionHost;

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
      preamble: (client, snap) => {
        const mode = snap.config.proxy.proxyProtocol;
        return mode === 'off' ? null : proxyHeader(mode, client);
      },
      released: (client) => {
        this.limits.release(client.remoteAddress ?? '', this.deps.current().config.proxy.clientRateLimit);
      },
    };
    this.rawHost = {
      observer: deps.observer,
      registry: this.registry,
      now: deps.now,
      preamble: (client, snap) => {
        const mode = snap.config.proxy.proxyProtocol;
        return mode === 'off' ? null : encodeProxyHeader(mode, endpoints(client));
      },
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

  private readonly onConnection = (c: Socket): void => {
    c.on('error', ignore);
    const snap = this.deps.current();
    const p = snap.config.proxy;
    if (this.registry.size >= snap.maxConnections) return this.reject(c, 'max_connections');
    // remoteAddress is a getpeername() system call: only ask when an ACL needs it
    if ((p.allow.length > 0 || p.deny.length > 0) && !snap.allows(c.remoteAddress)) return this.reject(c, 'acl');
    let admitted = false;
    if (p.clientRateLimit !== null || p.clientMaxConnections > 0) {
      if (!this.limits.admit(c.remoteAddress ?? '', p.clientRateLimit, p.clientMaxConnections)) return this.reject(c, 'rate_limit');
      admitted = true;
    }
    this.accepted++;
    const s = new Session(c, snap, this.host);
    s.admitted = admitted;
    this.registry.add(s);
    s.start();
  };

  private reject(c: Socket, reason: 'max_connections' | 'acl' | 'rate_limit'): void {
    this.deps.observer.rejected(reason, c.remoteAddress);
    c.destroy();
  }

  /** The raw path's accept: the same checks as onConnection, on the handle itself. */
  private readonly onRawConnection = (status: number, c: TcpHandle | undefined): void => {
    if (status < 0 || !c) {
      this.deps.observer.acceptError(uvError(status, 'accept'));
      return;
    }
    const snap = this.deps.current();
    const p = snap.config.proxy;
    if (this.registry.size >= snap.maxConnections) return this.rejectRaw(c, 'max_connections', undefined);
    let remote = '';
    // the peer address is a getpeername() system call: only ask when an ACL or a limit needs it
    if (p.allow.length > 0 || p.deny.length > 0) {
      remote = peerAddress(c);
      if (!snap.allows(remote)) return this.rejectRaw(c, 'acl', remote);
    }
    let admitted = false;
    if (p.clientRateLimit !== null || p.clientMaxConnections > 0) {
      if (remote === '') remote = peerAddress(c);
      if (!this.limits.admit(remote, p.clientRateLimit, p.clientMaxConnections)) return this.rejectRaw(c, 'rate_limit', remote);
      admitted = true;
    }
    c.setNoDelay(true);
    this.accepted++;
    const s = new RawSession(c, snap, this.rawHost);
    s.admitted = admitted;
    s.remoteAddress = remote;
    this.registry.add(s);
    s.start();
  };

  private rejectRaw(c: TcpHandle, reason: 'max_connections' | 'acl' | 'rate_limit', remote: string | undefined): void {
    this.deps.observer.rejected(reason, remote ?? peerAddress(c));
    c.close();
  }
}

function ignore(): void {}
