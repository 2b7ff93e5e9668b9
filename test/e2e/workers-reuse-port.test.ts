// Workers on a Node with listen({ reusePort }) (22.12+, 23.1+): each binds a socket of its own
// with SO_REUSEPORT and the kernel spreads new connections over them by a hash of the client's
// address and port, so every worker gets its share; LEMONADE_LB_REUSE_PORT=0 goes back to the
// one socket shared through the cluster primary (whose spread is whichever worker wakes first).
// A second balancer on the same address is still refused. Runs under the matrix's newer Nodes
// (.ci/node-matrix/run); skipped on a Node without reusePort.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { adminJson, startBalancer, startNamed, testConfig, waitFor } from '../helpers';
import { reusePort } from '../../src/proxy/listener';

const WORKERS = 2;
const CONNECTIONS = 400;
const skip = !reusePort(process.version, {}) && `Node ${process.version} has no listen({ reusePort }) (22.12+, 23.1+)`;

/** One short connection through the balancer: read the backend's name line, close. */
function once(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let got = '';
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.endsWith('\n')) s.end();
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

interface Status {
  workers: { index: number; accepted: number }[];
}

/** Connections accepted by each worker after CONNECTIONS connections, 8 at a time. */
async function spread(env: Record<string, string | undefined>): Promise<number[]> {
  const be = await startNamed('n1');
  const lb = await startBalancer(testConfig([{ address: be.address, name: 'n1' }], { runtime: `workers = ${WORKERS}` }), { env });
  try {
    let left = CONNECTIONS;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (left-- > 0) assert.equal(await once(lb.port), 'n1\n');
      }),
    );
    const st = await waitFor(async () => {
      const s = await adminJson<Status>(lb, '/status');
      return s.workers.reduce((n, w) => n + w.accepted, 0) >= CONNECTIONS ? s : null;
    }, 10_000, 'the workers to report every connection');
    return st.workers.sort((a, b) => a.index - b.index).map((w) => w.accepted);
  } finally {
    await lb.stop();
    await be.close();
  }
}

test(`workers = ${WORKERS} with reusePort: each worker accepts its share of ${CONNECTIONS} connections`, { skip }, async (t) => {
  const own = await spread({});
  t.diagnostic(`reusePort: connections per worker ${own.join(' / ')}`);
  // a fair split is 200 each (binomial sd 10): below 25% for one worker is far outside chance
  for (const n of own) assert.ok(n >= CONNECTIONS / WORKERS / 2, `uneven spread with reusePort: ${own.join(' / ')}`);
  const shared = await spread({ LEMONADE_LB_REUSE_PORT: '0' });
  t.diagnostic(`one shared socket (LEMONADE_LB_REUSE_PORT=0): connections per worker ${shared.join(' / ')}`);
  assert.equal(shared.reduce((a, b) => a + b, 0), CONNECTIONS);
});

test('with reusePort a second balancer on the same address is refused, as a single process would be', { skip }, async (t) => {
  const be = await startNamed(t, 'n1');
  const first = await startBalancer(t, testConfig([{ address: be.address, name: 'n1' }], { runtime: `workers = ${WORKERS}` }));
  const config = testConfig([{ address: be.address, name: 'n1' }], { runtime: `workers = ${WORKERS}` }).replace('listen_address = "127.0.0.1:0"', `listen_address = "127.0.0.1:${first.port}"`);
  await assert.rejects(startBalancer(config), /exited \(1\)[\s\S]*EADDRINUSE/);
  assert.equal(await once(first.port), 'n1\n');
});
