// Health as an operator sees it: real balancer process, real backends on 127.0.0.1 that go away
// and come back. Active checks (tcp and http) take a backend out within the configured thresholds
// and bring it back; retries and exclusion keep clients from noticing; /health, /backends and the
// metrics tell the truth; backups take over only when no primary is left; slow start ramps a
// returning backend up; passive health ejects a backend that fails live traffic between checks.
//
// The passive-health test waits out a 30 s ejection (the cap, since its checks are an hour apart),
// so it runs beside the others rather than after them; the others run one at a time, as their
// timings are the point.

import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startBalancer,
  startNamed,
  startEcho,
  startWorker,
  testConfig,
  tcpExchange,
  httpRequest,
  waitFor,
  adminJson,
  type Balancer,
  type TestServer,
} from '../helpers';

type Row = {
  name: string;
  state: string;
  active: number;
  total: number;
  latency_ms: number | null;
  connect_errors: number;
  last_check: { at: string; ok: boolean; error: string | null } | null;
};

const backends = (lb: Balancer): Promise<Row[]> => adminJson<Row[]>(lb, '/backends');
const row = async (lb: Balancer, name: string): Promise<Row> => (await backends(lb)).find((b) => b.name === name)!;

/** Every backend has had its first active check. */
const firstChecks = (lb: Balancer): Promise<boolean> =>
  waitFor(async () => (await backends(lb)).every((b) => b.last_check !== null), 5000, 'the first round of health checks');

/**
 * The checker's transition log line for `backend` ('down' or 'up') logged at or after `after`
 * (epoch ms); resolves with the time the balancer logged it.
 */
async function transition(lb: Balancer, backend: string, dir: 'down' | 'up', after: number, timeoutMs = 8000): Promise<number> {
  const msg = dir === 'down' ? 'backend is down' : 'backend is up';
  const l = await lb.waitForLog((x) => x['msg'] === msg && x['backend'] === backend && Number(x['time']) >= after, timeoutMs, `${backend} ${dir}`);
  return Number(l['time']);
}

interface Hit {
  readonly at: number;
  readonly name: string;
}

interface ClientLoop {
  readonly hits: Hit[];
  readonly failures: { at: number; error: string | undefined; data: string }[];
  /** Hold the loop between two requests while `f` runs (so a backend is closed with nothing in flight). */
  between(f: () => Promise<void>): Promise<void>;
  /** Names answered since `from` (epoch ms), optionally until `to`. */
  names(from: number, to?: number): string[];
  stop(): Promise<void>;
}

/**
 * Sequential clients through the proxy, each expecting the backend's name (startNamed servers).
 * A client that gets no name is a failure. Bounded in count and time.
 */
function clientLoop(port: number, opts: { pauseMs?: number; maxCount?: number; maxMs?: number } = {}): ClientLoop {
  const pauseMs = opts.pauseMs ?? 5;
  const maxCount = opts.maxCount ?? 5000;
  const end = Date.now() + (opts.maxMs ?? 20_000);
  const hits: Hit[] = [];
  const failures: ClientLoop['failures'] = [];
  let stopped = false;
  // set by between(): the loop parks on `gate` and calls `parked` when it gets there
  const hold: { gate: Promise<void> | null; parked: (() => void) | null } = { gate: null, parked: null };
  const run = (async () => {
    for (let i = 0; i < maxCount && !stopped && Date.now() < end; i++) {
      if (hold.gate) {
        hold.parked?.();
        await hold.gate;
      }
      const r = await tcpExchange(port, '', { timeoutMs: 5000 });
      const name = r.data.toString().trim();
      if (name) hits.push({ at: Date.now(), name });
      else failures.push({ at: Date.now(), error: r.error, data: r.data.toString() });
      await new Promise((res) => setTimeout(res, pauseMs));
    }
  })();
  return {
    hits,
    failures,
    async between(f) {
      let release!: () => void;
      hold.gate = new Promise<void>((r) => (release = r));
      const parked = new Promise<void>((r) => (hold.parked = r));
      // the loop parks at its next iteration (or has already ended)
      await Promise.race([parked, run]);
      try {
        await f();
      } finally {
        hold.gate = null;
        hold.parked = null;
        release();
      }
    },
    names(from, to = Infinity) {
      return hits.filter((h) => h.at >= from && h.at <= to).map((h) => h.name);
    },
    async stop() {
      stopped = true;
      await run;
    },
  };
}

const count = (names: string[], n: string): number => names.filter((x) => x === n).length;

/**
 * Resources of one test, closed in reverse order when it ends (also when it fails half-way, so
 * nothing is left listening and the file's process can exit).
 */
function resources(t: TestContext): <T>(x: T, close: (x: T) => unknown) => T {
  const closers: (() => unknown)[] = [];
  t.after(async () => {
    for (const c of closers.reverse()) {
      try {
        await c();
      } catch {
        // already closed
      }
    }
  });
  return (x, close) => {
    closers.push(() => close(x));
    return x;
  };
}

const closeServer = (s: TestServer): Promise<void> => s.close();
const stopLb = (lb: Balancer): Promise<unknown> => lb.stop();
const stopLoop = (l: ClientLoop): Promise<void> => l.stop();

const FAST = 'interval = "500ms"\ntimeout = "300ms"\nunhealthy_threshold = 3\nhealthy_threshold = 2';

describe('health', { concurrency: true }, () => {
  describe('active checks, one at a time', { concurrency: 1 }, () => {
    test('a closed backend is out within 3 intervals + 1 and back within 2 + 1 after a restart on the same port; no client fails', { timeout: 30_000 }, async (t) => {
      const own = resources(t);
      const names = ['a', 'b', 'c'];
      const servers: TestServer[] = [];
      for (const n of names) servers.push(own(await startNamed(n), closeServer));
      const lb = own(await startBalancer(testConfig(servers.map((s, i) => ({ address: s.address, name: names[i] })), { health: FAST })), stopLb);
      const loop = own(clientLoop(lb.port, { maxMs: 20_000 }), stopLoop);
      await firstChecks(lb);
      await waitFor(() => loop.hits.length >= 30, 5000, 'clients flowing');

      let closedAt = 0;
      await loop.between(async () => {
        await servers[1]!.close();
        closedAt = Date.now();
      });
      const downAt = await transition(lb, 'b', 'down', closedAt);
      const downMs = downAt - closedAt;
      t.diagnostic(`closed → marked down: ${downMs} ms (bound ${500 * 3 + 500} ms)`);
      assert.ok(downMs <= 500 * 3 + 500, `marked down ${downMs} ms after close`);
      const b = await row(lb, 'b');
      assert.equal(b.state, 'unhealthy');
      assert.equal(b.last_check?.ok, false);
      assert.equal(b.last_check?.error, 'ECONNREFUSED');
      // while b is down, only a and c answer
      const downSeen = loop.hits.length;
      await waitFor(() => loop.hits.length >= downSeen + 30, 5000, 'clients while b is down');
      assert.equal(count(loop.names(downAt + 50), 'b'), 0, 'no client reached b while it was down');

      const restartAt = Date.now();
      own(await startNamed('b', servers[1]!.port), closeServer);
      const upAt = await transition(lb, 'b', 'up', restartAt);
      const upMs = upAt - restartAt;
      t.diagnostic(`restarted → marked up: ${upMs} ms (bound ${500 * 2 + 500} ms)`);
      assert.ok(upMs <= 500 * 2 + 500, `marked up ${upMs} ms after the restart`);
      await waitFor(() => count(loop.names(upAt), 'b') >= 5, 5000, 'b to get traffic again');
      assert.equal((await row(lb, 'b')).state, 'healthy');

      await loop.stop();
      t.diagnostic(`${loop.hits.length} client requests, ${loop.failures.length} failed`);
      assert.deepEqual(loop.failures, [], 'no client request failed');
      const seen = new Set(loop.hits.map((h) => h.name));
      assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
    });

    test('an http check answering 503 takes a backend out though its port is open; back on 200 it returns', { timeout: 30_000 }, async (t) => {
      const own = resources(t);
      const w1 = own(await startWorker('w1'), (w) => w.stop());
      const w2 = own(await startWorker('w2'), (w) => w.stop());
      const lb = own(
        await startBalancer(testConfig([{ address: w1.address, name: 'w1' }, { address: w2.address, name: 'w2' }], { health: `${FAST}\nkind = "http"\npath = "/health"` })),
        stopLb,
      );
      await firstChecks(lb);
      assert.equal((await row(lb, 'w1')).last_check?.ok, true);

      const failAt = Date.now();
      assert.equal((await httpRequest(w1.port, '/_control?health=503', { method: 'POST' })).status, 200);
      const downAt = await transition(lb, 'w1', 'down', failAt);
      t.diagnostic(`/health 503 → marked down: ${downAt - failAt} ms`);
      assert.ok(downAt - failAt <= 500 * 3 + 500, `marked down after ${downAt - failAt} ms`);
      const r1 = await row(lb, 'w1');
      assert.equal(r1.state, 'unhealthy');
      assert.deepEqual([r1.last_check?.ok, r1.last_check?.error], [false, 'HTTP 503']);
      // the port is open, yet no request goes there
      for (let i = 0; i < 10; i++) {
        const r = await httpRequest(lb.port, '/work');
        assert.equal(r.body, 'w2\n');
      }

      const okAt = Date.now();
      await httpRequest(w1.port, '/_control?health=200', { method: 'POST' });
      const upAt = await transition(lb, 'w1', 'up', okAt);
      t.diagnostic(`/health 200 → marked up: ${upAt - okAt} ms`);
      assert.ok(upAt - okAt <= 500 * 2 + 500, `marked up after ${upAt - okAt} ms`);
      const bodies = new Set<string>();
      for (let i = 0; i < 10; i++) bodies.add((await httpRequest(lb.port, '/work')).body);
      assert.deepEqual([...bodies].sort(), ['w1\n', 'w2\n']);
    });

    test('GET /health: healthy → degraded → unhealthy; drained and disabled backends do not count as unhealthy', { timeout: 30_000 }, async (t) => {
      const own = resources(t);
      const names = ['a', 'b', 'c'];
      const servers: TestServer[] = [];
      for (const n of names) servers.push(own(await startNamed(n), closeServer));
      const lb = own(await startBalancer(testConfig(servers.map((s, i) => ({ address: s.address, name: names[i] })), { health: FAST })), stopLb);
      const health = async (): Promise<{ code: number; status: string }> => {
        const r = await lb.admin('/health');
        return { code: r.status, status: (JSON.parse(r.body) as { status: string }).status };
      };
      await firstChecks(lb);
      assert.deepEqual(await health(), { code: 200, status: 'healthy' });

      // operator actions are not failures
      assert.equal((await lb.admin('/backends/a/drain', 'POST')).status, 200);
      assert.equal((await lb.admin('/backends/b/disable', 'POST')).status, 200);
      assert.deepEqual((await backends(lb)).map((b) => b.state), ['draining', 'disabled', 'healthy']);
      assert.deepEqual(await health(), { code: 200, status: 'healthy' });
      await lb.admin('/backends/a/enable', 'POST');
      await lb.admin('/backends/b/enable', 'POST');

      // one down: degraded, still 200
      const t1 = Date.now();
      await servers[0]!.close();
      await transition(lb, 'a', 'down', t1);
      assert.deepEqual(await health(), { code: 200, status: 'degraded' });
      // the same backend drained by the operator no longer counts
      await lb.admin('/backends/a/drain', 'POST');
      assert.deepEqual(await health(), { code: 200, status: 'healthy' });
      await lb.admin('/backends/a/enable', 'POST');
      assert.deepEqual(await health(), { code: 200, status: 'degraded' });

      // all down: 503
      const t2 = Date.now();
      await Promise.all([servers[1]!.close(), servers[2]!.close()]);
      await Promise.all([transition(lb, 'b', 'down', t2), transition(lb, 'c', 'down', t2)]);
      assert.deepEqual(await health(), { code: 503, status: 'unhealthy' });
    });

    test('a backup takes traffic only when every primary is down, and gives it back', { timeout: 30_000 }, async (t) => {
      const own = resources(t);
      const p1 = own(await startNamed('p1'), closeServer);
      const p2 = own(await startNamed('p2'), closeServer);
      const bk = own(await startNamed('bk'), closeServer);
      const lb = own(
        await startBalancer(
          testConfig(
            [
              { address: p1.address, name: 'p1' },
              { address: p2.address, name: 'p2' },
              { address: bk.address, name: 'bk', backup: true },
            ],
            { health: FAST },
          ),
        ),
        stopLb,
      );
      const loop = own(clientLoop(lb.port, { maxMs: 20_000 }), stopLoop);
      await firstChecks(lb);
      await waitFor(() => loop.hits.length >= 20, 5000, 'clients flowing');

      // one primary goes: the other takes everything, the backup nothing
      let t1 = 0;
      await loop.between(async () => {
        await p1.close();
        t1 = Date.now();
      });
      const p1Down = await transition(lb, 'p1', 'down', t1);
      const n1 = loop.hits.length;
      await waitFor(() => loop.hits.length >= n1 + 30, 5000, 'clients with one primary left');
      assert.equal(count(loop.names(0), 'bk'), 0, 'the backup got nothing while a primary was usable');
      assert.equal(count(loop.names(p1Down + 50), 'p1'), 0);

      // the last primary goes: everything to the backup
      let t2 = 0;
      await loop.between(async () => {
        await p2.close();
        t2 = Date.now();
      });
      const p2Down = await transition(lb, 'p2', 'down', t2);
      const n2 = loop.hits.length;
      await waitFor(() => loop.hits.length >= n2 + 30, 5000, 'clients with no primary left');
      const allDown = loop.names(p2Down + 50);
      assert.ok(allDown.length >= 20);
      assert.equal(count(allDown, 'bk'), allDown.length, `all traffic to the backup: ${allDown.join(',')}`);

      // a primary comes back: the backup is left alone again
      const t3 = Date.now();
      own(await startNamed('p1', p1.port), closeServer);
      const p1Up = await transition(lb, 'p1', 'up', t3);
      const n3 = loop.hits.length;
      await waitFor(() => loop.hits.length >= n3 + 30, 5000, 'clients after p1 came back');
      const back = loop.names(p1Up + 50);
      assert.equal(count(back, 'p1'), back.length, `all traffic back on p1: ${back.join(',')}`);

      await loop.stop();
      assert.deepEqual(loop.failures, [], 'no client request failed');
    });

    test('/backends shows state, active, total, latency and the last check; metrics show up, checks and state', { timeout: 30_000 }, async (t) => {
      const own = resources(t);
      const echo = own(await startEcho(), closeServer);
      const gone = await startEcho();
      const goneAddress = gone.address;
      await gone.close();
      const lb = own(await startBalancer(testConfig([{ address: echo.address, name: 'up' }, { address: goneAddress, name: 'down' }], { health: FAST })), stopLb);
      await firstChecks(lb);
      // the first check decides at once: a dead backend is out after one failure
      await waitFor(async () => (await row(lb, 'down')).state === 'unhealthy', 3000, 'down marked unhealthy by its first check');
      const held = own(net.connect({ host: '127.0.0.1', port: lb.port }), (s) => s.destroy());
      held.on('error', () => {});

      for (let i = 0; i < 5; i++) assert.equal((await tcpExchange(lb.port, `ping ${i}`)).data.toString(), `ping ${i}`);
      let echoed = '';
      held.on('data', (d: Buffer) => (echoed += d.toString()));
      held.write('hold');
      await waitFor(() => echoed === 'hold', 5000, 'the held connection to be proxied');

      const rows = await backends(lb);
      const up = rows.find((r) => r.name === 'up')!;
      const down = rows.find((r) => r.name === 'down')!;
      assert.equal(up.state, 'healthy');
      assert.equal(up.active, 1, 'the held connection is active');
      assert.equal(up.total, 6);
      assert.equal(typeof up.latency_ms, 'number');
      assert.ok(up.latency_ms! >= 0 && up.latency_ms! < 1000, `latency_ms ${up.latency_ms}`);
      assert.ok(up.last_check);
      assert.equal(up.last_check.ok, true);
      assert.equal(up.last_check.error, null);
      const at = Date.parse(up.last_check.at);
      assert.ok(Number.isFinite(at) && Math.abs(Date.now() - at) < 5000, `last_check.at ${up.last_check.at}`);
      assert.equal(down.state, 'unhealthy');
      assert.equal(down.total, 0);
      assert.equal(down.latency_ms, null);
      assert.deepEqual([down.last_check?.ok, down.last_check?.error], [false, 'ECONNREFUSED']);

      const m = (await lb.admin('/metrics')).body;
      assert.match(m, /^lemonade_backend_up\{service="default",backend="up"\} 1$/m);
      assert.match(m, /^lemonade_backend_up\{service="default",backend="down"\} 0$/m);
      assert.match(m, /^lemonade_health_checks_total\{service="default",backend="up",result="success"\} [1-9]\d*$/m);
      assert.match(m, /^lemonade_health_checks_total\{service="default",backend="down",result="failure"\} [1-9]\d*$/m);
      assert.doesNotMatch(m, /^lemonade_health_checks_total\{service="default",backend="up",result="failure"\}/m);
      assert.match(m, /^lemonade_backend_state\{service="default",backend="up",state="healthy"\} 1$/m);
      assert.match(m, /^lemonade_backend_state\{service="default",backend="up",state="unhealthy"\} 0$/m);
      assert.match(m, /^lemonade_backend_state\{service="default",backend="down",state="unhealthy"\} 1$/m);
      assert.match(m, /^lemonade_backend_state\{service="default",backend="down",state="healthy"\} 0$/m);
      // the counters move with each round
      const checks = (text: string): number => Number(/^lemonade_health_checks_total\{service="default",backend="down",result="failure"\} (\d+)$/m.exec(text)![1]);
      const before = checks(m);
      await waitFor(async () => checks((await lb.admin('/metrics')).body) >= before + 2, 3000, 'two more failed checks counted');
    });

    test('slow start: a returning backend gets a small share at first and its full share after the ramp', { timeout: 30_000 }, async (t) => {
      const own = resources(t);
      const a = own(await startNamed('a'), closeServer);
      const b = own(await startNamed('b'), closeServer);
      const lb = own(
        await startBalancer(
          testConfig([{ address: a.address, name: 'a', weight: 1 }, { address: b.address, name: 'b', weight: 1 }], {
            strategy: 'weighted_round_robin',
            health: 'interval = "300ms"\ntimeout = "200ms"\nunhealthy_threshold = 1\nhealthy_threshold = 1\nslow_start = "2s"',
          }),
        ),
        stopLb,
      );
      await firstChecks(lb);
      // at start there is no ramp: an even split
      const first: string[] = [];
      for (let i = 0; i < 40; i++) first.push((await tcpExchange(lb.port, '')).data.toString().trim());
      assert.equal(count(first, 'b'), 20, `no slow start for backends healthy from the start: ${first.join(',')}`);

      const t1 = Date.now();
      await b.close();
      await transition(lb, 'b', 'down', t1);
      const t2 = Date.now();
      own(await startNamed('b', b.port), closeServer);
      const upAt = await transition(lb, 'b', 'up', t2);

      const loop = own(clientLoop(lb.port, { pauseMs: 2, maxMs: 10_000 }), stopLoop);
      await waitFor(() => loop.hits.some((h) => h.at > upAt + 3000), 8000, 'the end of the second window');
      await loop.stop();
      // window 1: the first 600 ms after it came back (weight 5 %..30 % of full: share under ~25 %)
      const early = loop.names(upAt, upAt + 600);
      // window 2: after the 2 s ramp (full weight: half of it)
      const late = loop.names(upAt + 2200, upAt + 3000);
      const share = (w: string[]): number => count(w, 'b') / w.length;
      t.diagnostic(`b's share: ${(share(early) * 100).toFixed(1)} % of ${early.length} in the first 600 ms, ${(share(late) * 100).toFixed(1)} % of ${late.length} after the ramp`);
      assert.ok(early.length >= 20 && late.length >= 20, `enough requests in each window (${early.length}, ${late.length})`);
      assert.ok(count(early, 'b') > 0, 'a small share, not none');
      assert.ok(share(early) < 0.3, `early share ${share(early)}`);
      assert.ok(share(late) >= 0.45 && share(late) <= 0.55, `late share ${share(late)}`);
      assert.deepEqual(loop.failures, []);
    });
  });

  test('a reload that shortens [health] interval applies to the next check, not after the old interval', { timeout: 30_000 }, async (t) => {
    const own = resources(t);
    const a = own(await startNamed('a'), closeServer);
    const b = own(await startNamed('b'), closeServer);
    const cfg = (health: string): string => testConfig([{ address: a.address, name: 'a' }, { address: b.address, name: 'b' }], { health, runtime: 'config_watch_interval_millis = 60000' });
    const lb = own(await startBalancer(cfg('interval = "1h"\ntimeout = "300ms"')), stopLb);
    await firstChecks(lb);
    const firstAt = (await row(lb, 'a')).last_check!.at;
    lb.writeConfig(cfg('interval = "500ms"\ntimeout = "300ms"\nunhealthy_threshold = 2'));
    const reloadedAt = Date.now();
    const r = await lb.admin('/reload', 'POST');
    assert.equal(r.status, 200, r.body);
    await b.close();
    const downAt = await transition(lb, 'b', 'down', reloadedAt, 5000);
    t.diagnostic(`reload to 500 ms → b (closed) marked down: ${downAt - reloadedAt} ms`);
    assert.ok(downAt - reloadedAt <= 500 * 2 + 500 + 200, `down ${downAt - reloadedAt} ms after the reload`);
    assert.notEqual((await row(lb, 'a')).last_check!.at, firstAt, 'a is checked on the new interval too');
  });

  test('passive health: a backend refusing live traffic between rare checks is ejected after 3 failed connects, then tried again after the ejection', { timeout: 55_000 }, async (t) => {
    const own = resources(t);
    const flaky = own(await startNamed('flaky'), closeServer);
    const good = own(await startNamed('good'), closeServer);
    const lb = own(
      await startBalancer(
        testConfig([{ address: flaky.address, name: 'flaky' }, { address: good.address, name: 'good' }], {
          // one check at start, the next an hour later: only live traffic can notice
          health: 'interval = "1h"\ntimeout = "1s"\nunhealthy_threshold = 3',
          proxy: 'connect_retries = 2',
        }),
      ),
      stopLb,
    );
    const loop = own(clientLoop(lb.port, { pauseMs: 40, maxCount: 2000, maxMs: 45_000 }), stopLoop);
    await firstChecks(lb);
    await waitFor(() => count(loop.names(0), 'flaky') >= 3, 5000, 'flaky to serve');

    let closedAt = 0;
    await loop.between(async () => {
      await flaky.close();
      closedAt = Date.now();
    });
    const ejected = await lb.waitForLog(
      (l) => l['backend'] === 'flaky' && String(l['msg']).startsWith('backend failing on live traffic') && Number(l['time']) >= closedAt,
      5000,
      'flaky ejected',
    );
    const ejectedAt = Number(ejected['time']);
    t.diagnostic(`closed → ejected by live traffic: ${ejectedAt - closedAt} ms`);
    const r = await row(lb, 'flaky');
    assert.equal(r.state, 'unhealthy', 'an ejected backend shows as unhealthy');
    assert.equal(r.connect_errors, 3, 'ejected after exactly unhealthy_threshold failed connects');
    assert.equal(r.last_check?.ok, true, 'the active check never saw it fail');

    // back on its port while ejected: it must not be tried until the ejection (30 s, the cap) ends
    own(await startNamed('flaky', flaky.port), closeServer);
    const backAt = await waitFor(() => loop.hits.find((h) => h.name === 'flaky' && h.at > closedAt)?.at, 40_000, 'flaky to be tried again');
    t.diagnostic(`ejected → tried again: ${backAt - ejectedAt} ms (ejection 30000 ms)`);
    assert.ok(backAt - ejectedAt >= 29_900, `tried again only after the ejection (${backAt - ejectedAt} ms)`);
    assert.ok(backAt - ejectedAt <= 32_000, `tried again soon after the ejection (${backAt - ejectedAt} ms)`);
    assert.equal((await row(lb, 'flaky')).connect_errors, 3, 'not one connect was tried while ejected');
    assert.equal((await row(lb, 'flaky')).state, 'healthy');

    await loop.stop();
    t.diagnostic(`${loop.hits.length} client requests, ${loop.failures.length} failed`);
    assert.deepEqual(loop.failures, [], 'no client request failed');
  });
});
