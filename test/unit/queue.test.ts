// The queue at the cap as a structure (src/proxy/queue.ts): bounded by queue_max, first come first
// served, removal from anywhere keeping the order, the ring growing and wrapping, and serve()
// offering slots to the head until one finds none.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WaitQueue, type Waiter } from '../../src/proxy/queue';

/** A waiter that takes a slot while `slots.n` > 0, recording the order it was served in. */
class W implements Waiter {
  constructor(
    readonly name: string,
    private readonly slots: { n: number; served: string[] },
  ) {}
  serve(): boolean {
    if (this.slots.n === 0) return false;
    this.slots.n--;
    this.slots.served.push(this.name);
    return true;
  }
}

function drain(q: WaitQueue<W>): string[] {
  const out: string[] = [];
  const slots = { n: Infinity, served: out };
  // every waiter is served once slots are plenty: the order they leave in
  for (let w = q.peek(); w !== undefined; w = q.peek()) {
    q.remove(w);
    slots.served.push(w.name);
  }
  return out;
}

test('bounded by max: one more is refused, and room comes back as entries leave', () => {
  const slots = { n: 0, served: [] as string[] };
  const q = new WaitQueue<W>();
  const ws = ['a', 'b', 'c'].map((n) => new W(n, slots));
  assert.equal(q.push(ws[0]!, 2), true);
  assert.equal(q.push(ws[1]!, 2), true);
  assert.equal(q.push(ws[2]!, 2), false, 'queue_max reached');
  assert.equal(q.length, 2);
  assert.equal(q.remove(ws[0]!), true);
  assert.equal(q.remove(ws[0]!), false, 'not in any more');
  assert.equal(q.push(ws[2]!, 2), true);
  assert.deepEqual(drain(q), ['b', 'c']);
  assert.equal(q.length, 0);
  assert.equal(q.peek(), undefined);
});

test('serve(): the head first, then the next, until one finds no slot; nobody behind it jumps ahead', () => {
  const slots = { n: 0, served: [] as string[] };
  const q = new WaitQueue<W>();
  for (const n of ['a', 'b', 'c', 'd']) q.push(new W(n, slots), 10);
  q.serve();
  assert.deepEqual(slots.served, [], 'no slot: nobody served, nobody removed');
  assert.equal(q.length, 4);
  slots.n = 1;
  q.serve();
  assert.deepEqual(slots.served, ['a']);
  slots.n = 2;
  q.serve();
  assert.deepEqual(slots.served, ['a', 'b', 'c']);
  assert.equal(q.length, 1);
  assert.equal(q.peek()!.name, 'd');
});

test('removal from the middle keeps the order; the ring wraps and grows past its first size', () => {
  const slots = { n: 0, served: [] as string[] };
  const q = new WaitQueue<W>();
  const all: W[] = [];
  // wrap the ring: push and serve so that the head moves, then push past the first allocation
  for (let i = 0; i < 10; i++) q.push(new W(`x${i}`, slots), 1000);
  slots.n = 7;
  q.serve();
  assert.equal(q.length, 3);
  for (let i = 0; i < 40; i++) {
    const w = new W(`y${i}`, slots);
    all.push(w);
    assert.equal(q.push(w, 1000), true);
  }
  assert.equal(q.length, 43);
  q.remove(all[5]!);
  q.remove(all[20]!);
  q.remove(all[39]!);
  const expected = ['x7', 'x8', 'x9', ...all.filter((_, i) => i !== 5 && i !== 20 && i !== 39).map((w) => w.name)];
  slots.n = Infinity;
  slots.served.length = 0;
  q.serve();
  assert.deepEqual(slots.served, expected);
  assert.equal(q.length, 0);
});

test('a waiter whose serve() ends another waiter (it leaves the queue then) does not unbalance it', () => {
  const q = new WaitQueue<Waiter>();
  const served: string[] = [];
  const b: Waiter = { serve: () => (served.push('b'), true) };
  // a's serve() takes its slot, and its connect failing at once ends b's client (removed meanwhile)
  const a: Waiter = {
    serve: () => {
      served.push('a');
      q.remove(b);
      q.serve(); // a slot freed while serving: the loop under way takes it, no nested serve
      return true;
    },
  };
  const c: Waiter = { serve: () => (served.push('c'), false) };
  q.push(a, 10);
  q.push(b, 10);
  q.push(c, 10);
  q.serve();
  assert.deepEqual(served, ['a', 'c']);
  assert.equal(q.length, 1);
  assert.equal(q.peek(), c);
});
