// The access features end to end through the real balancer: the PROXY header a backend
// receives (v1 and v2, IPv4 and IPv6, byte for byte), per-client rate and connection limits, and
// the allow/deny CIDR lists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { atEnd, startBalancer, startTcpServer, startEcho, startNamed, testConfig, waitFor, type Balancer, type TestServer, type Ends } from '../helpers';

/** A backend that records everything each connection sends it, and answers "ok\n" once the client's "hello\n" has arrived. */
async function recorder(t: Ends): Promise<TestServer & { received: Buffer[] }> {
  const received: Buffer[] = [];
  const srv = await startTcpServer(t, (s) => {
    const chunks: Buffer[] = [];
    const i = received.push(Buffer.alloc(0)) - 1;
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      received[i] = Buffer.concat(chunks);
      if (received[i]!.includes('hello\n')) s.write('ok\n');
    });
    s.on('end', () => s.end());
  });
  return Object.assign(srv, { received });
}

/** Connect (optionally from a given local address), send `line`, wait for "ok". Resolves with the client's own address and port. */
function sendLine(port: number, line: string, host = '127.0.0.1', localAddress?: string): Promise<{ localAddress: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
    s.on('error', reject);
    s.on('connect', () => s.write(line));
    s.on('data', (d: Buffer) => {
      if (String(d).includes('ok')) {
        resolve({ localAddress: s.localAddress!, localPort: s.localPort! });
        s.end();
      }
    });
    setTimeout(() => reject(new Error('no answer')), 5000).unref();
  });
}

const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');
const SIG = '0d0a0d0a000d0a515549540a';
const port16 = (p: number): string => p.toString(16).padStart(4, '0');

function hasIpv6Loopback(): Promise<boolean> {
  return new Promise((r) => {
    const s = net.createServer();
    s.once('error', () => r(false));
    s.listen(0, '::1', () => s.close(() => r(true)));
  });
}

function freePort6(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '::1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => res(p));
    });
  });
}

async function proxyProtocolCase(t: { after(f: () => Promise<void>): void }, version: 'v1' | 'v2', family: 4 | 6): Promise<{ got: Buffer; client: { localAddress: string; localPort: number }; lbPort: number }> {
  const rec = await recorder(t);
  let cfg = testConfig([{ address: rec.address }], { proxy: `proxy_protocol = "${version}"` });
  if (family === 6) cfg = cfg.replace('listen_address = "127.0.0.1:0"', `listen_address = "[::1]:${await freePort6()}"`);
  const lb = await startBalancer(t, cfg);
  const client = await sendLine(lb.port, 'hello\n', family === 6 ? '::1' : '127.0.0.1');
  // the health checker's connections record nothing: take the one that carried the client's line
  return { got: rec.received.find((b) => b.includes('hello'))!, client, lbPort: lb.port };
}

test('proxy_protocol = "v1": the backend reads "PROXY TCP4 <client> <listener> <ports>\\r\\n", then the client\'s bytes', async (t) => {
  const { got, client, lbPort } = await proxyProtocolCase(t, 'v1', 4);
  assert.equal(client.localAddress, '127.0.0.1');
  assert.equal(got.toString('latin1'), `PROXY TCP4 127.0.0.1 127.0.0.1 ${client.localPort} ${lbPort}\r\nhello\n`);
});

test('proxy_protocol = "v2": the backend reads the binary header (PROXY, TCP over IPv4, 12 address bytes), then the client\'s bytes', async (t) => {
  const { got, client, lbPort } = await proxyProtocolCase(t, 'v2', 4);
  const want = Buffer.concat([bytes(`${SIG} 21 11 000c 7f000001 7f000001 ${port16(client.localPort)} ${port16(lbPort)}`), Buffer.from('hello\n')]);
  assert.equal(got.toString('hex'), want.toString('hex'));
});

test('proxy_protocol over IPv6 ([::1]): v1 "PROXY TCP6 …" and v2 with 36 address bytes', async (t) => {
  if (!(await hasIpv6Loopback())) return t.skip('this machine has no IPv6 loopback');
  await t.test('v1', async (t2) => {
    const { got, client, lbPort } = await proxyProtocolCase(t2, 'v1', 6);
    assert.equal(client.localAddress, '::1');
    const text = got.toString('latin1');
    const wants = ['::1 ::1', '0:0:0:0:0:0:0:1 0:0:0:0:0:0:0:1'].map((a) => `PROXY TCP6 ${a} ${client.localPort} ${lbPort}\r\nhello\n`);
    assert.ok(wants.includes(text), `got ${JSON.stringify(text)}`);
  });
  await t.test('v2', async (t2) => {
    const { got, client, lbPort } = await proxyProtocolCase(t2, 'v2', 6);
    const one = '00000000000000000000000000000001';
    const want = Buffer.concat([bytes(`${SIG} 21 21 0024 ${one} ${one} ${port16(client.localPort)} ${port16(lbPort)}`), Buffer.from('hello\n')]);
    assert.equal(got.toString('hex'), want.toString('hex'));
  });
});

test('proxy_protocol = "off" (the default) sends the client\'s bytes only', async (t) => {
  const rec = await recorder(t);
  const lb = await startBalancer(t, testConfig([{ address: rec.address }]));
  await sendLine(lb.port, 'hello\n');
  assert.deepEqual(rec.received.filter((b) => b.length > 0).map(String), ['hello\n']);
});

// -------------------------------------------------------------------------------------------
// Limits and ACL. A refused client is closed at once without a byte; an admitted one gets the
// backend's greeting.

async function rejected(b: Balancer, reason: string): Promise<number> {
  const text = (await b.admin('/metrics')).body;
  const m = new RegExp(`^lemonade_connections_rejected_total\\{service="default",reason="${reason}"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Open one connection; "in" when the backend's greeting arrives, "out" when closed without a byte (and how fast). */
function knock(port: number, localAddress?: string, host = '127.0.0.1'): Promise<{ result: 'in' | 'out'; ms: number; socket: net.Socket }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
    s.on('error', () => {});
    s.once('data', () => resolve({ result: 'in', ms: Date.now() - t0, socket: s }));
    s.once('close', () => resolve({ result: 'out', ms: Date.now() - t0, socket: s }));
    setTimeout(() => resolve({ result: 'out', ms: Infinity, socket: s }), 5000).unref();
  });
}

test('client_rate_limit = "5/s": a burst of 20 from one address gets 5 through, the rest closed at once and counted as rate_limit', async (t) => {
  const named = await startNamed(t, 'n');
  const lb = await startBalancer(t, testConfig([{ address: named.address }], { proxy: 'client_rate_limit = "5/s"' }));
  const socks: net.Socket[] = [];
  atEnd(t, () => {
    for (const s of socks) s.destroy();
  });
  const results = await Promise.all(Array.from({ length: 20 }, () => knock(lb.port)));
  socks.push(...results.map((r) => r.socket));
  const admitted = results.filter((r) => r.result === 'in').length;
  const out = results.filter((r) => r.result === 'out');
  t.diagnostic(`rate limit 5/s: of a burst of 20, ${admitted} admitted, ${out.length} refused in ≤ ${Math.max(...out.map((r) => r.ms))} ms`);
  // the bucket starts full (5) and refills 1 per 200 ms: a burst that takes < 200 ms admits 5 or 6
  assert.ok(admitted >= 5 && admitted <= 6, `admitted ${admitted}`);
  assert.ok(out.every((r) => r.ms < 1000), 'refused at once');
  assert.equal(await rejected(lb, 'rate_limit'), out.length);
  // another address has its own bucket
  const other = await knock(lb.port, '127.0.0.2');
  socks.push(other.socket);
  assert.equal(other.result, 'in');
  // and the first one's bucket refills
  await new Promise((r) => setTimeout(r, 450));
  const again = await knock(lb.port);
  socks.push(again.socket);
  assert.equal(again.result, 'in');
});

test('client_max_connections = 3: a fourth concurrent connection from one address is refused at once; closing one makes room', async (t) => {
  const named = await startNamed(t, 'n');
  const lb = await startBalancer(t, testConfig([{ address: named.address }], { proxy: 'client_max_connections = 3' }));
  const socks: net.Socket[] = [];
  atEnd(t, () => {
    for (const s of socks) s.destroy();
  });
  const held = [];
  for (let i = 0; i < 3; i++) held.push(await knock(lb.port));
  socks.push(...held.map((h) => h.socket));
  assert.deepEqual(held.map((h) => h.result), ['in', 'in', 'in']);
  const extra = await Promise.all([knock(lb.port), knock(lb.port)]);
  socks.push(...extra.map((h) => h.socket));
  assert.deepEqual(extra.map((h) => h.result), ['out', 'out']);
  assert.ok(extra.every((h) => h.ms < 1000));
  // counted apart from the rate limit's refusals
  assert.equal(await rejected(lb, 'client_limit'), 2);
  assert.equal(await rejected(lb, 'rate_limit'), 0);
  // another address is independent
  const other = await knock(lb.port, '127.0.0.3');
  socks.push(other.socket);
  assert.equal(other.result, 'in');
  // a held one closes (both sides): room for exactly one more
  held[0]!.socket.end();
  await waitFor(async () => (await knock(lb.port).then((k) => (socks.push(k.socket), k.result))) === 'in', 5000, 'a slot to free up', 100);
  assert.equal((await knock(lb.port).then((k) => (socks.push(k.socket), k))).result, 'out');
});

test('many client addresses with limits on: 200 addresses each get their own bucket (none refused)', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { proxy: 'client_rate_limit = "1/s"\nclient_max_connections = 1' }));
  // 200 distinct loopback addresses, one connection each, closed after the echo
  let ok = 0;
  for (let i = 0; i < 200; i++) {
    const addr = `127.0.1.${i + 1}`;
    const r = await new Promise<boolean>((res) => {
      const s = net.connect({ host: '127.0.0.1', port: lb.port, localAddress: addr });
      s.on('error', () => res(false));
      s.on('connect', () => s.end('x'));
      s.on('data', () => res(true));
      s.on('close', () => res(false));
    });
    if (r) ok++;
  }
  assert.equal(ok, 200);
  assert.equal(await rejected(lb, 'rate_limit'), 0);
});

test('allow/deny: allow = ["127.0.0.0/8"] with deny = ["127.0.0.2/32"] admits 127.0.0.1, refuses 127.0.0.2 at once (reason acl)', async (t) => {
  const named = await startNamed(t, 'n');
  const lb = await startBalancer(t, testConfig([{ address: named.address }], { proxy: 'allow = ["127.0.0.0/8"]\ndeny = ["127.0.0.2/32"]' }));
  const socks: net.Socket[] = [];
  atEnd(t, () => {
    for (const s of socks) s.destroy();
  });
  const a = await knock(lb.port, '127.0.0.1');
  const d = await knock(lb.port, '127.0.0.2');
  const c = await knock(lb.port, '127.0.0.3');
  socks.push(a.socket, d.socket, c.socket);
  assert.deepEqual([a.result, d.result, c.result], ['in', 'out', 'in']);
  assert.ok(d.ms < 1000);
  assert.equal(await rejected(lb, 'acl'), 1);
});

test('allow = ["10.0.0.0/8"]: a loopback client is outside it and refused; an IPv6 deny list leaves IPv4 clients alone', async (t) => {
  const named = await startNamed(t, 'n');
  const lb = await startBalancer(t, testConfig([{ address: named.address }], { proxy: 'allow = ["10.0.0.0/8"]' }));
  const lb6 = await startBalancer(t, testConfig([{ address: named.address }], { proxy: 'deny = ["::1/128", "2001:db8::/32"]' }));
  const socks: net.Socket[] = [];
  atEnd(t, () => {
    for (const s of socks) s.destroy();
  });
  const r = await knock(lb.port);
  const r6 = await knock(lb6.port);
  socks.push(r.socket, r6.socket);
  assert.equal(r.result, 'out');
  assert.equal(await rejected(lb, 'acl'), 1);
  assert.equal(r6.result, 'in');
  assert.equal(await rejected(lb6, 'acl'), 0);
});

test('deny = ["::1/128"] refuses an IPv6 loopback client', async (t) => {
  if (!(await hasIpv6Loopback())) return t.skip('this machine has no IPv6 loopback');
  const named = await startNamed(t, 'n');
  const cfg = testConfig([{ address: named.address }], { proxy: 'deny = ["::1/128"]' }).replace('listen_address = "127.0.0.1:0"', `listen_address = "[::1]:${await freePort6()}"`);
  const lb = await startBalancer(t, cfg);
  const socks: net.Socket[] = [];
  atEnd(t, () => {
    for (const s of socks) s.destroy();
  });
  const r = await knock(lb.port, undefined, '::1');
  socks.push(r.socket);
  assert.equal(r.result, 'out');
  assert.equal(await rejected(lb, 'acl'), 1);
});
