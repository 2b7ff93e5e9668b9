// TLS termination: a service with a tls table (core/tls.ts) relays the decrypted bytes of a
// TLSSocket over the accepted connection to its plaintext backends. The connection is accepted,
// routed (by the ClientHello's server name when the address reads it) and admitted as any other,
// whatever the listener's transport; only then, for a service that terminates, it becomes a
// net.Socket (a raw handle is wrapped as net.js wraps an accepted one) under a server TLSSocket.
// The bytes read to route it go back under the TLS layer. Once the handshake is done, it is the
// net.Socket session (./transport-net.ts): pick, connect with retries, relay, timeouts,
// accounting. The handshake deadline is checked by the registry's sweep, as the connect timeout
// is. A plain service never comes here.

import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { ServiceSnapshot } from '../core/snapshot';
import type { TlsTerminator } from '../core/tls';
import type { TcpHandle } from './raw';
import type { Accepted, SessionHost } from './relay';
import type { TlsFacts } from './events';
import { Session } from './transport-net';

const TLS_SESSION = Symbol('lemonade.tls');

interface ServerSocket extends TLSSocket {
  [TLS_SESSION]: TlsSession;
}

/**
 * The session of a connection routed to a terminating service. `conn`: the accepted connection (a
 * net.Socket, or a raw handle); `initial`: the bytes the listener read from it to route it.
 */
export function tlsSession(conn: unknown, initial: Buffer | null, snap: ServiceSnapshot, tls: TlsTerminator, host: SessionHost, a: Readonly<Accepted>): TlsSession {
  const raw = conn instanceof Socket ? conn : new Socket({ handle: conn as TcpHandle, allowHalfOpen: true, pauseOnCreate: true } as ConstructorParameters<typeof Socket>[0]);
  raw.on('error', ignore); // the TLS socket over it reports the connection's errors
  // read again by the TLS socket first, as bytes the connection had buffered
  if (initial !== null && initial.length > 0) raw.unshift(initial);
  const sock = new TLSSocket(raw, tls.socketOptions) as ServerSocket;
  return new TlsSession(sock, tls, snap, host, a);
}

const NOT_SECURE: Omit<TlsFacts, 'sni'> = { secure: false, version: null, cipher: null, alpn: null, clientCertSubject: null, handshakeMs: -1, resumed: false };

export class TlsSession extends Session {
  private secure = false;
  private timedOut = false;
  private readonly handshakeFrom: number;
  private readonly handshakeDeadline: number;
  private facts: TlsFacts | null = null;

  constructor(
    private readonly sock: ServerSocket,
    private readonly term: TlsTerminator,
    snap: ServiceSnapshot,
    private readonly clock: SessionHost,
    a: Readonly<Accepted>,
  ) {
    super(sock, snap, clock, a);
    sock[TLS_SESSION] = this;
    this.handshakeFrom = clock.now();
    this.handshakeDeadline = this.handshakeFrom + term.handshakeTimeoutMs;
    sock.once('secure', onSecure);
  }

  /** The handshake is under way (the TLS socket began it); the relay starts once it is done. */
  start(): void {}

  /** What the handshake learned, for the access log and the metrics. */
  get tls(): TlsFacts {
    return this.facts ?? { ...NOT_SECURE, sni: this.serverName() };
  }

  private serverName(): string | null {
    const n = (this.sock as unknown as { servername?: string | false }).servername;
    return typeof n === 'string' && n !== '' ? n : null;
  }

  sweep(now: number): void {
    if (this.secure) {
      super.sweep(now);
      return;
    }
    if (!this.timedOut && now >= this.handshakeDeadline) {
      this.timedOut = true;
      this.cut('tls_handshake_timeout');
    }
  }

  protected readsOnread(): boolean {
    return false;
  }

  /** @internal */ onClientError(): void {
    if (!this.secure) this.ended('tls_handshake_failed');
    super.onClientError();
  }

  /** @internal */ onSecure(): void {
    const s = this.sock;
    if (this.timedOut || s.destroyed) return;
    // the client certificate's verification (a tls.Server does this for its own sockets)
    const verified = s.getPeerX509Certificate() !== undefined && !verifyError(s);
    if (this.term.requireClientCert && !verified) {
      this.ended('tls_handshake_failed');
      this.destroy();
      return;
    }
    this.secure = true;
    const alpn = s.alpnProtocol;
    this.facts = {
      secure: true,
      version: s.getProtocol(),
      cipher: s.getCipher()?.name ?? null,
      sni: this.serverName(),
      alpn: typeof alpn === 'string' ? alpn : null,
      clientCertSubject: verified ? subjectOf(s) : null,
      handshakeMs: this.clock.now() - this.handshakeFrom,
      resumed: s.isSessionReused(),
    };
    super.start();
  }
}

function onSecure(this: ServerSocket): void {
  this[TLS_SESSION].onSecure();
}

/** The client certificate's subject, most specific first ("CN=alice,O=example"); null without one. */
function subjectOf(s: TLSSocket): string | null {
  const x = s.getPeerX509Certificate();
  if (x === undefined) return null;
  return x.subject.split('\n').reverse().join(',');
}

/** The handshake's verification error of the client certificate, null when it chained to client_ca. */
function verifyError(s: TLSSocket): Error | null {
  const h = (s as unknown as { _handle: { verifyError?: () => Error | null } | null })._handle;
  if (!h || typeof h.verifyError !== 'function') return new Error('no TLS handle');
  return h.verifyError();
}

function ignore(): void {}
