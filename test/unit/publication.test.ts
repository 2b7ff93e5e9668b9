// One publisher, one owner: a pick leaves the snapshot as it was (src/core/snapshot.ts), the
// current snapshot is written only by LiveState's publish (src/runtime/live-state.ts), and a
// backend's health only through its figures' own methods (src/core/stats.ts).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Snapshot } from '../../src/core/snapshot';
import { BackendCounters, BackendLoad, LoadTable } from '../../src/core/stats';
import { STRATEGIES } from '../../src/strategy/index';
import { loadFromText, type Loaded } from '../../src/config/load';
import { LiveState } from '../../src/runtime/live-state';

function loaded(backends: string[], extra = ''): Loaded {
  const text = [
    '[proxy]',
    'listen_address = "127.0.0.1:8080"',
    '[strategy]',
    'algorithm = "weighted_round_robin"',
    '[health]',
    'slow_start = "10s"',
    extra,
    ...backends.flatMap((name, i) => ['[[backends]]', `id = ${i}`, `name = "${name}"`, `address = "10.0.0.${i + 1}:80"`, `weight = ${i + 1}`]),
    '',
  ].join('\n');
  return loadFromText('/test/lemonade.toml', text, {});
}

/**
 * Everything reachable from `x`, as plain data: the load figures and counters (mutable by design,
 * beside the snapshot) by identity only, functions by name.
 */
function shape(x: unknown, figures: Map<object, number>, seen = new Map<object, unknown>()): unknown {
  if (typeof x === 'function') return `fn ${x.name}`;
  if (x === null || typeof x !== 'object') return x;
  if (x instanceof BackendLoad || x instanceof BackendCounters) {
    if (!figures.has(x)) figures.set(x, figures.size);
    return `figures #${figures.get(x)}`;
  }
  if (seen.has(x)) return seen.get(x);
  const out: Record<string, unknown> = {};
  seen.set(x, out);
  if (x instanceof Map) out['entries'] = [...x].map(([k, v]) => [shape(k, figures, seen), shape(v, figures, seen)]);
  if (x instanceof Set) out['values'] = [...x].map((v) => shape(v, figures, seen));
  for (const k of Object.keys(x)) out[k] = shape((x as Record<string, unknown>)[k], figures, seen);
  return out;
}

describe('a pick does not change the snapshot', () => {
  test('picks under slow start (the weight changes at each) leave every reachable part of the snapshot equal, and the figures hold the weight', () => {
    const clock = { now: 1_000_000 };
    const loads = new LoadTable(() => clock.now);
    const snap = new Snapshot(loaded(['a', 'b', 'c']).config, 1, loads, { now: () => clock.now, random: () => 0.5, strategies: STRATEGIES });
    const svc = snap.service('default')!;
    const [a, b] = svc.backends;
    a!.load.applyCheck(true, clock.now - 2500, true); // a quarter into its ramp
    const figures = new Map<object, number>();
    const before = shape(snap, figures);
    const picked: string[] = [];
    for (let i = 0; i < 12; i++) {
      clock.now += 500;
      picked.push(svc.pick()!.name);
    }
    assert.deepEqual(shape(snap, figures), before);
    // the weight the strategy compared is the figures', ramped; b never came back, so it has all of its own
    assert.equal(a!.weight, 1 * ((2500 + 12 * 500) / 10_000));
    assert.equal(a!.load.pickWeight, a!.weight);
    assert.equal(b!.weight, 2);
    assert.ok(picked.includes('a') && picked.includes('b') && picked.includes('c'), picked.join(','));
  });

  test('the snapshot, its services and backends are frozen: a write is refused', () => {
    const snap = new Snapshot(loaded(['a', 'b']).config, 1, new LoadTable(() => 0), { now: () => 0, random: () => 0.5, strategies: STRATEGIES });
    const svc = snap.service('default')!;
    const b = svc.backends[0]!;
    for (const o of [snap, svc, b, ...svc.backends]) assert.ok(Object.isFrozen(o));
    assert.equal(Reflect.set(b, 'weight', 100), false);
    assert.equal(Reflect.set(b, 'baseWeight', 100), false);
    assert.equal(Reflect.set(svc, 'backends', []), false);
    assert.equal(b.baseWeight, 1);
  });
});

describe('LiveState publishes the current snapshot in one place', () => {
  function live(l = loaded(['a', 'b'])): { s: LiveState; heard: { snap: Snapshot; gone: string[] }[]; forgot: string[] } {
    const s = new LiveState(l, new LoadTable(() => 0), { now: () => 0, random: () => 0.5, strategies: STRATEGIES });
    const heard: { snap: Snapshot; gone: string[] }[] = [];
    const forgot: string[] = [];
    s.follow({ published: (snap, gone) => heard.push({ snap, gone: [...gone] }), forgot: (refs) => forgot.push(...refs) });
    return { s, heard, forgot };
  }

  test('readers cannot write the snapshot, config, generation, hashes or answers', () => {
    const { s, heard } = live();
    const snap = s.snapshot;
    const other = new LiveState(loaded(['x']), new LoadTable(() => 0), { now: () => 0, random: () => 0.5, strategies: STRATEGIES });
    for (const [k, v] of [['snapshot', other.snapshot], ['config', other.config], ['generation', 9], ['shownHash', 'x'], ['attemptedHash', 'x'], ['answers', new Map()], ['lastReload', null]] as const) {
      assert.equal(Reflect.set(s, k, v), false, k);
    }
    assert.equal(s.snapshot, snap);
    assert.equal(s.generation, 1);
    assert.equal(heard.length, 0);
  });

  test('a reload publishes the next generation once, and its followers hear of the backends that drain', () => {
    const { s, heard } = live();
    const first = s.snapshot;
    const lease = first.backends[1]!.load.acquire(); // b has a connection open
    const next = loaded(['a']);
    s.reloaded(next, '2026-01-01T00:00:00.000Z');
    assert.equal(heard.length, 1);
    assert.equal(heard[0]!.snap, s.snapshot);
    assert.notEqual(s.snapshot, first);
    assert.equal(s.generation, 2);
    assert.equal(s.snapshot.generation, 2);
    assert.equal(s.config, next.config);
    assert.deepEqual(heard[0]!.gone, [first.backends[1]!.load.key]);
    assert.equal(s.lastReload?.result, 'success');
    lease.release();
  });

  test("an agent's weight republishes the same config and generation, carrying the strategy on", () => {
    const { s, heard } = live(loaded(['a', 'b'], 'agent_port = 9999'));
    const first = s.snapshot;
    first.backends[0]!.load.applyAgent(false, 50);
    s.republish();
    assert.equal(heard.length, 1);
    assert.notEqual(s.snapshot, first);
    assert.equal(s.snapshot.generation, 1);
    assert.equal(s.snapshot.config, first.config);
    assert.equal(s.snapshot.backends[0]!.baseWeight, 0.5);
    assert.equal(first.backends[0]!.baseWeight, 1, 'the old snapshot is not edited');
  });
});

describe("a backend's health has one owner", () => {
  test('readers cannot write the health figures', () => {
    const l = new BackendLoad('default/0@10.0.0.1:80', () => 0);
    for (const k of ['healthy', 'healthySince', 'ejectedUntil', 'consecutiveFailures', 'lastCheck', 'agentDown', 'agentWeightPercent', 'agentAdmin', 'agentLast']) {
      assert.equal(Reflect.set(l, k, 1), false, k);
    }
    assert.equal(l.healthy, true);
    assert.equal(l.isUsable(), true);
  });

  test('passive failures eject after the threshold; a passing check ends the ejection; an up transition stamps healthySince', () => {
    const clock = { now: 1000 };
    const l = new BackendLoad('default/0@10.0.0.1:80', () => clock.now);
    l.recordFailure(2, 6000);
    assert.equal(l.isUsable(), true, 'one failure of two');
    l.recordFailure(2, 6000);
    assert.equal(l.ejectedUntil, 6000);
    assert.equal(l.state(), 'unhealthy');
    l.applyCheck(true, 0, true, { at: clock.now, ok: true, error: null });
    assert.equal(l.ejectedUntil, 0);
    assert.equal(l.consecutiveFailures, 0);
    assert.deepEqual(l.lastCheck, { at: 1000, ok: true, error: null });
    l.applyCheck(false, 0, false);
    assert.equal(l.state(), 'unhealthy');
    l.applyCheck(true, 2000, true);
    assert.equal(l.healthySince, 2000);
    assert.deepEqual(l.health(), { healthy: true, healthySince: 2000, agentDown: false, agentWeightPercent: null });
  });
});
