// The proxy's registry of open connections, and drain(deadline): wait for them to end, then cut
// the rest (the runtime's shutdown and reload call it).
// It also runs the one coarse sweep that replaces a timer per connection: while any connection is
// open, every periodMs() each one's sweep(now) checks its own timeouts (connect, idle, and the
// deadline of one waiting in its service's queue: proxy/queue.ts).

import type { Termination } from './events';

export interface Drainable {
  /** the backend key this connection is attached to, if any */
  readonly backendKey: string | null;
  /** close both sockets now, for this cause (the access log's termination) */
  cut(cause: Termination): void;
  /** the periodic sweep: check timeouts against `now` */
  sweep?(now: number): void;
}

export interface SweepOptions {
  /** the sweep period, ms, read again before each sweep */
  readonly periodMs: () => number;
  readonly now: () => number;
}

export interface DrainResult {
  readonly drained: number;
  readonly cut: number;
}

export class ConnectionRegistry<T extends Drainable = Drainable> {
  private readonly open = new Set<T>();
  private waiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly sweeper: SweepOptions | null = null) {}

  get size(): number {
    return this.open.size;
  }

  add(c: T): void {
    this.open.add(c);
    if (this.sweeper !== null && this.timer === null) this.arm();
  }

  /** Arm the next sweep (only while connections are open: an idle process has no timer). */
  private arm(): void {
    this.timer = setTimeout(this.onSweep, this.sweeper!.periodMs());
    this.timer.unref();
  }

  private readonly onSweep = (): void => {
    this.timer = null;
    if (this.open.size === 0) return;
    const now = this.sweeper!.now();
    for (const c of this.open) c.sweep?.(now);
    if (this.open.size > 0 && this.timer === null) this.arm();
  };

  delete(c: T): void {
    if (this.open.delete(c) && this.open.size === 0) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }

  /** Close now every connection attached to one of these backend keys. Returns how many. */
  cutBackends(keys: ReadonlySet<string>, cause: Termination): number {
    let n = 0;
    for (const c of [...this.open]) {
      if (c.backendKey !== null && keys.has(c.backendKey)) {
        c.cut(cause);
        n++;
      }
    }
    return n;
  }

  /** The connections attached now to one of these backend keys. */
  attachedTo(keys: ReadonlySet<string>): T[] {
    const out: T[] = [];
    for (const c of this.open) if (c.backendKey !== null && keys.has(c.backendKey)) out.push(c);
    return out;
  }

  has(c: T): boolean {
    return this.open.has(c);
  }


  /** Wait until every connection has ended or the deadline (ms from now) passes; cut the rest (shutdown). */
  async drain(timeoutMs: number): Promise<DrainResult> {
    const before = this.open.size;
    await this.empty(timeoutMs);
    const cut = this.open.size;
    for (const c of [...this.open]) c.cut('shutdown');
    // their close callbacks come on later turns: wait for them (bounded), so that their ends are
    // counted and logged before the process exits
    await this.empty(1000);
    return { drained: before - cut, cut };
  }

  /** Resolves when no connection is open, or after timeoutMs. */
  private empty(timeoutMs: number): Promise<void> {
    if (this.open.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
