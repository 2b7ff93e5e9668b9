// Health checks with [proxy] proxy_protocol on: every check connection starts with a PROXY header,
// as the proxied ones do (HAProxy's check-send-proxy). v2 sends the LOCAL command; v1 the check
// connection's own addresses, the balancer as the source (see checkProxyHeader).
//
// First the checker alone against a small server that records the first bytes of each check;
// then Debian's nginx listening with `proxy_protocol`, started here with its own prefix in a temp
// dir, behind the real balancer: the backend stays healthy, a proxied request reaches nginx with
// the client's address, and nginx's error log shows only clean connections.

import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HealthEvent } from '../../src/health/checker';
import { runChecker } from '../checker-harness';
import { adminJson, freePort, nginxConf, requireTool, startBalancer, stopProcess, tempDir, testConfig, waitFor, type Balancer } from '../helpers';

const LOCAL_V2 = Buffer.from('0d0a0d0a000d0a515549540a' + '20000000', 'hex');

type Version = 'v1' | 'v2';
type Kind = 'tcp' | 'http';

// -------------------------------------------------------------------------------------------
// The checker alone

interface Seen {
  /** the bytes up to the end of the PROXY header (or all bytes, if none comes) */
  readonly header: Buffer;
  /** what followed the header */
  readonly rest: Buffer;
  /** the server's view of the check connection */
  readonly peer: { address: string; port: number; localAddress: string; localPort: number };
  /** the check closed its side cleanly (FIN), not with a reset */
  readonly ended: boolean;
  readonly error: string | null;
}

/** Length of the PROXY header at the start of `b`, or 0 while it is incomplete or absent. */
function headerLength(b: Buffer): number {
  if (b.length >= 16 && b.subarray(0, 12).equals(LOCAL_V2.subarray(0, 12))) return b.length >= 16 + b.readUInt16BE(14) ? 16 + b.readUInt16BE(14) : 0;
  const crlf = b.indexOf('\r\n');
  return b.subarray(0, 6).toString('latin1') === 'PROXY ' && crlf > 0 ? crlf + 2 : 0;
}

/**
 * A server on `host` that records each check connection; an HTTP request after the header is
 * answered 200. Resolves each connection's record once it closed.
 */
async function recorder(t: TestContext, host: string): Promise<{ port: number; next: () => Promise<Seen> }> {
  const seen: Seen[] = [];
  const waiting: ((s: Seen) => void)[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    let buf = Buffer.alloc(0);
    let ended = false;
    let error: string | null = null;
    let answered = false;
    const peer = { address: s.remoteAddress ?? '', port: s.remotePort ?? 0, localAddress: s.localAddress ?? '', localPort: s.localPort ?? 0 };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const n = headerLength(buf);
      if (!answered && buf.subarray(n).includes('\r\n\r\n')) {
        answered = true;
        s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
      }
    });
    s.on('end', () => {
      ended = true;
      s.end();
    });
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => {
      sockets.delete(s);
      const n = headerLength(buf);
      const rec: Seen = { header: n > 0 ? buf.subarray(0, n) : buf, rest: n > 0 ? buf.subarray(n) : Buffer.alloc(0), peer, ended, error };
      const w = waiting.shift();
      if (w) w(rec);
      else seen.push(rec);
    });
  });
  await new Promise<void>((r) => srv.listen(0, host, r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return {
    port: (srv.address() as net.AddressInfo).port,
    next: () => {
      const s = seen.shift();
      return s ? Promise.resolve(s) : new Promise((r) => waiting.push(r));
    },
  };
}

/** A checker probing one backend at `address` with the given settings; stopped when the test ends. */
function checker(t: TestContext, address: string, version: Version | 'off', kind: Kind): { results: HealthEvent[] } {
  const text = testConfig([{ address }], { proxy: `proxy_protocol = "${version}"`, health: `interval = "1h"\ntimeout = "2s"\nkind = "${kind}"` }).replace(/"127\.0\.0\.1:0"/g, '"127.0.0.1:1"');
  return { results: runChecker(t, text) };
}

/** The v1 line a check connection carries: its own end as the source, the backend as the destination. */
const v1Line = (p: Seen['peer'], fam: 'TCP4' | 'TCP6'): string => `PROXY ${fam} ${p.address} ${p.localAddress} ${p.port} ${p.localPort}\r\n`;

const hasIpv6Loopback = (): Promise<boolean> =>
  new Promise((r) => {
    const s = net.createServer();
    s.once('error', () => r(false));
    s.listen(0, '::1', () => s.close(() => r(true)));
  });

describe('a check connection starts with the PROXY header', () => {
  for (const kind of ['tcp', 'http'] as const) {
    test(`${kind} check, v2: exactly the LOCAL command`, async (t) => {
      const srv = await recorder(t, '127.0.0.1');
      const { results } = checker(t, `127.0.0.1:${srv.port}`, 'v2', kind);
      const seen = await srv.next();
      assert.equal(seen.header.toString('hex'), LOCAL_V2.toString('hex'));
      if (kind === 'http') assert.match(seen.rest.toString('latin1'), /^GET \/health HTTP\/1\.1\r\n/);
      else assert.equal(seen.rest.length, 0, 'nothing after the header');
      assert.ok(seen.ended, 'the check closes its side cleanly');
      await waitFor(() => results.length > 0, 5000, 'the check result');
      assert.deepEqual(results.map((r) => [r.ok, r.error]), [[true, null]]);
    });

    test(`${kind} check, v1: the check connection's own addresses`, async (t) => {
      const srv = await recorder(t, '127.0.0.1');
      const { results } = checker(t, `127.0.0.1:${srv.port}`, 'v1', kind);
      const seen = await srv.next();
      assert.equal(seen.header.toString('latin1'), v1Line(seen.peer, 'TCP4'));
      if (kind === 'http') assert.match(seen.rest.toString('latin1'), /^GET \/health HTTP\/1\.1\r\n/);
      else assert.equal(seen.rest.length, 0, 'nothing after the header');
      assert.ok(seen.ended, 'the check closes its side cleanly');
      await waitFor(() => results.length > 0, 5000, 'the check result');
      assert.deepEqual(results.map((r) => [r.ok, r.error]), [[true, null]]);
    });
  }

  test('tcp check, v1 over IPv6: TCP6 with RFC 5952 addresses (::1)', async (t) => {
    if (!(await hasIpv6Loopback())) return t.skip('no IPv6 loopback here');
    const srv = await recorder(t, '::1');
    checker(t, `[::1]:${srv.port}`, 'v1', 'tcp');
    const seen = await srv.next();
    assert.equal(seen.peer.address, '::1');
    assert.equal(seen.header.toString('latin1'), v1Line(seen.peer, 'TCP6'));
  });

  test('a refused connect still fails each kind of check, named', async (t) => {
    const port = await freePort();
    for (const kind of ['tcp', 'http'] as const) {
      const { results } = checker(t, `127.0.0.1:${port}`, 'v1', kind);
      await waitFor(() => results.length > 0, 5000, `the ${kind} check result`);
      assert.deepEqual(results.map((r) => [r.ok, r.error]), [[false, 'ECONNREFUSED']], kind);
    }
  });

  test('with proxy_protocol off the checks send nothing of their own', async (t) => {
    const srv = await recorder(t, '127.0.0.1');
    checker(t, `127.0.0.1:${srv.port}`, 'off', 'tcp');
    const seen = await srv.next();
    assert.equal(seen.header.length, 0);
  });
});

// -------------------------------------------------------------------------------------------
// Debian's nginx with `listen … proxy_protocol`

/** nginx on PATH (or where Debian puts it, off a non-root PATH), or null. */
function findNginx(): string | null {
  for (const cmd of ['nginx', '/usr/sbin/nginx']) {
    const r = spawnSync(cmd, ['-v'], { stdio: 'ignore' });
    if (r.error === undefined && r.status === 0) return cmd;
  }
  return null;
}

interface Nginx {
  readonly port: number;
  /** nginx's error log so far */
  errorLog(): string;
  /** nginx's access log so far: `$proxy_protocol_addr $remote_addr $status "$http_user_agent"` per request */
  accessLog(): string;
}

/** A request with a PROXY header, as the balancer would send it: answers once nginx is up. */
function proxiedRequest(port: number, path: string): Promise<string> {
  return new Promise((res, rej) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let out = '';
    s.on('connect', () => s.end(`PROXY TCP4 127.0.0.1 127.0.0.1 1 ${port}\r\nGET ${path} HTTP/1.0\r\n\r\n`));
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', rej);
    s.on('close', () => res(out));
  });
}

async function startNginx(t: TestContext, cmd: string): Promise<Nginx> {
  const dir = tempDir('lemonade-nginx-');
  for (const d of ['logs', 'tmp']) mkdirSync(join(dir, d));
  const port = await freePort();
  const errorLog = join(dir, 'logs', 'error.log');
  const accessLog = join(dir, 'logs', 'access.log');
  // info: nginx logs each connection that closes before a complete PROXY header at this level
  writeFileSync(
    join(dir, 'nginx.conf'),
    nginxConf(
      dir,
      errorLog,
      'info',
      `  log_format pp '$proxy_protocol_addr $remote_addr $status "$http_user_agent"';
  access_log ${accessLog} pp;
  server {
    listen 127.0.0.1:${port} proxy_protocol;
    location = /health { return 200 "ok"; }
    location = /client { return 200 "$proxy_protocol_addr"; }
  }`,
    ),
  );
  const proc: ChildProcess = spawn(cmd, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.after(async () => {
    await stopProcess(proc);
    rmSync(dir, { recursive: true, force: true });
  });
  const read = (f: string): string => (existsSync(f) ? readFileSync(f, 'utf8') : '');
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited (${proc.exitCode}): ${stderr}${read(errorLog)}`);
      return (await proxiedRequest(port, '/health')).startsWith('HTTP/1.1 200');
    },
    10_000,
    'nginx to answer',
  );
  return { port, errorLog: () => read(errorLog), accessLog: () => read(accessLog) };
}

type Row = { name: string; state: string; last_check: { at: string; ok: boolean; error: string | null } | null };

/**
 * Wait until the backend has passed `n` checks in a row after the first one seen (so a few
 * intervals); fails at once on a failed check, naming its error.
 */
async function passesChecks(lb: Balancer, name: string, n: number): Promise<Row> {
  const passed = new Set<string>();
  let failed: Row | null = null;
  const row = await waitFor(
    async () => {
      const r = (await adminJson<Row[]>(lb, '/backends')).find((b) => b.name === name);
      if (!r?.last_check) return null;
      if (!r.last_check.ok) return (failed = r);
      passed.add(r.last_check.at);
      return passed.size >= n ? r : null;
    },
    15_000,
    `${n} passing checks of ${name}`,
  );
  assert.equal(failed, null, `a check failed: ${JSON.stringify(failed)}`);
  return row;
}

/** GET through the balancer from 127.0.0.2, so the client's address differs from the balancer's. */
function getFrom(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = http.get({ host: '127.0.0.1', port, path, localAddress: '127.0.0.2', agent: false }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => (body += d));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', rej);
  });
}

describe("Debian's nginx listening with proxy_protocol", () => {
  const cmd = findNginx();
  for (const version of ['v1', 'v2'] as const) {
    for (const kind of ['http', 'tcp'] as const) {
      test(`${version}, ${kind} check: healthy, the client's address reaches nginx, a clean error log`, async (t) => {
        if (!requireTool(t, 'nginx', cmd !== null)) return;
        const ngx = await startNginx(t, cmd!);
        const lb = await startBalancer(
          t,
          testConfig([{ address: `127.0.0.1:${ngx.port}`, name: 'nginx' }], {
            proxy: `proxy_protocol = "${version}"`,
            health: `interval = "200ms"\ntimeout = "1s"\nkind = "${kind}"\npath = "/health"`,
          }),
        );

        const row = await passesChecks(lb, 'nginx', 4);
        assert.equal(row.state, 'healthy');

        const r = await getFrom(lb.port, '/client');
        assert.deepEqual(r, { status: 200, body: '127.0.0.2' });

        await lb.stop();
        const log = ngx.errorLog();
        assert.doesNotMatch(log, /broken header/, log);
        // a connection closed before its header is complete (a bare connect, as a tcp check without the header)
        assert.doesNotMatch(log, /while reading PROXY protocol/, log);
        assert.doesNotMatch(log, /\[(warn|error|crit|alert|emerg)\]/, log);
        if (kind === 'http') {
          // nginx saw the checks' header: v1 names the balancer's own address, LOCAL none
          const checks = ngx.accessLog().split('\n').filter((l) => l.includes('lemonade-lb health check'));
          assert.ok(checks.length >= 4, ngx.accessLog());
          for (const l of checks) assert.equal(l, `${version === 'v1' ? '127.0.0.1' : '-'} 127.0.0.1 200 "lemonade-lb health check"`);
        }
      });
    }
  }
});
