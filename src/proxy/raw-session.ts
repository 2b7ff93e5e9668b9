// One proxied client connection on raw libuv handles (./raw.ts): the same life as Session
// (./session.ts) — pick → connect with a timeout → on failure before any byte, retry on a
// backend not yet tried → relay both ways with backpressure and half-close → idle timeout →
// release the backend's lease exactly once, when the backend handle is closed — without a
// net.Socket on either side.
//
// - Reading: each handle reads into a buffer we give it (useUserBuffer), chosen as Session does:
//   SHARED for small reads (copied out before the write), a buffer of its own while reads are
//   big (see "Reading" in session.ts). The onread function returns the buffer of the next read.
// - Writing: writeBuffer() tries the write at once; when the kernel did not take it all, libuv
//   keeps the rest (we keep its buffer alive on the request) and the reading side stops until
//   every queued write to its peer is done: the kernel's own flow control, end to end.
// - Half-close: end of file from one side is passed on as shutdown() to the other, after what is
//   queued to it. A handle is closed once it has both read end of file and had its shutdown
//   complete; an error on either side, the idle timeout or destroy() closes both at once.

import { isIP } from 'node:net';
import { formatHostPort } from '../config/address';
import { lookup } from 'node:dns';
import type { ServiceSnapshot } from '../core/snapshot';
import type { Lease } from '../core/stats';
import { cachedAddresses } from '../core/endpoints';
import { SessionBase, type SessionHost } from './session-base';
import { encodeProxyHeader, type ProxyEndpoints } from '../core/proxy-protocol';
import { raw, uvError, type RawBindings, type ConnectReq, type ShutdownReq, type SockName, type TcpHandle, type WriteReq } from './raw';


/** Looked up by the first RawSession, made only when they exist (ProxyListener.raw). */
let R: RawBindings;

/** Relay on these handles from now on (the start's self-test passes the ones it checks). */
export function useBindings(bindings: RawBindings): void {
  R = bindings;
}

const READ_SIZE = 64 * 1024;
const SMALL_READ = Buffer.poolSize >>> 1;
const SHARED = Buffer.allocUnsafeSlow(READ_SIZE);

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

/** net.isIP() (a regular expression) once per backend host, not once per connection. */
const ipVersions = new Map<string, number>();
function ipVersion(host: string): number {
  let v = ipVersions.get(host);
  if (v === undefined) {
    v = isIP(host);
    if (ipVersions.size >= 4096) ipVersions.clear(); // hosts come from the config: a bound, never reached in practice
    ipVersions.set(host, v);
  }
  return v;
}

/** Peer address of a client handle ("" when the connection is already gone). */
export function peerAddress(h: TcpHandle): string {
  const out: SockName = {};
  return h.getpeername(out) === 0 ? (out.address ?? '') : '';
}

/** "ip:port" of a client handle's peer ("[v6]:port"; ":0" when the connection is already gone). */
export function peerEndpoint(h: TcpHandle): string {
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

export class RawSession extends SessionBase {
  /** the client's address, when the listener read it (the ACL or the client limits) */
  remoteAddress = '';
  /** the client sent its end of file while the listener read its first bytes */
  clientEnded = false;
  private backend: Side | null = null;
  /** a host name's addresses not tried yet, in the resolver's order */
  private nextAddresses: string[] | null = null;
  private readonly client: Side;

  constructor(
    client: TcpHandle,
    snap: ServiceSnapshot,
    host: SessionHost,
  ) {
    super(snap, host);
    R ??= raw()!;
    this.client = asSide(client, this, null);
  }

  start(): void {
    this.attempt();
  }

  destroy(): void {
    close(this.client);
    if (this.backend) close(this.backend);
  }

  protected connectTimedOut(error: Error): void {
    if (this.backend) this.connectFailed(this.backend, error);
  }

  protected clientAddress(): string {
    return this.remoteAddress || peerAddress(this.client);
  }

  private attempt(): void {
    const target = this.pickTarget();
    if (!target) {
      close(this.client);
      return;
    }
    const b = asSide(new R.TCP(R.SOCKET), this, target.load.acquire());
    this.backend = b;
    b.setNoDelay(true); // kept by libuv and applied when the connect makes the socket
    const { host, port } = target.spec;
    this.nextAddresses = null;
    if (ipVersion(host) !== 0) {
      this.connectTo(b, host, port);
      return;
    }
    // a host name: its addresses are tried one after the other, within the one connect timeout;
    // the cached ones when there are (no lookup), else as the system's lookup gives them
    const cached = cachedAddresses(target.spec);
    if (cached !== undefined && cached.length === 0) {
      // every address the name gave was refused (discovery): never looked up here instead
      process.nextTick(() => b === this.backend && !b.closing && this.connectFailed(b, new Error(`${host}: no usable address`)));
      return;
    }
    if (cached !== undefined) {
      this.nextAddresses = cached.slice(1);
      this.connectTo(b, cached[0]!, port);
      return;
    }
    lookup(host, { all: true }, (err, found) => {
      if (b !== this.backend || b.closing) return; // timed out, or the session is gone
      if (err || found.length === 0) {
        this.connectFailed(b, err ?? new Error(`getaddrinfo found no address for ${host}`));
        return;
      }
      this.nextAddresses = found.slice(1).map((a) => a.address);
      this.connectTo(b, found[0]!.address, port);
    });
  }

  private connectTo(b: Side, address: string, port: number): void {
    const req = new R.TCPConnectWrap();
    req.oncomplete = afterConnect;
    req.address = address;
    req.port = port;
    const err = ipVersion(address) === 6 ? b.connect6(req, address, port) : b.connect(req, address, port);
    if (err !== 0) {
      const e = uvError(err, 'connect', address, port);
      process.nextTick(() => {
        if (b === this.backend && !b.closing) this.connectFailed(b, e);
      });
    }
  }

  /** @internal */ onConnect(b: Side, status: number, req: ConnectReq): void {
    if (b !== this.backend || b.closing) return;
    if (status < 0) {
      this.connectFailed(b, uvError(status, 'connect', req.address, req.port));
      return;
    }
    const c = this.client;
    this.markConnected();
    if (this.clientClosed || c.closing) {
      close(b);
      return;
    }
    c.peer = b;
    b.peer = c;
    const mode = this.snap.proxy.proxyProtocol;
    if (mode !== 'off') write(b, encodeProxyHeader(mode, endpoints(c)), null);
    const first = this.initial;
    if (first !== null && first.length > 0) {
      this.initial = null;
      this.countIn(first.length);
      write(b, first, null);
    }
    if (!startReading(b)) {
      this.destroy();
      return;
    }
    if (this.clientEnded) this.onEnd(c); // passed on as the backend's shutdown, after the bytes above
    else if (!startReading(c)) this.destroy();
  }

  /** The backend handle failed before it connected (error, timeout or name lookup). */
  private connectFailed(b: Side, err: NodeJS.ErrnoException | Error): void {
    const more = this.nextAddresses;
    if (more && more.length > 0 && this.deadline > 0 && !this.clientClosed) {
      // the host name's next address, on a new handle that takes over the lease
        const next = asSide(new R.TCP(R.SOCKET), this, b.lease);
      b.lease = null;
      this.backend = next;
      close(b);
      next.setNoDelay(true);
      this.connectTo(next, more.shift()!, this.target!.spec.port);
      return;
    }
    this.backend = null;
    this.backendClosed = true;
    close(b); // its close releases its lease
    if (this.connectFailure(err) === 'retry') this.attempt();
    else close(this.client);
  }

  /** @internal */ onData(from: Side, n: number): Uint8Array | undefined {
    const to = from.peer!;
    if (from === this.client) this.countIn(n);
    else this.countOut(n);
    let buf = from.readBuf;
    if (buf === SHARED) {
      if (n < SMALL_READ) {
        // SHARED is read into by every handle: what libuv may still hold must be a copy
        const copy = Buffer.allocUnsafe(n);
        SHARED.copy(copy, 0, 0, n);
        write(to, copy, from);
        return undefined; // the next read goes into SHARED again
      }
      const own = Buffer.allocUnsafeSlow(READ_SIZE);
      SHARED.copy(own, 0, 0, n);
      buf = own;
    }
    const queued = write(to, n === buf.length ? buf : buf.subarray(0, n), from);
    const next = n < SMALL_READ ? SHARED : queued ? Buffer.allocUnsafeSlow(READ_SIZE) : buf;
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

function close(h: Side): void {
  if (h.closing) return;
  h.closing = true;
  h.close(onHandleClose as (this: TcpHandle) => void);
}

/** HandleWrap calls the close callback with the handle as `this`. */
function onHandleClose(this: Side): void {
  this.session.onClosed(this);
}
