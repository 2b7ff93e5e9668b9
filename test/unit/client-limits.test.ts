// Per-client-address limits (src/proxy/client-limits.ts) with an injected fake clock.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ClientLimits, MAX_ENTRIES } from '../../src/proxy/client-limits';
import type { RateLimit } from '../../src/config/schema';

function setup(): { limits: ClientLimits; clock: { now: number } } {
  const clock = { now: 0 };
  return { limits: new ClientLimits(() => clock.now), clock };
}

const rate = (count: number, perMs: number): RateLimit => ({ count, perMs, text: `${count}/${perMs}ms` });

describe('no limits', () => {
  test('everything is admitted and nothing is stored', () => {
    const { limits } = setup();
    for (let i = 0; i < 1000; i++) assert.equal(limits.admit('10.0.0.1', null, 0), true);
    assert.equal(limits.size, 0);
    limits.release('10.0.0.1', null);
    assert.equal(limits.size, 0);
  });
});

describe('client_max_connections (concurrent cap)', () => {
  test('at most N open connections per address; other addresses are independent', () => {
    const { limits } = setup();
    assert.equal(limits.admit('a', null, 2), true);
    assert.equal(limits.admit('a', null, 2), true);
    assert.equal(limits.admit('a', null, 2), false);
    assert.equal(limits.admit('a', null, 2), false);
    assert.equal(limits.admit('b', null, 2), true);
    assert.equal(limits.size, 2);
  });

  test('a release makes room for one more; refused attempts are not counted', () => {
    const { limits } = setup();
    assert.equal(limits.admit('a', null, 1), true);
    for (let i = 0; i < 5; i++) assert.equal(limits.admit('a', null, 1), false);
    limits.release('a', null);
    assert.equal(limits.admit('a', null, 1), true);
    assert.equal(limits.admit('a', null, 1), false);
  });

  test('the entry is dropped when its last connection closes', () => {
    const { limits } = setup();
    limits.admit('a', null, 3);
    limits.admit('a', null, 3);
    limits.release('a', null);
    assert.equal(limits.size, 1);
    limits.release('a', null);
    assert.equal(limits.size, 0);
  });

  test('releasing an unknown address does nothing', () => {
    const { limits } = setup();
    limits.admit('a', null, 1);
    limits.release('zzz', null);
    limits.release('zzz', rate(1, 1000));
    assert.equal(limits.size, 1);
    assert.equal(limits.admit('a', null, 1), false);
  });
});

describe('client_rate_limit (token bucket, fake clock)', () => {
  test('a burst of `count`, then one token per perMs/count', () => {
    const { limits, clock } = setup();
    const r = rate(2, 1000); // 2/s: a token every 500 ms
    const admit = (): boolean => {
      const ok = limits.admit('a', r, 0);
      if (ok) limits.release('a', r);
      return ok;
    };
    const steps: [number, boolean][] = [
      [0, true],
      [0, true],
      [0, false],
      [250, false], // half a token
      [500, true], // a whole token since t=0
      [500, false],
      [999, false],
      [1000, true],
      [1000, false],
    ];
    for (const [t, want] of steps) {
      clock.now = t;
      assert.equal(admit(), want, `at t=${t}`);
    }
  });

  test('the bucket refills to at most `count`', () => {
    const { limits, clock } = setup();
    const r = rate(3, 1000);
    for (let i = 0; i < 3; i++) assert.equal(limits.admit('a', r, 0), true);
    assert.equal(limits.admit('a', r, 0), false);
    clock.now = 60_000; // long idle: 180 tokens' worth, capped at 3
    for (let i = 0; i < 3; i++) assert.equal(limits.admit('a', r, 0), true, `burst ${i}`);
    assert.equal(limits.admit('a', r, 0), false);
  });

  test('per-minute rates', () => {
    const { limits, clock } = setup();
    const r = rate(3, 60_000); // 3/m: a token every 20 s
    for (let i = 0; i < 3; i++) assert.equal(limits.admit('a', r, 0), true);
    clock.now = 19_999;
    assert.equal(limits.admit('a', r, 0), false);
    clock.now = 20_000;
    assert.equal(limits.admit('a', r, 0), true);
    assert.equal(limits.admit('a', r, 0), false);
  });

  test('addresses have separate buckets', () => {
    const { limits } = setup();
    const r = rate(1, 1000);
    assert.equal(limits.admit('a', r, 0), true);
    assert.equal(limits.admit('a', r, 0), false);
    assert.equal(limits.admit('b', r, 0), true);
    assert.equal(limits.admit('::ffff:10.0.0.1', r, 0), true);
    assert.equal(limits.admit('b', r, 0), false);
  });

  test('the rate counts new connections, not open ones: releases do not refund tokens', () => {
    const { limits } = setup();
    const r = rate(2, 1000);
    assert.equal(limits.admit('a', r, 0), true);
    limits.release('a', r);
    assert.equal(limits.admit('a', r, 0), true);
    limits.release('a', r);
    assert.equal(limits.admit('a', r, 0), false);
  });
});

describe('both limits', () => {
  test('a refusal by the cap spends no token', () => {
    const { limits } = setup();
    const r = rate(2, 1000);
    assert.equal(limits.admit('a', r, 1), true); // 1 token left
    assert.equal(limits.admit('a', r, 1), false); // cap
    assert.equal(limits.admit('a', r, 1), false); // cap
    limits.release('a', r);
    assert.equal(limits.admit('a', r, 1), true); // the last token
    limits.release('a', r);
    assert.equal(limits.admit('a', r, 1), false); // rate
  });

  test('a refusal by the rate does not count as open', () => {
    const { limits, clock } = setup();
    const r = rate(1, 1000);
    assert.equal(limits.admit('a', r, 2), true);
    assert.equal(limits.admit('a', r, 2), false); // rate
    clock.now = 1000;
    assert.equal(limits.admit('a', r, 2), true); // 2 open: the refused one was not counted
    clock.now = 5000;
    assert.equal(limits.admit('a', r, 2), false); // cap
  });
});

describe('memory is bounded', () => {
  test('an idle entry stays while its bucket is partly spent, and is dropped once it has refilled', () => {
    const { limits } = setup();
    const r = rate(1, 1000);
    limits.admit('a', r, 0);
    limits.release('a', r); // bucket empty: keep the entry, or a reconnect would get a fresh bucket
    assert.equal(limits.size, 1);
    assert.equal(limits.admit('a', r, 0), false);
    limits.sweep(500, r);
    assert.equal(limits.size, 1);
    limits.sweep(2000, r);
    assert.equal(limits.size, 0);
  });

  test('a release after the bucket refilled drops the entry at once', () => {
    const { limits, clock } = setup();
    const r = rate(1, 1000);
    limits.admit('a', r, 0);
    clock.now = 1000;
    limits.release('a', r);
    assert.equal(limits.size, 0);
  });

  test('sweep keeps entries with open connections', () => {
    const { limits } = setup();
    limits.admit('a', null, 5);
    limits.admit('b', null, 5);
    limits.release('b', null);
    limits.sweep(10_000, null);
    assert.equal(limits.size, 1);
    assert.equal(limits.admit('a', null, 1), false, 'a is still counted as open');
  });

  test(`the table never holds more than MAX_ENTRIES (${MAX_ENTRIES}) addresses`, () => {
    const { limits } = setup();
    for (let i = 0; i < MAX_ENTRIES; i++) assert.ok(limits.admit(`a${i}`, null, 1));
    assert.equal(limits.size, MAX_ENTRIES);
    // every entry has an open connection: nothing can be swept, so a new address is refused
    assert.equal(limits.admit('new', null, 1), false);
    assert.equal(limits.size, MAX_ENTRIES);
    // known addresses are still served by their own entry
    assert.equal(limits.admit('a0', null, 2), true);
    // without limits the table is not involved at all
    assert.equal(limits.admit('new', null, 0), true);
    // one closes: its entry goes, and the new address fits
    limits.release('a1', null);
    assert.equal(limits.admit('new', null, 1), true);
    assert.equal(limits.size, MAX_ENTRIES);
  });

  test('a full table of idle entries is swept once their buckets refill', () => {
    const { limits, clock } = setup();
    const r = rate(1, 1000);
    for (let i = 0; i < MAX_ENTRIES; i++) {
      limits.admit(`a${i}`, r, 0);
      limits.release(`a${i}`, r);
    }
    assert.equal(limits.size, MAX_ENTRIES);
    assert.equal(limits.admit('new', r, 0), false, 'buckets still spent: nothing to drop');
    clock.now = 1000;
    assert.equal(limits.admit('new', r, 0), true);
    assert.equal(limits.size, 1);
  });
});
