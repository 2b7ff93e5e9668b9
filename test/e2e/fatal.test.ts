// An error nothing catches ends the process with one JSON line at fatal and exit 1, so systemd's
// Restart= brings up a fresh balancer and the journal says why. The throw comes from a module
// preloaded into the real balancer (node --import), as a throw in any socket callback would.
// With standard output not read, the exit waits for the last lines a bounded time only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, cleanEnv, startEcho, tempDir, testConfig, freePort, requireTool, tcpExchange, waitFor } from '../helpers';

for (const kind of ['throw', 'reject'] as const) {
  test(`an uncaught ${kind === 'throw' ? 'exception' : 'promise rejection'} is logged as one JSON line at fatal, then exit 1`, { timeout: 20_000 }, async (t) => {
    const echo = await startEcho(t);
    const dir = tempDir();
    const preload = join(dir, 'boom.mjs');
    // fires when the test signals it, once the balancer's start line is on stdout
    writeFileSync(
      preload,
      kind === 'throw'
        ? "process.on('SIGUSR2', () => { throw new Error('boom in a callback'); });\n"
        : "process.on('SIGUSR2', () => { Promise.reject(new Error('boom in a promise')); });\n",
    );
    const config = join(dir, 'config.toml');
    writeFileSync(config, testConfig([{ address: echo.address }]).replace('"127.0.0.1:0"', `"127.0.0.1:${await freePort()}"`).replace('"127.0.0.1:0"', `"127.0.0.1:${await freePort()}"`));
    const child = spawn(process.execPath, ['--import', preload, BUNDLE, 'lb', '--config', config], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => child.kill('SIGKILL'));
    let out = '';
    let err = '';
    let signalled = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!signalled && out.includes('"lemonade-lb started"')) {
        signalled = true;
        child.kill('SIGUSR2');
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    assert.equal(code, 1, `stderr: ${err}`);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => l['msg'] === 'lemonade-lb started'), 'it had started');
    const fatal = lines.filter((l) => l['level'] === 60);
    assert.equal(fatal.length, 1, out);
    assert.match(String(fatal[0]!['msg']), /^fatal: uncaught exception|^fatal: unhandled promise rejection/);
    assert.match(JSON.stringify(fatal[0]!['err']), /boom in a (callback|promise)/);
    assert.equal(lines.at(-1), fatal[0], 'the fatal line is the last one');
  });
}

test('a fatal error while standard output is not read still ends the process, within a bound', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'mkfifo (Debian package coreutils)', spawnSync('sh', ['-c', 'command -v mkfifo']).status === 0)) return;
  const echo = await startEcho(t);
  const dir = tempDir();
  const preload = join(dir, 'boom.mjs');
  writeFileSync(preload, "process.on('SIGUSR2', () => { throw new Error('boom in a callback'); });\n");
  const port = await freePort();
  const config = join(dir, 'config.toml');
  writeFileSync(config, testConfig([{ address: echo.address }]).replace('"127.0.0.1:0"', `"127.0.0.1:${port}"`).replace('"127.0.0.1:0"', `"127.0.0.1:${await freePort()}"`));
  const fifo = join(dir, 'stdout.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  reader.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const fd = openSync(fifo, 'w');
  const child = spawn(process.execPath, ['--import', preload, BUNDLE, 'lb', '--config', config], { env: cleanEnv({ LEMONADE_LOG: 'debug' }), stdio: ['ignore', fd, 'pipe'] });
  closeSync(fd);
  t.after(() => {
    child.kill('SIGKILL');
    reader.kill('SIGCONT');
    reader.kill('SIGKILL');
  });
  await waitFor(() => out.includes('"lemonade-lb started"'), 15_000, 'the start line');
  reader.kill('SIGSTOP');
  // two debug lines per connection: far more than the FIFO holds
  for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 50 }, () => tcpExchange(port, 'x')));
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const started = Date.now();
  child.kill('SIGUSR2');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 10_000))]);
  assert.equal(code, 1, 'exit 1 after the fatal error');
  const took = Date.now() - started;
  t.diagnostic(`exited ${took} ms after the fatal error, standard output not read`);
  assert.ok(took < 5000, `took ${took} ms`);
});
