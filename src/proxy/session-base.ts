// What a proxied connection does whatever carries its bytes (net.Socket in ./session.ts, raw
// libuv handles in ./raw-session.ts): the backend pick, the connect deadline and the idle
// timeout checked by the registry's sweep, passive health on a failed connect, the counters and
// the latency sample, the termination cause (the first one seen, set where it happens), and the
// end of the session once both sides are closed.

import type { ServiceSnapshot, SnapshotBackend } from '../core/snapshot';
import type { BackendLoad } from '../core/stats';
import type { ProxyObserver, SessionEnd, Termination } from './events';

/** Longest passive ejection, ms. */
const MAX_EJECT_MS = 30_000;
const MIN_EJECT_MS = 1_000;

const NO_BACKENDS: readonly BackendLoad[] = Object.freeze([]);

/** What the listener gives every session, whichever relay carries it. */
export interface SessionHost {
  readonly observer: ProxyObserver;
  readonly registry: { delete(session: SessionBase): unknown };
  readonly now: () => number;
  /** the client's per-address slot is free again (called only for sessions marked `admitted`) */
  readonly released: (remoteAddress: string) => void;
}

export abstract class SessionBase implements SessionEnd {
  /** set by the listener when the per-client limits counted this connection */
  admitted = false;
  /** "ip:port" of the client, set by the listener when the access log wants this connection */
  logClient: string | null = null;
  /** why it ended: the first cause seen wins */
  private cause: Termination | null = null;
  /** what the last failed connect was (the cause when no backend is left to try) */
  private connectCause: Termination = 'connect_failed';
  private latency = -1;
  /** the hash key (the client's IP or the TLS server name), set by the listener for a keyed service (consistent_hash) only */
  hashKey: string | undefined = undefined;
  /** bytes the listener read from the client to route it (the ClientHello): sent to the backend first */
  initial: Buffer | null = null;
  protected target: SnapshotBackend | null = null;
  /** backends whose connect failed (allocated on the first failure) */
  private failed: BackendLoad[] | null = null;
  protected attempts = 0;
  /** when the client was accepted (the listener sets it back to the accept of a connection whose ClientHello it read first) */
  startedAt: number;
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
    protected readonly snap: ServiceSnapshot,
    private readonly base: SessionHost,
  ) {
    this.startedAt = base.now();
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

  /** The cause of the end, unless one was seen first. */
  protected ended(cause: Termination): void {
    if (this.cause === null) this.cause = cause;
  }

  /** Close both sides now for this cause (idle or drain timeout, a disabled backend, shutdown). */
  cut(cause: Termination): void {
    this.ended(cause);
    this.destroy();
  }

  /** close both sides now */
  abstract destroy(): void;
  /** the connect deadline passed: fail the attempt under way */
  protected abstract connectTimedOut(error: Error): void;
  /** the client's address (the client limits' slot) */
  protected abstract clientAddress(): string | undefined;

  /** Called by the registry's sweep: connect timeout and idle timeout. */
  sweep(now: number): void {
    if (this.finished) return;
    if (!this.connected) {
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
      this.ended(this.attempts === 0 ? 'no_backend' : this.connectCause);
      return null;
    }
    this.target = target;
    this.attempts++;
    this.backendClosed = false;
    const now = this.base.now();
    this.connectStartedAt = now;
    this.deadline = now + this.snap.proxy.connectTimeoutMs;
    return target;
  }

  /** The backend connected: counts and the connect time. */
  protected markConnected(): void {
    const t = this.target!;
    const now = this.base.now();
    this.connected = true;
    this.deadline = 0;
    this.connectMillis = now - this.connectStartedAt;
    this.lastMoved = now;
    t.load.recordSuccess();
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
    const load = t.load;
    const h = this.snap.health;
    // passive health: the backend's figures eject it after unhealthy_threshold failures in a row
    load.recordFailure(h.unhealthyThreshold, this.base.now() + Math.min(MAX_EJECT_MS, Math.max(MIN_EJECT_MS, h.intervalMs)));
    t.counters.connectErrors++;
    (this.failed ??= []).push(load);
    const canRetry = !this.clientClosed && this.attempts <= this.snap.proxy.connectRetries;
    this.base.observer.connectFailed(t, err.message, canRetry);
    if (!canRetry) this.ended(this.connectCause);
    return canRetry ? 'retry' : 'give-up';
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
    if (this.admitted) this.base.released(this.clientAddress() ?? '');
    this.base.observer.closed(this);
  }
}
