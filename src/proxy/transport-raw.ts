// The raw transport: libuv's TCP handles (./raw.ts) on both sides, never a net.Socket. The
// listening socket is a net.Server whose handle's onconnection is replaced, so an accepted
// connection stays a bare handle; RawSession relays it, RawInspection reads its ClientHello.
//
// - Reading: each handle reads into a buffer we give it (useUserBuffer), chosen by the one
//   read-buffer policy (./read-buffer.ts). The onread function returns the buffer of the next read.
// - Writing: writeBuffer() tries the write at once; when the kernel did not take it all, libuv
//   keeps the rest (we keep its buffer alive on the request) and the reading side stops until
//   every queued write to its peer is done: the kernel's own flow control, end to end.
// - Half-close: end of file from one side is passed on as shutdown() to the other, after what is
//   queued to it. A handle is closed once it has both read end of file and had its shutdown
//   complete; an error on either side, the idle timeout or destroy() closes both at once.

import net, { type Server } from 'node:net';
import { formatHostPort } from '../config/address';
import type { ProxyEndpoints } from '../core/proxy-protocol';
import type { ServiceSnapshot } from '../core/snapshot';
import type { Lease } from '../core/stats';
import { Inspection, type InspectionHost } from './inspection';
import { MAX_HELLO_BYTES } from './client-hello';
import { Relay, type Accepted, type SessionHost } from './relay';
import { SHARED, bytesOf, nextRead, takeRead } from './read-buffer';
import type { Transport } from './transport';
import { keepAliveSeconds, raw, uvError, type RawBindings, type ConnectReq, type ShutdownReq, type SockName, type TcpHandle, type WriteReq } from './raw';

/** Looked up by the first RawSession or RawInspection, made only when they exist. */
let R: RawBindings;

/** Relay on these handles from now on (the start's self-test passes the ones it checks). */
export function useBindings(bindings: RawBindings): void {
  R = bindings;
}

/** What the relay keeps on each handle (a handle is a plain JS object, as net.js uses it too). */
interface Side extends TcpHandle {
  session: RawSession;
  peer: Side | null;
  /** the buffer the handle reads into next */
  readBuf: Buffer;
  /** writes to this handle that libuv still holds */
  queued: number;
  /** reading stopped until the peer's queued writes are done */
  paused: boolean;
  /** end of file read from it */
  eof: boolean;
  /** shutdown() asked (a FIN after what is queued) / completed */
  shutting: boolean;
  shut: boolean;
  /** close it once its shutdown completes (its peer is gone after sending end of file) */
  closeAfterShut: boolean;
  closing: boolean;
  lease: Lease | null;
}

function asSide(h: TcpHandle, session: RawSession, lease: Lease | null): Side {
  const s = h as Side;
  s.session = session;
  s.peer = null;
  s.readBuf = SHARED;
  s.queued = 0;
  s.paused = false;
  s.eof = false;
  s.shutting = false;
  s.shut = false;
  s.closeAfterShut = false;
  s.closing = false;
  s.lease = lease;
  return s;
}

/** Peer address of a client handle ("" when the connection is already gone). */
function peerAddress(h: TcpHandle): string {
  const out: SockName = {};
  return h.getpeername(out) === 0 ? (out.address ?? '') : '';
}

/** "ip:port" of a client handle's peer ("[v6]:port"; ":0" when the connection is already gone). */
function peerEndpoint(h: TcpHandle): string {
  const out: SockName = {};
  h.getpeername(out);
  return formatHostPort({ host: out.address ?? '', port: out.port ?? 0 });
}

/** Both ends of a client handle, for the PROXY protocol header. */
function endpoints(h: TcpHandle): ProxyEndpoints {
  const peer: SockName = {};
  const local: SockName = {};
  h.getpeername(peer);
  h.getsockname(local);
  return { srcAddress: peer.address ?? '', srcPort: peer.port ?? 0, dstAddress: local.address ?? '', dstPort: local.port ?? 0 };
}

function closeHandle(h: TcpHandle): void {
  h.close();
}

/** The listener's side of the raw transport. */
export const RAW_TRANSPORT: Transport<TcpHandle> = {
  name: 'raw',
  server(accept, acceptError): Server {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.once('listening', () => {
      const handle = (server as unknown as { _handle: TcpHandle | null })._handle;
      if (handle) {
        handle.onconnection = (status: number, c: TcpHandle | undefined) => {
          if (status < 0 || !c) acceptError(uvError(status, 'accept'));
          else accept(c);
        };
      }
    });
    return server;
  },
  remoteAddress: peerAddress,
  remoteEndpoint: peerEndpoint,
  close: closeHandle,
  inspection: (c, address, acceptedAt, timeoutMs, host) => new RawInspection(c, address, acceptedAt, timeoutMs, host),
  session(c, snap, host, a) {
    c.setNoDelay(true);
    if (snap.proxy.tcpKeepaliveMs !== 0) c.setKeepAlive(true, keepAliveSeconds(snap.proxy.tcpKeepaliveMs));
    return new RawSession(c, snap, host, a);
  },
};

export class RawSession extends Relay {
  private backend: Side | null = null;
  private readonly client: Side;

  constructor(client: TcpHandle, snap: ServiceSnapshot, host: SessionHost, a: Readonly<Accepted>) {
    super(snap, host, a);
    R ??= raw()!;
    this.client = asSide(client, this, null);
  }

  destroy(): void {
    close(this.client);
    if (this.backend) close(this.backend);
  }

  protected closeClient(): void {
    close(this.client);
  }

  protected peerAddress(): string {
    return peerAddress(this.client);
  }

  protected holdClient(): boolean {
    const c = this.client;
    c.onread = onQueuedRead;
    c.useUserBuffer(SHARED);
    return c.readStart() === 0;
  }

  protected releaseClient(): void {
    this.client.readStop();
  }

  /** @internal A queued client's read: held, end of file or an error (it goes). */
  onQueuedRead(n: number): Uint8Array | undefined {
    if (n > 0) {
      if (!this.clientHeld(SHARED, n)) {
        this.client.readStop();
        return undefined;
      }
      // the next read is no bigger than what may still be held
      const room = this.heldRoom;
      return room < SHARED.length ? SHARED.subarray(0, room) : undefined;
    }
    if (n < 0) this.clientLeftQueue(n === R.UV_EOF ? 'client_closed' : 'client_reset');
    return undefined;
  }

  protected endpoints(): ProxyEndpoints {
    return endpoints(this.client);
  }

  protected openBackend(lease: Lease): void {
    const b = asSide(new R.TCP(R.SOCKET), this, lease);
    this.backend = b;
    b.setNoDelay(true); // kept by libuv and applied when the connect makes the socket
  }

  protected replaceBackend(): void {
    const b = this.backend!;
    const next = asSide(new R.TCP(R.SOCKET), this, b.lease);
    b.lease = null;
    this.backend = next;
    close(b);
    next.setNoDelay(true);
  }

  protected dropBackend(): void {
    const b = this.backend;
    this.backend = null;
    this.backendClosed = true;
    if (b) close(b); // its close releases its lease
  }

  protected awaitingDial(): boolean {
    const b = this.backend;
    return b !== null && !b.closing;
  }

  protected dial(address: string, family: number, port: number): void {
    const b = this.backend!;
    const req = new R.TCPConnectWrap();
    req.oncomplete = afterConnect;
    req.address = address;
    req.port = port;
    const err = family === 6 ? b.connect6(req, address, port) : b.connect(req, address, port);
    if (err !== 0) {
      const e = uvError(err, 'connect', address, port);
      process.nextTick(() => {
        if (b === this.backend && !b.closing) this.backendFailed(e);
      });
    }
  }

  protected send(bytes: Buffer): void {
    write(this.backend!, bytes, null);
  }

  /** @internal */ onConnect(b: Side, status: number, req: ConnectReq): void {
    if (b !== this.backend || b.closing) return;
    if (status < 0) {
      this.backendFailed(uvError(status, 'connect', req.address, req.port));
      return;
    }
    const c = this.client;
    this.markConnected();
    if (this.clientClosed || c.closing) {
      close(b);
      return;
    }
    // now that the socket exists: libuv would apply a keepalive asked before it with 60 s
    if (this.snap.proxy.tcpKeepaliveMs !== 0) b.setKeepAlive(true, keepAliveSeconds(this.snap.proxy.tcpKeepaliveMs));
    c.peer = b;
    b.peer = c;
    this.sendFirst();
    if (!startReading(b)) {
      this.destroy();
      return;
    }
    if (this.clientEnded) this.onEnd(c); // passed on as the backend's shutdown, after the bytes sent first
    else if (!startReading(c)) this.destroy();
  }

  /** @internal */ onData(from: Side, n: number): Uint8Array | undefined {
    if (from === this.client) this.countIn(n);
    else this.countOut(n);
    const taken = takeRead(from.readBuf, n);
    const queued = write(from.peer!, bytesOf(taken, n), from);
    const next = nextRead(taken, n, queued);
    if (next === from.readBuf) return undefined;
    from.readBuf = next;
    return next;
  }

  /** @internal */ onEnd(from: Side): void {
    this.ended(from === this.client ? 'client_closed' : 'backend_closed');
    from.eof = true;
    const to = from.peer;
    if (to && !to.closing && !to.shutting && to.eof && to.queued === 0) {
      // both directions are done and nothing is queued to `to`: closing it sends the same FIN
      // (it has nothing unread), without a shutdown() first
      to.shutting = true;
      to.shut = true;
      close(to);
    } else if (to && !to.closing && !to.shutting) {
      to.shutting = true;
      const req = new R.ShutdownWrap();
      req.handle = to;
      req.oncomplete = afterShutdown;
      if (to.shutdown(req) !== 0) {
        this.destroy();
        return;
      }
    }
    if (from.shut) close(from);
  }

  /** A read, write or shutdown on `h` failed (a reset and the like): close both. */
  sideFailed(h: Side): void {
    this.ended(h === this.client ? 'client_reset' : 'backend_reset');
    this.destroy();
  }

  /** @internal */ onShut(h: Side): void {
    h.shut = true;
    if (h.eof || h.closeAfterShut) close(h);
  }

  /** @internal */ onClosed(h: Side): void {
    if (h === this.client) {
      this.clientClosed = true;
      const b = this.backend;
      if (b) this.peerClosed(h, b);
    } else {
      h.lease?.release();
      h.lease = null;
      if (h !== this.backend) return; // a failed attempt
      this.backendClosed = true;
      this.peerClosed(h, this.client);
    }
    this.maybeFinish();
  }

  /**
   * `gone` is closed. When it had sent its end of file, what it sent still reaches `other`: its
   * shutdown (already asked) runs after the queued writes, then it is closed. Otherwise `other`
   * is closed now.
   */
  private peerClosed(gone: Side, other: Side): void {
    if (other.closing) return;
    if (this.connected && gone.eof && other.shutting) {
      other.closeAfterShut = true;
      if (other.shut) close(other);
    } else {
      close(other);
    }
  }

}

/** Write `data` to `to`; true when libuv keeps some of it for later (then `from` stops reading). */
function write(to: Side, data: Uint8Array, from: Side | null): boolean {
  if (to.closing) return false;
  const req = new R.WriteWrap();
  req.handle = to;
  req.oncomplete = afterWrite;
  req.async = false;
  req.buffer = null;
  const err = to.writeBuffer(req, data);
  if (err !== 0) {
    to.session.sideFailed(to);
    return false;
  }
  if (R.state[R.kLastWriteWasAsync] === 0) return false;
  req.async = true;
  req.buffer = data;
  to.queued++;
  if (from && !from.paused && !from.closing) {
    from.paused = true;
    from.readStop();
  }
  return true;
}

function startReading(h: Side): boolean {
  h.onread = onRead;
  h.useUserBuffer(SHARED);
  return h.readStart() === 0;
}

function afterWrite(this: WriteReq, status: number): void {
  const to = this.handle as Side;
  this.buffer = null;
  to.queued--;
  if (to.closing) return;
  if (status < 0) {
    to.session.sideFailed(to);
    return;
  }
  const from = to.peer;
  if (to.queued === 0 && from && from.paused && !from.closing) {
    from.paused = false;
    if (!from.eof && from.readStart() !== 0) to.session.destroy();
  }
}

function afterShutdown(this: ShutdownReq, status: number): void {
  const h = this.handle as Side;
  if (h.closing) return;
  if (status < 0) h.session.sideFailed(h);
  else h.session.onShut(h);
}

function afterConnect(this: ConnectReq, status: number, handle: TcpHandle): void {
  const b = handle as Side;
  b.session.onConnect(b, status, this);
}

function onRead(this: TcpHandle): Uint8Array | undefined {
  const h = this as Side;
  if (h.closing) return undefined;
  const n = R.state[R.kReadBytesOrError]!;
  if (n > 0) return h.session.onData(h, n);
  if (n === 0) return undefined;
  if (n === R.UV_EOF) h.session.onEnd(h);
  else h.session.sideFailed(h); // a read error (ECONNRESET and the like)
  return undefined;
}

function onQueuedRead(this: TcpHandle): Uint8Array | undefined {
  const h = this as Side;
  if (h.closing) return undefined;
  return h.session.onQueuedRead(R.state[R.kReadBytesOrError]!);
}

function close(h: Side): void {
  if (h.closing) return;
  h.closing = true;
  h.close(onHandleClose as (this: TcpHandle) => void);
}

/** HandleWrap calls the close callback with the handle as `this`. */
function onHandleClose(this: Side): void {
  this.session.onClosed(this);
}

const READ = Buffer.allocUnsafeSlow(MAX_HELLO_BYTES);

interface InspectedHandle extends TcpHandle {
  inspection: RawInspection;
}

/** An inspection on a raw libuv handle. */
class RawInspection extends Inspection<TcpHandle> {
  constructor(handle: TcpHandle, address: string, acceptedAt: number, timeoutMs: number, host: InspectionHost) {
    super(handle, address, acceptedAt, timeoutMs, host);
    R ??= raw()!;
  }

  start(): boolean {
    const h = this.conn as InspectedHandle;
    h.inspection = this;
    h.onread = onRawRead;
    h.useUserBuffer(READ);
    return h.readStart() === 0;
  }

  protected close(): void {
    this.conn.close();
  }

  protected stopReading(): void {
    this.conn.readStop();
  }

  /** @internal */ onRead(n: number): void {
    if (n > 0) this.received(READ, n);
    else if (n === R.UV_EOF) this.ended();
    else if (n < 0) this.destroy('client_reset');
  }
}

function onRawRead(this: TcpHandle): undefined {
  (this as InspectedHandle).inspection.onRead(R.state[R.kReadBytesOrError]!);
  return undefined;
}
