// One proxied client connection: pick → connect with a timeout → on failure before any byte,
// retry on a backend not yet tried → relay both ways with backpressure and half-close → idle
// timeout → release the backend's lease exactly once, when the backend socket closes.

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
  /** the client's per-address slot is free again */
  readonly released: (client: Socket) => void;
}

/** Longest passive ejection, ms. */
const MAX_EJECT_MS = 30_000;
const MIN_EJECT_MS = 1_000;

export class Session {
  private backend: Socket | null = null;
  private target: SnapshotBackend | null = null;
  private lease: Lease | null = null;
  private tried: BackendLoad[] = [];
  private readonly startedAt: number;
  private connectStartedAt = 0;
  private connectMs = 0;
  private firstSentAt = 0;
  private gotFirstByte = false;
  private bytesIn = 0;
  private bytesOut = 0;
  private clientClosed = false;
  private backendClosed = true;
  private connected = false;
  private finished = false;

  constructor(
    private readonly client: Socket,
    private readonly snap: Snapshot,
    private readonly host: SessionHost,
  ) {
    this.startedAt = host.now();
  }

  get backendKey(): string | null {
    return this.target ? this.target.load.key : null;
  }

  /** Start: the client socket is paused (pauseOnConnect) and already counted as active. */
  start(): void {
    const c = this.client;
    c.on('error', this.onClientError);
    c.on('close', this.onClientClose);
    this.attempt();
  }

  destroy(): void {
    this.client.destroy();
    this.backend?.destroy();
  }

  private attempt(): void {
    const target = this.snap.pick(this.tried);
    if (!target) {
      if (this.tried.length === 0) this.host.observer.rejected('no_backend', this.client.remoteAddress);
      this.client.destroy();
      return;
    }
    this.target = target;
    this.tried.push(target.load);
    this.lease = target.load.acquire();
    const lease = this.lease;
    const spec = target.spec;
    const s = new Socket({ allowHalfOpen: true });
    this.backend = s;
    this.backendClosed = false;
    this.connectStartedAt = this.host.now();
    s.setNoDelay(true);
    s.setTimeout(this.snap.config.proxy.connectTimeoutMs);
    s.once('connect', this.onBackendConnect);
    s.on('timeout', this.onBackendTimeout);
    s.on('error', this.onBackendError);
    s.once('close', () => {
      lease.release();
      if (s === this.backend) {
        this.backendClosed = true;
        this.onBackendClose();
      }
    });
    s.connect({ host: spec.host, port: spec.port });
  }

  private readonly onBackendConnect = (): void => {
    const s = this.backend!;
    const t = this.target!;
    const c = this.client;
    this.connected = true;
    this.connectMs = this.host.now() - this.connectStartedAt;
    t.load.recordSuccess();
    t.counters.connections++;
    this.host.observer.connected(t, this.connectMs);
    s.setTimeout(0);
    if (this.clientClosed) {
      s.destroy();
      return;
    }
    const pre = this.host.preamble(c, this.snap);
    if (pre) s.write(pre);
    c.setNoDelay(true);
    const idle = this.snap.config.proxy.idleTimeoutMs;
    c.setTimeout(idle);
    c.on('timeout', this.onIdle);
    c.on('data', this.onClientData);
    c.on('end', this.onClientEnd);
    c.on('drain', this.onClientDrain);
    s.on('data', this.onBackendData);
    s.on('end', this.onBackendEnd);
    s.on('drain', this.onBackendDrain);
    c.resume();
  };

  private readonly onClientData = (chunk: Buffer): void => {
    this.bytesIn += chunk.length;
    this.target!.counters.bytesIn += chunk.length;
    if (this.firstSentAt === 0) this.firstSentAt = this.host.now();
    if (!this.backend!.write(chunk)) this.client.pause();
  };

  private readonly onBackendData = (chunk: Buffer): void => {
    this.bytesOut += chunk.length;
    const t = this.target!;
    t.counters.bytesOut += chunk.length;
    if (!this.gotFirstByte) {
      this.gotFirstByte = true;
      // latency = connect time + time from the first client byte sent to the first byte back
      // (for server-first protocols, from the connect)
      const now = this.host.now();
      const from = this.firstSentAt === 0 ? this.connectStartedAt + this.connectMs : this.firstSentAt;
      t.load.observeLatency(this.connectMs + (now - from));
    }
    if (!this.client.write(chunk)) this.backend!.pause();
  };

  private readonly onClientDrain = (): void => {
    this.backend?.resume();
  };

  private readonly onBackendDrain = (): void => {
    this.client.resume();
  };

  private readonly onClientEnd = (): void => {
    this.backend?.end();
  };

  private readonly onBackendEnd = (): void => {
    if (!this.client.destroyed) this.client.end();
  };

  private readonly onIdle = (): void => {
    this.destroy();
  };

  private readonly onBackendTimeout = (): void => {
    // only armed while connecting
    if (!this.connected) this.backend?.destroy(new Error(`connect timeout after ${this.snap.config.proxy.connectTimeoutMs} ms`));
  };

  private readonly onBackendError = (err: Error): void => {
    if (this.connected) {
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
    const canRetry = !this.clientClosed && this.tried.length <= this.snap.config.proxy.connectRetries;
    this.host.observer.connectFailed(t, err.message, canRetry);
    // the failed socket's 'close' releases its lease; detach it from this session now
    this.backend = null;
    this.backendClosed = true;
    if (canRetry) this.attempt();
    else this.client.destroy();
  };

  private readonly onClientError = (): void => {
    this.backend?.destroy();
  };

  private readonly onClientClose = (): void => {
    this.clientClosed = true;
    const s = this.backend;
    if (s && !this.backendClosed) {
      if (!this.connected) s.destroy();
      else if (this.client.readableEnded && !s.destroyed) s.end(() => s.destroy());
      else s.destroy();
    }
    this.maybeFinish();
  };

  private onBackendClose(): void {
    if (!this.clientClosed) {
      const c = this.client;
      if (this.backend && this.backend.readableEnded && !c.destroyed) c.end(() => c.destroy());
      else c.destroy();
    }
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.finished || !this.clientClosed || !this.backendClosed) return;
    this.finished = true;
    this.host.registry.delete(this);
    this.host.released(this.client);
    if (this.connected && this.target) {
      this.host.observer.closed(this.target, this.host.now() - this.startedAt, this.bytesIn, this.bytesOut);
    }
  }
}
