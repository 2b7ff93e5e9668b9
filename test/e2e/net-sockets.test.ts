// The balancer relays on libuv's raw handles when Node offers them (src/proxy/raw.ts) and on
// net.Socket otherwise, or when LEMONADE_LB_NET_SOCKETS=1 asks for it. The whole suite runs the
// raw relay; this file says so, and runs the data-path suites again with the net.Socket relay so
// that the other path cannot rot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startBalancer, startWorker, testConfig } from '../helpers';

const SUITES = ['proxy.test.ts', 'features.test.ts', 'shutdown.test.ts', 'relay.test.ts'];
const BOUND_MS = 240_000;

test('on this Node the balancer relays on raw handles, and says so at start; LEMONADE_LB_NET_SOCKETS=1 picks net.Socket', async (t) => {
  const w = await startWorker(t, 'a');
  for (const [env, relay] of [[undefined, process.env['LEMONADE_TEST_NET_SOCKETS'] === '1' ? 'net.Socket' : 'raw'], ['1', 'net.Socket']] as const) {
    const lb = await startBalancer(testConfig([{ address: w.address }]), { env: { LEMONADE_LB_NET_SOCKETS: env } });
    try {
      const started = await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started');
      assert.equal(started['relay'], relay);
      const r = await fetch(`http://127.0.0.1:${lb.port}/`);
      assert.equal(await r.text(), 'a\n');
    } finally {
      await lb.stop();
    }
  }
});

test(`the data-path suites pass with the net.Socket relay too (${SUITES.join(', ')})`, { timeout: BOUND_MS + 10_000, skip: process.env['LEMONADE_TEST_NET_SOCKETS'] === '1' }, async () => {
  // a test runner of its own: without NODE_TEST_CONTEXT, which tells a child it runs under this one
  const env: NodeJS.ProcessEnv = { ...process.env, LEMONADE_TEST_NET_SOCKETS: '1' };
  delete env['NODE_TEST_CONTEXT'];
  // TAP, whatever the Node: from Node 23 the default reporter is "spec" even into a pipe
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', ...SUITES.map((s) => join(__dirname, s))], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), BOUND_MS);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  const failing = out.split('\n').filter((l) => /^not ok /.test(l));
  const pass = Number(/^# pass (\d+)/m.exec(out)?.[1] ?? 0);
  assert.deepEqual(failing, [], out.slice(-4000));
  assert.equal(code, 0, out.slice(-4000));
  assert.ok(pass >= 30, `only ${pass} tests passed\n${out.slice(-2000)}`);
});
