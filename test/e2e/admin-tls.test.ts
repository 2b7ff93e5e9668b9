// The admin API over TLS ([admin] tls_cert and tls_key): curl and openssl s_client against it,
// `lemonade status --admin https://… --cacert`, a certificate renewed by write-then-rename served
// to the next handshake on the same listener, a key that does not match its certificate refused at
// --validate and at a reload (the old certificate still served), and the key's contents nowhere.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_HEADERS_TIMEOUT_MS, ADMIN_MAX_CONNECTIONS } from '../../src/admin/server';
import { requireTool, runCli, startBalancer, startNamed, tempDir, testConfig, waitFor, type Balancer, type Ends } from '../helpers';

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim() !== '';
const HAVE = has('openssl') && has('curl');
const need = (t: { skip(msg: string): void }): boolean => requireTool(t, has('openssl') ? 'curl' : 'openssl', HAVE);

interface Pair {
  readonly cert: string;
  readonly key: string;
}

/** A self-signed P-256 certificate for 127.0.0.1 (it is its own CA), written to `dir` as NAME.crt and NAME.key. */
function makeCert(dir: string, name: string): Pair {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return { cert, key };
}

function curl(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync('curl', ['-sS', '--max-time', '5', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** The SHA-256 fingerprint of the certificate the server at `port` presents to a new handshake. */
function servedFingerprint(port: number): string {
  const r = spawnSync('sh', ['-c', `openssl s_client -connect 127.0.0.1:${port} </dev/null 2>/dev/null | openssl x509 -fingerprint -sha256 -noout`], { encoding: 'utf8' });
  return r.stdout.trim();
}

function fileFingerprint(cert: string): string {
  return spawnSync('openssl', ['x509', '-in', cert, '-fingerprint', '-sha256', '-noout'], { encoding: 'utf8' }).stdout.trim();
}

const adminTable = (p: Pair, extra = ''): string => `listen_address = "127.0.0.1:0"\ntls_cert = "${p.cert}"\ntls_key = "${p.key}"\n${extra}`;

/** A balancer whose admin API serves `live` (files it may have renamed over), and a backend. */
async function tlsBalancer(t: Ends, live: Pair): Promise<{ lb: Balancer; config: (p: Pair) => string }> {
  const srv = await startNamed(t, 's1');
  const config = (p: Pair): string => testConfig([{ address: srv.address, name: 's1' }], { admin: adminTable(p) });
  const lb = await startBalancer(t, config(live));
  return { lb, config };
}

/** Install `from`'s files at `to`'s paths as certbot's deploy hook does: a new file, renamed over. */
function renameOver(from: Pair, to: Pair): void {
  for (const k of ['cert', 'key'] as const) {
    writeFileSync(`${to[k]}.new`, readFileSync(from[k]));
    renameSync(`${to[k]}.new`, to[k]);
  }
}

test('HTTPS admin API: curl with the CA answers, without it fails verification, plain http gets no API; lemonade status --cacert', async (t) => {
  if (!need(t)) return;
  const dir = tempDir();
  const p = makeCert(dir, 'admin');
  const { lb } = await tlsBalancer(t, p);
  const url = `https://127.0.0.1:${lb.adminPort}`;

  const ok = curl(['--cacert', p.cert, `${url}/status`]);
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /"version"/);
  const health = curl(['--cacert', p.cert, `${url}/health`]);
  assert.match(health.out, /"status"/);

  // curl's 60: the peer's certificate cannot be verified with the known CAs
  const unverified = curl([`${url}/status`]);
  assert.equal(unverified.code, 60, `curl without the CA: ${unverified.code} ${unverified.err}`);
  assert.doesNotMatch(unverified.out, /"version"/);

  const plain = curl([`http://127.0.0.1:${lb.adminPort}/status`]);
  assert.notEqual(plain.code, 0, `plain http to the HTTPS port answered: ${plain.out}`);
  assert.doesNotMatch(plain.out, /"version"/);

  const status = await runCli(['status', '--admin', url, '--cacert', p.cert]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /NAME\s+ADDRESS\s+STATE/);
  assert.match(status.stdout, /\bs1\b/);

  const fromEnv = await runCli(['status', '--admin', url], { env: { LEMONADE_ADMIN_CACERT: p.cert } });
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.match(fromEnv.stdout, /\bs1\b/);

  const refused = await runCli(['status', '--admin', url]);
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.equal(refused.stdout, '');
  assert.match(refused.stderr, new RegExp(`cannot trust the admin API at ${url.replace(/\./g, '\\.')}/backends: the server's certificate was not verified \\(DEPTH_ZERO_SELF_SIGNED_CERT`));
  assert.match(refused.stderr, /--cacert FILE/);

  // another CA: verification fails, and the message names the file given
  const other = makeCert(dir, 'other');
  const wrongCa = await runCli(['status', '--admin', url, '--cacert', other.cert]);
  assert.equal(wrongCa.code, 1);
  assert.match(wrongCa.stderr, new RegExp(`not verified .*signed by the CA in ${other.cert.replace(/\./g, '\\.')}`));

  const drain = await runCli(['backend', 'drain', 's1', '--admin', url, '--cacert', p.cert]);
  assert.equal(drain.code, 0, drain.stderr);
  assert.match(drain.stdout, /s1: draining/);
  const enable = await runCli(['backend', 'enable', 's1', '--admin', url], { env: { LEMONADE_ADMIN_CACERT: p.cert } });
  assert.equal(enable.code, 0, enable.stderr);
  const undrained = await runCli(['backend', 'disable', 's1', '--admin', url]);
  assert.equal(undrained.code, 1);
  assert.match(undrained.stderr, /not verified/);

  // the key's contents: in no log line, no answer
  const keyPem = readFileSync(p.key, 'utf8');
  const keyBody = keyPem.split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
  const seen = [
    JSON.stringify(lb.logs),
    lb.stderr(),
    ok.out,
    curl(['--cacert', p.cert, `${url}/`]).out,
    curl(['--cacert', p.cert, `${url}/events`]).out,
    curl(['--cacert', p.cert, `${url}/metrics`]).out,
    (await runCli(['lb', '--config', lb.configPath, '--validate', '--json'])).stdout,
  ].join('\n');
  assert.ok(keyBody.length > 0);
  for (const line of keyBody) assert.ok(!seen.includes(line), 'a line of the private key appears in an output');
});

test('a certificate renewed by write-then-rename is served to the next handshake on the same listener; a mismatched key fails the reload and the old one is still served', async (t) => {
  if (!need(t)) return;
  const dir = tempDir();
  const live = makeCert(dir, 'live');
  const ca1 = readFileSync(live.cert);
  const renewed = makeCert(dir, 'renewed');
  const { lb } = await tlsBalancer(t, live);
  const port = lb.adminPort;
  const first = servedFingerprint(port);
  assert.equal(first, fileFingerprint(live.cert));

  // a kept-alive connection made before the renewal: the listener is not rebound, so it stays
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: [ca1, readFileSync(renewed.cert)] });
  t.after(() => agent.destroy());
  const get = (): Promise<{ status: number; reused: boolean; localPort: number }> =>
    new Promise((resolve, reject) => {
      const req = https.get({ host: '127.0.0.1', port, path: '/ready', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, localPort: req.socket?.localPort ?? 0 }));
      });
      req.on('error', reject);
    });
  const before = await get();
  assert.equal(before.status, 200);

  renameOver(renewed, live);
  const want = fileFingerprint(renewed.cert);
  await waitFor(() => servedFingerprint(port) === want, 10_000, 'the renewed certificate to be served');
  assert.notEqual(want, first);
  await lb.waitForLog((l) => l['msg'] === 'config reloaded: admin certificate renewed', 5000, 'the reload line');
  assert.equal(lb.adminPort, port);
  const after = await get();
  assert.equal(after.status, 200);
  assert.ok(after.reused, 'the connection made before the renewal is still open: the listener was not rebound');
  assert.equal(after.localPort, before.localPort);

  // a key of another certificate renamed over the live key: the reload fails, naming the key file
  const stray = makeCert(dir, 'stray');
  writeFileSync(`${live.key}.new`, readFileSync(stray.key));
  renameSync(`${live.key}.new`, live.key);
  const failed = await lb.waitForLog((l) => l['msg'] === 'config reload failed; the running configuration is unchanged', 10_000, 'the failed reload');
  assert.match(String(failed['error']), new RegExp(`admin\\.tls_key: ${live.key.replace(/\./g, '\\.')}: this private key does not match the certificate in ${live.cert.replace(/\./g, '\\.')}`));
  assert.equal(servedFingerprint(port), want, 'the old certificate is still served');
  const status = JSON.parse(spawnSync('curl', ['-sS', '--cacert', renewed.cert, `https://127.0.0.1:${port}/status`], { encoding: 'utf8' }).stdout) as { config: { last_reload: { result: string; error: string } } };
  assert.equal(status.config.last_reload.result, 'failure');
  const keyBody = readFileSync(stray.key, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
  const seen = JSON.stringify(lb.logs) + lb.stderr() + JSON.stringify(status);
  for (const line of keyBody) assert.ok(!seen.includes(line), 'a line of the private key appears in an output');
});

test('--validate: a key that does not match its certificate names the key and the file; tls_cert without tls_key names both keys', async (t) => {
  if (!need(t)) return;
  const dir = tempDir();
  const a = makeCert(dir, 'a');
  const b = makeCert(dir, 'b');
  const file = (admin: string): string => {
    const p = join(dir, `config-${Math.random().toString(36).slice(2)}.toml`);
    writeFileSync(p, testConfig([{ address: '127.0.0.1:1', name: 's1' }], { admin }).replace(/127\.0\.0\.1:0/g, '127.0.0.1:1'));
    return p;
  };
  const mismatch = await runCli(['lb', '--config', file(adminTable({ cert: a.cert, key: b.key })), '--validate']);
  assert.equal(mismatch.code, 1, mismatch.stdout);
  assert.match(mismatch.stdout, new RegExp(`admin\\.tls_key( \\(line \\d+\\))?: ${b.key.replace(/\./g, '\\.')}: this private key does not match the certificate in ${a.cert.replace(/\./g, '\\.')}`));
  for (const line of readFileSync(b.key, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('-----'))) assert.ok(!mismatch.stdout.includes(line) && !mismatch.stderr.includes(line));

  const alone = await runCli(['lb', '--config', file(`listen_address = "127.0.0.1:0"\ntls_cert = "${a.cert}"`), '--validate']);
  assert.equal(alone.code, 1, alone.stdout);
  assert.match(alone.stdout, /admin\.tls_key.*admin\.tls_cert and admin\.tls_key go together/);

  const notPem = join(dir, 'not.pem');
  writeFileSync(notPem, 'hello\n');
  const bad = await runCli(['lb', '--config', file(adminTable({ cert: notPem, key: join(dir, 'missing.key') })), '--validate']);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, new RegExp(`admin\\.tls_cert.*${notPem.replace(/\./g, '\\.')}: not PEM`));
  assert.match(bad.stdout, /admin\.tls_key.*missing\.key: no such file/);

  const good = await runCli(['lb', '--config', file(adminTable(a)), '--validate']);
  assert.equal(good.code, 0, good.stdout);
});

test('a reload that sets tls_cert and tls_key switches the admin API from HTTP to HTTPS on the same address, and back', async (t) => {
  if (!need(t)) return;
  const dir = tempDir();
  const p = makeCert(dir, 'admin');
  const srv = await startNamed(t, 's1');
  const config = (admin: string): string => testConfig([{ address: srv.address, name: 's1' }], { admin });
  const lb = await startBalancer(t, config('listen_address = "127.0.0.1:0"'));
  const port = lb.adminPort;
  const admin = `listen_address = "127.0.0.1:${port}"`;
  assert.equal((await lb.admin('/ready')).status, 200);
  lb.replaceConfig(config(`${admin}\ntls_cert = "${p.cert}"\ntls_key = "${p.key}"`));
  await waitFor(() => curl(['--cacert', p.cert, `https://127.0.0.1:${port}/ready`]).code === 0, 10_000, 'HTTPS on the admin port');
  assert.notEqual(curl([`http://127.0.0.1:${port}/ready`]).code, 0);
  lb.replaceConfig(config(admin));
  await waitFor(() => curl([`http://127.0.0.1:${port}/ready`]).code === 0, 10_000, 'plain HTTP again');
  // the admin API switches before the reload's log line is written: wait for the second line
  const reloaded = (): Record<string, unknown>[] => lb.logs.filter((l) => String(l['msg']).startsWith('config reloaded'));
  const reloads = await waitFor(() => (reloaded().length >= 2 ? reloaded() : null), 5000, 'the two reload lines');
  assert.equal(reloads.length, 2, JSON.stringify(reloads));
  assert.match(String(reloads[0]!['changes']), /admin\.tls_cert/);
});

test(`over TLS, connections that never finish their handshake are capped at ${ADMIN_MAX_CONNECTIONS} (curl still gets in) and closed after the headers timeout`, { timeout: 60_000 }, async (t) => {
  if (!need(t)) return;
  const p = makeCert(tempDir(), 'admin');
  const { lb } = await tlsBalancer(t, p);
  const fds = (): number => readdirSync(`/proc/${lb.proc.pid!}/fd`).length;
  const fds0 = fds();
  const silent: { socket: net.Socket; closedAt: number }[] = [];
  t.after(() => {
    for (const s of silent) s.socket.destroy();
  });
  const started = Date.now();
  const N = ADMIN_MAX_CONNECTIONS + 64;
  for (let i = 0; i < N; i += 32) {
    silent.push(
      ...(await Promise.all(
        Array.from({ length: 32 }, () =>
          new Promise<{ socket: net.Socket; closedAt: number }>((resolve, reject) => {
            const socket = net.connect({ host: '127.0.0.1', port: lb.adminPort }, () => {
              const s = { socket, closedAt: 0 };
              socket.on('error', () => {});
              socket.on('close', () => (s.closedAt = Date.now()));
              resolve(s);
            });
            socket.once('error', reject);
          }),
        ),
      )),
    );
  }
  // the oldest were closed as the new ones came
  await waitFor(() => silent.filter((s) => s.closedAt !== 0).length >= N - ADMIN_MAX_CONNECTIONS, 5000, 'the cap to close the oldest');
  assert.ok(fds() - fds0 <= ADMIN_MAX_CONNECTIONS + 8, `${fds() - fds0} more descriptors than at start`);
  const ok = curl(['--cacert', p.cert, `https://127.0.0.1:${lb.adminPort}/health`]);
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /"status"/);
  // a handshake gets as long as a request's headers
  await waitFor(() => silent.every((s) => s.closedAt !== 0), ADMIN_HEADERS_TIMEOUT_MS + 5000, 'the silent connections to be closed');
  const last = Math.max(...silent.map((s) => s.closedAt)) - started;
  assert.ok(last >= ADMIN_HEADERS_TIMEOUT_MS - 1000, `closed after ${last} ms`);
});
