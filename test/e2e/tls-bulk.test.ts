// Bulk data over TLS, through the real balancer (the bundle), on both relays: a TLS connection
// reads with 'data' events until it moves full records, then with the relay's own buffers. A
// client that terminates at the balancer, and a backend reached with backend_tls, exchange small
// lines, then megabytes both ways with an echo at the other end under backpressure, then a small
// line again: every byte comes back, in order (sha256 of what was sent and what came back), and
// the connection still half-closes cleanly.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool, startBalancer, startEcho, tempDir, type Ends } from '../helpers';

const OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

/** A self-signed ECDSA certificate for `a.test` and 127.0.0.1 in a fresh directory: cert.pem, key.pem. */
function makeCert(): string {
  const dir = tempDir();
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=a.test', '-addext', 'subjectAltName=DNS:a.test,IP:127.0.0.1'], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req: ${r.stderr}`);
  return dir;
}

/** A TLS echo server (node:tls) with that certificate; it ends its side when the client ends. */
function startTlsEcho(t: Ends, dir: string): Promise<number> {
  const server = tls.createServer({ cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')), allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  t.after(() => server.close());
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

/**
 * Over `s` (connected): a small line and its echo, `size` random bytes written in 64 KiB writes
 * while the echo is read, a small line again, then end(): what came back, and the hashes.
 */
async function exchange(s: net.Socket, size: number): Promise<{ sent: string; got: string; length: number }> {
  const chunks: Buffer[] = [];
  let length = 0;
  const ended = new Promise<void>((resolve, reject) => {
    s.on('end', resolve);
    s.on('error', reject);
  });
  s.on('data', (d: Buffer) => {
    chunks.push(d);
    length += d.length;
  });
  const until = async (n: number): Promise<void> => {
    while (length < n) await new Promise((r) => setTimeout(r, 10));
  };
  const hello = Buffer.from('hello\n');
  s.write(hello);
  await until(hello.length);
  const bulk = randomBytes(size);
  for (let off = 0; off < size; off += 64 * 1024) {
    if (!s.write(bulk.subarray(off, off + 64 * 1024))) await new Promise((r) => s.once('drain', r));
  }
  await until(hello.length + size);
  const bye = Buffer.from('bye\n');
  s.write(bye);
  s.end();
  await ended;
  const sent = createHash('sha256').update(hello).update(bulk).update(bye).digest('hex');
  return { sent, got: createHash('sha256').update(Buffer.concat(chunks)).digest('hex'), length };
}

const SIZE = 8 * 1024 * 1024;

for (const relay of ['raw handles', 'net.Socket'] as const) {
  const env = relay === 'net.Socket' ? { env: { LEMONADE_LB_NET_SOCKETS: '1' } } : {};

  test(`a terminating service relays megabytes each way, in order, between small lines (${relay})`, async (t) => {
    if (!requireTool(t, 'openssl', OPENSSL)) return;
    const dir = makeCert();
    const echo = await startEcho(t);
    const b = await startBalancer(t, `[proxy]\nlisten_address = "127.0.0.1:0"\n[admin]\nlisten_address = "127.0.0.1:0"\n[tls]\ncertificates = [{ cert = "${dir}/cert.pem", key = "${dir}/key.pem" }]\n[[backends]]\naddress = "127.0.0.1:${echo.port}"\n`, env);
    const s = tls.connect({ host: '127.0.0.1', port: b.port, servername: 'a.test', ca: readFileSync(join(dir, 'cert.pem')) });
    await new Promise<void>((resolve, reject) => s.once('secureConnect', resolve).once('error', reject));
    const r = await exchange(s, SIZE);
    assert.equal(r.length, 6 + SIZE + 4);
    assert.equal(r.got, r.sent);
  });

  test(`a backend_tls service relays megabytes each way, in order, between small lines (${relay})`, async (t) => {
    if (!requireTool(t, 'openssl', OPENSSL)) return;
    const dir = makeCert();
    const port = await startTlsEcho(t, dir);
    const b = await startBalancer(t, `[proxy]\nlisten_address = "127.0.0.1:0"\n[admin]\nlisten_address = "127.0.0.1:0"\n[backend_tls]\nenabled = true\nca = "${dir}/cert.pem"\n[[backends]]\naddress = "127.0.0.1:${port}"\n`, env);
    const s = net.connect({ host: '127.0.0.1', port: b.port, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
    const r = await exchange(s, SIZE);
    assert.equal(r.length, 6 + SIZE + 4);
    assert.equal(r.got, r.sent);
  });
}
