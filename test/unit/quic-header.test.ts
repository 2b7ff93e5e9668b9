// The QUIC header reader (src/proxy/quic-header.ts) and the connection ID table
// (src/proxy/udp-flows.ts ConnectionIds) of udp_affinity = "quic": crafted headers of versions 1
// and 2 read right, and any bytes at all (random, and valid headers cut, flipped, their lengths
// set past the datagram) never throw and never read past the datagram; the table stays bounded.
// FUZZ_SEED replays a seed fast-check printed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { emptyQuicHeader, MAX_CID_LENGTH, QUIC_V1, QUIC_V2, QuicForm, QuicLongType, readQuicHeader, shortDcidFits } from '../../src/proxy/quic-header';
import { ConnectionIds, MAX_ID_LENGTHS, MAX_IDS_PER_FLOW } from '../../src/proxy/udp-flows';

const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : undefined;
const params = (numRuns: number): fc.Parameters<[Uint8Array]> => ({ numRuns, ...(SEED !== undefined ? { seed: SEED } : {}) });

/** A long header: first byte, version, DCID, SCID, then `rest` (token, length, packet number, payload: opaque here). */
function long(first: number, version: number, dcid: Uint8Array, scid: Uint8Array, rest = Buffer.alloc(40, 0xaa)): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(version >>> 0);
  return Buffer.concat([Buffer.from([first]), v, Buffer.from([dcid.length]), dcid, Buffer.from([scid.length]), scid, rest]);
}

const DCID = Buffer.from('0011223344556677', 'hex');
const SCID = Buffer.from('a0a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7', 'hex');

test('a version 1 long header: its type, DCID and SCID', () => {
  const h = emptyQuicHeader();
  const types = [QuicLongType.Initial, QuicLongType.ZeroRtt, QuicLongType.Handshake, QuicLongType.Retry];
  for (let raw = 0; raw < 4; raw++) {
    const d = long(0xc0 | (raw << 4), QUIC_V1, DCID, SCID);
    assert.equal(readQuicHeader(d, h), QuicForm.Long);
    assert.equal(h.version, QUIC_V1);
    assert.equal(h.type, types[raw]);
    assert.deepEqual(d.subarray(h.dcidOffset, h.dcidOffset + h.dcidLength), DCID);
    assert.deepEqual(d.subarray(h.scidOffset, h.scidOffset + h.scidLength), SCID);
  }
});

test('a version 2 long header: its types numbered as RFC 9369 does (Initial is 1, Retry 0)', () => {
  const h = emptyQuicHeader();
  const types = [QuicLongType.Retry, QuicLongType.Initial, QuicLongType.ZeroRtt, QuicLongType.Handshake];
  for (let raw = 0; raw < 4; raw++) {
    assert.equal(readQuicHeader(long(0xc0 | (raw << 4), QUIC_V2, DCID, SCID), h), QuicForm.Long);
    assert.equal(h.type, types[raw], `raw type ${raw}`);
    assert.equal(h.scidLength, SCID.length);
  }
});

test('other versions, IDs longer than 20 bytes and headers cut short are not read as QUIC', () => {
  const h = emptyQuicHeader();
  // version negotiation (0), a draft version, a greased one (0x?a?a?a?a)
  for (const v of [0, 0xff00001d, 0x1a2a3a4a]) assert.equal(readQuicHeader(long(0xc0, v, DCID, SCID), h), QuicForm.None, `version ${v.toString(16)}`);
  assert.equal(readQuicHeader(long(0xc0, QUIC_V1, Buffer.alloc(21, 1), SCID), h), QuicForm.None);
  assert.equal(readQuicHeader(long(0xc0, QUIC_V1, DCID, Buffer.alloc(21, 1)), h), QuicForm.None);
  // 20 bytes is the bound, and zero-length IDs are QUIC's too
  assert.equal(readQuicHeader(long(0xc0, QUIC_V1, Buffer.alloc(20, 1), Buffer.alloc(0), Buffer.alloc(0)), h), QuicForm.Long);
  assert.equal(h.scidLength, 0);
  const whole = long(0xc0, QUIC_V1, DCID, SCID, Buffer.alloc(0));
  for (let n = 0; n < whole.length; n++) assert.equal(readQuicHeader(whole.subarray(0, n), h), QuicForm.None, `cut at ${n}`);
  assert.equal(readQuicHeader(whole, h), QuicForm.Long);
  assert.equal(readQuicHeader(Buffer.alloc(0), h), QuicForm.None);
});

test('a short header: its ID starts at byte 1, and fits only where the datagram has room after it', () => {
  const h = emptyQuicHeader();
  const d = Buffer.concat([Buffer.from([0x40]), SCID, Buffer.alloc(20, 0x55)]);
  assert.equal(readQuicHeader(d, h), QuicForm.Short);
  assert.equal(h.dcidOffset, 1);
  assert.ok(shortDcidFits(d, SCID.length));
  assert.ok(!shortDcidFits(d.subarray(0, 1 + SCID.length), SCID.length), 'an ID and nothing after it is no packet');
  assert.ok(!shortDcidFits(d, 0));
  assert.ok(!shortDcidFits(d, MAX_CID_LENGTH + 1));
});

/** What any input must satisfy: no throw, and offsets within the datagram, lengths within QUIC's bound. */
function holds(d: Uint8Array): void {
  const h = emptyQuicHeader();
  const form = readQuicHeader(d, h);
  if (form === QuicForm.Long) {
    assert.ok(h.version === QUIC_V1 || h.version === QUIC_V2);
    assert.ok(h.dcidLength <= MAX_CID_LENGTH && h.scidLength <= MAX_CID_LENGTH);
    assert.ok(h.dcidOffset + h.dcidLength <= d.length && h.scidOffset + h.scidLength <= d.length);
    assert.ok(h.type >= 0 && h.type <= 3);
  } else if (form === QuicForm.Short) {
    assert.equal((d[0]! & 0x80), 0);
    for (let len = 0; len <= 64; len++) if (shortDcidFits(d, len)) assert.ok(1 + len < d.length && len <= MAX_CID_LENGTH);
  } else assert.equal(form, QuicForm.None);
}

test('random bytes: never a throw, never an offset past the datagram', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 1500 }), (d) => holds(d)), params(20_000));
});

test('valid headers mutated (flipped bits, cut, lengths set past the end, a version forced): never a throw', () => {
  const header = fc
    .record({
      first: fc.integer({ min: 0, max: 255 }),
      version: fc.constantFrom(QUIC_V1, QUIC_V2, 0, 0xffffffff),
      dcid: fc.uint8Array({ maxLength: 24 }),
      scid: fc.uint8Array({ maxLength: 24 }),
      rest: fc.uint8Array({ maxLength: 64 }),
    })
    .map((r) => new Uint8Array(long(r.first | 0x80, r.version, r.dcid, r.scid, Buffer.from(r.rest))));
  const mutated = fc.tuple(header, fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 255 }), fc.nat(), fc.constantFrom('cut', 'byte', 'dcidLen', 'scidLen')).map(([d, at, byte, cut, how]) => {
    const c = Uint8Array.from(d);
    if (how === 'cut') return c.subarray(0, cut % (c.length + 1));
    if (how === 'byte' && c.length > 0) c[at % c.length] = byte;
    if (how === 'dcidLen' && c.length > 5) c[5] = byte;
    if (how === 'scidLen' && c.length > 6 + c[5]!) c[6 + c[5]!] = byte;
    return c;
  });
  fc.assert(fc.property(mutated, (d) => holds(d)), params(20_000));
});

test('the connection ID table: bounded per flow and by distinct lengths, an ID leaves with its flow', () => {
  const ids = new ConnectionIds<string>();
  const id = (n: number, len = 8): string => String.fromCharCode(n).repeat(len);
  for (let i = 0; i < MAX_IDS_PER_FLOW + 3; i++) assert.ok(ids.learn(id(i + 1), 'a'));
  assert.equal(ids.of('a').length, MAX_IDS_PER_FLOW, 'the oldest IDs of a flow are forgotten past the bound');
  assert.equal(ids.get(id(1)), undefined);
  assert.equal(ids.get(id(MAX_IDS_PER_FLOW + 3)), 'a');
  assert.deepEqual(ids.lengths, [8]);
  // an ID another flow's backend chose now is that flow's
  assert.ok(ids.learn(id(MAX_IDS_PER_FLOW + 3), 'b'));
  assert.equal(ids.get(id(MAX_IDS_PER_FLOW + 3)), 'b');
  assert.equal(ids.of('a').length, MAX_IDS_PER_FLOW - 1);
  // distinct lengths: at most MAX_ID_LENGTHS, tried in the order learned
  for (let len = 9; len < 9 + MAX_ID_LENGTHS - 1; len++) assert.ok(ids.learn(id(1, len), `l${len}`));
  assert.equal(ids.lengths.length, MAX_ID_LENGTHS);
  assert.equal(ids.learn(id(1, 20), 'c'), false, 'one length more than the bound is not learned');
  assert.equal(ids.learn('', 'c'), false, 'a zero-length ID routes nothing');
  assert.equal(ids.learn(id(1, 21), 'c'), false);
  // a flow that ends takes its IDs, and a length no ID has any more is no longer tried
  ids.forget('l9');
  assert.ok(!ids.lengths.includes(9));
  ids.forget('a');
  ids.forget('b');
  assert.deepEqual(ids.lengths, [10, 11]);
  assert.equal(ids.size, 2);
});

test('the connection ID table under random learning and forgetting stays within its bounds', () => {
  const op = fc.oneof(
    fc.record({ learn: fc.string({ minLength: 0, maxLength: 22 }), flow: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ forget: fc.integer({ min: 0, max: 7 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      const ids = new ConnectionIds<number>();
      const live = new Set<number>();
      for (const o of ops) {
        if ('learn' in o) {
          if (ids.learn(o.learn, o.flow)) live.add(o.flow);
        } else {
          ids.forget(o.forget);
          live.delete(o.forget);
        }
        assert.ok(ids.lengths.length <= MAX_ID_LENGTHS);
        assert.ok(ids.size <= MAX_IDS_PER_FLOW * 8);
        let owned = 0;
        for (let f = 0; f < 8; f++) {
          assert.ok(ids.of(f).length <= MAX_IDS_PER_FLOW);
          for (const x of ids.of(f)) assert.equal(ids.get(x), f);
          owned += ids.of(f).length;
        }
        assert.equal(owned, ids.size);
        assert.deepEqual([...ids.lengths].sort(), [...new Set(Array.from({ length: 8 }, (_, f) => ids.of(f).map((x) => x.length)).flat())].sort());
      }
    }),
    { numRuns: 500, ...(SEED !== undefined ? { seed: SEED } : {}) },
  );
});
