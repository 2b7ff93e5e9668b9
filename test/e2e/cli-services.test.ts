// `lemonade status` and `lemonade backend … [--service SVC]` against a balancer with several
// services ([[services]]), played by a small fake admin API in this file that answers canned JSON of the
// contract and records every request: the SERVICE column and grouping, the POST path with and
// without --service (percent-encoded), the 409 on an ambiguous name, and an older balancer whose
// rows carry no service.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { runCli } from '../helpers';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly authorization: string | undefined;
}

const AT = new Date().toISOString();
const row = (service: string | undefined, id: number, name: string, state = 'healthy', total = 0) => ({
  ...(service === undefined ? {} : { service }),
  id,
  name,
  address: `10.0.0.${id + 1}:${5000 + id}`,
  weight: 1,
  backup: false,
  max_connections: 0,
  state,
  active: 0,
  total,
  latency_ms: total > 0 ? 1.25 : null,
  connect_errors: 0,
  last_check: { at: AT, ok: true, error: null },
});

// API order interleaves the services, so grouping is visible: postgres first (its first row comes first)
const ROWS = [
  row('postgres', 0, 'pg-1', 'healthy', 12),
  row('redis', 0, 'cache-1'),
  row('postgres', 1, 'pg-2', 'draining', 3),
  row('redis', 1, 'shared'),
  row('postgres', 2, 'shared'),
  row('app/v2 é', 0, 'web 1'),
];

/** A fake admin API: GET /backends, the two POST forms, 409 for "shared" on the old path. */
async function fakeAdmin(rows: readonly object[]): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const send = (res: http.ServerResponse, code: number, body: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const server = http.createServer((req, res) => {
    // the raw target, as sent: percent-encoding is what is being checked
    seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    req.resume();
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/backends') return send(res, 200, rows);
    let m = /^\/services\/([^/]+)\/backends\/([^/]+)\/(drain|enable|disable)$/.exec(url);
    if (req.method === 'POST' && m) {
      const [service, name, action] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!), m[3]!];
      const known = (rows as { service?: string; name: string }[]).some((r) => r.service === service && r.name === name);
      if (!known) return send(res, 404, { error: `no backend named "${name}" in service "${service}"` });
      return send(res, 200, { service, backend: name, action, state: action === 'enable' ? 'healthy' : action === 'drain' ? 'draining' : 'disabled' });
    }
    m = /^\/backends\/([^/]+)\/(drain|enable|disable)$/.exec(url);
    if (req.method === 'POST' && m) {
      const name = decodeURIComponent(m[1]!);
      const services = (rows as { service?: string; name: string }[]).filter((r) => r.name === name).map((r) => r.service);
      if (services.length === 0) return send(res, 404, { error: `no backend named "${name}"` });
      if (services.length > 1) return send(res, 409, { error: `backend name "${name}" is ambiguous`, services });
      // a balancer older than services (rows without one) does not name it
      return send(res, 200, { ...(services[0] === undefined ? {} : { service: services[0] }), backend: name, action: m[2], state: 'draining' });
    }
    send(res, 404, { error: `no such endpoint: ${url}` });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

test('lemonade status prints a SERVICE column first and groups the rows by service, in API order', async (t) => {
  const api = await fakeAdmin(ROWS);
  t.after(() => api.close());
  const r = await runCli(['status', '--admin', api.url]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^SERVICE\s+NAME\s+ADDRESS\s+STATE\s+WEIGHT\s+ACTIVE\s+TOTAL\s+LATENCY\s+LAST CHECK$/);
  const cells = lines.slice(1).map((l) => l.split(/\s{2,}/));
  assert.deepEqual(
    cells.map((c) => [c[0], c[1]]),
    [
      ['postgres', 'pg-1'],
      ['postgres', 'pg-2'],
      ['postgres', 'shared'],
      ['redis', 'cache-1'],
      ['redis', 'shared'],
      ['app/v2 é', 'web 1'],
    ],
  );
  // the rest of a row is as before, under its header
  const pg1 = lines[1]!;
  const col = (h: string): number => lines[0]!.indexOf(h);
  assert.equal(pg1.slice(col('ADDRESS')).split(/\s+/)[0], '10.0.0.1:5000');
  assert.equal(pg1.slice(col('STATE')).split(/\s+/)[0], 'healthy');
  assert.match(pg1, /\s12\s+1\.3ms\s+ok \d+s ago$/);
  assert.match(lines[2]!, /^postgres\s+pg-2\s+10\.0\.0\.2:5001\s+draining\s/);
  assert.deepEqual(api.seen.map((s) => `${s.method} ${s.url}`), ['GET /backends']);

  // --json prints the API's rows as they are, service included
  const js = await runCli(['status', '--admin', api.url, '--json']);
  assert.equal(js.code, 0, js.stderr);
  assert.deepEqual(JSON.parse(js.stdout), ROWS);
});

test('lemonade status against a balancer whose rows carry no service omits the column', async (t) => {
  const api = await fakeAdmin([row(undefined, 0, 'alpha', 'healthy', 2), row(undefined, 1, 'beta')]);
  t.after(() => api.close());
  const r = await runCli(['status', '--admin', api.url]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^NAME\s+ADDRESS\s+STATE\s+WEIGHT\s+ACTIVE\s+TOTAL\s+LATENCY\s+LAST CHECK$/);
  assert.doesNotMatch(r.stdout, /SERVICE/);
  assert.match(lines[1]!, /^alpha\s+10\.0\.0\.1:5000\s+healthy\s/);
  assert.match(lines[2]!, /^beta\s+10\.0\.0\.2:5001\s+healthy\s/);
});

test('lemonade backend ACTION NAME --service SVC posts to /services/SVC/backends/NAME/ACTION, percent-encoded', async (t) => {
  const api = await fakeAdmin(ROWS);
  t.after(() => api.close());
  const d = await runCli(['backend', 'drain', 'shared', '--service', 'redis', '--admin', api.url, '--token', 's3cret']);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(d.stdout, 'redis/shared: draining\n');
  const e = await runCli(['backend', 'enable', 'web 1', '-s', 'app/v2 é', '--admin', api.url]);
  assert.equal(e.code, 0, e.stderr);
  assert.equal(e.stdout, 'app/v2 é/web 1: healthy\n');
  const dis = await runCli(['backend', 'disable', 'pg-2', '--service', 'postgres', '--admin', api.url]);
  assert.equal(dis.code, 0, dis.stderr);
  assert.deepEqual(
    api.seen.map((s) => `${s.method} ${s.url}`),
    ['POST /services/redis/backends/shared/drain', 'POST /services/app%2Fv2%20%C3%A9/backends/web%201/enable', 'POST /services/postgres/backends/pg-2/disable'],
  );
  assert.equal(api.seen[0]!.authorization, 'Bearer s3cret', 'the token goes with it');

  // an unknown service or backend is the API's 404, exit 1 as every admin error
  const nf = await runCli(['backend', 'drain', 'pg-1', '--service', 'redis', '--admin', api.url]);
  assert.equal(nf.code, 1);
  assert.match(nf.stderr, /^lemonade: http:\/\/127\.0\.0\.1:\d+\/services\/redis\/backends\/pg-1\/drain: 404 no backend named "pg-1" in service "redis"\n$/);
  const empty = await runCli(['backend', 'drain', 'pg-1', '--service', '', '--admin', api.url]);
  assert.equal(empty.code, 2, 'an empty --service is a usage error');
});

test('lemonade backend ACTION NAME without --service uses the old path; a 409 names the services and asks for --service', async (t) => {
  const api = await fakeAdmin(ROWS);
  t.after(() => api.close());
  const ok = await runCli(['backend', 'drain', 'pg-1', '--admin', api.url]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, 'postgres/pg-1: draining\n', 'the service the balancer found');
  const amb = await runCli(['backend', 'drain', 'shared', '--admin', api.url]);
  assert.equal(amb.code, 1);
  assert.equal(amb.stdout, '');
  assert.match(
    amb.stderr,
    /^lemonade: http:\/\/127\.0\.0\.1:\d+\/backends\/shared\/drain: 409 backend "shared" is in 2 services \(redis, postgres\): pass --service redis or --service postgres to say which\n$/,
  );
  assert.doesNotMatch(amb.stderr, /\bat .*\.js:\d+/, 'no stack trace');
  assert.deepEqual(
    api.seen.map((s) => `${s.method} ${s.url}`),
    ['POST /backends/pg-1/drain', 'POST /backends/shared/drain'],
  );
});

test('lemonade backend against a balancer older than services prints the name alone', async (t) => {
  const api = await fakeAdmin([row(undefined, 0, 'alpha')]);
  t.after(() => api.close());
  const r = await runCli(['backend', 'drain', 'alpha', '--admin', api.url]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'alpha: draining\n');
  assert.deepEqual(api.seen.map((s) => `${s.method} ${s.url}`), ['POST /backends/alpha/drain']);
});

test('--help of status and backend tells of services', async () => {
  const b = await runCli(['backend', '--help']);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /--service/);
  assert.match(b.stdout, /several services/);
  const s = await runCli(['status', '--help']);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /SERVICE column/);
});
