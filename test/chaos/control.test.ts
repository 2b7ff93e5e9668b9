// Chaos: the control plane under load — a reload every 100 ms for 30 s, and SIGTERM while
// requests are in flight. Every request's outcome is counted and printed (t.diagnostic).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startBalancer, startWorker, startNamed, testConfig, adminJson, waitFor } from '../helpers';
import { startLoad, tally, sleep } from './lib';

test('a reload every 100 ms for 30 s under load fails no request', async (t) => {
  const workers = await Promise.all(['w1', 'w2', 'w3'].map((n) => startWorker(n, ['--delay', '10'])));
  t.after(() => Promise.all(workers.map((w) => w.stop())));
  // A: three backends with weights; B: w3 removed (it drains), other weights — and back.
  // drain_timeout is longer than the test: keep-alive connections to w3 are meant to live until
  // they end, and cutting them at a drain deadline is not what this scenario measures.
  const cfgA = testConfig(
    workers.map((w, i) => ({ address: w.address, name: `w${i + 1}`, id: i, weight: i + 1 })),
    { strategy: 'weighted_round_robin', runtime: 'drain_timeout_millis = 120000' },
  );
  const cfgB = testConfig(
    workers.slice(0, 2).map((w, i) => ({ address: w.address, name: `w${i + 1}`, id: i, weight: 3 - i })),
    { strategy: 'least_connections', runtime: 'drain_timeout_millis = 120000' },
  );
  const lb = await startBalancer(cfgA);
  t.after(() => lb.stop());
  const gen0 = (await adminJson<{ config: { generation: number } }>(lb, '/status')).config.generation;
  const load = startLoad(lb.port, 16, { maxMs: 60_000 });
  const end = Date.now() + 30_000;
  let reloads = 0;
  let reloadFailures = 0;
  let next = Date.now();
  while (Date.now() < end) {
    lb.writeConfig(reloads % 2 === 0 ? cfgB : cfgA);
    const r = await lb.admin('/reload', 'POST');
    reloads++;
    if (r.status !== 200) reloadFailures++;
    next += 100;
    await sleep(Math.max(0, next - Date.now()));
  }
  const all = await load.stop();
  const failed = all.filter((o) => !o.ok);
  const s = await adminJson<{ config: { generation: number } }>(lb, '/status');
  const drainCuts = lb.logs.filter((l) => l['msg'] === 'drain timeout: closed connections to removed backends');
  const cutByDrain = drainCuts.reduce((n, l) => n + Number(l['cut']), 0);
  const byName: Record<string, number> = {};
  for (const o of all) if (o.ok) byName[o.body!] = (byName[o.body!] ?? 0) + 1;
  t.diagnostic(
    `reload storm: ${reloads} POST /reload in 30 s (${reloadFailures} refused), generation ${gen0} → ${s.config.generation} (file watcher included); ` +
      `${all.length} requests, ${all.length - failed.length} ok, ${failed.length} failed ${JSON.stringify(tally(all))}; served ${JSON.stringify(byName)}; ` +
      `"drain timeout" log lines ${drainCuts.length}, connections they cut ${cutByDrain}`,
  );
  assert.equal(reloadFailures, 0);
  assert.ok(s.config.generation - gen0 >= reloads, 'every reload was applied');
  assert.equal(failed.length, 0);
  assert.ok(all.length > 1000);
});

test('SIGTERM under load: every connection open at the signal finishes within the drain, none is cut', async (t) => {
  const workers = await Promise.all(['w1', 'w2'].map((n) => startWorker(n, ['--delay', '400'])));
  t.after(() => Promise.all(workers.map((w) => w.stop())));
  const lb = await startBalancer(
    testConfig(workers.map((w, i) => ({ address: w.address, name: `w${i + 1}` })), { runtime: 'drain_timeout_millis = 5000' }),
  );
  t.after(() => lb.stop('SIGKILL'));
  const load = startLoad(lb.port, 20, { maxMs: 20_000, timeoutMs: 8000 });
  await sleep(1500);
  const termAt = Date.now();
  lb.proc.kill('SIGTERM');
  const code = await lb.exited;
  const exitAt = Date.now();
  const all = await load.stop();
  const GUARD = 10; // ms: a connect completing this close to the signal may still sit in the kernel's accept queue
  const openAtTerm = all.filter((o) => o.connectedAt > 0 && o.connectedAt < termAt - GUARD && o.end >= termAt);
  const cut = openAtTerm.filter((o) => !o.ok);
  const near = all.filter((o) => o.connectedAt >= termAt - GUARD && o.connectedAt < termAt);
  const after = all.filter((o) => o.start >= termAt);
  const stopped = lb.logs.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('stopped:'));
  t.diagnostic(
    `SIGTERM: ${openAtTerm.length} requests open at the signal, ${openAtTerm.length - cut.length} completed, ${cut.length} cut ${JSON.stringify(tally(openAtTerm))}; ` +
      `${near.length} connected within ${GUARD} ms before it (${near.filter((o) => o.ok).length} ok); ` +
      `${after.length} started after it (${after.filter((o) => o.error === 'ECONNREFUSED').length} refused, ${after.filter((o) => o.ok).length} ok); ` +
      `exit code ${code} after ${exitAt - termAt} ms; balancer: ${stopped?.['drained']} drained, ${stopped?.['cut']} cut`,
  );
  assert.equal(code, 0);
  assert.ok(openAtTerm.length >= 10);
  assert.equal(cut.length, 0);
  assert.equal(stopped?.['cut'], 0);
  assert.ok(exitAt - termAt < 5000, 'exits as soon as the open connections have finished');
});

test('SIGTERM with a connection that outlives the drain: it is cut at the deadline and the exit code is still 0', async (t) => {
  const workers = await Promise.all(['w1'].map((n) => startWorker(n)));
  t.after(() => Promise.all(workers.map((w) => w.stop())));
  const lb = await startBalancer(testConfig([{ address: workers[0]!.address }], { runtime: 'drain_timeout_millis = 1000' }));
  t.after(() => lb.stop('SIGKILL'));
  const idle = net.connect({ host: '127.0.0.1', port: lb.port });
  idle.on('error', () => {});
  await new Promise((r) => idle.once('connect', r));
  await waitFor(async () => (await adminJson<{ connections: { active: number } }>(lb, '/status')).connections.active === 1, 5000, 'the idle connection to be proxied');
  const closed = new Promise<number>((r) => idle.once('close', () => r(Date.now())));
  const termAt = Date.now();
  lb.proc.kill('SIGTERM');
  const code = await lb.exited;
  const closedAt = await closed;
  const stopped = lb.logs.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('stopped:'));
  t.diagnostic(`drain deadline: idle connection closed ${closedAt - termAt} ms after SIGTERM (drain 1000 ms); exit ${code}; balancer: ${stopped?.['drained']} drained, ${stopped?.['cut']} cut`);
  assert.equal(code, 0);
  assert.equal(stopped?.['cut'], 1);
  assert.ok(closedAt - termAt >= 900 && closedAt - termAt < 3000);
});

test(
  'a backend removed, re-added and removed again: its new connections get their own full drain_timeout',
  {},
  async (t) => {
    const servers = await Promise.all(['a', 'b'].map((n) => startNamed(n)));
    t.after(() => Promise.all(servers.map((s) => s.close())));
    const both = testConfig(servers.map((s, i) => ({ address: s.address, name: ['a', 'b'][i], id: i })), { runtime: 'drain_timeout_millis = 2000' });
    const onlyA = testConfig([{ address: servers[0]!.address, name: 'a', id: 0 }], { runtime: 'drain_timeout_millis = 2000' });
    const lb = await startBalancer(both);
    t.after(() => lb.stop('SIGKILL'));
    const reload = async (text: string): Promise<void> => {
      lb.writeConfig(text);
      assert.equal((await lb.admin('/reload', 'POST')).status, 200);
    };
    /** a connection that landed on b, kept open */
    const onB = async (): Promise<net.Socket> => {
      for (let i = 0; i < 4; i++) {
        const s = net.connect({ host: '127.0.0.1', port: lb.port });
        s.on('error', () => {});
        const name = await new Promise<string>((r) => s.once('data', (d: Buffer) => r(String(d).trim())));
        if (name === 'b') return s;
        s.destroy();
      }
      throw new Error('no connection landed on b');
    };
    const c1 = await onB();
    const t0 = Date.now();
    await reload(onlyA); // b drains c1; its timer fires at t0 + 2000
    await sleep(200);
    await reload(both); // b is back
    c1.destroy();
    const c2 = await onB();
    const closed = new Promise<number>((r) => c2.once('close', () => r(Date.now())));
    await sleep(Math.max(0, t0 + 1000 - Date.now()));
    const t1 = Date.now();
    await reload(onlyA); // b drains c2 from t1: it may live until t1 + 2000
    const at = await Promise.race([closed, sleep(t1 + 1800 - Date.now()).then(() => 0)]);
    t.diagnostic(at ? `c2 was cut ${at - t1} ms into its 2000 ms drain` : 'c2 still open 1800 ms into its drain');
    c2.destroy();
    assert.equal(at, 0, `c2 was cut after ${at - t1} ms of draining, before its drain_timeout of 2000 ms`);
  },
);
