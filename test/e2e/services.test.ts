// [[services]] from outside, part 1: the [[services]] file (valid forms and every validation error
// with its key path and line), per-service settings and what they inherit, the caps (global and
// per service) with rejections counted per service, the admin API (/services, /backends rows,
// per-service actions and the 409, /health with its services map and ?service=), the metrics'
// service label and `lemonade status`. Real processes and sockets; reloads, workers and socket
// activation are in test/e2e/services-reload.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, freePort, runCli, startBalancer, startEcho, startNamed, startTcpServer, tempDir, waitFor, type Balancer, type TestServer } from '../helpers';
import { backends, greeting, holdEcho, metric, ports, services, servicesFile, type BackendRow, type ServiceRow } from '../services-helpers';

const row = (rows: BackendRow[], service: string, name: string): BackendRow => {
  const r = rows.find((x) => x.service === service && x.name === name);
  assert.ok(r, `a /backends row ${service}/${name} in ${JSON.stringify(rows)}`);
  return r;
};

async function closeAll(lb: Balancer, servers: readonly TestServer[]): Promise<void> {
  await lb.stop();
  await Promise.all(servers.map((s) => s.close()));
}

// ---------------------------------------------------------------------------------------------
// 1. The file

async function validateText(text: string): Promise<{ code: number | null; valid: boolean; errors: { path: string; line?: number; message: string }[] }> {
  const file = join(tempDir(), 'config.toml');
  writeFileSync(file, text);
  const r = await runCli(['lb', '--validate', '--json', '--config', file]);
  const out = JSON.parse(r.stdout) as { valid: boolean; errors?: { path: string; line?: number; message: string }[] };
  return { code: r.code, valid: out.valid, errors: out.errors ?? [] };
}

/** The 1-based line of the first line of `text` that matches `re`. */
const lineOf = (text: string, re: RegExp, from = 0): number => text.split('\n').findIndex((l, i) => i >= from - 1 && re.test(l)) + 1;

test('a file with [[services]] only (no [[backends]], no [proxy] listen_address) is valid and serves', async (t) => {
  const [a, b] = await Promise.all([startNamed('a1'), startNamed('b1')]);
  const [pa, pb] = await ports(2);
  const text = servicesFile({
    services: [
      { name: 'alpha', port: pa!, backends: [{ name: 'a1', address: a.address }] },
      { name: 'beta', port: pb!, backends: [{ name: 'b1', address: b.address }] },
    ],
  });
  assert.doesNotMatch(text, /^\[\[backends\]\]/m);
  assert.doesNotMatch(text, /^\[proxy\]\nlisten_address/m);
  const v = await validateText(text.replace('"127.0.0.1:0"', '""'));
  assert.deepEqual({ code: v.code, valid: v.valid, errors: v.errors }, { code: 0, valid: true, errors: [] });
  const lb = await startBalancer(text);
  t.after(() => closeAll(lb, [a, b]));
  assert.equal(await greeting(pa!), 'a1');
  assert.equal(await greeting(pb!), 'b1');
  const rows = await services(lb);
  assert.deepEqual(rows.map((r) => [r.name, r.listen_address]), [['alpha', `127.0.0.1:${pa}`], ['beta', `127.0.0.1:${pb}`]]);
});

test('the default service and named services together: each port reaches its own pool', async (t) => {
  const [d, a] = await Promise.all([startNamed('d1'), startNamed('a1')]);
  const [pd, pa] = await ports(2);
  const lb = await startBalancer(
    servicesFile({ default: { port: pd!, backends: [{ name: 'd1', address: d.address }] }, services: [{ name: 'alpha', port: pa!, backends: [{ name: 'a1', address: a.address }] }] }),
  );
  t.after(() => closeAll(lb, [d, a]));
  for (let i = 0; i < 3; i++) {
    assert.equal(await greeting(pd!), 'd1');
    assert.equal(await greeting(pa!), 'a1');
  }
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.listen_address, r.total]), [
    ['default', `127.0.0.1:${pd}`, 3],
    ['alpha', `127.0.0.1:${pa}`, 3],
  ]);
  // with no services at all the file is invalid
  const none = await validateText('[admin]\nlisten_address = ""\n');
  assert.equal(none.valid, false);
  assert.equal(none.errors[0]!.path, 'backends');
  assert.match(none.errors[0]!.message, /\[\[services\]\]/);
});

test('validation names the key path and line of every [[services]] mistake', async () => {
  const B = '[[services.backends]]\naddress = "127.0.0.1:1"';
  const text = [
    '[admin]',
    'listen_address = ""',
    '[[services]]', // services[0]: no name, unknown key in [services.health]
    'listen_address = "127.0.0.1:7101"',
    '[services.health]',
    'intervl = "1s"',
    B,
    '[[services]]', // services[1]: "default", an unknown key, a bad overridable value
    'name = "default"',
    'listen_address = "127.0.0.1:7102"',
    'conect_timeout = "1s"',
    'connect_timeout = "x"',
    B,
    '[[services]]', // services[2]: bad characters, no listen_address
    'name = "bad name!"',
    B,
    '[[services]]', // services[3]: no backends
    'name = "dup"',
    'listen_address = "127.0.0.1:7103"',
    '[[services]]', // services[4]: a duplicate name
    'name = "dup"',
    'listen_address = "127.0.0.1:7104"',
    B,
    '',
  ].join('\n');
  const v = await validateText(text);
  assert.equal(v.code, 1);
  assert.equal(v.valid, false);
  const at = (path: string): { line?: number; message: string } => {
    const e = v.errors.find((x) => x.path === path);
    assert.ok(e, `an error at ${path} in ${JSON.stringify(v.errors, null, 1)}`);
    return e;
  };
  const header = (k: number): number => text.split('\n').reduce<number[]>((acc, l, i) => (l === '[[services]]' ? [...acc, i + 1] : acc), [])[k]!;
  assert.match(at('services[0].name').message, /every service needs a name/);
  assert.equal(at('services[0].name').line, header(0));
  assert.match(at('services[0].health.intervl').message, /unknown key "intervl" in \[services\.health\] \(did you mean "interval"\?\)/);
  assert.equal(at('services[0].health.intervl').line, lineOf(text, /^intervl =/));
  assert.match(at('services[1].name').message, /"default" is the name of the service the top-level/);
  assert.equal(at('services[1].name').line, header(1) + 1);
  assert.match(at('services[1].conect_timeout').message, /unknown key "conect_timeout" in \[\[services\]\] \(did you mean "connect_timeout"\?\)/);
  assert.equal(at('services[1].conect_timeout').line, lineOf(text, /^conect_timeout =/));
  assert.match(at('services[1].connect_timeout').message, /expected a duration/);
  assert.equal(at('services[1].connect_timeout').line, lineOf(text, /^connect_timeout = "x"/));
  assert.match(at('services[2].name').message, /expected 1-64 of A-Z a-z 0-9 \. _ -, got "bad name!"/);
  assert.equal(at('services[2].name').line, header(2) + 1);
  assert.match(at('services[2].listen_address').message, /every service needs a listen address/);
  assert.equal(at('services[2].listen_address').line, header(2));
  assert.match(at('services[3].backends').message, /a service needs at least one \[\[services\.backends\]\] entry/);
  assert.equal(at('services[3].backends').line, header(3));
  assert.match(at('services[4].name').message, /duplicate name "dup" \(also services\[3\]\)/);
  assert.equal(at('services[4].name').line, header(4) + 1);

  // a mistake inside a service's backend is located at its own line, not at the service
  const bad = await validateText(['[admin]', 'listen_address = ""', '[[services]]', 'name = "s"', 'listen_address = "127.0.0.1:7105"', '[[services.backends]]', 'address = "127.0.0.1:1"', '[[services.backends]]', 'address = "127.0.0.1:2"', 'weight = -1', ''].join('\n'));
  assert.deepEqual(bad.errors.map((e) => [e.path, e.line]), [['services[0].backends[1].weight', 10]]);

  // two services on one address without sni (the default service's included)
  const two = await validateText(
    ['[proxy]', 'listen_address = "127.0.0.1:7106"', '[admin]', 'listen_address = ""', '[[backends]]', 'address = "127.0.0.1:1"', '[[services]]', 'name = "a"', 'listen_address = "127.0.0.1:7107"', B, '[[services]]', 'name = "b"', 'listen_address = "127.0.0.1:7106"', B, ''].join('\n'),
  );
  assert.deepEqual(two.errors.map((e) => [e.path, e.line]), [['services[1].listen_address', 14]]);
  assert.match(two.errors[0]!.message, /127\.0\.0\.1:7106 is also the listen address of service "default", and neither lists sni: .*at most one of them may leave it empty \(the default route\)/);
});

// ---------------------------------------------------------------------------------------------
// 2. Per-service settings and what they inherit

test("each service's own algorithm picks in its own way", async (t) => {
  const servers = await Promise.all(['x', 'y', 'p', 'q'].map((n) => startNamed(n)));
  const [x, y, p, q] = servers as [TestServer, TestServer, TestServer, TestServer];
  const [prr, pwrr] = await ports(2);
  const lb = await startBalancer(
    servicesFile({
      algorithm: 'round_robin',
      services: [
        // inherits round_robin: weights are ignored
        { name: 'rr', port: prr!, backends: [{ name: 'x', address: x.address, weight: 3 }, { name: 'y', address: y.address, weight: 1 }] },
        { name: 'wrr', port: pwrr!, lines: ['algorithm = "weighted_round_robin"'], backends: [{ name: 'p', address: p.address, weight: 3 }, { name: 'q', address: q.address, weight: 1 }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, servers));
  const seq = async (port: number, n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(await greeting(port));
    return out;
  };
  const rr = await seq(prr!, 8);
  const wrr = await seq(pwrr!, 8);
  assert.deepEqual([rr.filter((n) => n === 'x').length, rr.filter((n) => n === 'y').length], [4, 4], `round robin alternates: ${rr}`);
  assert.ok(rr.every((n, i) => i === 0 || n !== rr[i - 1]), `round robin alternates: ${rr}`);
  assert.deepEqual([wrr.filter((n) => n === 'p').length, wrr.filter((n) => n === 'q').length], [6, 2], `smooth WRR 3:1: ${wrr}`);
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.algorithm]), [['rr', 'round_robin'], ['wrr', 'weighted_round_robin']]);
});

test('a service overrides a [proxy] key (deny, proxy_protocol) while another inherits it', async (t) => {
  // answers, once the client ends, with every byte it received (a PROXY header included)
  const recorder = (): Promise<TestServer> =>
    startTcpServer((s) => {
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.on('end', () => s.end(Buffer.concat(got)));
    });
  const servers = await Promise.all([recorder(), recorder(), startNamed('n')]);
  const [r1, r2, n] = servers as [TestServer, TestServer, TestServer];
  const [pin, pown, pdeny] = await ports(3);
  const lb = await startBalancer(
    servicesFile({
      proxy: ['proxy_protocol = "v1"'],
      services: [
        { name: 'inherits', port: pin!, backends: [{ name: 'r1', address: r1.address }] },
        { name: 'own', port: pown!, lines: ['proxy_protocol = "off"'], backends: [{ name: 'r2', address: r2.address }] },
        { name: 'closed', port: pdeny!, lines: ['deny = ["127.0.0.0/8"]'], backends: [{ name: 'n', address: n.address }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, servers));
  const exchange = (port: number): Promise<string> =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => s.end('hello'));
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('error', () => {});
      s.on('close', () => resolve(got));
    });
  assert.match(await exchange(pin!), /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\nhello$/, 'the inherited proxy_protocol = "v1"');
  assert.equal(await exchange(pown!), 'hello', 'its own proxy_protocol = "off"');
  // deny on one service refuses the client there only
  const before = n.accepted;
  assert.equal(await greeting(pdeny!), 'closed');
  const m = (await lb.admin('/metrics')).body;
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="closed"', 'reason="acl"']), 1);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['reason="acl"']), 1, 'no other service refused anyone');
  assert.equal(n.accepted - before <= 1, true, 'the refused client never reached the backend (a health check may have)');
  assert.equal((await services(lb)).find((r) => r.name === 'closed')!.rejected, 1);
});

test('[services.health]: kind and interval per service, the rest inherited from [health]', async (t) => {
  // a TCP server that is no HTTP server: healthy to a tcp check, unhealthy to an http one
  const servers = await Promise.all([startNamed('t1'), startNamed('h1'), startNamed('f1')]);
  const [t1, h1, f1] = servers as [TestServer, TestServer, TestServer];
  const [pt, ph, pf] = await ports(3);
  const lb = await startBalancer(
    servicesFile({
      health: ['interval = "500ms"', 'timeout = "300ms"', 'unhealthy_threshold = 1', 'healthy_threshold = 1'],
      services: [
        { name: 'tcp', port: pt!, backends: [{ name: 't1', address: t1.address }] },
        { name: 'http', port: ph!, health: ['kind = "http"', 'path = "/ok"'], backends: [{ name: 'h1', address: h1.address }] },
        { name: 'fast', port: pf!, health: ['interval = "100ms"'], backends: [{ name: 'f1', address: f1.address }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, servers));
  // the http service's backend goes down after one failed check (unhealthy_threshold inherited)
  await waitFor(async () => row(await backends(lb), 'http', 'h1').state === 'unhealthy', 5000, 'h1 unhealthy to the http check');
  const rows = await backends(lb);
  assert.equal(row(rows, 'tcp', 't1').state, 'healthy');
  assert.equal(row(rows, 'fast', 'f1').state, 'healthy');
  assert.equal(await greeting(ph!), 'closed', 'no usable backend: the client is closed at once');
  assert.equal(await greeting(pt!), 't1');
  // every 100 ms against every 500 ms (inherited): the fast one checks several times as often
  const checks = async (svc: string): Promise<number> => metric((await lb.admin('/metrics')).body, 'lemonade_health_checks_total', [`service="${svc}"`]);
  await waitFor(async () => (await checks('fast')) >= 15, 8000, '15 checks of the fast service');
  const [fast, slow] = [await checks('fast'), await checks('tcp')];
  assert.ok(fast >= 3 * slow, `fast ${fast} checks, tcp ${slow} checks`);
});

// ---------------------------------------------------------------------------------------------
// 3. Caps

test('[proxy] max_connections caps all services together; a service max_connections caps that service; rejections counted per service and reason', async (t) => {
  const echoes = await Promise.all([startEcho(), startEcho()]);
  const [ea, eb] = echoes as [TestServer, TestServer];
  const [pa, pb] = await ports(2);
  const lb = await startBalancer(
    servicesFile({
      proxy: ['max_connections = 3'],
      services: [
        { name: 'a', port: pa!, lines: ['max_connections = 1'], backends: [{ name: 'ea', address: ea.address }] },
        { name: 'b', port: pb!, backends: [{ name: 'eb', address: eb.address }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, echoes));
  const a1 = await holdEcho(pa!, t);
  assert.ok(a1, 'the first connection to a flows');
  assert.equal(await holdEcho(pa!, t), null, "a's own cap of 1 refuses the second");
  const b1 = await holdEcho(pb!, t);
  const b2 = await holdEcho(pb!, t);
  assert.ok(b1 && b2, 'b is not capped by a');
  assert.equal(await holdEcho(pb!, t), null, 'the global cap of 3 refuses a fourth on b');
  let m = (await lb.admin('/metrics')).body;
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="a"', 'reason="max_connections"']), 1);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="b"', 'reason="max_connections"']), 1);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="a"', 'reason="no_backend"']), 0, 'every reason is exported from 0');
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.active, r.rejected]), [['a', 1, 1], ['b', 2, 1]]);
  // a connection closed frees its place in both counts
  a1.destroy();
  await waitFor(async () => (await services(lb)).find((r) => r.name === 'a')!.active === 0, 5000, "a's connection to be released");
  assert.ok(await holdEcho(pa!, t), 'a takes one again');
  assert.equal(await holdEcho(pb!, t), null, 'still three open: the global cap holds');
  m = (await lb.admin('/metrics')).body;
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="b"', 'reason="max_connections"']), 2);
});

test("per-client limits are a service's own: client_max_connections on one service, the other inheriting none", async (t) => {
  const echoes = await Promise.all([startEcho(), startEcho()]);
  const [pa, pb] = await ports(2);
  const lb = await startBalancer(
    servicesFile({
      services: [
        { name: 'a', port: pa!, lines: ['client_max_connections = 1'], backends: [{ name: 'ea', address: echoes[0]!.address }] },
        { name: 'b', port: pb!, backends: [{ name: 'eb', address: echoes[1]!.address }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, echoes));
  assert.ok(await holdEcho(pa!, t));
  assert.equal(await holdEcho(pa!, t), null, 'a second connection from this client to a is refused');
  const onB = await Promise.all([holdEcho(pb!, t), holdEcho(pb!, t), holdEcho(pb!, t)]);
  assert.ok(onB.every((s) => s !== null), "b has no per-client limit, and a's count is not b's");
  const m = (await lb.admin('/metrics')).body;
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="a"', 'reason="client_limit"']), 1);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['service="b"']), 0);
});

// ---------------------------------------------------------------------------------------------
// 7. Admin API

async function adminSetup(t: { after(f: () => Promise<void> | void): void }): Promise<{ lb: Balancer; ports: number[] }> {
  const servers = await Promise.all(['d1', 'a-shared', 'a-own', 'b-shared'].map((n) => startNamed(n)));
  const dead = await freePort(); // nothing listens there
  const [pd, pa, pb, px] = await ports(4);
  const lb = await startBalancer(
    servicesFile({
      health: ['interval = "300ms"', 'timeout = "200ms"', 'unhealthy_threshold = 1', 'healthy_threshold = 1'],
      default: { port: pd!, backends: [{ name: 'd1', address: servers[0]!.address }] },
      services: [
        { name: 'a', port: pa!, lines: ['algorithm = "least_connections"'], backends: [{ name: 'shared', address: servers[1]!.address }, { name: 'own', address: servers[2]!.address }] },
        { name: 'b', port: pb!, backends: [{ name: 'shared', address: servers[3]!.address }] },
        { name: 'dead', port: px!, backends: [{ name: 'gone', address: `127.0.0.1:${dead}` }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, servers));
  return { lb, ports: [pd!, pa!, pb!, px!] };
}

test('GET /services lists every service with its fields; every /backends row has its service', async (t) => {
  const { lb, ports: [pd, pa, pb, px] } = await adminSetup(t);
  await waitFor(async () => row(await backends(lb), 'dead', 'gone').state === 'unhealthy', 5000, 'the dead service down');
  for (let i = 0; i < 2; i++) await greeting(pa!);
  await greeting(pb!);
  const rows = await services(lb);
  assert.deepEqual(rows, [
    { name: 'default', listen_address: `127.0.0.1:${pd}`, sni: [], algorithm: 'round_robin', active: 0, total: 0, rejected: 0, usable: 1, backends: 1 },
    { name: 'a', listen_address: `127.0.0.1:${pa}`, sni: [], algorithm: 'least_connections', active: 0, total: 2, rejected: 0, usable: 2, backends: 2 },
    { name: 'b', listen_address: `127.0.0.1:${pb}`, sni: [], algorithm: 'round_robin', active: 0, total: 1, rejected: 0, usable: 1, backends: 1 },
    { name: 'dead', listen_address: `127.0.0.1:${px}`, sni: [], algorithm: 'round_robin', active: 0, total: 0, rejected: 0, usable: 0, backends: 1 },
  ]);
  assert.equal(await greeting(px!), 'closed');
  assert.equal((await services(lb)).find((r) => r.name === 'dead')!.rejected, 1, 'no_backend counted on its service');
  const bs = await backends(lb);
  assert.deepEqual(bs.map((b) => `${b.service}/${b.name}`), ['default/d1', 'a/shared', 'a/own', 'b/shared', 'dead/gone']);
  const st = await adminJson<{ backends: BackendRow[]; services: ServiceRow[] }>(lb, '/status');
  assert.ok(st.backends.every((b) => typeof b.service === 'string'));
  assert.deepEqual(st.services.map((s) => s.name), ['default', 'a', 'b', 'dead']);
});

test('POST /services/SVC/backends/NAME/drain acts on that one; the old path works for a unique name and is 409 for an ambiguous one', async (t) => {
  const { lb, ports: [, pa, pb] } = await adminSetup(t);
  let r = await lb.admin('/services/a/backends/shared/drain', 'POST');
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(JSON.parse(r.body), { service: 'a', backend: 'shared', action: 'drain', state: 'draining' });
  let bs = await backends(lb);
  assert.equal(row(bs, 'a', 'shared').state, 'draining');
  assert.equal(row(bs, 'b', 'shared').state, 'healthy', 'the same name in another service is untouched');
  // new connections of a avoid its drained backend; b still uses its own
  for (let i = 0; i < 3; i++) assert.equal(await greeting(pa!), 'a-own');
  assert.equal(await greeting(pb!), 'b-shared');
  // the old path: 409 naming both services, nothing changed
  r = await lb.admin('/backends/shared/enable', 'POST');
  assert.equal(r.status, 409, r.body);
  const body = JSON.parse(r.body) as { error: string; services: string[] };
  assert.deepEqual(body.services, ['a', 'b']);
  assert.match(body.error, /backend "shared" is in several services \(a, b\): use POST \/services\/SERVICE\/backends\/shared\/enable/);
  assert.equal(row(await backends(lb), 'a', 'shared').state, 'draining');
  // a name in one service only: the old path acts, and says on which service
  r = await lb.admin('/backends/own/disable', 'POST');
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(JSON.parse(r.body), { service: 'a', backend: 'own', action: 'disable', state: 'disabled' });
  assert.equal(await greeting(pa!), 'closed', 'a has no usable backend left');
  assert.equal(await greeting(pb!), 'b-shared');
  r = await lb.admin('/services/a/backends/shared/enable', 'POST');
  assert.equal(r.status, 200, r.body);
  bs = await backends(lb);
  assert.equal(row(bs, 'a', 'shared').state, 'healthy');
  assert.equal(row(bs, 'a', 'own').state, 'disabled');
  assert.equal((await lb.admin('/services/nope/backends/shared/drain', 'POST')).status, 404);
  assert.equal((await lb.admin('/services/b/backends/own/drain', 'POST')).status, 404, 'own is not in b');
});

test('GET /health: its services map, degraded when one service has no usable backend, 503 when none has; ?service= judges one', async (t) => {
  const { lb } = await adminSetup(t);
  type H = { status: string; services?: Record<string, string>; service?: string };
  const health = async (q = ''): Promise<{ code: number; body: H }> => {
    const r = await lb.admin(`/health${q}`);
    return { code: r.status, body: JSON.parse(r.body) as H };
  };
  const h = await waitFor(async () => {
    const x = await health();
    return x.body.services?.['dead'] === 'unhealthy' ? x : null;
  }, 5000, 'the dead service unhealthy in /health');
  assert.equal(h.code, 200);
  assert.equal(h.body.status, 'degraded');
  assert.deepEqual(h.body.services, { default: 'healthy', a: 'healthy', b: 'healthy', dead: 'unhealthy' });
  let one = await health('?service=dead');
  assert.equal(one.code, 503, 'the dead service alone is unhealthy while the whole is degraded');
  assert.equal(one.body.status, 'unhealthy');
  one = await health('?service=a');
  assert.deepEqual([one.code, one.body.status], [200, 'healthy']);
  assert.equal((await lb.admin('/health?service=nope')).status, 404);
  // an operator's disable is no failure of the service, but leaves it nothing usable
  for (const [svc, name] of [['default', 'd1'], ['a', 'shared'], ['a', 'own']]) assert.equal((await lb.admin(`/services/${svc}/backends/${name}/disable`, 'POST')).status, 200);
  const partial = await health();
  assert.deepEqual([partial.code, partial.body.status], [200, 'degraded'], 'b still has a usable backend');
  assert.equal((await health('?service=a')).code, 503);
  assert.equal((await lb.admin('/services/b/backends/shared/disable', 'POST')).status, 200);
  const none = await health();
  assert.equal(none.code, 503, 'no service has a usable backend');
  assert.equal(none.body.status, 'unhealthy');
});

// ---------------------------------------------------------------------------------------------
// 8. Metrics and `lemonade status`

test('metrics: backend series carry service; lemonade_service_connections_active counts per service; lemonade status prints SERVICE', async (t) => {
  const echoes = await Promise.all([startEcho(), startEcho(), startEcho()]);
  const [pa, pb] = await ports(2);
  const lb = await startBalancer(
    servicesFile({
      services: [
        { name: 'a', port: pa!, backends: [{ name: 'same', address: echoes[0]!.address }] },
        { name: 'b', port: pb!, backends: [{ name: 'same', address: echoes[1]!.address }, { name: 'other', address: echoes[2]!.address }] },
      ],
    }),
  );
  t.after(() => closeAll(lb, echoes));
  const held = await Promise.all([holdEcho(pa!, t), holdEcho(pa!, t), holdEcho(pb!, t)]);
  assert.ok(held.every((s) => s !== null));
  let m = (await lb.admin('/metrics')).body;
  assert.equal(metric(m, 'lemonade_service_connections_active', ['service="a"']), 2);
  assert.equal(metric(m, 'lemonade_service_connections_active', ['service="b"']), 1);
  assert.equal(metric(m, 'lemonade_connections_active', ['service="a"', 'backend="same"']), 2);
  assert.equal(metric(m, 'lemonade_connections_total', ['service="b"', 'backend="same"']) + metric(m, 'lemonade_connections_total', ['service="b"', 'backend="other"']), 1);
  assert.equal(metric(m, 'lemonade_backend_up', ['service="a"', 'backend="same"']), 1);
  assert.equal(metric(m, 'lemonade_backend_up', ['service="b"', 'backend="same"']), 1);
  // every backend-scoped series names its service
  const scoped = m.split('\n').filter((l) => /^lemonade_[a-z_]+\{[^}]*backend="/.test(l));
  assert.ok(scoped.length > 10, `${scoped.length} backend-scoped samples`);
  assert.deepEqual(scoped.filter((l) => !/[{,]service="(a|b)"/.test(l)), [], 'backend-scoped samples without service');
  for (const s of held) s!.destroy();
  await waitFor(async () => metric((await lb.admin('/metrics')).body, 'lemonade_service_connections_active') === 0, 5000, 'the connections released');
  m = (await lb.admin('/metrics')).body;
  assert.match(m, /^lemonade_service_connections_active\{service="a"\} 0$/m, 'a service with none open reads 0');

  const r = await runCli(['status', '--admin', `http://127.0.0.1:${lb.adminPort}`]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^SERVICE\s+NAME\s+ADDRESS\s+STATE/);
  assert.deepEqual(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2).join('/')), ['a/same', 'b/same', 'b/other']);
  assert.match(lines[1]!, new RegExp(`^a\\s+same\\s+${echoes[0]!.address.replace(/\./g, '\\.')}\\s+healthy\\s+1\\s+0\\s+2\\s`));
});
