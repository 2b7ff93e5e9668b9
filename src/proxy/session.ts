// One proxied client connection: pick → connect with a timeout → on failure before any byte,
// retry on a backend not yet tried → relay both ways with backpressure and half-close → idle
// timeout → release the backend's lease exactly once, when the backend socket closes.
//
// Hot path (see `npm run bench`): no closure is made per connection. Every event listener is
// one module-level function shared by all connections; it finds its session through a symbol
// property on the socket (`this` is the emitting socket). Data is relayed with 'data' and
// write(), pausing the reader when write() returns false and resuming it on the writer's
// 'drain'. There is no timer per connection: the connect timeout and the idle timeout are
// checked by the registry's one coarse sweep (ConnectionRegistry, runtime/drain.ts), and a data
// event only sets a flag.

import { Socket } from 'node:net';
import type { Snapshot, SnapshotBackend } from '../core/snapshot';
import type { BackendLoad, Lease } from '../core/stats';
import type { ConnectionRegistry } from '../runtime/drain';
import type { ProxyObserver } from './events';

export interface SessionHost {
  readonly observer: ProxyObserver;
  readonly registry: ConnectionRegistry<Session>;
  readonly now: () => number;
  /** bytes written to a backend before the client's (PROXY protocol header), or null */
  readonly preamble: (client: Socket, snap: Snapshot) => Buffer | null;
  /** the client's per-address slot is free again (called only for sessions marked `admitted`) */
  readonly released: (client: Socket) => void;
}

/** Longest passive ejection, ms. */
const MAX_EJECT_MS = 30_000;
const MIN_EJECT_MS = 1_000;

const SESSION = Symbol('lemonade.session');
const LEASE = Symbol('lemonade.lease');

interface ClientSocket extends Socket {
  [SESSION]: Session;
}
interface BackendSocket extends Socket {
  [SESSION]: Session;
  [LEASE]: Lease;
}

const NO_BACKENDS: readonly BackendLoad[] = Object.freeze([]);

export class Session {
  /** set by the listener when the per-client limits counted this connection */
  admitted = false;
  private backend: BackendSocket | null = null;
  private target: SnapshotBackend | null = null;
  /** backends whose connect failed (allocated on the first failure) */
  private failed: BackendLoad[] | null = null;
  private attempts = 0;
  private readonly startedAt: number;
  private connectStartedAt = 0;
  /** connect deadline while connecting, else 0 */
  private deadline = 0;
  private connectMs = 0;
  private firstSentAt = 0;
  private gotFirstByte = false;
  private bytesIn = 0;
  private bytesOut = 0;
  /** a byte moved since the last sweep */
  private moved = false;
  /** when the sweep last saw bytes move (or the connect completed) */
  private lastMoved = 0;
  private clientClosed = false;
  private backendClosed = true;
  private connected = false;
  private finished = false;
  private readonly client: ClientSocket;

  constructor(
    client: Socket,
    private readonly snap: Snapshot,
    private readonly host: SessionHost,
  ) {
    this.client = client as ClientSocket;
    this.client[SESSION] = this;
    this.startedAt = host.now();
  }

  get backendKey(): string | null {
    return this.target ? this.target.load.key : null;
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

  /** Called by the registry's sweep: connect timeout and idle timeout. */
  sweep(now: number): void {
    if (this.finished) return;
    if (!this.connected) {
      const s = this.backend;
      if (s && this.deadline > 0 && now >= this.deadline) {
        this.deadline = 0;
        s.destroy(new Error(`connect timeout after ${this.snap.config.proxy.connectTimeoutMs} ms`));
      }
      return;
    }
    if (this.moved) {
      this.moved = false;
      this.lastMoved = now;
    } else if (now - this.lastMoved >= this.snap.config.proxy.idleTimeoutMs) {
      this.destroy();
    }
  }

  private attempt(): void {
    const target = this.snap.pick(this.failed ?? NO_BACKENDS);
    if (!target) {
      if (this.attempts === 0) this.host.observer.rejected('no_backend', this.client.remoteAddress);
      this.client.destroy();
      return;
    }
    this.target = target;
    this.attempts++;
    const s = new Socket({ allowHalfOpen: true }) as BackendSocket;
    s[SESSION] = this;
    s[LEASE] = target.load.acquire();
    this.backend = s;
    this.backendClosed = false;
    const now = this.host.now();
    this.connectStartedAt = now;
    this.deadline = now + this.snap.config.proxy.connectTimeoutMs;
    s.setNoDelay(true); // before connect: applied when the handle is made, no system call now
    s.on('connect', onBackendConnect);
    s.on('error', onBackendError);
    s.on('close', onBackendClose);
    s.connect(target.spec.port, target.spec.host);
  }

  /** @internal */ onConnect(s: BackendSocket): void {
    if (s !== this.backend) return;
    const t = this.target!;
    const c = this.client;
    const now = this.host.now();
    this.connected = true;
    this.deadline = 0;
    this.connectMs = now - this.connectStartedAt;
    this.lastMoved = now;
    t.load.recordSuccess();
    t.counters.connections++;
    this.host.observer.connected(t, this.connectMs);
    if (this.clientClosed) {
      s.destroy();
      return;
    }
    const pre = this.host.preamble(c, this.snap);
    if (pre) s.write(pre);
    c.on('data', onClientData);
    c.on('end', onClientEnd);
    c.on('drain', onClientDrain);
    s.on('data', onBackendData);
    s.on('end', onBackendEnd);
    s.on('drain', onBackendDrain);
    c.resume();
  }

  /** @internal */ onClientData(chunk: Buffer): void {
    const n = chunk.length;
    this.bytesIn += n;
    this.target!.counters.bytesIn += n;
    this.moved = true;
    if (this.firstSentAt === 0) this.firstSentAt = this.host.now();
    if (!this.backend!.write(chunk)) this.client.pause();
  }

  /** @internal */ onBackendData(chunk: Buffer): void {
    const n = chunk.length;
    this.bytesOut += n;
    const t = this.target!;
    t.counters.bytesOut += n;
    this.moved = true;
    if (!this.gotFirstByte) {
      this.gotFirstByte = true;
      // latency = connect time + time from the first client byte sent to the first byte back
      // (for server-first protocols, from the connect)
      const now = this.host.now();
      const from = this.firstSentAt === 0 ? this.connectStartedAt + this.connectMs : this.firstSentAt;
      t.load.observeLatency(this.connectMs + (now - from));
    }
    if (!this.client.write(chunk)) this.backend!.pause();
  }

  /** @internal */ onClientDrain(): void {
    this.backend?.resume();
  }

  /** @internal */ onBackendDrain(): void {
    this.client.resume();
  }

  /** @internal */ onClientEnd(): void {
    this.backend?.end();
  }

  /** @internal */ onBackendEnd(): void {
    if (!this.client.destroyed) this.client.end();
  }

  /** @internal */ onBackendError(s: BackendSocket, err: Error): void {
    if (s !== this.backend) return;
    if (this.connected) {
      this.client.destroy();
      return;
    }
    this.deadline = 0;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') {
      // out of file descriptors here: not the backend's fault, and no other backend would fare
      // better; close the client without penalising the backend
      this.host.observer.acceptError(err);
      this.backend = null;
      this.backendClosed = true;
      this.client.destroy();
      return;
    }
    const t = this.target!;
    const load = t.load;
    load.recordFailure();
    t.counters.connectErrors++;
    const h = this.snap.config.health;
    if (load.consecutiveFailures >= h.unhealthyThreshold) {
      load.ejectedUntil = this.host.now() + Math.min(MAX_EJECT_MS, Math.max(MIN_EJECT_MS, h.intervalMs));
    }
    (this.failed ??= []).push(load);
    const canRetry = !this.clientClosed && this.attempts <= this.snap.config.proxy.connectRetries;
    this.host.observer.connectFailed(t, err.message, canRetry);
    // the failed socket's 'close' releases its lease; detach it from this session now
    this.backend = null;
    this.backendClosed = true;
    if (canRetry) this.attempt();
    else this.client.destroy();
  }

  /** @internal */ onClientError(): void {
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

  private maybeFinish(): void {
    if (this.finished || !this.clientClosed || !this.backendClosed) return;
    this.finished = true;
    this.host.registry.delete(this);
    if (this.admitted) this.host.released(this.client);
    if (this.connected && this.target) {
      this.host.observer.closed(this.target, this.host.now() - this.startedAt, this.bytesIn, this.bytesOut);
    }
  }
}

// Shared listeners: `this` is the socket that emitted.

function onClientError(this: ClientSocket): void {
  this[SESSION].onClientError();
}
function onClientClose(this: ClientSocket): void {
  this[SESSION].onClientClose();
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
function onBackendData(this: BackendSocket, chunk: Buffer): void {
  this[SESSION].onBackendData(chunk);
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
