// Table-driven tests of every strategy with an injected fake clock and random source: exact pick
// sequences and exact shares where the algorithm is deterministic, and the properties that matter
// where it is not (power of two choices, decaying averages and penalties).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BackendLoad, FAILURE_HALF_LIFE_MS } from '../../src/core/stats';
import { STRATEGIES } from '../../src/strategy/index';
import type { Candidate, StrategyEnv } from '../../src/core/strategy';
import { roundRobin } from '../../src/strategy/round-robin';
import { weightedRoundRobin } from '../../src/strategy/weighted-round-robin';
import { leastConnections } from '../../src/strategy/least-connections';
import { fastestResponse } from '../../src/strategy/fastest-response';
import { adaptive, adaptiveCost, DEFAULT_LATENCY_MS } from '../../src/strategy/adaptive';

/** A fake clock, ms. */
class FakeClock {
  t = 1_000_000;
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A deterministic random source: cycles through `values` (each in [0, 1)). */
function sequence(values: readonly number[]): StrategyEnv {
  let i = 0;
  return { random: () => values[i++ % values.length]! };
}

/** A seeded linear congruential generator in [0, 1). */
function seeded(seed: number): StrategyEnv {
  let s = seed >>> 0;
  return {
    random: () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s / 2 ** 32;
    },
  };
}

interface Cand extends Candidate {
  weight: number;
}

function candidates(clock: FakeClock, spec: readonly (number | { weight?: number; active?: number })[]): Cand[] {
  return spec.map((s, i) => {
    const o = typeof s === 'number' ? { weight: s } : s;
    const load = new BackendLoad(`k${i}`, clock.now);
    load.active = o.active ?? 0;
    return { id: i, name: String.fromCharCode(97 + i), weight: o.weight ?? 1, load };
  });
}

function picks(pick: (c: readonly Candidate[]) => Candidate | undefined, c: readonly Candidate[], n: number): string {
  let out = '';
  for (let k = 0; k < n; k++) out += pick(c)!.name;
  return out;
}

function counts(seq: string): Record<string, number> {
  const m: Record<string, number> = {};
  for (const ch of seq) m[ch] = (m[ch] ?? 0) + 1;
  return m;
}

describe('every strategy', () => {
  for (const [name, factory] of Object.entries(STRATEGIES)) {
    test(`${name} returns undefined for an empty list and the only candidate of a list of one`, () => {
      const clock = new FakeClock();
      const s = factory(seeded(1));
      assert.equal(s.pick([]), undefined);
      const [one] = candidates(clock, [3]);
      for (let k = 0; k < 5; k++) assert.equal(s.pick([one!]), one);
      assert.equal(s.pick([]), undefined);
    });

    test(`${name} only ever returns one of the candidates it was given`, () => {
      const clock = new FakeClock();
      const s = factory(seeded(7));
      const c = candidates(clock, [1, 2, 3, 4]);
      c[1]!.load.observeLatency(5);
      c[2]!.load.observeLatency(50);
      for (let k = 0; k < 200; k++) {
        const sub = c.slice(k % 3);
        const p = s.pick(sub);
        assert.ok(p && sub.includes(p as Cand), `pick ${k}`);
        clock.advance(10);
      }
    });
  }
});

describe('round_robin', () => {
  const cases = [
    { weights: [1, 1, 1], n: 9, want: 'abcabcabc' },
    { weights: [5, 1, 1], n: 6, want: 'abcabc' }, // ignores weight
    { weights: [1, 1], n: 5, want: 'ababa' },
    { weights: [2], n: 3, want: 'aaa' },
  ];
  for (const c of cases) {
    test(`weights ${c.weights.join('/')}: ${c.want}`, () => {
      const s = roundRobin();
      assert.equal(picks(s.pick, candidates(new FakeClock(), c.weights), c.n), c.want);
    });
  }

  test('keeps cycling when the list shrinks (a backend went down)', () => {
    const clock = new FakeClock();
    const s = roundRobin();
    const c = candidates(clock, [1, 1, 1]);
    assert.equal(picks(s.pick, c, 3), 'abc');
    const two = [c[0]!, c[2]!];
    const seq = picks(s.pick, two, 4);
    assert.deepEqual(counts(seq), { a: 2, c: 2 });
  });
});

describe('weighted_round_robin (smooth)', () => {
  const exact = [
    // the classic nginx example: spread out, not "aaaaabc"
    { weights: [5, 1, 1], want: 'aabacaa' },
    { weights: [1, 1, 1], want: 'abc' },
    { weights: [2, 1], want: 'aba' },
    { weights: [3, 2], want: 'ababa' },
    { weights: [5, 3, 2], want: 'abcaabacba' },
  ];
  for (const c of exact) {
    test(`weights ${c.weights.join('/')}: exact sequence ${c.want}, repeated`, () => {
      const s = weightedRoundRobin();
      const cands = candidates(new FakeClock(), c.weights);
      assert.equal(picks(s.pick, cands, c.want.length * 3), c.want.repeat(3));
    });
  }

  const shares = [
    { weights: [5, 3, 2], n: 50, want: { a: 25, b: 15, c: 10 } },
    { weights: [1, 2, 3, 4], n: 100, want: { a: 10, b: 20, c: 30, d: 40 } },
    { weights: [7, 1], n: 80, want: { a: 70, b: 10 } },
    { weights: [100, 1, 1], n: 204, want: { a: 200, b: 2, c: 2 } },
  ];
  for (const c of shares) {
    test(`weights ${c.weights.join('/')}: exactly ${JSON.stringify(c.want)} of ${c.n}, and each weight in any sum(weights) consecutive picks`, () => {
      const s = weightedRoundRobin();
      const cands = candidates(new FakeClock(), c.weights);
      const seq = picks(s.pick, cands, c.n);
      assert.deepEqual(counts(seq), c.want);
      const total = c.weights.reduce((a, b) => a + b, 0);
      for (let i = 0; i + total <= seq.length; i++) {
        const win = counts(seq.slice(i, i + total));
        c.weights.forEach((w, k) => assert.equal(win[String.fromCharCode(97 + k)] ?? 0, w, `window at ${i}: ${seq.slice(i, i + total)}`));
      }
    });
  }

  test('a weight change takes effect at once and shares converge to the new weights', () => {
    const s = weightedRoundRobin();
    const c = candidates(new FakeClock(), [1, 1]);
    picks(s.pick, c, 3);
    c[0]!.weight = 3;
    const seq = picks(s.pick, c, 40);
    // after at most one period of the old state, every 4 picks hold 3 a and 1 b
    assert.deepEqual(counts(seq.slice(4)), { a: 27, b: 9 });
  });
});

describe('least_connections', () => {
  const cases: { name: string; spec: { weight: number; active: number }[]; want: string }[] = [
    { name: 'fewest active wins', spec: [{ weight: 1, active: 3 }, { weight: 1, active: 1 }, { weight: 1, active: 2 }], want: 'b' },
    // 2/3 < 1/1: relative to weight, b is less loaded although it has more connections
    { name: 'relative to weight', spec: [{ weight: 1, active: 1 }, { weight: 3, active: 2 }], want: 'b' },
    // 3/2 < 2/1
    { name: 'relative to weight, other way', spec: [{ weight: 2, active: 3 }, { weight: 1, active: 2 }], want: 'a' },
    // 0 active is best whatever the weight
    { name: 'idle low weight beats busy high weight', spec: [{ weight: 100, active: 1 }, { weight: 1, active: 0 }], want: 'b' },
    // 1e15 * 3 vs (1e15 + 1) * 3 ... compared exactly as products of integers below 2^53
    { name: 'large counts, no division', spec: [{ weight: 3, active: 1_000_000_000_001 }, { weight: 3, active: 1_000_000_000_000 }], want: 'b' },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.want}, whatever the rotation`, () => {
      const s = leastConnections();
      const cands = candidates(new FakeClock(), c.spec);
      for (let k = 0; k < 6; k++) assert.equal(s.pick(cands)!.name, c.want, `pick ${k}`);
    });
  }

  test('ties rotate: equal loads are picked in turn', () => {
    const s = leastConnections();
    const c = candidates(new FakeClock(), [1, 1, 1]);
    assert.equal(picks(s.pick, c, 6), 'abcabc');
  });

  test('equal ratios are ties (1/3 = 2/6), and a worse backend is never picked', () => {
    const s = leastConnections();
    const c = candidates(new FakeClock(), [
      { weight: 3, active: 1 },
      { weight: 6, active: 2 },
      { weight: 1, active: 1 },
    ]);
    const got = counts(picks(s.pick, c, 30));
    assert.equal(got['c'], undefined);
    assert.ok((got['a'] ?? 0) > 0 && (got['b'] ?? 0) > 0, JSON.stringify(got));
  });

  test('spreads a burst of picks when each pick is acquired (connections stay open)', () => {
    const s = leastConnections();
    const c = candidates(new FakeClock(), [2, 1]);
    for (let k = 0; k < 30; k++) s.pick(c)!.load.acquire();
    assert.deepEqual(
      c.map((x) => x.load.active),
      [20, 10],
    );
  });
});

describe('fastest_response', () => {
  test('probes every backend without samples first, then picks the lowest average', () => {
    const clock = new FakeClock();
    const s = fastestResponse();
    const c = candidates(clock, [1, 1, 1]);
    const lat: Record<string, number> = { a: 30, b: 5, c: 12 };
    const probed = new Set<string>();
    for (let k = 0; k < 3; k++) {
      const p = s.pick(c)!;
      assert.ok(!p.load.hasLatency, `pick ${k} should probe a backend without samples`);
      probed.add(p.name);
      p.load.observeLatency(lat[p.name]!);
      clock.advance(1);
    }
    assert.equal(probed.size, 3);
    for (let k = 0; k < 10; k++) {
      const p = s.pick(c)!;
      assert.equal(p.name, 'b', `pick ${k}`);
      p.load.observeLatency(lat[p.name]!);
      clock.advance(1);
    }
  });

  test('an unknown backend gets one probe at a time; with every backend unknown and busy, picks rotate', () => {
    const clock = new FakeClock();
    const s = fastestResponse();
    const c = candidates(clock, [1, 1, 1]);
    c[0]!.load.observeLatency(5);
    c[1]!.load.observeLatency(9);
    const probe = s.pick(c)!;
    assert.equal(probe.name, 'c');
    probe.load.acquire();
    for (let k = 0; k < 5; k++) assert.equal(s.pick(c)!.name, 'a', 'c is not flooded while its probe is out');
    const u = candidates(clock, [1, 1]);
    u.forEach((x) => x.load.acquire());
    assert.deepEqual(counts(picks(s.pick, u, 4)), { a: 2, b: 2 });
  });

  test('a new backend (no samples) is probed at once', () => {
    const clock = new FakeClock();
    const s = fastestResponse();
    const c = candidates(clock, [1, 1]);
    c[0]!.load.observeLatency(1);
    assert.equal(s.pick(c)!.name, 'b');
  });

  test('weight divides the average', () => {
    const clock = new FakeClock();
    const s = fastestResponse();
    const c = candidates(clock, [4, 1]);
    c[0]!.load.observeLatency(20); // 20 / 4 = 5
    c[1]!.load.observeLatency(8); // 8 / 1 = 8
    for (let k = 0; k < 4; k++) assert.equal(s.pick(c)!.name, 'a');
  });

  test('a formerly slow backend is tried again once its average decayed, and left again if still slow', () => {
    const clock = new FakeClock();
    const s = fastestResponse();
    const c = candidates(clock, [1, 1]);
    const lat: Record<string, number> = { a: 80, b: 4 };
    c[0]!.load.observeLatency(lat['a']!);
    c[1]!.load.observeLatency(lat['b']!);
    // traffic every 10 ms; b stays fast, a decays while unused
    let firstRetryAt = -1;
    const t0 = clock.t;
    for (let k = 0; k < 12_000 && firstRetryAt < 0; k++) {
      clock.advance(10);
      const p = s.pick(c)!;
      if (p.name === 'a') firstRetryAt = clock.t - t0;
      p.load.observeLatency(lat[p.name]!);
    }
    assert.ok(firstRetryAt > 1000, `a retried too early, after ${firstRetryAt} ms`);
    assert.ok(firstRetryAt > 0 && firstRetryAt <= 60_000, `a never retried (${firstRetryAt})`);
    // the retry measured 80 ms again: a is left at once
    for (let k = 0; k < 20; k++) {
      clock.advance(10);
      const p = s.pick(c)!;
      assert.equal(p.name, 'b', `pick ${k} after the retry`);
      p.load.observeLatency(lat[p.name]!);
    }
  });

  test('a backend that turned slow is left after its first slow sample', () => {
    const clock = new FakeClock();
    const s = fastestResponse();
    const c = candidates(clock, [1, 1]);
    c[0]!.load.observeLatency(3);
    c[1]!.load.observeLatency(4);
    assert.equal(s.pick(c)!.name, 'a');
    clock.advance(5);
    c[0]!.load.observeLatency(90);
    for (let k = 0; k < 10; k++) assert.equal(s.pick(c)!.name, 'b');
  });
});

describe('adaptive', () => {
  test('power of two choices compares two DISTINCT backends, for every random draw', () => {
    const clock = new FakeClock();
    // one backend is far worse than the others: with two distinct choices it can never win
    for (const n of [2, 3, 5]) {
      const c = candidates(clock, Array.from({ length: n }, () => 1));
      c.forEach((x, i) => x.load.observeLatency(i === 0 ? 1000 : 5 + i));
      const draws = [0, 1e-9, 0.2, 0.25, 0.33, 0.5, 0.5 - 1e-12, 0.66, 0.75, 0.8, 0.999, 1 - 2 ** -53];
      for (const r1 of draws) {
        for (const r2 of draws) {
          const s = adaptive(sequence([r1, r2]));
          const p = s.pick(c)!;
          assert.notEqual(p.name, 'a', `n=${n} draws ${r1}, ${r2}`);
        }
      }
    }
  });

  test('with two backends the better one always wins', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1]);
    c[0]!.load.observeLatency(10);
    c[1]!.load.observeLatency(20);
    const s = adaptive(seeded(3));
    for (let k = 0; k < 50; k++) assert.equal(s.pick(c)!.name, 'a');
  });

  test('the worst of three is never picked; the best is picked most', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    c[0]!.load.observeLatency(5);
    c[1]!.load.observeLatency(10);
    c[2]!.load.observeLatency(70);
    const s = adaptive(seeded(11));
    const got = counts(picks(s.pick, c, 300));
    assert.equal(got['c'], undefined);
    // a wins every pair it is in (two pairs of three); the pair (b, c) goes to b, since a is not
    // MEMORY_MARGIN times cheaper than b (5 x 2 is not below 10)
    assert.ok(got['a']! > 150 && got['a']! < 250, JSON.stringify(got));
    assert.equal(got['a']! + got['b']!, 300);
  });

  test('backends of about the same cost share light sequential traffic (the memory does not stick)', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    c[0]!.load.observeLatency(3);
    c[1]!.load.observeLatency(3.3);
    c[2]!.load.observeLatency(53);
    const got = counts(picks(adaptive(seeded(5)).pick, c, 300));
    assert.equal(got['c'], undefined, JSON.stringify(got));
    assert.ok(got['a']! > 60 && got['b']! > 60, `both fast backends get traffic: ${JSON.stringify(got)}`);
  });

  test('two slow backends of three: the remembered winner beats a pair of slow ones', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    c[0]!.load.observeLatency(4);
    c[1]!.load.observeLatency(90);
    c[2]!.load.observeLatency(70);
    // draws that make the first pair (a, b), then only pairs (b, c): plain P2C would pick c
    const s = adaptive(sequence([0, 0.5, 0.4, 0.9]));
    assert.equal(s.pick(c)!.name, 'a');
    for (let k = 0; k < 20; k++) assert.equal(s.pick(c)!.name, 'a', `pick ${k}`);
  });

  test('the remembered winner does not herd: its cost grows with every connection it gets', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    c.forEach((x) => x.load.observeLatency(5));
    const s = adaptive(seeded(23));
    for (let k = 0; k < 30; k++) s.pick(c)!.load.acquire();
    // equal latency: connections spread about evenly (30 / 0 / 0 would be a herd)
    const act = c.map((x) => x.load.active);
    assert.ok(Math.max(...act) - Math.min(...act) <= 4 && Math.min(...act) >= 7, JSON.stringify(act));
  });

  test('the remembered winner is matched by id: a changed list does not confuse it', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    c[0]!.load.observeLatency(4);
    c[1]!.load.observeLatency(50);
    c[2]!.load.observeLatency(60);
    const s = adaptive(sequence([0, 0.5]));
    assert.equal(s.pick(c)!.name, 'a');
    // a is gone (down): the index it had now holds b, which must not count as remembered
    const rest = [c[1]!, c[2]!];
    for (let k = 0; k < 5; k++) assert.equal(s.pick(rest)!.name, 'b');
    assert.equal(s.pick([c[2]!]), c[2]);
  });

  test('cost: latency x (active + 1) / weight x failure penalty', () => {
    const clock = new FakeClock();
    const [x] = candidates(clock, [{ weight: 2, active: 3 }]);
    x!.load.observeLatency(10);
    assert.equal(adaptiveCost(x!, 999), (10 * 4) / 2);
    const [u] = candidates(clock, [1]);
    assert.equal(adaptiveCost(u!, 42), 42, 'no samples: the given default');
  });

  test('outstanding connections count: a busy fast backend loses to an idle one a bit slower', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [{ active: 4 }, { active: 0 }]);
    c[0]!.load.observeLatency(5); // 5 * 5 = 25
    c[1]!.load.observeLatency(10); // 10 * 1 = 10
    assert.equal(adaptive(seeded(1)).pick(c)!.name, 'b');
  });

  test('peak EWMA: jumps up at once on a slow sample, decays down with fast samples and while unused', () => {
    const clock = new FakeClock();
    const l = new BackendLoad('k', clock.now);
    for (let k = 0; k < 50; k++) {
      l.observeLatency(5);
      clock.advance(10);
    }
    assert.ok(Math.abs(l.peakLatencyMs() - 5) < 0.5, String(l.peakLatencyMs()));
    l.observeLatency(100);
    assert.equal(l.peakLatencyMs(), 100, 'up at once');
    // fast samples pull it down, monotonically, and within a few seconds close to 5
    let prev = 100;
    for (let k = 0; k < 500; k++) {
      clock.advance(10);
      l.observeLatency(5);
      const p = l.peakLatencyMs();
      assert.ok(p <= prev + 1e-9, `not monotonic at ${k}: ${p} > ${prev}`);
      prev = p;
    }
    assert.ok(prev < 10, `still ${prev} after 5 s of fast samples`);
    // the plain average is not peak-sensitive
    l.observeLatency(100);
    assert.ok(l.latencyMs() < 100 && l.peakLatencyMs() === 100);
    // unused, it decays with time alone
    const before = l.peakLatencyMs();
    clock.advance(1000);
    const after1 = l.peakLatencyMs();
    clock.advance(60_000);
    const after61 = l.peakLatencyMs();
    assert.ok(after1 < before && after61 < after1 && after61 < 1, `${before} ${after1} ${after61}`);
  });

  test('a backend that turned slow loses its traffic after one slow sample', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    c.forEach((x) => x.load.observeLatency(3));
    clock.advance(10);
    c[1]!.load.observeLatency(90);
    const s = adaptive(seeded(5));
    const got = counts(picks(s.pick, c, 100));
    assert.equal(got['b'], undefined, JSON.stringify(got));
  });

  test('an idle backend without samples is probed; while its probe is out it gets the pessimistic default', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1]);
    c[0]!.load.observeLatency(10);
    const s = adaptive(seeded(9));
    // b has never been measured and has nothing in flight: it is probed
    assert.equal(s.pick(c)!.name, 'b');
    // its probe is out: twice the slowest known average, 20 x (1 + 1) = 40 > 10 x 1, a wins
    c[1]!.load.active = 1;
    assert.equal(s.pick(c)!.name, 'a');
    // a busy: 10 x (4 + 1) = 50 > 40, the unknown one is tried again
    c[0]!.load.active = 4;
    assert.equal(s.pick(c)!.name, 'b');
    assert.equal(adaptiveCost(c[1]!, 20), 40);
  });

  test('with no samples at all, every backend is probed once, then DEFAULT_LATENCY_MS spreads picks', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1, 1]);
    assert.equal(adaptiveCost(c[0]!, DEFAULT_LATENCY_MS), DEFAULT_LATENCY_MS);
    const s = adaptive(seeded(13));
    // each pick is a connection in flight (as the session's lease makes it)
    const first: string[] = [];
    for (let k = 0; k < 3; k++) {
      const x = s.pick(c)!;
      x.load.active++;
      first.push(x.name);
    }
    assert.deepEqual(first.sort(), ['a', 'b', 'c']);
    const got = counts(picks(s.pick, c, 300));
    assert.equal(Object.keys(got).length, 3, JSON.stringify(got));
  });

  test('failures penalise, and the penalty decays with time', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [1, 1]);
    c[0]!.load.observeLatency(9);
    c[1]!.load.observeLatency(10);
    const s = adaptive(seeded(17));
    assert.equal(s.pick(c)!.name, 'a');
    c[0]!.load.recordFailure();
    assert.ok(c[0]!.load.failureScore() === 1);
    assert.equal(s.pick(c)!.name, 'b', 'penalised');
    clock.advance(FAILURE_HALF_LIFE_MS);
    assert.ok(Math.abs(c[0]!.load.failureScore() - 0.5) < 1e-9, 'half after one half-life');
    clock.advance(FAILURE_HALF_LIFE_MS * 9);
    assert.ok(c[0]!.load.failureScore() < 0.001);
    assert.equal(s.pick(c)!.name, 'a', 'forgiven once the penalty decayed');
  });

  test('weight divides the cost', () => {
    const clock = new FakeClock();
    const c = candidates(clock, [4, 1]);
    c[0]!.load.observeLatency(20); // 20 / 4 = 5
    c[1]!.load.observeLatency(8);
    const s = adaptive(seeded(19));
    for (let k = 0; k < 10; k++) assert.equal(s.pick(c)!.name, 'a');
  });
});
