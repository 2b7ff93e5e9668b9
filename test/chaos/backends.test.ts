// Chaos: backends that die, hang after accepting, or never complete a connect — each under
// steady concurrent load, every request's outcome counted and printed (t.diagnostic).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBalancer, startWorker, startTcpServer, testConfig, waitFor, adminJson, type Balancer } from '../helpers';
import { startLoad, startBlackHole, tally, sleep, httpOnce } from './lib';

type Row = { name: string; state: string; active: number; total: number; connect_errors: number };
const backends = (lb: Balancer): Promise<Row[]> => adminJson<Row[]>(lb, '/backends');
const FAST_HEALTH = 'interval = "200ms"\ntimeout = "200ms"\nunhealthy_threshold = 2\nhealthy_threshold = 1';

test('a backend SIGKILLed under load: failures only among requests open on it, none once it is marked down', async (t) => {
  const workers = await Promise.all(['w1', 'w2', 'w3'].map((n) => startWorker(n, ['--delay', '20'])));
  t.after(() => Promise.all(workers.map((w) => w.stop())));
  const lb = await startBalancer(
    testConfig(workers.map((w, i) => ({ address: w.address, name: `w${i + 1}` })), { health: FAST_HEALTH, proxy: 'connect_retries = 2' }),
  );
  t.after(() => lb.stop());
  const load = startLoad(lb.port, 24, { maxMs: 30_000 });
  await sleep(2000);
  const victim = workers[1]!;
  const before = (await backends(lb)).find((b) => b.name === 'w2')!;
  const inflightAtKill = load.inflight();
  const killAt = Date.now();
  const exited = new Promise<number>((r) => victim.proc.once('exit', () => r(Date.now())));
  victim.proc.kill('SIGKILL');
  const exitAt = await exited;
  const downAt = await waitFor(async () => ((await backends(lb)).find((b) => b.name === 'w2')!.state === 'unhealthy' ? Date.now() : 0), 10_000, 'w2 marked down');
  await sleep(3000);
  const all = await load.stop();
  const failed = all.filter((o) => !o.ok);
  const failedBeforeExit = failed.filter((o) => o.start <= exitAt).length;
  const failedBetween = failed.filter((o) => o.start > exitAt && o.start < downAt).length;
  const failedAfterDown = failed.filter((o) => o.start >= downAt).length;
  const okAfterDown = all.filter((o) => o.ok && o.start >= downAt).length;
  const served = new Set(all.filter((o) => o.ok && o.start >= downAt).map((o) => o.body));
  t.diagnostic(
    `SIGKILL: ${all.length} requests, ${all.length - failed.length} ok, ${failed.length} failed ${JSON.stringify(tally(all))}; ` +
      `in flight at the kill ${inflightAtKill} (w2 had ${before.active} active just before); killed→exit ${exitAt - killAt} ms, exit→marked down ${downAt - exitAt} ms; ` +
      `failed that started before the exit ${failedBeforeExit}, between exit and down ${failedBetween}, after down ${failedAfterDown} (of ${okAfterDown + failedAfterDown})`,
  );
  assert.ok(failed.length <= inflightAtKill, `${failed.length} failures > ${inflightAtKill} requests in flight at the kill`);
  assert.equal(failedBetween, 0, 'a connect refused by the dead backend is retried on another one');
  assert.equal(failedAfterDown, 0, 'no failure once the backend is marked down');
  assert.ok(okAfterDown > 50, `load kept flowing after the kill (${okAfterDown})`);
  assert.ok(!served.has('w2'));
});

test('a backend that accepts and never answers: the idle timeout frees every connection to it', async (t) => {
  const good = await startWorker('good', ['--delay', '5']);
  t.after(() => good.stop());
  const silent = await startTcpServer((s) => {
    s.on('data', () => {}); // reads, never writes
    s.on('end', () => s.end()); // but closes like any server when the peer closes
  });
  const lb = await startBalancer(
    testConfig([{ address: good.address, name: 'good' }, { address: silent.address, name: 'silent' }], { proxy: 'idle_timeout = "1s"' }),
  );
  t.after(async () => {
    await lb.stop();
    await silent.close();
  });
  const load = startLoad(lb.port, 10, { maxMs: 30_000, timeoutMs: 5000 });
  await sleep(4000);
  const all = await load.stop();
  const ok = all.filter((o) => o.ok);
  const bad = all.filter((o) => !o.ok);
  const durations = bad.map((o) => o.end - o.start);
  const freed = await waitFor(async () => {
    const s = await adminJson<{ connections: { active: number } }>(lb, '/status');
    return silent.sockets.size === 0 && s.connections.active === 0 ? Date.now() : 0;
  }, 5000, 'every connection to the silent backend to be freed');
  void freed;
  t.diagnostic(
    `silent backend: ${all.length} requests, ${ok.length} answered by the good backend, ${bad.length} closed by the idle timeout ${JSON.stringify(tally(all))}; ` +
      `their lifetime ${Math.min(...durations)}–${Math.max(...durations)} ms (idle_timeout 1000 ms); connections open after the load: 0`,
  );
  assert.ok(ok.length > 0 && bad.length > 0);
  assert.equal(bad.filter((o) => o.error === 'timeout').length, 0, 'no client waits past 5 s');
  assert.ok(bad.every((o) => o.error === 'closed' && o.end - o.start >= 900 && o.end - o.start < 3000), `lifetimes ${durations.join(',')}`);
  const row = (await backends(lb)).find((b) => b.name === 'silent')!;
  assert.equal(bad.length, row.total, 'every connection proxied to the silent backend was closed by the idle timeout');
});

test('a black-holed backend (connect never completes): connect timeout and retry lose no request', async (t) => {
  const good = await startWorker('good', ['--delay', '5']);
  t.after(() => good.stop());
  const hole = await startBlackHole();
  t.after(() => hole.close());
  const lb = await startBalancer(
    testConfig([{ address: good.address, name: 'good' }, { address: hole.address, name: 'hole' }], {
      proxy: 'connect_retries = 2',
      health: 'interval = "500ms"\ntimeout = "300ms"\nunhealthy_threshold = 3',
    }).replace('connect_timeout = "1s"', 'connect_timeout = "300ms"'),
  );
  t.after(() => lb.stop());
  // the health checker has not judged yet: the first requests do meet the black hole
  const load = startLoad(lb.port, 10, { maxMs: 30_000, timeoutMs: 5000 });
  await sleep(4000);
  const all = await load.stop();
  const failed = all.filter((o) => !o.ok);
  const slow = all.filter((o) => o.ok && o.end - o.start >= 300);
  const rows = await backends(lb);
  const h = rows.find((b) => b.name === 'hole')!;
  const maxMs = Math.max(...all.map((o) => o.end - o.start));
  t.diagnostic(
    `black hole: ${all.length} requests, ${all.length - failed.length} ok, ${failed.length} failed ${JSON.stringify(tally(all))}; ` +
      `${slow.length} waited out a 300 ms connect timeout and were retried (slowest ${maxMs} ms); hole: state ${h.state}, ${h.connect_errors} connect errors (timeouts)`,
  );
  assert.equal(failed.length, 0);
  assert.ok(slow.length > 0, 'some requests did meet the black hole');
  assert.ok(maxMs < 2000, 'a retry follows the 300 ms timeout');
  assert.equal(h.state, 'unhealthy');
  assert.ok(h.connect_errors >= slow.length, 'each wait was a connect error counted on the black hole');
  // once judged down, the hole costs nothing
  const after = await Promise.all(Array.from({ length: 20 }, () => httpOnce(lb.port)));
  assert.ok(after.every((o) => o.ok && o.end - o.start < 300));
});
