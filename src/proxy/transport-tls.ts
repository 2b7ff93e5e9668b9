// TLS termination: a service with a tls table (core/tls.ts) relays the decrypted bytes of a
// TLSSocket over the accepted connection to its plaintext backends. The connection is accepted,
// routed (by the ClientHello's server name when the address reads it) and admitted as any other,
// whatever the listener's transport; only then, for a service that terminates, it becomes a
// net.Socket (a raw handle is wrapped as net.js wraps an accepted one) under a server TLSSocket.
// The bytes read to route it go back under the TLS layer. Once the handshake is done, it is the
// net.Socket session (./transport-net.ts): pick, connect with retries, relay (the TLS socket
// with 'data' events until it moves bulk data, then onread: maybeBulk), timeouts, accounting.
// The handshake deadline is checked by the registry's sweep, as the connect timeout is. A plain
// service never comes here.
//
// PostgreSQL's clients ask before their ClientHello: an 8-byte SSLRequest, answered 'S' (then TLS
// follows on the same connection), and with GSSAPI credentials a GSSENCRequest first, answered
// 'N' (no GSSAPI encryption here: the client goes on to its SSLRequest). So the first bytes are
// read here before the TLS layer is put over the connection (when the listener did not read them
// to route it), within the handshake deadline: at most two such requests, anything else is TLS.
// With proxy_protocol = "v2", the header carries what the handshake learned (HAProxy's
// send-proxy-v2-ssl-cn TLVs, core/proxy-protocol.ts).

import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL, encodeProxyHeader, tlsTlvs } from '../core/proxy-protocol';
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
interface FirstSocket extends Socket {
  [TLS_SESSION]: TlsSession;
}

/**
 * The session of a connection routed to a terminating service. `conn`: the accepted connection (a
 * net.Socket, or a raw handle); `initial`: the bytes the listener read from it to route it.
 */
export function tlsSession(conn: unknown, initial: Buffer | null, snap: ServiceSnapshot, tls: TlsTerminator, host: SessionHost, a: Readonly<Accepted>): TlsSession {
  const raw = conn instanceof Socket ? conn : new Socket({ handle: conn as TcpHandle, allowHalfOpen: true, pauseOnCreate: true } as ConstructorParameters<typeof Socket>[0]);
  raw.on('error', ignore); // the TLS socket over it reports the connection's errors
  return new TlsSession(raw as FirstSocket, initial, tls, snap, host, a);
}

const NOT_SECURE: Omit<TlsFacts, 'sni'> = { secure: false, version: null, cipher: null, alpn: null, clientCertSubject: null, handshakeMs: -1, resumed: false };

// PostgreSQL's requests before TLS: length 8, then the code 80877103 (SSLRequest) or 80877104 (GSSENCRequest)
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const GSSENC_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);
const REQUEST_SIZE = 8;
const ANSWER_TLS = Buffer.from('S', 'latin1');
const ANSWER_NO_GSS = Buffer.from('N', 'latin1');

type First = 'tls' | 'more' | 'ssl' | 'gss';

/** What the first bytes of a connection to a terminating service are. */
export function firstBytes(b: Buffer): First {
  // a TLS record starts 0x16 (an SSLv2-style hello, 0x80): never a zero byte
  if (b.length === 0) return 'more';
  if (b[0] !== 0) return 'tls';
  const n = Math.min(b.length, REQUEST_SIZE);
  const ssl = SSL_REQUEST.compare(b, 0, n, 0, n) === 0;
  const gss = GSSENC_REQUEST.compare(b, 0, n, 0, n) === 0;
  if (!ssl && !gss) return 'tls';
  if (b.length < REQUEST_SIZE) return 'more';
  return ssl ? 'ssl' : 'gss';
}

export class TlsSession extends Session {
  /** the server TLS socket, once the first bytes said TLS */
  private sock: ServerSocket | null = null;
  private secure = false;
  private timedOut = false;
  private readonly handshakeFrom: number;
  private readonly handshakeDeadline: number;
  private facts: TlsFacts | null = null;
  /** the first bytes read before TLS and not yet decided on (part of a PostgreSQL request) */
  private held: Buffer | null = null;
  /** the first bytes are being read here ('data' on the accepted connection) */
  private readingFirst = false;
  /** a GSSENCRequest was answered (a second one is not a PostgreSQL client's) */
  private gssAnswered = false;
  /** the client certificate's verification, read at 'secure' for the PROXY header */
  private verifyCode = 1;

  constructor(
    private readonly raw: FirstSocket,
    initial: Buffer | null,
    private readonly term: TlsTerminator,
    snap: ServiceSnapshot,
    private readonly clock: SessionHost,
    a: Readonly<Accepted>,
  ) {
    super(raw, snap, clock, a);
    raw[TLS_SESSION] = this;
    this.handshakeFrom = clock.now();
    this.handshakeDeadline = this.handshakeFrom + term.handshakeTimeoutMs;
    if (initial !== null && initial.length > 0) this.onFirstBytes(initial);
    else this.readFirst();
  }

  /** The handshake is under way (the TLS socket began it); the relay starts once it is done. */
  start(): void {}

  /** What the handshake learned, for the access log and the metrics. */
  get tls(): TlsFacts {
    return this.facts ?? { ...NOT_SECURE, sni: this.serverName() };
  }

  private serverName(): string | null {
    const n = (this.sock as unknown as { servername?: string | false } | null)?.servername;
    return typeof n === 'string' && n !== '' ? n : null;
  }

  private readFirst(): void {
    const raw = this.raw;
    this.readingFirst = true;
    raw.on('data', onFirstData);
    raw.on('end', onFirstEnd);
    raw.resume();
  }

  /**
   * Stop reading here, the handle's reads included (a paused net.Socket's handle still reads), so
   * that the TLS layer reads the next bytes after the ones given back to it.
   */
  private stopFirst(): void {
    const raw = this.raw;
    if (this.readingFirst) {
      this.readingFirst = false;
      raw.off('data', onFirstData);
      raw.off('end', onFirstEnd);
      raw.pause();
    }
    const h = (raw as unknown as { _handle: { reading?: boolean; readStop?: () => number } | null })._handle;
    if (h && h.reading === true && typeof h.readStop === 'function') {
      h.reading = false;
      h.readStop();
    }
  }

  /** @internal */ onFirstBytes(chunk: Buffer): void {
    const b = this.held === null ? chunk : Buffer.concat([this.held, chunk]);
    this.held = null;
    const kind = firstBytes(b);
    if (kind === 'more') {
      this.held = b;
      if (!this.readingFirst) this.readFirst();
      return;
    }
    if (kind === 'ssl') {
      this.raw.write(ANSWER_TLS);
      this.startTls(b.subarray(REQUEST_SIZE));
      return;
    }
    if (kind === 'gss' && !this.gssAnswered) {
      this.gssAnswered = true;
      this.raw.write(ANSWER_NO_GSS);
      this.onFirstBytes(b.subarray(REQUEST_SIZE));
      return;
    }
    this.startTls(b);
  }

  /** @internal */ onFirstEnd(): void {
    // the client went before any TLS: nothing said is a client that closed, part of a request a failed handshake
    this.ended(this.held === null && !this.gssAnswered ? 'client_closed' : 'tls_handshake_failed');
    this.destroy();
  }

  /** Put the TLS layer over the connection; `first`: bytes read here that are its first ones. */
  private startTls(first: Buffer): void {
    const raw = this.raw;
    this.stopFirst();
    if (raw.destroyed) return;
    // read again by the TLS socket first, as bytes the connection had buffered
    if (first.length > 0) raw.unshift(first);
    const sock = new TLSSocket(raw, this.term.socketOptions) as ServerSocket;
    sock[TLS_SESSION] = this;
    sock.once('secure', onSecure);
    this.sock = sock;
    this.takeClient(sock);
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

  protected readClient(c: Socket): void {
    this.readTlsClient(c);
  }

  /** The v2 header carries what the handshake learned (v1 has no room for it). */
  protected proxyHeader(mode: 'v1' | 'v2'): Buffer {
    const e = this.clientEndpoints();
    const f = this.facts;
    if (mode === 'v1' || f === null) return encodeProxyHeader(mode, e);
    const cert = this.sock!.getPeerX509Certificate();
    let client = PP2_CLIENT_SSL;
    if (cert !== undefined) client |= PP2_CLIENT_CERT_SESS | (f.resumed ? 0 : PP2_CLIENT_CERT_CONN);
    const tlvs = tlsTlvs({ alpn: f.alpn, authority: f.sni, version: f.version, client, verify: this.verifyCode, cn: cert !== undefined ? commonName(cert.subject) : null });
    return encodeProxyHeader(mode, e, tlvs);
  }

  /** @internal */ onClientError(): void {
    if (!this.secure) this.ended('tls_handshake_failed');
    super.onClientError();
  }

  /** @internal */ onSecure(): void {
    const s = this.sock!;
    if (this.timedOut || s.destroyed) return;
    // the client certificate's verification (a tls.Server does this for its own sockets)
    const hasCert = s.getPeerX509Certificate() !== undefined;
    const error = hasCert ? verifyError(s) : null;
    const verified = hasCert && error === null;
    if (this.term.requireClientCert && !verified) {
      this.ended('tls_handshake_failed');
      this.destroy();
      return;
    }
    this.secure = true;
    this.verifyCode = verified ? 0 : hasCert ? x509VerifyCode(error) : 1;
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
function onFirstData(this: FirstSocket, chunk: Buffer): void {
  this[TLS_SESSION].onFirstBytes(chunk);
}
function onFirstEnd(this: FirstSocket): void {
  this[TLS_SESSION].onFirstEnd();
}

/** The client certificate's subject, most specific first ("CN=alice,O=example"); null without one. */
function subjectOf(s: TLSSocket): string | null {
  const x = s.getPeerX509Certificate();
  if (x === undefined) return null;
  return x.subject.split('\n').reverse().join(',');
}

/** The first common name of a subject as node:crypto writes it ("O=example\nCN=alice"), or null. */
export function commonName(subject: string): string | null {
  const m = /(?:^|\n)CN=([^\n]*)/.exec(subject);
  return m ? m[1]! : null;
}

/** The handshake's verification error of the client certificate, null when it chained to client_ca. */
function verifyError(s: TLSSocket): Error | null {
  const h = (s as unknown as { _handle: { verifyError?: () => Error | null } | null })._handle;
  if (!h || typeof h.verifyError !== 'function') return new Error('no TLS handle');
  return h.verifyError();
}

// OpenSSL's X509_V_ERR codes 2 to 23 (x509_vfy.h), by the names node:tls gives them
const X509_V_ERRORS = [
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'OUT_OF_MEM',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
];

/** The PROXY header's `verify` for a certificate that did not verify: OpenSSL's code, 1 (unspecified) for one not in the table. */
export function x509VerifyCode(error: Error | null): number {
  if (error === null) return 0;
  const i = X509_V_ERRORS.indexOf(String((error as NodeJS.ErrnoException).code));
  return i >= 0 ? i + 2 : 1;
}

function ignore(): void {}
