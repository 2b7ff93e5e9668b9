// The bounds of UDP flows: the refused clients a socket remembers (capped, oldest out, expiring),
// the flows a listener keeps (max_connections), and the datagrams one flow holds while its
// backend socket connects (MAX_PENDING, the rest dropped and counted). In process, over loopback.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { parseAndValidate } from '../../src/config/load';
import { Snapshot } from '../../src/core/snapshot';
import { LoadTable } from '../../src/core/stats';
import { STRATEGIES } from '../../src/strategy/index';
import { ProxyListener } from '../../src/proxy/listener';
import type { ProxyObserver, SessionEnd } from '../../src/proxy/events';
import { FlowTable } from '../../src/proxy/udp-flows';
import { MAX_PENDING } from '../../src/proxy/transport-udp';

test('FlowTable: a flow is forgotten only by itself; refused clients expire and are capped, oldest first', () => {
  const t = new FlowTable<object>(3);
  const a = {};
  const b = {};
  t.add('1.2.3.4:5', a);
  t.add('1.2.3.4:5', b); // a new flow of the same client replaced the first
  t.delete('1.2.3.4:5', a);
  assert.equal(t.get('1.2.3.4:5'), b);
  t.delete('1.2.3.4:5', b);
  assert.equal(t.size, 0);

  t.refuse('c1', 1100, 1000);
  assert.equal(t.isRefused('c1', 1099), true);
  assert.equal(t.isRefused('c1', 1100), false, 'expired');
  assert.equal(t.refusedSize, 0, 'an expired refusal is forgotten when asked');
  for (let i = 0; i < 10; i++) t.refuse(`c${i}`, 5000 + i, 2000);
  assert.equal(t.refusedSize, 3, 'capped');
  assert.deepEqual([0, 6, 7, 8, 9].map((i) => t.isRefused(`c${i}`, 2000)), [false, false, true, true, true], 'the newest kept');
  // refusing again sweeps those that expired at the front
  t.refuse('late', 9000, 5008);
  assert.equal(t.refusedSize, 2);
  assert.deepEqual(['c9', 'late'].map((k) => t.isRefused(k, 5008)), [true, true]);
});

interface World {
  listener: ProxyListener;
  ends: SessionEnd[];
  rejected: string[];
  port: number;
}

/** An in-process listener of one UDP service to `backend`, with these [proxy] lines. */
async function world(t: { after(f: () => unknown): void }, backend: string, proxy: string, weight = 1): Promise<World> {
  const r = parseAndValidate(`[proxy]\nlisten_address = "127.0.0.1:1"\nprotocol = "udp"\n${proxy}\n[strategy]\nalgorithm = "round_robin"\n[[backends]]\naddress = "${backend}"\nweight = ${weight}\n`, {});
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  const snap = new Snapshot(r.config, 1, new LoadTable(() => Date.now()), { now: () => Date.now(), random: Math.random, strategies: STRATEGIES });
  const ends: SessionEnd[] = [];
  const rejected: string[] = [];
  const observer: ProxyObserver = {
    logSample: 1,
    rejected: (reason, _remote, _service, logClient) => rejected.push(`${reason} ${logClient}`),
    connectFailed: () => {},
    connected: () => {},
    closed: (e) => ends.push({ ...e, udp: e.udp ? { datagramsIn: e.udp.datagramsIn, datagramsOut: e.udp.datagramsOut, datagramsDropped: e.udp.datagramsDropped } : null, termination: e.termination }),
    acceptError: () => {},
  };
  const listener = new ProxyListener({ current: () => snap, observer, now: () => Date.now(), raw: false });
  await listener.listen('127.0.0.1:1', { host: '127.0.0.1', port: 0 }, true);
  t.after(async () => {
    await listener.close();
    await listener.registry.drain(0);
  });
  return { listener, ends, rejected, port: Number(listener.address.split(':')[1]) };
}

/** A UDP echo server on 127.0.0.1, closed when the test ends. */
async function echo(t: { after(f: () => unknown): void }): Promise<number> {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((res) => s.bind(0, '127.0.0.1', res));
  t.after(() => s.close());
  return s.address().port;
}

async function client(t: { after(f: () => unknown): void }): Promise<{ sock: dgram.Socket; got: Buffer[] }> {
  const sock = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  sock.on('message', (m) => got.push(m));
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', res));
  t.after(() => sock.close());
  return { sock, got };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('max_connections bounds the flows: the next client is refused once, whatever it sends, and takes no state but its refusal', async (t) => {
  const port = await echo(t);
  const w = await world(t, `127.0.0.1:${port}`, 'max_connections = 2\nudp_idle_timeout = "5s"');
  const cs = [await client(t), await client(t), await client(t)];
  for (const c of cs.slice(0, 2)) c.sock.send('hello', w.port, '127.0.0.1');
  await until(() => cs[0]!.got.length === 1 && cs[1]!.got.length === 1, 'two echoes');
  for (let i = 0; i < 5; i++) cs[2]!.sock.send(`more ${i}`, w.port, '127.0.0.1');
  await until(() => w.rejected.length === 1, 'the refusal');
  // a datagram of a flow that is open still passes, after the refused ones were read
  cs[0]!.sock.send('again', w.port, '127.0.0.1');
  await until(() => cs[0]!.got.length === 2, 'the second echo');
  assert.deepEqual(w.rejected, [`max_connections 127.0.0.1:${cs[2]!.sock.address().port}`]);
  assert.equal(cs[2]!.got.length, 0);
  assert.equal(w.listener.registry.size, 2);
  assert.deepEqual([...w.listener.openByService()], [['default', 2]]);
});

test('a flow holds at most MAX_PENDING datagrams while its backend socket connects; the rest are dropped and counted', async (t) => {
  const port = await echo(t);
  // a host name: the flow's backend socket waits for its lookup while the burst is read
  const w = await world(t, `localhost:${port}`, 'udp_idle_timeout = "200ms"');
  const c = await client(t);
  const n = 20;
  for (let i = 0; i < n; i++) c.sock.send(`d${i}`, w.port, '127.0.0.1');
  await until(() => w.ends.length === 1, 'the flow to end idle');
  const e = w.ends[0]!;
  assert.equal(e.termination, 'udp_idle');
  assert.deepEqual(e.udp, { datagramsIn: 1 + MAX_PENDING, datagramsOut: 1 + MAX_PENDING, datagramsDropped: n - 1 - MAX_PENDING });
  assert.deepEqual(c.got.map(String), Array.from({ length: 1 + MAX_PENDING }, (_, i) => `d${i}`), 'in order, unchanged');
  assert.equal(w.listener.registry.size, 0);
});

test('a flow no backend takes ends once (no_backend), and the client\'s next datagrams are dropped, not a flow each', async (t) => {
  const port = await echo(t);
  const w = await world(t, `127.0.0.1:${port}`, '', 0);
  const c = await client(t);
  for (let i = 0; i < 5; i++) c.sock.send(`d${i}`, w.port, '127.0.0.1');
  await until(() => w.ends.length === 1, 'the flow to end');
  // another client's datagram after them: once it has ended, all five were read
  const other = await client(t);
  other.sock.send('x', w.port, '127.0.0.1');
  await until(() => w.ends.length === 2, 'the second client');
  assert.deepEqual(w.ends.map((e) => [e.termination, e.logClient]), [
    ['no_backend', `127.0.0.1:${c.sock.address().port}`],
    ['no_backend', `127.0.0.1:${other.sock.address().port}`],
  ]);
  assert.equal(w.listener.registry.size, 0);
});
