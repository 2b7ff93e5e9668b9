// The proxy as a user sees it: real balancer process, real backends, real sockets on 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes, createHash } from 'node:crypto';
import {
  atEnd,
  startBalancer,
  startEcho,
  startNamed,
  startTcpServer,
  startWorker,
  testConfig,
  tcpExchange,
  httpRequest,
  waitFor,
  adminJson,
  type Balancer,
} from '../helpers';

async function countNames(port: number, n: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await tcpExchange(port, '');
    const name = r.data.toString().trim();
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

test('round robin over three real backends splits 30 requests 10/10/10', async (t) => {
  const servers = await Promise.all(['a', 'b', 'c'].map((n) => startNamed(t, n)));
  const lb = await startBalancer(t, testConfig(servers.map((s, i) => ({ address: s.address, name: ['a', 'b', 'c'][i] }))));
  const counts = await countNames(lb.port, 30);
  assert.deepEqual(Object.fromEntries([...counts].sort()), { a: 10, b: 10, c: 10 });
});

test('weighted round robin with weights 5/3/2 gives exactly 25/15/10 of 50 connections', async (t) => {
  const names = ['a', 'b', 'c'];
  const servers = await Promise.all(names.map((n) => startNamed(t, n)));
  const weights = [5, 3, 2];
  const lb = await startBalancer(t, testConfig(servers.map((s, i) => ({ address: s.address, name: names[i], weight: weights[i] })), { strategy: 'weighted_round_robin' }));
  const counts = await countNames(lb.port, 50);
  assert.deepEqual(Object.fromEntries([...counts].sort()), { a: 25, b: 15, c: 10 });
});

test('least connections sends short requests away from a backend holding a long connection', async (t) => {
  const names = ['a', 'b'];
  const servers = await Promise.all(names.map((n) => startNamed(t, n)));
  const lb = await startBalancer(t, testConfig(servers.map((s, i) => ({ address: s.address, name: names[i] })), { strategy: 'least_connections' }));
  const long = net.connect({ host: '127.0.0.1', port: lb.port });
  atEnd(t, () => {
    long.destroy();
  });
  const first = await new Promise<string>((res) => long.once('data', (d: Buffer) => res(d.toString().trim())));
  const other = first === 'a' ? 'b' : 'a';
  const counts = await countNames(lb.port, 10);
  assert.equal(counts.get(other), 10, `all 10 short connections go to ${other} while ${first} holds one: ${JSON.stringify([...counts])}`);
});

test('max_connections = 3 with six clients leaves three open and closes three at once', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { proxy: 'max_connections = 3' }));
  const clients: net.Socket[] = [];
  atEnd(t, () => {
    for (const c of clients) c.destroy();
  });
  // open three that stay open and are proven proxied (echo answers)
  for (let i = 0; i < 3; i++) {
    const c = net.connect({ host: '127.0.0.1', port: lb.port });
    clients.push(c);
    c.on('error', () => {});
    c.write('ping');
    await new Promise<void>((res) => c.once('data', () => res()));
  }
  const rejected = await Promise.all(
    [0, 1, 2].map(async () => {
      const started = Date.now();
      const r = await tcpExchange(lb.port, 'x', { end: false, timeoutMs: 5000 });
      return { ms: Date.now() - started, data: r.data.length };
    }),
  );
  for (const r of rejected) {
    assert.equal(r.data, 0, 'a rejected client gets no bytes');
    assert.ok(r.ms < 1000, `rejected client closed at once (${r.ms} ms)`);
  }
  for (const c of clients) assert.equal(c.destroyed, false, 'the first three stay open');
  const status = await adminJson<{ connections: { active: number; rejected: number } }>(lb, '/status');
  assert.equal(status.connections.active, 3);
  assert.equal(status.connections.rejected, 3);
  const metrics = (await lb.admin('/metrics')).body;
  assert.match(metrics, /lemonade_connections_rejected_total\{service="default",reason="max_connections"\} 3/);
});

test('backends named by host name: "localhost" is resolved and reached; a name that does not resolve is unhealthy and gets nothing', async (t) => {
  const echo = await startEcho(t);
  const port = Number(echo.address.split(':')[1]);
  const lb = await startBalancer(
    t,
    testConfig([{ address: 'nowhere.invalid:80', name: 'unresolvable' }, { address: `localhost:${port}`, name: 'by-name' }], {
      health: 'interval = "1h"\ntimeout = "1s"',
      proxy: 'connect_retries = 1',
    }),
  );
  let ok = 0;
  for (let i = 0; i < 6; i++) {
    const r = await tcpExchange(lb.port, `name ${i}`);
    if (r.data.toString() === `name ${i}`) ok++;
  }
  assert.equal(ok, 6);
  const backends = await adminJson<{ name: string; state: string; total: number; last_check: { error: string | null } | null }[]>(lb, '/backends');
  assert.equal(backends.find((b) => b.name === 'by-name')!.total, 6);
  const bad = backends.find((b) => b.name === 'unresolvable')!;
  assert.equal(bad.total, 0);
  assert.equal(bad.state, 'unhealthy');
  assert.match(bad.last_check?.error ?? '', /ENOTFOUND|EAI_AGAIN/);
});

test('a refused backend is retried on another one: 20 of 20 requests succeed', async (t) => {
  const echo = await startEcho(t);
  // a backend that passes its first health check, then goes away (checks are an hour apart, so
  // only passive health and retries act here)
  const doomed = await startEcho();
  const lb = await startBalancer(
    t,
    testConfig([{ address: doomed.address, name: 'dead' }, { address: echo.address, name: 'live' }], {
      health: 'interval = "1h"\ntimeout = "1s"',
      proxy: 'connect_retries = 1',
    }),
  );
  await waitFor(async () => (await adminJson<{ last_check: unknown }[]>(lb, '/backends')).every((b) => b.last_check), 5000, 'first health checks');
  await doomed.close();
  let ok = 0;
  for (let i = 0; i < 20; i++) {
    const r = await tcpExchange(lb.port, `hello ${i}`);
    if (r.data.toString() === `hello ${i}`) ok++;
  }
  assert.equal(ok, 20);
  const backends = await adminJson<{ name: string; connect_errors: number; state: string; total: number }[]>(lb, '/backends');
  const dead = backends.find((b) => b.name === 'dead')!;
  assert.ok(dead.connect_errors >= 1, 'the refused connects were counted');
  assert.equal(dead.total, 0, 'failed attempts are not connections');
  assert.equal(backends.find((b) => b.name === 'live')!.total, 20);
  assert.equal(dead.state, 'unhealthy', 'passive health ejected it after repeated failures');
  assert.match((await lb.admin('/metrics')).body, /lemonade_backend_connect_errors_total\{service="default",backend="dead"\} [1-9]/);
});

test('with no usable backend the client is closed well under a second', async (t) => {
  const dead = await startEcho();
  const deadAddress = dead.address;
  await dead.close();
  const lb = await startBalancer(t, testConfig([{ address: deadAddress }], { health: 'interval = "200ms"\ntimeout = "100ms"' }));
  // the first health check marks it down
  await waitFor(async () => (await adminJson<{ state: string }[]>(lb, '/backends'))[0]!.state === 'unhealthy', 5000, 'backend marked unhealthy');
  const r = await tcpExchange(lb.port, 'x', { end: false });
  assert.equal(r.data.length, 0);
  assert.ok(r.closedMs < 500, `closed after ${r.closedMs} ms`);
  assert.match((await lb.admin('/metrics')).body, /lemonade_connections_rejected_total\{service="default",reason="no_backend"\} [1-9]/);
});

test('a half-closed client still gets its echo', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]));
  // tcpExchange writes then ends its side at once (half-close) and reads until the server closes
  const r = await tcpExchange(lb.port, 'half-closed but still listening', { end: true });
  assert.equal(r.data.toString(), 'half-closed but still listening');
  assert.equal(r.error, undefined);
});

test('32 MiB through an echo backend arrives byte-exact', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]));
  const payload = randomBytes(32 * 1024 * 1024);
  const r = await tcpExchange(lb.port, payload, { timeoutMs: 60_000 });
  assert.equal(r.data.length, payload.length);
  assert.equal(createHash('sha256').update(r.data).digest('hex'), createHash('sha256').update(payload).digest('hex'));
});

test('a slow reader applies backpressure: the balancer does not buffer without bound', async (t) => {
  // backend writes as fast as it can; the client reads nothing for a while
  const firehose = await startTcpServer(t, (s) => {
    const chunk = Buffer.alloc(64 * 1024, 7);
    const pump = (): void => {
      while (s.write(chunk)) {
        /* fill */
      }
    };
    s.on('drain', pump);
    pump();
  });
  const lb = await startBalancer(t, testConfig([{ address: firehose.address }]));
  const c = net.connect({ host: '127.0.0.1', port: lb.port });
  c.on('error', () => {});
  atEnd(t, () => {
    c.destroy();
  });
  await new Promise<void>((res) => c.once('connect', () => res()));
  c.pause();
  const rss = (): number => {
    const stat = require('node:fs').readFileSync(`/proc/${lb.proc.pid}/status`, 'utf8') as string;
    return Number(/VmRSS:\s+(\d+)/.exec(stat)![1]) * 1024;
  };
  // wait until the backend's writes stall (its socket stops draining), then check memory
  const before = rss();
  let last = -1;
  await waitFor(() => {
    const w = [...firehose.sockets][0]?.writableLength ?? 0;
    const stalled = w > 0 && w === last;
    last = w;
    return stalled;
  }, 10_000, 'the backend to stall on a full pipe', 200);
  const after = rss();
  assert.ok(after - before < 64 * 1024 * 1024, `RSS grew by ${((after - before) / 1048576).toFixed(1)} MiB while the client did not read`);
  // and the data flows once the client reads
  let got = 0;
  c.on('data', (d: Buffer) => (got += d.length));
  c.resume();
  await waitFor(() => got > 4 * 1024 * 1024, 10_000, 'data to flow after resume');
});

test('idle_timeout closes a connection with no bytes either way', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { proxy: 'idle_timeout = "300ms"' }));
  const r = await tcpExchange(lb.port, 'x', { end: false, timeoutMs: 5000 });
  assert.equal(r.data.toString(), 'x');
  assert.ok(r.closedMs >= 250 && r.closedMs < 3000, `closed after ${r.closedMs} ms`);
  await waitFor(async () => (await adminJson<{ connections: { active: number } }>(lb, '/status')).connections.active === 0, 3000, 'active back to 0');
});

test('client ACL: a denied address is closed at once and counted', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }], { proxy: 'deny = ["127.0.0.0/8"]' }));
  // the first (tcp) health check connects to the backend; after it, count what the client causes
  await waitFor(async () => (await adminJson<{ last_check: unknown }[]>(lb, '/backends'))[0]!.last_check, 5000, 'first health check');
  const before = echo.accepted;
  const r = await tcpExchange(lb.port, 'x', { end: false });
  assert.equal(r.data.length, 0);
  assert.match((await lb.admin('/metrics')).body, /lemonade_connections_rejected_total\{service="default",reason="acl"\} 1/);
  assert.equal(echo.accepted, before, 'the backend never saw the denied client');
});

test('per-backend max_connections: a full backend is skipped', async (t) => {
  const names = ['a', 'b'];
  const servers = await Promise.all(names.map((n) => startNamed(t, n)));
  const lb = await startBalancer(
    t,
    testConfig(
      servers.map((s, i) => ({ address: s.address, name: names[i], max_connections: i === 0 ? 1 : 0 })),
      { strategy: 'round_robin' },
    ),
  );
  const holders: net.Socket[] = [];
  atEnd(t, () => {
    for (const h of holders) h.destroy();
  });
  // hold one connection on "a"
  for (;;) {
    const h = net.connect({ host: '127.0.0.1', port: lb.port });
    const name = await new Promise<string>((res) => h.once('data', (d: Buffer) => res(d.toString().trim())));
    if (name === 'a') {
      holders.push(h);
      break;
    }
    h.destroy();
  }
  const counts = await countNames(lb.port, 6);
  assert.equal(counts.get('b'), 6, `a is full, so everything goes to b: ${JSON.stringify([...counts])}`);
});

test('HTTP through the proxy to lemonade workers, keep-alive', async (t) => {
  const w = await startWorker(t, 'w1');
  const lb = await startBalancer(t, testConfig([{ address: w.address, name: 'w1' }]));
  const r = await httpRequest(lb.port, '/work');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'w1\n');
});

test('connection metrics count per backend; active returns to 0', async (t) => {
  const echo = await startEcho(t);
  const lb: Balancer = await startBalancer(testConfig([{ address: echo.address, name: 'only' }]));
  atEnd(t, async () => {
    await lb.stop();
  });
  for (let i = 0; i < 5; i++) await tcpExchange(lb.port, 'abc');
  await waitFor(async () => /lemonade_connections_active\{service="default",backend="only"\} 0/.test((await lb.admin('/metrics')).body), 3000, 'active 0');
  const m = (await lb.admin('/metrics')).body;
  assert.match(m, /lemonade_connections_total\{service="default",backend="only"\} 5/);
  assert.match(m, /lemonade_bytes_total\{service="default",backend="only",direction="in"\} 15/);
  assert.match(m, /lemonade_bytes_total\{service="default",backend="only",direction="out"\} 15/);
  assert.match(m, /lemonade_backend_connect_duration_seconds_count\{service="default",backend="only"\} 5/);
  assert.match(m, /lemonade_max_connections 100000/);
  assert.match(m, /lemonade_backend_state\{service="default",backend="only",state="healthy"\} 1/);
  assert.match(m, /lemonade_build_info\{version="[^"]+"\} 1/);
  assert.match(m, /process_cpu_seconds_total/);
});
