// The net.Socket transport: every connection a net.Socket, as Node's own net module makes it
// (the relay when this Node's raw handles are not used, see ./raw.ts). Session relays a client
// socket to a backend socket (the relay core, ./relay.ts, does the rest); SocketInspection reads
// its ClientHello through 'data' events. The backend socket releases its lease exactly once,
// when it closes.
//
// Hot path (see `npm run bench`): no closure is made per connection. Every event listener is
// one module-level function shared by all connections; it finds its session through a symbol
// property on the socket (`this` is the emitting socket). Data is relayed with the sockets'
// `onread` callback (see "Reading" below) and write(), stopping the reader when write() returns
// false with bytes still queued and resuming it on the writer's 'drain'. There is no timer per
// connection: the connect timeout and the idle timeout are checked by the registry's one coarse
// sweep (ConnectionRegistry, ./registry.ts), and a read only sets a flag.
//
// A service with backend_tls (core/tls.ts's TlsOriginator) connects its backend leg as TCP, then
// puts a TLS client over it (onTcpConnect): the leg counts as connected once the handshake is done
// and the backend verified, and it is read as a terminating session's client is (maybeBulk).
// Whatever the listener's transport, such a service's sessions are this one (netSession()); a
// plain one on this relay pays one field read per attempt (openBackend), and the raw relay none.

import net, { Socket, type OnReadOpts, type Server, type SocketConstructorOpts } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { formatHostPort } from '../config/address';
import type { ProxyEndpoints } from '../core/proxy-protocol';
import type { ServiceSnapshot } from '../core/snapshot';
import type { Lease } from '../core/stats';
import type { TlsOriginator } from '../core/tls';
import { keepAliveSeconds, type TcpHandle } from './raw';
import { Inspection } from './inspection';
import { Relay, type Accepted, type SessionHost } from './relay';
import { SHARED, bytesOf, nextRead, takeRead } from './read-buffer';
import type { Transport } from './transport';

const SESSION = Symbol('lemonade.session');
const LEASE = Symbol('lemonade.lease');

interface ClientSocket extends Socket {
  [SESSION]: Session;
}
interface BackendSocket extends Socket {
  [SESSION]: Session;
  /** null once a socket for the name's next address took it over */
  [LEASE]: Lease | null;
}

// Reading. With `onread`, Node reads into a buffer we give it and calls one function with the
// byte count: no 64 KiB allocation per read (and no shrink of it to the bytes read), no Readable
// push, no 'data' emit. Which buffer the next read uses (./read-buffer.ts) is decided right after
// each read by the `buffer` generator (Node calls it right after the callback, synchronously),
// from what the callback left in `nextBuffer`. After each write, writableLength === 0 means the
// write completed synchronously and nothing references the buffer any more.
// Returning false from the callback stops reading (the handle's readStop()); Socket.resume()
// restarts it in this mode (Node 20's net.js: resume() calls tryReadStart() when kBuffer is set).
/** the buffer the next read of the socket that just read goes into (set by relay()) */
let nextBuffer: Buffer | null = null;

function nextReadBuffer(): Buffer {
  const b = nextBuffer ?? SHARED;
  nextBuffer = null;
  return b;
}

/**
 * Write the `n` bytes read into `buf` to `dst`; false to stop reading until `dst`'s 'drain'.
 * write() returns false for any chunk of 16 KiB or more (the socket's highWaterMark), even when
 * the kernel took all of it at once; stopping then would cost a readStop() and a readStart() per
 * big read. So reading stops only when write() said so and bytes are still queued: then 'drain'
 * comes once they are written (write() returned false, so the Writable owes a 'drain'). When
 * write() returned true, 'drain' is not owed, so reading must go on even if a little is queued
 * (below the highWaterMark, as with a plain 'data' relay).
 */
function relay(buf: Buffer, n: number, dst: Socket): boolean {
  const taken = takeRead(buf, n);
  const ok = dst.write(bytesOf(taken, n));
  const queued = dst.writableLength > 0;
  nextBuffer = nextRead(taken, n, queued);
  return ok || !queued;
}

const BACKEND_OPTIONS = {
  allowHalfOpen: true,
  onread: { buffer: nextReadBuffer, callback: onBackendRead as unknown as OnReadOpts['callback'] },
} as SocketConstructorOpts;

/** The TCP leg under a TLS socket to a backend: read by the TLS layer, not with onread. */
const TLS_TCP_OPTIONS: SocketConstructorOpts = { allowHalfOpen: true };

// An accepted socket is made by the server (net.js onconnection) without an `onread` option. It
// gets the same mode after accept by doing what the Socket constructor and initSocketHandle()
// do with that option: set the socket's three onread properties (internal symbols, found once by
// their names) and switch the handle to the user buffer (handle.useUserBuffer). The socket is
// still paused (pauseOnConnect: nothing read yet), so no byte can be on the other path. When the
// internals are not there (another Node), the client is relayed with 'data' events instead.
interface OnreadKeys {
  readonly buffer: symbol;
  readonly callback: symbol;
  readonly gen: symbol;
}
let onreadKeys: OnreadKeys | null | undefined;

function findOnreadKeys(c: Socket): OnreadKeys | null {
  const by = new Map(Object.getOwnPropertySymbols(c).map((k) => [k.description, k]));
  const buffer = by.get('kBuffer');
  const callback = by.get('kBufferCb');
  const gen = by.get('kBufferGen');
  return buffer && callback && gen ? { buffer, callback, gen } : null;
}

/** Does this Node let accepted sockets read with onread (the net.Socket relay's fast path)? For a test. */
export function clientOnreadAvailable(): boolean {
  const s = new Socket();
  const ok = findOnreadKeys(s) !== null;
  s.destroy();
  return ok;
}

/** Switch an accepted, paused, unread socket to onread mode; false if this Node cannot. */
function useOnread(c: ClientSocket): boolean {
  const h = (c as unknown as { _handle: { reading?: boolean } | null })._handle;
  if (!h || h.reading) return false;
  return switchToOnread(c, onClientRead);
}

/**
 * Give `s`'s next reads to `callback` in onread mode (its handle's useUserBuffer), as the Socket
 * constructor does with that option; false if this Node cannot, or if bytes are buffered in the
 * Readable (they would be read after the ones that follow them).
 */
function switchToOnread(s: Socket, callback: (this: never, n: number, buf: Buffer) => boolean): boolean {
  if (onreadKeys === undefined) onreadKeys = findOnreadKeys(s);
  const k = onreadKeys;
  const h = (s as unknown as { _handle: { useUserBuffer?: (b: Buffer) => void } | null })._handle;
  if (!k || !h || typeof h.useUserBuffer !== 'function' || s.readableLength > 0) return false;
  const o = s as unknown as Record<symbol, unknown>;
  if (o[k.buffer] !== null) return false; // already in onread mode, or the properties changed meaning
  o[k.callback] = callback;
  o[k.gen] = nextReadBuffer;
  o[k.buffer] = SHARED;
  h.useUserBuffer(SHARED);
  return true;
}

// A TLS socket reads with 'data' events: a handshake and a few small exchanges cost less that
// way. Its first chunk of a full record's plaintext (a TLS record holds 16 KiB at most) says the
// connection moves bulk data: from then on it reads with onread into the relay's buffers, as a
// plain socket does (no Buffer per record). The switch is made in the 'data' listener, when
// nothing is buffered behind the chunk.
const BULK_CHUNK = 16 * 1024;

/** In `s`'s 'data' listener `data`: a bulk chunk moves `s` to onread with `callback`. */
function maybeBulk(s: Socket, chunk: Buffer, data: (this: never, chunk: Buffer) => void, callback: (this: never, n: number, buf: Buffer) => boolean): void {
  if (chunk.length < BULK_CHUNK || s.readableLength > 0) return;
  if (switchToOnread(s, callback)) s.off('data', data);
}

export class Session extends Relay {
  private backend: BackendSocket | null = null;
  private client: ClientSocket;

  constructor(client: Socket, snap: ServiceSnapshot, host: SessionHost, a: Readonly<Accepted>) {
    super(snap, host, a);
    const c = client as ClientSocket;
    this.client = c;
    if (snap.proxy.tcpKeepaliveMs !== 0) c.setKeepAlive(true, keepAliveSeconds(snap.proxy.tcpKeepaliveMs) * 1000); // the TCP socket under a terminating service's TLS too
    c[SESSION] = this;
    c.on('error', onClientError);
    c.on('close', onClientClose);
  }

  /** Relay `client` from now on, before the backend is dialled (a TLS socket over the connection first read here). */
  protected takeClient(client: Socket): void {
    const old = this.client;
    old.off('error', onClientError);
    old.off('close', onClientClose);
    const c = client as ClientSocket;
    this.client = c;
    c[SESSION] = this;
    c.on('error', onClientError);
    c.on('close', onClientClose);
  }

  destroy(): void {
    this.client.destroy();
    this.backend?.destroy();
  }

  /** Start reading the client: onread, or 'data' events when this Node cannot (or its first bytes were read with them). */
  protected readClient(c: Socket): void {
    if (!useOnread(c as ClientSocket)) c.on('data', onClientData);
  }

  /** A TLS client reads with 'data' events until it moves bulk data (maybeBulk). */
  protected readTlsClient(c: Socket): void {
    c.on('data', onTlsClientData);
  }

  protected closeClient(): void {
    this.client.destroy();
  }

  protected holdClient(): boolean {
    const c = this.client;
    c.on('data', onQueuedData);
    c.on('end', onQueuedEnd);
    c.prependListener('close', onQueuedClose);
    c.resume();
    return true;
  }

  protected releaseClient(): void {
    const c = this.client;
    c.pause();
    c.off('data', onQueuedData);
    c.off('end', onQueuedEnd);
    c.off('close', onQueuedClose);
  }

  /** @internal A queued client's bytes: held; reading pauses once enough are. */
  onQueuedData(chunk: Buffer): void {
    if (!this.clientHeld(chunk, chunk.length)) this.client.pause();
  }

  /** @internal A queued client's end of file, or its close (after an error: a reset). */
  onQueuedEnd(cause: 'client_closed' | 'client_reset'): void {
    this.clientLeftQueue(cause);
  }

  protected peerAddress(): string | undefined {
    return this.client.remoteAddress;
  }

  protected endpoints(): ProxyEndpoints {
    const c = this.client;
    return { srcAddress: c.remoteAddress ?? '', srcPort: c.remotePort ?? 0, dstAddress: c.localAddress ?? '', dstPort: c.localPort ?? 0 };
  }

  protected openBackend(lease: Lease): void {
    if (this.snap.backendTls !== null) {
      this.openTlsBackend(lease);
      return;
    }
    const s = new Socket(BACKEND_OPTIONS) as BackendSocket;
    s[SESSION] = this;
    s[LEASE] = lease;
    this.backend = s;
    s.setNoDelay(true); // before connect: applied when the handle is made, no system call now
    s.on('connect', onBackendConnect);
    s.on('error', onBackendError);
    s.on('close', onBackendClose);
  }

  /**
   * A backend leg that will speak TLS: a TCP socket connected as any other, under a TLS socket
   * once connected (onTcpConnect). The connect deadline runs on until the handshake is done.
   */
  private openTlsBackend(lease: Lease): void {
    const s = new Socket(TLS_TCP_OPTIONS) as BackendSocket;
    s[SESSION] = this;
    s[LEASE] = lease;
    this.backend = s;
    s.setNoDelay(true);
    s.on('connect', onBackendTcpConnect);
    s.on('error', onBackendError);
    s.on('close', onBackendClose);
  }

  /**
   * The TCP leg connected: a TLS client over it, verified as the backend_tls table says, takes
   * its place (and its lease: its close closes the TCP leg). A failed handshake or verification
   * is the leg's error, a failed connect (retried on another backend).
   */
  /** @internal */ onTcpConnect(s: BackendSocket): void {
    if (s !== this.backend) return;
    const o: TlsOriginator = this.snap.backendTls!;
    if (this.clientClosed) {
      s.destroy();
      return;
    }
    // the PROXY header goes first and in clear, as HAProxy's send-proxy on an ssl server line
    const mode = this.snap.proxy.proxyProtocol;
    if (mode !== 'off') s.write(this.proxyHeader(mode));
    const t = connectTls({ socket: s, ...o.optionsFor(this.target!.spec.host) }) as unknown as BackendSocket;
    t[SESSION] = this;
    t[LEASE] = s[LEASE];
    s[LEASE] = null;
    this.backend = t;
    t.on('secureConnect', onBackendSecure);
    t.on('error', onBackendError);
    t.on('close', onBackendClose);
  }

  /** @internal */ onSecureConnect(t: BackendSocket): void {
    if (t !== this.backend) return;
    t.on('data', onBackendData); // a TLS socket over a socket reads with 'data' events
    this.onConnect(t);
  }

  /** @internal */ onBackendData(chunk: Buffer): void {
    this.countOut(chunk.length);
    const s = this.backend!;
    if (!this.client.write(chunk)) s.pause();
    else maybeBulk(s, chunk, onBackendData, onBackendRead);
  }

  protected replaceBackend(): void {
    const old = this.backend!;
    const lease = old[LEASE];
    old[LEASE] = null;
    old.destroy();
    this.openBackend(lease!);
  }

  protected dropBackend(): void {
    const s = this.backend;
    this.backend = null;
    this.backendClosed = true;
    s?.destroy(); // its 'close' releases its lease
  }

  protected awaitingDial(): boolean {
    const s = this.backend;
    return s !== null && !s.destroyed;
  }

  protected dial(address: string, family: number, port: number): void {
    const s = this.backend!;
    if (this.snap.proxy.tcpKeepaliveMs !== 0) s.setKeepAlive(true, keepAliveSeconds(this.snap.proxy.tcpKeepaliveMs) * 1000); // net.js applies it once connected (a backend_tls leg's TCP too)
    s.connect({ port, host: address, family });
  }

  protected send(bytes: Buffer): void {
    this.backend!.write(bytes);
  }

  /** @internal */ onConnect(s: BackendSocket): void {
    if (s !== this.backend) return;
    const c = this.client;
    this.markConnected();
    if (this.clientClosed) {
      s.destroy();
      return;
    }
    this.sendFirst();
    // a client whose first bytes the listener read is no longer in its first state: 'data' events
    this.readClient(c);
    if (c.readableEnded) this.onClientEnd(); // its end of file came while the listener read it
    else c.on('end', onClientEnd);
    c.on('drain', onClientDrain);
    s.on('end', onBackendEnd);
    s.on('drain', onBackendDrain);
    c.resume();
  }

  /** @internal */ onClientRead(buf: Buffer, n: number): boolean {
    this.countIn(n);
    return relay(buf, n, this.backend!);
  }

  /** @internal */ onClientData(chunk: Buffer): void {
    this.countIn(chunk.length);
    if (!this.backend!.write(chunk)) this.client.pause();
  }

  /** @internal */ onTlsClientData(chunk: Buffer): void {
    this.countIn(chunk.length);
    const c = this.client;
    if (!this.backend!.write(chunk)) c.pause();
    else maybeBulk(c, chunk, onTlsClientData, onClientRead);
  }

  /** @internal */ onBackendRead(buf: Buffer, n: number): boolean {
    this.countOut(n);
    return relay(buf, n, this.client);
  }

  /** @internal */ onClientDrain(): void {
    this.backend?.resume();
  }

  /** @internal */ onBackendDrain(): void {
    this.client.resume();
  }

  /** @internal */ onClientEnd(): void {
    this.ended('client_closed');
    this.backend?.end();
  }

  /** @internal */ onBackendEnd(): void {
    this.ended('backend_closed');
    if (!this.client.destroyed) this.client.end();
  }

  /** @internal */ onBackendError(s: BackendSocket, err: Error): void {
    if (s !== this.backend) return;
    if (this.connected) {
      this.ended('backend_reset');
      this.client.destroy();
      return;
    }
    this.backendFailed(err);
  }

  /** @internal */ onClientError(): void {
    this.ended('client_reset');
    this.backend?.destroy();
  }

  /** @internal */ onClientClose(): void {
    this.clientClosed = true;
    const s = this.backend;
    if (s && !this.backendClosed) {
      if (!this.connected) s.destroy();
      else if (this.client.readableEnded && !s.destroyed) endThenDestroy(s);
      else s.destroy();
    }
    this.maybeFinish();
  }

  /** @internal */ onBackendClose(s: BackendSocket): void {
    if (s !== this.backend) return;
    this.backendClosed = true;
    if (!this.clientClosed) {
      const c = this.client;
      if (s.readableEnded && !c.destroyed) endThenDestroy(c);
      else c.destroy();
    }
    this.maybeFinish();
  }
}

// Shared listeners: `this` is the socket that emitted.

function onClientError(this: ClientSocket): void {
  this[SESSION].onClientError();
}
function onClientClose(this: ClientSocket): void {
  this[SESSION].onClientClose();
}
function onClientRead(this: ClientSocket, n: number, buf: Buffer): boolean {
  return this[SESSION].onClientRead(buf, n);
}
function onClientData(this: ClientSocket, chunk: Buffer): void {
  this[SESSION].onClientData(chunk);
}
function onTlsClientData(this: ClientSocket, chunk: Buffer): void {
  this[SESSION].onTlsClientData(chunk);
}
function onClientEnd(this: ClientSocket): void {
  this[SESSION].onClientEnd();
}
function onClientDrain(this: ClientSocket): void {
  this[SESSION].onClientDrain();
}
function onQueuedData(this: ClientSocket, chunk: Buffer): void {
  this[SESSION].onQueuedData(chunk);
}
function onQueuedEnd(this: ClientSocket): void {
  this[SESSION].onQueuedEnd('client_closed');
}
function onQueuedClose(this: ClientSocket, hadError: boolean): void {
  this[SESSION].onQueuedEnd(hadError ? 'client_reset' : 'client_closed');
}
function onBackendConnect(this: BackendSocket): void {
  this[SESSION].onConnect(this);
}
function onBackendTcpConnect(this: BackendSocket): void {
  this[SESSION].onTcpConnect(this);
}
function onBackendSecure(this: BackendSocket): void {
  this[SESSION].onSecureConnect(this);
}
function onBackendData(this: BackendSocket, chunk: Buffer): void {
  this[SESSION].onBackendData(chunk);
}
function onBackendError(this: BackendSocket, err: Error): void {
  this[SESSION].onBackendError(this, err);
}
function onBackendClose(this: BackendSocket): void {
  // every backend socket releases its own lease, exactly once, on its own 'close'
  this[LEASE]?.release();
  this[SESSION].onBackendClose(this);
}
function onBackendRead(this: BackendSocket, n: number, buf: Buffer): boolean {
  return this[SESSION].onBackendRead(buf, n);
}
function onBackendEnd(this: BackendSocket): void {
  this[SESSION].onBackendEnd();
}
function onBackendDrain(this: BackendSocket): void {
  this[SESSION].onBackendDrain();
}

/** end() the socket (FIN after what is queued), then destroy it once that is flushed. */
function endThenDestroy(s: Socket): void {
  s.end(destroyAfterEnd.bind(s));
}
function destroyAfterEnd(this: Socket): void {
  this.destroy();
}

/** The listener's side of the net.Socket transport. */
export const NET_TRANSPORT: Transport<Socket> = {
  name: 'net.Socket',
  server(accept): Server {
    return net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (c: Socket) => {
      c.on('error', ignore);
      accept(c);
    });
  },
  remoteAddress: (c) => c.remoteAddress,
  remoteEndpoint: (c) => formatHostPort({ host: c.remoteAddress ?? '', port: c.remotePort ?? 0 }),
  close: (c) => c.destroy(),
  inspection: (c, address, acceptedAt, timeoutMs, host) => new SocketInspection(c, address, acceptedAt, timeoutMs, host),
  session: (c, snap, host, a) => new Session(c, snap, host, a),
};

function ignore(): void {}

/**
 * A net.Socket session over an accepted connection whatever the listener's transport accepted it
 * as (a raw handle is wrapped as net.js wraps an accepted one): for a service that speaks TLS to
 * its backends, which the raw relay cannot.
 */
export function netSession(conn: unknown, snap: ServiceSnapshot, host: SessionHost, a: Readonly<Accepted>): Session {
  const c = conn instanceof Socket ? conn : new Socket({ handle: conn as TcpHandle, allowHalfOpen: true, pauseOnCreate: true } as SocketConstructorOpts);
  return new Session(c, snap, host, a);
}

const INSPECTION = Symbol('lemonade.inspection');
interface InspectedSocket extends Socket {
  [INSPECTION]: SocketInspection;
}

/** An inspection on a net.Socket. */
class SocketInspection extends Inspection<Socket> {
  start(): boolean {
    const c = this.conn as InspectedSocket;
    c[INSPECTION] = this;
    c.on('data', onSocketData);
    c.on('end', onSocketEnd);
    c.on('close', onSocketClose);
    c.resume();
    return true;
  }

  protected close(): void {
    this.conn.destroy();
  }

  /** Paused with what it holds kept for the session, which takes the socket over. */
  protected stopReading(): void {
    const c = this.conn;
    c.pause();
    c.off('data', onSocketData);
    c.off('end', onSocketEnd);
    c.off('close', onSocketClose);
  }

  /** @internal */ onData(chunk: Buffer): void {
    this.received(chunk, chunk.length);
  }
  /** @internal */ onEnd(): void {
    this.ended();
  }
  /** @internal */ onClose(hadError: boolean): void {
    this.destroy(hadError ? 'client_reset' : 'client_closed');
  }
}

function onSocketData(this: InspectedSocket, chunk: Buffer): void {
  this[INSPECTION].onData(chunk);
}
function onSocketEnd(this: InspectedSocket): void {
  this[INSPECTION].onEnd();
}
function onSocketClose(this: InspectedSocket, hadError: boolean): void {
  this[INSPECTION].onClose(hadError);
}
