// consistent_hash on the pure strategy: the documented figures with 5 equal backends and
// 1,000 client addresses drawn from an injected (seeded) random source, weights 3:1, the
// determinism across independently built tables and another process, the preference-order
// fallback, hash_balance_factor, and the config keys.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BackendLoad } from '../../src/core/stats';
import type { Candidate, PoolMember, Strategy } from '../../src/core/strategy';
import { consistentHash, maglevOf, normaliseKey } from '../../src/strategy/consistent-hash';
import { buildMaglev, murmur3, TABLE_SIZE } from '../../src/strategy/maglev';
import { parseAndValidate } from '../../src/config/load';
import { Snapshot } from '../../src/core/snapshot';
import { LoadTable } from '../../src/core/stats';
import { STRATEGIES } from '../../src/strategy/index';

/** A seeded linear congruential generator in [0, 1): the injected random source. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** `n` distinct IPv4 client addresses from the random source. */
function clients(n: number, seed = 42): string[] {
  const r = seeded(seed);
  const out = new Set<string>();
  while (out.size < n) out.add(`${10 + Math.floor(r() * 200)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}.${1 + Math.floor(r() * 254)}`);
  return [...out];
}

const pool = (weights: readonly number[]): PoolMember[] => weights.map((weight, i) => ({ id: i, address: `10.0.0.${i + 1}:5432`, weight }));

function cands(members: readonly PoolMember[], active: readonly number[] = []): Candidate[] {
  return members.map((m, i) => {
    const load = new BackendLoad(`k${m.id}`, () => 0);
    load.active = active[i] ?? 0;
    return { id: m.id, name: `b${m.id}`, weight: m.weight, load };
  });
}

const strat = (members: readonly PoolMember[], hashBalanceFactor = 0): Strategy => consistentHash({ random: seeded(1), pool: members, hashBalanceFactor });

/** key → backend id */
function mapping(s: Strategy, c: readonly Candidate[], keys: readonly string[]): Map<string, number> {
  return new Map(keys.map((k) => [k, s.pick(c, k)!.id]));
}

function shares(m: Map<string, number>, n: number): number[] {
  const counts = new Array<number>(n).fill(0);
  for (const id of m.values()) counts[id]!++;
  return counts.map((x) => x / m.size);
}

const KEYS = clients(1000);
const FIVE = pool([1, 1, 1, 1, 1]);

describe('Maglev table', () => {
  test('murmur3 matches the reference vectors', () => {
    for (const [s, seed, want] of [
      ['', 0, 0],
      ['', 1, 0x514e28b7],
      ['hello', 0, 0x248bfa47],
      ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
    ] as const) {
      assert.equal(murmur3(s, seed), want, `${JSON.stringify(s)} seed ${seed}`);
    }
  });

  for (const [weights, want] of [
    [[1, 1, 1, 1, 1], [0.2, 0.2, 0.2, 0.2, 0.2]],
    [[3, 1], [0.75, 0.25]],
    [[2, 1, 1], [0.5, 0.25, 0.25]],
    [[1, 0, 1], [0.5, 0, 0.5]],
  ] as const) {
    test(`weights ${weights.join(':')} fill the table in proportion (±0.001)`, () => {
      const s = strat(pool(weights));
      weights.forEach((_, i) => assert.ok(Math.abs(s.share!(i) - want[i]!) <= 0.001, `backend ${i}: ${s.share!(i)} vs ${want[i]}`));
      const t = buildMaglev(pool(weights));
      assert.equal(t.slots.length, TABLE_SIZE);
      assert.equal(t.counts.reduce((a, b) => a + b, 0), TABLE_SIZE);
      assert.ok(t.slots.every((x) => x >= 0));
    });
  }

  test("the table does not depend on the pool's order", () => {
    const a = buildMaglev(FIVE);
    const b = buildMaglev([...FIVE].reverse());
    assert.deepEqual(Buffer.from(a.slots.buffer), Buffer.from(b.slots.buffer));
  });
});

describe('the documented figures: 5 equal backends, 1,000 client addresses', () => {
  const first = mapping(strat(FIVE), cands(FIVE), KEYS);

  test('every share within 20 % ± 4 points', () => {
    for (const [i, share] of shares(first, 5).entries()) assert.ok(Math.abs(share - 0.2) <= 0.04, `backend ${i}: ${share}`);
  });

  for (const removed of [0, 2, 4]) {
    test(`removing backend ${removed} (the table rebuilt) moves at most 3 % of the others' keys; adding it back restores at least 97 %`, () => {
      const four = FIVE.filter((m) => m.id !== removed);
      const after = mapping(strat(four), cands(four), KEYS);
      let others = 0;
      let moved = 0;
      for (const [k, id] of first) {
        if (id === removed) continue;
        others++;
        if (after.get(k) !== id) moved++;
      }
      assert.ok(moved / others <= 0.03, `moved ${moved} of ${others}`);
      const back = mapping(strat(FIVE), cands(FIVE), KEYS);
      let same = 0;
      for (const [k, id] of first) if (back.get(k) === id) same++;
      assert.ok(same / KEYS.length >= 0.97, `restored ${same}`);
    });
  }

  test('an unusable backend (not among the candidates) moves only its own keys, spread over the others, and they come back', () => {
    const s = strat(FIVE);
    for (const excluded of [0, 1, 2, 3, 4]) {
      const c = cands(FIVE).filter((x) => x.id !== excluded);
      const after = mapping(s, c, KEYS);
      const got = new Set<number>();
      for (const [k, id] of first) {
        if (id === excluded) got.add(after.get(k)!);
        else assert.equal(after.get(k), id, `key ${k} moved though its backend ${id} is usable`);
      }
      assert.ok(!got.has(excluded));
      assert.equal(got.size, 4, `backend ${excluded}'s keys spread over the 4 others: ${[...got]}`);
      assert.deepEqual(mapping(s, cands(FIVE), KEYS), first);
    }
  });

  test('the fallback is the key\'s own preference order: with two backends out, keys whose second choice is usable keep it', () => {
    const s = strat(FIVE);
    const without1 = mapping(s, cands(FIVE).filter((x) => x.id !== 1), KEYS);
    const without12 = mapping(s, cands(FIVE).filter((x) => x.id !== 1 && x.id !== 2), KEYS);
    for (const [k, id] of without1) if (id !== 2) assert.equal(without12.get(k), id, k);
  });
});

test('weights 3:1 give shares of 75/25 within ±5 points over 1,000 addresses', () => {
  const two = pool([3, 1]);
  const sh = shares(mapping(strat(two), cands(two), KEYS), 2);
  assert.ok(Math.abs(sh[0]! - 0.75) <= 0.05 && Math.abs(sh[1]! - 0.25) <= 0.05, `${sh}`);
});

describe('determinism', () => {
  test('two tables built independently map 1,000 keys identically', () => {
    assert.deepEqual(mapping(strat(FIVE), cands(FIVE), KEYS), mapping(strat([...FIVE].reverse()), cands(FIVE).reverse(), KEYS));
  });

  test('the candidates\' order does not matter (the fast path checks it is the pool\'s order)', () => {
    const s = strat(FIVE);
    const rotated = [...cands(FIVE).slice(2), ...cands(FIVE).slice(0, 2)];
    assert.deepEqual(mapping(s, rotated, KEYS), mapping(s, cands(FIVE), KEYS));
    assert.deepEqual(mapping(strat(FIVE, 150), rotated, KEYS), mapping(s, cands(FIVE), KEYS), 'a factor with no load changes nothing');
  });

  test('a child process maps the same 1,000 keys identically', () => {
    const script = `
      const { consistentHash } = require(${JSON.stringify(require.resolve('../../src/strategy/consistent-hash'))});
      const { BackendLoad } = require(${JSON.stringify(require.resolve('../../src/core/stats'))});
      const pool = ${JSON.stringify(FIVE)};
      const s = consistentHash({ random: Math.random, pool, hashBalanceFactor: 0 });
      const c = pool.map((m) => ({ id: m.id, name: 'b' + m.id, weight: m.weight, load: new BackendLoad('k' + m.id, Date.now) }));
      const keys = ${JSON.stringify(KEYS)};
      process.stdout.write(JSON.stringify(keys.map((k) => s.pick(c, k).id)));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8' });
    const theirs = JSON.parse(out) as number[];
    const ours = mapping(strat(FIVE), cands(FIVE), KEYS);
    assert.deepEqual(theirs, KEYS.map((k) => ours.get(k)));
  });

  test('an IPv4 client on a dual-stack listener hashes as its IPv4 address', () => {
    assert.equal(normaliseKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(normaliseKey('::1'), '::1');
    const s = strat(FIVE);
    const c = cands(FIVE);
    for (const k of KEYS.slice(0, 50)) assert.equal(s.pick(c, `::ffff:${k}`)!.id, s.pick(c, k)!.id);
  });
});

describe('hash_balance_factor', () => {
  // active connections per backend; bound_b = ceil(factor × Σactive × w_b / (100 × Σw))
  for (const [factor, active] of [
    [150, [10, 1, 1, 1, 1]], // Σ 14, bound 5: backend 0 is over
    [150, [6, 6, 0, 0, 0]], // Σ 12, bound 4: 0 and 1 over
    [100, [3, 2, 2, 2, 1]], // Σ 10, bound 2: 0 over
    [200, [9, 0, 0, 0, 1]], // Σ 10, bound 4: 0 over
    [150, [2, 2, 2, 2, 2]], // Σ 10, bound 3: nobody over
    [0, [50, 0, 0, 0, 0]], // off: loads ignored
  ] as const) {
    test(`factor ${factor}, active ${active.join(',')}: no key goes above the bound; keys whose backend is under it stay`, () => {
      const s = strat(FIVE, factor);
      const c = cands(FIVE, active);
      const total = (active as readonly number[]).reduce((a, b) => a + b, 0);
      const bound = Math.ceil((factor * total) / (100 * 5));
      const over = new Set(active.flatMap((a, i) => (factor > 0 && a > bound ? [i] : [])));
      const got = mapping(s, c, KEYS);
      for (const [k, id] of first5()) {
        const now = got.get(k)!;
        assert.ok(!over.has(now), `key ${k} went to ${now}, above the bound ${bound}`);
        if (!over.has(id)) assert.equal(now, id, `key ${k} moved from ${id}, which is under the bound`);
      }
      if (over.size > 0) assert.ok([...got.values()].every((id) => !over.has(id)));
    });
  }
});

function first5(): Map<string, number> {
  return mapping(strat(FIVE), cands(FIVE), KEYS);
}

describe('config keys', () => {
  const base = (strategy: string, service = ''): string => `
[proxy]
listen_address = "127.0.0.1:1"
[strategy]
algorithm = "consistent_hash"
${strategy}
[[backends]]
address = "127.0.0.1:2"
[[services]]
name = "pg"
listen_address = "127.0.0.1:3"
${service}
[[services.backends]]
address = "127.0.0.1:4"
`;
  for (const [what, strategy, service, want] of [
    ['defaults', '', '', { ok: true, def: ['source_ip', 0], pg: ['source_ip', 0] }],
    ['inherited by a service', 'hash_balance_factor = 150', '', { ok: true, def: ['source_ip', 150], pg: ['source_ip', 150] }],
    ['a service sets its own', '', 'hash_balance_factor = 125\nhash_key = "source_ip"', { ok: true, def: ['source_ip', 0], pg: ['source_ip', 125] }],
    ['a factor under 100', 'hash_balance_factor = 50', '', { ok: false, path: 'strategy.hash_balance_factor', message: /at least 100/ }],
    ['a service factor under 100', '', 'hash_balance_factor = 99', { ok: false, path: 'services[0].hash_balance_factor', message: /at least 100/ }],
    ['sni at the top, inherited', 'hash_key = "sni"', '', { ok: true, def: ['sni', 0], pg: ['sni', 0] }],
    ['sni in a service', '', 'hash_key = "sni"', { ok: true, def: ['source_ip', 0], pg: ['sni', 0] }],
    ['an unknown key', 'hash_key = "dest_ip"', '', { ok: false, path: 'strategy.hash_key', message: /expected one of "source_ip", "sni"/ }],
  ] as const) {
    test(what, () => {
      const r = parseAndValidate(base(strategy, service), {});
      assert.equal(r.ok, want.ok, JSON.stringify(!r.ok && r.issues));
      if (r.ok && want.ok) {
        const [d, pg] = r.config.services;
        assert.deepEqual([d!.hashKey, d!.hashBalanceFactor], want.def);
        assert.deepEqual([pg!.hashKey, pg!.hashBalanceFactor], want.pg);
        assert.equal(pg!.algorithm, 'consistent_hash');
        assert.equal(r.config.strategy, 'consistent_hash');
      } else if (!r.ok && !want.ok) {
        assert.equal(r.issues.length, 1, JSON.stringify(r.issues));
        assert.equal(r.issues[0]!.path, want.path);
        assert.match(r.issues[0]!.message, want.message);
      }
    });
  }
});

describe('ServiceSnapshot with consistent_hash', () => {
  const cfg = (algorithm: string): ReturnType<typeof parseAndValidate> =>
    parseAndValidate(
      `[proxy]\nlisten_address = "127.0.0.1:1"\n[strategy]\nalgorithm = "${algorithm}"\n` +
        [1, 2, 3, 4].map((i) => `[[backends]]\naddress = "10.0.0.${i}:80"\n${i === 4 ? 'backup = true\n' : ''}`).join(''),
      {},
    );
  const snap = (algorithm: string) => {
    const r = cfg(algorithm);
    assert.ok(r.ok);
    return new Snapshot(r.config, 1, new LoadTable(() => 0), { now: () => 0, random: seeded(3), strategies: STRATEGIES }).service('default')!;
  };

  test('keyed: the pick follows the key, skips the tried backends along the preference order, and backups have their own table', () => {
    const s = snap('consistent_hash');
    assert.equal(s.keyed, true);
    for (const k of KEYS.slice(0, 100)) {
      const b = s.pick([], k)!;
      assert.equal(s.pick([], k), b);
      assert.ok(!b.spec.backup);
      const next = s.pick([b.load], k)!;
      assert.notEqual(next, b);
      const others = s.backends.filter((x) => !x.spec.backup);
      assert.equal(s.pick(others.map((x) => x.load), k)!.spec.backup, true, 'no primary left: the backup');
    }
    const shares = s.backends.map((b) => s.hashShare(b.id)!);
    for (const x of shares.slice(0, 3)) assert.ok(Math.abs(x - 1 / 3) < 0.001, `${shares}`);
    assert.equal(shares[3], 1, 'the only backup holds all of the backups\' table');
  });

  test('other algorithms are not keyed and have no hash share', () => {
    const s = snap('round_robin');
    assert.equal(s.keyed, false);
    assert.equal(s.hashShare(0), undefined);
  });
});

test('a pool whose members, addresses and weights are unchanged reuses its table, whatever their order; any change builds a new one', () => {
  const pool = Array.from({ length: 50 }, (_, i) => ({ id: i, address: `10.0.0.${i + 1}:80`, weight: 1 + (i % 3) }));
  const table = maglevOf(pool);
  assert.equal(maglevOf([...pool].reverse()), table, 'the same set in another order');
  assert.equal(maglevOf([...pool, { id: 99, address: '10.0.1.1:80', weight: 0 }]), table, 'a member of weight 0 takes no slot');
  assert.deepEqual(table.slots, buildMaglev(pool).slots, 'the table reused is the one buildMaglev fills');
  const moved = pool.map((m, i) => (i === 7 ? { ...m, address: '10.0.0.200:80' } : m));
  const heavier = pool.map((m, i) => (i === 7 ? { ...m, weight: m.weight + 1 } : m));
  for (const changed of [moved, heavier, pool.slice(1)]) {
    const other = maglevOf(changed);
    assert.notEqual(other, table);
    assert.deepEqual(other.slots, buildMaglev(changed).slots);
  }
});
