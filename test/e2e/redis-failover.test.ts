// A send_expect check that knows a Redis master from a replica, end to end: two real
// redis-server processes (Debian's redis-server) on 127.0.0.1, master and replica, behind the
// real balancer with `INFO replication` / `role:master`. Writes through the balancer with
// redis-cli all land on the master; after the roles are swapped with REPLICAOF, traffic follows
// the new master within the thresholds, and the time it took is measured and printed.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { adminJson, freePort, requireTool, startBalancer, stopProcess, tempDir, testConfig, waitFor, type Balancer } from '../helpers';

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

const INTERVAL_MS = 500;
const RISE = 2;
const FALL = 2;
const TIMEOUT_MS = 1000;

/** redis-cli against 127.0.0.1:port, bounded; resolves with its trimmed stdout (errors included, as redis-cli prints them). */
function cli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5000 }, (err, stdout, stderr) => {
      if (err && !stdout) reject(new Error(`redis-cli -p ${port} ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** A redis-server on 127.0.0.1 at a free port: no persistence, no config file; killed when the test ends. */
async function startRedis(t: TestContext, dir: string): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  t.after(() => stopProcess(proc));
  await waitFor(async () => (await cli(port, 'PING')) === 'PONG', 10_000, `redis-server on ${port} to answer PING (${out.slice(-300)})`);
  return { port, proc };
}

type Row = { name: string; state: string; last_check: { ok: boolean; error: string | null } | null };

const states = async (lb: Balancer): Promise<Record<string, string>> => Object.fromEntries((await adminJson<Row[]>(lb, '/backends')).map((r) => [r.name, r.state]));

/** The port of the redis-server that answered through the balancer (INFO server's tcp_port). */
async function servedBy(lbPort: number): Promise<number> {
  const info = await cli(lbPort, 'INFO', 'server');
  const m = /tcp_port:(\d+)/.exec(info);
  if (!m) throw new Error(`no tcp_port in INFO through the balancer: ${info.slice(0, 200)}`);
  return Number(m[1]);
}

test('send_expect INFO replication → role:master: writes go to the master only, and follow it when the roles swap', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, 'redis-server', has('redis-server') && has('redis-cli'))) return;
  const dir = tempDir('lemonade-redis-');
  const a = await startRedis(t, dir);
  const b = await startRedis(t, dir);
  assert.equal(await cli(b.port, 'REPLICAOF', '127.0.0.1', String(a.port)), 'OK');

  const health = [
    `interval = "${INTERVAL_MS}ms"`,
    `timeout = "${TIMEOUT_MS}ms"`,
    `healthy_threshold = ${RISE}`,
    `unhealthy_threshold = ${FALL}`,
    'kind = "send_expect"',
    `send = 'INFO replication\\r\\n'`,
    'expect = "role:master"',
  ].join('\n');
  const lb = await startBalancer(
    t,
    testConfig(
      [
        { name: 'redis-a', address: `127.0.0.1:${a.port}` },
        { name: 'redis-b', address: `127.0.0.1:${b.port}` },
      ],
      { health },
    ),
  );

  // the replica fails its check at once (the first check decides), with what it answered
  await waitFor(async () => JSON.stringify(await states(lb)) === JSON.stringify({ 'redis-a': 'healthy', 'redis-b': 'unhealthy' }), 10_000, 'redis-a healthy, redis-b unhealthy');
  const bRow = (await adminJson<Row[]>(lb, '/backends')).find((r) => r.name === 'redis-b')!;
  assert.match(bRow.last_check!.error!, /expect "role:master"/);
  assert.match(bRow.last_check!.error!, /role:slave/);

  // every write through the balancer, one connection each, reaches the master
  for (let i = 0; i < 10; i++) assert.equal(await cli(lb.port, 'SET', `k${i}`, `v${i}`), 'OK', `write ${i} through the balancer`);
  assert.equal(await servedBy(lb.port), a.port);
  await waitFor(async () => (await cli(b.port, 'GET', 'k9')) === 'v9', 10_000, 'the replica to have the writes');

  // swap: b becomes the master, a its replica
  const swapped = Date.now();
  assert.equal(await cli(b.port, 'REPLICAOF', 'NO', 'ONE'), 'OK');
  assert.equal(await cli(a.port, 'REPLICAOF', '127.0.0.1', String(b.port)), 'OK');

  // traffic follows: the balancer's view turns, then writes through it succeed on b
  await waitFor(async () => JSON.stringify(await states(lb)) === JSON.stringify({ 'redis-a': 'unhealthy', 'redis-b': 'healthy' }), 15_000, 'redis-a unhealthy, redis-b healthy', 10);
  const viewTurned = Date.now() - swapped;
  let writesFollow = 0;
  await waitFor(
    async () => {
      for (let i = 0; i < 5; i++) {
        if ((await cli(lb.port, 'SET', 'after', String(i))) !== 'OK') return false;
      }
      writesFollow = Date.now() - swapped;
      return true;
    },
    15_000,
    'five writes in a row through the balancer to succeed',
    10,
  );
  assert.equal(await servedBy(lb.port), b.port);
  for (let i = 0; i < 10; i++) assert.equal(await cli(lb.port, 'SET', `n${i}`, 'x'), 'OK', `write ${i} after the swap`);
  // the data written before the swap is there, on the new master
  assert.equal(await cli(lb.port, 'GET', 'k3'), 'v3');

  // a needs FALL failed checks to go down and b RISE passing ones to come up, each an interval
  // (jittered +10 %) apart, the last bounded by the timeout; generous slack for a loaded machine
  const bound = Math.max(RISE, FALL) * INTERVAL_MS * 1.1 + TIMEOUT_MS + 2000;
  console.log(
    `failover (interval ${INTERVAL_MS} ms, rise ${RISE}, fall ${FALL}): the balancer's view turned ${viewTurned} ms after REPLICAOF, writes through it succeeded on the new master after ${writesFollow} ms (bound ${Math.round(bound)} ms)`,
  );
  assert.ok(viewTurned <= bound, `view turned after ${viewTurned} ms, bound ${bound} ms`);
});
