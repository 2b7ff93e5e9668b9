// A service's queue at the cap (queue_timeout, queue_max): the connections that found every
// usable backend at its max_connections wait here, first come first served, instead of being
// refused. A ring of at most queue_max entries (grown as they come); the head is offered a slot
// whenever one may have freed (a connection of the service ended; health, an agent, an operator
// or a new snapshot added capacity), never by polling. The deadline of each waiting connection is
// its own, checked by the registry's sweep.

/** What waits: a session that was refused a backend. */
export interface Waiter {
  /** offered a slot: true when it took one (it leaves the queue), false when there is still none */
  serve(): boolean;
}

export class WaitQueue<T extends Waiter> {
  private ring: (T | undefined)[] = [];
  private head = 0;
  /** entries waiting now (read at every end of a connection of the service: one field) */
  length = 0;
  /** serving now: a slot freed while serving is taken by the loop under way */
  private serving = false;

  /** Add `w` at the tail; false when `max` are waiting already (then it is refused). */
  push(w: T, max: number): boolean {
    if (this.length >= max) return false;
    if (this.length === this.ring.length) this.grow(max);
    this.ring[(this.head + this.length) % this.ring.length] = w;
    this.length++;
    return true;
  }

  /** The head, or undefined when none waits. */
  peek(): T | undefined {
    return this.length === 0 ? undefined : this.ring[this.head];
  }

  /** Take `w` out wherever it is (it went away, or its deadline passed); false when it was not in. */
  remove(w: T): boolean {
    const n = this.ring.length;
    for (let i = 0; i < this.length; i++) {
      if (this.ring[(this.head + i) % n] !== w) continue;
      // close the gap: the ones behind it move up one place, keeping their order
      for (let j = i; j < this.length - 1; j++) this.ring[(this.head + j) % n] = this.ring[(this.head + j + 1) % n];
      this.ring[(this.head + this.length - 1) % n] = undefined;
      this.length--;
      return true;
    }
    return false;
  }

  /** Offer slots to the head, then the next, until one finds none (FIFO: nobody behind it is tried). */
  serve(): void {
    if (this.serving) return;
    this.serving = true;
    try {
      while (this.length > 0) {
        const w = this.ring[this.head]!;
        if (!w.serve()) break;
        // serve() may have removed it already (a client gone while it connected): only shift it if it is still the head
        if (this.length > 0 && this.ring[this.head] === w) this.shift();
      }
    } finally {
      this.serving = false;
    }
  }

  private shift(): void {
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.ring.length;
    this.length--;
  }

  /** Double the ring (at most to `max`), its entries in order from index 0. */
  private grow(max: number): void {
    const size = Math.max(this.length + 1, Math.min(max, Math.max(16, this.ring.length * 2)));
    const next: (T | undefined)[] = new Array<T | undefined>(size);
    for (let i = 0; i < this.length; i++) next[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = next;
    this.head = 0;
  }
}
