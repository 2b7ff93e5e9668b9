// The access log against a running balancer, on both relays (raw handles and
// net.Socket): every termination cause this build can provoke for real, each seen in the JSON
// line of that very connection (found by the client's own port) with its fields exact, and
// counted in lemonade_connection_terminations_total; the text format; sampling; the hot reload
// (off, on, a new path); several worker processes writing one file and reopening it on SIGUSR1.
// no_route, and a connection that ends while its ClientHello is read, are in test/e2e/sni.test.ts and
// test/e2e/sni-inspection.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type net from 'node:net';
import { adminJson, freePort, startBalancer, startEcho, tempDir, waitFor, type Balancer } from '../helpers';
import { servicesFile, type SvcSpec } from '../services-helpers';
import { startBlackHole } from '../chaos/lib';
import { accessLogTable, closed, echoBalancer, exchange, jsonLines, open, roundTrip, samples, startGreeter, startResetter, startSilent, terminations, waitLine, waitLines } from '../access-log-helpers';

const RELAYS = [
  { name: 'raw', env: {} },
  { name: 'net.Socket', env: { LEMONADE_LB_NET_SOCKETS: '1' } },
] as const;

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
/**
 * Health checks that leave a backend healthy within a test: the first check (at start) decides
 * at once, so it must pass or never finish, and no later one comes.
 */
const NO_CHECKS = ['interval = "1h"', 'timeout = "1h"'];

async function relayOf(lb: Balancer): Promise<unknown> {
  return (await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started'))['relay'];
}

/** The line of the connection whose client port is `port`. */
const byPort = (log: string, port: number, what: string) => waitLine(log, (l) => l['client'] === `127.0.0.1:${port}`, what);

for (const relay of RELAYS) {
  test(`${relay.name} relay: each termination cause, decided where it happens, in the JSON line of that connection and in the counter`, { timeout: 90_000 }, async (t) => {
    const echo = await startEcho();
    const greeter = await startGreeter('hello\n');
    const resetter = await startResetter();
    const silent = await startSilent();
    const hole = await startBlackHole();
    // two backends that pass their first health check, then stop listening: connects are refused
    const gone = [await startSilent(), await startSilent()];
    // closed however the test ends: one left listening would keep this file's process alive
    t.after(async () => {
      for (const s of [echo, greeter, resetter, silent, ...gone]) await s.close();
      hole.close();
    });
    const names = ['echo', 'greet', 'reset', 'idle', 'hole', 'refused', 'none', 'acl', 'maxconn', 'rate', 'climit'] as const;
    const port: Record<(typeof names)[number], number> = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await freePort()]))) as never;
    const to = (name: string, address: string, weight?: number): SvcSpec['backends'] => [{ name, address, ...(weight !== undefined ? { weight } : {}) }];
    const dir = tempDir();
    const log = join(dir, 'access.log');
    const text =
      servicesFile({
        services: [
          { name: 'echo', port: port.echo, backends: to('echo-1', echo.address) },
          { name: 'greet', port: port.greet, backends: to('greeter', greeter.address) },
          { name: 'reset', port: port.reset, backends: to('resetter', resetter.address) },
          { name: 'idle', port: port.idle, lines: ['idle_timeout = "300ms"'], backends: to('silent', silent.address) },
          { name: 'hole', port: port.hole, lines: ['connect_timeout = "300ms"', 'connect_retries = 0'], health: NO_CHECKS, backends: to('hole', hole.address) },
          {
            name: 'refused',
            port: port.refused,
            lines: ['connect_retries = 1'],
            health: ['interval = "1h"'],
            backends: [
              { name: 'gone-1', address: gone[0]!.address },
              { name: 'gone-2', address: gone[1]!.address },
            ],
          },
          { name: 'none', port: port.none, backends: to('zero', echo.address, 0) },
          { name: 'acl', port: port.acl, lines: ['deny = ["127.0.0.0/8"]'], backends: to('echo-acl', echo.address) },
          { name: 'maxconn', port: port.maxconn, lines: ['max_connections = 1'], backends: to('echo-max', echo.address) },
          { name: 'rate', port: port.rate, lines: ['client_rate_limit = "1/m"'], backends: to('echo-rate', echo.address) },
          { name: 'climit', port: port.climit, lines: ['client_max_connections = 1'], backends: to('echo-cl', echo.address) },
        ],
      }) + accessLogTable(log);
    const lb = await startBalancer(t, text, { env: relay.env });
    assert.equal(await relayOf(lb), relay.name);
    await waitFor(async () => (await adminJson<{ service: string; last_check: { ok: boolean } | null }[]>(lb, '/backends')).filter((b) => b.service === 'refused' && b.last_check?.ok).length === 2, 10_000, 'the first checks of gone-1 and gone-2');
    for (const g of gone) await g.close();

    // client_closed: the client's FIN first; bytes exact both ways
    {
      const s = await open(port.echo);
      const p = s.localPort!;
      await roundTrip(s, Buffer.alloc(1000, 'x'));
      s.end();
      await closed(s);
      const l = await byPort(log, p, 'client_closed');
      assert.match(String(l['time']), ISO);
      assert.deepEqual(
        { ...l, time: 'T', connect_ms: typeof l['connect_ms'], duration_ms: typeof l['duration_ms'] },
        { time: 'T', client: `127.0.0.1:${p}`, service: 'echo', backend: 'echo-1', backend_address: echo.address, connect_ms: 'number', duration_ms: 'number', bytes_in: 1000, bytes_out: 1000, retries: 0, queue_ms: 0, termination: 'client_closed' },
      );
      assert.deepEqual(Object.keys(l), ['time', 'client', 'service', 'backend', 'backend_address', 'connect_ms', 'duration_ms', 'bytes_in', 'bytes_out', 'retries', 'queue_ms', 'termination']);
    }
    // backend_closed: the backend's FIN first
    {
      const s = await open(port.greet);
      const p = s.localPort!;
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('end', () => s.end());
      await closed(s);
      assert.equal(got, 'hello\n');
      const l = await byPort(log, p, 'backend_closed');
      assert.equal(l['termination'], 'backend_closed');
      assert.equal(l['bytes_out'], 6);
      assert.equal(l['bytes_in'], 0);
    }
    // client_reset: the client resets after an exchange
    {
      const s = await open(port.echo);
      const p = s.localPort!;
      await roundTrip(s, Buffer.alloc(100, 'y'));
      s.resetAndDestroy();
      const l = await byPort(log, p, 'client_reset');
      assert.equal(l['termination'], 'client_reset');
      assert.equal(l['bytes_in'], 100);
      assert.equal(l['bytes_out'], 100);
    }
    // backend_reset: the backend resets when the first byte arrives
    {
      const s = await open(port.reset);
      const p = s.localPort!;
      s.write('x');
      await closed(s);
      const l = await byPort(log, p, 'backend_reset');
      assert.equal(l['termination'], 'backend_reset');
      assert.equal(l['backend'], 'resetter');
      assert.equal(typeof l['connect_ms'], 'number');
    }
    // idle_timeout: nothing moves for 300 ms
    {
      const s = await open(port.idle);
      const p = s.localPort!;
      const started = Date.now();
      await closed(s);
      assert.ok(Date.now() - started >= 250, `closed after ${Date.now() - started} ms`);
      const l = await byPort(log, p, 'idle_timeout');
      assert.equal(l['termination'], 'idle_timeout');
      assert.ok((l['duration_ms'] as number) >= 250);
    }
    // connect_timeout: a backend whose connect never completes, no retry
    {
      const s = await open(port.hole);
      const p = s.localPort!;
      await closed(s);
      const l = await byPort(log, p, 'connect_timeout');
      assert.deepEqual([l['termination'], l['backend'], l['connect_ms'], l['retries'], l['bytes_in'], l['bytes_out']], ['connect_timeout', 'hole', null, 0, 0, 0]);
    }
    // connect_failed: both backends refuse; one retry
    {
      const s = await open(port.refused);
      const p = s.localPort!;
      await closed(s);
      const l = await byPort(log, p, 'connect_failed');
      assert.deepEqual([l['termination'], l['connect_ms'], l['retries']], ['connect_failed', null, 1]);
      assert.ok(['gone-1', 'gone-2'].includes(String(l['backend'])), String(l['backend']));
    }
    // no_backend: the only backend has weight 0
    {
      const s = await open(port.none);
      const p = s.localPort!;
      await closed(s);
      const l = await byPort(log, p, 'no_backend');
      assert.deepEqual([l['termination'], l['backend'], l['backend_address'], l['connect_ms']], ['no_backend', null, null, null]);
    }
    // rejected_acl
    {
      const s = await open(port.acl);
      const p = s.localPort!;
      await closed(s);
      const l = await byPort(log, p, 'rejected_acl');
      assert.deepEqual([l['termination'], l['backend'], l['duration_ms'], l['bytes_in']], ['rejected_acl', null, 0, 0]);
    }
    // rejected_max_connections: the service's one slot is held
    const held: net.Socket[] = [];
    {
      const h = await open(port.maxconn);
      held.push(h);
      await roundTrip(h, Buffer.from('hold'));
      const s = await open(port.maxconn);
      const p = s.localPort!;
      await closed(s);
      assert.equal((await byPort(log, p, 'rejected_max_connections'))['termination'], 'rejected_max_connections');
    }
    // rejected_rate_limit: one new connection a minute per client
    {
      const a = await open(port.rate);
      await roundTrip(a, Buffer.from('first'));
      a.end();
      await closed(a);
      const s = await open(port.rate);
      const p = s.localPort!;
      await closed(s);
      assert.equal((await byPort(log, p, 'rejected_rate_limit'))['termination'], 'rejected_rate_limit');
    }
    // rejected_client_limit: one connection at a time per client
    {
      const h = await open(port.climit);
      held.push(h);
      await roundTrip(h, Buffer.from('hold'));
      const s = await open(port.climit);
      const p = s.localPort!;
      await closed(s);
      assert.equal((await byPort(log, p, 'rejected_client_limit'))['termination'], 'rejected_client_limit');
    }
    for (const h of held) {
      h.end();
      await closed(h);
    }

    // each one counted under its service
    const want: [string, string, number][] = [
      ['echo', 'client_closed', 1],
      ['echo', 'client_reset', 1],
      ['greet', 'backend_closed', 1],
      ['reset', 'backend_reset', 1],
      ['idle', 'idle_timeout', 1],
      ['hole', 'connect_timeout', 1],
      ['refused', 'connect_failed', 1],
      ['none', 'no_backend', 1],
      ['acl', 'rejected_acl', 1],
      ['maxconn', 'rejected_max_connections', 1],
      ['rate', 'rejected_rate_limit', 1],
      ['climit', 'rejected_client_limit', 1],
    ];
    for (const [svc, term, n] of want) assert.equal(await terminations(lb, svc, term), n, `${svc} ${term}`);
    const m = (await lb.admin('/metrics')).body;
    const rejected = (svc: string, reason: string): number | undefined => samples(m, 'lemonade_connections_rejected_total').find((x) => x.labels['service'] === svc && x.labels['reason'] === reason)?.value;
    assert.deepEqual([rejected('rate', 'rate_limit'), rejected('climit', 'client_limit'), rejected('climit', 'rate_limit'), rejected('none', 'no_backend')], [1, 1, 0, 1]);
    // every line is whole JSON with a known termination (the two held connections ended clean)
    for (const l of jsonLines(log)) assert.equal(typeof l['termination'], 'string');
  });

  test(`${relay.name} relay: drain_timeout (a removed backend), disabled (an operator's disable), shutdown (the drain's deadline)`, { timeout: 60_000 }, async (t) => {
    const echo = await startEcho(t);
    const echo2 = await startEcho(t);
    const [pDrain, pDis, pDown] = [await freePort(), await freePort(), await freePort()];
    const dir = tempDir();
    const log = join(dir, 'access.log');
    const file = (drainBackend: SvcSpec['backends']): string =>
      servicesFile({
        runtime: ['drain_timeout_millis = 500', 'config_watch_interval_millis = 60000'],
        services: [
          { name: 'drain', port: pDrain, backends: drainBackend },
          { name: 'dis', port: pDis, backends: [{ name: 'x1', address: echo.address }] },
          { name: 'down', port: pDown, backends: [{ name: 's1', address: echo.address }] },
        ],
      }) + accessLogTable(log);
    const lb = await startBalancer(t, file([{ name: 'd1', address: echo.address }]), { env: relay.env });
    assert.equal(await relayOf(lb), relay.name);

    // drain_timeout: d1 leaves the file; its connection is cut 500 ms later
    const d = await open(pDrain);
    const dp = d.localPort!;
    await roundTrip(d, Buffer.from('drain'));
    lb.writeConfig(file([{ name: 'd2', address: echo2.address, id: 7 }]));
    const r = await lb.admin('/reload', 'POST');
    assert.equal(r.status, 200, r.body);
    await closed(d);
    const ld = await byPort(log, dp, 'drain_timeout');
    assert.deepEqual([ld['termination'], ld['backend'], ld['bytes_in'], ld['bytes_out']], ['drain_timeout', 'd1', 5, 5]);

    // disabled: the operator disables x1; its open connection is cut at once
    const x = await open(pDis);
    const xp = x.localPort!;
    await roundTrip(x, Buffer.from('disable'));
    const a = await lb.admin('/services/dis/backends/x1/disable', 'POST');
    assert.equal(a.status, 200, a.body);
    await closed(x);
    assert.equal((await byPort(log, xp, 'disabled'))['termination'], 'disabled');

    // shutdown: SIGTERM, the connection outlives drain_timeout and is cut; the line is written before exit
    const s = await open(pDown);
    const sp = s.localPort!;
    await roundTrip(s, Buffer.from('stop'));
    const code = await lb.stop('SIGTERM');
    assert.equal(code, 0);
    await closed(s);
    const ls = await byPort(log, sp, 'shutdown');
    assert.deepEqual([ls['termination'], ls['service'], ls['backend']], ['shutdown', 'down', 's1']);
    for (const [svc, term] of [['drain', 'drain_timeout'], ['dis', 'disabled'], ['down', 'shutdown']]) {
      assert.equal(jsonLines(log).filter((l) => l['service'] === svc && l['termination'] === term).length, 1, `${svc} ${term}`);
    }
  });
}

test('text format, sampling, and the hot reload: off, on again, a new path, with the counter counting every connection', { timeout: 90_000 }, async (t) => {
  const dir = tempDir();
  const [a, b] = [join(dir, 'a.log'), join(dir, 'b.log')];
  const { lb, port, echo, file } = await echoBalancer(t, () => accessLogTable(a));
  const reload = async (log: string): Promise<void> => {
    lb.writeConfig(file(log));
    const r = await lb.admin('/reload', 'POST');
    assert.equal(r.status, 200, r.body);
  };
  const one = (): Promise<number> => exchange(port, 'hello');
  const count = (path: string): number => (existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter((l) => l !== '').length : 0);

  await one();
  await waitLines(a, 1);

  // text: one line, its fields in the documented order (docs/operations.md)
  await reload(accessLogTable(a, ['format = "text"']));
  const p = await one();
  const line = await waitFor(() => readFileSync(a, 'utf8').split('\n').find((l) => l.includes(`127.0.0.1:${p} `)), 10_000, 'the text line');
  const m = /^(\S+) 127\.0\.0\.1:(\d+) echo\/echo-1 (\S+) (\d+)\/(\d+) 5 5 0 client_closed$/.exec(line);
  assert.ok(m, line);
  assert.match(m[1]!, ISO);
  assert.equal(m[3], echo.address);

  // off: connections are counted, not logged
  const before = await terminations(lb, 'echo', 'client_closed');
  await reload('');
  const linesA = count(a);
  for (let i = 0; i < 5; i++) await one();
  assert.equal(await terminations(lb, 'echo', 'client_closed'), before + 5);

  // on again, to a new path: the new file gets the next line, the old one nothing more
  await reload(accessLogTable(b));
  const q = await one();
  await byPort(b, q, 'the first line in the new file');
  assert.equal(count(a), linesA, 'nothing was written while the log was off, nor after the path changed');

  // sample = 0.5: about half the connections are logged, every one is counted
  await reload(accessLogTable(b, ['sample = 0.5']));
  const [logged0, counted0] = [count(b), await terminations(lb, 'echo', 'client_closed')];
  const N = 200;
  for (let i = 0; i < N; i += 10) await Promise.all(Array.from({ length: 10 }, one));
  await waitFor(async () => (await terminations(lb, 'echo', 'client_closed')) === counted0 + N, 10_000, 'every connection counted');
  const logged = count(b) - logged0;
  t.diagnostic(`sample = 0.5: ${logged} of ${N} connections logged`);
  assert.ok(logged >= 60 && logged <= 140, `${logged} of ${N} logged`);
});

test('workers = 2: each worker logs its own connections to the one file, whole lines, none lost across a SIGUSR1 reopen', { timeout: 90_000 }, async (t) => {
  const log = join(tempDir(), 'access.log');
  const { lb, port } = await echoBalancer(t, () => accessLogTable(log), ['workers = 2', 'drain_timeout_millis = 5000']);
  const one = (): Promise<number> => exchange(port, 'w');
  const N = 60;
  for (let i = 0; i < N; i += 6) await Promise.all(Array.from({ length: 6 }, one));
  const first = await waitLines(log, N);
  assert.equal(first.length, N);
  // both workers wrote (the kernel spreads connections over them; 60 of them reach both)
  renameSync(log, `${log}.1`);
  lb.proc.kill('SIGUSR1');
  await waitFor(() => existsSync(log), 10_000, 'the log reopened by its name');
  for (let i = 0; i < N; i += 6) await Promise.all(Array.from({ length: 6 }, one));
  await waitFor(() => jsonLines(`${log}.1`).length + jsonLines(log).length === 2 * N, 20_000, `${2 * N} lines over both files`);
  assert.ok(jsonLines(log).length > 0, 'the new file gets lines');
  await waitFor(async () => (await terminations(lb, 'echo', 'client_closed')) === 2 * N, 10_000, 'the workers counted every connection');
  const m = (await lb.admin('/metrics')).body;
  assert.equal(samples(m, 'lemonade_access_log_dropped_total')[0]?.value, 0);
});
