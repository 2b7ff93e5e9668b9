// The relay core, whatever carries the bytes (./transport.ts): the backend pick, the connect to
// it (one resolve path: an IP address at once, a host name's cached addresses or else the
// system's lookup, one address after the other within one connect timeout), retries on a backend
// not yet tried, the connect deadline and the idle timeout checked by the registry's sweep,
// passive health on a failed connect, what is sent first (PROXY header, bytes read to route),
// the counters and the latency sample, the termination cause (the first one seen, set where it
// happens), and the end of the session once both sides are closed. A transport subclasses it and
// implements its legs (the abstract members below): ./transport-raw.ts, ./transport-net.ts,
// ./transport-udp.ts (a UDP flow).

import { lookup, type LookupAddress } from 'node:dns';
import type { BackendConfig } from '../config/schema';
import { ipFamily } from '../core/cached-lookup';
import { cachedAddresses } from '../core/endpoints';
import { encodeProxyHeader, type ProxyEndpoints } from '../core/proxy-protocol';
import type { ServiceSnapshot, SnapshotBackend } from '../core/snapshot';
import type { BackendLoad, Lease } from '../core/stats';
import type { ProxyObserver, SessionEnd, Termination } from './events';
import type { WaitQueue } from './queue';

/** Longest passive ejection, ms. */
const MAX_EJECT_MS = 30_000;
const MIN_EJECT_MS = 1_000;

const NO_BACKENDS: readonly BackendLoad[] = Object.freeze([]);

/** The IP family of an address a host name gave (its configured host's is the snapshot's). */
const families = new Map<string, number>();
function familyOf(host: string): number {
  let v = families.get(host);
  if (v === undefined) {
    v = ipFamily(host);
    if (families.size >= 4096) families.clear(); // hosts come from the config and its names' answers: a bound, never reached in practice
    families.set(host, v);
  }
  return v;
}

/** What the listener gives every session, whichever transport carries it. */
export interface SessionHost {
  readonly observer: ProxyObserver;
  readonly registry: { delete(session: Relay): unknown };
  readonly now: () => number;
  /** the client's per-address slot is free again (called only for sessions marked `admitted`) */
  readonly released: (remoteAddress: string) => void;
  /** the service's queue at the cap (queue_timeout) */
  readonly queue: WaitQueue<Relay>;
  /** the service as the current snapshot has it (a queued connection is served from it), undefined once it is gone */
  readonly current: () => ServiceSnapshot | undefined;
}

/**
 * About this many bytes a queued client sent are read and held, then reading stops (backpressure):
 * a first request fits, and a full queue holds at most queue_max times this.
 */
export const QUEUED_READ_MAX = 16 * 1024;

/**
 * What the listener knows of a connection when it hands it to a session: read by the session's
 * constructor only (the listener reuses one of these for every accept, no object per connection).
 */
export interface Accepted {
  /** when the client was accepted (its ClientHello's reading included), or -1: now */
  startedAt: number;
  /** the per-client limits counted it (its slot is released when it ends) */
  admitted: boolean;
  /** the client's address when the listener read it, else "" */
  remote: string;
  /** "ip:port" of the client when the access log wants this connection, else null */
  logClient: string | null;
  /** the hash key (the client's IP or the TLS server name), for a keyed service (consistent_hash) only */
  hashKey: string | undefined;
  /** bytes the listener read from the client to route it (the ClientHello): sent to the backend first */
  initial: Buffer | null;
  /** the client sent its end of file while the listener read it */
  clientEnded: boolean;
  /** the client's addresses as a PROXY header in front gave them (accept_proxy), else null: the connection's own */
  proxied: ProxyEndpoints | null;
}

export abstract class Relay implements SessionEnd {
  /** waiting in its service's queue (queue_timeout) since queuedAt, until queueDeadline */
  waiting = false;
  private queuedAt = 0;
  private queueDeadline = 0;
  private queueMillis = 0;
  /** the per-client limits counted this connection */
  private readonly admitted: boolean;
  /** "ip:port" of the client when the access log wants this connection */
  readonly logClient: string | null;
  /** the client's address when the listener read it, else "" */
  protected readonly remote: string;
  /** the client sent its end of file while the listener read its first bytes */
  protected readonly clientEnded: boolean;
  /** why it ended: the first cause seen wins */
  private cause: Termination | null = null;
  /** what the last failed connect was (the cause when no backend is left to try) */
  private connectCause: Termination = 'connect_failed';
  private latency = -1;
  /** the hash key (the client's IP or the TLS server name), for a keyed service (consistent_hash) only */
  private readonly hashKey: string | undefined;
  /** bytes the listener read from the client to route it (the ClientHello): sent to the backend first */
  private initial: Buffer | null;
  /** the client's addresses from a PROXY header read in front, else null */
  private readonly proxied: ProxyEndpoints | null;
  protected target: SnapshotBackend | null = null;
  /** backends whose connect failed (allocated on the first failure) */
  private failed: BackendLoad[] | null = null;
  protected attempts = 0;
  /** a host name's addresses not tried yet, in the resolver's order */
  private nextAddresses: string[] | null = null;
  /** when the client was accepted (for a connection whose ClientHello was read first, when that began) */
  readonly startedAt: number;
  protected connectStartedAt = 0;
  /** connect deadline while connecting, else 0 */
  protected deadline = 0;
  private connectMillis = 0;
  private firstSentAt = 0;
  private gotFirstByte = false;
  private inBytes = 0;
  private outBytes = 0;
  /** a byte moved since the last sweep */
  private moved = false;
  /** when the sweep last saw bytes move (or the connect completed) */
  private lastMoved = 0;
  protected clientClosed = false;
  protected backendClosed = true;
  /** a connect completed (read by the observer too) */
  connected = false;
  private finished = false;

  constructor(
    /** its service's snapshot; a queued connection takes the current one when it is served */
    protected snap: ServiceSnapshot,
    private readonly base: SessionHost,
    a: Readonly<Accepted>,
  ) {
    this.startedAt = a.startedAt >= 0 ? a.startedAt : base.now();
    this.admitted = a.admitted;
    this.logClient = a.logClient;
    this.remote = a.remote;
    this.hashKey = a.hashKey;
    this.initial = a.initial;
    this.clientEnded = a.clientEnded;
    this.proxied = a.proxied;
  }

  get backendKey(): string | null {
    return this.target ? this.target.load.key : null;
  }

  // SessionEnd, read by the observer's closed()
  get service(): string {
    return this.snap.name;
  }
  get pickedBackend(): SnapshotBackend | null {
    return this.target;
  }
  get connectMs(): number {
    return this.connectMillis;
  }
  get durationMs(): number {
    return this.base.now() - this.startedAt;
  }
  get bytesIn(): number {
    return this.inBytes;
  }
  get bytesOut(): number {
    return this.outBytes;
  }
  get retries(): number {
    return this.attempts > 1 ? this.attempts - 1 : 0;
  }
  get termination(): Termination {
    // no cause seen: the client's socket closed without an error or end of file being read
    return this.cause ?? 'client_closed';
  }
  get latencyMs(): number {
    return this.latency;
  }
  get queueMs(): number {
    return this.waiting ? this.base.now() - this.queuedAt : this.queueMillis;
  }

  /** The cause of the end, unless one was seen first. */
  protected ended(cause: Termination): void {
    if (this.cause === null) this.cause = cause;
  }

  /** Close both sides now for this cause (idle or drain timeout, a disabled backend, shutdown, a queue's deadline). */
  cut(cause: Termination): void {
    if (this.waiting) this.leaveQueue();
    this.ended(cause);
    this.destroy();
  }

  // The legs, implemented by the transport. The relay core calls them; for the dial it was asked,
  // a transport calls markConnected() then (the client still open) sendFirst() and starts its
  // pump, or backendFailed(); countIn()/countOut() for what it relays, ended() for a cause it saw,
  // and maybeFinish() once a side is closed (setting clientClosed / backendClosed).

  /** close both sides now */
  abstract destroy(): void;
  /** close the client (no backend is left to try) */
  protected abstract closeClient(): void;
  /** a new backend leg for this attempt, holding `lease` until it is closed */
  protected abstract openBackend(lease: Lease): void;
  /** connect the backend leg to this IP address (family 4 or 6); the transport answers with markConnected() or backendFailed() */
  protected abstract dial(address: string, family: number, port: number): void;
  /** a new backend leg in place of the one that failed, taking over its lease (the next address of a name) */
  protected abstract replaceBackend(): void;
  /** detach the backend leg and close it (its close releases its lease); backendClosed is true after */
  protected abstract dropBackend(): void;
  /** the backend leg of this attempt is open and waits to be dialled (a name being looked up) */
  protected abstract awaitingDial(): boolean;
  /** write bytes to the backend before the pump starts */
  protected abstract send(bytes: Buffer): void;
  /** both ends of the client's connection, for the PROXY protocol header */
  protected abstract endpoints(): ProxyEndpoints;
  /** the client's address as its connection gives it ("" or undefined once it is gone) */
  protected abstract peerAddress(): string | undefined;

  /**
   * Queued: read the client (into clientHeld(), up to QUEUED_READ_MAX) so that its going away is
   * seen (clientLeftQueue()); false: this transport does not wait (a UDP flow), it is refused.
   */
  protected holdClient(): boolean {
    return false;
  }
  /** Served: stop reading the client until the backend is connected (as for any connection). */
  protected releaseClient(): void {}

  /** Start: pick a backend and connect to it. */
  start(): void {
    this.attempt();
  }

  /** The next backend not yet tried, dialled; with none left, the client is closed (or it waits in the queue). */
  private attempt(): void {
    const target = this.pickTarget();
    if (target === null) {
      if (!this.waiting) this.closeClient();
      return;
    }
    this.dialTarget(target);
  }

  private dialTarget(target: SnapshotBackend): void {
    this.openBackend(target.load.acquire());
    this.connectTo(target.spec, target.family);
  }

  /**
   * The pick found nothing on a first attempt of a service with queue_timeout: wait in the queue
   * when a usable backend is at its cap (when none is usable, or the queue is full, refused).
   */
  private enqueue(): boolean {
    const snap = this.snap;
    if (!atCap(snap) || !this.base.queue.push(this, snap.proxy.queueMax)) return false;
    if (!this.holdClient()) {
      this.base.queue.remove(this);
      return false;
    }
    const now = this.base.now();
    this.waiting = true;
    this.queuedAt = now;
    this.queueDeadline = now + snap.proxy.queueTimeoutMs;
    return true;
  }

  /**
   * The queue offers this connection (its head) a slot: picked from the service as the current
   * snapshot has it (when its transport can carry it still); true when it took one.
   */
  serve(): boolean {
    if (!this.waiting) return true;
    const cur = this.base.current();
    if (cur !== undefined && cur !== this.snap && (cur.tls === null) === (this.snap.tls === null) && (cur.backendTls === null) === (this.snap.backendTls === null)) this.snap = cur;
    const target = this.snap.pick(NO_BACKENDS, this.hashKey);
    if (!target) return false;
    this.waiting = false;
    this.queueMillis = this.base.now() - this.queuedAt;
    this.releaseClient();
    this.dialTarget(this.aim(target));
    return true;
  }

  /** Take a queued connection out of the queue (it ends). */
  private leaveQueue(): void {
    this.waiting = false;
    this.queueMillis = this.base.now() - this.queuedAt;
    this.base.queue.remove(this);
  }

  /** A queued client went away (end of file: client_closed; an error: client_reset). */
  protected clientLeftQueue(cause: Termination): void {
    if (!this.waiting) return;
    this.leaveQueue();
    this.ended(cause);
    this.closeClient();
  }

  /** `n` bytes a queued client sent, in `chunk`: held for the backend; false once QUEUED_READ_MAX are held (stop reading). */
  protected clientHeld(chunk: Uint8Array, n: number): boolean {
    const had = this.initial;
    const len = had === null ? 0 : had.length;
    const b = Buffer.allocUnsafe(len + n);
    if (had !== null) had.copy(b, 0);
    b.set(n === chunk.length ? chunk : chunk.subarray(0, n), len);
    this.initial = b;
    return b.length < QUEUED_READ_MAX;
  }

  /** What a queued client may still send before reading stops. */
  protected get heldRoom(): number {
    return QUEUED_READ_MAX - (this.initial === null ? 0 : this.initial.length);
  }

  /**
   * Dial the backend: an IP address at once; a host name's addresses one after the other, within
   * the one connect timeout, the cached ones when there are (no lookup), else as the system's
   * lookup gives them.
   */
  private connectTo(spec: BackendConfig, family: number): void {
    const { host, port } = spec;
    this.nextAddresses = null;
    if (family !== 0) {
      this.dial(host, family, port);
      return;
    }
    const cached = cachedAddresses(spec);
    if (cached !== undefined && cached.length === 0) {
      // every address the name gave was refused (discovery): never looked up here instead
      const attempt = this.attempts;
      process.nextTick(() => attempt === this.attempts && this.awaitingDial() && this.backendFailed(Object.assign(new Error(`${host}: no usable address (see /status dns)`), { code: 'ENOTFOUND' })));
      return;
    }
    if (cached !== undefined) {
      this.nextAddresses = cached.slice(1);
      this.dial(cached[0]!, familyOf(cached[0]!), port);
      return;
    }
    const attempt = this.attempts;
    lookup(host, { all: true }, (err: NodeJS.ErrnoException | null, found: LookupAddress[]) => {
      if (attempt !== this.attempts || !this.awaitingDial()) return; // timed out, or the session is gone
      if (err || found.length === 0) {
        this.backendFailed(err ?? new Error(`getaddrinfo found no address for ${host}`));
        return;
      }
      this.nextAddresses = found.slice(1).map((a) => a.address);
      this.dial(found[0]!.address, found[0]!.family, port);
    });
  }

  /** The backend leg failed before it connected (error, timeout or name lookup): the name's next address, else another backend. */
  protected backendFailed(err: Error): void {
    const more = this.nextAddresses;
    if (more !== null && more.length > 0 && this.deadline > 0 && !this.clientClosed) {
      this.replaceBackend();
      const address = more.shift()!;
      this.dial(address, familyOf(address), this.target!.spec.port);
      return;
    }
    this.dropBackend();
    if (this.connectFailure(err) === 'retry') this.attempt();
    else this.closeClient();
  }

  /** The connect deadline passed: fail the attempt under way. */
  private connectTimedOut(error: Error): void {
    if (!this.backendClosed) this.backendFailed(error);
  }

  /** The backend connected: sent first, the PROXY header, then the bytes the listener read from the client. */
  protected sendFirst(): void {
    const mode = this.snap.proxy.proxyProtocol;
    // a backend that speaks TLS had it in clear, before its handshake (transport-net.ts)
    if (mode !== 'off' && this.snap.backendTls === null) this.send(this.proxyHeader(mode));
    const first = this.initial;
    if (first !== null && first.length > 0) {
      this.initial = null;
      this.countIn(first.length);
      this.send(first);
    }
  }

  /** The PROXY protocol header for this connection (a terminating session adds what its handshake learned). */
  protected proxyHeader(mode: 'v1' | 'v2'): Buffer {
    return encodeProxyHeader(mode, this.clientEndpoints());
  }

  /** The client's addresses for the PROXY header sent onward: those a header in front gave, else the connection's. */
  protected clientEndpoints(): ProxyEndpoints {
    return this.proxied ?? this.endpoints();
  }

  /** the client's address (the client limits' slot) */
  private clientAddress(): string {
    return this.remote || (this.peerAddress() ?? '');
  }

  /** Called by the registry's sweep: connect timeout and idle timeout; a queued connection's deadline. */
  sweep(now: number): void {
    if (this.finished) return;
    if (!this.connected) {
      if (this.waiting) {
        if (now >= this.queueDeadline) this.cut('queue_timeout');
        return;
      }
      if (this.deadline > 0 && now >= this.deadline) {
        this.deadline = 0;
        this.connectTimedOut(Object.assign(new Error(`connect timeout after ${this.snap.proxy.connectTimeoutMs} ms`), { code: 'ETIMEDOUT' }));
      }
      return;
    }
    if (this.moved) {
      this.moved = false;
      this.lastMoved = now;
    } else if (now - this.lastMoved >= this.snap.proxy.idleTimeoutMs) {
      this.cut('idle_timeout');
    }
  }

  /**
   * The next backend to try, counted as an attempt with its deadline set; null when none is left
   * (no_backend on a first attempt, else the last connect's failure).
   */
  protected pickTarget(): SnapshotBackend | null {
    const target = this.snap.pick(this.failed ?? NO_BACKENDS, this.hashKey);
    if (!target) {
      if (this.snap.proxy.queueTimeoutMs > 0 && this.attempts === 0 && this.enqueue()) return null;
      this.ended(this.attempts === 0 ? 'no_backend' : this.connectCause);
      return null;
    }
    return this.aim(target);
  }

  /** `target` is the one tried next: counted as an attempt, its deadline set. */
  private aim(target: SnapshotBackend): SnapshotBackend {
    this.target = target;
    this.attempts++;
    this.backendClosed = false;
    const now = this.base.now();
    this.connectStartedAt = now;
    this.deadline = now + this.snap.proxy.connectTimeoutMs;
    return target;
  }

  /**
   * The backend connected: counts and the connect time. `success`: the connect tells the backend
   * is up (a UDP flow's does not: its first datagram back does).
   */
  protected markConnected(success = true): void {
    const t = this.target!;
    const now = this.base.now();
    this.connected = true;
    this.deadline = 0;
    this.connectMillis = now - this.connectStartedAt;
    this.lastMoved = now;
    if (success) t.load.recordSuccess();
    t.counters.connections++;
    this.base.observer.connected(t, this.connectMillis);
  }

  /**
   * A connect failed before any byte. 'emfile': out of descriptors here, not the backend's
   * fault (no other backend would fare better; close the client, penalise nobody). Otherwise it
   * counts against the backend (passive health, ejection after repeated failures), and says
   * whether the client may be retried on a backend not yet tried.
   */
  protected connectFailure(err: Error): 'emfile' | 'retry' | 'give-up' {
    this.deadline = 0;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') {
      this.ended('connect_failed');
      this.base.observer.acceptError(err);
      return 'emfile';
    }
    this.connectCause = code === 'ETIMEDOUT' ? 'connect_timeout' : 'connect_failed';
    const t = this.target!;
    t.counters.connectErrors++;
    this.passiveFailure(t.load);
    (this.failed ??= []).push(t.load);
    const canRetry = !this.clientClosed && this.attempts <= this.snap.proxy.connectRetries;
    this.base.observer.connectFailed(t, err.message, canRetry);
    if (!canRetry) this.ended(this.connectCause);
    return canRetry ? 'retry' : 'give-up';
  }

  /** Passive health: a connect to this backend failed (ejected after repeated failures). */
  protected passiveFailure(load: BackendLoad): void {
    const h = this.snap.health;
    // the backend's figures eject it after unhealthy_threshold failures in a row
    load.recordFailure(h.unhealthyThreshold, this.base.now() + Math.min(MAX_EJECT_MS, Math.max(MIN_EJECT_MS, h.intervalMs)));
  }

  /** `n` bytes read from the client. */
  protected countIn(n: number): void {
    this.inBytes += n;
    this.target!.counters.bytesIn += n;
    this.moved = true;
    if (this.firstSentAt === 0) this.firstSentAt = this.base.now();
  }

  /** `n` bytes read from the backend; the first ones give the latency sample. */
  protected countOut(n: number): void {
    this.outBytes += n;
    const t = this.target!;
    t.counters.bytesOut += n;
    this.moved = true;
    if (!this.gotFirstByte) {
      this.gotFirstByte = true;
      // latency = connect time + time from the first client byte sent to the first byte back
      // (for server-first protocols, from the connect)
      const now = this.base.now();
      const from = this.firstSentAt === 0 ? this.connectStartedAt + this.connectMillis : this.firstSentAt;
      this.latency = this.connectMillis + (now - from);
      t.load.observeLatency(this.latency);
    }
  }

  /** Once both sides are closed: out of the registry, the client's slot back, the counts. */
  protected maybeFinish(): void {
    if (this.finished || !this.clientClosed || !this.backendClosed) return;
    this.finished = true;
    this.base.registry.delete(this);
    if (this.admitted) this.base.released(this.clientAddress());
    this.base.observer.closed(this);
  }
}

/** Is a usable backend of the service at its cap (so that a connection may wait for its slot)? */
function atCap(snap: ServiceSnapshot): boolean {
  for (const b of snap.backends) if (b.baseWeight > 0 && b.load.isUsable() && b.load.active >= b.cap) return true;
  return false;
}
