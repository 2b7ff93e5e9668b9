// A reload and a stop that overlap: a SIGTERM that arrives while a reload is binding its new
// listen address must not let the reload install that listener during the drain. The balancer
// runs in this process so that the reload's prepare can be held open at will.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from '../../src/app';
import { loadConfig } from '../../src/config/load';
import { createLogger } from '../../src/obs/logger';
import type { DataPlane, Pending } from '../../src/runtime/plane';
import type { HostPort } from '../../src/config/address';
import { connectOutcome, freePort, startEcho, tempDir, testConfig, waitFor } from '../helpers';


test('a SIGTERM during a reload\'s prepare: the new listener is never installed, the reload fails, the drain goes on', { timeout: 30_000 }, async (t) => {
  const echo = await startEcho();
  const [p1, p2] = [await freePort(), await freePort()];
  const dir = tempDir();
  const path = join(dir, 'config.toml');
  const config = (port: number): string =>
    testConfig([{ address: echo.address, name: 'e' }], { admin: 'listen_address = ""', runtime: 'drain_timeout_millis = 5000\nconfig_watch_interval_millis = 60000' }).replace(
      '"127.0.0.1:0"',
      `"127.0.0.1:${port}"`,
    );
  writeFileSync(path, config(p1));
  const lines: string[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (l: string) => void lines.push(l) } });
  const app = new App({ loaded: loadConfig({ path, explicit: true }, {}), logger, version: 'test', configPath: path, env: {}, signals: false });
  const exited = app.exited();
  await app.start();
  // hold the reload inside the data plane's prepare, after the new address is bound
  const plane = (app as unknown as { plane: DataPlane }).plane;
  t.after(async () => {
    // whatever the outcome, nothing this test started stays open (a listener left installed
    // during the drain would keep the test process alive)
    void app.shutdown('test end');
    await plane.close();
    await plane.drain(0);
    await echo.close();
  });
  const prepare = plane.prepare.bind(plane);
  let entered!: () => void;
  const inPrepare = new Promise<void>((r) => (entered = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  plane.prepare = async (service: string, addr: HostPort): Promise<Pending> => {
    const p = await prepare(service, addr);
    entered();
    await gate;
    return p;
  };

  // a connection that keeps the drain open
  const held = net.connect({ host: '127.0.0.1', port: p1 });
  await new Promise<void>((r) => held.once('connect', () => r()));
  await waitFor(() => echo.sockets.size === 1, 3000, 'the held connection to reach the backend');

  writeFileSync(path, config(p2)); // the watcher starts the reload
  await inPrepare;
  assert.equal(await connectOutcome(p2), 'connected', 'the new address is bound while the reload prepares');
  const stopped = app.shutdown('SIGTERM');
  release();
  await waitFor(() => (app.statusView()['config'] as { last_reload: { result: string } | null }).last_reload, 3000, 'the reload to finish');
  const last = (app.statusView()['config'] as { last_reload: { result: string; error: string } }).last_reload;
  assert.equal(last.result, 'failure');
  assert.match(last.error, /shutting down/);
  // during the drain: the new address is let go, the old one no longer accepts, the held one flows
  await waitFor(async () => (await connectOutcome(p2)) === 'ECONNREFUSED', 3000, 'the prepared listener to be closed');
  assert.equal(await connectOutcome(p1), 'ECONNREFUSED');
  const echoed = new Promise<string>((r) => held.once('data', (d: Buffer) => r(d.toString())));
  held.write('draining');
  assert.equal(await echoed, 'draining');
  held.end();
  assert.equal(await stopped, 0);
  assert.equal(await exited, 0);
  assert.ok(!lines.some((l) => l.includes('config reloaded')), 'no reload was applied');
});
