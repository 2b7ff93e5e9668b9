// PROXY protocol headers (src/core/proxy-protocol.ts), byte for byte against HAProxy's
// proxy-protocol.txt. Every expected value below is written out by hand from that document.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { encodeProxyHeader, proxyHeader, tlsTlvs, type ProxyEndpoints, type ProxyTls } from '../../src/core/proxy-protocol';

/** "0d 0a ..." → bytes */
const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');

// §2.2: the 12-byte v2 signature \x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A
const SIG = '0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a';
const ZERO11 = '00 00 00 00 00 00 00 00 00 00 00';

const ep = (srcAddress: string, srcPort: number, dstAddress: string, dstPort: number): ProxyEndpoints => ({ srcAddress, srcPort, dstAddress, dstPort });

describe('version 1 (text)', () => {
  const cases: { name: string; e: ProxyEndpoints; want: string | string[] }[] = [
    // the example of §2.1
    { name: 'TCP4, the example of the spec', e: ep('192.168.0.1', 56324, '192.168.0.11', 443), want: 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n' },
    { name: 'TCP4, lowest and highest ports', e: ep('10.0.0.1', 0, '255.255.255.255', 65535), want: 'PROXY TCP4 10.0.0.1 255.255.255.255 0 65535\r\n' },
    { name: 'TCP4, leading zeroes are never written', e: ep('010.001.000.007', 1, '127.0.0.1', 2), want: 'PROXY TCP4 10.1.0.7 127.0.0.1 1 2\r\n' },
    { name: 'TCP4 from IPv4-mapped IPv6 addresses (a dual-stack socket)', e: ep('::ffff:192.168.0.1', 56324, '::ffff:192.168.0.11', 443), want: 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n' },
    { name: 'TCP4 from one mapped and one plain IPv4 address', e: ep('::ffff:10.0.0.1', 5, '10.0.0.2', 6), want: 'PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n' },
    // the worst case of §2.1 (the longest TCP6 line)
    {
      name: 'TCP6, the longest line of the spec',
      e: ep('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 65535, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 65535),
      want: 'PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n',
    },
    // addresses in RFC 5952 form, as HAProxy's inet_ntop writes them (more in the table below)
    { name: 'TCP6, compressible addresses', e: ep('2001:db8::1', 12345, '2001:db8::2', 443), want: 'PROXY TCP6 2001:db8::1 2001:db8::2 12345 443\r\n' },
    { name: 'TCP6, loopback', e: ep('::1', 40000, '::1', 8080), want: 'PROXY TCP6 ::1 ::1 40000 8080\r\n' },
    { name: 'TCP6, a zone index is not sent', e: ep('fe80::1%eth0', 1, 'fe80::2%eth0', 2), want: 'PROXY TCP6 fe80::1 fe80::2 1 2\r\n' },
    // UNKNOWN: §2.1 "PROXY UNKNOWN\r\n" (the rest of the line may be omitted)
    { name: 'UNKNOWN when the source is not an IP address', e: ep('', 0, '10.0.0.1', 80), want: 'PROXY UNKNOWN\r\n' },
    { name: 'UNKNOWN when the destination is not an IP address', e: ep('10.0.0.1', 1, 'localhost', 80), want: 'PROXY UNKNOWN\r\n' },
    { name: 'UNKNOWN for a UNIX socket path', e: ep('/run/lemonade.sock', 0, '/run/lemonade.sock', 0), want: 'PROXY UNKNOWN\r\n' },
    { name: 'UNKNOWN when the families differ (IPv4 to IPv6)', e: ep('10.0.0.1', 1, '2001:db8::1', 80), want: 'PROXY UNKNOWN\r\n' },
    { name: 'UNKNOWN when the families differ (IPv6 to IPv4)', e: ep('2001:db8::1', 1, '10.0.0.1', 80), want: 'PROXY UNKNOWN\r\n' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = encodeProxyHeader('v1', c.e);
      const wants = Array.isArray(c.want) ? c.want : [c.want];
      assert.ok(
        wants.some((w) => got.equals(Buffer.from(w, 'latin1'))),
        `got ${JSON.stringify(got.toString('latin1'))}, want ${wants.map((w) => JSON.stringify(w)).join(' or ')}`,
      );
      // §2.1: at most 107 bytes, CRLF-terminated, starting with "PROXY "
      assert.ok(got.length <= 107);
      assert.equal(got.subarray(0, 6).toString('latin1'), 'PROXY ');
      assert.equal(got.subarray(-2).toString('latin1'), '\r\n');
    });
  }
});

describe('version 1 IPv6 text: RFC 5952 canonical form', () => {
  // [address as given, its canonical text]
  const cases: [string, string][] = [
    ['::1', '::1'],
    ['::', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    // §4.1 no leading zeros, §4.3 lowercase
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:00aa:0bb:c:0:0:1', '2001:db8:aa:bb:c::1'],
    // §4.2.1 the example of the RFC
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    // §4.2.2 a single zero group is not compressed
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
    // §4.2.3 the longest run, wherever it is; the leftmost of equal runs
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['0:0:1:0:0:0:0:1', '0:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['0:0:1:1:1:1:0:0', '::1:1:1:1:0:0'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ['fe80::1%eth0', 'fe80::1'],
  ];
  const v1Source = (a: string): string => encodeProxyHeader('v1', ep(a, 1, '2001:db8::ff', 2)).toString('latin1').split(' ')[2]!;
  for (const [given, want] of cases) {
    test(`${given} → ${want}`, () => assert.equal(v1Source(given), want));
  }

  test('agrees with the WHATWG URL serializer (RFC 5952 too) on addresses full of zero runs', () => {
    // a fixed linear congruential source: the same addresses on every run
    let seed = 12345;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      const groups = Array.from({ length: 8 }, () => (next(3) === 0 ? next(0x10000) : 0).toString(16));
      if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') continue; // IPv4-mapped: sent as TCP4
      const given = groups.join(':');
      const url = new URL(`http://[${given}]/`).hostname.slice(1, -1);
      assert.equal(v1Source(given), url, given);
    }
  });
});

describe('version 2 (binary)', () => {
  const cases: { name: string; e: ProxyEndpoints; want: string }[] = [
    {
      // the header HAProxy itself writes for 172.19.0.1:42578 → 172.19.0.3:80
      name: 'TCP over IPv4 (a header as HAProxy writes it)',
      e: ep('172.19.0.1', 42578, '172.19.0.3', 80),
      want: `${SIG} 21 11 00 0c  ac 13 00 01  ac 13 00 03  a6 52  00 50`,
    },
    {
      name: 'TCP over IPv4, the v1 example of the spec',
      e: ep('192.168.0.1', 56324, '192.168.0.11', 443),
      // 56324 = 0xdc04, 443 = 0x01bb
      want: `${SIG} 21 11 00 0c  c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb`,
    },
    {
      name: 'TCP over IPv4 from mapped addresses: sent as AF_INET',
      e: ep('::ffff:10.0.0.1', 1, '::ffff:10.0.0.2', 65535),
      want: `${SIG} 21 11 00 0c  0a 00 00 01  0a 00 00 02  00 01  ff ff`,
    },
    {
      name: 'TCP over IPv6',
      e: ep('2001:db8::1', 1234, '2001:db8::2', 443),
      // length 36 = 0x24; 1234 = 0x04d2
      want: `${SIG} 21 21 00 24  20 01 0d b8 ${ZERO11} 01  20 01 0d b8 ${ZERO11} 02  04 d2  01 bb`,
    },
    {
      name: 'TCP over IPv6, all ones and port 0',
      e: ep('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 0, '::', 0),
      want: `${SIG} 21 21 00 24  ${'ff '.repeat(16)}  ${'00 '.repeat(16)}  00 00  00 00`,
    },
    // §2.2: LOCAL (ver/cmd 0x20), AF_UNSPEC (0x00), no address block (length 0)
    { name: 'LOCAL when an address is unknown', e: ep('', 0, '', 0), want: `${SIG} 20 00 00 00` },
    { name: 'LOCAL when a host is not an IP address', e: ep('10.0.0.1', 5, 'example.com', 80), want: `${SIG} 20 00 00 00` },
    { name: 'LOCAL when the families differ', e: ep('10.0.0.1', 5, '::1', 80), want: `${SIG} 20 00 00 00` },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = encodeProxyHeader('v2', c.e);
      assert.equal(got.toString('hex'), bytes(c.want).toString('hex'));
    });
  }

  test('every v2 header: signature, version 2, and a length that matches the bytes after the 16-byte header', () => {
    for (const e of [ep('1.2.3.4', 1, '5.6.7.8', 2), ep('::1', 1, '::2', 2), ep('x', 0, 'y', 0)]) {
      const h = encodeProxyHeader('v2', e);
      assert.equal(h.subarray(0, 12).toString('hex'), bytes(SIG).toString('hex'));
      assert.equal(h[12]! >> 4, 2, 'version nibble');
      assert.equal(h.readUInt16BE(14), h.length - 16);
    }
  });
});

describe('proxyHeader(version, socket)', () => {
  const sock = (o: Partial<Pick<Socket, 'remoteAddress' | 'remotePort' | 'localAddress' | 'localPort'>>): Socket => o as unknown as Socket;

  test('the client is the source, the balancer side the destination', () => {
    const s = sock({ remoteAddress: '::ffff:203.0.113.7', remotePort: 50000, localAddress: '::ffff:198.51.100.1', localPort: 8080 });
    assert.equal(proxyHeader('v1', s).toString('latin1'), 'PROXY TCP4 203.0.113.7 198.51.100.1 50000 8080\r\n');
    // 50000 = 0xc350, 8080 = 0x1f90
    assert.equal(proxyHeader('v2', s).toString('hex'), bytes(`${SIG} 21 11 00 0c cb 00 71 07 c6 33 64 01 c3 50 1f 90`).toString('hex'));
  });

  test('a socket that lost its addresses gives UNKNOWN / LOCAL', () => {
    const s = sock({});
    assert.equal(proxyHeader('v1', s).toString('latin1'), 'PROXY UNKNOWN\r\n');
    assert.equal(proxyHeader('v2', s).toString('hex'), bytes(`${SIG} 20 00 00 00`).toString('hex'));
  });
});

describe('version 2 TLVs of a terminated connection (section 2.2)', () => {
  const tls = (o: Partial<ProxyTls>): ProxyTls => ({ alpn: null, authority: null, version: 'TLSv1.3', client: 0x01, verify: 1, cn: null, ...o });
  // "TLSv1.3" = 54 4c 53 76 31 2e 33 (7 bytes), "h2" = 68 32, "alice" = 61 6c 69 63 65
  const VERSION13 = '21 00 07 54 4c 53 76 31 2e 33';

  test('a client certificate: the bytes HAProxy 2.6 sends with send-proxy-v2-ssl-cn (captured from haproxy 2.6.12)', () => {
    // ALPN "h2"; SSL: length 23, client 0x07 (SSL | CERT_CONN | CERT_SESS), verify 0, VERSION, CN "alice"
    const want = `01 00 02 68 32  20 00 17 07 00 00 00 00 ${VERSION13} 22 00 05 61 6c 69 63 65`;
    assert.equal(tlsTlvs(tls({ alpn: 'h2', client: 0x07, verify: 0, cn: 'alice' })).toString('hex'), bytes(want).toString('hex'));
  });

  test('no client certificate: PP2_TYPE_SSL still, client 0x01, verify non-zero, no CN', () => {
    // HAProxy 2.6 writes verify 0 here; the spec: zero only for a certificate that was verified
    const want = `20 00 0f 01 00 00 00 01 ${VERSION13}`;
    assert.equal(tlsTlvs(tls({})).toString('hex'), bytes(want).toString('hex'));
  });

  test('the server name as PP2_TYPE_AUTHORITY, after ALPN and before SSL', () => {
    // "db.example" = 64 62 2e 65 78 61 6d 70 6c 65 (10 bytes); "http/1.1" (8 bytes)
    const want = `01 00 08 68 74 74 70 2f 31 2e 31  02 00 0a 64 62 2e 65 78 61 6d 70 6c 65  20 00 0f 01 00 00 00 14 ${VERSION13}`;
    assert.equal(tlsTlvs(tls({ alpn: 'http/1.1', authority: 'db.example', verify: 20 })).toString('hex'), bytes(want).toString('hex'));
  });

  test('a common name in UTF-8; one longer than X.509 allows is left out', () => {
    // "é" = c3 a9
    assert.equal(tlsTlvs(tls({ client: 0x07, verify: 0, cn: 'é' })).toString('hex'), bytes(`20 00 14 07 00 00 00 00 ${VERSION13} 22 00 02 c3 a9`).toString('hex'));
    assert.equal(tlsTlvs(tls({ client: 0x07, verify: 0, cn: 'x'.repeat(65) })).toString('hex'), bytes(`20 00 0f 07 00 00 00 00 ${VERSION13}`).toString('hex'));
  });

  test('appended to the header, counted in its length; the addresses are unchanged', () => {
    const tlvs = tlsTlvs(tls({ alpn: 'h2' }));
    const h = encodeProxyHeader('v2', ep('172.19.0.1', 42578, '172.19.0.3', 80), tlvs);
    assert.equal(h.toString('hex'), bytes(`${SIG} 21 11 00 ${(12 + tlvs.length).toString(16).padStart(2, '0')}  ac 13 00 01  ac 13 00 03  a6 52  00 50`).toString('hex') + tlvs.toString('hex'));
    const v6 = encodeProxyHeader('v2', ep('::1', 1, '::1', 2), tlvs);
    assert.equal(v6.readUInt16BE(14), 36 + tlvs.length);
    assert.ok(v6.subarray(16 + 36).equals(tlvs));
    // LOCAL keeps its TLVs (the receiver may read them); the shared LOCAL header is not changed
    const local = encodeProxyHeader('v2', ep('', 0, '', 0), tlvs);
    assert.equal(local.subarray(0, 16).toString('hex'), bytes(`${SIG} 20 00 00 ${tlvs.length.toString(16).padStart(2, '0')}`).toString('hex'));
    assert.equal(encodeProxyHeader('v2', ep('', 0, '', 0)).toString('hex'), bytes(`${SIG} 20 00 00 00`).toString('hex'));
    // v1 has no TLVs
    assert.equal(encodeProxyHeader('v1', ep('10.0.0.1', 1, '10.0.0.2', 2), tlvs).toString('latin1'), 'PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n');
  });
});
