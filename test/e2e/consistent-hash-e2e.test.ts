// consistent_hash end to end: the real bundle over 3 named backends, clients bound to
// many 127.x.y.z source addresses. Each address gets the same backend on every connection; a
// second balancer process with the same backends, served by two worker processes, maps them the
// same way; /backends shows each backend's hash_share; disabling a backend moves only the
// addresses that were on it, and enabling it brings them back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { adminJson, startBalancer, startNamed, testConfig, type TestServer } from '../helpers';

/** Connect from `localAddress`, read the backend's name line, close. */
function whoFrom(port: number, localAddress: string): Promise<string> {
  return new Promise((res, rej) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    let buf = '';
    const t = setTimeout(() => s.destroy(new Error(`no answer for ${localAddress}`)), 5000);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(t);
        s.end();
        res(buf.slice(0, i));
      }
    });
    s.on('error', (e) => (clearTimeout(t), rej(e)));
  });
}

// 60 client addresses, spread over 127/8 (every one of them is a loopback address on Linux)
const ADDRESSES = Array.from({ length: 60 }, (_, i) => `127.${1 + (i % 7)}.${(i * 37) % 256}.${1 + ((i * 11) % 250)}`);

async function mapAll(port: number): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const a of ADDRESSES) out.set(a, await whoFrom(port, a));
  return out;
}

test('consistent_hash pins every source address, the same in a second balancer process; disabling a backend moves only its addresses', async (t) => {
  const servers: TestServer[] = [];
  for (const name of ['alpha', 'beta', 'gamma']) servers.push(await startNamed(t, name));
  const config = testConfig(
    servers.map((s, i) => ({ address: s.address, name: ['alpha', 'beta', 'gamma'][i]! })),
    { strategy: 'consistent_hash' },
  );
  const lb1 = await startBalancer(t, config);

  const first = await mapAll(lb1.port);
  const again = await mapAll(lb1.port);
  assert.deepEqual(again, first, 'each address gets the same backend on repeated connections');
  const used = new Set(first.values());
  assert.equal(used.size, 3, `the addresses spread over all three backends: ${[...used]}`);

  const rows = await adminJson<Record<string, unknown>[]>(lb1, '/backends');
  const total = rows.reduce((a, r) => a + (r['hash_share'] as number), 0);
  assert.ok(Math.abs(total - 1) < 1e-4, `hash shares add up to 1: ${JSON.stringify(rows.map((r) => r['hash_share']))}`);
  for (const r of rows) assert.ok(Math.abs((r['hash_share'] as number) - 1 / 3) < 0.001, JSON.stringify(r));

  // a second balancer with the same backends, its connections spread over two worker processes
  // (each builds its own table): the same mapping
  const lb2 = await startBalancer(
    t,
    testConfig(
      servers.map((s, i) => ({ address: s.address, name: ['alpha', 'beta', 'gamma'][i]! })),
      { strategy: 'consistent_hash', runtime: 'workers = 2' },
    ),
  );
  assert.deepEqual(await mapAll(lb2.port), first, 'a second balancer (two worker processes) maps every address the same way');

  const r = await lb1.admin('/backends/beta/disable', 'POST');
  assert.equal(r.status, 200, r.body);
  const after = await mapAll(lb1.port);
  let moved = 0;
  for (const [a, name] of first) {
    if (name === 'beta') {
      assert.notEqual(after.get(a), 'beta');
      moved++;
    } else assert.equal(after.get(a), name, `${a} was on ${name}, which is still usable`);
  }
  assert.ok(moved > 0);

  await lb1.admin('/backends/beta/enable', 'POST');
  assert.deepEqual(await mapAll(lb1.port), first, "beta's addresses come back when it is enabled again");
});
