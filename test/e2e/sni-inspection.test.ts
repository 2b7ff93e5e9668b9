// An address that reads the TLS ClientHello before routing, from outside, through the
// real balancer, on both relays (raw handles and net.Socket):
// 1. a connection that ends while its ClientHello is read (FIN, reset, a silent client at the
//    drain deadline) has its access log line, its termination counted and its place in
//    connections.total; duration_ms runs from accept, inspection wait included;
// 2. a client every service of the address denies is refused at accept, and a client's pending
//    ClientHellos count against client_max_connections: neither fills [proxy] max_connections;
// 3. ClientHellos with a 16 KiB server name of 8000 labels do not hold up a concurrent client;
// 4. a ClientHello that arrives during a drain is routed and served like any open connection.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { adminJson, startBalancer, startTcpServer, tempDir, waitFor, type Balancer, type TestServer, type Ends } from '../helpers';
import { metric, ports, servicesFile, type SvcSpec } from '../services-helpers';
import { accessLogTable, jsonLines, terminations, waitLine, type Line } from '../access-log-helpers';
import { clientHello, handshake, records, sniExt } from '../tls-helpers';

const RELAYS = [
  { name: 'raw', env: {} },
  { name: 'net.Socket', env: { LEMONADE_LB_NET_SOCKETS: '1' } },
] as const;

const svc = (name: string, port: number, address: string, lines: string[] = []): SvcSpec => ({ name, port, backends: [{ name: `${name}-1`, address }], lines });

/** A backend that greets with its name at once, then echoes what follows the ClientHello (a TLS record). */
function greeter(t: Ends, name: string): Promise<TestServer> {
  return startTcpServer(t, (s) => {
    s.write(`${name}\n`);
    let skipped = false;
    s.on('data', (d: Buffer) => {
      if (!skipped && d[0] === 0x16) {
        skipped = true;
        const len = 5 + d.readUInt16BE(3);
        if (d.length > len) s.write(d.subarray(len));
        return;
      }
      skipped = true;
      s.write(d);
    });
    s.on('end', () => s.end());
  });
}

/** A connected client (from `localAddress` when given) that keeps what it receives and knows when it is closed. */
interface Client {
  readonly s: net.Socket;
  readonly port: number;
  text(): string;
  readonly closed: Promise<number>;
}

function connect(port: number, localAddress?: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) });
    s.setNoDelay(true);
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('end', () => s.end());
    const closed = new Promise<number>((r) => s.on('close', () => r(Date.now() - started)));
    s.once('error', reject);
    s.on('connect', () => {
      s.off('error', reject);
      s.on('error', () => {});
      resolve({ s, port: s.localPort!, text: () => text, closed });
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withBalancer(t: TestContext, text: string, env: Record<string, string | undefined>): Promise<Balancer> {
  const lb = await startBalancer(t, text, { env });
  return lb;
}

/** Wait until the balancer holds `n` connections (one being inspected counts from its accept). */
async function holding(lb: Balancer, n: number): Promise<void> {
  await waitFor(async () => (await adminJson<{ connections: { active: number } }>(lb, '/status')).connections.active === n, 5000, `${n} open connection(s) on the balancer`);
}

async function total(lb: Balancer): Promise<number> {
  return (await adminJson<{ connections: { total: number } }>(lb, '/status')).connections.total;
}

// -------------------------------------------------------------------------------------------
// 1. Every connection has its line and its count, inspected or not

for (const relay of RELAYS) {
  test(`${relay.name} relay: a connection that ends while its ClientHello is read is logged and counted; duration runs from accept`, async (t) => {
    const [api, web] = await Promise.all([greeter(t, 'api'), greeter(t, 'web')]);
    const [a, c] = await ports(2);
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'access.log');
    const lb = await withBalancer(
      t,
      servicesFile({
        proxy: ['inspect_timeout = "5s"'],
        health: ['interval = "1h"', 'timeout = "300ms"'],
        services: [
          svc('api', a!, api.address, ['sni = ["api.example.com"]']),
          svc('web', a!, web.address),
          // names only: no default route
          svc('strict', c!, api.address, ['sni = ["strict.example.com"]']),
        ],
      }) + accessLogTable(log),
      relay.env,
    );
    const line = (cl: Client, what: string): Promise<Line> => waitLine(log, (l) => l['client'] === `127.0.0.1:${cl.port}`, what);
    const total0 = await total(lb);

    // its end of file before any byte: client_closed, named by the address's default route
    const fin = await connect(a!);
    fin.s.end();
    const finLine = await line(fin, 'a client that closed before any byte');
    assert.deepEqual(
      { ...finLine, time: 'T', duration_ms: typeof finLine['duration_ms'] },
      { time: 'T', client: `127.0.0.1:${fin.port}`, service: 'web', backend: null, backend_address: null, connect_ms: null, duration_ms: 'number', bytes_in: 0, bytes_out: 0, retries: 0, queue_ms: 0, termination: 'client_closed' },
    );

    // half a ClientHello, then a reset
    const rst = await connect(a!);
    const hello = clientHello('api.example.com');
    rst.s.write(hello.subarray(0, 20));
    await holding(lb, 1);
    rst.s.resetAndDestroy();
    const rstLine = await line(rst, 'a client that reset mid-ClientHello');
    assert.deepEqual([rstLine['service'], rstLine['backend'], rstLine['termination']], ['web', null, 'client_reset']);

    // no default route: the line names no service, as no_route's does
    const none = await connect(c!);
    none.s.end();
    const noneLine = await line(none, 'a client of an address without a default route');
    assert.deepEqual([noneLine['service'], noneLine['termination']], ['', 'client_closed']);

    // refused once its ClientHello is read (no route for the name): its duration is the wait
    const slow = await connect(c!);
    await sleep(600);
    slow.s.write(clientHello('other.example.com'));
    await slow.closed;
    const slowLine = await line(slow, 'a no_route refusal after a wait');
    assert.deepEqual([slowLine['service'], slowLine['termination']], ['', 'no_route']);
    assert.ok(Number(slowLine['duration_ms']) >= 550, `duration_ms ${slowLine['duration_ms']} for a client refused after 600 ms`);

    // silent, then gone: its duration is the time it was open
    const quiet = await connect(a!);
    await sleep(800);
    quiet.s.end();
    const quietLine = await line(quiet, 'a silent client that closed');
    assert.ok(Number(quietLine['duration_ms']) >= 750, `duration_ms ${quietLine['duration_ms']} for a client open 800 ms`);

    // silent for a while, then its ClientHello: routed, and its duration counts the wait
    const late = await connect(a!);
    await sleep(1200);
    late.s.write(hello);
    await waitFor(() => late.text().startsWith('api\n'), 5000, 'the api greeting');
    late.s.end();
    await late.closed;
    const lateLine = await line(late, 'a client routed after a wait');
    assert.deepEqual([lateLine['service'], lateLine['backend'], lateLine['termination']], ['api', 'api-1', 'client_closed']);
    assert.ok(Number(lateLine['duration_ms']) >= 1150, `duration_ms ${lateLine['duration_ms']} for a client open 1200 ms and more`);

    // every one counted: the termination counter and connections.total
    assert.equal(await terminations(lb, 'web', 'client_closed'), 2);
    assert.equal(await terminations(lb, 'web', 'client_reset'), 1);
    assert.equal(await terminations(lb, '', 'client_closed'), 1);
    assert.equal(await terminations(lb, 'api', 'client_closed'), 1);
    assert.equal((await total(lb)) - total0, 5);
    assert.equal(await terminations(lb, '', 'no_route'), 1);
    assert.equal(jsonLines(log).length, 6);
  });
}

// -------------------------------------------------------------------------------------------
// 2. What is refused at accept on an inspecting address

for (const relay of RELAYS) {
  test(`${relay.name} relay: a client every service denies, and a client's pending ClientHellos past its cap, are refused at accept; the global cap stays free`, async (t) => {
    const [api, web, plain] = await Promise.all([greeter(t, 'api'), greeter(t, 'web'), greeter(t, 'plain')]);
    const [a, b, d] = await ports(3);
    const lb = await withBalancer(
      t,
      servicesFile({
        proxy: ['max_connections = 5', 'inspect_timeout = "20s"'],
        health: ['interval = "1h"', 'timeout = "300ms"'],
        services: [
          // both services of this address let 127.0.0.2 in, and no one else
          svc('api', a!, api.address, ['sni = ["api.example.com"]', 'allow = ["127.0.0.2/32"]']),
          svc('web', a!, web.address, ['allow = ["127.0.0.2/32"]']),
          svc('plain', b!, plain.address),
          // a client may have 3 ClientHellos pending here (the larger of the two caps)
          svc('x', d!, api.address, ['sni = ["x.example.com"]', 'client_max_connections = 2']),
          svc('y', d!, web.address, ['client_max_connections = 3']),
        ],
      }),
      relay.env,
    );

    // ten silent connections from a denied address: each closed at once, none waits for its ClientHello
    const denied = await Promise.all(Array.from({ length: 10 }, () => connect(a!, '127.0.0.3')));
    const shut = await Promise.all(denied.map((cl) => Promise.race([cl.closed, sleep(5000).then(() => -1)])));
    assert.ok(shut.every((ms) => ms >= 0), `closed after ${JSON.stringify(shut)} ms (-1: still open after 5 s)`);
    const m1 = (await lb.admin('/metrics')).body;
    assert.equal(metric(m1, 'lemonade_connections_rejected_total', ['service="web"', 'reason="acl"']), 10);
    // the global cap (5) is untouched: the plain service and the allowed client are served
    const p1 = await connect(b!);
    await waitFor(() => p1.text() === 'plain\n', 5000, 'the plain greeting');
    const ok = await connect(a!, '127.0.0.2');
    ok.s.write(clientHello('api.example.com'));
    await waitFor(() => ok.text() === 'api\n', 5000, 'the allowed client reaching api');
    ok.s.destroy();
    p1.s.destroy();
    await waitFor(async () => (await adminJson<{ connections: { active: number } }>(lb, '/status')).connections.active === 0, 5000, 'no connection open');

    // one client, six silent connections where it may have three pending: three are refused at once
    const many = await Promise.all(Array.from({ length: 6 }, () => connect(d!, '127.0.0.4')));
    const states = await Promise.all(many.map((cl) => Promise.race([cl.closed.then(() => 'closed'), sleep(1500).then(() => 'open')])));
    assert.deepEqual(states.filter((s) => s === 'closed').length, 3, JSON.stringify(states));
    const m2 = (await lb.admin('/metrics')).body;
    assert.equal(metric(m2, 'lemonade_connections_rejected_total', ['service="y"', 'reason="client_limit"']), 3, m2.split('\n').filter((l) => l.startsWith('lemonade_connections_rejected_total') && !l.endsWith(' 0')).join('\n'));
    // three pending of five: another client still gets in
    const p2 = await connect(b!);
    await waitFor(() => p2.text() === 'plain\n', 5000, 'the plain greeting with three ClientHellos pending');
    // one of the pending ones is routed (its slot moves to the service's own count), and frees a pending one
    const open = many.filter((_, i) => states[i] === 'open');
    open[0]!.s.write(clientHello('www.example.com'));
    await waitFor(() => open[0]!.text() === 'web\n', 5000, 'the routed client');
    const again = await connect(d!, '127.0.0.4');
    const st = await Promise.race([again.closed.then(() => 'closed'), sleep(1000).then(() => 'open')]);
    assert.equal(st, 'open', 'a pending slot freed by routing is taken again');
    for (const cl of [...open, again, p2]) cl.s.destroy();
  });
}

// -------------------------------------------------------------------------------------------
// 3. A 16 KiB server name costs no other client anything

test('ClientHellos with a 16 KiB name of 8000 labels go to the default route without holding up a concurrent client', async (t) => {
  const [org, web, echo] = await Promise.all([greeter(t, 'org'), greeter(t, 'web'), greeter(t, 'echo')]);
  const [a, b] = await ports(2);
  const lb = await withBalancer(
    t,
    servicesFile({
      proxy: ['max_connections = 1000'],
      health: ['interval = "1h"', 'timeout = "300ms"'],
      services: [svc('org', a!, org.address, ['sni = ["*.example.org", "*.a.example.org"]']), svc('web', a!, web.address), svc('echo', b!, echo.address)],
    }),
    {},
  );
  // a client of another service, sending a byte and waiting for it back, over and over
  const plain = await connect(b!);
  await waitFor(() => plain.text() === 'echo\n', 5000, 'the echo greeting');
  let worst = 0;
  let rounds = 0;
  let stop = false;
  const pinger = (async () => {
    while (!stop && rounds < 100_000) {
      const want = plain.text().length + 1;
      const t0 = Date.now();
      plain.s.write('x');
      await waitFor(() => plain.text().length >= want, 10_000, 'an echo', 1);
      worst = Math.max(worst, Date.now() - t0);
      rounds++;
    }
  })();
  // 30 ClientHellos, each with a name of 8100 labels ending in .example.org (16 KiB), all at once
  const name = `${'a.'.repeat(8100)}example.org`;
  const hello = records(handshake([sniExt(name)]));
  assert.ok(hello.length <= 16 * 1024 + 5 && hello.length > 16_000, `hello of ${hello.length} bytes`);
  const reached: string[] = [];
  for (let round = 0; round < 3; round++) {
    const conns = await Promise.all(Array.from({ length: 10 }, () => connect(a!)));
    for (const cl of conns) cl.s.write(hello);
    await waitFor(() => conns.every((cl) => cl.text().includes('\n')), 20_000, 'every long-name client greeted');
    for (const cl of conns) {
      reached.push(cl.text().split('\n')[0]!);
      cl.s.destroy();
    }
  }
  stop = true;
  await pinger;
  plain.s.destroy();
  assert.ok(rounds > 0);
  assert.ok(worst < 400, `a concurrent client waited ${worst} ms for one echo (${rounds} echoes)`);
  // not a name (over 255 bytes): the default route
  assert.deepEqual(new Set(reached), new Set(['web']));
  assert.equal(lb.proc.exitCode, null);
});

// -------------------------------------------------------------------------------------------
// 4. A drain with ClientHellos still being read

for (const relay of RELAYS) {
  test(`${relay.name} relay: a ClientHello that arrives during a drain is routed and served; one still awaited at the deadline is cut and logged`, async (t) => {
    const [api, web] = await Promise.all([greeter(t, 'api'), greeter(t, 'web')]);
    const [a] = await ports(1);
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, 'access.log');
    const file = (drainMs: number): string =>
      servicesFile({
        runtime: [`drain_timeout_millis = ${drainMs}`, 'config_watch_interval_millis = 60000'],
        proxy: ['inspect_timeout = "30s"'],
        health: ['interval = "1h"', 'timeout = "300ms"'],
        services: [svc('api', a!, api.address, ['sni = ["api.example.com"]']), svc('web', a!, web.address)],
      }) + accessLogTable(log);

    // the only open connection is still being read when SIGTERM comes
    const lb = await withBalancer(t, file(20_000), relay.env);
    const cl = await connect(a!);
    await holding(lb, 1);
    lb.proc.kill('SIGTERM');
    await lb.waitForLog((l) => l['msg'] === 'shutting down: no new connections, draining open ones', 5000, 'the shutdown line');
    cl.s.write(clientHello('api.example.com'));
    await waitFor(() => cl.text() === 'api\n', 5000, 'the api greeting during the drain');
    cl.s.write('ping');
    await waitFor(() => cl.text() === 'api\nping', 5000, 'the echo during the drain');
    assert.equal(lb.proc.exitCode, null, 'still running while the connection is open');
    cl.s.end();
    assert.equal(await lb.exited, 0);
    const last = await lb.waitForLog((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('stopped:'), 1000, 'the final line');
    assert.deepEqual([last['drained'], last['cut']], [1, 0]);
    const served = await waitLine(log, (l) => l['client'] === `127.0.0.1:${cl.port}`, 'the drained connection');
    assert.deepEqual([served['service'], served['termination']], ['api', 'client_closed']);

    // a client that never sends its ClientHello is cut at the drain's deadline: logged as shutdown
    const lb2 = await withBalancer(t, file(600), relay.env);
    const mute = await connect(a!);
    await holding(lb2, 1);
    lb2.proc.kill('SIGTERM');
    assert.equal(await lb2.exited, 0);
    const cut = await waitLine(log, (l) => l['client'] === `127.0.0.1:${mute.port}`, 'the connection cut at the deadline');
    assert.deepEqual([cut['service'], cut['backend'], cut['termination']], ['web', null, 'shutdown']);
    assert.ok(Number(cut['duration_ms']) >= 500, `duration_ms ${cut['duration_ms']}`);
    mute.s.destroy();
  });
}
