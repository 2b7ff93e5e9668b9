// An error nothing catches ends the process with one JSON line at fatal and exit 1, so systemd's
// Restart= brings up a fresh balancer and the journal says why. The throw comes from a module
// preloaded into the real balancer (node --import), as a throw in any socket callback would.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, cleanEnv, startEcho, tempDir, testConfig, freePort } from './helpers';

for (const kind of ['throw', 'reject'] as const) {
  test(`an uncaught ${kind === 'throw' ? 'exception' : 'promise rejection'} is logged as one JSON line at fatal, then exit 1`, { timeout: 20_000 }, async (t) => {
    const echo = await startEcho();
    t.after(() => echo.close());
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
