// host:port, IP and CIDR parsing and matching (src/config/address.ts).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseHostPort, formatHostPort, parseIp, parseCidr, cidrContains, type Cidr } from '../../src/config/address';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function cidr(s: string): Cidr {
  const c = parseCidr(s);
  if (typeof c === 'string') assert.fail(`test setup: ${s}: ${c}`);
  return c;
}

describe('parseHostPort', () => {
  const good: [string, string, number][] = [
    ['10.0.0.1:80', '10.0.0.1', 80],
    ['localhost:8080', 'localhost', 8080],
    ['my-host.example.com:1', 'my-host.example.com', 1],
    ['under_score:65535', 'under_score', 65535],
    ['0.0.0.0:8080', '0.0.0.0', 8080],
    ['[::]:8080', '::', 8080],
    ['[::1]:80', '::1', 80],
    ['[2001:db8::1]:443', '2001:db8::1', 443],
    ['[::ffff:10.0.0.1]:80', '::ffff:10.0.0.1', 80],
    ['[fe80::1%eth0]:80', 'fe80::1%eth0', 80],
    ['  10.0.0.1:80  ', '10.0.0.1', 80],
    ['h:00080', 'h', 80],
  ];
  for (const [s, host, port] of good) {
    test(`${JSON.stringify(s)} → ${host} ${port}`, () => {
      assert.deepEqual(parseHostPort(s), { host, port });
    });
  }

  const bad: [string, string[]][] = [
    ['10.0.0.1', ['host:port']],
    ['', ['host:port']],
    [':80', ['with a host']],
    ['h:', ['port', '1 to 65535']],
    ['h:0', ['1 to 65535', '0']],
    ['h:65536', ['1 to 65535', '65536']],
    ['h:999999', ['1 to 65535']],
    ['h:-1', ['port']],
    ['h:8o', ['port']],
    ['h:80 80', ['port']],
    ['::1:80', ['IPv6', 'brackets', '"[::1]:80"']],
    ['2001:db8::1:443', ['brackets', '[2001:db8::1]:443']],
    ['::', ['brackets']],
    ['[::1]', ['[ipv6]:port']],
    ['[::1', ['[ipv6]:port']],
    ['[::1]80', ['[ipv6]:port']],
    ['[::1]:', ['port']],
    ['[::1]:0', ['1 to 65535']],
    ['[nope]:80', ['"nope" is not an IPv6 address']],
    ['[1::2::3]:80', ['not an IPv6 address']],
    ['bad host:80', ['not a valid host']],
    ['h/x:80', ['not a valid host']],
  ];
  for (const [s, words] of bad) {
    test(`${JSON.stringify(s)} is an error`, () => {
      const r = parseHostPort(s);
      assert.equal(typeof r, 'string', `got ${JSON.stringify(r)}`);
      for (const w of words) assert.ok((r as string).includes(w), `${JSON.stringify(r)} lacks ${JSON.stringify(w)}`);
    });
  }

  test('port 0 only when allowPortZero is asked for (a worker binding a free port)', () => {
    assert.equal(typeof parseHostPort('127.0.0.1:0'), 'string');
    assert.deepEqual(parseHostPort('127.0.0.1:0', true), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseHostPort('[::1]:0', true), { host: '::1', port: 0 });
    assert.equal(typeof parseHostPort('127.0.0.1:65536', true), 'string');
    assert.equal(typeof parseHostPort('127.0.0.1:', true), 'string');
  });

  test('formatHostPort puts IPv6 hosts in brackets', () => {
    assert.equal(formatHostPort({ host: '10.0.0.1', port: 80 }), '10.0.0.1:80');
    assert.equal(formatHostPort({ host: 'localhost', port: 1 }), 'localhost:1');
    assert.equal(formatHostPort({ host: '::1', port: 80 }), '[::1]:80');
    assert.equal(formatHostPort({ host: '2001:db8::1', port: 65535 }), '[2001:db8::1]:65535');
  });

  test('parse → format → parse is stable', () => {
    for (const s of ['10.0.0.1:80', '[::1]:80', 'example.com:443', '[2001:db8::1]:8080']) {
      const hp = parseHostPort(s);
      assert.ok(typeof hp !== 'string');
      assert.equal(formatHostPort(hp), s);
      assert.deepEqual(parseHostPort(formatHostPort(hp)), hp);
    }
  });
});

describe('parseIp', () => {
  // expected: [v4 flag, 16 bytes as hex] or null
  const cases: [string, boolean, string][] = [
    ['1.2.3.4', true, '00000000000000000000ffff01020304'],
    ['0.0.0.0', true, '00000000000000000000ffff00000000'],
    ['255.255.255.255', true, '00000000000000000000ffffffffffff'],
    ['192.168.0.1', true, '00000000000000000000ffffc0a80001'],
    [' 10.0.0.1 ', true, '00000000000000000000ffff0a000001'],
    ['::', false, '00000000000000000000000000000000'],
    ['::1', false, '00000000000000000000000000000001'],
    ['1::', false, '00010000000000000000000000000000'],
    ['2001:db8::1', false, '20010db8000000000000000000000001'],
    ['2001:DB8::A', false, '20010db800000000000000000000000a'],
    ['2001:db8:0:0:1:0:0:1', false, '20010db8000000000001000000000001'],
    ['1:2:3:4:5:6:7:8', false, '00010002000300040005000600070008'],
    ['1:2:3:4:5:6:7::', false, '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', false, '00000002000300040005000600070008'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false, 'ffffffffffffffffffffffffffffffff'],
    ['fe80::1%eth0', false, 'fe800000000000000000000000000001'],
    // embedded IPv4
    ['::ffff:1.2.3.4', true, '00000000000000000000ffff01020304'],
    ['::FFFF:192.168.0.1', true, '00000000000000000000ffffc0a80001'],
    ['0:0:0:0:0:ffff:10.0.0.1', true, '00000000000000000000ffff0a000001'],
    ['::ffff:0a00:0001', true, '00000000000000000000ffff0a000001'],
    ['64:ff9b::192.0.2.33', false, '0064ff9b0000000000000000c0000221'],
    ['::1.2.3.4', false, '00000000000000000000000001020304'],
    ['1:2:3:4:5:6:1.2.3.4', false, '00010002000300040005000601020304'],
  ];
  for (const [s, v4, bytes] of cases) {
    test(`${JSON.stringify(s)}`, () => {
      const ip = parseIp(s);
      assert.ok(ip, `${s} should parse`);
      assert.equal(ip.v4, v4);
      assert.equal(hex(ip.bytes), bytes);
      assert.equal(ip.bytes.length, 16);
    });
  }

  const invalid = [
    '',
    'abc',
    'localhost',
    '1.2.3',
    '1.2.3.4.5',
    '256.0.0.1',
    '1.2.3.-4',
    '1.2.3.4/8',
    '1..2.3',
    ':',
    ':::',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8::',
    '12345::',
    'g::1',
    '::1.2.3',
    '::256.1.1.1',
    '::1.2.3.4:5',
    '1:2:3:4:5:6:7:1.2.3.4',
  ];
  for (const s of invalid) {
    test(`${JSON.stringify(s)} is not an IP`, () => {
      assert.equal(parseIp(s), null);
    });
  }
});

describe('parseCidr', () => {
  const good: [string, number, string][] = [
    ['10.0.0.0/8', 104, '00000000000000000000ffff0a000000'],
    ['0.0.0.0/0', 96, '00000000000000000000ffff00000000'],
    ['1.2.3.4/32', 128, '00000000000000000000ffff01020304'],
    ['1.2.3.4', 128, '00000000000000000000ffff01020304'],
    ['::/0', 0, '00000000000000000000000000000000'],
    ['::1/128', 128, '00000000000000000000000000000001'],
    ['::1', 128, '00000000000000000000000000000001'],
    ['2001:db8::/32', 32, '20010db8000000000000000000000000'],
  ];
  for (const [s, bits, bytes] of good) {
    test(`${s} → /${bits} over 128 bits`, () => {
      const c = cidr(s);
      assert.equal(c.text, s);
      assert.equal(c.bits, bits);
      assert.equal(hex(c.bytes), bytes);
    });
  }

  const bad: [string, string[]][] = [
    ['10.0.0.0/33', ['prefix length', '0 to 32']],
    ['10.0.0.0/', ['prefix length']],
    ['10.0.0.0/-1', ['prefix length']],
    ['10.0.0.0/8/8', ['prefix length']],
    ['10.0.0.0/x', ['prefix length']],
    ['10.0.0.0/1000', ['prefix length']],
    ['::/129', ['prefix length', '0 to 128']],
    ['2001:db8::/ 32', ['prefix length']],
    ['nonsense/8', ['not an IP address or CIDR block']],
    ['300.0.0.0/8', ['not an IP address']],
    ['', ['not an IP address']],
    ['/8', ['not an IP address']],
  ];
  for (const [s, words] of bad) {
    test(`${JSON.stringify(s)} is an error`, () => {
      const r = parseCidr(s);
      assert.equal(typeof r, 'string', `got ${JSON.stringify(r)}`);
      for (const w of words) assert.ok((r as string).includes(w), `${JSON.stringify(r)} lacks ${JSON.stringify(w)}`);
    });
  }

  test('an IPv4-mapped block written in IPv6 notation takes an IPv6 prefix length', () => {
    const c = parseCidr('::ffff:10.0.0.0/104');
    assert.notEqual(typeof c, 'string', `got ${JSON.stringify(c)}`);
    const block = c as Cidr;
    assert.equal(block.bits, 104);
    assert.equal(cidrContains(block, parseIp('10.200.1.1')!), true);
    assert.equal(cidrContains(block, parseIp('11.0.0.1')!), false);
  });
});

describe('cidrContains', () => {
  const cases: [string, string, boolean][] = [
    ['10.0.0.0/8', '10.0.0.0', true],
    ['10.0.0.0/8', '10.255.255.255', true],
    ['10.0.0.0/8', '11.0.0.0', false],
    ['10.0.0.0/8', '9.255.255.255', false],
    ['192.168.1.0/24', '192.168.1.77', true],
    ['192.168.1.0/24', '192.168.2.1', false],
    ['10.0.0.0/12', '10.15.255.255', true],
    ['10.0.0.0/12', '10.16.0.0', false],
    ['128.0.0.0/1', '200.1.1.1', true],
    ['128.0.0.0/1', '127.255.255.255', false],
    ['10.1.2.3/8', '10.200.0.0', true], // host bits in the block are ignored
    // /32 and a bare address
    ['1.2.3.4/32', '1.2.3.4', true],
    ['1.2.3.4/32', '1.2.3.5', false],
    ['1.2.3.4', '1.2.3.4', true],
    ['1.2.3.4', '1.2.3.5', false],
    // /0
    ['0.0.0.0/0', '1.2.3.4', true],
    ['0.0.0.0/0', '255.255.255.255', true],
    ['0.0.0.0/0', '2001:db8::1', false],
    ['0.0.0.0/0', '::1', false],
    ['::/0', '2001:db8::1', true],
    ['::/0', '1.2.3.4', true],
    // IPv6
    ['::1/128', '::1', true],
    ['::1/128', '::2', false],
    ['::1', '0:0:0:0:0:0:0:1', true],
    ['2001:db8::/32', '2001:db8:ffff:ffff::1', true],
    ['2001:db8::/32', '2001:db9::', false],
    ['2001:db8::/33', '2001:db8:7fff::1', true],
    ['2001:db8::/33', '2001:db8:8000::1', false],
    ['fe80::/10', 'febf::1', true],
    ['fe80::/10', 'fec0::1', false],
    // IPv4-mapped IPv6 client addresses (as node reports on a dual-stack socket) match IPv4 blocks
    ['10.0.0.0/8', '::ffff:10.1.2.3', true],
    ['10.0.0.0/8', '::ffff:11.1.2.3', false],
    ['1.2.3.4/32', '::ffff:1.2.3.4', true],
    ['1.2.3.4', '::ffff:0102:0304', true],
    // IPv4-compatible (deprecated) is not IPv4
    ['1.2.3.0/24', '::1.2.3.4', false],
    // an IPv4 block does not match an IPv6 address with the same low bytes
    ['10.0.0.0/8', '::a00:1', false],
  ];
  for (const [block, ip, want] of cases) {
    test(`${block} ${want ? 'contains' : 'does not contain'} ${ip}`, () => {
      const addr = parseIp(ip);
      assert.ok(addr, `test setup: ${ip}`);
      assert.equal(cidrContains(cidr(block), addr), want);
    });
  }
});
