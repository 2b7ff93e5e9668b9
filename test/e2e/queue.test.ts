// The queue at the cap (queue_timeout, queue_max) against a running balancer, on both relays: a
// backend with max_connections = 2 that holds every connection until the test lets it go; the
// clients past the cap wait (lemonade_queue_length), are served first come first served as slots
// free, with what they sent while waiting delivered first; the rest end as queue_timeout; a full
// queue refuses (no_backend); a waiting client that hangs up leaves the queue; without
// queue_timeout the refusal is as before.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { freePort, startBalancer, startTcpServer, tempDir, testConfig, waitFor, type Balancer, type Ends } from '../helpers';
import { accessLogTable, closed, open, samples, waitLine } from '../access-log-helpers';

const RELAYS = [
  { name: 'raw', env: {} },
  { name: 'net.Socket', env: { LEMONADE_LB_NET_SOCKETS: '1' } },
] as const;

/** A backend that reads each connection's first line (the client's name) and holds it until released. */
async function holdingBackend(t: Ends, port?: number): Promise<{ address: string; order: string[]; received: Map<string, number>; release(name: string): void }> {
  const held = new Map<string, net.Socket>();
  const order: string[] = [];
  /** bytes received from each client after its name line */
  const received = new Map<string, number>();
  const server = await startTcpServer(t, (s) => {
    let buf = '';
    let name = '';
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      if (name !== '') {
        received.set(name, (received.get(name) ?? 0) + d.length);
        return;
      }
      buf += d.toString('latin1');
      const i = buf.indexOf('\n');
      if (i < 0) return;
      name = buf.slice(0, i);
      received.set(name, buf.length - i - 1);
      order.push(name);
      held.set(name, s);
      s.write(`hello ${name}\n`);
    });
  }, port);
  return {
    address: server.address,
    order,
    received,
    release(name: string) {
      const s = held.get(name);
      assert.ok(s, `the backend holds no connection of ${name}`);
      s.end();
    },
  };
}

interface Client {
  readonly s: net.Socket;
  readonly port: number;
  got(): string;
}

/** A client through the proxy that says its name at once; resolves once connected. */
async function client(port: number, name: string): Promise<Client> {
  const s = await open(port);
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString()));
  s.write(`${name}\n`);
  return { s, port: s.localPort!, got: () => got };
}

async function queueLength(lb: Balancer, service = 'default'): Promise<number | undefined> {
  const m = await lb.admin('/metrics');
  return samples(m.body, 'lemonade_queue_length').find((x) => x.labels['service'] === service)?.value;
}

function balancer(t: Ends, backend: string, proxy: string[], log: string, env: Record<string, string>): Promise<Balancer> {
  return startBalancer(t, testConfig([{ address: backend, max_connections: 2 }], { proxy: proxy.join('\n'), health: 'interval = "1h"\ntimeout = "1h"' }) + accessLogTable(log), { env });
}

const lineOf = (log: string, port: number, what: string) => waitLine(log, (l) => l['client'] === `127.0.0.1:${port}`, what);

for (const relay of RELAYS) {
  test(`${relay.name} relay: past the cap clients wait in order, are served as slots free, and the rest end as queue_timeout`, { timeout: 60_000 }, async (t) => {
    const backend = await holdingBackend(t);
    const log = join(tempDir(), 'access.log');
    const lb = await balancer(t, backend.address, ['queue_timeout = "2s"'], log, relay.env);
    const c1 = await client(lb.port, 'c1');
    const c2 = await client(lb.port, 'c2');
    await waitFor(() => backend.order.length === 2, 5000, 'two connections at the backend');
    // one at a time, so that the order they arrive in is the order they queue in
    const waiting: Client[] = [];
    for (const name of ['c3', 'c4', 'c5']) {
      waiting.push(await client(lb.port, name));
      await waitFor(async () => (await queueLength(lb)) === waiting.length, 5000, `${waiting.length} in the queue`);
    }
    assert.equal(await queueLength(lb), 3);
    assert.deepEqual(backend.order.slice().sort(), ['c1', 'c2']);
    const [c3, c4, c5] = waiting as [Client, Client, Client];

    // a slot frees: the head of the queue (c3) gets it at once, its bytes sent while waiting first
    backend.release('c1');
    await closed(c1.s);
    await waitFor(() => c3.got() === 'hello c3\n', 5000, 'c3 served');
    assert.deepEqual(backend.order.slice(2), ['c3'], 'first come, first served');
    assert.equal(await queueLength(lb), 2);

    // past queue_timeout the others end as queue_timeout, having waited about that long
    await Promise.all([closed(c4.s), closed(c5.s)]);
    assert.equal(c4.got(), '');
    for (const c of [c4, c5]) {
      const l = await lineOf(log, c.port, 'a queued client timed out');
      assert.equal(l['termination'], 'queue_timeout');
      assert.equal(l['backend'], null);
      assert.ok(Number(l['queue_ms']) >= 1900 && Number(l['queue_ms']) < 10_000, `queue_ms ${String(l['queue_ms'])}`);
    }
    assert.equal(await queueLength(lb), 0);
    assert.deepEqual(backend.order, ['c1', 'c2', 'c3']);

    backend.release('c2');
    backend.release('c3');
    await Promise.all([closed(c2.s), closed(c3.s)]);
    for (const [c, waited] of [
      [c1, false],
      [c2, false],
      [c3, true],
    ] as const) {
      const l = await lineOf(log, c.port, 'a served client');
      assert.equal(l['termination'], 'backend_closed');
      assert.equal(l['backend'], 'b1');
      if (waited) assert.ok(Number(l['queue_ms']) > 0, `queue_ms of a client that waited: ${String(l['queue_ms'])}`);
      else assert.equal(l['queue_ms'], 0);
    }
    const m = await lb.admin('/metrics');
    const ended = samples(m.body, 'lemonade_connection_terminations_total').find((x) => x.labels['service'] === 'default' && x.labels['termination'] === 'queue_timeout');
    assert.equal(ended?.value, 2);
  });
}

for (const relay of RELAYS) test(`${relay.name} relay: queue_max = 1: one waits, the next is refused at once (no_backend); a waiting client that hangs up leaves the queue`, { timeout: 60_000 }, async (t) => {
  const backend = await holdingBackend(t);
  const log = join(tempDir(), 'access.log');
  const lb = await balancer(t, backend.address, ['queue_timeout = "30s"', 'queue_max = 1'], log, relay.env);
  const served = [await client(lb.port, 'c1'), await client(lb.port, 'c2')];
  await waitFor(() => backend.order.length === 2, 5000, 'two connections at the backend');
  const c3 = await client(lb.port, 'c3');
  await waitFor(async () => (await queueLength(lb)) === 1, 5000, 'one in the queue');

  const started = Date.now();
  const c4 = await client(lb.port, 'c4');
  await closed(c4.s);
  assert.ok(Date.now() - started < 1500, `refused at once, not after ${Date.now() - started} ms`);
  const refused = await lineOf(log, c4.port, 'the refused client');
  assert.equal(refused['termination'], 'no_backend');
  assert.equal(refused['queue_ms'], 0);

  // the waiting client hangs up: out of the queue at once, logged as a client that closed
  c3.s.destroy();
  await waitFor(async () => (await queueLength(lb)) === 0, 5000, 'the queue empty');
  const gone = await lineOf(log, c3.port, 'the client that left the queue');
  assert.equal(gone['termination'], 'client_closed');
  assert.equal(gone['backend'], null);
  assert.ok(Number(gone['queue_ms']) >= 0);

  // and a slot that frees later goes to nobody gone: a new client waits and is served
  const c5 = await client(lb.port, 'c5');
  await waitFor(async () => (await queueLength(lb)) === 1, 5000, 'c5 in the queue');
  backend.release('c1');
  await waitFor(() => c5.got() === 'hello c5\n', 5000, 'c5 served');
  assert.deepEqual(backend.order.slice(2), ['c5'], 'c3 never reached the backend');
  for (const c of [...served, c5]) c.s.destroy();
});

test('without queue_timeout, a client past the cap is refused at once as before (no_backend)', { timeout: 30_000 }, async (t) => {
  const backend = await holdingBackend(t);
  const log = join(tempDir(), 'access.log');
  const lb = await balancer(t, backend.address, [], log, {});
  const served = [await client(lb.port, 'c1'), await client(lb.port, 'c2')];
  await waitFor(() => backend.order.length === 2, 5000, 'two connections at the backend');
  const c3 = await client(lb.port, 'c3');
  await closed(c3.s);
  const l = await lineOf(log, c3.port, 'the refused client');
  assert.equal(l['termination'], 'no_backend');
  assert.equal(l['queue_ms'], 0);
  assert.equal(await queueLength(lb), undefined, 'no queue gauge for a service without a queue');
  for (const c of served) c.s.destroy();
});

test('a reload that adds capacity serves the queue at once; a stop ends the ones still waiting as shutdown', { timeout: 60_000 }, async (t) => {
  const backend = await holdingBackend(t);
  const log = join(tempDir(), 'access.log');
  const proxy = ['queue_timeout = "60s"'];
  const config = (cap: number): string =>
    testConfig([{ address: backend.address, max_connections: cap }], { proxy: proxy.join('\n'), health: 'interval = "1h"\ntimeout = "1h"', runtime: 'drain_timeout_millis = 500' }) + accessLogTable(log);
  const lb = await startBalancer(t, config(2));
  const served = [await client(lb.port, 'c1'), await client(lb.port, 'c2')];
  await waitFor(() => backend.order.length === 2, 5000, 'two connections at the backend');
  const waiting: Client[] = [];
  for (const name of ['c3', 'c4']) {
    waiting.push(await client(lb.port, name));
    await waitFor(async () => (await queueLength(lb)) === waiting.length, 5000, `${waiting.length} in the queue`);
  }
  // no connection ends: the reload's new cap is the slot, handed to the head
  lb.replaceConfig(config(3));
  await waitFor(() => waiting[0]!.got() === 'hello c3\n', 10_000, 'c3 served after the reload');
  assert.deepEqual(backend.order, ['c1', 'c2', 'c3']);
  assert.equal(await queueLength(lb), 1);

  const c4 = waiting[1]!;
  const code = await lb.stop();
  assert.equal(code, 0);
  await closed(c4.s);
  const l = await lineOf(log, c4.port, 'the client still waiting at the stop');
  assert.equal(l['termination'], 'shutdown');
  assert.ok(Number(l['queue_ms']) > 0);
  for (const c of served) c.s.destroy();
});

test('a backend that turns healthy takes the waiting clients at once', { timeout: 60_000 }, async (t) => {
  const held = await holdingBackend(t);
  const downPort = await freePort();
  const log = join(tempDir(), 'access.log');
  const text =
    testConfig(
      [
        { address: held.address, max_connections: 1 },
        { address: `127.0.0.1:${downPort}`, max_connections: 1 },
      ],
      { proxy: 'queue_timeout = "30s"', health: 'interval = "200ms"\ntimeout = "150ms"\nhealthy_threshold = 1\nunhealthy_threshold = 1' },
    ) + accessLogTable(log);
  const lb = await startBalancer(t, text);
  const state = async (backend: string): Promise<string | undefined> =>
    samples((await lb.admin('/metrics')).body, 'lemonade_backend_state').find((x) => x.labels['backend'] === backend && x.value === 1)?.labels['state'];
  await waitFor(async () => (await state('b2')) === 'unhealthy', 10_000, 'b2 unhealthy');
  const c1 = await client(lb.port, 'c1');
  await waitFor(() => held.order.length === 1, 5000, 'c1 at b1');
  // b1 is full and b2 is down: c2 waits (being full is load; b2 being down alone would refuse)
  const c2 = await client(lb.port, 'c2');
  await waitFor(async () => (await queueLength(lb)) === 1, 5000, 'c2 in the queue');
  // b2 comes up: its first passing check hands it the waiting client, with no connection ending
  const up = await holdingBackend(t, downPort);
  await waitFor(() => c2.got() === 'hello c2\n', 10_000, 'c2 served by b2 once it is healthy');
  assert.deepEqual(up.order, ['c2']);
  assert.equal(await queueLength(lb), 0);
  for (const c of [c1, c2]) c.s.destroy();
});

for (const relay of RELAYS) test(`${relay.name} relay: a waiting client that sends a lot is read no further than a small buffer; all of it reaches the backend once served`, { timeout: 90_000 }, async (t) => {
  const backend = await holdingBackend(t);
  const log = join(tempDir(), 'access.log');
  const lb = await balancer(t, backend.address, ['queue_timeout = "60s"'], log, relay.env);
  const served = [await client(lb.port, 'c1'), await client(lb.port, 'c2')];
  await waitFor(() => backend.order.length === 2, 5000, 'two connections at the backend');
  const c3 = await client(lb.port, 'c3');
  await waitFor(async () => (await queueLength(lb)) === 1, 5000, 'c3 in the queue');
  const size = 64 * 1024 * 1024;
  // one chunk at a time, the next once the kernel took the last: `sent` is what left the client
  const chunk = Buffer.alloc(64 * 1024, 'q');
  let sent = 0;
  const pump = (): void => {
    if (sent < size) c3.s.write(chunk, () => ((sent += chunk.length), pump()));
  };
  pump();
  // wait until that stops growing (the kernel's buffers and the balancer's small one are full)
  let last = -1;
  let same = 0;
  await waitFor(
    () => {
      same = sent === last ? same + 1 : 0;
      last = sent;
      return same >= 5;
    },
    30_000,
    'the client\'s writes to stop moving',
    100,
  );
  assert.ok(last < size / 4, `a waiting client is read on: ${last} of ${size} bytes left it`);
  backend.release('c1');
  await waitFor(() => backend.received.get('c3') === size, 20_000, 'every byte at the backend once c3 is served');
  for (const c of [...served, c3]) c.s.destroy();
});
