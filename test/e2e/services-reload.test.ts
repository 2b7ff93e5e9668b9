// [[services]] from outside, part 2: reloads that add, change, move and remove services (the reload
// line naming each service, a removed service draining, a bind failure failing the whole
// reload), reload under load across three services, `[runtime] workers = 2` with several
// services, and socket activation with one passed socket per service. Real processes and sockets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, connectOutcome, httpRequest, requestsUnderLoad, requireTool, rewriteEvery, SOCKET_ACTIVATE, socketActivated, startBalancer, startNamed, startTcpServer, startWorker, tempDir, waitFor, type Balancer, type TestServer, type Ends } from '../helpers';
import { backends, greeting, services, servicesFile, ports, type FileSpec, type SvcSpec } from '../services-helpers';

/** A connection to `port` held open once its backend greeted it with `name`; closedAt() is 0 until it closes. */
async function heldOn(t: { after(f: () => unknown): void }, port: number, name: string): Promise<{ conn: net.Socket; closedAt: () => number }> {
  const conn = net.connect({ host: '127.0.0.1', port });
  t.after(() => conn.destroy());
  conn.on('error', () => {});
  assert.equal(await new Promise<string>((r) => conn.once('data', (d: Buffer) => r(d.toString()))), `${name}\n`);
  let at = 0;
  conn.on('close', () => (at = Date.now()));
  return { conn, closedAt: () => at };
}

interface Status {
  config: { generation: number; last_reload: { result: string; error: string | null } | null };
  connections: { active: number; total: number; rejected: number };
  workers?: { index: number; up: boolean; accepted: number }[];
}
const status = (lb: Balancer): Promise<Status> => adminJson<Status>(lb, '/status');

async function generation(lb: Balancer, g: number, timeoutMs = 8000): Promise<Status> {
  return waitFor(async () => {
    const s = await status(lb);
    return s.config.generation >= g ? s : null;
  }, timeoutMs, `config generation ${g}`);
}


/** Greets with its name, then echoes. */
function greeter(t: Ends, name: string): Promise<TestServer> {
  return startTcpServer(t, (s) => {
    s.write(`${name}\n`);
    s.pipe(s);
  });
}

const svc = (name: string, port: number, list: SvcSpec['backends'], more: Partial<SvcSpec> = {}): SvcSpec => ({ name, port, backends: list, ...more });

// ---------------------------------------------------------------------------------------------
// 4. Reload

test('a reload adding a service binds its listener and names it; a changed backend in a service is named with its service', async (t) => {
  const servers = await Promise.all([startNamed(t, 'a1'), startNamed(t, 'b1')]);
  const [a1, b1] = servers as [TestServer, TestServer];
  const [pa, pb] = await ports(2);
  const file = (withB: boolean, weight = 1, lines: string[] = []): string =>
    servicesFile({ services: [svc('a', pa!, [{ name: 'a1', address: a1.address }]), ...(withB ? [svc('b', pb!, [{ name: 'b1', address: b1.address, weight }], { lines })] : [])] });
  const lb = await startBalancer(t, file(false));
  assert.equal(await connectOutcome(pb!), 'ECONNREFUSED');
  lb.writeConfig(file(true));
  await generation(lb, 2);
  await lb.waitForLog((l) => l['msg'] === 'config reloaded: +service b', 2000, 'the reload line naming the new service');
  assert.equal(await greeting(pb!), 'b1', 'the new service serves');
  assert.equal(await greeting(pa!), 'a1');
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.listen_address]), [['a', `127.0.0.1:${pa}`], ['b', `127.0.0.1:${pb}`]]);

  lb.writeConfig(file(true, 5));
  await generation(lb, 3);
  await lb.waitForLog((l) => l['msg'] === 'config reloaded: b: ~b1 weight 1→5', 2000, 'the reload line naming the service of the changed backend');
  const bs = await backends(lb);
  assert.deepEqual(bs.map((b) => [b.service, b.name, b.weight]), [['a', 'a1', 1], ['b', 'b1', 5]]);
  const events = await adminJson<{ kind: string; message: string }[]>(lb, '/events');
  assert.ok(events.some((e) => e.kind === 'reload' && /\+service b/.test(e.message)), JSON.stringify(events));

  // a service's own setting: named with its service, applied in the swap, the other untouched
  lb.writeConfig(file(true, 5, ['deny = ["127.0.0.0/8"]', 'algorithm = "least_connections"']));
  await generation(lb, 4);
  const line = await lb.waitForLog((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('config reloaded: b: algorithm'), 2000, 'the reload line of a service setting');
  assert.match(String(line['msg']), /^config reloaded: b: algorithm round_robin→least_connections deny .*127\.0\.0\.0\/8/);
  assert.equal(await greeting(pb!), 'closed', "b's new deny applies");
  assert.equal(await greeting(pa!), 'a1');
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.algorithm, r.rejected]), [['a', 'round_robin', 0], ['b', 'least_connections', 1]]);
});

test('a removed service stops accepting at once; its open connection keeps flowing and is cut after drain_timeout', async (t) => {
  const servers = await Promise.all([greeter(t, 'a1'), greeter(t, 'b1')]);
  const [a1, b1] = servers as [TestServer, TestServer];
  const [pa, pb] = await ports(2);
  const file = (withB: boolean): string =>
    servicesFile({
      runtime: ['drain_timeout_millis = 1500', 'config_watch_interval_millis = 60000'],
      services: [svc('a', pa!, [{ name: 'a1', address: a1.address }]), ...(withB ? [svc('b', pb!, [{ name: 'b1', address: b1.address }])] : [])],
    });
  const lb = await startBalancer(t, file(true));
  const { conn, closedAt } = await heldOn(t, pb!, 'b1');

  lb.writeConfig(file(false));
  const removedAt = Date.now();
  await generation(lb, 2);
  await lb.waitForLog((l) => l['msg'] === 'config reloaded: -service b(draining)', 2000, 'the reload line');
  assert.equal(await connectOutcome(pb!), 'ECONNREFUSED', 'the removed service no longer accepts');
  assert.equal(await greeting(pa!), 'a1', 'the other service serves');
  // still flowing during the drain, and still shown
  const echoed = new Promise<string>((r) => conn.once('data', (d: Buffer) => r(d.toString())));
  conn.write('still here');
  assert.equal(await echoed, 'still here');
  assert.deepEqual((await services(lb)).map((r) => r.name), ['a']);
  const draining = (await backends(lb)).find((b) => b.service === 'b');
  assert.deepEqual(draining && [draining.name, draining.state, draining.active], ['b1', 'draining', 1]);
  // then cut at the deadline
  await waitFor(() => closedAt() > 0, 5000, 'the drained connection to be cut');
  const lived = closedAt() - removedAt;
  assert.ok(lived >= 1200 && lived < 4000, `cut ${lived} ms after the removal (drain_timeout 1500 ms)`);
  await waitFor(async () => (await backends(lb)).every((b) => b.service === 'a'), 3000, "the removed service's rows gone once drained");
});

test("a bind failure of a new service's address fails the whole reload; a changed listen_address binds the new one and frees the old", async (t) => {
  const servers = await Promise.all([startNamed(t, 'a1'), startNamed(t, 'b1'), startNamed(t, 'c1')]);
  const [a1, b1, c1] = servers as [TestServer, TestServer, TestServer];
  const holder = await startTcpServer(t, () => {}); // holds the port the new service wants
  const [pa, pb, pc, pd] = await ports(4);
  const file = (o: { aWeight?: number; bPort?: number; cPort?: number }): string =>
    servicesFile({
      services: [
        svc('a', pa!, [{ name: 'a1', address: a1.address, weight: o.aWeight ?? 1 }]),
        svc('b', o.bPort ?? pb!, [{ name: 'b1', address: b1.address }]),
        ...(o.cPort ? [svc('c', o.cPort, [{ name: 'c1', address: c1.address }])] : []),
      ],
    });
  const lb = await startBalancer(t, file({}));
  // a new service on a held port, with a weight change elsewhere: nothing applies
  lb.writeConfig(file({ aWeight: 3, cPort: holder.port }));
  const failed = await waitFor(async () => {
    const s = await status(lb);
    return s.config.last_reload?.result === 'failure' ? s : null;
  }, 5000, 'the bind failure');
  assert.match(failed.config.last_reload!.error!, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${holder.port} .*EADDRINUSE`));
  assert.equal(failed.config.generation, 1, 'generation unchanged');
  assert.deepEqual((await backends(lb)).map((b) => [b.service, b.name, b.weight]), [['a', 'a1', 1], ['b', 'b1', 1]], 'no other change applied');
  assert.deepEqual((await services(lb)).map((r) => r.name), ['a', 'b']);
  assert.equal(await greeting(pa!), 'a1');
  assert.equal(await greeting(pb!), 'b1');

  // b moves to a free port, c is added on another: both bound, b's old port closed
  lb.writeConfig(file({ bPort: pc!, cPort: pd! }));
  await generation(lb, 2);
  assert.equal(await greeting(pc!), 'b1', 'b serves on its new address');
  assert.equal(await greeting(pd!), 'c1');
  assert.equal(await connectOutcome(pb!), 'ECONNREFUSED', "b's old address is closed");
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.listen_address]), [['a', `127.0.0.1:${pa}`], ['b', `127.0.0.1:${pc}`], ['c', `127.0.0.1:${pd!}`]]);
});

test('reload under load across three services: two clients each, the file rewritten every 150 ms, 0 failures', async (t) => {
  const w = await Promise.all(['w1', 'w2', 'w3'].map((n) => startWorker(t, n)));
  const [pa, pb, pc, pd] = await ports(4);
  const algorithms = ['round_robin', 'weighted_round_robin', 'least_connections', 'fastest_response', 'adaptive'];
  const pool = (i: number, k: number): SvcSpec['backends'] => w.map((x, j) => ({ name: `w${j + 1}`, address: x.address, weight: 1 + ((i + j + k) % 4) }));
  const file = (i: number): string => {
    const f: FileSpec = {
      runtime: ['drain_timeout_millis = 5000', 'config_watch_interval_millis = 1000'],
      services: [
        svc('a', pa!, pool(i, 0), { lines: [`algorithm = "${algorithms[i % 5]}"`] }),
        svc('b', pb!, pool(i, 1), { lines: [`algorithm = "${algorithms[(i + 2) % 5]}"`, `connect_retries = ${1 + (i % 3)}`] }),
        svc('c', pc!, pool(i, 2), { health: [`interval = "${300 + (i % 4) * 100}ms"`] }),
        // a fourth service comes and goes on its own port while the others serve
        ...(i % 4 < 2 ? [svc('d', pd!, pool(i, 3))] : []),
      ],
    };
    return servicesFile(f);
  };
  const lb = await startBalancer(t, file(0));
  const writer = rewriteEvery(lb, file, 150);
  const started = Date.now();
  const results = await Promise.all(
    [pa!, pb!, pc!].map((port) => requestsUnderLoad(port, { clients: 2, more: (n) => n < 500 || writer.count() < 25, accept: (b) => /^w[123]\n$/.test(b), limitMs: 60_000 })),
  );
  await writer.stop();
  const s = await status(lb);
  t.diagnostic(`three services under reload: ${results.map((r) => r.ok).join('/')} ok, ${results.map((r) => r.failures.length).join('/')} failed, ${writer.count()} rewrites, generation ${s.config.generation}, last reload ${s.config.last_reload?.result}, ${Date.now() - started} ms`);
  for (const [i, r] of results.entries()) {
    assert.deepEqual(r.failures, [], `service ${'abc'[i]}`);
    assert.ok(r.ok >= 450, `service ${'abc'[i]}: ${r.ok} requests`);
  }
  assert.ok(s.config.generation >= 20, `reloads applied: generation ${s.config.generation}`);
  const failedReloads = lb.logs.filter((l) => l['msg'] === 'config reload failed; the running configuration is unchanged');
  assert.deepEqual(failedReloads.map((l) => l['error']), [], 'no reload failed (the fourth service re-binds its port each time it comes back)');
});

// ---------------------------------------------------------------------------------------------
// 5. Workers

/** `n` connections at once, each reading its greeting line: the names seen. */
function burst(port: number, n: number): Promise<string[]> {
  return Promise.all(Array.from({ length: n }, () => greeting(port)));
}

test('workers = 2 with three services: each served, /services figures add up, a reload adding a service reaches every worker', async (t) => {
  const servers = await Promise.all(['a1', 'b1', 'c1', 'd1'].map((n) => startNamed(t, n)));
  const [pa, pb, pc, pd] = await ports(4);
  const file = (withD: boolean): string =>
    servicesFile({
      runtime: ['workers = 2', 'drain_timeout_millis = 5000', 'config_watch_interval_millis = 60000'],
      services: [
        svc('a', pa!, [{ name: 'a1', address: servers[0]!.address }]),
        svc('b', pb!, [{ name: 'b1', address: servers[1]!.address }]),
        svc('c', pc!, [{ name: 'c1', address: servers[2]!.address }]),
        ...(withD ? [svc('d', pd!, [{ name: 'd1', address: servers[3]!.address }])] : []),
      ],
    });
  const lb = await startBalancer(t, file(false), { stopSignal: 'SIGKILL' });
  const seen: Record<string, number> = { a: 0, b: 0, c: 0 };
  // bursts until both workers accepted (the kernel spreads concurrent connections)
  for (let round = 0; round < 20; round++) {
    for (const [name, port] of [['a', pa!], ['b', pb!], ['c', pc!]] as const) {
      const got = await burst(port, 10);
      assert.deepEqual([...new Set(got)], [`${name}1`], `service ${name} answered by its backend`);
      seen[name]! += got.length;
    }
    const st = await status(lb);
    if (round >= 1 && st.workers!.every((x) => x.accepted > 0)) break;
  }
  const st = await status(lb);
  assert.equal(st.workers?.length, 2);
  assert.ok(st.workers!.every((x) => x.accepted > 0), `both workers accepted: ${JSON.stringify(st.workers)}`);
  const rows = await services(lb);
  assert.deepEqual(rows.map((r) => [r.name, r.total]), Object.entries(seen), 'each service counts the connections made to it');
  const all = Object.values(seen).reduce((x, y) => x + y, 0);
  assert.equal(st.connections.total, all);
  assert.equal(st.workers!.reduce((n, x) => n + x.accepted, 0), all);

  assert.equal(await connectOutcome(pd!), 'ECONNREFUSED');
  lb.writeConfig(file(true));
  await generation(lb, 2, 10_000);
  // every worker serves the new service: no connection of many bursts is refused or lost
  for (let i = 0; i < 5; i++) assert.deepEqual([...new Set(await burst(pd!, 20))], ['d1']);
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.total]), [...Object.entries(seen), ['d', 100]]);
  assert.ok((await status(lb)).workers!.every((x) => x.up));
});

// ---------------------------------------------------------------------------------------------
// 6. Socket activation


test('socket activation: two passed sockets, each serving the service with its address; a reload moving one fails whole and keeps the socket', async (t) => {
  if (!requireTool(t, 'systemd-socket-activate (package systemd)', SOCKET_ACTIVATE !== '')) return;
  const servers = await Promise.all([startNamed(t, 'a1'), startNamed(t, 'b1')]);
  const [pa, pb, adminPort, elsewhere] = await ports(4);
  const conf = join(tempDir(), 'config.toml');
  const file = (bPort: number, aWeight = 1): string =>
    servicesFile({
      services: [svc('a', pa!, [{ name: 'a1', address: servers[0]!.address, weight: aWeight }]), svc('b', bPort, [{ name: 'b1', address: servers[1]!.address }])],
    }).replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`);
  writeFileSync(conf, file(pb!));
  // b's socket first: matching is by address, not by order
  const { proc, stderr, exited } = await socketActivated(t, [pb!, pa!], conf);
  // the first connection starts the balancer (systemd-socket-activate waits for it) and waits in
  // the socket's queue while it starts: as long as startBalancer gives a start, on a loaded machine
  assert.equal(await greeting(pa!, 15_000), 'a1');
  await waitFor(async () => (await httpRequest(adminPort, '/status').catch(() => null))?.status === 200, 10_000, 'the admin API');
  assert.equal(await greeting(pb!), 'b1');
  assert.equal(await greeting(pa!), 'a1');
  const rows = JSON.parse((await httpRequest(adminPort, '/services')).body) as { name: string; listen_address: string }[];
  assert.deepEqual(rows.map((r) => [r.name, r.listen_address]), [['a', `127.0.0.1:${pa}`], ['b', `127.0.0.1:${pb}`]]);

  // moving b fails whole: a's weight change is not applied either
  writeFileSync(conf, file(elsewhere!, 4));
  const r = await httpRequest(adminPort, '/reload', { method: 'POST' });
  assert.equal(r.status, 422, r.body);
  assert.match(r.body, new RegExp(`service b listener serves the socket systemd passed \\(127\\.0\\.0\\.1:${pb}\\): the \\.socket unit owns that address`));
  const st = JSON.parse((await httpRequest(adminPort, '/status')).body) as { config: { generation: number }; backends: { name: string; weight: number }[] };
  assert.equal(st.config.generation, 1);
  assert.equal(st.backends.find((b) => b.name === 'a1')!.weight, 1);
  assert.equal(await greeting(pb!), 'b1', "b's passed socket still serves");
  assert.equal(await connectOutcome(elsewhere!), 'ECONNREFUSED');
  // any other change applies as usual
  writeFileSync(conf, file(pb!, 4));
  assert.equal((await httpRequest(adminPort, '/reload', { method: 'POST' })).status, 200);
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, stderr());
});

test('workers = 2: a removed service stops accepting in every worker, its open connection drains until drain_timeout; a moved one serves on its new address', async (t) => {
  const servers = await Promise.all([greeter(t, 'a1'), greeter(t, 'b1')]);
  const [pa, pb, pa2] = await ports(3);
  const file = (aPort: number, withB: boolean): string =>
    servicesFile({
      runtime: ['workers = 2', 'drain_timeout_millis = 1500', 'config_watch_interval_millis = 60000'],
      services: [svc('a', aPort, [{ name: 'a1', address: servers[0]!.address }]), ...(withB ? [svc('b', pb!, [{ name: 'b1', address: servers[1]!.address }])] : [])],
    });
  const lb = await startBalancer(t, file(pa!, true), { stopSignal: 'SIGKILL' });
  const { conn, closedAt } = await heldOn(t, pb!, 'b1');
  lb.writeConfig(file(pa2!, false));
  const removedAt = Date.now();
  await generation(lb, 2, 10_000);
  await lb.waitForLog((l) => typeof l['msg'] === 'string' && /^config reloaded: .*-service b\(draining\)/.test(l['msg']), 2000, 'the reload line');
  // the workers close their listeners on the primary's message, and the cluster's shared socket
  // closes once every worker let go of it: an IPC round trip after the generation is shown (bounded
  // as a loaded machine needs, not as an idle one does)
  await waitFor(async () => (await connectOutcome(pb!)) === 'ECONNREFUSED', 5000, "the removed service's address closed in every worker");
  for (let i = 0; i < 10; i++) assert.equal(await connectOutcome(pb!), 'ECONNREFUSED', 'no worker accepts for the removed service');
  assert.deepEqual([...new Set(await burst(pa2!, 20))], ['a1'], 'a serves on its new address from every worker');
  await waitFor(async () => (await connectOutcome(pa!)) === 'ECONNREFUSED', 5000, "a's old address closed in every worker");
  const echoed = new Promise<string>((r) => conn.once('data', (d: Buffer) => r(d.toString())));
  conn.write('still here');
  assert.equal(await echoed, 'still here');
  await waitFor(() => closedAt() > 0, 6000, 'the drained connection to be cut');
  const lived = closedAt() - removedAt;
  assert.ok(lived >= 1200 && lived < 4500, `cut ${lived} ms after the removal (drain_timeout 1500 ms)`);
});
