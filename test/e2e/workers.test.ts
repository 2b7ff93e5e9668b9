// `[runtime] workers`: several data-plane processes behind one control plane. Real processes,
// real sockets: what an operator sees in /status, /metrics and on the wire.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { atEnd, adminJson, connectOutcome, freePort, requireTool, httpRequest, requestsUnderLoad, rewriteEvery, runCli, SOCKET_ACTIVATE, socketActivated, startBalancer, startEcho, startNamed, startWorker, testConfig, waitFor } from '../helpers';

interface WorkerRow {
  index: number;
  pid: number | null;
  up: boolean;
  open: number;
  accepted: number;
  restarts: number;
}
interface Status {
  config: { generation: number };
  connections: { active: number; total: number; rejected: number };
  backends: { name: string; total: number; active: number; state: string }[];
  workers?: WorkerRow[];
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * Open `n` connections at once, read one line on each and hang up; resolves with the lines
 * ("closed" for one closed without a line, "timeout" for one that got nothing in `timeoutMs`).
 */
async function burst(port: number, n: number, timeoutMs = 5000): Promise<string[]> {
  return Promise.all(
    Array.from({ length: n }, () =>
      new Promise<string>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString();
          // the named servers answer one line, then wait for the client to hang up
          if (got.includes('\n')) s.end();
        });
        s.on('error', () => resolve(`error`));
        s.on('close', () => resolve(got.trim() || 'closed'));
        s.setTimeout(timeoutMs, () => {
          got ||= 'timeout';
          s.destroy();
        });
      }),
    ),
  );
}

/** Hold `n` connections through the proxy to an echo backend; each proves it flows or was closed. */
async function hold(port: number, n: number): Promise<{ flowing: net.Socket[]; closed: number }> {
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      new Promise<net.Socket | null>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('error', () => resolve(null));
        s.on('close', () => resolve(null));
        s.once('data', () => resolve(s));
        s.write(`ping ${i}`);
      }),
    ),
  );
  const flowing = results.filter((s): s is net.Socket => s !== null);
  return { flowing, closed: n - flowing.length };
}


function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + (labels ? `{${labels}` : '')) && (labels || line.startsWith(name + '{') || line.startsWith(name + ' '))) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

test('workers = 2: two data-plane processes serve one address; status and metrics add up', async (t) => {
  const backends = await Promise.all(['n1', 'n2'].map((n) => startNamed(t, n)));
  const lb = await startBalancer(t, testConfig(backends.map((b, i) => ({ address: b.address, name: `n${i + 1}` })), { runtime: 'workers = 2' }), { stopSignal: 'SIGKILL' });
  const st = await adminJson<Status>(lb, '/status');
  assert.equal(st.workers?.length, 2);
  const pids = st.workers!.map((w) => w.pid!);
  assert.ok(pids.every((p) => p > 0 && p !== lb.proc.pid && alive(p)), `worker pids ${pids} are live processes other than the primary ${lb.proc.pid}`);
  // bursts of concurrent connections: the kernel spreads them over both workers
  let answers: string[] = [];
  for (let round = 0; round < 20; round++) {
    answers = answers.concat(await burst(lb.port, 20));
    const s = await adminJson<Status>(lb, '/status');
    if (s.workers!.every((w) => w.accepted > 0)) break;
  }
  assert.ok(answers.every((a) => a === 'n1' || a === 'n2'), `every connection answered by a backend: ${[...new Set(answers)]}`);
  const after = await adminJson<Status>(lb, '/status');
  assert.ok(after.workers!.every((w) => w.accepted > 0), `both workers accepted: ${JSON.stringify(after.workers)}`);
  // the control plane's figures are the sum of the workers'
  assert.equal(after.connections.total, answers.length);
  assert.equal(after.workers!.reduce((n, w) => n + w.accepted, 0), answers.length);
  assert.equal(after.backends.reduce((n, b) => n + b.total, 0), answers.length);
  for (const name of ['n1', 'n2']) {
    assert.equal(after.backends.find((b) => b.name === name)!.total, answers.filter((a) => a === name).length, `${name}: status total = answers seen`);
  }
  const m = (await lb.admin('/metrics')).body;
  assert.equal(metric(m, 'lemonade_connections_total'), answers.length);
  assert.equal(metric(m, 'lemonade_connection_duration_seconds_count'), answers.length);
  assert.equal(metric(m, 'lemonade_backend_connect_duration_seconds_count'), answers.length);
  assert.equal(metric(m, 'lemonade_bytes_total', 'service="default",backend="n1",direction="out"'), answers.filter((a) => a === 'n1').length * 3);
});

test('workers = 2: a reload reaches every worker', async (t) => {
  const backends = await Promise.all(['n1', 'n2'].map((n) => startNamed(t, n)));
  const cfg = (list: number[]): string =>
    testConfig(list.map((i) => ({ address: backends[i]!.address, name: `n${i + 1}`, id: i })), { runtime: 'workers = 2' });
  const lb = await startBalancer(t, cfg([0]), { stopSignal: 'SIGKILL' });
  assert.deepEqual([...new Set(await burst(lb.port, 30))], ['n1']);
  lb.writeConfig(cfg([1]));
  await waitFor(async () => (await adminJson<Status>(lb, '/status')).config.generation === 2, 10_000, 'generation 2');
  // every worker applied it: no connection, on any worker, goes to n1 any more
  for (let i = 0; i < 5; i++) assert.deepEqual([...new Set(await burst(lb.port, 30))], ['n2']);
  const st = await adminJson<Status>(lb, '/status');
  assert.ok(st.workers!.every((w) => w.up));
});

test('workers = 2: reload under load: four clients, >= 1200 requests, the file rewritten every 150 ms, 0 failures', async (t) => {
  const w = await Promise.all(['w1', 'w2', 'w3'].map((n) => startWorker(t, n)));
  const strategies = ['round_robin', 'weighted_round_robin', 'least_connections', 'fastest_response', 'adaptive'];
  const config = (i: number): string =>
    testConfig(
      w.map((x, k) => ({ address: x.address, name: `w${k + 1}`, weight: 1 + ((i + k) % 4) })),
      { strategy: strategies[i % strategies.length]!, runtime: 'workers = 2\nconfig_watch_interval_millis = 1000' },
    );
  const lb = await startBalancer(t, config(0), { stopSignal: 'SIGKILL' });
  const writer = rewriteEvery(lb, config, 150);
  // new connections land on either worker, keep-alive ones stay on theirs
  const { ok, failures } = await requestsUnderLoad(lb.port, { clients: 4, more: (n) => n < 1200 || writer.count() < 20, accept: (b) => /^w[123]\n$/.test(b) });
  await writer.stop();
  const st = await adminJson<Status>(lb, '/status');
  t.diagnostic(`workers = 2, reload under load: ${ok} ok, ${failures.length} failed, ${writer.count()} rewrites, generation ${st.config.generation}, accepted per worker ${st.workers!.map((x) => x.accepted).join('/')}`);
  assert.deepEqual(failures, []);
  assert.ok(ok >= 1200, `${ok} requests`);
  assert.ok(st.config.generation >= 15, `reloads applied: generation ${st.config.generation}`);
  assert.ok(st.workers!.every((x) => x.up && x.restarts === 0));
});

test('workers = 2: a reload that changes runtime.workers applies the rest and keeps the running number', async (t) => {
  const backends = await Promise.all(['n1'].map((n) => startNamed(t, n)));
  const lb = await startBalancer(t, testConfig([{ address: backends[0]!.address, name: 'n1' }], { runtime: 'workers = 2' }), { stopSignal: 'SIGKILL' });
  const r = await lb.admin('/reload', 'POST');
  assert.equal(JSON.parse(r.body).result, 'success');
  writeFileSync(lb.configPath, readFileSync(lb.configPath, 'utf8').replace('workers = 2', 'workers = 3').replace('name = "n1"', 'name = "n1"\nweight = 4'));
  const out = JSON.parse((await lb.admin('/reload', 'POST')).body) as { result: string; generation: number; changes: string };
  assert.equal(out.result, 'success');
  assert.match(out.changes, /runtime\.workers stays 2 until a restart/);
  await lb.waitForLog((l) => l['msg'] === 'runtime.workers changes only with a restart', 2000, 'the warning');
  const st = await adminJson<Status & { backends: { weight: number }[] }>(lb, '/status');
  assert.equal(st.workers!.length, 2);
  assert.equal(st.backends[0]!.weight, 4, 'the rest of the file applied');
});

test('workers = 2: a new listen_address is bound by all workers before the old one closes; a busy one fails the whole reload', async (t) => {
  const backends = await Promise.all(['n1'].map((n) => startNamed(t, n)));
  const lb = await startBalancer(t, testConfig([{ address: backends[0]!.address, name: 'n1' }], { runtime: 'workers = 2' }), { stopSignal: 'SIGKILL' });
  const blocker = net.createServer();
  atEnd(t, () => {
    blocker.close();
  });
  const text = readFileSync(lb.configPath, 'utf8');
  const taken = await freePort();
  await new Promise<void>((r) => blocker.listen(taken, '127.0.0.1', () => r()));
  writeFileSync(lb.configPath, text.replace(`"127.0.0.1:${lb.port}"`, `"127.0.0.1:${taken}"`).replace('connect_timeout = "1s"', 'connect_timeout = "2s"'));
  const failed = await waitFor(async () => {
    const st = await adminJson<{ config: { generation: number; last_reload: { result: string; error: string } | null } }>(lb, '/status');
    return st.config.last_reload?.result === 'failure' ? st : null;
  }, 5000, 'the bind failure');
  assert.match(failed.config.last_reload!.error, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken} \\(proxy\\): EADDRINUSE`));
  assert.equal(failed.config.generation, 1);
  assert.deepEqual([...new Set(await burst(lb.port, 20))], ['n1'], 'still serving on the old port');
  const fresh = await freePort();
  writeFileSync(lb.configPath, text.replace(`"127.0.0.1:${lb.port}"`, `"127.0.0.1:${fresh}"`));
  await waitFor(async () => (await adminJson<Status>(lb, '/status')).config.generation === 2, 5000, 'generation 2');
  assert.deepEqual([...new Set(await burst(fresh, 40))], ['n1']);
  await waitFor(async () => (await connectOutcome(lb.port)) === 'ECONNREFUSED', 5000, 'the old port to close in every worker');
  assert.equal((await adminJson<{ listen_address: string }>(lb, '/status')).listen_address, `127.0.0.1:${fresh}`);
});

test('workers = 2: max_connections and a backend max_connections hold across workers', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address, name: 'e', max_connections: 3 }], { runtime: 'workers = 2', proxy: 'max_connections = 5' }), { stopSignal: 'SIGKILL' });
  const { flowing, closed } = await hold(lb.port, 16);
  t.after(() => flowing.forEach((s) => s.destroy()));
  // shares: the global cap 5 splits 3 + 2, the backend's 3 splits 2 + 1; the backend's cap binds
  assert.ok(flowing.length <= 3, `at most 3 flowing (the backend's cap), got ${flowing.length}`);
  assert.ok(flowing.length >= 1, 'some flow');
  assert.equal(closed, 16 - flowing.length);
  const st = await adminJson<Status>(lb, '/status');
  assert.equal(st.backends[0]!.active, flowing.length);
  assert.equal(st.connections.rejected, closed, 'every refused connection is counted');
});

test('workers = 2: health, drain and disable reach every worker', async (t) => {
  const w = await Promise.all(['w1', 'w2'].map((n) => startWorker(t, n)));
  const lb = await startBalancer(
    t,
    testConfig(w.map((x, i) => ({ address: x.address, name: `w${i + 1}` })), { runtime: 'workers = 2', health: 'interval = "200ms"\ntimeout = "150ms"\nunhealthy_threshold = 2' }), { stopSignal: 'SIGKILL' }
  );
  const names = async (n: number): Promise<Set<string>> => {
    const got = new Set<string>();
    const agent = false;
    await Promise.all(Array.from({ length: n }, async () => got.add((await httpRequest(lb.port, '/', { agent })).body.trim())));
    return got;
  };
  assert.deepEqual([...(await names(20))].sort(), ['w1', 'w2']);
  // operator drain: no new connections to w1 from any worker
  assert.equal((await lb.admin('/backends/w1/drain', 'POST')).status, 200);
  for (let i = 0; i < 3; i++) assert.deepEqual([...(await names(20))], ['w2']);
  assert.equal((await lb.admin('/backends/w1/enable', 'POST')).status, 200);
  await waitFor(async () => (await names(20)).has('w1'), 5000, 'w1 back in rotation');
  // health: w2 goes away; once marked down every worker stops sending to it
  await w[1]!.stop();
  await waitFor(async () => (await adminJson<{ state: string; name: string }[]>(lb, '/backends')).find((b) => b.name === 'w2')!.state === 'unhealthy', 5000, 'w2 down');
  for (let i = 0; i < 3; i++) assert.deepEqual([...(await names(20))], ['w1']);
});

test('workers = 2: a killed worker is replaced, traffic goes on, counters never go back', async (t) => {
  const backends = await Promise.all(['n1'].map((n) => startNamed(t, n)));
  const lb = await startBalancer(t, testConfig([{ address: backends[0]!.address, name: 'n1' }], { runtime: 'workers = 2' }), { stopSignal: 'SIGKILL' });
  for (let i = 0; i < 10; i++) await burst(lb.port, 10);
  const before = await adminJson<Status>(lb, '/status');
  assert.equal(before.connections.total, 100);
  const victim = before.workers![0]!.pid!;
  process.kill(victim, 'SIGKILL');
  const after = await waitFor(
    async () => {
      const s = await adminJson<Status>(lb, '/status');
      const w0 = s.workers![0]!;
      return w0.up && w0.pid !== victim && w0.restarts === 1 ? s : null;
    },
    10_000,
    'worker 0 replaced',
  );
  assert.ok(!alive(victim));
  assert.ok(after.connections.total >= 100, `total kept: ${after.connections.total}`);
  await lb.waitForLog((l) => l['msg'] === 'data-plane worker exited unexpectedly: starting a new one', 1000, 'the log line');
  // the replacement serves: bursts until it accepted some, all answered
  await waitFor(
    async () => {
      const a = await burst(lb.port, 20);
      assert.ok(a.every((x) => x === 'n1'), `all answered: ${a}`);
      return (await adminJson<Status>(lb, '/status')).workers![0]!.accepted > 0;
    },
    10_000,
    'the new worker to accept',
  );
  const m = (await lb.admin('/metrics')).body;
  assert.ok(metric(m, 'lemonade_connections_total') >= 120);
  assert.equal(metric(m, 'lemonade_worker_restarts_total'), 1);
  assert.equal(metric(m, 'lemonade_workers'), 2);
  const events = (await adminJson<{ message: string }[]>(lb, '/events')).map((e) => e.message);
  assert.ok(events.some((e) => e.includes(`worker 0 (pid ${victim}) exited (SIGKILL); restarting`)), events.join('\n'));
});

test('workers = 2: SIGTERM drains the connections open in every worker, then nothing is left running', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'workers = 2\ndrain_timeout_millis = 20000' }), { stopSignal: 'SIGKILL' });
  const { flowing } = await hold(lb.port, 12);
  assert.equal(flowing.length, 12);
  const st = await adminJson<Status>(lb, '/status');
  const pids = st.workers!.map((w) => w.pid!);
  lb.proc.kill('SIGTERM');
  await lb.waitForLog((l) => l['msg'] === 'shutting down: no new connections, draining open ones', 5000, 'the shutdown line');
  // new connections are refused, open ones keep flowing
  // a probe accepted just before the listeners closed is one more connection to drain
  let probesAccepted = 0;
  await waitFor(
    async () => {
      const o = await connectOutcome(lb.port);
      if (o === 'connected') probesAccepted++;
      return o === 'ECONNREFUSED';
    },
    5000,
    'the listener to close',
  );
  for (const s of flowing) {
    const got = new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
    s.write('still');
    assert.equal(await got, 'still');
  }
  for (const s of flowing) s.end();
  assert.equal(await lb.exited, 0);
  const last = await lb.waitForLog((l) => String(l['msg']).startsWith('stopped:'), 1000, 'the final line');
  assert.ok(Number(last['drained']) >= 12 && Number(last['drained']) <= 12 + probesAccepted, `drained ${last['drained']} (12 held, ${probesAccepted} probes)`);
  assert.equal(last['cut'], 0);
  await waitFor(() => pids.every((p) => !alive(p)), 5000, 'the workers to exit');
});

test('workers = 2: when the control plane is killed, the workers exit too', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'workers = 2' }), { stopSignal: 'SIGKILL' });
  const pids = (await adminJson<Status>(lb, '/status')).workers!.map((w) => w.pid!);
  assert.ok(pids.every(alive));
  lb.proc.kill('SIGKILL');
  await lb.exited;
  await waitFor(() => pids.every((p) => !alive(p)), 5000, 'the orphaned workers to exit');
});

test('workers = 2 under socket activation: the workers accept from the socket systemd passed', async (t) => {
  if (!requireTool(t, 'systemd-socket-activate (package systemd)', SOCKET_ACTIVATE !== '')) return;
  const backends = await Promise.all(['n1'].map((n) => startNamed(t, n)));
  const [port, adminPort, unused] = [await freePort(), await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'lemonade-sa-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const conf = join(dir, 'config.toml');
  // the file's listen_address is not used: the passed socket is
  writeFileSync(conf, testConfig([{ address: backends[0]!.address, name: 'n1' }], { runtime: 'workers = 2' }).replace('"127.0.0.1:0"', `"127.0.0.1:${unused}"`).replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`));
  const { proc, stderr, exited } = await socketActivated(t, [port], conf);
  // the first connection starts the service (systemd-socket-activate waits for it): it waits for
  // the whole start (the control plane, two workers, each one's raw relay self-test), seconds on
  // a loaded host
  assert.deepEqual(await burst(port, 1, 20_000), ['n1']);
  const st = await waitFor(async () => {
    try {
      return JSON.parse((await httpRequest(adminPort, '/status')).body) as Status & { listen_address: string };
    } catch {
      return null;
    }
  }, 10_000, 'the admin API');
  assert.equal(st.listen_address, `127.0.0.1:${port}`);
  assert.equal(st.workers!.length, 2);
  assert.deepEqual([...new Set(await burst(port, 30))], ['n1']);
  assert.equal((await connectOutcome(unused)), 'ECONNREFUSED', 'the address in the file is not bound');
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, stderr());
});

test('workers = 0 runs one worker per CPU; a port in use fails the start with exit 1 and the bind error', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'workers = 0' }), { stopSignal: 'SIGKILL' });
  const st = await adminJson<Status>(lb, '/status');
  const cpus = availableParallelism();
  if (cpus > 1) assert.equal(st.workers?.length, cpus);
  else assert.equal(st.workers, undefined, 'one CPU: the single-process data plane');

  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  t.after(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  const adminPort = await freePort();
  // from the environment alone (no --config: a path named there must exist)
  const r = await runCli(['lb'], {
    env: {
      LEMONADE_LB_LISTEN_ADDRESS: `127.0.0.1:${port}`,
      LEMONADE_LB_ADMIN_ADDRESS: `127.0.0.1:${adminPort}`,
      LEMONADE_LB_BACKEND_ADDRESSES: echo.address,
      LEMONADE_LB_WORKERS: '2',
    },
    timeoutMs: 15_000,
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(proxy\\): EADDRINUSE`));
});

test('/health is 503 while no worker listens (all killed), and healthy again once they are back', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'workers = 2' }), { stopSignal: 'SIGKILL' });
  const health = async (): Promise<number> => (await lb.admin('/health')).status;
  await waitFor(async () => (await health()) === 200, 5000, '/health 200 at start');
  const pids = (await adminJson<Status>(lb, '/status')).workers!.map((w) => w.pid!);
  assert.equal(pids.length, 2);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  // the replacements take a restart delay and a process start: /health says so meanwhile
  const down = await waitFor(async () => {
    const r = await lb.admin('/health');
    return r.status === 503 ? r.body : null;
  }, 5000, '/health 503 with no worker listening', 5);
  assert.match(down, /"status": "unhealthy"/);
  assert.equal((await lb.admin('/ready')).status, 503);
  await waitFor(async () => (await health()) === 200, 10_000, '/health 200 once the workers are back');
  const st = await adminJson<Status>(lb, '/status');
  assert.ok(st.workers!.every((w) => w.up && !pids.includes(w.pid!)), JSON.stringify(st.workers));
});
