// tcp_keepalive from outside: `ss -tno` (iproute2) shows the balancer's two sockets of a proxied
// connection, the client's and the backend's, each with `timer:(keepalive,…)` counting down from
// the idle time set, on the raw relay, on net.Socket (LEMONADE_LB_NET_SOCKETS=1), on a service that
// terminates TLS (the TCP socket under it) and on one that speaks TLS to its backend (the TCP leg);
// a service without the key (the default, "0s") shows no timer on either; a sub-second value is
// rounded up to 1 s (left at 0 the kernel would refuse it and keep its own 2 hours).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { atEnd, freePort, requireTool, runCli, startBalancer, startTcpServer, tempDir, testConfig, waitFor, type Ends } from '../helpers';

const have = (cmd: string, args: string[]): boolean => {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
};
const SS = have('ss', ['-V']);
const OPENSSL = have('openssl', ['version']);

/** An established TCP socket as `ss -tno` shows it. */
interface SsSocket {
  readonly local: string;
  readonly peer: string;
  /** the timer field: "keepalive,16sec,0", or null when none runs */
  readonly timer: string | null;
}

function established(): SsSocket[] {
  const r = spawnSync('ss', ['-tnoH', 'state', 'established'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ss -tno: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 4)
    .map((f) => ({ local: f[2]!, peer: f[3]!, timer: /^timer:\((.*)\)$/.exec(f.find((x) => x.startsWith('timer:')) ?? '')?.[1] ?? null }));
}

/** ss's time ("16sec", "1min2sec", "8.512ms" for 8.512 s, "480ms") in seconds. */
function ssSeconds(text: string): number {
  const m = /^(?:(\d+)min)?(?:(\d+)(sec|\.))?(?:(\d+)ms)?$/.exec(text);
  if (!m || text === '') throw new Error(`not a time as ss writes it: "${text}"`);
  return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0) + Number(m[4] ?? 0) / 1000;
}

/** The timer of the socket from `local` to `peer`, once ss shows that socket (null: no timer). */
async function timerOf(local: string, peer: string): Promise<string | null> {
  const s = await waitFor(() => established().find((x) => x.local === local && x.peer === peer), 5000, `ss to show ${local} -> ${peer}`);
  return s.timer;
}

/** The keepalive timer's seconds left on the socket from `local` to `peer` (waiting for it to show). */
async function keepaliveOf(local: string, peer: string): Promise<number> {
  const timer = await waitFor(async () => {
    const t = await timerOf(local, peer);
    return t !== null && t.startsWith('keepalive,') ? t : null;
  }, 5000, `a keepalive timer on ${local} -> ${peer}`);
  return ssSeconds(timer.split(',')[1]!);
}

/** An echo backend that notes the local port of the balancer's socket to it, at its first bytes. */
async function recordingEcho(t: Ends, secure?: { cert: Buffer; key: Buffer }): Promise<{ port: number; lbPorts: number[] }> {
  const lbPorts: number[] = [];
  const onConn = (s: net.Socket): void => {
    s.once('data', () => lbPorts.push(s.remotePort!));
    s.pipe(s);
  };
  if (!secure) {
    const srv = await startTcpServer(t, onConn);
    return { port: srv.port, lbPorts };
  }
  const srv = tls.createServer(secure, (s) => {
    s.on('error', () => {});
    onConn(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  atEnd(t, () => new Promise<void>((r) => srv.close(() => r())));
  return { port: (srv.address() as net.AddressInfo).port, lbPorts };
}

/** A connection through the balancer's `port` that echoed a line, left open; `tlsOn`: as a TLS client. */
async function through(t: Ends, port: number, tlsOn = false): Promise<net.Socket> {
  const s = await new Promise<net.Socket>((resolve, reject) => {
    const c: net.Socket = tlsOn ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => resolve(c)) : net.connect({ host: '127.0.0.1', port }, () => resolve(c));
    c.once('error', reject);
  });
  atEnd(t, () => s.destroy()); // before the balancer stops (it would drain the connection)
  s.write('ping\n');
  let got = '';
  await new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got === 'ping\n') resolve();
    });
    s.once('error', reject);
    s.once('close', () => reject(new Error(`closed before the echo (got "${got}")`)));
  });
  return s;
}

/** The balancer's two sockets of the connection `client` made to it (the backend's: the last one `echo` saw). */
function bothSides(lbPort: number, client: net.Socket, echo: { port: number; lbPorts: number[] }): { client: [string, string]; backend: [string, string] } {
  const toBackend = echo.lbPorts.at(-1);
  assert.ok(toBackend !== undefined, 'the backend saw the bytes');
  return { client: [`127.0.0.1:${lbPort}`, `127.0.0.1:${client.localPort}`], backend: [`127.0.0.1:${toBackend}`, `127.0.0.1:${echo.port}`] };
}

/** Both sockets have a keepalive timer started from `idle` seconds (and not from another value: 60 s, 2 h). */
async function assertKeepalive(sides: ReturnType<typeof bothSides>, idle: number, what: string): Promise<void> {
  for (const [side, [local, peer]] of Object.entries(sides)) {
    const left = await keepaliveOf(local, peer);
    assert.ok(left <= idle && left > idle - 10, `${what}: the ${side}'s socket ${local} -> ${peer} has its keepalive timer at ${left} s, expected just under ${idle} s`);
  }
}

for (const relay of ['raw', 'net.Socket'] as const) {
  test(`${relay} relay: tcp_keepalive in [proxy] puts a keepalive timer of that idle time on the client's and the backend's socket; without it, none`, async (t) => {
    if (!requireTool(t, 'ss (iproute2)', SS)) return;
    const env = { LEMONADE_LB_NET_SOCKETS: relay === 'net.Socket' ? '1' : undefined };
    const echo = await recordingEcho(t);

    const on = await startBalancer(t, testConfig([{ address: `127.0.0.1:${echo.port}` }], { proxy: 'tcp_keepalive = "17s"' }), { env });
    assert.equal((await on.waitForLog((l) => l['msg'] === 'lemonade-lb started'))['relay'], relay);
    const c1 = await through(t, on.port);
    await assertKeepalive(bothSides(on.port, c1, echo), 17, relay);

    const off = await startBalancer(t, testConfig([{ address: `127.0.0.1:${echo.port}` }]), { env });
    const c2 = await through(t, off.port);
    for (const [side, [local, peer]] of Object.entries(bothSides(off.port, c2, echo))) {
      assert.equal(await timerOf(local, peer), null, `the default (0s): no timer on the ${side}'s socket ${local} -> ${peer}`);
    }
  });
}

test('a sub-second tcp_keepalive is rounded up to 1 s: the keepalive timer runs within seconds, not after the kernel\'s 2 hours', async (t) => {
  if (!requireTool(t, 'ss (iproute2)', SS)) return;
  const echo = await recordingEcho(t);
  for (const relay of ['raw', 'net.Socket'] as const) {
    const lb = await startBalancer(t, testConfig([{ address: `127.0.0.1:${echo.port}` }], { proxy: 'tcp_keepalive = "300ms"' }), { env: { LEMONADE_LB_NET_SOCKETS: relay === 'net.Socket' ? '1' : undefined } });
    const c = await through(t, lb.port);
    for (const [side, [local, peer]] of Object.entries(bothSides(lb.port, c, echo))) {
      // 1 s idle, then probes 1 s apart (libuv's interval): never more than a second to go
      const left = await keepaliveOf(local, peer);
      assert.ok(left <= 1, `${relay}: the ${side}'s socket has its keepalive timer at ${left} s, expected at most 1 s`);
    }
  }
});

test('TLS: a terminating service keeps its TCP socket to the client alive and a backend_tls service its TCP leg to the backend, each with its own tcp_keepalive; a service without one, none', async (t) => {
  if (!requireTool(t, 'ss (iproute2)', SS) || !requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '2', '-subj', '/CN=ka.test', '-addext', 'subjectAltName=DNS:ka.test'], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const pair = { cert: readFileSync(join(dir, 'c.pem')), key: readFileSync(join(dir, 'k.pem')) };
  const plain = await recordingEcho(t);
  const secure = await recordingEcho(t, pair);
  const [term, origin, none] = [await freePort(), await freePort(), await freePort()];
  await startBalancer(
    t,
    `[admin]
listen_address = "127.0.0.1:0"
[[services]]
name = "term"
listen_address = "127.0.0.1:${term}"
tcp_keepalive = "23s"
[services.tls]
certificates = [{ cert = "${dir}/c.pem", key = "${dir}/k.pem" }]
[[services.backends]]
address = "127.0.0.1:${plain.port}"
[[services]]
name = "origin"
listen_address = "127.0.0.1:${origin}"
tcp_keepalive = "29s"
[services.backend_tls]
enabled = true
verify = false
[[services.backends]]
address = "127.0.0.1:${secure.port}"
[[services]]
name = "none"
listen_address = "127.0.0.1:${none}"
[services.tls]
certificates = [{ cert = "${dir}/c.pem", key = "${dir}/k.pem" }]
[services.backend_tls]
enabled = true
verify = false
[[services.backends]]
address = "127.0.0.1:${secure.port}"
`,
  );
  await assertKeepalive(bothSides(term, await through(t, term, true), plain), 23, 'terminating TLS');
  await assertKeepalive(bothSides(origin, await through(t, origin), secure), 29, 'backend_tls');
  const c = await through(t, none, true);
  for (const [side, [local, peer]] of Object.entries(bothSides(none, c, secure))) {
    assert.equal(await timerOf(local, peer), null, `no tcp_keepalive: no timer on the ${side}'s socket ${local} -> ${peer}`);
  }
});

test('tcp_keepalive beyond the kernel\'s bound is refused at load, naming the key', async () => {
  const dir = tempDir();
  const file = join(dir, 'lb.toml');
  writeFileSync(file, testConfig([{ address: '127.0.0.1:9' }], { proxy: 'tcp_keepalive = "10h"' }));
  const r = await runCli(['lb', '--validate', '--config', file]);
  assert.notEqual(r.code, 0);
  assert.match(r.stdout + r.stderr, /tcp_keepalive[^\n]*at most 32767s/);
});
