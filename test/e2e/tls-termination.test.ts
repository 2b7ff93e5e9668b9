// TLS termination from outside, through the real balancer (the bundle) with certificates made by
// openssl at test time (a test CA, server certificates with their subjectAltName, a client
// certificate): openssl s_client sees the certificate of the name it sends (the default for an
// unknown one or none) and its bytes reach a plaintext echo backend, on both relays; redis-cli
// --tls reaches a plaintext redis-server; client_auth = "required" refuses a client without a
// certificate and accepts one signed by client_ca; a client that sends nothing is cut at
// handshake_timeout; min_version = "TLSv1.3" refuses TLS 1.2; a shared address routes by SNI to a
// terminating service and a passthrough one; a certificate renewed by write-then-rename serves new
// handshakes with no failed connection; a bad key fails --validate and a reload, naming the file,
// and the old certificate keeps serving.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireTool, runCli, startBalancer, startEcho, stopProcess, tempDir, waitFor, type Balancer } from '../helpers';
import { metric } from '../services-helpers';
import { OPENSSL, have, makeCa, makeCert, makeSelfSigned, sClient } from '../certs';

const REDIS = have('redis-server', ['--version']) && have('redis-cli', ['--version']);

/** One TLS client connection (Node's): the certificate's CN and whether the line came back. */
function tlsExchange(port: number, o: { ca: Buffer; servername: string; line: string; cert?: Buffer; key?: Buffer; timeoutMs?: number }): Promise<{ cn: string; echoed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', ca: o.ca, servername: o.servername, ...(o.cert ? { cert: o.cert, key: o.key } : {}) }, () => {
      s.write(`${o.line}\n`);
    });
    let got = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo within ${o.timeoutMs ?? 5000} ms`));
    }, o.timeoutMs ?? 5000);
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes(`${o.line}\n`)) {
        clearTimeout(t);
        const cn = s.getPeerCertificate().subject.CN;
        s.end();
        resolve({ cn: String(Array.isArray(cn) ? cn[0] : cn), echoed: true });
      }
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

const accessLines = (b: Balancer): Record<string, unknown>[] => b.logs.filter((l) => typeof l['termination'] === 'string');

async function metrics(b: Balancer): Promise<string> {
  return (await b.admin('/metrics')).body;
}

function config(listenLines: string, tlsTable: string, backend: string, extra = ''): string {
  return `[runtime]
config_watch_interval_millis = 500
[proxy]
listen_address = "127.0.0.1:0"
connect_timeout = "1s"
${listenLines}
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[tls]
${tlsTable}
${extra}
[[backends]]
address = "${backend}"
`;
}

for (const relay of ['raw handles', 'net.Socket'] as const) {
  test(`s_client sees the certificate of its server name and its bytes reach a plaintext backend (${relay})`, async (t) => {
    if (!requireTool(t, 'openssl', OPENSSL)) return;
    const dir = tempDir();
    makeSelfSigned(dir, 'a', 'a.test', 'DNS:a.test');
    makeSelfSigned(dir, 'b', 'b.test', 'DNS:*.b.test,DNS:b.test');
    const echo = await startEcho(t);
    const certs = `certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }, { cert = "${dir}/b.pem", key = "${dir}/b.key" }]`;
    const b = await startBalancer(t, config('', certs, `127.0.0.1:${echo.port}`), relay === 'net.Socket' ? { env: { LEMONADE_LB_NET_SOCKETS: '1' } } : {});
    const cases: [string[], string, string][] = [
      [['-servername', 'a.test'], 'a.test', 'to-a'],
      [['-servername', 'x.b.test'], 'b.test', 'to-wild-b'],
      [['-servername', 'b.test'], 'b.test', 'to-b'],
      [['-servername', 'unknown.example'], 'a.test', 'to-default'],
      [['-noservername'], 'a.test', 'to-none'],
    ];
    for (const [args, cn, line] of cases) {
      const r = await sClient(b.port, args, line);
      assert.equal(r.cn, cn, `${args.join(' ')}: ${r.out}\n${r.err}`);
      assert.ok(r.echoed, `${args.join(' ')}: the line came back through the echo backend: ${r.out}`);
    }
    const lines = await waitFor(() => (accessLines(b).length >= cases.length ? accessLines(b) : null), 10_000, 'the access log lines');
    // counted when each connection ends: the access log's lines were written then
    const wild = lines.find((l) => l['sni'] === 'x.b.test')!;
    assert.equal(wild['tls_version'], 'TLSv1.3');
    assert.equal(typeof wild['tls_cipher'], 'string');
    assert.equal(wild['client_cert_subject'], null);
    assert.equal(wild['resumed'], false);
    assert.ok(typeof wild['handshake_ms'] === 'number' && wild['handshake_ms'] >= 0);
    assert.equal(wild['bytes_in'], 'to-wild-b\n'.length);
    assert.equal(lines.find((l) => l['sni'] === null)!['termination'], 'client_closed');
    const m = await metrics(b);
    assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['service="default"', 'result="ok"']), cases.length);
    assert.equal(metric(m, 'lemonade_tls_handshake_duration_seconds_count', ['service="default"']), cases.length);
    // keys are secrets: no log line carries one
    const key = readFileSync(join(dir, 'a.key'), 'utf8').split('\n')[1]!;
    assert.ok(!JSON.stringify(b.logs).includes(key) && !b.stderr().includes('PRIVATE KEY'));
  });
}

test('redis-cli --tls through a terminating service to a plaintext redis-server', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL) || !requireTool(t, 'redis-server and redis-cli', REDIS)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'redis', '/CN=localhost', 'DNS:localhost,IP:127.0.0.1');
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  t.after(() => stopProcess(redis));
  await waitFor(() => spawnSync('redis-cli', ['-p', String(port), 'PING'], { encoding: 'utf8' }).stdout.trim() === 'PONG', 10_000, 'redis-server');
  const b = await startBalancer(t, config('', `certificates = [{ cert = "${dir}/redis.pem", key = "${dir}/redis.key" }]`, `127.0.0.1:${port}`));
  const cli = (args: string[]): string => spawnSync('redis-cli', ['--tls', '--cacert', join(dir, 'ca.pem'), '-h', '127.0.0.1', '-p', String(b.port), ...args], { encoding: 'utf8', timeout: 10_000 }).stdout.trim();
  assert.equal(cli(['PING']), 'PONG');
  assert.equal(cli(['SET', 'k', 'through tls']), 'OK');
  assert.equal(spawnSync('redis-cli', ['-p', String(port), 'GET', 'k'], { encoding: 'utf8' }).stdout.trim(), 'through tls');
  // a client that does not trust the CA is refused by itself
  const untrusted = spawnSync('redis-cli', ['--tls', '--cacert', join(dir, 'redis.pem'), '-p', String(b.port), 'PING'], { encoding: 'utf8', timeout: 10_000 });
  assert.notEqual(untrusted.stdout.trim(), 'PONG');
});

test('client_auth = "required": no client certificate fails the handshake, one signed by client_ca is accepted', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'server', '/CN=db.test', 'DNS:db.test');
  makeCert(dir, 'alice', '/O=example/CN=alice', null);
  // a certificate from another CA
  const other = tempDir();
  makeCa(other);
  makeCert(other, 'mallory', '/CN=mallory', null);
  const echo = await startEcho(t);
  const table = `certificates = [{ cert = "${dir}/server.pem", key = "${dir}/server.key" }]\nclient_ca = "${dir}/ca.pem"\nclient_auth = "required"`;
  const b = await startBalancer(t, config('', table, `127.0.0.1:${echo.port}`));
  const none = await sClient(b.port, ['-servername', 'db.test'], 'no-cert', 4000);
  assert.ok(!none.echoed, `no certificate: nothing relayed: ${none.out}`);
  const failed = await b.waitForLog((l) => l['termination'] === 'tls_handshake_failed', 10_000, 'tls_handshake_failed in the access log');
  assert.equal(failed['backend'], null);
  assert.equal(failed['client_cert_subject'], null);
  const wrong = await sClient(b.port, ['-servername', 'db.test', '-cert', join(other, 'mallory.pem'), '-key', join(other, 'mallory.key')], 'wrong-ca', 4000);
  assert.ok(!wrong.echoed, `a certificate of another CA: nothing relayed: ${wrong.out}`);
  const ok = await sClient(b.port, ['-servername', 'db.test', '-cert', join(dir, 'alice.pem'), '-key', join(dir, 'alice.key')], 'alice-here');
  assert.ok(ok.echoed, `alice's certificate: relayed: ${ok.out}`);
  const line = await b.waitForLog((l) => l['client_cert_subject'] !== undefined && l['client_cert_subject'] !== null, 10_000, 'the access log line with a client certificate');
  assert.equal(line['client_cert_subject'], 'CN=alice,O=example');
  const m = await waitFor(async () => {
    const text = await metrics(b);
    return metric(text, 'lemonade_tls_handshakes_total', ['result="failed"']) >= 2 ? text : null;
  });
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['service="default"', 'result="failed"']), 2);
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['service="default"', 'result="ok"']), 1);
  assert.equal(metric(m, 'lemonade_connection_terminations_total', ['termination="tls_handshake_failed"']), 2);
});

test('a client that sends nothing is cut at handshake_timeout; min_version = "TLSv1.3" refuses TLS 1.2', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeSelfSigned(dir, 'a', 'a.test', 'DNS:a.test');
  const echo = await startEcho(t);
  const table = `certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }]\nmin_version = "TLSv1.3"\nhandshake_timeout = "400ms"`;
  const b = await startBalancer(t, config('', table, `127.0.0.1:${echo.port}`));
  const started = Date.now();
  const closedAfter = await new Promise<number>((resolve) => {
    const c = net.connect(b.port, '127.0.0.1');
    c.on('error', () => {});
    c.on('close', () => resolve(Date.now() - started));
  });
  assert.ok(closedAfter >= 350 && closedAfter < 3000, `cut after ${closedAfter} ms`);
  const cut = await b.waitForLog((l) => l['termination'] === 'tls_handshake_timeout', 5000, 'tls_handshake_timeout in the access log');
  assert.equal(cut['tls_version'], null);
  assert.equal(cut['handshake_ms'], null);
  const old = await sClient(b.port, ['-servername', 'a.test', '-tls1_2'], 'tls12-refused', 4000);
  assert.ok(!old.echoed, `TLS 1.2 refused: ${old.out}`);
  await b.waitForLog((l) => l['termination'] === 'tls_handshake_failed', 5000, 'the TLS 1.2 handshake failed');
  const modern = await sClient(b.port, ['-servername', 'a.test', '-tls1_3'], 'tls13-accepted');
  assert.ok(modern.echoed, modern.out);
  // counted when the connection ends
  const m = await waitFor(async () => {
    const text = await metrics(b);
    return metric(text, 'lemonade_tls_handshakes_total', ['result="ok"']) >= 1 ? text : null;
  });
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['result="timeout"']), 1);
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['result="failed"']), 1);
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['result="ok"']), 1);
});

test('a shared address routes by SNI first: one service terminates, the other passes TLS through', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'term', '/CN=term.test', 'DNS:term.test');
  makeCert(dir, 'pass', '/CN=pass.test', 'DNS:pass.test');
  const echo = await startEcho(t);
  // the passthrough service's backend speaks TLS itself, with its own certificate
  const backend = tls.createServer({ cert: readFileSync(join(dir, 'pass.pem')), key: readFileSync(join(dir, 'pass.key')) }, (s) => s.pipe(s));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => backend.close(() => r())));
  const backendPort = (backend.address() as net.AddressInfo).port;
  const port = await freePort();
  const text = `[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[[services]]
name = "term"
listen_address = "127.0.0.1:${port}"
sni = ["term.test"]
[services.tls]
certificates = [{ cert = "${dir}/term.pem", key = "${dir}/term.key" }]
[[services.backends]]
address = "127.0.0.1:${echo.port}"
[[services]]
name = "pass"
listen_address = "127.0.0.1:${port}"
sni = ["pass.test"]
[[services.backends]]
address = "127.0.0.1:${backendPort}"
`;
  const b = await startBalancer(t, text);
  const ca = readFileSync(join(dir, 'ca.pem'));
  assert.deepEqual(await tlsExchange(port, { ca, servername: 'term.test', line: 'terminated' }), { cn: 'term.test', echoed: true });
  assert.deepEqual(await tlsExchange(port, { ca, servername: 'pass.test', line: 'passed' }), { cn: 'pass.test', echoed: true });
  const lines = await waitFor(() => (accessLines(b).length >= 2 ? accessLines(b) : null));
  assert.equal(lines.find((l) => l['service'] === 'term')!['sni'], 'term.test');
  assert.equal('sni' in lines.find((l) => l['service'] === 'pass')!, false, 'a passthrough line has no tls fields');
});

test('a certificate renewed by write-then-rename serves new handshakes with no failed connection; a bad key fails --validate and the reload, the old one keeps serving', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'v1', '/CN=v1.test', 'DNS:svc.test');
  makeCert(dir, 'v2', '/CN=v2.test', 'DNS:svc.test');
  makeCert(dir, 'other', '/CN=other.test', 'DNS:svc.test');
  const live = tempDir();
  const install = (from: string): void => {
    // certbot's deploy hook: write beside, then rename over (the key first, then the certificate)
    for (const ext of ['key', 'pem']) {
      writeFileSync(join(live, `svc.${ext}.tmp`), readFileSync(join(dir, `${from}.${ext}`)));
      renameSync(join(live, `svc.${ext}.tmp`), join(live, `svc.${ext}`));
    }
  };
  install('v1');
  const echo = await startEcho(t);
  const table = `certificates = [{ cert = "${live}/svc.pem", key = "${live}/svc.key" }]`;
  const b = await startBalancer(t, config('', table, `127.0.0.1:${echo.port}`));
  const ca = readFileSync(join(dir, 'ca.pem'));
  assert.equal((await tlsExchange(b.port, { ca, servername: 'svc.test', line: 'first' })).cn, 'v1.test');

  // four clients in a bounded loop of connections while the certificate is renewed
  const seen = new Set<string>();
  const failures: string[] = [];
  let n = 0;
  let completed = 0;
  let stop = false;
  const loop = async (id: number): Promise<void> => {
    while (!stop && n < 2000) {
      n++;
      try {
        seen.add((await tlsExchange(b.port, { ca, servername: 'svc.test', line: `c${id}-${n}` })).cn);
        completed++;
      } catch (e) {
        failures.push((e as Error).message);
      }
    }
  };
  const loops = Promise.all([0, 1, 2, 3].map(loop));
  await waitFor(() => n > 20);
  const atInstall = completed;
  install('v2');
  await waitFor(() => seen.has('v2.test'), 15_000, 'a new handshake with the renewed certificate');
  const duringRenewal = completed - atInstall;
  const after = n;
  await waitFor(() => n > after + 20);
  stop = true;
  await loops;
  assert.deepEqual(failures, [], `${failures.length} failed of ${n}`);
  // the load ran through the renewal: connections completed between the renames and the first renewed handshake
  assert.ok(duringRenewal > 1, `${duringRenewal} connections completed during the renewal`);
  assert.equal((await tlsExchange(b.port, { ca, servername: 'svc.test', line: 'renewed' })).cn, 'v2.test');
  // the reload says which files it took anew (paths, never contents)
  const line = await b.waitForLog((l) => String(l['msg']).startsWith('config reloaded: files renewed: '), 5000, 'the reload naming the renewed files');
  assert.ok(String(line['msg']).includes(`${live}/svc.pem`), String(line['msg']));

  // a key that does not match its certificate: --validate names the file and the key path
  const bad = join(b.dir, 'bad.toml');
  writeFileSync(join(live, 'mismatch.key'), readFileSync(join(dir, 'other.key')));
  writeFileSync(bad, config('', `certificates = [{ cert = "${live}/svc.pem", key = "${live}/mismatch.key" }]`, `127.0.0.1:${echo.port}`).replace(/127\.0\.0\.1:0/g, '127.0.0.1:1'));
  const v = await runCli(['lb', '--config', bad, '--validate']);
  assert.notEqual(v.code, 0);
  const said = v.stdout + v.stderr;
  assert.match(said, /tls\.certificates\[0\]\.key/);
  assert.ok(said.includes(`${live}/mismatch.key`), said);
  assert.ok(!said.includes(readFileSync(join(dir, 'other.key'), 'utf8').split('\n')[1]!), 'the key itself is not shown');

  // the running balancer: a new key that does not match (renamed over) fails the reload whole
  writeFileSync(join(live, 'svc.key.tmp'), readFileSync(join(dir, 'other.key')));
  renameSync(join(live, 'svc.key.tmp'), join(live, 'svc.key'));
  const failed = await b.waitForLog((l) => l['msg'] === 'config reload failed; the running configuration is unchanged', 10_000, 'the failed reload');
  assert.match(String(failed['error']), /does not match the certificate/);
  assert.ok(String(failed['error']).includes(`${live}/svc.key`), String(failed['error']));
  assert.equal((await tlsExchange(b.port, { ca, servername: 'svc.test', line: 'still' })).cn, 'v2.test', 'the old certificate keeps serving');
  const status = (await b.admin('/status')).body;
  assert.ok(!status.includes('PRIVATE KEY'));
});

test('a session resumes (counted resumed, logged resumed: true); worker processes terminate too', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeSelfSigned(dir, 'a', 'a.test', 'DNS:a.test');
  const echo = await startEcho(t);
  const table = `certificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }]`;
  const b = await startBalancer(t, config('', table, `127.0.0.1:${echo.port}`));
  const sess = join(dir, 'session.pem');
  const first = await sClient(b.port, ['-servername', 'a.test', '-sess_out', sess], 'first-full');
  assert.ok(first.echoed, first.out);
  await waitFor(() => readFileSync(sess, 'utf8').includes('SSL SESSION'), 5000, 's_client to write the session');
  const again = await sClient(b.port, ['-servername', 'a.test', '-sess_in', sess], 'second-resumed');
  assert.ok(again.echoed, again.out);
  assert.match(again.out, /^Reused, TLSv1\.3/m);
  const line = await b.waitForLog((l) => l['resumed'] === true, 5000, 'a resumed line');
  assert.equal(line['tls_version'], 'TLSv1.3');
  const m = await waitFor(async () => {
    const text = await metrics(b);
    return metric(text, 'lemonade_tls_handshakes_total', ['result="resumed"']) >= 1 ? text : null;
  });
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['result="ok"']), 1);

  const w = await startBalancer(t, config('', table, `127.0.0.1:${echo.port}`, '').replace('[runtime]', '[runtime]\nworkers = 2'));
  for (let i = 0; i < 6; i++) {
    const r = await sClient(w.port, ['-servername', 'a.test'], `worker-line-${i}`);
    assert.equal(r.cn, 'a.test');
    assert.ok(r.echoed, r.out);
  }
  const wm = await waitFor(async () => {
    const text = await metrics(w);
    return metric(text, 'lemonade_tls_handshakes_total', ['result="ok"']) >= 6 ? text : null;
  }, 10_000, 'the workers\' handshakes summed');
  assert.equal(metric(wm, 'lemonade_tls_handshake_duration_seconds_count', ['service="default"']), 6);
});
