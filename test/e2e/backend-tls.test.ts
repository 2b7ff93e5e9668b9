// TLS to backends (`backend_tls`) from outside, through the real balancer (the bundle): Debian's
// nginx serves HTTPS with certificates made by openssl at test time (a test CA, a second CA, a
// self-signed one), and plain HTTP clients reach it through the balancer, on both relays. The
// bytes reach the TLS backend and come back, verified against `ca` and the backend's IP address;
// a backend whose certificate is from another CA fails verification (connect_failed) and the
// client is served by the next backend; verify = false connects to a self-signed backend and
// --validate and the start log warn; server_name is the SNI nginx sees and the name verified (a
// wrong one fails); a backend that requires a client certificate gets the balancer's cert/key
// and refuses without; an http health check through TLS marks a backend up and down with its page
// (send_expect speaks inside the TLS too);
// a key that does not match its certificate fails --validate naming the key path and the file,
// and a reload with it keeps the old configuration serving; a service terminates and originates at once.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, freePort, httpRequest, NGINX, requireTool, runCli, runNginx, startBalancer, tempDir, waitFor, type Balancer } from '../helpers';
import { EC, OPENSSL, makeCa, makeCert, openssl } from '../certs';


/** Certificates for backends and for the balancer as their client: usable for either end. */
const BOTH_ENDS = 'extendedKeyUsage=serverAuth,clientAuth\n';

interface Backends {
  readonly dir: string;
  /** signed by ca, names backend.test and 127.0.0.1; /health served while `www1/healthy` exists */
  readonly good: number;
  /** signed by ca2 (not trusted by ca), same names */
  readonly rogue: number;
  /** self-signed */
  readonly self: number;
  /** signed by ca, asks for a client certificate chaining to ca and requires it */
  readonly mtls: number;
  /** signed by ca, names other.test */
  readonly other: number;
  /** reads a PROXY header in clear before the handshake (nginx `listen … ssl proxy_protocol`) */
  readonly pp: number;
}

/**
 * The certificates and one nginx with four HTTPS servers; each answers "NAME sni=… client=…"
 * ($ssl_server_name: the name the balancer sent; $ssl_client_s_dn: its client certificate).
 */
async function startBackends(t: TestContext): Promise<Backends> {
  const dir = tempDir('lemonade-backend-tls-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  makeCa(dir, 'ca');
  makeCa(dir, 'ca2');
  makeCert(dir, 'good', '/CN=backend.test', 'DNS:backend.test,IP:127.0.0.1', { ca: 'ca', ext: BOTH_ENDS });
  makeCert(dir, 'rogue', '/CN=backend.test', 'DNS:backend.test,IP:127.0.0.1', { ca: 'ca2', ext: BOTH_ENDS });
  makeCert(dir, 'client', '/CN=lemonade balancer', 'DNS:balancer.test', { ca: 'ca', ext: BOTH_ENDS });
  makeCert(dir, 'other', '/CN=other', 'DNS:other.test', { ca: 'ca', ext: BOTH_ENDS });
  openssl(dir, ['req', '-x509', ...EC, '-keyout', 'self.key', '-out', 'self.pem', '-days', '2', '-subj', '/CN=self.test', '-addext', 'subjectAltName=DNS:self.test']);
  for (const d of ['logs', 'tmp', 'www1']) mkdirSync(join(dir, d));
  const [good, rogue, self, mtls, other, pp] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const server = (name: string, port: number, cert: string, extra = ''): string => `  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${join(dir, `${cert}.pem`)};
    ssl_certificate_key ${join(dir, `${cert}.key`)};
${extra}
    location / { return 200 "${name} sni=$ssl_server_name client=$ssl_client_s_dn\\n"; }
    location = /health { root ${join(dir, 'www1')}; try_files /healthy =503; }
  }`;
  const servers = [
    server('GOOD', good, 'good'),
    server('ROGUE', rogue, 'rogue'),
    server('SELF', self, 'self'),
    server('MTLS', mtls, 'good', `    ssl_client_certificate ${join(dir, 'ca.pem')};\n    ssl_verify_client on;`),
    server('OTHER', other, 'other'),
    server('PP', pp, 'good').replace(' ssl;', ' ssl proxy_protocol;').replace('client=$ssl_client_s_dn', 'client=$ssl_client_s_dn from=$proxy_protocol_addr'),
  ].join('\n');
  await runNginx(t, dir, servers, [good, rogue, self, mtls, other, pp]);
  return { dir, good, rogue, self, mtls, other, pp };
}

/** A config of one default service with these backends and this [backend_tls] table. */
function config(backendTls: string, backends: readonly string[], o: { health?: string; strategy?: string; proxy?: string } = {}): string {
  return `[runtime]
config_watch_interval_millis = 500
[proxy]
listen_address = "127.0.0.1:0"
connect_timeout = "2s"
${o.proxy ?? ''}
[strategy]
algorithm = "${o.strategy ?? 'round_robin'}"
[health]
${o.health ?? 'interval = "1h"'}
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[backend_tls]
${backendTls}
${backends.map((a, i) => `[[backends]]\nname = "b${i + 1}"\naddress = "${a}"\n`).join('')}`;
}

const accessLines = (b: Balancer): Record<string, unknown>[] => b.logs.filter((l) => typeof l['termination'] === 'string');

/** What a client gets from the balancer: the response, or the error of a connection closed without one. */
async function get(port: number, path = '/'): Promise<{ status: number; body: string } | { error: string }> {
  try {
    const r = await httpRequest(port, path, { timeoutMs: 8000 });
    return { status: r.status, body: r.body };
  } catch (e) {
    return { error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
}

const ready = (t: TestContext): boolean => requireTool(t, 'nginx (package nginx-light)', NGINX !== null) && requireTool(t, 'openssl', OPENSSL);

for (const relay of ['raw', 'net.Socket', 'two workers'] as const) {
  test(`bytes reach a TLS backend verified with ca (its IP address in the certificate) and come back; connect_ms is logged (${relay})`, async (t) => {
    if (!ready(t)) return;
    const k = await startBackends(t);
    const env = relay === 'net.Socket' ? { LEMONADE_LB_NET_SOCKETS: '1' } : relay === 'two workers' ? { LEMONADE_LB_WORKERS: '2' } : {};
    const b = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"`, [`127.0.0.1:${k.good}`]), { env });
    for (let i = 0; i < 3; i++) {
      const r = await get(b.port);
      assert.deepEqual(r, { status: 200, body: 'GOOD sni= client=\n' }, 'no SNI for an IP address; verified against its IP SAN');
    }
    // a body larger than one TLS record both ways
    const big = await get(b.port, `/${'x'.repeat(6000)}`);
    assert.equal((big as { status: number }).status, 200);
    const line = await waitFor(() => accessLines(b).find((l) => l['termination'] !== undefined && typeof l['connect_ms'] === 'number'), 5000, 'an access log line');
    assert.equal(line['backend'], 'b1');
    assert.equal(line['retries'], 0);
  });
}

test('a backend whose certificate is not from ca fails verification: connect_failed, and the client is served by the next backend', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  // the health checks (over TLS too, verified: they would take the rogue backend out first) go to the good server
  const health = `interval = "1h"\nport = ${k.good}`;
  const b = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"`, [`127.0.0.1:${k.rogue}`, `127.0.0.1:${k.good}`], { health }), { env: { LEMONADE_LOG: 'debug' } });
  // round robin: the rogue backend is the first or the second pick; every client is served by the good one
  for (let i = 0; i < 4; i++) assert.deepEqual(await get(b.port), { status: 200, body: 'GOOD sni= client=\n' });
  const failed = await waitFor(() => b.logs.find((l) => l['msg'] === 'backend connect failed' && l['backend'] === 'b1'), 5000, 'the failed connect to b1');
  assert.match(String(failed['error']), /certificate/i, 'the failure says why: the certificate');
  await waitFor(() => accessLines(b).length >= 4, 5000, 'the four access log lines');
  const retried = accessLines(b).filter((l) => l['retries'] === 1);
  assert.ok(retried.length > 0, JSON.stringify(accessLines(b)));
  assert.ok(retried.every((l) => l['backend'] === 'b2'));
  const rows = await adminJson<{ name: string; connect_errors: number }[]>(b, '/backends');
  assert.ok(rows.find((r) => r.name === 'b1')!.connect_errors > 0);

  // with no other backend to try, the client gets nothing and the access log says connect_failed
  const only = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"`, [`127.0.0.1:${k.rogue}`], { health }));
  const r = await get(only.port);
  assert.ok('error' in r, JSON.stringify(r));
  const line = await waitFor(() => accessLines(only).find((l) => l['termination'] === 'connect_failed'), 5000, 'connect_failed in the access log');
  assert.equal(line['connect_ms'], null);
});

test('verify = false connects to a self-signed backend; --validate and the start log warn, naming the service and the key', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  const text = config('enabled = true\nverify = false', [`127.0.0.1:${k.self}`]);
  const b = await startBalancer(t, text);
  assert.deepEqual(await get(b.port), { status: 200, body: 'SELF sni= client=\n' });
  const warned = await b.waitForLog((l) => String(l['msg']).includes('backend_tls.verify = false'), 5000, 'the start log warning');
  assert.equal(warned['level'], 40);
  assert.match(String(warned['msg']), /service default/);
  const v = await runCli(['lb', '--config', b.configPath, '--validate']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /warning: backend_tls\.verify = false: service default speaks TLS to its backends without verifying/);
  // the same backend with verification on (the system's trust store): refused
  const strict = await startBalancer(t, config('enabled = true', [`127.0.0.1:${k.self}`]));
  assert.ok('error' in (await get(strict.port)));
  const v2 = await runCli(['lb', '--config', strict.configPath, '--validate']);
  assert.ok(!v2.stdout.includes('warning'), v2.stdout);
});

test('server_name is the SNI the backend sees and the name verified; a wrong one fails verification', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  const b = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"\nserver_name = "backend.test"`, [`127.0.0.1:${k.good}`]));
  assert.deepEqual(await get(b.port), { status: 200, body: 'GOOD sni=backend.test client=\n' });
  // its health checks go to a server that is other.test (so that they keep it up); its connections to one that is not
  const health = `interval = "1h"\nport = ${k.other}`;
  const wrong = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"\nserver_name = "other.test"`, [`127.0.0.1:${k.good}`], { health }), { env: { LEMONADE_LOG: 'debug' } });
  assert.ok('error' in (await get(wrong.port)));
  const failed = await waitFor(() => wrong.logs.find((l) => l['msg'] === 'backend connect failed'), 5000, 'the failed connect');
  assert.match(String(failed['error']), /other\.test/);
  await waitFor(() => accessLines(wrong).find((l) => l['termination'] === 'connect_failed'), 5000, 'connect_failed in the access log');
});

test('a backend that requires a client certificate accepts the balancer\'s cert and key, and refuses without', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  const b = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"\ncert = "${k.dir}/client.pem"\nkey = "${k.dir}/client.key"`, [`127.0.0.1:${k.mtls}`]));
  const r = await get(b.port);
  assert.equal((r as { status: number }).status, 200, JSON.stringify(r));
  assert.match((r as { body: string }).body, /^MTLS sni= client=CN=lemonade balancer\n$/);
  const without = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"`, [`127.0.0.1:${k.mtls}`]));
  const refused = await get(without.port);
  assert.equal((refused as { status: number }).status, 400, JSON.stringify(refused));
  assert.match((refused as { body: string }).body, /No required SSL certificate was sent/);
});

test('an http health check speaks inside the TLS: the backend goes up while its page answers 200 and down when it fails', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  const health = 'kind = "http"\npath = "/health"\ninterval = "200ms"\ntimeout = "1s"\nhealthy_threshold = 1\nunhealthy_threshold = 1';
  const b = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"`, [`127.0.0.1:${k.good}`], { health }));
  const state = async (): Promise<string> => (await adminJson<{ state: string }[]>(b, '/backends'))[0]!.state;
  await waitFor(async () => (await state()) === 'unhealthy', 5000, 'the backend down (its page answers 503)');
  writeFileSync(join(k.dir, 'www1', 'healthy'), 'ok\n');
  await waitFor(async () => (await state()) === 'healthy', 5000, 'the backend up (its page answers 200 over TLS)');
  const rows = await adminJson<{ last_check: { ok: boolean; error: string | null } }[]>(b, '/backends');
  assert.deepEqual([rows[0]!.last_check.ok, rows[0]!.last_check.error], [true, null]);
  rmSync(join(k.dir, 'www1', 'healthy'));
  await waitFor(async () => (await state()) === 'unhealthy', 5000, 'the backend down again');
  const after = await adminJson<{ last_check: { error: string | null } }[]>(b, '/backends');
  assert.equal(after[0]!.last_check.error, 'HTTP 503');

  // the same check without backend_tls speaks plain HTTP to the HTTPS port: never up
  writeFileSync(join(k.dir, 'www1', 'healthy'), 'ok\n');
  const plain = await startBalancer(t, config('enabled = false', [`127.0.0.1:${k.good}`], { health }));
  await waitFor(async () => (await adminJson<{ last_check: unknown }[]>(plain, '/backends'))[0]!.last_check !== null, 5000, 'a check');
  const p = await adminJson<{ state: string; last_check: { error: string | null } }[]>(plain, '/backends');
  assert.equal(p[0]!.state, 'unhealthy');
  assert.equal(p[0]!.last_check.error, 'HTTP 400');

  // send_expect speaks inside the TLS too
  const se = await startBalancer(t, config(`enabled = true\nca = "${k.dir}/ca.pem"`, [`127.0.0.1:${k.good}`], { health: `kind = "send_expect"\nsend = 'GET /health HTTP/1.0\\r\\n\\r\\n'\nexpect = "200 OK"\ninterval = "200ms"\ntimeout = "1s"\nhealthy_threshold = 1\nunhealthy_threshold = 1` }));
  const last = async (): Promise<{ state: string; last_check: { ok: boolean } | null }> => (await adminJson<{ state: string; last_check: { ok: boolean } | null }[]>(se, '/backends'))[0]!;
  await waitFor(async () => (await last()).last_check?.ok === true, 5000, 'a send_expect check that passed over TLS');
  rmSync(join(k.dir, 'www1', 'healthy'));
  await waitFor(async () => (await last()).state === 'unhealthy', 5000, 'the send_expect check failing (503)');
});

test('a key that does not match its certificate fails --validate naming the key path and the file; a reload with it keeps the old config serving', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  const good = `enabled = true\nca = "${k.dir}/ca.pem"\ncert = "${k.dir}/client.pem"\nkey = "${k.dir}/client.key"`;
  const bad = `enabled = true\nca = "${k.dir}/ca.pem"\ncert = "${k.dir}/client.pem"\nkey = "${k.dir}/other.key"`;
  const file = join(k.dir, 'bad.toml');
  writeFileSync(file, config(bad, [`127.0.0.1:${k.mtls}`]).replace(/127\.0\.0\.1:0/g, '127.0.0.1:1'));
  const v = await runCli(['lb', '--config', file, '--validate']);
  assert.equal(v.code, 1);
  const said = v.stdout + v.stderr;
  assert.match(said, /backend_tls\.key/);
  assert.ok(said.includes(`the key in ${k.dir}/other.key does not match the certificate in ${k.dir}/client.pem`), said);
  assert.ok(!said.includes(readFileSync(join(k.dir, 'other.key'), 'utf8').split('\n')[1]!), 'the key itself is not shown');

  const b = await startBalancer(t, config(good, [`127.0.0.1:${k.mtls}`]));
  assert.match((await get(b.port) as { body: string }).body, /client=CN=lemonade balancer/);
  b.replaceConfig(config(bad, [`127.0.0.1:${k.mtls}`]));
  const failed = await b.waitForLog((l) => l['msg'] === 'config reload failed; the running configuration is unchanged', 10_000, 'the failed reload');
  assert.ok(String(failed['error']).includes(`${k.dir}/other.key`), String(failed['error']));
  assert.match((await get(b.port) as { body: string }).body, /client=CN=lemonade balancer/, 'the old client certificate keeps serving');
  // the files are watched: the key file itself replaced by one that does not match fails the reload too
  b.replaceConfig(config(good, [`127.0.0.1:${k.mtls}`]));
  await b.waitForLog((l) => String(l['msg']).startsWith('config reloaded'), 10_000, 'the good config back');
  const n = b.logs.filter((l) => l['msg'] === 'config reload failed; the running configuration is unchanged').length;
  writeFileSync(join(k.dir, 'client.key'), readFileSync(join(k.dir, 'other.key')));
  await waitFor(() => b.logs.filter((l) => l['msg'] === 'config reload failed; the running configuration is unchanged').length > n, 10_000, 'the reload the key file started to fail');
  assert.match((await get(b.port) as { body: string }).body, /client=CN=lemonade balancer/);
});

test('a service may terminate TLS from its clients and originate TLS to its backends at once', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  makeCert(k.dir, 'front', '/CN=front.test', 'DNS:front.test', { ext: BOTH_ENDS });
  const text = config(`enabled = true\nca = "${k.dir}/ca.pem"\nserver_name = "backend.test"`, [`127.0.0.1:${k.good}`]).replace('[backend_tls]', `[tls]\ncertificates = [{ cert = "${k.dir}/front.pem", key = "${k.dir}/front.key" }]\n[backend_tls]`);
  const b = await startBalancer(t, text);
  const answer = await new Promise<string>((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: b.port, ca: readFileSync(join(k.dir, 'ca.pem')), servername: 'front.test' }, () => s.write('GET / HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n'));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('end', () => resolve(got));
    s.on('error', reject);
  });
  assert.match(answer, /^HTTP\/1\.1 200/);
  assert.ok(answer.endsWith('GOOD sni=backend.test client=\n'), answer);
  const line = await waitFor(() => accessLines(b).find((l) => l['tls_version'] !== undefined), 5000, 'the access log line');
  assert.equal(line['sni'], 'front.test');
});

test('with proxy_protocol, the header goes in clear before the handshake (nginx listen … ssl proxy_protocol reads it), for the relay and for every kind of health check', async (t) => {
  if (!ready(t)) return;
  const k = await startBackends(t);
  const tlsTable = `enabled = true\nca = "${k.dir}/ca.pem"`;
  for (const mode of ['v1', 'v2'] as const) {
    const b = await startBalancer(t, config(tlsTable, [`127.0.0.1:${k.pp}`], { proxy: `proxy_protocol = "${mode}"` }));
    const r = await get(b.port);
    assert.deepEqual(r, { status: 200, body: 'PP sni= client= from=127.0.0.1\n' }, `${mode}: nginx read the client's address from the header, then spoke TLS`);
  }
  const check = { tcp: '', http: 'kind = "http"\npath = "/"', send_expect: `kind = "send_expect"\nsend = 'GET / HTTP/1.0\\r\\n\\r\\n'\nexpect = "200 OK"` };
  for (const [kind, lines] of Object.entries(check)) {
    const health = `${lines}\ninterval = "200ms"\ntimeout = "1s"\nhealthy_threshold = 1\nunhealthy_threshold = 1`;
    const b = await startBalancer(t, config(tlsTable, [`127.0.0.1:${k.pp}`], { proxy: 'proxy_protocol = "v2"', health }));
    const last = async (): Promise<{ state: string; last_check: { ok: boolean; error: string | null } | null }> => (await adminJson<{ state: string; last_check: { ok: boolean; error: string | null } | null }[]>(b, '/backends'))[0]!;
    await waitFor(async () => (await last()).last_check?.ok === true, 5000, `a ${kind} check that passed with the header in clear`).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await last())}`);
    });
    assert.equal((await last()).state, 'healthy', kind);
  }
  // without the header nginx takes the ClientHello for a broken one: the same check never passes
  const plain = await startBalancer(t, config(tlsTable, [`127.0.0.1:${k.pp}`], { health: 'kind = "http"\npath = "/"\ninterval = "200ms"\ntimeout = "1s"\nhealthy_threshold = 1\nunhealthy_threshold = 1' }));
  await waitFor(async () => (await adminJson<{ last_check: unknown }[]>(plain, '/backends'))[0]!.last_check !== null, 5000, 'a check');
  const p = await adminJson<{ state: string; last_check: { ok: boolean } }[]>(plain, '/backends');
  assert.deepEqual([p[0]!.state, p[0]!.last_check.ok], ['unhealthy', false]);
});
