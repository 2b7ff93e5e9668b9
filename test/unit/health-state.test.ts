// The rise/fall threshold machine of active health checks (src/health/state.ts).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { observe, isHealthy, INITIAL_HEALTH, type HealthState, type Thresholds } from '../../src/health/state';

/** Feed a sequence of results ("+" ok, "-" failure) and return the status after each. */
function run(seq: string, t: Thresholds, from: HealthState = INITIAL_HEALTH): string[] {
  let s = from;
  const out: string[] = [];
  for (const ch of seq) {
    s = observe(s, ch === '+', t);
    out.push(s.status);
  }
  return out;
}

const H = 'healthy';
const U = 'unhealthy';

describe('the first result decides at once', () => {
  test('initial state is unknown, counts as healthy, and is frozen', () => {
    assert.deepEqual(INITIAL_HEALTH, { status: 'unknown', streak: 0 });
    assert.equal(isHealthy(INITIAL_HEALTH), true);
    assert.ok(Object.isFrozen(INITIAL_HEALTH));
  });

  for (const t of [{ healthyThreshold: 2, unhealthyThreshold: 3 }, { healthyThreshold: 5, unhealthyThreshold: 5 }]) {
    test(`unknown → healthy on a success (thresholds ${t.healthyThreshold}/${t.unhealthyThreshold})`, () => {
      assert.deepEqual(observe(INITIAL_HEALTH, true, t), { status: 'healthy', streak: 0 });
    });
    test(`unknown → unhealthy on a failure (thresholds ${t.healthyThreshold}/${t.unhealthyThreshold})`, () => {
      assert.deepEqual(observe(INITIAL_HEALTH, false, t), { status: 'unhealthy', streak: 0 });
    });
  }

  test('observe does not modify the state it is given', () => {
    const s: HealthState = Object.freeze({ status: 'healthy', streak: 1 });
    observe(s, false, { healthyThreshold: 2, unhealthyThreshold: 3 });
    observe(s, true, { healthyThreshold: 2, unhealthyThreshold: 3 });
    assert.deepEqual(s, { status: 'healthy', streak: 1 });
  });
});

describe('sequences (table)', () => {
  const cases: { name: string; t: Thresholds; seq: string; want: string[] }[] = [
    { name: 'fall after unhealthy_threshold (3) failures', t: { healthyThreshold: 2, unhealthyThreshold: 3 }, seq: '+---', want: [H, H, H, U] },
    { name: 'rise after healthy_threshold (2) successes', t: { healthyThreshold: 2, unhealthyThreshold: 3 }, seq: '-++', want: [U, U, H] },
    { name: 'a success resets the failure streak', t: { healthyThreshold: 2, unhealthyThreshold: 3 }, seq: '+--+--+---', want: [H, H, H, H, H, H, H, H, H, U] },
    { name: 'a failure resets the success streak', t: { healthyThreshold: 2, unhealthyThreshold: 3 }, seq: '-+-+-++', want: [U, U, U, U, U, U, H] },
    { name: 'thresholds of 1 flip on every change', t: { healthyThreshold: 1, unhealthyThreshold: 1 }, seq: '+-+--++', want: [H, U, H, U, U, H, H] },
    { name: 'a long way down and back', t: { healthyThreshold: 3, unhealthyThreshold: 4 }, seq: '+----+++', want: [H, H, H, H, U, U, U, H] },
    { name: 'steady results keep the status', t: { healthyThreshold: 2, unhealthyThreshold: 2 }, seq: '++++----', want: [H, H, H, H, H, U, U, U] },
    { name: 'flapping never reaches a threshold of 2', t: { healthyThreshold: 2, unhealthyThreshold: 2 }, seq: '+-+-+-+-', want: [H, H, H, H, H, H, H, H] },
    { name: 'a dead backend at start goes down after one check', t: { healthyThreshold: 2, unhealthyThreshold: 3 }, seq: '-', want: [U] },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.seq}`, () => {
      assert.deepEqual(run(c.seq, c.t), c.want);
    });
  }
});

describe('streaks', () => {
  const t: Thresholds = { healthyThreshold: 3, unhealthyThreshold: 3 };

  test('healthy: failures count up, a success resets to 0, the threshold resets to 0 and flips', () => {
    let s: HealthState = { status: 'healthy', streak: 0 };
    s = observe(s, false, t);
    assert.deepEqual(s, { status: 'healthy', streak: 1 });
    s = observe(s, false, t);
    assert.deepEqual(s, { status: 'healthy', streak: 2 });
    assert.deepEqual(observe(s, true, t), { status: 'healthy', streak: 0 });
    s = observe(s, false, t);
    assert.deepEqual(s, { status: 'unhealthy', streak: 0 });
  });

  test('unhealthy: successes count up, a failure resets to 0, the threshold resets to 0 and flips', () => {
    let s: HealthState = { status: 'unhealthy', streak: 0 };
    s = observe(s, true, t);
    assert.deepEqual(s, { status: 'unhealthy', streak: 1 });
    s = observe(s, true, t);
    assert.deepEqual(s, { status: 'unhealthy', streak: 2 });
    assert.deepEqual(observe(s, false, t), { status: 'unhealthy', streak: 0 });
    s = observe(s, true, t);
    assert.deepEqual(s, { status: 'healthy', streak: 0 });
  });

  test('isHealthy: healthy and unknown are, unhealthy is not, whatever the streak', () => {
    assert.equal(isHealthy({ status: 'healthy', streak: 2 }), true);
    assert.equal(isHealthy({ status: 'unknown', streak: 0 }), true);
    assert.equal(isHealthy({ status: 'unhealthy', streak: 0 }), false);
    assert.equal(isHealthy({ status: 'unhealthy', streak: 5 }), false);
  });

  test('a status kept after a reload continues with the new thresholds', () => {
    // one failure under a threshold of 3, then the threshold is lowered to 2: the next failure takes it down
    const s = observe({ status: 'healthy', streak: 0 }, false, t);
    assert.equal(observe(s, false, t).status, 'healthy');
    assert.equal(observe(s, false, { healthyThreshold: 3, unhealthyThreshold: 2 }).status, 'unhealthy');
  });
});
