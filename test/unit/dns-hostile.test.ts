// Property tests (fast-check) of the step that turns a resolver's answers into endpoints
// (core/dns-answer.ts takeAnswer, then core/endpoints.ts endpointsOf): hostile record sets —
// thousands of records, duplicates, the balancer's own addresses, port 0, weights 0 and 65535,
// huge names, mixed families, failed and refused queries — and the bounds that must hold for any
// of them: at most max_endpoints endpoints, never an own address, every address an IP of the
// family asked, a failure keeping the last answer, notes bounded, and a time bound per input.
// Seeds are printed on failure; FUZZ_SEED replays one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { parseAndValidate } from '../../src/config/load';
import { MAX_NOTES, ownMatcher, srvTargetNames, takeAnswer, type AddressRecord, type AddressReplies, type AnswerContext, type Family, type OwnAddresses, type RawAnswer, type Reply, type SrvRecord } from '../../src/core/dns-answer';
import { endpointsOf, type Target } from '../../src/core/endpoints';

const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : undefined;
const params = (numRuns: number): fc.Parameters<unknown> => ({ numRuns, ...(SEED !== undefined ? { seed: SEED } : {}) });
/** per input, the whole step (thousands of records included) */
const LIMIT_MS = 100;

async function check<T>(prop: fc.IProperty<T>, numRuns: number): Promise<void> {
  const r = await fc.check(prop, { ...params(numRuns), endOnFailure: true });
  if (!r.failed) return;
  const ex = JSON.stringify(r.counterexample);
  const cause = r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance);
  throw new Error(`property failed after ${r.numRuns} runs (seed ${r.seed}, FUZZ_SEED=${r.seed} replays it): ${cause.slice(0, 500)}\ncounterexample (${ex.length} chars): ${ex.slice(0, 600)}`);
}

const ADMIN = { host: '127.0.0.1', port: 9090 };
const OWN: OwnAddresses = { addresses: [ADMIN, { host: '0.0.0.0', port: 8080 }, { host: '::1', port: 8443 }], local: ['10.1.2.3', 'fe80::1'] };
const own = ownMatcher(OWN);
const BACKEND_PORTS = [9090, 8080, 5432];

// -------------------------------------------------------------------------------------------
// Arbitraries: records as a hostile or broken server could send them

const ownIp = fc.constantFrom('127.0.0.1', '0.0.0.0', '::', '::1', '::ffff:127.0.0.1', '10.1.2.3', '127.0.0.2');
const v4 = fc.oneof(fc.ipV4(), ownIp.filter((x) => !x.includes(':')), fc.constantFrom('10.0.0.1', '10.0.0.2'));
const v6 = fc.oneof(fc.ipV6(), ownIp.filter((x) => x.includes(':')), fc.constantFrom('::ffff:10.0.0.1', 'fe80::1'));
const junk = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', '999.1.1.1', '1.2.3', 'a.b.c.d', '::g', '1.2.3.4\n', ' 1.2.3.4'));
const ttl = fc.oneof(fc.integer({ min: 0, max: 2 ** 31 }), fc.constantFrom(-1, Number.NaN, Infinity, 0));
const code = fc.constantFrom('EREFUSED', 'ESERVFAIL', 'ETIMEOUT', 'ECONNREFUSED', 'ENODATA', 'ENOTFOUND', 'EBADRESP', '');

function records(ip: fc.Arbitrary<string>): fc.Arbitrary<AddressRecord[]> {
  const rec = fc.record({ address: fc.oneof({ weight: 8, arbitrary: ip }, { weight: 1, arbitrary: junk }), ttl });
  // few records mostly; now and then thousands (one repeated many times: duplicates)
  return fc.oneof(
    { weight: 6, arbitrary: fc.array(rec, { maxLength: 12 }) },
    { weight: 1, arbitrary: fc.tuple(rec, fc.integer({ min: 100, max: 3000 }), fc.array(rec, { maxLength: 5 })).map(([r, n, more]) => [...Array<AddressRecord>(n).fill(r), ...more]) },
    { weight: 1, arbitrary: fc.integer({ min: 500, max: 4000 }).map((n) => Array.from({ length: n }, (_, i) => ({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, ttl: 5 }))) },
  );
}

function reply<T>(ok: fc.Arbitrary<T[]>): fc.Arbitrary<Reply<T>> {
  return fc.oneof({ weight: 3, arbitrary: ok.map((r) => ({ records: r })) }, { weight: 1, arbitrary: code.map((error) => ({ error })) });
}

const addressReplies: fc.Arbitrary<AddressReplies> = fc.record({ v4: reply(records(v4)), v6: reply(records(v6)) }, { requiredKeys: [] });

const hugeName = fc.integer({ min: 200, max: 5000 }).map((n) => `${'x'.repeat(n)}.example`);
const targetName = fc.oneof(fc.constantFrom('a.test', 'b.test', 'c.test', '.', '', '127.0.0.1', '10.0.0.9', '::1'), hugeName, fc.domain());
const srvRecord: fc.Arbitrary<SrvRecord> = fc.record({
  name: targetName,
  port: fc.oneof(fc.constantFrom(0, 9090, 8080, 65535, 65536, -1, 1.5), fc.integer({ min: 0, max: 70000 })),
  weight: fc.oneof(fc.constantFrom(0, 65535, 70000, -5), fc.integer({ min: 0, max: 65535 })),
  priority: fc.oneof(fc.constantFrom(0, 65535), fc.integer({ min: 0, max: 3 })),
});
const srvRecords = fc.oneof(
  { weight: 5, arbitrary: fc.array(srvRecord, { maxLength: 10 }) },
  { weight: 1, arbitrary: fc.integer({ min: 200, max: 3000 }).map((n) => Array.from({ length: n }, (_, i) => ({ name: `t${i % 500}.test`, port: 1 + (i % 3), weight: i % 2 === 0 ? 0 : 65535, priority: 0 }))) },
);

const raw: fc.Arbitrary<RawAnswer> = fc.oneof(
  addressReplies.map((addresses) => ({ kind: 'dns' as const, addresses })),
  fc.record({ system: reply(records(fc.oneof(v4, v6))), ttl: fc.option(fc.integer({ min: 0, max: 100000 }), { nil: null }) }).map((x) => ({ kind: 'lookup' as const, ...x })),
  fc.record({ srv: reply(srvRecords), replies: fc.array(addressReplies, { minLength: 1, maxLength: 8 }) }).map(({ srv, replies }) => {
    // the targets' replies as discovery asks them: the names srvTargetNames gives, nothing else
    const names = srvTargetNames(srv, 4096);
    return { kind: 'srv' as const, srv, targets: new Map(names.map((n, i) => [n, replies[i % replies.length]!])) };
  }),
);

const lastAnswer: fc.Arbitrary<Target[] | null> = fc.option(
  fc.array(fc.record({ ip: fc.oneof(v4, v6), port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }), from: fc.option(targetName, { nil: undefined }) }, { requiredKeys: ['ip'] }), { maxLength: 20 }),
  { nil: null },
);

const context = fc.record({
  family: fc.constantFrom<Family>('any', 'ipv4', 'ipv6'),
  maxEndpoints: fc.oneof(fc.constantFrom(1, 64), fc.integer({ min: 1, max: 100 })),
  last: lastAnswer,
});

const base = parseAndValidate('[proxy]\nlisten_address = "127.0.0.1:8080"\n[[backends]]\nname = "d"\naddress = "d.test:9090"\nresolve = "dns"\n[[backends]]\nname = "s"\nsrv = "_s._tcp.test"\n', {});
if (!base.ok) throw new Error('base config');
const [dnsBackend, srvBackend] = base.config.backends;

// -------------------------------------------------------------------------------------------

test('takeAnswer + endpointsOf: any record set gives at most max_endpoints endpoints, never an own address, within a time bound', async (t) => {
  let slowest = 0;
  let runs = 0;
  let failedLookups = 0;
  await check(
    fc.property(raw, context, (r, c) => {
      runs++;
      const ctx: AnswerContext = { ...c, ports: r.kind === 'srv' ? [] : BACKEND_PORTS, own: OWN };
      const t0 = performance.now();
      const taken = takeAnswer(r, ctx);
      const backend = r.kind === 'srv' ? srvBackend! : dnsBackend!;
      const ids = new Map<string, number>();
      const eps = taken.targets === null ? [] : endpointsOf(backend, taken.targets, (n) => ids.get(n) ?? (ids.set(n, ids.size), ids.size - 1));
      let ms = performance.now() - t0;
      for (let i = 0; i < 3 && ms > LIMIT_MS; i++) {
        const t1 = performance.now();
        takeAnswer(r, ctx);
        ms = Math.min(ms, performance.now() - t1);
      }
      slowest = Math.max(slowest, ms);
      assert.ok(ms < LIMIT_MS, `${ms.toFixed(1)} ms for one answer`);

      assert.ok(taken.notes.length <= MAX_NOTES);
      for (const n of taken.notes) assert.ok(n.length <= 1000, `a note of ${n.length} chars`);
      if (taken.targets === null) {
        failedLookups++;
        assert.equal(typeof taken.error, 'string');
        assert.ok(taken.error!.length > 0 && taken.error!.length <= 200, taken.error!);
        return;
      }
      assert.ok(taken.targets.length <= ctx.maxEndpoints, `${taken.targets.length} targets > ${ctx.maxEndpoints}`);
      assert.ok(eps.length <= ctx.maxEndpoints, `${eps.length} endpoints > ${ctx.maxEndpoints}`);
      assert.equal(new Set(eps.map((e) => e.address)).size, eps.length, 'one endpoint per address');
      for (const e of eps) {
        assert.ok(!own(e.host, e.port), `own address ${e.address} taken`);
        assert.ok(e.port >= 1 && e.port <= 65535, `port ${e.port}`);
        assert.ok(Number.isInteger(e.weight) && e.weight >= 0 && e.weight <= 1_000_000, `weight ${e.weight}`);
      }
      // every address is an IP of a family asked (a failed part's addresses of the last answer included)
      for (const x of taken.targets) {
        const six = x.ip.includes(':');
        if (ctx.family === 'ipv4' && r.kind !== 'srv') assert.ok(!six || ctx.last?.some((l) => l.ip === x.ip), `${x.ip} with family ipv4`);
        if (ctx.family === 'ipv6' && r.kind !== 'srv') assert.ok(six || ctx.last?.some((l) => l.ip === x.ip), `${x.ip} with family ipv6`);
      }
    }),
    400,
  );
  t.diagnostic(`${runs} answers, ${failedLookups} failed as a whole; slowest ${slowest.toFixed(1)} ms`);
});

test('a failed AAAA (or A) query keeps what the other answered and that family of the last answer; both failed is a failure', () => {
  const ctx = (family: Family, last: Target[] | null): AnswerContext => ({ family, maxEndpoints: 64, ports: [5432], own: OWN, last });
  const a = { records: [{ address: '10.0.0.1', ttl: 30 }] };
  for (const error of ['EREFUSED', 'ETIMEOUT', 'ESERVFAIL']) {
    const r = takeAnswer({ kind: 'dns', addresses: { v4: a, v6: { error } } }, ctx('any', [{ ip: '10.0.0.7' }, { ip: 'fd00::1' }]));
    assert.deepEqual(r.targets, [{ ip: '10.0.0.1' }, { ip: 'fd00::1' }]);
    assert.equal(r.partial, true);
    assert.match(r.notes.join(), new RegExp(`AAAA ${error}: kept what answered and 1 addresses of the last answer`));
  }
  // NODATA for AAAA is an answer: nothing failed
  const nodata = takeAnswer({ kind: 'dns', addresses: { v4: a, v6: { error: 'ENODATA' } } }, ctx('any', null));
  assert.deepEqual([nodata.targets, nodata.partial, nodata.notes, nodata.ttl], [[{ ip: '10.0.0.1' }], false, [], 30]);
  // both failed: the lookup failed (the last answer stays, in discovery)
  const both = takeAnswer({ kind: 'dns', addresses: { v4: { error: 'ESERVFAIL' }, v6: { error: 'ETIMEOUT' } } }, ctx('any', [{ ip: '10.0.0.7' }]));
  assert.deepEqual([both.targets, both.error], [null, 'A ESERVFAIL, AAAA ETIMEOUT']);
  // family ipv4: an AAAA reply is not read at all
  const v4only = takeAnswer({ kind: 'dns', addresses: { v4: a, v6: { records: [{ address: 'fd00::2', ttl: 1 }] } } }, ctx('ipv4', null));
  assert.deepEqual([v4only.targets, v4only.ttl], [[{ ip: '10.0.0.1' }], 30]);
});

test('srv: a target that fails keeps its endpoints of the last answer; the others are taken; all failing is a failure', () => {
  const srv = { records: [
    { name: 'a.test', port: 5432, weight: 10, priority: 1 },
    { name: 'b.test', port: 5432, weight: 20, priority: 1 },
    { name: 'c.test', port: 5432, weight: 5, priority: 2 },
    { name: 'z.test', port: 0, weight: 5, priority: 0 },
  ] };
  assert.deepEqual(srvTargetNames(srv, 64), ['a.test', 'b.test']);
  const last: Target[] = [{ ip: '10.0.0.2', port: 5432, weight: 20, priority: 1, from: 'b.test' }];
  const ctx: AnswerContext = { family: 'any', maxEndpoints: 64, ports: [], own: OWN, last };
  const ok = { v4: { records: [{ address: '10.0.0.1', ttl: 9 }] }, v6: { error: 'EREFUSED' } };
  const r = takeAnswer({ kind: 'srv', srv, targets: new Map<string, AddressReplies>([['a.test', ok], ['b.test', { v4: { error: 'ESERVFAIL' }, v6: { error: 'ESERVFAIL' } }]]) }, ctx);
  assert.deepEqual(r.targets, [
    { ip: '10.0.0.1', port: 5432, weight: 10, priority: 1, from: 'a.test' },
    { ip: '10.0.0.2', port: 5432, weight: 20, priority: 1, from: 'b.test' },
  ]);
  assert.equal(r.partial, true);
  assert.match(r.notes.join('\n'), /left out 1 SRV records without a usable port: z\.test:0/);
  assert.match(r.notes.join('\n'), /SRV targets that did not answer kept their last addresses: b\.test \(A ESERVFAIL, AAAA ESERVFAIL\)/);
  assert.match(r.notes.join('\n'), /failed queries of SRV targets, kept what answered: a\.test AAAA EREFUSED/);
  const none = takeAnswer({ kind: 'srv', srv, targets: new Map() }, ctx);
  assert.equal(none.targets, null);
  assert.match(String(none.error), /targets failed: a\.test \(A no reply, AAAA no reply\)/);
  // max_endpoints bounds the targets looked up before any lookup is made
  const many = { records: Array.from({ length: 1000 }, (_, i) => ({ name: `t${i}.test`, port: 1, weight: 1, priority: 0 })) };
  assert.equal(srvTargetNames(many, 64).length, 64);
});

test('own addresses: exact, a wildcard listener (loopback, unspecified and interface addresses), IPv4-mapped, localhost', () => {
  const m = ownMatcher({ addresses: [{ host: '127.0.0.1', port: 9090 }, { host: '0.0.0.0', port: 8080 }, { host: '::', port: 8443 }, { host: 'localhost', port: 7000 }], local: ['10.1.2.3', '2001:db8::5'] });
  const yes: [string, number][] = [
    ['127.0.0.1', 9090], ['::ffff:127.0.0.1', 9090], ['0.0.0.0', 9090], ['::', 9090],
    ['127.0.0.1', 8080], ['127.9.9.9', 8080], ['10.1.2.3', 8080], ['0.0.0.0', 8080], ['::ffff:10.1.2.3', 8080],
    ['::1', 8443], ['2001:db8::5', 8443], ['10.1.2.3', 8443], ['127.0.0.1', 8443],
    ['127.0.0.1', 7000], ['::1', 7000],
  ];
  const no: [string, number][] = [['127.0.0.2', 9090], ['127.0.0.1', 9091], ['10.9.9.9', 8080], ['2001:db8::5', 8080], ['10.0.0.1', 8443], ['127.0.0.2', 7000], ['not-an-ip', 9090]];
  for (const [ip, port] of yes) assert.ok(m(ip, port), `${ip}:${port} is own`);
  for (const [ip, port] of no) assert.ok(!m(ip, port), `${ip}:${port} is not own`);
});

test('[dns] family and max_endpoints: validated with the key and what was expected', () => {
  const issues = (dns: string): string => {
    const r = parseAndValidate(`[proxy]\nlisten_address = "127.0.0.1:8080"\n[dns]\n${dns}\n[[backends]]\naddress = "db:1"\n`, {});
    return r.ok ? '' : r.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
  };
  assert.equal(issues('family = "ipv4"\nmax_endpoints = 1'), '');
  assert.match(issues('family = "both"'), /dns\.family: expected one of "any", "ipv4", "ipv6"/);
  assert.match(issues('max_endpoints = 0'), /dns\.max_endpoints: must be greater than 0, got 0/);
  assert.match(issues('max_endpoints = 100000'), /dns\.max_endpoints: .*4096/);
});
