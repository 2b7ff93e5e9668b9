// SNI routing's pure parts: the route table of one address (exact names, wildcards by longest
// suffix, the default route, when an address inspects at all), the table built into the snapshot,
// and the validation of services sharing an address (told apart by sni), with the paths and messages a user
// reads.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { AddressRoutes, routesByAddress, type Routable } from '../../src/core/sni-routes';
import { parseAndValidate } from '../../src/config/load';
import { Snapshot } from '../../src/core/snapshot';
import { LoadTable } from '../../src/core/stats';
import { STRATEGIES } from '../../src/strategy/index';

type Svc = Routable & { listenAddress: string };
const svc = (
  name: string,
  sni: string[],
  o: { wantsServerName?: boolean; inspectTimeoutMs?: number; listenAddress?: string; allow?: string[]; clientMaxConnections?: number } = {},
): Svc => ({
  name,
  sni,
  wantsServerName: o.wantsServerName ?? false,
  inspectTimeoutMs: o.inspectTimeoutMs ?? 5000,
  listenAddress: o.listenAddress ?? '0.0.0.0:443',
  proxy: { allow: o.allow ?? [], deny: [], clientMaxConnections: o.clientMaxConnections ?? 0 },
  // the allow list here holds whole addresses (the snapshot's holds CIDR blocks)
  allows: (remote: string) => (o.allow ?? [remote]).includes(remote),
});

describe('AddressRoutes: the most specific name wins', () => {
  const table = new AddressRoutes('0.0.0.0:443', [
    svc('api', ['api.example.com']),
    svc('org', ['*.example.org']),
    svc('shop', ['*.shop.example.org', 'example.org']),
    svc('web', []),
  ]);
  const cases: [string, string | null, string | null][] = [
    ['an exact name', 'api.example.com', 'api'],
    ['a name under a wildcard', 'www.example.org', 'org'],
    ['several labels under a wildcard', 'a.b.c.example.org', 'org'],
    ['the longest wildcard over a shorter one', 'eu.shop.example.org', 'shop'],
    ['the wildcard needs a label before it', 'shop.example.org', 'org'],
    ['the bare domain is not under its wildcard (an exact name here)', 'example.org', 'shop'],
    ['a name matching nothing: the default route', 'other.example.net', 'web'],
    ['no name: the default route', null, 'web'],
    ['an empty name: the default route', '', 'web'],
    ['a suffix that is not at a label boundary', 'notexample.org', 'web'],
    ['an exact name does not match a longer one', 'x.api.example.com', 'web'],
  ];
  for (const [what, name, want] of cases) {
    test(what, () => assert.equal(table.route(name)?.name ?? null, want));
  }

  test('an exact name beats a wildcard covering it', () => {
    const t = new AddressRoutes('a', [svc('wild', ['*.example.com']), svc('exact', ['www.example.com'])]);
    assert.equal(t.route('www.example.com')?.name, 'exact');
    assert.equal(t.route('api.example.com')?.name, 'wild');
  });

  test('without a default route, a name matching nothing has no route', () => {
    const t = new AddressRoutes('a', [svc('api', ['api.example.com']), svc('org', ['*.example.org'])]);
    assert.equal(t.fallback, null);
    assert.equal(t.route('nothing.example.net'), null);
    assert.equal(t.route(null), null);
  });
});

describe('AddressRoutes: long names cost time in proportion to their length', () => {
  const table = new AddressRoutes('a', [svc('org', ['*.example.org']), svc('deep', ['*.a.a.a.example.org']), svc('web', [])]);
  /** the best of a few runs of f, ms (a GC pause is not the lookup's cost) */
  const best = (f: () => unknown, runs = 5): number => {
    let min = Infinity;
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      f();
      min = Math.min(min, performance.now() - t0);
    }
    return min;
  };

  test('a server name over 255 bytes is no name: the default route, whatever it ends with', () => {
    const long = `${'x'.repeat(244)}.example.org`; // 256 bytes
    assert.equal(table.route(long)?.name, 'web');
    assert.equal(table.route(long.slice(1))?.name, 'org'); // 255 bytes: a name
    assert.equal(table.route(`${'a.'.repeat(8120)}a`)?.name, 'web');
  });

  test('the 16 KiB name of many labels is routed in well under a millisecond, not a third of a second', () => {
    const name = `${'a.'.repeat(8120)}a.example.org`;
    const ms = best(() => table.route(name));
    assert.ok(ms < 20, `route() took ${ms.toFixed(2)} ms`);
  });

  test('the wildcard walk is linear: a name 32 times longer costs far less than 32 times 32 as much', () => {
    const short = `${'a.'.repeat(1000)}a.example.org`;
    const long = `${'a.'.repeat(32_000)}a.example.org`;
    assert.equal(table.wildcard(short)?.name, 'deep');
    assert.equal(table.wildcard(long)?.name, 'deep');
    const rep = (name: string) => () => {
      for (let i = 0; i < 10; i++) table.wildcard(name);
    };
    rep(long)(); // warm up
    const ts = best(rep(short), 9);
    const tl = best(rep(long), 5);
    // linear: about 32 times; quadratic would be about a thousand times
    assert.ok(tl / Math.max(ts, 0.001) < 200, `short ${ts.toFixed(3)} ms, long ${tl.toFixed(3)} ms: ratio ${(tl / ts).toFixed(1)}`);
    assert.ok(tl < 200, `ten walks of a 64 KiB name took ${tl.toFixed(1)} ms`);
  });

  test('the longest suffix wins over shorter ones found first from the right; a suffix needs a label before it', () => {
    assert.equal(table.route('x.a.a.a.example.org')?.name, 'deep');
    assert.equal(table.route('a.a.a.example.org')?.name, 'org');
    assert.equal(table.route('.example.org')?.name, 'web');
    assert.equal(table.route('.x.example.org')?.name, 'web'); // as before: a name starting with a dot takes no wildcard
    assert.equal(table.route('x.example.orgx')?.name, 'web');
    assert.equal(table.route('xexample.org')?.name, 'web');
  });

  test('many wildcards: each name finds its own (hash chains checked against the suffix itself)', () => {
    const many = Array.from({ length: 2000 }, (_, i) => svc(`s${i}`, [`*.n${i}.example`]));
    const t = new AddressRoutes('a', [...many, svc('web', [])]);
    for (let i = 0; i < 2000; i += 37) {
      assert.equal(t.route(`host.n${i}.example`)?.name, `s${i}`);
      assert.equal(t.route(`n${i}.example`)?.name, 'web');
    }
  });
});

describe('AddressRoutes: what can be decided at accept, before the ClientHello', () => {
  test('screened only when every service has an ACL; denied by all only when none allows', () => {
    const both = new AddressRoutes('a', [svc('api', ['api.example'], { allow: ['10.0.0.1'] }), svc('web', [], { allow: ['10.0.0.2'] })]);
    assert.equal(both.screened, true);
    assert.equal(both.deniedByAll('10.0.0.3'), true);
    assert.equal(both.deniedByAll('10.0.0.1'), false);
    assert.equal(both.deniedByAll('10.0.0.2'), false);
    const one = new AddressRoutes('a', [svc('api', ['api.example'], { allow: ['10.0.0.1'] }), svc('web', [])]);
    assert.equal(one.screened, false);
  });
  test('a client cap before routing: the largest of the services\' caps, when each has one', () => {
    assert.equal(new AddressRoutes('a', [svc('a', ['x'], { clientMaxConnections: 3 }), svc('b', [], { clientMaxConnections: 5 })]).clientMaxConnections, 5);
    assert.equal(new AddressRoutes('a', [svc('a', ['x'], { clientMaxConnections: 3 }), svc('b', [])]).clientMaxConnections, 0);
  });
});

describe('AddressRoutes: which addresses read the ClientHello', () => {
  const cases: [string, (Routable & { listenAddress: string })[], boolean][] = [
    ['one plain service: relays at once', [svc('a', [])], false],
    ['one service with sni', [svc('a', ['x.example'])], true],
    ['two services', [svc('a', []), svc('b', ['x.example'])], true],
    ['one service hashing by server name', [svc('a', [], { wantsServerName: true })], true],
  ];
  for (const [what, list, want] of cases) {
    test(what, () => assert.equal(new AddressRoutes('a', list).inspect, want));
  }

  test('routesByAddress groups services by their listen address', () => {
    const m = routesByAddress([svc('a', [], { listenAddress: 'x:1' }), svc('b', ['n'], { listenAddress: 'x:2' }), svc('c', [], { listenAddress: 'x:2' })]);
    assert.deepEqual([...m.keys()], ['x:1', 'x:2']);
    assert.deepEqual(m.get('x:2')!.services.map((s) => s.name), ['b', 'c']);
    assert.equal(m.get('x:1')!.inspect, false);
    assert.equal(m.get('x:2')!.fallback?.name, 'c');
  });
});

const B = ['[[services.backends]]', 'address = "127.0.0.1:9"'];
const file = (services: string[][], top: string[] = []): string =>
  ['[admin]', 'listen_address = ""', ...top, ...services.flatMap((lines, i) => ['[[services]]', `name = "s${i}"`, ...lines, ...B]), ''].join('\n');

describe('validation of services sharing an address', () => {
  const ok = (text: string): void => {
    const r = parseAndValidate(text, {});
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  };
  const fails = (text: string, path: string, message: RegExp): void => {
    const r = parseAndValidate(text, {});
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.deepEqual(r.issues.map((i) => i.path), [path], JSON.stringify(r.issues));
    assert.match(r.issues[0]!.message, message);
  };
  const at = (port: number, ...more: string[]): string[] => [`listen_address = "127.0.0.1:${port}"`, ...more];

  test('three TLS services on one address, one of them the default route', () => {
    ok(file([at(443, 'sni = ["api.example.com"]'), at(443, 'sni = ["*.example.org", "Shop.Example.NET."]'), at(443)]));
    const r = parseAndValidate(file([at(443, 'sni = ["Shop.Example.NET."]')]), {});
    assert.ok(r.ok);
    if (r.ok) assert.deepEqual(r.config.services[0]!.sni, ['shop.example.net']); // lower case, no trailing dot
  });
  test('sharing without any default route is valid (no_route then)', () => ok(file([at(443, 'sni = ["a.example"]'), at(443, 'sni = ["b.example"]')])));
  test('two services without sni on one address', () =>
    fails(file([at(443), at(443, 'sni = ["a.example"]'), at(443)]), 'services[2].listen_address', /127\.0\.0\.1:443 is also the listen address of service "s0", and neither lists sni/));
  test('the default service and a named one without sni', () =>
    fails(
      ['[proxy]', 'listen_address = "127.0.0.1:443"', '[admin]', 'listen_address = ""', '[[backends]]', 'address = "127.0.0.1:1"', '[[services]]', 'name = "b"', 'listen_address = "127.0.0.1:443"', ...B, ''].join('\n'),
      'services[0].listen_address',
      /is also the listen address of service "default", and neither lists sni/,
    ));
  test('the same name on two services of one address names both', () =>
    fails(file([at(443, 'sni = ["a.example", "*.b.example"]'), at(443, 'sni = ["*.B.example"]')]), 'services[1].sni', /"\*\.b\.example" is also in the sni of service "s0" on 127\.0\.0\.1:443/));
  test('the same name on two addresses is fine', () => ok(file([at(443, 'sni = ["a.example"]'), at(8443, 'sni = ["a.example"]')])));
  test('a name listed twice in one service', () => fails(file([at(443, 'sni = ["a.example", "A.example"]')]), 'services[0].sni', /"A\.example" is listed twice/));
  test('a wildcard only as the first label', () => fails(file([at(443, 'sni = ["api.*.example"]')]), 'services[0].sni', /is not a host name or a wildcard "\*\.example\.org"/));
  test('a bare "*" is not a name', () => fails(file([at(443, 'sni = ["*"]')]), 'services[0].sni', /is not a host name/));
  test('services of one address must agree on inspect_timeout', () =>
    fails(file([at(443, 'sni = ["a.example"]'), at(443, 'inspect_timeout = "2s"')]), 'services[1].inspect_timeout', /services sharing 127\.0\.0\.1:443 must have the same inspect_timeout .*"s0" has 5000 ms, "s1" 2000 ms/));
  test('inspect_timeout set once at the top applies to all', () => ok(file([at(443, 'sni = ["a.example"]'), at(443)], ['[proxy]', 'inspect_timeout = "750ms"'])));
  test('inspect_timeout must be positive', () => fails(file([at(443, 'inspect_timeout = 0')]), 'services[0].inspect_timeout', /must be greater than 0/));
});

test('the snapshot holds each address\'s route table, built from the config', () => {
  const r = parseAndValidate(
    file(
      [
        ['listen_address = "127.0.0.1:443"', 'sni = ["api.example.com"]'],
        ['listen_address = "127.0.0.1:443"', 'algorithm = "consistent_hash"', 'hash_key = "sni"'],
        ['listen_address = "127.0.0.1:5432"'],
        ['listen_address = "127.0.0.1:6379"', 'algorithm = "consistent_hash"', 'hash_key = "sni"'],
      ],
      ['[proxy]', 'inspect_timeout = "3s"'],
    ),
    {},
  );
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  if (!r.ok) return;
  const snap = new Snapshot(r.config, 1, new LoadTable(() => 0), { now: () => 0, random: () => 0.5, strategies: STRATEGIES });
  assert.deepEqual([...snap.listenAddresses()], ['127.0.0.1:443', '127.0.0.1:5432', '127.0.0.1:6379']);
  const tls = snap.routes('127.0.0.1:443')!;
  assert.equal(tls.inspect, true);
  assert.equal(tls.inspectTimeoutMs, 3000);
  assert.equal(tls.route('api.example.com')!.name, 's0');
  assert.equal(tls.route('else.example.com')!.name, 's1');
  assert.equal(tls.route('else.example.com'), snap.service('s1'));
  assert.equal(snap.routes('127.0.0.1:5432')!.inspect, false);
  assert.equal(snap.routes('127.0.0.1:5432')!.fallback, snap.service('s2'));
  // hash_key = "sni" alone makes an address read the ClientHello
  assert.equal(snap.routes('127.0.0.1:6379')!.inspect, true);
  assert.equal(snap.service('s3')!.wantsServerName, true);
  assert.equal(snap.service('s2')!.wantsServerName, false);
  assert.equal(snap.routes('127.0.0.1:1'), undefined);
});
