// Real clients through TLS termination (the bundle, certificates made by openssl at test time):
// 1. proxy_protocol = "v2" on a terminating service: the header the backend reads carries what the
//    handshake learned (ALPN, the server name, PP2_TYPE_SSL with the TLS version and the client
//    certificate's CN), read by a strict parser here and by HAProxy's accept-proxy; openssl
//    s_client with and without a client certificate, with -alpn and -servername. A plain
//    service's header has no TLVs.
// 2. psql (sslmode=verify-full) to a real PostgreSQL server listening in plaintext: its SSLRequest
//    is answered, on an address that reads the ClientHello and on one that does not, on both
//    relays; a wrong CA fails.
// 3. curl --http2 and h2load to a plaintext HTTP/2 nginx (h2c) through a service offering h2.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, NGINX, requireTool, runHaproxy, runNginx, startBalancer, startTcpServer, stopProcess, tempDir, waitFor, type Balancer } from '../helpers';
import { OPENSSL, have, makeCa, makeCert, sClient } from '../certs';

const CURL = have('curl', ['--version']);
const H2LOAD = have('h2load', ['--version']);
const HAPROXY = have('haproxy', ['-v']);
/** Debian's PostgreSQL server binaries (the newest major installed), or null */
const PG_BIN =
  (existsSync('/usr/lib/postgresql') ? readdirSync('/usr/lib/postgresql') : [])
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => `/usr/lib/postgresql/${v}/bin`)
    .find((d) => existsSync(join(d, 'postgres')) && existsSync(join(d, 'initdb'))) ?? null;
const POSTGRES = PG_BIN !== null;
const PSQL = have('psql', ['--version']);

/** Run a client to completion, bounded: its exit code, standard output and standard error. */
function runTool(cmd: string, args: string[], o: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: o.env ?? process.env });
    let out = '';
    let err = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 20_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
    p.stdin!.on('error', () => {});
    p.stdin!.end(o.input ?? '');
  });
}

/** `p`, or an error naming `what` after `ms` */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

const accessLines = (b: Balancer): Record<string, unknown>[] => b.logs.filter((l) => typeof l['termination'] === 'string');

// -------------------------------------------------------------------------------------------
// 1. PROXY protocol v2 TLVs

/** A v2 header as read, every length checked. */
interface V2Header {
  readonly command: number;
  readonly family: number;
  readonly src: string;
  readonly srcPort: number;
  readonly dst: string;
  readonly dstPort: number;
  /** type → value, in the order sent */
  readonly tlvs: [number, Buffer][];
  /** PP2_TYPE_SSL read: client bits, verify, its sub-TLVs */
  readonly ssl: { client: number; verify: number; sub: [number, Buffer][] } | null;
}

const V2_SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** Walk TLVs that must fill `b` exactly (a length running past the end is an error). */
function walkTlvs(b: Buffer, what: string): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let at = 0;
  while (at < b.length) {
    if (b.length - at < 3) throw new Error(`${what}: ${b.length - at} bytes left, less than a TLV's type and length`);
    const len = b.readUInt16BE(at + 1);
    if (at + 3 + len > b.length) throw new Error(`${what}: TLV 0x${b[at]!.toString(16)} of length ${len} runs past the end`);
    out.push([b[at]!, b.subarray(at + 3, at + 3 + len)]);
    at += 3 + len;
  }
  return out;
}

/** Parse a whole v2 header at the start of `b` (null: not all of it yet); throws on anything the spec does not allow. */
function parseV2(b: Buffer): { header: V2Header; rest: Buffer } | null {
  if (b.length < 16) return null;
  if (!b.subarray(0, 12).equals(V2_SIG)) throw new Error(`not a v2 signature: ${b.subarray(0, 16).toString('hex')}`);
  if (b[12]! >> 4 !== 2) throw new Error(`version ${b[12]! >> 4}`);
  const command = b[12]! & 0x0f;
  if (command > 1) throw new Error(`command ${command}`);
  const family = b[13]!;
  const len = b.readUInt16BE(14);
  if (b.length < 16 + len) return null;
  const body = b.subarray(16, 16 + len);
  let addrLen = 0;
  let src = '';
  let dst = '';
  let srcPort = 0;
  let dstPort = 0;
  if (family === 0x11) {
    addrLen = 12;
    if (body.length < 12) throw new Error(`TCP4 with ${body.length} bytes of addresses`);
    src = [...body.subarray(0, 4)].join('.');
    dst = [...body.subarray(4, 8)].join('.');
    srcPort = body.readUInt16BE(8);
    dstPort = body.readUInt16BE(10);
  } else if (family === 0x21) {
    addrLen = 36;
    if (body.length < 36) throw new Error(`TCP6 with ${body.length} bytes of addresses`);
    srcPort = body.readUInt16BE(32);
    dstPort = body.readUInt16BE(34);
  } else if (family !== 0x00) throw new Error(`family 0x${family.toString(16)}`);
  const tlvs = walkTlvs(body.subarray(addrLen), 'TLVs');
  let ssl: V2Header['ssl'] = null;
  for (const [type, v] of tlvs) {
    if (type !== 0x20) continue;
    if (ssl !== null) throw new Error('two PP2_TYPE_SSL');
    if (v.length < 5) throw new Error(`PP2_TYPE_SSL of ${v.length} bytes`);
    ssl = { client: v[0]!, verify: v.readUInt32BE(1), sub: walkTlvs(v.subarray(5), 'PP2_TYPE_SSL sub-TLVs') };
  }
  return { header: { command, family, src, srcPort, dst, dstPort, tlvs, ssl }, rest: b.subarray(16 + len) };
}

const text = (tlvs: [number, Buffer][], type: number): string | null => {
  const found = tlvs.filter(([t]) => t === type);
  if (found.length > 1) throw new Error(`TLV 0x${type.toString(16)} sent ${found.length} times`);
  return found.length === 1 ? found[0]![1].toString('utf8') : null;
};

/** A backend that reads the v2 header strictly (a bad one closes the connection), keeps it, then echoes. */
async function startV2Echo(t: TestContext): Promise<{ port: number; headers: V2Header[]; errors: string[] }> {
  const headers: V2Header[] = [];
  const errors: string[] = [];
  const srv = await startTcpServer(t, (s) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      let r: ReturnType<typeof parseV2>;
      try {
        r = parseV2(got);
      } catch (e) {
        errors.push((e as Error).message);
        s.destroy();
        return;
      }
      if (r === null) return;
      // the health checks' own connections send LOCAL (no addresses, no TLVs): not a client's
      if (r.header.command === 1) headers.push(r.header);
      else if (r.header.tlvs.length > 0) errors.push('a LOCAL header with TLVs');
      s.off('data', onData);
      if (r.rest.length > 0) s.write(r.rest);
      s.pipe(s);
    };
    s.on('data', onData);
    s.on('error', () => {});
  });
  return { port: srv.port, headers, errors };
}

test('proxy_protocol = "v2" on a terminating service: ALPN, the server name and PP2_TYPE_SSL (version, client certificate CN) reach the backend; a plain service sends none', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'server', '/CN=localhost', 'DNS:localhost,DNS:db.test');
  makeCert(dir, 'alice', '/O=example/CN=alice', null);
  // a client certificate the balancer's client_ca did not sign
  makeCa(dir, 'other');
  makeCert(dir, 'mallory', '/CN=mallory', null, { ca: 'other' });
  const backend = await startV2Echo(t);
  const [tlsPort, plainPort] = [await freePort(), await freePort()];
  const b = await startBalancer(
    t,
    `[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[proxy]
proxy_protocol = "v2"
[[services]]
name = "tls"
listen_address = "127.0.0.1:${tlsPort}"
[services.tls]
certificates = [{ cert = "${dir}/server.pem", key = "${dir}/server.key" }]
alpn = ["h2", "http/1.1"]
client_ca = "${dir}/ca.pem"
client_auth = "optional"
[[services.backends]]
address = "127.0.0.1:${backend.port}"
[[services]]
name = "plain"
listen_address = "127.0.0.1:${plainPort}"
[[services.backends]]
address = "127.0.0.1:${backend.port}"
`,
  );
  const cases: { args: string[]; alpn: string | null; authority: string | null; client: number; verify: (v: number) => boolean; cn: string | null }[] = [
    // a certificate signed by client_ca: PP2_CLIENT_SSL | CERT_CONN | CERT_SESS, verified
    { args: ['-servername', 'localhost', '-alpn', 'h2', '-cert', `${dir}/alice.pem`, '-key', `${dir}/alice.key`], alpn: 'h2', authority: 'localhost', client: 0x07, verify: (v) => v === 0, cn: 'alice' },
    // none: PP2_CLIENT_SSL only, verify non-zero, no CN
    { args: ['-servername', 'db.test', '-alpn', 'http/1.1'], alpn: 'http/1.1', authority: 'db.test', client: 0x01, verify: (v) => v !== 0, cn: null },
    // no server name, no ALPN offered: neither TLV
    { args: ['-noservername'], alpn: null, authority: null, client: 0x01, verify: (v) => v !== 0, cn: null },
    // a certificate that does not chain (optional accepts it): sent, with OpenSSL's reason
    // (X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, 21: a lone certificate whose issuer is unknown)
    { args: ['-servername', 'localhost', '-cert', `${dir}/mallory.pem`, '-key', `${dir}/mallory.key`], alpn: null, authority: 'localhost', client: 0x07, verify: (v) => v === 21, cn: 'mallory' },
  ];
  for (const [i, c] of cases.entries()) {
    const r = await sClient(tlsPort, [...c.args, '-CAfile', `${dir}/ca.pem`], `line-${i}`);
    assert.ok(r.echoed, `${c.args.join(' ')}: the line came back: ${r.out}\n${r.err}`);
    assert.deepEqual(backend.errors, []);
    const h = backend.headers[i]!;
    assert.equal(h.command, 1, 'PROXY command');
    assert.equal(h.family, 0x11, 'TCP over IPv4');
    assert.equal(h.src, '127.0.0.1');
    assert.equal(h.dstPort, tlsPort);
    const what = c.args.join(' ');
    assert.equal(text(h.tlvs, 0x01), c.alpn, `${what}: PP2_TYPE_ALPN`);
    assert.equal(text(h.tlvs, 0x02), c.authority, `${what}: PP2_TYPE_AUTHORITY`);
    assert.deepEqual(
      h.tlvs.map(([type]) => type),
      [...(c.alpn !== null ? [0x01] : []), ...(c.authority !== null ? [0x02] : []), 0x20],
      `${what}: the TLVs sent`,
    );
    assert.equal(h.ssl!.client, c.client, `${what}: client bits`);
    assert.ok(c.verify(h.ssl!.verify), `${what}: verify ${h.ssl!.verify}`);
    assert.equal(text(h.ssl!.sub, 0x21), 'TLSv1.3', `${what}: PP2_SUBTYPE_SSL_VERSION`);
    assert.equal(text(h.ssl!.sub, 0x22), c.cn, `${what}: PP2_SUBTYPE_SSL_CN`);
  }
  // a session resumed from alice's: her certificate came on the first connection only (CERT_SESS)
  const sess = join(dir, 'alice.session');
  const full = await sClient(tlsPort, ['-servername', 'localhost', '-cert', `${dir}/alice.pem`, '-key', `${dir}/alice.key`, '-CAfile', `${dir}/ca.pem`, '-sess_out', sess], 'full');
  assert.ok(full.echoed, full.out);
  await waitFor(() => existsSync(sess) && readFileSync(sess, 'utf8').includes('SSL SESSION'), 5000, 's_client to write the session');
  const again = await sClient(tlsPort, ['-servername', 'localhost', '-CAfile', `${dir}/ca.pem`, '-sess_in', sess], 'resumed');
  assert.ok(again.echoed, again.out);
  assert.match(again.out, /^Reused, TLSv1\.3/m);
  const [fullH, resumedH] = backend.headers.slice(cases.length, cases.length + 2);
  assert.equal(fullH!.ssl!.client, 0x07);
  assert.equal(resumedH!.ssl!.client, 0x05, 'PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS on the resumed connection');
  assert.equal(resumedH!.ssl!.verify, 0);
  assert.equal(text(resumedH!.ssl!.sub, 0x22), 'alice');
  // the plain service on the same balancer: addresses only, as before
  const plain = await new Promise<Buffer>((resolve, reject) => {
    const s = net.connect(plainPort, '127.0.0.1', () => s.write('plain\n'));
    let got = '';
    s.on('data', (d) => {
      got += d.toString();
      if (got.includes('plain\n')) {
        s.destroy();
        resolve(Buffer.from(got));
      }
    });
    s.on('error', reject);
  });
  assert.equal(plain.toString(), 'plain\n');
  const h = backend.headers[cases.length + 2]!;
  assert.equal(h.dstPort, plainPort);
  assert.deepEqual(h.tlvs, [], 'a plain service sends no TLV');
  const lines = await waitFor(() => (accessLines(b).length >= cases.length + 3 ? accessLines(b) : null), 10_000, 'the access log lines');
  assert.equal(lines.filter((l) => l['service'] === 'tls' && l['tls_version'] === 'TLSv1.3').length, cases.length + 2);
});

test('HAProxy (accept-proxy) takes the v2 header with its TLVs and reads the server name from it (fc_pp_authority)', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL) || !requireTool(t, 'haproxy', HAPROXY)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'server', '/CN=localhost', 'DNS:localhost');
  const echo = await startTcpServer(t, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  const [hapPort, lbPort] = [await freePort(), await freePort()];
  const hap = await runHaproxy(
    t,
    dir,
    `frontend f
  bind 127.0.0.1:${hapPort} accept-proxy
  log-format "pp src=%ci authority=%[fc_pp_authority]"
  default_backend b
backend b
  server echo 127.0.0.1:${echo.port}
`,
    [hapPort],
  );
  await startBalancer(
    t,
    `[proxy]
listen_address = "127.0.0.1:${lbPort}"
proxy_protocol = "v2"
[tls]
certificates = [{ cert = "${dir}/server.pem", key = "${dir}/server.key" }]
alpn = ["h2"]
[[backends]]
address = "127.0.0.1:${hapPort}"
`,
  );
  const r = await sClient(lbPort, ['-servername', 'localhost', '-alpn', 'h2', '-CAfile', `${dir}/ca.pem`], 'through-haproxy');
  assert.ok(r.echoed, `the line came back through haproxy: ${r.out}\n${r.err}\n${hap.out()}`);
  // haproxy logs the connection when it ends
  await waitFor(() => hap.out().includes('authority=localhost'), 10_000, `haproxy's log line: ${hap.out()}`);
  assert.match(hap.out(), /pp src=127\.0\.0\.1 authority=localhost/);
});

// -------------------------------------------------------------------------------------------
// 2. PostgreSQL: psql's SSLRequest

/** A PostgreSQL server (Debian's) in `dir`, plaintext on loopback, trust auth, run as the postgres user. */
async function startPostgres(t: TestContext, dir: string): Promise<number> {
  const data = join(dir, 'data');
  mkdirSync(data);
  const asRoot = process.getuid?.() === 0;
  // initdb and postgres refuse root: the data directory belongs to the postgres user
  if (asRoot) {
    const pw = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gw = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    chownSync(dir, Number(pw.stdout), Number(gw.stdout));
    chownSync(data, Number(pw.stdout), Number(gw.stdout));
    chmodSync(dir, 0o755);
  }
  const as = (cmd: string, args: string[]): [string, string[]] => (asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
  const [icmd, iargs] = as(join(PG_BIN!, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const init = spawnSync(icmd, iargs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb: ${init.stderr}${init.stdout}`);
  const port = await freePort();
  const [pcmd, pargs] = as(join(PG_BIN!, 'postgres'), ['-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir, '-c', 'fsync=off', '-c', 'ssl=off']);
  const pg: ChildProcess = spawn(pcmd, pargs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  pg.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  pg.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  t.after(() => stopProcess(pg));
  await waitFor(
    () => {
      if (pg.exitCode !== null) throw new Error(`postgres exited (${pg.exitCode}): ${log}`);
      return log.includes('ready to accept connections');
    },
    20_000,
    'postgres to accept connections',
  );
  return port;
}

/** psql with a connection string: one query, no password prompt, no ~/.psqlrc. */
function psql(conninfo: string, query: string): Promise<{ code: number | null; out: string; err: string }> {
  return runTool('psql', ['-X', '-w', '-A', '-t', conninfo, '-c', query], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
}

test('psql (sslmode=verify-full) reaches a plaintext PostgreSQL through termination: its SSLRequest is answered, on an address reading the ClientHello and one that does not, on both relays; a wrong CA fails', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL) || !requireTool(t, 'postgres (postgresql)', POSTGRES) || !requireTool(t, 'psql', PSQL)) return;
  const certs = tempDir();
  makeCa(certs);
  makeCert(certs, 'localhost', '/CN=localhost', 'DNS:localhost');
  makeCa(certs, 'wrong');
  const pgPort = await startPostgres(t, tempDir());
  for (const relay of ['raw', 'net.Socket'] as const) {
    const [alone, shared] = [await freePort(), await freePort()];
    // "pg" alone on its address (no byte read to route it); "pg-shared" is the default route of an
    // address that reads the ClientHello first (a passthrough service takes "other.test")
    const b = await startBalancer(
      t,
      `[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[[services]]
name = "pg"
listen_address = "127.0.0.1:${alone}"
[services.tls]
certificates = [{ cert = "${certs}/localhost.pem", key = "${certs}/localhost.key" }]
[[services.backends]]
address = "127.0.0.1:${pgPort}"
[[services]]
name = "pg-shared"
listen_address = "127.0.0.1:${shared}"
[services.tls]
certificates = [{ cert = "${certs}/localhost.pem", key = "${certs}/localhost.key" }]
[[services.backends]]
address = "127.0.0.1:${pgPort}"
[[services]]
name = "other"
listen_address = "127.0.0.1:${shared}"
sni = ["other.test"]
[[services.backends]]
address = "127.0.0.1:${pgPort}"
`,
      relay === 'net.Socket' ? { env: { LEMONADE_LB_NET_SOCKETS: '1' } } : {},
    );
    for (const [service, port] of [['pg', alone], ['pg-shared', shared]] as const) {
      const r = await psql(`host=localhost hostaddr=127.0.0.1 port=${port} sslmode=verify-full sslrootcert=${certs}/ca.pem user=postgres dbname=postgres`, 'select 40 + 2');
      assert.equal(r.code, 0, `${relay}, ${service}: psql: ${r.err}`);
      assert.equal(r.out.trim(), '42');
      // psql spoke TLS to the balancer; the server's own connection is plaintext
      const q = await psql(`host=localhost hostaddr=127.0.0.1 port=${port} sslmode=verify-full sslrootcert=${certs}/ca.pem user=postgres dbname=postgres`, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()');
      assert.equal(q.out.trim(), 'f', `${relay}, ${service}: the backend connection is plaintext`);
      const line = await b.waitForLog((l) => l['service'] === service && typeof l['termination'] === 'string', 10_000, `${service}'s access log line`);
      assert.equal(line['tls_version'], 'TLSv1.3');
      assert.equal(line['sni'], 'localhost');
    }
    // verify-full with a CA that did not sign the certificate: refused by psql
    const bad = await psql(`host=localhost hostaddr=127.0.0.1 port=${alone} sslmode=verify-full sslrootcert=${certs}/wrong.pem user=postgres dbname=postgres`, 'select 1');
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /certificate verify failed/);
    await b.stop();
  }
});

test('a GSSENCRequest is answered N, then the SSLRequest S, then TLS; anything else is TLS as before', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const certs = tempDir();
  makeCa(certs);
  makeCert(certs, 'localhost', '/CN=localhost', 'DNS:localhost');
  const echo = await startTcpServer(t, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  const port = await freePort();
  const b = await startBalancer(
    t,
    `[proxy]
listen_address = "127.0.0.1:${port}"
[access_log]
enabled = true
[tls]
certificates = [{ cert = "${certs}/localhost.pem", key = "${certs}/localhost.key" }]
handshake_timeout = "2s"
[[backends]]
address = "127.0.0.1:${echo.port}"
`,
  );
  const tls = await import('node:tls');
  const GSSENC = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]);
  const SSLREQ = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
  // the requests in pieces, each answer awaited as libpq does
  const s = net.connect(port, '127.0.0.1');
  const answers: string[] = [];
  t.after(() => s.destroy());
  const next = (): Promise<string> => within(new Promise((r) => s.once('data', (d: Buffer) => r(d.toString('latin1')))), 5000, 'answer');
  await within(new Promise((r) => s.once('connect', r)), 5000, 'connect');
  s.write(GSSENC.subarray(0, 3));
  await new Promise((r) => setTimeout(r, 50));
  let answer = next();
  s.write(GSSENC.subarray(3));
  answers.push(await answer);
  answer = next();
  s.write(SSLREQ);
  answers.push(await answer);
  assert.deepEqual(answers, ['N', 'S']);
  const secure = tls.connect({ socket: s, servername: 'localhost', ca: readFileSync(join(certs, 'ca.pem')) });
  await within(
    new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    }),
    5000,
    'TLS handshake',
  );
  secure.write('after-starttls\n');
  const got = await within(new Promise<string>((r) => secure.once('data', (d: Buffer) => r(d.toString()))), 5000, 'echo');
  assert.equal(got, 'after-starttls\n');
  secure.end();
  // a PostgreSQL StartupMessage (no SSLRequest first) is not TLS: the handshake fails, nothing reaches the backend
  const startup = Buffer.alloc(8);
  startup.writeUInt32BE(8, 0);
  startup.writeUInt32BE(196608, 4); // protocol 3.0
  const plain = await new Promise<string>((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => c.write(startup));
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString('latin1')));
    c.on('close', () => resolve(got));
    c.on('error', () => {});
  });
  assert.ok(!plain.startsWith('S'), `no 'S' for a StartupMessage: ${JSON.stringify(plain)}`);
  const failed = await b.waitForLog((l) => l['termination'] === 'tls_handshake_failed', 10_000, 'the StartupMessage is a failed handshake');
  assert.equal(failed['bytes_in'], 0);
});

// -------------------------------------------------------------------------------------------
// 3. HTTP/2 through termination

/** nginx speaking HTTP/2 in plaintext with prior knowledge (h2c), answering "h2c $server_protocol". */
async function startH2cNginx(t: TestContext, dir: string): Promise<number> {
  const port = await freePort();
  await runNginx(t, dir, `  server {\n    listen 127.0.0.1:${port} http2;\n    location / { return 200 "h2c $server_protocol\\n"; }\n  }`, [port]);
  return port;
}

test('curl --http2 and h2load reach a plaintext HTTP/2 backend through a service offering h2', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL) || !requireTool(t, 'nginx', NGINX !== null) || !requireTool(t, 'curl', CURL) || !requireTool(t, 'h2load (nghttp2-client)', H2LOAD)) return;
  const dir = tempDir();
  makeCa(dir);
  makeCert(dir, 'localhost', '/CN=localhost', 'DNS:localhost');
  const h2c = await startH2cNginx(t, tempDir());
  const port = await freePort();
  const b = await startBalancer(
    t,
    `[proxy]
listen_address = "127.0.0.1:${port}"
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[tls]
certificates = [{ cert = "${dir}/localhost.pem", key = "${dir}/localhost.key" }]
alpn = ["h2", "http/1.1"]
[[backends]]
address = "127.0.0.1:${h2c}"
`,
  );
  const c = await runTool('curl', ['-sS', '--http2', '--cacert', `${dir}/ca.pem`, '--resolve', `localhost:${port}:127.0.0.1`, '-w', '\n%{http_version} %{response_code}', `https://localhost:${port}/`]);
  assert.equal(c.code, 0, `curl: ${c.err}`);
  assert.equal(c.out, 'h2c HTTP/2.0\n\n2 200');
  const line = await b.waitForLog((l) => typeof l['termination'] === 'string', 10_000, "curl's access log line");
  assert.equal(line['alpn'], 'h2');
  // 200 requests over 4 connections, bounded
  const h = await runTool('h2load', ['-n', '200', '-c', '4', '-m', '10', '-T', '10', `https://127.0.0.1:${port}/`], { timeoutMs: 30_000 });
  assert.equal(h.code, 0, `h2load: ${h.out}${h.err}`);
  assert.match(h.out, /Application protocol: h2/);
  assert.match(h.out, /requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored, 0 timeout/);
  assert.match(h.out, /status codes: 200 2xx/);
});
