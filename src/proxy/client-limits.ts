// Per-client-address limits: a token bucket for new connections ([proxy] client_rate_limit) and
// a cap on concurrent connections ([proxy] client_max_connections). Memory is bounded: an entry
// lives only while its address has open connections or a partly spent bucket, and the table
// never holds more than MAX_ENTRIES addresses (new addresses beyond that are refused only when a
// limit is configured, and counted as client_limit).

import type { RateLimit } from '../config/schema';

export const MAX_ENTRIES = 100_000;

interface Entry {
  active: number;
  tokens: number;
  stamp: number;
}

export class ClientLimits {
  private readonly table = new Map<string, Entry>();
  /** why admit() last said no: the rate, or the per-client cap (a full table counts as that) */
  refusal: 'rate_limit' | 'client_limit' = 'rate_limit';

  constructor(private readonly now: () => number) {}

  get size(): number {
    return this.table.size;
  }

  /**
   * May a new connection from `addr` be accepted under these limits? When it may, it is counted
   * as open until release(addr).
   */
  admit(addr: string, rate: RateLimit | null, maxConn: number): boolean {
    if (rate === null && maxConn === 0) return true;
    const now = this.now();
    let e = this.table.get(addr);
    if (!e) {
      if (this.table.size >= MAX_ENTRIES) this.sweep(now, rate);
      if (this.table.size >= MAX_ENTRIES) return this.refuse('client_limit');
      e = { active: 0, tokens: rate ? rate.count : 0, stamp: now };
      this.table.set(addr, e);
    }
    if (maxConn > 0 && e.active >= maxConn) return this.refuse('client_limit');
    if (rate) {
      e.tokens = Math.min(rate.count, e.tokens + ((now - e.stamp) * rate.count) / rate.perMs);
      e.stamp = now;
      if (e.tokens < 1) return this.refuse('rate_limit');
      e.tokens -= 1;
    }
    e.active++;
    return true;
  }

  private refuse(why: 'rate_limit' | 'client_limit'): false {
    this.refusal = why;
    return false;
  }

  release(addr: string, rate: RateLimit | null): void {
    const e = this.table.get(addr);
    if (!e) return;
    e.active--;
    if (e.active <= 0 && (rate === null || e.tokens + ((this.now() - e.stamp) * rate.count) / rate.perMs >= rate.count)) {
      this.table.delete(addr);
    }
  }

  /** Drop entries with no open connection whose bucket has refilled. */
  sweep(now: number, rate: RateLimit | null): void {
    for (const [k, e] of this.table) {
      if (e.active > 0) continue;
      if (rate === null || e.tokens + ((now - e.stamp) * rate.count) / rate.perMs >= rate.count) this.table.delete(k);
    }
  }
}
