// One proxied client connection: pick → connect with a timeout → on failure before any byte,
// retry on a backend not yet tried → relay both ways with backpressure and half-close → idle
// timeout → release the backend's lease exactly once, when the backend socket closes.
//
// Hot path (see `npm run bench`): no closure is made per connection. Every event listener is
// one module-level function shared by all connections; it finds its session through a symbol
// property on the socket (`this` is the emitting socket). Data is relayed with the sockets'
// `onread` callback (see "Reading" below) and write(), stopping the reader when write() returns
// false with bytes still queued and resuming it on the writer's 'drain'. There is no timer per
// connection: the connect timeout and the idle timeout are checked by the registry's one coarse
// sweep (ConnectionRegistry, ./registry.ts), and a read only sets a flag.

import { Socket, type OnReadOpts, type SocketConstructorOpts } from 'node:net';
import type { ServiceSnapshot } from '../core/snapshot';
import type { Lease } from '../core/stats';
import { SessionBase, type SessionHost } from './session-base';
import { proxyHeader } from '../core/proxy-protocol';
import { cachedLookup } from '../core/cached-lookup';


const SESSION = Symbol('lemonade.session');
const LEASE = Symbol('lemonade.lease');

interface ClientSocket extends Socket {
  [SESSION]: Session;
}
interface BackendSocket extends Socket {
  [SESSION]: Session;
  [LEASE]: Lease;
}

// Reading. With `onread`, Node reads into a buffer we give it and calls one function with the
// byte count: no 64 KiB allocation per read (and no shrink of it to the bytes read), no Readable
// push, no 'data' emit. The catch is that write() keeps a reference to what it is given while it
// is queued (in the Writable's buffer, or in libuv when the kernel took only part of it), so the
// buffer read into must not be read into again until that write is done. Which buffer the next
// read uses is decided right after each read by the `buffer` generator (Node calls it right after
// the callback, synchronously), from what the callback left in `nextRead`:
// - every socket starts on SHARED, one buffer for all: a read into it is always copied out before
//   the write, so nothing ever references it and any socket may read into it at any time. A small
//   read's copy comes from Buffer's pool (cheap), and an idle connection holds no buffer at all.
// - a big read (one that a copy could not take from the pool) suggests more are coming: the
//   socket moves to a buffer of its own (the copy is made into it), written from without a copy.
//   After each write, writableLength === 0 means the write completed synchronously and nothing
//   references the buffer any more: it is read into again. Otherwise it stays with the queued
//   write (and is collected after it) and the socket gets a fresh one: copying instead would
//   cost a memcpy per read even when the kernel takes everything at once, the usual case.
// - a small read sends the socket back to SHARED, so a connection holds its own 64 KiB only
//   while its reads are big (a copy of a small read costs little).
// Returning false from the callback stops reading (the handle's readStop()); Socket.resume()
// restarts it in this mode (Node 20's net.js: resume() calls tryReadStart() when kBuffer is set).
const READ_SIZE = 64 * 1024;
const SMALL_READ = Buffer.poolSize >>> 1; // Buffer.allocUnsafe takes smaller sizes from its pool
const SHARED = Buffer.allocUnsafeSlow(READ_SIZE);
/** the buffer the next read of the socket that just read goes into (set by relay()) */
let nextRead: Buffer | null = null;

function nextReadBuffer(): Buffer {
  const b = nextRead ?? SHARED;
  nextRead = null;
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
  if (buf === SHARED) {
    if (n < SMALL_READ) {
      const copy = Buffer.allocUnsafe(n);
      SHARED.copy(copy, 0, 0, n);
      nextRead = SHARED;
      return dst.write(copy) || dst.writableLength === 0;
    }
    const own = Buffer.allocUnsafeSlow(READ_SIZE);
    SHARED.copy(own, 0, 0, n);
    buf = own;
  }
  const ok = dst.write(n === buf.length ? buf : buf.subarray(0, n));
  const queued = dst.writableLength > 0;
  nextRead = n < SMALL_READ ? SHARED : queued ? Buffer.allocUnsafeSlow(READ_SIZE) : buf;
  return ok || !queued;
}

const BACKEND_OPTIONS = {
  allowHalfOpen: true,
  onread: { buffer: nextReadBuffer, callback: onBackendRead as unknown as OnReadOpts['callback'] },
} as SocketConstructorOpts;

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
  if (onreadKeys === undefined) onreadKeys = findOnreadKeys(c);
  const k = onreadKeys;
  const h = (c as unknown as { _handle: { reading?: boolean; useUserBuffer?: (b: Buffer) => void } | null })._handle;
  if (!k || !h || typeof h.useUserBuffer !== 'function' || h.reading || c.readableLength > 0) return false;
  const o = c as unknown as Record<symbol, unknown>;
  if (o[k.buffer] !== null) return false; // already in onread mode, or the properties changed meaning
  o[k.callback] = onClientRead;
  o[k.gen] = nextReadBuffer;
  o[k.buffer] = SHARED;
  h.useUserBuffer(SHARED);
  return true;
}

export class Session extends SessionBase {
  private backend: BackendSocket | null = null;
  private readonly client: ClientSocket;

  constructor(
    client: Socket,
    snap: ServiceSnapshot,
    host: SessionHost,
  ) {
    super(snap, host);
    this.client = client as ClientSocket;
    this.client[SESSION] = this;
  }

  /** Start: the client socket is paused (pauseOnConnect) and already counted as active. */
  start(): void {
    const c = this.client;
    c.on('error', onClientError);
    c.on('close', onClientClose);
    this.attempt();
  }

  destroy(): void {
    this.client.destroy();
    this.backend?.destroy();
  }

  protected connectTimedOut(error: Error): void {
    this.backend?.destroy(error);
  }

  protected clientAddress(): string | undefined {
    return this.client.remoteAddress;
  }

  private attempt(): void {
    const target = this.pickTarget();
    if (!target) {
      this.client.destroy();
      return;
    }
    const s = new Socket(BACKEND_OPTIONS) as BackendSocket;
    s[SESSION] = this;
    s[LEASE] = target.load.acquire();
    this.backend = s;
    s.setNoDelay(true); // before connect: applied when the handle is made, no system call now
    s.on('connect', onBackendConnect);
    s.on('error', onBackendError);
    s.on('close', onBackendClose);
    const lookup = cachedLookup(target.spec);
    if (lookup === undefined) s.connect(target.spec.port, target.spec.host);
    else s.connect({ port: target.spec.port, host: target.spec.host, lookup }); // a cached host name
  }

  /** @internal */ onConnect(s: BackendSocket): void {
    if (s !== this.backend) return;
    const c = this.client;
    this.markConnected();
    if (this.clientClosed) {
      s.destroy();
      return;
    }
    const mode = this.snap.proxy.proxyProtocol;
    if (mode !== 'off') s.write(proxyHeader(mode, c));
    const first = this.initial;
    if (first !== null && first.length > 0) {
      this.initial = null;
      this.countIn(first.length);
      s.write(first);
    }
    // a client whose first bytes the listener read is no longer in its first state: 'data' events
    if (!useOnread(c)) c.on('data', onClientData);
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
    // the failed socket's 'close' releases its lease; detach it from this session now
    this.backend = null;
    this.backendClosed = true;
    if (this.connectFailure(err) === 'retry') this.attempt();
    else this.client.destroy();
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
function onClientEnd(this: ClientSocket): void {
  this[SESSION].onClientEnd();
}
function onClientDrain(this: ClientSocket): void {
  this[SESSION].onClientDrain();
}
function onBackendConnect(this: BackendSocket): void {
  this[SESSION].onConnect(this);
}
function onBackendError(this: BackendSocket, err: Error): void {
  this[SESSION].onBackendError(this, err);
}
function onBackendClose(this: BackendSocket): void {
  // every backend socket releases its own lease, exactly once, on its own 'close'
  this[LEASE].release();
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
