// Hot reload as an operator does it: edit and save (in place, rename-save, symlink swap,
// truncated then full), SIGHUP, POST /reload; invalid edits change nothing; removed backends
// drain; nothing a reload does drops a connection.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync, renameSync, symlinkSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  atEnd,
  type Ends,
  startBalancer,
  startNamed,
  startTcpServer,
  startWorker,
  testConfig,
  tcpExchange,
  waitFor,
  adminJson,
  freePort,
  type Balancer,
  rewriteEvery,
  requestsUnderLoad,
  type TestServer,
} from '../helpers';

type Status = {
  strategy: string;
  config: { generation: number; hash: string; last_reload: { result: string; error: string | null } | null };
  backends: { name: string; weight: number; state: string; total: number; address: string }[];
};

const status = (lb: Balancer): Promise<Status> => adminJson<Status>(lb, '/status');

async function generationAtLeast(lb: Balancer, g: number, timeoutMs = 8000): Promise<Status> {
  return waitFor(async () => {
    const s = await status(lb);
    return s.config.generation >= g ? s : null;
  }, timeoutMs, `config generation ${g}`);
}

async function setup(t: Ends, n = 2): Promise<{ servers: TestServer[]; names: string[] }> {
  const names = Array.from({ length: n }, (_, i) => `s${i + 1}`);
  const servers = await Promise.all(names.map((x) => startNamed(t, x)));
  return { servers, names };
}

function cfg(servers: TestServer[], weights: number[], extra: Parameters<typeof testConfig>[1] = {}): string {
  return testConfig(
    servers.map((s, i) => ({ address: s.address, name: `s${i + 1}`, weight: weights[i] ?? 1 })),
    { strategy: 'weighted_round_robin', runtime: 'config_watch_interval_millis = 60000', ...extra },
  );
}

test('an in-place write applies once, with the diff logged and the generation bumped', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1]));
  const saved = Date.now();
  lb.writeConfig(cfg(servers, [5, 1]));
  const s = await generationAtLeast(lb, 2);
  t.diagnostic(`save → applied: ${Date.now() - saved} ms`);
  assert.equal(s.backends.find((b) => b.name === 's1')!.weight, 5);
  const line = await lb.waitForLog((l) => l['msg'] === 'config reloaded: ~s1 weight 1→5', 2000, 'the diff line');
  assert.equal(line['generation'], 2);
  assert.equal((await status(lb)).config.last_reload!.result, 'success');
  assert.match((await lb.admin('/metrics')).body, /lemonade_config_generation 2/);
  assert.match((await lb.admin('/metrics')).body, /lemonade_config_reloads_total\{result="success"\} 1/);
  // weights 5:1 over 12 picks
  const counts = new Map<string, number>();
  for (let i = 0; i < 12; i++) {
    const n = (await tcpExchange(lb.port, '')).data.toString().trim();
    counts.set(n, (counts.get(n) ?? 0) + 1);
  }
  assert.deepEqual(Object.fromEntries(counts), { s1: 10, s2: 2 });
});

test('rename-save twice in a row applies the last content', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1]));
  const current = require('node:fs').readFileSync(lb.configPath, 'utf8') as string;
  for (const w of [3, 7]) {
    // as vim and most editors do: write a temp file, rename it over the original
    const tmp = join(lb.dir, `.config.toml.swp${w}`);
    writeFileSync(tmp, current.replace(/weight = 1\n/, `weight = ${w}\n`));
    renameSync(tmp, lb.configPath);
  }
  await waitFor(async () => (await status(lb)).backends.find((b) => b.name === 's1')!.weight === 7, 8000, 'weight 7');
  // and it settles there: no later reload brings back 3
  const s = await status(lb);
  assert.equal(s.backends.find((b) => b.name === 's1')!.weight, 7);
});

test('a Kubernetes-style symlink swap of a ConfigMap directory is seen', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1]));
  const fs = require('node:fs') as typeof import('node:fs');
  const current = fs.readFileSync(lb.configPath, 'utf8');
  // config.toml -> ..data/config.toml, ..data -> ..v1
  mkdirSync(join(lb.dir, '..v1'));
  writeFileSync(join(lb.dir, '..v1', 'config.toml'), current);
  symlinkSync('..v1', join(lb.dir, '..data'));
  symlinkSync('..data/config.toml', join(lb.dir, 'config.toml.tmp'));
  renameSync(join(lb.dir, 'config.toml.tmp'), lb.configPath);
  // now swap ..data atomically to ..v2 with a new weight
  mkdirSync(join(lb.dir, '..v2'));
  writeFileSync(join(lb.dir, '..v2', 'config.toml'), current.replace(/weight = 1\n/, 'weight = 4\n'));
  symlinkSync('..v2', join(lb.dir, '..data_tmp'));
  renameSync(join(lb.dir, '..data_tmp'), join(lb.dir, '..data'));
  await waitFor(async () => (await status(lb)).backends.find((b) => b.name === 's1')!.weight === 4, 8000, 'weight 4 after the swap');
});

test('a truncated write followed by the full write applies the full one', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1]));
  lb.writeConfig(cfg(servers, [6, 1]));
  const full = require('node:fs').readFileSync(lb.configPath, 'utf8') as string;
  // first the truncated half (invalid TOML or missing backends), then after a pause the rest
  writeFileSync(lb.configPath, full.slice(0, Math.floor(full.length / 2)));
  await waitFor(async () => (await status(lb)).config.last_reload?.result === 'failure', 5000, 'the truncated file to be refused');
  assert.equal((await status(lb)).config.generation, 1, 'still the first generation');
  writeFileSync(lb.configPath, full);
  const s = await generationAtLeast(lb, 2);
  assert.equal(s.backends.find((b) => b.name === 's1')!.weight, 6);
  assert.equal(s.config.last_reload!.result, 'success');
});

test('an invalid edit keeps serving the old config and is reported', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1]));
  const before = await status(lb);
  lb.writeConfig(cfg(servers, [1, 1]).replace('[proxy]', '[proxy]\nmax_connections = -1'));
  const s = await waitFor(async () => {
    const x = await status(lb);
    return x.config.last_reload?.result === 'failure' ? x : null;
  }, 5000, 'reload failure');
  assert.match(s.config.last_reload!.error!, /proxy\.max_connections \(line \d+\): must be greater than 0, got -1/);
  assert.equal(s.config.generation, 1);
  assert.equal(s.config.hash, before.config.hash, 'the applied hash is unchanged');
  assert.match((await lb.admin('/metrics')).body, /lemonade_config_reloads_total\{result="failure"\} 1/);
  await lb.waitForLog((l) => l['msg'] === 'config reload failed; the running configuration is unchanged', 2000, 'the error log line');
  // still serving
  const r = await tcpExchange(lb.port, '');
  assert.match(r.data.toString(), /^s[12]\n$/);
  // POST /reload says why, with the errors
  const res = await lb.admin('/reload', 'POST');
  assert.equal(res.status, 422);
  const body = JSON.parse(res.body) as { result: string; errors: { path: string }[] };
  assert.equal(body.result, 'failure');
  assert.deepEqual(body.errors.map((e) => e.path), ['proxy.max_connections']);
});

test('SIGHUP reloads and never kills; POST /reload answers with the result', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1], { runtime: 'config_watch_interval_millis = 600000' }));
  lb.proc.kill('SIGHUP');
  await generationAtLeast(lb, 2);
  lb.proc.kill('SIGHUP');
  await generationAtLeast(lb, 3);
  assert.equal(lb.proc.exitCode, null, 'still running');
  const r = await lb.admin('/reload', 'POST');
  assert.equal(r.status, 200);
  const body = JSON.parse(r.body) as { result: string; generation: number; changes: string };
  assert.equal(body.result, 'success');
  assert.equal(body.generation, 4);
  assert.equal(body.changes, 'no changes');
});

test('a weight change keeps the backend in service with its figures and health', async (t) => {
  const { servers } = await setup(t);
  const lb = await startBalancer(t, cfg(servers, [1, 1]));
  for (let i = 0; i < 4; i++) await tcpExchange(lb.port, '');
  await waitFor(async () => (await adminJson<{ last_check: unknown }[]>(lb, '/backends')).every((b) => b.last_check), 5000, 'health checks ran');
  const before = (await status(lb)).backends.find((b) => b.name === 's1')!;
  lb.writeConfig(cfg(servers, [9, 1]));
  const s = await generationAtLeast(lb, 2);
  const after = s.backends.find((b) => b.name === 's1')!;
  assert.equal(after.state, 'healthy');
  assert.equal(after.total, before.total, 'connection count kept');
  assert.equal(after.weight, 9);
});

/** An echo server that first writes its name: a client knows where it landed (health checks connect too). */
function greeter(t: Ends, name: string): Promise<TestServer> {
  return startTcpServer(t, (s) => {
    s.write(`${name}\n`);
    s.pipe(s);
  });
}

test('a removed backend drains: its long connection keeps flowing, then is closed after drain_timeout', async (t) => {
  const echoA = await greeter(t, 'a');
  const echoB = await greeter(t, 'b');
  const config = (both: boolean): string =>
    testConfig(
      [{ address: echoA.address, name: 'a', id: 0 }, ...(both ? [{ address: echoB.address, name: 'b', id: 1 }] : [])],
      { strategy: 'round_robin', runtime: 'drain_timeout_millis = 1500\nconfig_watch_interval_millis = 60000' },
    );
  const lb = await startBalancer(t, config(true));
  // open connections until one lands on b (round robin: within two)
  let onB: net.Socket | null = null;
  const others: net.Socket[] = [];
  t.after(() => {
    onB?.destroy();
    for (const o of others) o.destroy();
  });
  for (let i = 0; i < 4 && !onB; i++) {
    const s = net.connect({ host: '127.0.0.1', port: lb.port });
    const name = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString().trim())));
    if (name === 'b') onB = s;
    else others.push(s);
  }
  assert.ok(onB, 'a connection on b');
  const conn = onB;
  let closedAt = 0;
  conn.on('close', () => (closedAt = Date.now()));
  lb.writeConfig(config(false));
  const removedAt = Date.now();
  await generationAtLeast(lb, 2);
  await lb.waitForLog((l) => l['msg'] === 'config reloaded: -b(draining)', 2000, 'the diff line');
  const bs = await adminJson<{ name: string; state: string; active: number }[]>(lb, '/backends');
  assert.deepEqual(bs.find((b) => b.name === 'b'), { ...bs.find((b) => b.name === 'b'), state: 'draining', active: 1 });
  // it keeps flowing during the drain
  const echoed = new Promise<string>((r) => conn.once('data', (d: Buffer) => r(d.toString())));
  conn.write('still here');
  assert.equal(await echoed, 'still here');
  // new connections all go to a
  for (let i = 0; i < 3; i++) {
    const before = echoB.accepted;
    await tcpExchange(lb.port, 'x');
    assert.equal(echoB.accepted, before);
  }
  await waitFor(() => closedAt > 0, 5000, 'the drained connection to be closed');
  const lived = closedAt - removedAt;
  assert.ok(lived >= 1200 && lived < 4000, `closed ${lived} ms after removal (drain_timeout 1500 ms)`);
});

test('a new listen_address is bound before the old one closes; a bind failure fails the whole reload', async (t) => {
  const { servers } = await setup(t, 1);
  const lb = await startBalancer(t, cfg(servers, [1]));
  const blocker = net.createServer();
  atEnd(t, () => {
    blocker.close();
  });
  const fs = require('node:fs') as typeof import('node:fs');
  const text = fs.readFileSync(lb.configPath, 'utf8');
  // a port already taken: the reload fails and nothing changes (not even the weight)
  const taken = await freePort();
  await new Promise<void>((r) => blocker.listen(taken, '127.0.0.1', () => r()));
  fs.writeFileSync(lb.configPath, text.replace(`"127.0.0.1:${lb.port}"`, `"127.0.0.1:${taken}"`).replace('weight = 1', 'weight = 3'));
  const failed = await waitFor(async () => {
    const s = await status(lb);
    return s.config.last_reload?.result === 'failure' ? s : null;
  }, 5000, 'the bind failure');
  assert.match(failed.config.last_reload!.error!, /cannot listen on 127\.0\.0\.1:\d+ \(proxy\): EADDRINUSE/);
  assert.equal(failed.backends[0]!.weight, 1, 'nothing of the file was applied');
  assert.equal((await tcpExchange(lb.port, '')).data.toString(), 's1\n');
  // a free port: applied, the old one closed
  const fresh = await freePort();
  const old = lb.port;
  fs.writeFileSync(lb.configPath, text.replace(`"127.0.0.1:${lb.port}"`, `"127.0.0.1:${fresh}"`));
  await generationAtLeast(lb, 2);
  assert.equal((await tcpExchange(fresh, '')).data.toString(), 's1\n');
  const r = await tcpExchange(old, '');
  assert.ok(r.error === 'ECONNREFUSED', `old port refused (${r.error})`);
});

test('reload under load: six clients, >= 1500 requests, the file rewritten every 150 ms, 0 failures', async (t) => {
  const workers = await Promise.all(['w1', 'w2', 'w3'].map((n) => startWorker(t, n)));
  const strategies = ['round_robin', 'weighted_round_robin', 'least_connections', 'fastest_response', 'adaptive'];
  const config = (i: number): string =>
    testConfig(
      workers.map((w, k) => ({ address: w.address, name: w.address === workers[k]!.address ? `w${k + 1}` : '', weight: 1 + ((i + k) % 4) })),
      { strategy: strategies[i % strategies.length]!, runtime: 'config_watch_interval_millis = 1000' },
    );
  const lb = await startBalancer(t, config(0));
  const writer = rewriteEvery(lb, config, 150);
  const started = Date.now();
  const { ok, failures } = await requestsUnderLoad(lb.port, { clients: 6, more: (n) => n < 1600 || writer.count() < 25, accept: (b) => /^w[123]\n$/.test(b) });
  await writer.stop();
  const s = await status(lb);
  t.diagnostic(`reload under load: ${ok} requests ok, ${failures.length} failed, ${writer.count()} rewrites, generation ${s.config.generation}, ${Date.now() - started} ms`);
  assert.deepEqual(failures, []);
  assert.ok(ok >= 1500, `${ok} requests`);
  assert.ok(s.config.generation >= 20, `reloads applied: generation ${s.config.generation}`);
});

test('a backend removed and re-added with the same id and address takes its draining connections back; draining ones stay in lemonade_connections_active', async (t) => {
  // each greets with its name, then echoes (health checks connect too: the greeting, not a count
  // of accepted connections, tells where a client landed)
  const echoes = await Promise.all(['a', 'b', 'c'].map((n) => greeter(t, n)));
  const [echoA, echoB, echoC] = echoes as [TestServer, TestServer, TestServer];
  const config = (names: string[]): string =>
    testConfig(
      [
        { address: echoA.address, name: 'a', id: 0 },
        ...(names.includes('b') ? [{ address: echoB.address, name: 'b', id: 1 }] : []),
        ...(names.includes('c') ? [{ address: echoC.address, name: 'c', id: 2 }] : []),
      ],
      { strategy: 'round_robin', runtime: 'drain_timeout_millis = 1500\nconfig_watch_interval_millis = 60000' },
    );
  const lb = await startBalancer(t, config(['b', 'c']));
  const clients: net.Socket[] = [];
  atEnd(t, () => {
    for (const c of clients) c.destroy();
  });
  // round robin over three: one connection each within three connects
  const landed = new Map<string, net.Socket>();
  for (let i = 0; i < 3; i++) {
    const s = net.connect({ host: '127.0.0.1', port: lb.port });
    s.on('error', () => {});
    clients.push(s);
    const name = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString().trim())));
    landed.set(name, s);
  }
  assert.deepEqual([...landed.keys()].sort(), ['a', 'b', 'c']);
  const onB = landed.get('b')!;
  const onC = landed.get('c')!;
  let bClosed = false;
  let cClosed = false;
  onB.on('close', () => (bClosed = true));
  onC.on('close', () => (cClosed = true));

  lb.writeConfig(config([]));
  await lb.admin('/reload', 'POST');
  await generationAtLeast(lb, 2);
  const metrics = (await lb.admin('/metrics')).body;
  assert.match(metrics, /lemonade_connections_active\{service="default",backend="b"\} 1/, 'a draining connection is still active');
  assert.match(metrics, /lemonade_connections_active\{service="default",backend="c"\} 1/);

  lb.writeConfig(config(['b']));
  await lb.admin('/reload', 'POST');
  await generationAtLeast(lb, 3);
  // c stays removed: its connection is cut at the first removal's deadline; b's is not
  await waitFor(() => cClosed, 6000, "c's connection to be cut at the drain deadline");
  assert.equal(bClosed, false, "b came back: its connection is not cut");
  const echoed = new Promise<string>((r) => onB.once('data', (d: Buffer) => r(d.toString())));
  onB.write('still b');
  assert.equal(await echoed, 'still b');
  const bs = await adminJson<{ name: string; state: string; active: number }[]>(lb, '/backends');
  assert.equal(bs.find((b) => b.name === 'b')!.state, 'healthy');
  assert.equal(bs.find((b) => b.name === 'b')!.active, 1);
});

test('round robin carries on across reloads that keep the backends (no restart at the first backend)', async (t) => {
  const { servers } = await setup(t, 3);
  const config = (max: number): string =>
    testConfig(servers.map((s, i) => ({ address: s.address, name: `s${i + 1}`, id: i })), {
      strategy: 'round_robin',
      proxy: `max_connections = ${max}`,
      runtime: 'config_watch_interval_millis = 60000',
    });
  const lb = await startBalancer(t, config(1000));
  const seen: string[] = [];
  for (let g = 1; g <= 4; g++) {
    seen.push((await tcpExchange(lb.port, '')).data.toString().trim());
    lb.writeConfig(config(1000 + g));
    await lb.admin('/reload', 'POST');
    await generationAtLeast(lb, g + 1);
  }
  assert.deepEqual(seen, ['s1', 's2', 's3', 's1']);
});
