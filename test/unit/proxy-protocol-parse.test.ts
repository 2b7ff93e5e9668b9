// Reading inbound PROXY protocol headers (parseProxyHeader in src/core/proxy-protocol.ts), against
// HAProxy's proxy-protocol.txt: the examples written out by hand, every header the encoder makes
// read back, and hostile input (fast-check): it never throws, never looks past the bound, and
// what it accepts is what a byte-by-byte delivery accepts too. FUZZ_SEED replays a seed.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeProxyHeader, parseProxyHeader, MAX_V1_HEADER, MAX_V2_BODY, MAX_V2_HEADER, type AcceptProxy, type ProxyEndpoints, type ProxyHeaderResult } from '../../src/core/proxy-protocol';

const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : undefined;
const params = (numRuns: number): fc.Parameters<unknown> => ({ numRuns, ...(SEED !== undefined ? { seed: SEED } : {}) });

const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');
const SIG = '0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a';
const latin = (s: string): Buffer => Buffer.from(s, 'latin1');
const parse = (b: Buffer, accept: AcceptProxy = 'any'): ProxyHeaderResult => parseProxyHeader(b, b.length, accept);
const ep = (srcAddress: string, srcPort: number, dstAddress: string, dstPort: number): ProxyEndpoints => ({ srcAddress, srcPort, dstAddress, dstPort });

function header(r: ProxyHeaderResult): { version: number; length: number; client: ProxyEndpoints | null } {
  assert.equal(r.kind, 'header', JSON.stringify(r));
  const h = r as Extract<ProxyHeaderResult, { kind: 'header' }>;
  return { version: h.version, length: h.length, client: h.client };
}

describe('version 1', () => {
  test('the example of the spec, and the bytes after it are not the header', () => {
    const line = 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n';
    assert.deepEqual(header(parse(latin(`${line}GET / HTTP/1.1\r\n`))), { version: 1, length: line.length, client: ep('192.168.0.1', 56324, '192.168.0.11', 443) });
  });
  test('TCP6, the longest line of the spec, is within its 107 bytes', () => {
    const line = 'PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n';
    assert.ok(line.length <= MAX_V1_HEADER);
    assert.deepEqual(header(parse(latin(line))).client, ep('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 65535, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 65535));
  });
  test('TCP6 addresses are written as RFC 5952 text; an IPv4-mapped one as IPv4', () => {
    assert.deepEqual(header(parse(latin('PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::ffff:10.0.0.1 1 2\r\n'))).client, ep('2001:db8::1', 1, '10.0.0.1', 2));
  });
  test('UNKNOWN keeps the connection\'s own addresses (client null), whatever follows it', () => {
    assert.deepEqual(header(parse(latin('PROXY UNKNOWN\r\n'))), { version: 1, length: 15, client: null });
    assert.deepEqual(header(parse(latin('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'))).client, null);
  });
  test('a line being received is need-more, until 107 bytes without CRLF', () => {
    for (const part of ['P', 'PROXY', 'PROXY ', 'PROXY TCP4 1.2.3.4', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r']) assert.equal(parse(latin(part)).kind, 'need-more', part);
    const long = latin(`PROXY TCP4 ${'1'.repeat(MAX_V1_HEADER)}`);
    assert.equal(parse(long.subarray(0, MAX_V1_HEADER - 1)).kind, 'need-more');
    assert.equal(parse(long.subarray(0, MAX_V1_HEADER)).kind, 'invalid');
  });
  const bad = [
    'GET / HTTP/1.1\r\n',
    'PROXY\r\n',
    'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX',
    'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n',
    'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4 ::1 ::2 1 2\r\n',
    'PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n',
    'PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n',
    'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n',
    'PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n',
  ];
  for (const b of bad) test(`refused: ${JSON.stringify(b)}`, () => assert.equal(parse(latin(b)).kind, 'invalid'));
  test('accept = "v2" refuses a v1 line; accept = "v1" a v2 header', () => {
    assert.equal(parse(latin('PROXY UNKNOWN\r\n'), 'v2').kind, 'invalid');
    assert.equal(parse(bytes(`${SIG} 20 00 00 00`), 'v1').kind, 'invalid');
  });
});

describe('version 2', () => {
  test('PROXY over TCP/IPv4, and the bytes after the addresses (TLVs) are skipped', () => {
    const h = bytes(`${SIG} 21 11 00 0f  c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb  01 00 00  ff ff`);
    assert.deepEqual(header(parse(h)), { version: 2, length: 16 + 15, client: ep('192.168.0.1', 56324, '192.168.0.11', 443) });
  });
  test('PROXY over TCP/IPv6', () => {
    const h = bytes(`${SIG} 21 21 00 24  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01  00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01  00 01 00 02`);
    assert.deepEqual(header(parse(h)).client, ep('2001:db8::1', 1, '10.0.0.1', 2));
  });
  test('LOCAL (a health check of the balancer in front) keeps the connection\'s addresses', () => {
    assert.deepEqual(header(parse(bytes(`${SIG} 20 00 00 00`))), { version: 2, length: 16, client: null });
    // LOCAL with addresses: they are ignored
    assert.deepEqual(header(parse(bytes(`${SIG} 20 11 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`))).client, null);
  });
  test('UNSPEC, UNIX and datagram families keep the connection\'s addresses', () => {
    assert.equal(header(parse(bytes(`${SIG} 21 00 00 00`))).client, null);
    assert.equal(header(parse(bytes(`${SIG} 21 31 00 00`))).client, null);
    assert.equal(header(parse(bytes(`${SIG} 21 12 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`))).client, null);
  });
  test('a truncated header is need-more; a length above the bound is refused at once', () => {
    const h = bytes(`${SIG} 21 11 00 0c  c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb`);
    for (let n = 1; n < h.length; n++) assert.equal(parse(h.subarray(0, n)).kind, 'need-more', `${n} bytes`);
    assert.equal(parse(bytes(`${SIG} 21 11 ff ff`)).kind, 'invalid');
    assert.equal(parse(bytes(`${SIG} 21 11 10 01`)).kind, 'invalid');
    assert.equal(MAX_V2_BODY, 0x1000);
    assert.equal(parse(bytes(`${SIG} 21 11 10 00`)).kind, 'need-more');
  });
  for (const [name, h] of [
    ['a wrong signature', '0d 0a 0d 0a 00 0d 0a 51 55 49 54 0b 21 11 00 00'],
    ['version 1 in the binary form', `${SIG} 11 11 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`],
    ['command 2', `${SIG} 22 11 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`],
    ['family 4', `${SIG} 21 41 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`],
    ['protocol 3', `${SIG} 21 13 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`],
    ['IPv4 addresses in 11 bytes', `${SIG} 21 11 00 0b 01 02 03 04 05 06 07 08 00 01 00`],
    ['IPv6 addresses in 12 bytes', `${SIG} 21 21 00 0c 01 02 03 04 05 06 07 08 00 01 00 02`],
  ] as const) {
    test(`refused: ${name}`, () => assert.equal(parse(bytes(h)).kind, 'invalid'));
  }
});

test('every header the encoder makes is read back as what it encoded', () => {
  fc.assert(
    fc.property(fc.boolean(), fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), (v2, src, dst, sport, dport) => {
      const e = ep(src, sport, dst, dport);
      const h = encodeProxyHeader(v2 ? 'v2' : 'v1', e);
      const r = header(parse(Buffer.concat([h, latin('rest')]), v2 ? 'v2' : 'v1'));
      assert.equal(r.length, h.length);
      assert.deepEqual(r.client, ep(src.split('.').map(Number).join('.'), sport, dst.split('.').map(Number).join('.'), dport));
    }),
    params(2000),
  );
  fc.assert(
    fc.property(fc.boolean(), fc.ipV6(), fc.ipV6(), fc.integer({ min: 0, max: 65535 }), (v2, src, dst, port) => {
      const h = encodeProxyHeader(v2 ? 'v2' : 'v1', ep(src, port, dst, port));
      const r = header(parse(h));
      assert.equal(r.length, h.length);
      // read back, it encodes to the same bytes
      assert.deepEqual(encodeProxyHeader(v2 ? 'v2' : 'v1', r.client ?? ep('', 0, '', 0)), h);
    }),
    params(2000),
  );
});

/** A parse that may not look past `len`: the bytes after it are poison. */
function boundedParse(input: Uint8Array, accept: AcceptProxy): ProxyHeaderResult {
  const buf = new Uint8Array(input.length + 64);
  buf.set(input);
  const guarded = new Proxy(buf, {
    get(target, key) {
      if (typeof key === 'string' && /^\d+$/.test(key) && Number(key) >= input.length) throw new Error(`read byte ${key} past ${input.length}`);
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return parseProxyHeader(guarded, input.length, accept);
}

test('hostile input: never throws, never reads past the bytes given, a header never longer than the bound', () => {
  const mutate = fc.tuple(fc.boolean(), fc.ipV4(), fc.ipV6(), fc.uint8Array({ maxLength: 64 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat(), fc.constantFrom<AcceptProxy>('v1', 'v2', 'any'));
  fc.assert(
    fc.property(mutate, ([v2, a4, a6, tail, flips, cut, accept]) => {
      const base = Buffer.concat([encodeProxyHeader(v2 ? 'v2' : 'v1', ep(cut % 2 ? a4 : a6, 1, cut % 2 ? a4 : a6, 2)), tail]);
      for (const [at, b] of flips) base[at % base.length] = b;
      const input = base.subarray(0, cut % (base.length + 1));
      const r = boundedParse(input, accept);
      if (r.kind === 'header') {
        assert.ok(r.length <= input.length && r.length <= (r.version === 1 ? MAX_V1_HEADER : MAX_V2_HEADER));
        // byte by byte it is need-more until the header is whole, then the same header
        for (let n = 0; n < r.length; n++) assert.equal(parseProxyHeader(input, n, accept).kind, 'need-more', `${n} of ${r.length}`);
      }
    }),
    params(5000),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.constantFrom<AcceptProxy>('v1', 'v2', 'any'), (input, accept) => {
      const r = boundedParse(input, accept);
      assert.ok(['header', 'need-more', 'invalid'].includes(r.kind));
      if (r.kind === 'need-more') assert.ok(input.length < MAX_V2_HEADER);
    }),
    params(5000),
  );
  // a length the caller gives beyond the buffer is bounded by it
  assert.equal(parseProxyHeader(latin('PROXY '), 1000, 'any').kind, 'need-more');
  assert.equal(parseProxyHeader(latin('PROXY '), -5, 'any').kind, 'need-more');
});
