// The admin API and the metrics against the real balancer process: every
// endpoint with its fields and status codes, runtime backend control and its survival across
// reloads, the token, routing errors, the summary log line, and the API turned off.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, readlinkSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startBalancer,
  startEcho,
  startTcpServer,
  testConfig,
  tcpExchange,
  waitFor,
  adminJson,
  runCli,
  ROOT,
  type Balancer,
  type TestServer,
  type Ends,
} from '../helpers';

// -------------------------------------------------------------------------------------------
// Shapes and small helpers

interface Row {
  id: number;
  name: string;
  address: string;
  weight: number;
  state: string;
  active: number;
  total: number;
  latency_ms: number | null;
  last_check: { at: string; ok: boolean; error: string | null } | null;
}

interface Status {
  version: string;
  uptime_seconds: number;
  strategy: string;
  config: { path: string; generation: number; hash: string; last_reload: { at: string; result: string; error: string | null } | null };
  connections: { active: number; total: number; rejected: number };
  backends: Row[];
  [k: string]: unknown;
}

interface Event {
  at: string;
  kind: string;
  message: string;
}

const TOKEN = 's3cret';
const ADMIN_WITH_TOKEN = `listen_address = "127.0.0.1:0"\ntoken = "${TOKEN}"`;
const FAST_HEALTH = 'interval = "200ms"\ntimeout = "200ms"\nunhealthy_threshold = 1\nhealthy_threshold = 1';
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

const status = (lb: Balancer): Promise<Status> => adminJson<Status>(lb, '/status');
const backends = (lb: Balancer): Promise<Row[]> => adminJson<Row[]>(lb, '/backends');
const row = async (lb: Balancer, name: string): Promise<Row> => (await backends(lb)).find((b) => b.name === name)!;
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

/** A backend that greets with `name\n`, then echoes what it reads (and ends when the client does). */
function tagged(t: Ends, name: string): Promise<TestServer> {
  return startTcpServer(t, (s) => {
    s.write(`${name}\n`);
    s.pipe(s);
  });
}

/** One short connection through the proxy: the name of the backend that answered ("" if none). */
async function pick(port: number): Promise<string> {
  const r = await tcpExchange(port, '', { timeoutMs: 5000 });
  return r.data.toString().split('\n')[0]!;
}

async function picks(port: number, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await pick(port));
  return out;
}

/** A long-lived client connection through the proxy to a tagged backend. */
interface Held {
  readonly sock: net.Socket;
  /** the backend's greeting */
  readonly name: Promise<string>;
  readonly closed: Promise<void>;
  text(): string;
  /** write `s` and wait until it comes back */
  echo(s: string): Promise<void>;
}

function hold(port: number): Held {
  const sock = net.connect({ host: '127.0.0.1', port });
  let buf = '';
  let gotName: (n: string) => void = () => {};
  const name = new Promise<string>((r) => (gotName = r));
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    const i = buf.indexOf('\n');
    if (i >= 0) gotName(buf.slice(0, i));
  });
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  return {
    sock,
    name,
    closed,
    text: () => buf,
    echo: async (s: string) => {
      sock.write(s);
      await waitFor(() => buf.includes(s), 5000, `the echo of ${JSON.stringify(s)}`);
    },
  };
}

/** Resolve when `p` settles, or throw after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

/** Parse Prometheus text into samples. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample with this name whose labels include `labels` (undefined if none). */
function metric(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(hits.length <= 1, `${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  return hits[0]?.value;
}

async function scrape(lb: Balancer): Promise<Sample[]> {
  const r = await lb.admin('/metrics');
  assert.equal(r.status, 200);
  return parseMetrics(r.body);
}

/** TCP ports this process listens on (Linux /proc): its socket inodes matched against /proc/net/tcp*. */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  const ports: number[] = [];
  for (const f of [`/proc/${pid}/net/tcp`, `/proc/${pid}/net/tcp6`]) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10 || c[3] !== '0A' || !inodes.has(c[9]!)) continue;
      ports.push(parseInt(c[1]!.split(':')[1]!, 16));
    }
  }
  return ports.sort((x, y) => x - y);
}

// -------------------------------------------------------------------------------------------
// GET /health, /ready, /status, /backends, /events

test('GET /health, /ready, /status, /backends and /events answer every documented field', async (t) => {
  const alpha = await tagged(t, 'alpha');
  const lb = await startBalancer(
    t,
    testConfig(
      [
        { address: alpha.address, name: 'alpha', id: 7, weight: 3 },
        { address: '127.0.0.1:1', name: 'beta', id: 9 },
      ],
      { health: FAST_HEALTH },
    ),
  );

  // beta refuses connections: one failed check takes it down
  await waitFor(async () => (await row(lb, 'beta')).state === 'unhealthy', 5000, 'beta unhealthy');
  await waitFor(async () => (await row(lb, 'alpha')).last_check !== null, 5000, 'a check of alpha');

  const h = await lb.admin('/health');
  assert.equal(h.status, 200);
  assert.match(String(h.headers['content-type']), /^application\/json/);
  assert.deepEqual(JSON.parse(h.body), { status: 'degraded', usable: 1, total: 2, services: { default: 'degraded' } });

  const r = await lb.admin('/ready');
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { ready: true });

  // /backends before any traffic
  const list = await backends(lb);
  assert.deepEqual(
    list.map((b) => b.name),
    ['alpha', 'beta'],
  );
  const a = list[0]!;
  for (const k of ['id', 'name', 'address', 'weight', 'state', 'active', 'total', 'latency_ms', 'last_check']) assert.ok(k in a, `/backends rows have "${k}"`);
  assert.equal(a.id, 7);
  assert.equal(a.address, alpha.address);
  assert.equal(a.weight, 3);
  assert.equal(a.state, 'healthy');
  assert.equal(a.active, 0);
  assert.equal(a.total, 0);
  assert.equal(a.latency_ms, null, 'no latency before traffic');
  assert.match(a.last_check!.at, ISO);
  assert.ok(Math.abs(Date.parse(a.last_check!.at) - Date.now()) < 10_000);
  assert.equal(a.last_check!.ok, true);
  assert.equal(a.last_check!.error, null);
  const b = list[1]!;
  assert.equal(b.id, 9);
  assert.equal(b.address, '127.0.0.1:1');
  assert.equal(b.weight, 1);
  assert.equal(b.state, 'unhealthy');
  assert.equal(b.last_check!.ok, false);
  assert.equal(typeof b.last_check!.error, 'string');
  assert.notEqual(b.last_check!.error, '');

  // traffic: two connections, one held open
  assert.equal(await pick(lb.port), 'alpha');
  const c = hold(lb.port);
  t.after(() => c.sock.destroy());
  assert.equal(await c.name, 'alpha');
  await c.echo('ping');
  const busy = await status(lb);
  assert.deepEqual(busy.connections, { active: 1, total: 2, rejected: 0 });
  const ba = busy.backends.find((x) => x.name === 'alpha')!;
  assert.equal(ba.active, 1);
  assert.equal(ba.total, 2);
  assert.equal(typeof ba.latency_ms, 'number');
  assert.ok(ba.latency_ms! >= 0);
  c.sock.end();
  await c.closed;
  await waitFor(async () => (await status(lb)).connections.active === 0, 5000, 'no active connection');

  // /status: every documented field
  const s = await status(lb);
  for (const k of ['version', 'uptime_seconds', 'strategy', 'config', 'connections', 'backends']) assert.ok(k in s, `/status has "${k}"`);
  assert.equal(s.version, VERSION);
  assert.ok(Number.isInteger(s.uptime_seconds) && s.uptime_seconds >= 0 && s.uptime_seconds < 60, String(s.uptime_seconds));
  assert.equal(s.strategy, 'round_robin');
  assert.equal(s.config.path, lb.configPath);
  assert.equal(s.config.generation, 1);
  assert.equal(s.config.hash, createHash('sha256').update(readFileSync(lb.configPath, 'utf8')).digest('hex'));
  assert.equal(s.config.last_reload, null, 'no reload yet');
  assert.deepEqual(s.connections, { active: 0, total: 2, rejected: 0 });
  const strip = (rows: Row[]): unknown => rows.map(({ last_check: _l, latency_ms: _m, ...rest }) => rest);
  assert.deepEqual(strip(s.backends), strip(await backends(lb)), '/status backends are /backends rows');

  // operator-drained or disabled backends do not count as unhealthy
  assert.equal((await lb.admin('/backends/beta/drain', 'POST')).status, 200);
  assert.deepEqual(JSON.parse((await lb.admin('/health')).body), { status: 'healthy', usable: 1, total: 2, services: { default: 'healthy' } });
  assert.equal((await lb.admin('/backends/beta/disable', 'POST')).status, 200);
  assert.deepEqual(JSON.parse((await lb.admin('/health')).body), { status: 'healthy', usable: 1, total: 2, services: { default: 'healthy' } });
  assert.equal((await lb.admin('/backends/beta/enable', 'POST')).status, 200);
  assert.equal(JSON.parse((await lb.admin('/health')).body).status, 'degraded');
  // none usable: 503 unhealthy (while still ready: it accepts connections)
  assert.equal((await lb.admin('/backends/alpha/drain', 'POST')).status, 200);
  const none = await lb.admin('/health');
  assert.equal(none.status, 503);
  assert.deepEqual(JSON.parse(none.body), { status: 'unhealthy', usable: 0, total: 2, services: { default: 'unhealthy' } });
  assert.equal((await lb.admin('/ready')).status, 200);
  assert.equal((await lb.admin('/backends/alpha/enable', 'POST')).status, 200);
  assert.equal((await lb.admin('/health')).status, 200);

  // /events: start, health transitions, operator actions; oldest first
  const ev = await lb.admin('/events');
  assert.equal(ev.status, 200);
  assert.match(String(ev.headers['content-type']), /^application\/json/);
  const events = JSON.parse(ev.body) as Event[];
  assert.ok(Array.isArray(events));
  for (const e of events) {
    assert.match(e.at, ISO);
    assert.ok(['health', 'reload', 'admin', 'lifecycle'].includes(e.kind), e.kind);
    assert.equal(typeof e.message, 'string');
  }
  const start = events.filter((e) => e.kind === 'lifecycle');
  assert.equal(start.length, 1);
  assert.match(start[0]!.message, /^listening on 127\.0\.0\.1:\d+ \(2 backends, round_robin\)$/);
  assert.deepEqual([...events].sort((x, y) => Date.parse(x.at) - Date.parse(y.at)), events, 'oldest first');
  assert.ok(events.some((e) => e.kind === 'health' && /^beta is down/.test(e.message)), JSON.stringify(events));
  assert.deepEqual(
    events.filter((e) => e.kind === 'admin').map((e) => e.message),
    ['beta: drain', 'beta: disable', 'beta: enable', 'alpha: drain', 'alpha: enable'],
  );
});

test('while shutting down, /health and /ready answer 503 until the drain ends', async (t) => {
  const alpha = await tagged(t, 'alpha');
  const lb = await startBalancer(t, testConfig([{ address: alpha.address, name: 'alpha' }], { runtime: 'drain_timeout_millis = 4000' }), { stopSignal: 'SIGKILL' });
  const c = hold(lb.port);
  t.after(() => c.sock.destroy());
  assert.equal(await c.name, 'alpha');
  assert.equal((await lb.admin('/health')).status, 200);

  const sent = Date.now();
  lb.proc.kill('SIGTERM');
  await lb.waitForLog((l) => l['msg'] === 'shutting down: no new connections, draining open ones', 5000, 'the shutdown log line');
  const h = await lb.admin('/health');
  assert.equal(h.status, 503);
  assert.equal(JSON.parse(h.body).status, 'unhealthy');
  const r = await lb.admin('/ready');
  assert.equal(r.status, 503);
  assert.deepEqual(JSON.parse(r.body), { ready: false });
  const s = await status(lb);
  assert.equal(s['ready'], false);
  // the open connection still flows while it drains; when it ends, the process exits 0
  await c.echo('still here');
  assert.ok(Date.now() - sent < 4000, 'checked within drain_timeout');
  c.sock.end();
  assert.equal(await within(lb.exited, 5000, 'the balancer to exit'), 0);
  await lb.waitForLog((l) => l['msg'] === 'stopped: 1 connections drained, 0 cut', 1000, 'the stop line');
});

// -------------------------------------------------------------------------------------------
// POST /backends/NAME/drain|enable|disable

test('drain keeps existing connections and takes no new ones; disable cuts them; enable restores; 404 for an unknown name', async (t) => {
  const servers = await Promise.all(['s1', 's2', 's3'].map((n) => tagged(t, n)));
  const lb = await startBalancer(t, testConfig(servers.map((s, i) => ({ address: s.address, name: `s${i + 1}` }))));
  const c = hold(lb.port);
  t.after(() => c.sock.destroy());
  const x = await c.name;
  await c.echo('one');

  const d = await lb.admin(`/backends/${x}/drain`, 'POST');
  assert.equal(d.status, 200);
  assert.match(String(d.headers['content-type']), /^application\/json/);
  assert.deepEqual(JSON.parse(d.body), { service: 'default', backend: x, action: 'drain', state: 'draining' });
  await c.echo('two');
  const drained = await row(lb, x);
  assert.equal(drained.state, 'draining');
  assert.equal(drained.active, 1);
  const during = await picks(lb.port, 6);
  assert.ok(!during.includes(x), `no new connection to drained ${x}: ${during.join(',')}`);
  assert.equal(during.length, 6);
  assert.ok(during.every((n) => n !== ''), 'every new connection was served');
  await c.echo('three');

  const dis = await lb.admin(`/backends/${x}/disable`, 'POST');
  assert.equal(dis.status, 200);
  assert.deepEqual(JSON.parse(dis.body), { service: 'default', backend: x, action: 'disable', state: 'disabled' });
  await within(c.closed, 5000, 'disable to cut the open connection');
  await waitFor(async () => (await row(lb, x)).active === 0, 5000, `${x} to have no active connection`);
  assert.equal((await row(lb, x)).state, 'disabled');
  assert.ok(!(await picks(lb.port, 4)).includes(x), `no new connection to disabled ${x}`);

  const en = await lb.admin(`/backends/${x}/enable`, 'POST');
  assert.equal(en.status, 200);
  assert.deepEqual(JSON.parse(en.body), { service: 'default', backend: x, action: 'enable', state: 'healthy' });
  const after = await picks(lb.port, 6);
  assert.equal(after.filter((n) => n === x).length, 2, `round robin reaches ${x} again: ${after.join(',')}`);

  for (const action of ['drain', 'enable', 'disable']) {
    const nf = await lb.admin(`/backends/nobody/${action}`, 'POST');
    assert.equal(nf.status, 404);
    assert.deepEqual(JSON.parse(nf.body), { error: 'no backend named "nobody"' });
  }
  // names are matched exactly, percent-decoded
  assert.equal((await lb.admin(`/backends/${x.toUpperCase()}/drain`, 'POST')).status, 404);
  const enc = await lb.admin(`/backends/%73${x.slice(1)}/drain`, 'POST');
  assert.equal(enc.status, 200);
  assert.equal(JSON.parse(enc.body).backend, x);
  assert.equal((await lb.admin(`/backends/${x}/enable`, 'POST')).status, 200);
  // a malformed escape is a client error, not a server error
  assert.equal((await lb.admin('/backends/%E0%A4%A/drain', 'POST')).status, 400);
});

test('a drained or disabled backend stays so across reloads until it is enabled', async (t) => {
  const servers = await Promise.all(['s1', 's2', 's3'].map((n) => tagged(t, n)));
  const cfg = (w3: number): string =>
    testConfig(
      servers.map((s, i) => ({ address: s.address, name: `s${i + 1}`, weight: i === 2 ? w3 : 1 })),
      { runtime: 'config_watch_interval_millis = 500' },
    );
  const lb = await startBalancer(t, cfg(1));
  assert.equal((await lb.admin('/backends/s1/drain', 'POST')).status, 200);
  assert.equal((await lb.admin('/backends/s2/disable', 'POST')).status, 200);

  lb.writeConfig(cfg(4));
  const s = await waitFor(async () => {
    const st = await status(lb);
    return st.config.generation >= 2 ? st : null;
  }, 8000, 'generation 2');
  const by = (n: string): Row => s.backends.find((b) => b.name === n)!;
  assert.equal(by('s3').weight, 4, 'the reload applied');
  assert.equal(by('s1').state, 'draining');
  assert.equal(by('s2').state, 'disabled');
  assert.equal(by('s3').state, 'healthy');
  assert.equal(s.config.last_reload!.result, 'success');
  assert.deepEqual(await picks(lb.port, 4), ['s3', 's3', 's3', 's3']);

  // a second reload, still kept
  lb.writeConfig(cfg(2));
  await waitFor(async () => (await status(lb)).config.generation >= 3, 8000, 'generation 3');
  assert.equal((await row(lb, 's1')).state, 'draining');
  assert.equal((await row(lb, 's2')).state, 'disabled');

  assert.equal((await lb.admin('/backends/s1/enable', 'POST')).status, 200);
  assert.equal((await lb.admin('/backends/s2/enable', 'POST')).status, 200);
  lb.writeConfig(cfg(1));
  await waitFor(async () => (await status(lb)).config.generation >= 4, 8000, 'generation 4');
  assert.deepEqual(
    (await backends(lb)).map((b) => b.state),
    ['healthy', 'healthy', 'healthy'],
    'enabled backends stay enabled across a reload',
  );
  assert.deepEqual(new Set(await picks(lb.port, 3)), new Set(['s1', 's2', 's3']));
});

// -------------------------------------------------------------------------------------------
// POST /reload

test('POST /reload reloads now and answers with the result; a failure is 422 and changes nothing', async (t) => {
  const alpha = await tagged(t, 'alpha');
  const cfg = (w: number): string => testConfig([{ address: alpha.address, name: 'alpha', weight: w }], { runtime: 'config_watch_interval_millis = 60000' });
  const lb = await startBalancer(t, cfg(1));

  const same = await lb.admin('/reload', 'POST');
  assert.equal(same.status, 200);
  assert.match(String(same.headers['content-type']), /^application\/json/);
  assert.deepEqual(JSON.parse(same.body), { result: 'success', generation: 2, changes: 'no changes' });
  const s2 = await status(lb);
  assert.equal(s2.config.generation, 2);
  assert.equal(s2.config.last_reload!.result, 'success');
  assert.equal(s2.config.last_reload!.error, null);
  assert.match(s2.config.last_reload!.at, ISO);

  // an invalid file: 422, the running configuration stays
  lb.writeConfig(cfg(1).replace('weight = 1', 'weight = "heavy"'));
  const bad = await lb.admin('/reload', 'POST');
  assert.equal(bad.status, 422);
  const body = JSON.parse(bad.body) as { result: string; generation: number; error: string; errors: { path: string; line?: number; message: string }[] };
  assert.equal(body.result, 'failure');
  assert.equal(body.generation, 2);
  assert.equal(typeof body.error, 'string');
  assert.ok(body.errors.some((e) => e.path.includes('weight')), JSON.stringify(body.errors));
  const s3 = await status(lb);
  assert.equal(s3.config.generation, 2);
  assert.equal(s3.config.last_reload!.result, 'failure');
  assert.equal(typeof s3.config.last_reload!.error, 'string');
  assert.equal(s3.config.hash, s2.config.hash, 'the hash is of the applied file');
  assert.equal(await pick(lb.port), 'alpha', 'still serving');

  lb.writeConfig(cfg(5));
  const good = await lb.admin('/reload', 'POST');
  assert.equal(good.status, 200);
  const g = JSON.parse(good.body) as { result: string; generation: number; changes: string };
  assert.equal(g.result, 'success');
  assert.ok(g.generation >= 3);
  const s4 = await status(lb);
  assert.equal(s4.backends[0]!.weight, 5);
  assert.equal(s4.config.hash, createHash('sha256').update(readFileSync(lb.configPath, 'utf8')).digest('hex'));
  const m = await scrape(lb);
  assert.equal(metric(m, 'lemonade_config_generation'), s4.config.generation);
  assert.ok(metric(m, 'lemonade_config_reloads_total', { result: 'failure' })! >= 1);
  assert.ok(metric(m, 'lemonade_config_reloads_total', { result: 'success' })! >= 2);
  const events = await adminJson<Event[]>(lb, '/events');
  assert.ok(events.some((e) => e.kind === 'reload' && /reload failed/.test(e.message)), JSON.stringify(events));
});

// -------------------------------------------------------------------------------------------
// GET /metrics

const SPEC_METRICS: Record<string, string> = {
  lemonade_connections_active: 'gauge',
  lemonade_connections_total: 'counter',
  lemonade_connections_rejected_total: 'counter',
  lemonade_backend_up: 'gauge',
  lemonade_backend_connect_errors_total: 'counter',
  lemonade_bytes_total: 'counter',
  lemonade_backend_connect_duration_seconds: 'histogram',
  lemonade_connection_duration_seconds: 'histogram',
  lemonade_health_checks_total: 'counter',
  lemonade_config_reloads_total: 'counter',
  lemonade_config_generation: 'gauge',
  lemonade_build_info: 'gauge',
  lemonade_max_connections: 'gauge',
  lemonade_backend_max_connections: 'gauge',
  lemonade_backend_state: 'gauge',
};

test('GET /metrics is Prometheus text whose figures match the connections made, and scraping changes nothing', async (t) => {
  const a = await startEcho(t);
  const b = await startEcho(t);
  const gone = await startEcho();
  const lb = await startBalancer(
    t,
    testConfig(
      [
        { address: a.address, name: 'a' },
        { address: b.address, name: 'b', max_connections: 9 },
        { address: gone.address, name: 'gone' },
      ],
      { proxy: 'max_connections = 3', health: 'interval = "60s"\ntimeout = "300ms"' },
    ),
  );
  // "gone" passes its first check, then stops: the next check is a minute away, so only live
  // traffic finds out (failed connects, retried on another backend)
  await waitFor(async () => (await row(lb, 'gone')).last_check?.ok, 5000, 'the first check of gone');
  await gone.close();

  const r = await lb.admin('/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  for (const [name, type] of Object.entries(SPEC_METRICS)) {
    assert.match(r.body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has help`);
    assert.match(r.body, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `${name} is a ${type}`);
  }
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
    assert.match(r.body, new RegExp(`^# TYPE ${name} `, 'm'), `default metric ${name}`);
  }
  assert.ok(!r.body.includes('127.0.0.1'), 'no addresses in labels');
  let m = parseMetrics(r.body);
  assert.equal(metric(m, 'lemonade_build_info', { version: VERSION }), 1);
  assert.equal(metric(m, 'lemonade_config_generation'), 1);
  assert.equal(metric(m, 'lemonade_max_connections'), 3);
  assert.equal(metric(m, 'lemonade_backend_max_connections', { backend: 'b' }), 9);
  assert.equal(metric(m, 'lemonade_backend_max_connections', { backend: 'a' }), 0);
  for (const reason of ['max_connections', 'no_backend', 'acl', 'rate_limit']) assert.equal(metric(m, 'lemonade_connections_rejected_total', { reason }), 0, reason);
  assert.equal(metric(m, 'lemonade_config_reloads_total', { result: 'success' }), 0);
  assert.equal(metric(m, 'lemonade_config_reloads_total', { result: 'failure' }), 0);
  assert.equal(metric(m, 'lemonade_backend_up', { backend: 'a' }), 1);
  assert.equal(metric(m, 'lemonade_backend_state', { backend: 'a', state: 'healthy' }), 1);
  assert.equal(metric(m, 'lemonade_backend_state', { backend: 'a', state: 'draining' }), 0);

  // 9 sequential connections with known payloads, a scrape between each; round robin over
  // a, b and gone (whose connects fail over to the next backend)
  let sent = 0;
  for (let i = 0; i < 9; i++) {
    const payload = 'x'.repeat(100 + i);
    const res = await tcpExchange(lb.port, payload);
    assert.equal(res.data.toString(), payload);
    sent += payload.length;
    await scrape(lb);
  }
  await waitFor(async () => (await status(lb)).connections.active === 0, 5000, 'every connection closed');
  const rows = await backends(lb);
  const before = await status(lb);
  m = await scrape(lb);
  const conns = (n: string): number => metric(m, 'lemonade_connections_total', { backend: n }) ?? 0;
  assert.equal(conns('a') + conns('b'), 9, 'one forwarded connection per connection made');
  assert.equal(conns('gone'), 0);
  assert.equal(conns('a'), rows.find((x) => x.name === 'a')!.total);
  assert.equal(conns('b'), rows.find((x) => x.name === 'b')!.total);
  assert.ok(conns('a') >= 3 && conns('b') >= 3, `a ${conns('a')}, b ${conns('b')}`);
  const errs = metric(m, 'lemonade_backend_connect_errors_total', { backend: 'gone' })!;
  assert.ok(errs >= 1, 'the stopped backend was tried and failed');
  const goneRow = rows.find((x) => x.name === 'gone')! as Row & { connect_errors: number };
  assert.equal(goneRow.total, 0, 'every try of gone failed: no connection was established');
  assert.equal(errs, goneRow.connect_errors);
  assert.equal(metric(m, 'lemonade_backend_connect_errors_total', { backend: 'a' }), 0);
  const bytes = (dir: string): number => (metric(m, 'lemonade_bytes_total', { backend: 'a', direction: dir }) ?? 0) + (metric(m, 'lemonade_bytes_total', { backend: 'b', direction: dir }) ?? 0);
  assert.equal(bytes('in'), sent);
  assert.equal(bytes('out'), sent);
  assert.equal(metric(m, 'lemonade_connection_duration_seconds_count'), 9);
  assert.equal(metric(m, 'lemonade_backend_connect_duration_seconds_count', { backend: 'a' }), conns('a'));
  assert.equal(metric(m, 'lemonade_backend_connect_duration_seconds_count', { backend: 'b' }), conns('b'));
  assert.equal(metric(m, 'lemonade_connection_duration_seconds_bucket', { le: '+Inf' }), 9);
  assert.equal(metric(m, 'lemonade_connections_active', { backend: 'a' }), 0);
  assert.equal(before.connections.total, 9);

  // scraping again and again changes no data-path figure
  for (let i = 0; i < 5; i++) await scrape(lb);
  const again = await scrape(lb);
  for (const name of ['lemonade_connections_total', 'lemonade_bytes_total', 'lemonade_connection_duration_seconds_count', 'lemonade_backend_connect_errors_total']) {
    assert.deepEqual(
      again.filter((s) => s.name === name),
      m.filter((s) => s.name === name),
      `${name} unchanged by scrapes`,
    );
  }
  assert.deepEqual((await status(lb)).connections, before.connections);

  // held connections show as active; the one over max_connections is rejected and counted
  const held = [hold(lb.port), hold(lb.port), hold(lb.port)];
  t.after(() => held.forEach((h) => h.sock.destroy()));
  await Promise.all(held.map((h, i) => h.echo(`h${i}`)));
  const over = await tcpExchange(lb.port, 'nope');
  assert.equal(over.data.length, 0);
  m = await scrape(lb);
  assert.equal((metric(m, 'lemonade_connections_active', { backend: 'a' }) ?? 0) + (metric(m, 'lemonade_connections_active', { backend: 'b' }) ?? 0), 3);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', { reason: 'max_connections' }), 1);
  const st = await status(lb);
  assert.deepEqual(st.connections, { active: 3, total: 12, rejected: 1 });

  // operator state shows in backend_up and backend_state
  assert.equal((await lb.admin('/backends/a/drain', 'POST')).status, 200);
  m = await scrape(lb);
  assert.equal(metric(m, 'lemonade_backend_up', { backend: 'a' }), 0);
  assert.equal(metric(m, 'lemonade_backend_state', { backend: 'a', state: 'draining' }), 1);
  assert.equal(metric(m, 'lemonade_backend_state', { backend: 'a', state: 'healthy' }), 0);
  // close the held connections before stopping (an open one would hold up the shutdown)
  held.forEach((h) => h.sock.destroy());
  await Promise.all(held.map((h) => h.closed));
  await waitFor(async () => (await status(lb)).connections.active === 0, 5000, 'the held connections to close');
});

test('health checks are counted by backend and result', async (t) => {
  const a = await startEcho(t);
  const lb = await startBalancer(
    t,
    testConfig(
      [
        { address: a.address, name: 'a' },
        { address: '127.0.0.1:1', name: 'dead' },
      ],
      { health: FAST_HEALTH },
    ),
  );
  const m = await waitFor(async () => {
    const s = await scrape(lb);
    return (metric(s, 'lemonade_health_checks_total', { backend: 'a', result: 'success' }) ?? 0) >= 1 &&
      (metric(s, 'lemonade_health_checks_total', { backend: 'dead', result: 'failure' }) ?? 0) >= 1
      ? s
      : null;
  }, 5000, 'a check of each backend');
  assert.equal(metric(m, 'lemonade_health_checks_total', { backend: 'a', result: 'failure' }) ?? 0, 0);
  assert.equal(metric(m, 'lemonade_health_checks_total', { backend: 'dead', result: 'success' }) ?? 0, 0);
  assert.equal(metric(m, 'lemonade_backend_up', { backend: 'dead' }), 0);
  assert.equal(metric(m, 'lemonade_backend_state', { backend: 'dead', state: 'unhealthy' }), 1);
});

// -------------------------------------------------------------------------------------------
// GET /, routing errors

test('GET / is a self-contained HTML page; unknown paths are 404; wrong methods are 405 with Allow', async (t) => {
  const alpha = await tagged(t, 'alpha');
  const lb = await startBalancer(t, testConfig([{ address: alpha.address, name: 'alpha' }], { admin: ADMIN_WITH_TOKEN }));

  const page = await lb.admin('/');
  assert.equal(page.status, 200);
  assert.match(String(page.headers['content-type']), /^text\/html/);
  assert.match(page.body, /<html[\s>]/i);
  assert.match(page.body, /<\/html>/i);
  assert.ok(!/\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?\/\//i.test(page.body), 'no external src/href');
  assert.ok(!/@import|url\(\s*["']?(?:https?:)?\/\//i.test(page.body), 'no external stylesheet or font');
  assert.ok(!page.body.includes(TOKEN), 'the token is not in the page');

  const head = await lb.admin('/health', 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal((await lb.admin('/health/')).status, 200, 'a trailing slash is the same endpoint');
  assert.equal((await lb.admin('/health?verbose=1')).status, 200, 'a query string is ignored');

  for (const path of ['/nope', '/backends/alpha', '/backends/alpha/explode', '/backends/alpha/drain/now', '/metrics/x', '/index.html', '/api/status']) {
    for (const method of ['GET', 'POST']) {
      const r = await lb.admin(path, method);
      assert.equal(r.status, 404, `${method} ${path}`);
      assert.match(String(r.headers['content-type']), /^application\/json/);
      assert.match((JSON.parse(r.body) as { error: string }).error, /no such endpoint/);
    }
  }

  const wrong: [string, string, string][] = [
    ['POST', '/', 'GET'],
    ['POST', '/health', 'GET'],
    ['PUT', '/ready', 'GET'],
    ['DELETE', '/status', 'GET'],
    ['POST', '/backends', 'GET'],
    ['POST', '/events', 'GET'],
    ['POST', '/metrics', 'GET'],
    ['GET', '/reload', 'POST'],
    ['PUT', '/reload', 'POST'],
    ['GET', '/backends/alpha/drain', 'POST'],
    ['DELETE', '/backends/alpha/disable', 'POST'],
    ['HEAD', '/backends/alpha/enable', 'POST'],
  ];
  for (const [method, path, allow] of wrong) {
    const r = await lb.admin(path, method);
    assert.equal(r.status, 405, `${method} ${path}`);
    assert.equal(r.headers['allow'], allow, `${method} ${path} Allow`);
    if (method !== 'HEAD') assert.match((JSON.parse(r.body) as { error: string }).error, new RegExp(`${method} not allowed`));
  }
  assert.equal((await row(lb, 'alpha')).state, 'healthy', 'a wrong method changed nothing');
});

// -------------------------------------------------------------------------------------------
// Token

test('with [admin] token: mutating endpoints need the bearer token (401 without, 403 wrong), read-only ones do not', async (t) => {
  const alpha = await tagged(t, 'alpha');
  const lb = await startBalancer(t, testConfig([{ address: alpha.address, name: 'alpha' }], { admin: ADMIN_WITH_TOKEN, runtime: 'health_cap = 4' }));

  for (const [path, state] of [
    ['/backends/alpha/drain', 'draining'],
    ['/backends/alpha/disable', 'disabled'],
    ['/backends/alpha/enable', 'healthy'],
    ['/reload', null],
  ] as const) {
    const none = await lb.admin(path, 'POST');
    assert.equal(none.status, 401, `${path} without a token`);
    assert.match((JSON.parse(none.body) as { error: string }).error, /Authorization: Bearer/);
    for (const h of [bearer('nope'), bearer(`${TOKEN}x`), bearer(TOKEN.slice(0, -1)), { authorization: `Basic ${TOKEN}` }, { authorization: TOKEN }, { authorization: 'Bearer' }]) {
      const w = await lb.admin(path, 'POST', h);
      assert.equal(w.status, 403, `${path} with ${h.authorization}`);
      assert.deepEqual(JSON.parse(w.body), { error: 'wrong token' });
    }
    if (state !== null) assert.notEqual((await row(lb, 'alpha')).state, state, `${path} did nothing without the token`);
    const ok = await lb.admin(path, 'POST', bearer(TOKEN));
    assert.equal(ok.status, 200, `${path} with the token: ${ok.body}`);
    if (state !== null) assert.equal((await row(lb, 'alpha')).state, state);
  }
  for (const path of ['/', '/health', '/ready', '/status', '/backends', '/events', '/metrics']) {
    const r = await lb.admin(path);
    assert.equal(r.status, 200, `GET ${path} needs no token`);
    assert.ok(!r.body.includes(TOKEN), `GET ${path} does not show the token`);
  }
  assert.equal((await lb.admin('/backends/alpha/disable', 'POST', { authorization: `bearer   ${TOKEN}` })).status, 200, 'the scheme is case-insensitive');
  // the token is checked before the name is looked up: no probing names without it
  assert.equal((await lb.admin('/backends/nobody/drain', 'POST')).status, 401);
  assert.equal((await lb.admin('/backends/nobody/drain', 'POST', bearer(TOKEN))).status, 404);
  assert.equal((await status(lb))['admin_token_set'], true);
  // health_cap bounds the event history
  assert.ok((await adminJson<Event[]>(lb, '/events')).length <= 4);

  // the CLI
  const url = `http://127.0.0.1:${lb.adminPort}`;
  const no = await runCli(['backend', 'drain', 'alpha', '--admin', url]);
  assert.equal(no.code, 1);
  assert.match(no.stderr, /: 401 this endpoint needs "Authorization: Bearer <token>"/);
  assert.equal((await row(lb, 'alpha')).state, 'disabled');
  const dr = await runCli(['backend', 'drain', 'alpha', '--admin', url, '--token', TOKEN]);
  assert.equal(dr.code, 0, dr.stderr);
  assert.equal(dr.stdout.trim(), 'alpha: draining');
  assert.equal((await row(lb, 'alpha')).state, 'draining');
  const en = await runCli(['backend', 'enable', 'alpha', '--admin', `127.0.0.1:${lb.adminPort}/`], { env: { LEMONADE_ADMIN_TOKEN: TOKEN } });
  assert.equal(en.code, 0, en.stderr);
  assert.equal(en.stdout.trim(), 'alpha: healthy');
});

// -------------------------------------------------------------------------------------------
// Summary log

test('the summary log line comes every [metrics] interval with totals and per-backend figures', async (t) => {
  const a = await startEcho(t);
  const lb = await startBalancer(
    t,
    testConfig(
      [
        { address: a.address, name: 'a' },
        { address: '127.0.0.1:1', name: 'dead' },
      ],
      { admin: 'listen_address = "127.0.0.1:0"\n[metrics]\ninterval = "500ms"', health: FAST_HEALTH },
    ),
  );
  await waitFor(async () => (await row(lb, 'dead')).state === 'unhealthy', 5000, 'dead to be down');
  const isSummary = (l: Record<string, unknown>): boolean => l['msg'] === 'summary';
  await lb.waitForLog(isSummary, 3000, 'the first summary');
  for (let i = 0; i < 3; i++) assert.equal((await tcpExchange(lb.port, 'hi')).data.toString(), 'hi');
  const made = Date.now();
  type Summary = { msg: string; time: number; active: number; total: number; rejected: number; backends: Record<string, { state: string; active: number; rate: number; latency_ms: number | null }> };
  const withTraffic = (await lb.waitForLog((l) => isSummary(l) && l['total'] === 3, 3000, 'a summary with the 3 connections')) as unknown as Summary;
  assert.equal(withTraffic.active, 0);
  assert.equal(withTraffic.rejected, 0);
  assert.deepEqual(Object.keys(withTraffic.backends).sort(), ['a', 'dead']);
  assert.equal(withTraffic.backends['a']!.state, 'healthy');
  assert.equal(withTraffic.backends['a']!.active, 0);
  assert.equal(typeof withTraffic.backends['a']!.rate, 'number');
  assert.equal(typeof withTraffic.backends['a']!.latency_ms, 'number');
  assert.equal(withTraffic.backends['dead']!.state, 'unhealthy');
  assert.equal(withTraffic.backends['dead']!.latency_ms, null);
  // the rates add up to the connections made (rate × interval per line)
  await waitFor(() => lb.logs.filter(isSummary).length >= 5 && (lb.logs.filter(isSummary).at(-1)!['time'] as number) > made + 600, 5000, 'two summaries after the traffic');
  const lines = lb.logs.filter(isSummary) as unknown as Summary[];
  let seen = 0;
  for (let i = 1; i < lines.length; i++) seen += lines[i]!.backends['a']!.rate * ((lines[i]!.time - lines[i - 1]!.time) / 1000);
  assert.ok(Math.abs(seen - 3) < 0.5, `rates add up to ${seen}, expected 3`);
  assert.equal(lines.at(-1)!.backends['a']!.rate, 0, 'no traffic, rate 0');
  // the period
  const gaps = lines.slice(1).map((l, i) => l.time - lines[i]!.time);
  for (const g of gaps) assert.ok(g >= 350 && g <= 1500, `summary gaps ${gaps.join(',')} ms, interval 500 ms`);
});

test(
  'connections made before the first summary count in its rate',
  async (t) => {
    const a = await startEcho(t);
    const lb = await startBalancer(t, testConfig([{ address: a.address, name: 'a' }], { admin: 'listen_address = "127.0.0.1:0"\n[metrics]\ninterval = "500ms"' }));
    for (let i = 0; i < 3; i++) assert.equal((await tcpExchange(lb.port, 'hi')).data.toString(), 'hi');
    const first = (await lb.waitForLog((l) => l['msg'] === 'summary', 3000, 'the first summary')) as { total: number; backends: Record<string, { rate: number }> };
    assert.equal(first.total, 3, 'the traffic came before the first summary');
    assert.ok(first.backends['a']!.rate > 0, `rate ${first.backends['a']!.rate} after 3 connections`);
  },
);

// -------------------------------------------------------------------------------------------
// Admin API off

test('listen_address = "" turns the admin API off: nothing else listens', async (t) => {
  const alpha = await tagged(t, 'alpha');
  const lb = await startBalancer(t, testConfig([{ address: alpha.address, name: 'alpha' }], { admin: 'listen_address = ""' }), { noAdmin: true });
  const started = await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started');
  assert.equal(started['admin'], null);
  assert.equal(lb.adminPort, 0);
  assert.equal(await pick(lb.port), 'alpha', 'the proxy serves');
  if (!existsSync(`/proc/${lb.proc.pid}/fd`)) return t.skip('no /proc to list listening sockets');
  assert.deepEqual(listeningPorts(lb.proc.pid!), [lb.port], 'the proxy port is the only listening socket');
});
