// Logging as an operator reads it: JSON lines by default, a readable format from the bundle,
// per-connection lines at debug only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBalancer, startEcho, testConfig, tcpExchange, waitFor, tempDir, freePort, BUNDLE, cleanEnv } from '../helpers';

test('info (the default) logs JSON lines and no per-connection line; debug adds them', async (t) => {
  const echo = await startEcho(t);
  const info = await startBalancer(t, testConfig([{ address: echo.address, name: 'e' }]));
  for (let i = 0; i < 3; i++) await tcpExchange(info.port, 'x');
  assert.ok(info.logs.every((l) => !l['raw']), 'every stdout line is JSON');
  assert.ok(info.logs.every((l) => typeof l['level'] === 'number' && typeof l['time'] === 'number' && typeof l['msg'] === 'string'));
  assert.equal(info.logs.filter((l) => /^connection /.test(String(l['msg']))).length, 0, 'no per-connection line at info');

  const debug = await startBalancer(t, testConfig([{ address: echo.address, name: 'e' }]), { env: { LEMONADE_LOG: 'debug' } });
  await tcpExchange(debug.port, 'x');
  const closed = await debug.waitForLog((l) => l['msg'] === 'connection closed', 3000, 'the debug line of the connection');
  assert.equal(closed['backend'], 'e');
  assert.equal(closed['bytesIn'], 1);
  assert.equal(closed['level'], 20);
});

test('LEMONADE_LOG_FORMAT=pretty prints readable lines from the bundle', async (t) => {
  const echo = await startEcho(t);
  const dir = tempDir();
  const port = await freePort();
  const config = join(dir, 'c.toml');
  writeFileSync(config, `[proxy]\nlisten_address = "127.0.0.1:${port}"\n[admin]\nlisten_address = ""\n[[backends]]\nname = "e"\naddress = "${echo.address}"\n`);
  const child = spawn(process.execPath, [BUNDLE, 'lb', '-c', config], { env: cleanEnv({ LEMONADE_LOG_FORMAT: 'pretty' }), stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('lemonade-lb started'), 10_000, 'the start line');
  const line = out.split('\n').find((l) => l.includes('lemonade-lb started'))!;
  assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  lemonade-lb started listen=127\.0\.0\.1:\d+ /);
  assert.doesNotMatch(out, /^\{/m, 'no JSON line');
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
  assert.equal(code, 0);
  assert.match(out, /INFO  stopped: 0 connections drained, 0 cut/);
});
