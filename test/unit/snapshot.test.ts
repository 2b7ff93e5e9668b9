// Snapshot (src/core/snapshot.ts) and the load figures beside it (src/core/stats.ts): which
// backends pick() may return, backups, the client ACL, slow start, and leases.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Snapshot, type ServiceSnapshot, type SnapshotBackend } from '../../src/core/snapshot';
import { LoadTable, BackendLoad } from '../../src/core/stats';
import { backendKey } from '../../src/core/backend';
import { STRATEGIES } from '../../src/strategy/index';
import { ALGORITHMS, type Config } from '../../src/config/schema';
import { parseAndValidate } from '../../src/config/load';
import type { Candidate, StrategyFactory } from '../../src/core/strategy';

interface B {
  name: string;
  weight?: number;
  backup?: boolean;
  max_connections?: number;
}

function config(backends: B[], extra: { algorithm?: string; proxy?: string; health?: string } = {}): Config {
  const text = [
    '[proxy]',
    'listen_address = "127.0.0.1:8080"',
    extra.proxy ?? '',
    '[strategy]',
    `algorithm = "${extra.algorithm ?? 'round_robin'}"`,
    '[health]',
    extra.health ?? '',
    ...backends.flatMap((b, i) => [
      '[[backends]]',
      `id = ${i}`,
      `name = "${b.name}"`,
      `address = "10.0.0.${i + 1}:80"`,
      ...(b.weight !== undefined ? [`weight = ${b.weight}`] : []),
      ...(b.backup ? ['backup = true'] : []),
      ...(b.max_connections !== undefined ? [`max_connections = ${b.max_connections}`] : []),
    ]),
    '',
  ].join('\n');
  const r = parseAndValidate(text, {});
  if (!r.ok) assert.fail(JSON.stringify(r.issues));
  return r.config;
}

interface World {
  snap: ServiceSnapshot;
  clock: { now: number };
  loads: LoadTable;
  /** the backend of that name */
  b(name: string): SnapshotBackend;
  /** `n` picks, as names ("-" for none) */
  picks(n: number, avoid?: readonly BackendLoad[]): string[];
}

function world(cfg: Config, strategies: Readonly<Record<string, StrategyFactory>> = STRATEGIES, loads?: LoadTable, clock = { now: 1_000_000 }): World {
  const table = loads ?? new LoadTable(() => clock.now);
  const snap = new Snapshot(cfg, 1, table, { now: () => clock.now, random: () => 0.5, strategies }).service('default')!;
  return {
    snap,
    clock,
    loads: table,
    b: (name) => {
      const hit = snap.backends.find((x) => x.name === name);
      assert.ok(hit, `no backend ${name}`);
      return hit;
    },
    picks: (n, avoid = []) => Array.from({ length: n }, () => snap.pick(avoid)?.name ?? '-'),
  };
}

const count = (names: string[]): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
};

/** A strategy that records the candidates (name and effective weight) it is offered. */
function recorder(): { strategies: Record<string, StrategyFactory>; seen: [string, number][][] } {
  const seen: [string, number][][] = [];
  const f: StrategyFactory = () => ({
    pick(c: readonly Candidate[]) {
      seen.push(c.map((x) => [x.name, x.weight]));
      return c[0];
    },
  });
  return { strategies: Object.fromEntries(ALGORITHMS.map((a) => [a, f])), seen };
}

describe('pick() skips backends that cannot take a connection', () => {
  const three = [{ name: 'a' }, { name: 'b' }, { name: 'c' }];

  test('all usable: round robin cycles through them in order', () => {
    assert.deepEqual(world(config(three)).picks(6), ['a', 'b', 'c', 'a', 'b', 'c']);
  });

  const skips: { name: string; make: (w: World) => void }[] = [
    { name: 'unhealthy', make: (w) => w.b('b').load.applyCheck(false, 0, false) },
    { name: 'draining (operator)', make: (w) => (w.b('b').load.admin = 'draining') },
    { name: 'disabled (operator)', make: (w) => (w.b('b').load.admin = 'disabled') },
    { name: 'removed by a reload (draining)', make: (w) => (w.b('b').load.removed = true) },
    { name: 'passively ejected', make: (w) => w.b('b').load.recordFailure(1, w.clock.now + 1) },
  ];
  for (const s of skips) {
    test(`${s.name}: never picked`, () => {
      const w = world(config(three));
      s.make(w);
      const got = w.picks(30);
      assert.equal(got.includes('b'), false, got.join(','));
      assert.deepEqual(count(got), { a: 15, c: 15 });
    });
  }

  test('an ejection ends when its time has passed', () => {
    const w = world(config(three));
    w.b('b').load.recordFailure(1, w.clock.now + 100);
    assert.equal(w.picks(6).includes('b'), false);
    w.clock.now += 100;
    assert.equal(w.picks(6).includes('b'), true);
  });

  test('weight 0: no new connections', () => {
    const w = world(config([{ name: 'a' }, { name: 'b', weight: 0 }, { name: 'c', weight: 3 }]));
    assert.deepEqual(count(w.picks(20)), { a: 10, c: 10 });
  });

  test('a full backend (per-backend max_connections) is skipped until a lease is released', () => {
    const w = world(config([{ name: 'a', max_connections: 2 }, { name: 'b' }]));
    const l1 = w.b('a').load.acquire();
    assert.equal(w.picks(4).includes('a'), true, 'one of two used: still usable');
    const l2 = w.b('a').load.acquire();
    assert.deepEqual(w.picks(4), ['b', 'b', 'b', 'b']);
    l1.release();
    assert.equal(w.picks(4).includes('a'), true);
    l2.release();
  });

  test('max_connections = 0 is unlimited', () => {
    const w = world(config([{ name: 'a', max_connections: 0 }]));
    for (let i = 0; i < 1000; i++) w.b('a').load.acquire();
    assert.equal(w.snap.pick()?.name, 'a');
  });

  test('backends in `avoid` (already tried) are skipped', () => {
    const w = world(config(three));
    assert.equal(w.picks(10, [w.b('a').load, w.b('c').load]).every((n) => n === 'b'), true);
    assert.deepEqual(w.picks(3, [w.b('a').load, w.b('b').load, w.b('c').load]), ['-', '-', '-']);
  });

  test('no usable backend: undefined', () => {
    const w = world(config(three));
    w.b('a').load.applyCheck(false, 0, false);
    w.b('b').load.admin = 'disabled';
    w.b('c').load.admin = 'draining';
    assert.equal(w.snap.pick(), undefined);
    assert.equal(w.snap.usableCount(), 0);
  });

  test('the strategy is offered exactly the usable backends', () => {
    const rec = recorder();
    const w = world(config([{ name: 'a' }, { name: 'b', weight: 0 }, { name: 'c' }, { name: 'd' }, { name: 'e', max_connections: 1 }, { name: 'f' }]), rec.strategies);
    w.b('c').load.applyCheck(false, 0, false);
    w.b('e').load.acquire();
    w.snap.pick([w.b('f').load]);
    assert.deepEqual(rec.seen, [[['a', 1], ['d', 1]]]);
  });

  for (const algorithm of ALGORITHMS) {
    test(`${algorithm}: never returns an unusable backend`, () => {
      const w = world(config([{ name: 'a' }, { name: 'b', weight: 0 }, { name: 'c' }, { name: 'd', max_connections: 1 }, { name: 'e' }, { name: 'f', backup: true }], { algorithm }));
      w.b('c').load.applyCheck(false, 0, false);
      w.b('d').load.acquire();
      w.b('e').load.admin = 'draining';
      const got = w.picks(50);
      assert.deepEqual(Object.keys(count(got)), ['a']);
    });
  }
});

describe('backups', () => {
  const cfg = (): Config => config([{ name: 'p1' }, { name: 'p2' }, { name: 'k1', backup: true }, { name: 'k2', backup: true }]);

  test('never used while a primary is usable', () => {
    const w = world(cfg());
    assert.deepEqual(count(w.picks(20)), { p1: 10, p2: 10 });
    w.b('p1').load.applyCheck(false, 0, false);
    assert.deepEqual(count(w.picks(20)), { p2: 20 });
  });

  test('used when no primary is usable, and given up as soon as one is back', () => {
    const w = world(cfg());
    w.b('p1').load.applyCheck(false, 0, false);
    w.b('p2').load.admin = 'disabled';
    assert.deepEqual(count(w.picks(20)), { k1: 10, k2: 10 });
    w.b('p2').load.admin = 'enabled';
    assert.deepEqual(count(w.picks(5)), { p2: 5 });
  });

  test('primaries that are full, weight 0 or draining count as unusable too', () => {
    const w = world(config([{ name: 'p1', max_connections: 1 }, { name: 'p2', weight: 0 }, { name: 'p3' }, { name: 'k', backup: true }]));
    w.b('p1').load.acquire();
    w.b('p3').load.admin = 'draining';
    assert.deepEqual(w.picks(3), ['k', 'k', 'k']);
  });

  test('used when every primary was already tried (retry)', () => {
    const w = world(cfg());
    assert.equal(w.snap.pick([w.b('p1').load, w.b('p2').load])?.name.startsWith('k'), true);
  });

  test('unusable backups are skipped like primaries; none left: undefined', () => {
    const w = world(cfg());
    w.b('p1').load.applyCheck(false, 0, false);
    w.b('p2').load.applyCheck(false, 0, false);
    w.b('k1').load.applyCheck(false, 0, false);
    assert.deepEqual(w.picks(3), ['k2', 'k2', 'k2']);
    w.b('k2').load.admin = 'draining';
    assert.equal(w.snap.pick(), undefined);
  });

  test('a config of backups only uses them', () => {
    const w = world(config([{ name: 'k1', backup: true }, { name: 'k2', backup: true }]));
    assert.deepEqual(w.picks(4), ['k1', 'k2', 'k1', 'k2']);
  });

  test('usableCount counts a full backend (full is load, not failure) but not weight 0', () => {
    const w = world(config([{ name: 'a', max_connections: 1 }, { name: 'b', weight: 0 }]));
    w.b('a').load.acquire();
    assert.equal(w.snap.pick(), undefined, 'a is full, b has weight 0');
    assert.equal(w.snap.usableCount(), 1);
  });

  test('usableCount counts primaries and backups', () => {
    const w = world(cfg());
    assert.equal(w.snap.usableCount(), 4);
    w.b('k1').load.applyCheck(false, 0, false);
    w.b('p2').load.admin = 'draining';
    assert.equal(w.snap.usableCount(), 2);
  });
});

describe('allows(): [proxy] allow and deny', () => {
  const cases: { name: string; proxy: string; yes: (string | undefined)[]; no: (string | undefined)[] }[] = [
    { name: 'no lists: everyone, even without an address', proxy: '', yes: ['10.0.0.1', '2001:db8::1', undefined, 'garbage'], no: [] },
    {
      name: 'allow only',
      proxy: 'allow = ["10.0.0.0/8", "2001:db8::/32"]',
      yes: ['10.1.2.3', '::ffff:10.1.2.3', '2001:db8::5'],
      no: ['11.0.0.1', '::ffff:11.0.0.1', '2001:db9::1', '::1', undefined, '', 'not-an-ip'],
    },
    {
      name: 'deny only',
      proxy: 'deny = ["192.168.0.0/16", "::1"]',
      yes: ['10.0.0.1', '2001:db8::1', '::2'],
      no: ['192.168.7.7', '::ffff:192.168.7.7', '::1', undefined, 'not-an-ip'],
    },
    {
      name: 'deny is checked after allow',
      proxy: 'allow = ["10.0.0.0/8"]\ndeny = ["10.1.0.0/16", "10.2.3.4"]',
      yes: ['10.0.0.1', '10.2.3.5', '10.255.0.1'],
      no: ['10.1.0.1', '10.1.255.255', '10.2.3.4', '::ffff:10.2.3.4', '11.0.0.1'],
    },
    {
      name: 'deny wins over an equal allow',
      proxy: 'allow = ["0.0.0.0/0"]\ndeny = ["0.0.0.0/0"]',
      yes: [],
      no: ['1.2.3.4', '10.0.0.1'],
    },
    { name: 'allow 0.0.0.0/0 is every IPv4 client, no IPv6 one', proxy: 'allow = ["0.0.0.0/0"]', yes: ['1.2.3.4', '::ffff:1.2.3.4'], no: ['2001:db8::1', '::1'] },
    { name: 'allow one address', proxy: 'allow = ["127.0.0.1"]', yes: ['127.0.0.1', '::ffff:127.0.0.1'], no: ['127.0.0.2'] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const w = world(config([{ name: 'a' }], { proxy: c.proxy }));
      for (const a of c.yes) assert.equal(w.snap.allows(a), true, `${a} should be allowed`);
      for (const a of c.no) assert.equal(w.snap.allows(a), false, `${a} should be refused`);
    });
  }
});

describe('slow start', () => {
  const slow = (algorithm = 'round_robin'): Config => config([{ name: 'a', weight: 10 }, { name: 'b', weight: 10 }], { algorithm, health: 'slow_start = "10s"' });

  const ramps: { name: string; since: (now: number) => number; weight: number }[] = [
    { name: 'healthy since the start (healthySince 0): full weight', since: () => 0, weight: 10 },
    { name: 'just back: the 5% floor', since: (now) => now, weight: 0.5 },
    { name: 'back 100 ms ago: still the floor', since: (now) => now - 100, weight: 0.5 },
    { name: 'half way', since: (now) => now - 5000, weight: 5 },
    { name: 'three quarters', since: (now) => now - 7500, weight: 7.5 },
    { name: 'done', since: (now) => now - 10_000, weight: 10 },
    { name: 'long done', since: (now) => now - 60_000, weight: 10 },
  ];
  for (const r of ramps) {
    test(`${r.name}: effective weight ${r.weight}`, () => {
      const rec = recorder();
      const w = world(slow(), rec.strategies);
      w.b('a').load.applyCheck(true, r.since(w.clock.now), true);
      w.snap.pick();
      assert.deepEqual(rec.seen[0], [['a', r.weight], ['b', 10]]);
    });
  }

  test('the ramp follows the clock', () => {
    const rec = recorder();
    const w = world(slow(), rec.strategies);
    w.b('a').load.applyCheck(true, w.clock.now, true);
    for (const dt of [0, 2000, 4000, 4000]) {
      w.clock.now += dt;
      w.snap.pick();
    }
    assert.deepEqual(rec.seen.map((c) => c[0]![1]), [0.5, 2, 6, 10]);
  });

  test('without slow_start the configured weight is used even right after coming back', () => {
    const rec = recorder();
    const w = world(config([{ name: 'a', weight: 10 }]), rec.strategies);
    w.b('a').load.applyCheck(true, w.clock.now, true);
    w.snap.pick();
    assert.deepEqual(rec.seen[0], [['a', 10]]);
  });

  test('weighted_round_robin shares traffic by the ramped weight', () => {
    const w = world(slow('weighted_round_robin'));
    w.b('a').load.applyCheck(true, w.clock.now - 5000, true); // weight 5 against 10
    assert.deepEqual(count(w.picks(30)), { a: 10, b: 20 });
  });
});

describe('snapshot and load table', () => {
  test('the snapshot, its services and their backend lists are frozen; generation and config are kept', () => {
    const cfg = config([{ name: 'a' }]);
    const snap = new Snapshot(cfg, 1, new LoadTable(() => 0), { now: () => 0, random: () => 0.5, strategies: STRATEGIES });
    const svc = snap.service('default')!;
    assert.ok(Object.isFrozen(snap) && Object.isFrozen(snap.services) && Object.isFrozen(svc) && Object.isFrozen(svc.backends));
    assert.equal(snap.generation, 1);
    assert.equal(snap.config, cfg);
    assert.equal(svc.svc, cfg.services[0]);
    assert.equal(svc.backends[0]!.spec, cfg.backends[0]);
    assert.equal(snap.backends[0], svc.backends[0]);
  });

  test('the strategy of the config is used, with the injected random source', () => {
    let got: unknown;
    const random = (): number => 0.25;
    const table = new LoadTable(() => 0);
    const f: StrategyFactory = (env) => {
      got = env.random;
      return { pick: (c) => c[c.length - 1] };
    };
    const snap = new Snapshot(config([{ name: 'a' }, { name: 'b' }], { algorithm: 'least_connections' }), 7, table, { now: () => 0, random, strategies: { least_connections: f } });
    assert.equal(got, random);
    assert.equal(snap.services[0]!.pick()?.name, 'b');
  });

  test('load figures are shared by snapshots of the same backend (id and address), so they survive a reload', () => {
    const clock = { now: 0 };
    const table = new LoadTable(() => clock.now);
    const w1 = world(config([{ name: 'a' }, { name: 'b' }]), STRATEGIES, table, clock);
    const lease = w1.b('a').load.acquire();
    w1.b('b').load.applyCheck(false, 0, false);
    // a reload that renames a and changes b's weight: same ids and addresses
    const w2 = world(config([{ name: 'a2' }, { name: 'b', weight: 5 }]), STRATEGIES, table, clock);
    assert.equal(w2.b('a2').load, w1.b('a').load);
    assert.equal(w2.b('a2').load.active, 1);
    assert.equal(w2.b('b').load.healthy, false);
    lease.release();
    assert.equal(w2.b('a2').load.active, 0);
  });

  test('a changed address is a new endpoint with fresh figures', () => {
    const table = new LoadTable(() => 0);
    const old = table.get(backendKey('default', { id: 0, address: '10.0.0.1:80' }));
    old.acquire();
    const fresh = table.get(backendKey('default', { id: 0, address: '10.0.0.9:80' }));
    assert.notEqual(fresh, old);
    assert.equal(fresh.active, 0);
    assert.equal(backendKey('default', { id: 3, address: '[::1]:80' }), 'default/3@[::1]:80');
    assert.notEqual(backendKey('a', { id: 3, address: '[::1]:80' }), backendKey('b', { id: 3, address: '[::1]:80' }), 'the same backend in two services has two sets of figures');
  });

  test('LoadTable.sweep forgets removed backends only once their last connection closed', () => {
    const table = new LoadTable(() => 0);
    const keep = table.get('0@a:1');
    const busy = table.get('1@b:1');
    table.get('2@c:1');
    const lease = busy.acquire();
    table.sweep(new Set(['0@a:1']));
    assert.deepEqual([...table.values()].map((l) => l.key), ['0@a:1', '1@b:1']);
    lease.release();
    table.sweep(new Set(['0@a:1']));
    assert.deepEqual([...table.values()], [keep]);
    assert.equal(table.peek('1@b:1'), undefined);
  });
});

describe('Lease', () => {
  test('acquire counts active, a successful connect counts total; release is effective exactly once', () => {
    const load = new BackendLoad('0@a:1', () => 0);
    const l1 = load.acquire();
    const l2 = load.acquire();
    assert.equal(load.active, 2);
    assert.equal(load.total, 0, 'nothing established yet');
    load.recordSuccess();
    load.recordSuccess();
    assert.equal(load.total, 2);
    assert.equal(l1.load, load);
    assert.equal(l1.release(), true);
    assert.equal(l1.release(), false);
    assert.equal(l1.release(), false);
    assert.equal(load.active, 1);
    assert.equal(l2.release(), true);
    assert.equal(load.active, 0);
    assert.equal(l2.release(), false);
    assert.equal(load.active, 0, 'never below zero through a lease');
    assert.equal(load.total, 2, 'total is never decremented');
  });

  test('a double release does not free a slot of a full backend', () => {
    const w = world(config([{ name: 'a', max_connections: 1 }, { name: 'b' }]));
    const l1 = w.b('a').load.acquire();
    l1.release();
    const l2 = w.b('a').load.acquire();
    l1.release(); // a stray second 'close' of the first connection
    assert.deepEqual(w.picks(3), ['b', 'b', 'b']);
    l2.release();
  });
});

describe('BackendLoad.state()', () => {
  const cases: { name: string; set: (l: BackendLoad) => void; state: string; usable: boolean }[] = [
    { name: 'fresh', set: () => {}, state: 'healthy', usable: true },
    { name: 'unhealthy', set: (l) => l.applyCheck(false, 0, false), state: 'unhealthy', usable: false },
    { name: 'ejected', set: (l) => l.recordFailure(1, 101), state: 'unhealthy', usable: false },
    { name: 'ejection over', set: (l) => l.recordFailure(1, 100), state: 'healthy', usable: true },
    { name: 'disabled', set: (l) => (l.admin = 'disabled'), state: 'disabled', usable: false },
    { name: 'draining', set: (l) => (l.admin = 'draining'), state: 'draining', usable: false },
    { name: 'removed', set: (l) => (l.removed = true), state: 'draining', usable: false },
    { name: 'disabled and unhealthy', set: (l) => ((l.admin = 'disabled'), l.applyCheck(false, 0, false)), state: 'disabled', usable: false },
    { name: 'draining and unhealthy', set: (l) => ((l.admin = 'draining'), l.applyCheck(false, 0, false)), state: 'draining', usable: false },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const l = new BackendLoad('k', () => 100);
      c.set(l);
      assert.equal(l.state(), c.state);
      assert.equal(l.isUsable(), c.usable);
    });
  }
});

describe('a reload keeps the strategy state when the algorithm stays', () => {
  const names = (snap: Snapshot, n: number): string[] => Array.from({ length: n }, () => snap.services[0]!.pick()?.name ?? '-');
  const env = { now: () => 1_000_000, random: () => 0.5, strategies: STRATEGIES };
  const abc = [{ name: 'a', weight: 3 }, { name: 'b', weight: 1 }, { name: 'c', weight: 1 }];

  test('smooth WRR: picks across a reload equal the picks of one snapshot', () => {
    const cfg = config(abc, { algorithm: 'weighted_round_robin' });
    const one = names(new Snapshot(cfg, 1, new LoadTable(env.now), env), 10);
    const loads = new LoadTable(env.now);
    const s1 = new Snapshot(cfg, 1, loads, env);
    const s2 = new Snapshot(config(abc, { algorithm: 'weighted_round_robin', proxy: 'max_connections = 7' }), 2, loads, env, s1);
    const s3 = new Snapshot(cfg, 3, loads, env, s2);
    assert.deepEqual([...names(s1, 3), ...names(s2, 4), ...names(s3, 3)], one);
  });

  test('round robin: the position carries on', () => {
    const loads = new LoadTable(env.now);
    const s1 = new Snapshot(config(abc), 1, loads, env);
    assert.deepEqual(names(s1, 2), ['a', 'b']);
    const s2 = new Snapshot(config(abc), 2, loads, env, s1);
    assert.deepEqual(names(s2, 2), ['c', 'a']);
  });

  test('a changed algorithm starts afresh', () => {
    const loads = new LoadTable(env.now);
    const s1 = new Snapshot(config(abc), 1, loads, env);
    names(s1, 1);
    const s2 = new Snapshot(config(abc, { algorithm: 'weighted_round_robin' }), 2, loads, env, s1);
    assert.deepEqual(names(s2, 5), names(new Snapshot(config(abc, { algorithm: 'weighted_round_robin' }), 1, new LoadTable(env.now), env), 5));
  });
});
