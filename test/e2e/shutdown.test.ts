// Graceful shutdown: SIGTERM/SIGINT drain, a second signal exits at once, deadlines hold.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, cleanEnv, connectOutcome, freePort, startBalancer, startEcho, tempDir, testConfig, waitFor, tcpExchange, httpRequest } from '../helpers';

/** Open a connection through the proxy and prove it flows (echo round trip). */
async function openStream(port: number): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  await new Promise<void>((r) => s.once('connect', () => r()));
  const got = new Promise<void>((r) => s.once('data', () => r()));
  s.write('hello');
  await got;
  return s;
}

async function roundTrip(s: net.Socket, text: string): Promise<string> {
  const got = new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
  s.write(text);
  return got;
}

test('SIGTERM: /ready 503, new connections refused, the open one keeps flowing, exit 0 once it ends', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'drain_timeout_millis = 20000' }), { stopSignal: 'SIGKILL' });
  const stream = await openStream(lb.port);
  let exitCode: number | null | undefined;
  void lb.exited.then((c) => (exitCode = c));
  lb.proc.kill('SIGTERM');
  await lb.waitForLog((l) => l['msg'] === 'shutting down: no new connections, draining open ones', 5000, 'the shutdown line');
  // readiness reports draining
  const ready = await httpRequest(lb.adminPort, '/ready');
  assert.equal(ready.status, 503);
  const health = await httpRequest(lb.adminPort, '/health');
  assert.equal(health.status, 503);
  // new connections are refused (the listener is closed)
  const refused = await tcpExchange(lb.port, 'x');
  assert.equal(refused.error, 'ECONNREFUSED');
  // the open connection keeps flowing, several times over
  for (let i = 0; i < 5; i++) assert.equal(await roundTrip(stream, `chunk ${i}`), `chunk ${i}`);
  assert.equal(exitCode, undefined, 'still running while a connection is open');
  // it ends: the balancer exits 0 soon after, well before the drain timeout
  const ended = Date.now();
  stream.end();
  const code = await lb.exited;
  assert.equal(code, 0);
  assert.ok(Date.now() - ended < 5000, `exited ${Date.now() - ended} ms after the last connection ended`);
  const last = await lb.waitForLog((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('stopped:'), 1000, 'the final line');
  assert.equal(last['drained'], 1);
  assert.equal(last['cut'], 0);
});

test('SIGTERM: connections still open at drain_timeout are cut, and the exit code is still 0', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'drain_timeout_millis = 800' }), { stopSignal: 'SIGKILL' });
  const streams = [await openStream(lb.port), await openStream(lb.port)];
  const closed = streams.map((s) => new Promise<void>((r) => s.once('close', () => r())));
  const t0 = Date.now();
  lb.proc.kill('SIGTERM');
  const code = await lb.exited;
  const took = Date.now() - t0;
  assert.equal(code, 0);
  assert.ok(took >= 700 && took < 5000, `exited after ${took} ms (drain_timeout 800 ms)`);
  await Promise.all(closed);
  const last = lb.logs.find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('stopped:'))!;
  assert.equal(last['cut'], 2);
  assert.equal(last['drained'], 0);
});

test('a second signal during the drain exits at once with code 130', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { runtime: 'drain_timeout_millis = 30000' }), { stopSignal: 'SIGKILL' });
  const stream = await openStream(lb.port);
  t.after(() => stream.destroy());
  lb.proc.kill('SIGINT');
  await lb.waitForLog((l) => l['msg'] === 'shutting down: no new connections, draining open ones', 5000, 'the shutdown line');
  const t0 = Date.now();
  lb.proc.kill('SIGINT');
  const code = await lb.exited;
  assert.equal(code, 130);
  assert.ok(Date.now() - t0 < 2000, `exited ${Date.now() - t0} ms after the second signal`);
});

test('accept_timeout_millis bounds the whole shutdown: past it the process exits 1', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(
    t,
    testConfig([{ address: echo.address }], { runtime: 'drain_timeout_millis = 30000\naccept_timeout_millis = 700' }),
    { stopSignal: 'SIGKILL' },
  );
  const stream = await openStream(lb.port);
  t.after(() => stream.destroy());
  const t0 = Date.now();
  lb.proc.kill('SIGTERM');
  const code = await lb.exited;
  const took = Date.now() - t0;
  assert.equal(code, 1);
  assert.ok(took >= 600 && took < 4000, `exited after ${took} ms (accept_timeout 700 ms)`);
});

test('SIGTERM with nothing open exits 0 at once', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(testConfig([{ address: echo.address }]));
  const t0 = Date.now();
  const code = await lb.stop('SIGTERM');
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  await waitFor(() => lb.logs.some((l) => l['msg'] === 'stopped: 0 connections drained, 0 cut'), 1000, 'final line');
});

test('SIGTERM the moment the admin API answers (the file watcher may not be up yet) still stops gracefully with 0', async (t) => {
  const echo = await startEcho(t);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const workers of [1, 2]) {
    for (let round = 0; round < 4; round++) {
      const [port, adminPort] = [await freePort(), await freePort()];
      const conf = join(dir, `config-${workers}-${round}.toml`);
      writeFileSync(conf, testConfig([{ address: echo.address }], { runtime: `workers = ${workers}` }).replace('"127.0.0.1:0"', `"127.0.0.1:${port}"`).replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`));
      const proc = spawn(process.execPath, [BUNDLE, 'lb', '--config', conf], { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
      t.after(() => proc.kill('SIGKILL'));
      const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
      // the first accepted connect to the admin port, polled without a pause
      await waitFor(() => connectOutcome(adminPort).then((o) => o === 'connected'), 10_000, 'the admin port', 1);
      proc.kill('SIGTERM');
      assert.equal(await exited, 0, `workers = ${workers}, round ${round}: a signal that arrives once the balancer answers is a graceful stop`);
    }
  }
});
