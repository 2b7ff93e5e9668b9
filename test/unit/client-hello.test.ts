// The ClientHello reader (src/proxy/client-hello.ts), table-driven: ClientHellos built here field
// by field (every case's bytes are made in this file), cut into records and fed in pieces, and
// real ones made by node:tls and by `openssl s_client` (captured on a local socket).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { spawn, spawnSync } from 'node:child_process';
import { readClientHello, MAX_HELLO_BYTES, type HelloResult } from '../../src/proxy/client-hello';
import { requireTool } from '../helpers';
import { alpnExt, ext, grease, handshake, records, sniExt, supportedVersions, u24 } from '../tls-helpers';

/** Feed `bytes` in pieces of `step`, as a socket would deliver them: the answer once it is not need-more. */
function feed(bytes: Buffer, step: number): { result: HelloResult; at: number } {
  const acc = Buffer.alloc(bytes.length);
  for (let at = 0; at < bytes.length; ) {
    const n = Math.min(step, bytes.length - at);
    bytes.copy(acc, at, at, at + n);
    at += n;
    const r = readClientHello(acc, at);
    if (r.kind !== 'need-more') return { result: r, at };
  }
  return { result: readClientHello(acc, bytes.length), at: bytes.length };
}

const hello = (serverName: string | null, alpn: string[] = []): HelloResult => ({ kind: 'hello', serverName, alpn });

const STANDARD = handshake([grease(0), sniExt('API.Example.COM'), supportedVersions, alpnExt(['h2', 'http/1.1']), grease(3)]);

describe('readClientHello: built ClientHellos', () => {
  const cases: [string, Buffer, HelloResult][] = [
    ['one record, name lower-cased, ALPN', records(STANDARD), hello('api.example.com', ['h2', 'http/1.1'])],
    ['server_name last', records(handshake([supportedVersions, alpnExt(['h2']), sniExt('a.example.org')])), hello('a.example.org', ['h2'])],
    ['server_name first', records(handshake([sniExt('a.example.org'), supportedVersions])), hello('a.example.org')],
    ['GREASE extensions around it', records(handshake([grease(1), grease(2), sniExt('g.example'), grease(4)])), hello('g.example')],
    ['a trailing dot is dropped', records(handshake([sniExt('dot.example.')])), hello('dot.example')],
    ['no server_name: no name', records(handshake([supportedVersions, alpnExt(['h2'])])), hello(null, ['h2'])],
    ['no extensions at all', records(handshake(null)), hello(null)],
    ['empty session id', records(handshake([sniExt('s.example')], 0)), hello('s.example')],
    ['handshake over records of 50 bytes', records(STANDARD, 50), hello('api.example.com', ['h2', 'http/1.1'])],
    ['handshake over records of 1 byte', records(STANDARD, 1), hello('api.example.com', ['h2', 'http/1.1'])],
    ['handshake over records of 3 bytes (header split)', records(STANDARD, 3), hello('api.example.com', ['h2', 'http/1.1'])],
    ['followed by other bytes', Buffer.concat([records(STANDARD), Buffer.from('extra')]), hello('api.example.com', ['h2', 'http/1.1'])],
    // TLS 1.3 early data (or any record) right behind a ClientHello split over records
    ['split over records, then an application-data record', Buffer.concat([records(STANDARD, 50), Buffer.from([0x17, 0x03, 0x03, 0x00, 0x02, 1, 2])]), hello('api.example.com', ['h2', 'http/1.1'])],
    ['split over records, then a record of impossible length', Buffer.concat([records(STANDARD, 50), Buffer.from([0x16, 0x03, 0x03, 0x00, 0x00])]), hello('api.example.com', ['h2', 'http/1.1'])],
  ];
  for (const [name, bytes, want] of cases) {
    test(name, () => {
      assert.deepEqual(readClientHello(bytes), want);
      // the same answer however the bytes arrive: whole, in TCP-like segments, one byte at a time
      for (const step of [1, 7, 100]) assert.deepEqual(feed(bytes, step).result, want, `step ${step}`);
    });
  }

  test('every prefix of a ClientHello is need-more, and the answer comes with its last byte', () => {
    const bytes = records(STANDARD, 40);
    for (let n = 0; n < bytes.length; n++) assert.equal(readClientHello(bytes, n).kind, 'need-more', `prefix ${n}`);
    assert.equal(feed(bytes, 1).at, bytes.length);
  });
});

describe('readClientHello: what is not a usable ClientHello', () => {
  const big = handshake([sniExt('big.example'), ext(21, new Array<number>(MAX_HELLO_BYTES).fill(0))]);
  const truncatedExt = (() => {
    const hs = handshake([sniExt('t.example')]);
    hs.splice(hs.length - 4, 4); // four bytes of the name cut, lengths unchanged...
    const bodyLen = hs.length - 4;
    hs.splice(1, 3, ...u24(bodyLen)); // ...but the handshake length says what is there
    return records(hs);
  })();
  const cases: [string, Buffer, HelloResult['kind']][] = [
    ['HTTP', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'not-tls'],
    ['a server-first protocol client saying nothing yet', Buffer.alloc(0), 'need-more'],
    ['SSLv2-style hello (2-byte length, top bit set)', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15]), 'not-tls'],
    ['handshake type byte then not TLS 3.x', Buffer.from([0x16, 0x02, 0x00]), 'not-tls'],
    ['an application-data record', Buffer.from([0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]), 'not-tls'],
    ['a ServerHello, not a ClientHello', records([2, ...u24(2), 3, 3]), 'malformed'],
    ['record length 0', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]), 'malformed'],
    ['record longer than TLS allows', Buffer.from([0x16, 0x03, 0x01, 0x48, 0x01]), 'malformed'],
    ['extension running past the hello', truncatedExt, 'malformed'],
    ['a ClientHello larger than 16 KiB', records(big), 'too-large'],
    ['split, and an alert record in the middle', Buffer.concat([records(STANDARD, 20).subarray(0, 25), Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 2, 40])]), 'malformed'],
  ];
  for (const [name, bytes, want] of cases) {
    test(name, () => {
      assert.equal(readClientHello(bytes).kind, want);
    });
  }

  test('a truncated ClientHello stays need-more (the caller bounds it by time and size)', () => {
    const bytes = records(STANDARD);
    assert.equal(readClientHello(bytes.subarray(0, bytes.length - 1)).kind, 'need-more');
  });

  test('a server name over 255 bytes is no name (a hello without one), whatever its bytes', () => {
    const n255 = `${'a'.repeat(243)}.example.org`;
    assert.deepEqual(readClientHello(records(handshake([sniExt(n255)]))), hello(n255));
    assert.deepEqual(readClientHello(records(handshake([sniExt(`x${n255}`)]))), hello(null));
    const huge = `${'a.'.repeat(8120)}a`;
    assert.deepEqual(readClientHello(records(handshake([sniExt(huge), alpnExt(['h2'])]))), hello(null, ['h2']));
    assert.deepEqual(feed(records(handshake([sniExt(huge)]), 1000), 333).result, hello(null));
    // too long is no name even when its bytes would not make one
    assert.deepEqual(readClientHello(records(handshake([sniExt('\u0001'.repeat(300))]))), hello(null));
  });

  test('a name with a control byte is malformed, not a name', () => {
    assert.equal(readClientHello(records(handshake([sniExt('bad\u0001name')]))).kind, 'malformed');
  });
});

/** The first bytes a TLS client sends to a socket that never answers, until they are a whole ClientHello. */
async function capture(connect: (port: number) => { stop(): void }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let client: { stop(): void } | null = null;
  const server = net.createServer();
  const got = new Promise<Buffer>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no whole ClientHello within 10 s')), 10_000);
    server.on('connection', (s) => {
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        if (readClientHello(all).kind !== 'need-more') {
          clearTimeout(t);
          s.destroy();
          resolve(all);
        }
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    client = connect((server.address() as net.AddressInfo).port);
    return await got;
  } finally {
    client?.stop();
    server.close();
  }
}

describe('readClientHello: real clients', () => {
  test('node:tls with servername and ALPN', async () => {
    const bytes = await capture((port) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'Node.Example.NET', ALPNProtocols: ['h2', 'http/1.1'] });
      s.on('error', () => {});
      return { stop: () => s.destroy() };
    });
    assert.deepEqual(readClientHello(bytes), hello('node.example.net', ['h2', 'http/1.1']));
    assert.deepEqual(feed(bytes, 1).result, hello('node.example.net', ['h2', 'http/1.1']));
  });

  test('node:tls without servername (an IP address): no name', async () => {
    const bytes = await capture((port) => {
      const s = tls.connect({ host: '127.0.0.1', port });
      s.on('error', () => {});
      return { stop: () => s.destroy() };
    });
    const r = readClientHello(bytes);
    assert.equal(r.kind, 'hello');
    assert.equal(r.kind === 'hello' && r.serverName, null);
  });

  const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
  test('openssl s_client -servername -alpn', async (t) => {
    if (!requireTool(t, 'openssl', haveOpenssl)) return;
    const bytes = await capture((port) => {
      const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'shop.example.org', '-alpn', 'h2,http/1.1'], { stdio: ['pipe', 'ignore', 'ignore'] });
      return { stop: () => p.kill() };
    });
    assert.deepEqual(readClientHello(bytes), hello('shop.example.org', ['h2', 'http/1.1']));
  });
});
