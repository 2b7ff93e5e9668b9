// SNI routing (TLS passthrough) from outside, through the real balancer:
// 1. Debian's nginx serving TLS for three names (certificates from a test CA made here with
//    openssl) behind one balancer port, reached by curl --resolve (HTTP/1.1 and HTTP/2 by ALPN)
//    and openssl s_client -servername -alpn: each name reaches its own service, verified against
//    the CA, and ALPN passes through untouched.
// 2. The bytes, on both relays (raw handles and net.Socket): a ClientHello sent one byte at a
//    time, the PROXY header before the ClientHello, a client's end of file right after it, a
//    client that sends nothing (the default route after inspect_timeout), a server-first
//    protocol on a plain service (its banner at once), and no default route (closed, counted as
//    no_route).
// 3. hash_key = "sni" pins a name to one backend; a reload adding a name to a shared address
//    keeps an open connection flowing on the same socket.
// 4. The shared socket with [runtime] workers = 2, and passed by systemd (socket activation).

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, httpRequest, NGINX, requireTool, runNginx, SOCKET_ACTIVATE, socketActivated, startBalancer, startTcpServer, tempDir, waitFor, type TestServer, type Ends } from '../helpers';
import { metric, ports, servicesFile, services, type SvcSpec } from '../services-helpers';
import { clientHello, handshake, records, sniExt, supportedVersions } from '../tls-helpers';
import { OPENSSL, have, makeCa, makeCert } from '../certs';

const CURL = have('curl', ['--version']);

const svc = (name: string, port: number, list: SvcSpec['backends'], lines: string[] = []): SvcSpec => ({ name, port, backends: list, lines });

// -------------------------------------------------------------------------------------------
// 1. Real TLS: nginx behind one port, curl and openssl s_client in front

/** A test CA and a certificate (with its subjectAltName) for each name, made by openssl in `dir`. */
function makeCerts(dir: string, names: readonly string[]): void {
  makeCa(dir);
  names.forEach((name, i) => makeCert(dir, `c${i}`, `/CN=${name}`, `DNS:${name}`));
}

/** nginx with one TLS server (HTTP/1.1 and HTTP/2) per name, each answering "NAME PROTOCOL SNI". */
async function startTlsNginx(t: TestContext, dir: string, names: readonly string[]): Promise<number[]> {
  const list = await ports(names.length);
  const servers = names
    .map(
      (name, i) => `  server {
    listen 127.0.0.1:${list[i]} ssl http2;
    ssl_certificate ${join(dir, `c${i}.pem`)};
    ssl_certificate_key ${join(dir, `c${i}.key`)};
    location / { return 200 "${name} $server_protocol $ssl_server_name\\n"; }
  }`,
    )
    .join('\n');
  await runNginx(t, dir, servers, list);
  return list;
}

/** Run a client to completion (bounded): its exit code and output. */
function runTool(cmd: string, args: string[], input = ''): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
    p.stdin!.end(input);
  });
}

test('three TLS services behind one port: curl and openssl s_client reach each by name, HTTP/2 by ALPN included', async (t) => {
  if (!requireTool(t, 'nginx', NGINX !== null) || !requireTool(t, 'openssl', OPENSSL) || !requireTool(t, 'curl', CURL)) return;
  const dir = tempDir('lemonade-sni-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const names = ['api.example.com', '*.example.org', 'www.example.net'];
  makeCerts(dir, names);
  const [api, org, web] = await startTlsNginx(t, dir, ['api', 'org', 'web']);
  const [port] = await ports(1);
  const lb = await startBalancer(
    t,
    servicesFile({
      services: [
        svc('api', port!, [{ name: 'api-1', address: `127.0.0.1:${api}` }], ['sni = ["api.example.com"]']),
        svc('org', port!, [{ name: 'org-1', address: `127.0.0.1:${org}` }], ['sni = ["*.example.org"]']),
        svc('web', port!, [{ name: 'web-1', address: `127.0.0.1:${web}` }]),
      ],
    }),
  );
  const ca = join(dir, 'ca.pem');
  const curl = (name: string, ...more: string[]): Promise<{ code: number | null; out: string }> =>
    runTool('curl', ['-sS', '--max-time', '10', '--cacert', ca, '--resolve', `${name}:${port}:127.0.0.1`, ...more, `https://${name}:${port}/`]);

  // curl verifies each certificate against the test CA: the name reached the service holding it
  for (const [name, body] of [
    ['api.example.com', 'api HTTP/1.1 api.example.com'],
    ['shop.example.org', 'org HTTP/1.1 shop.example.org'],
    ['www.example.net', 'web HTTP/1.1 www.example.net'],
  ] as const) {
    const r = await curl(name, '--http1.1');
    assert.equal(r.code, 0, r.out);
    assert.equal(r.out.trim(), body);
  }
  // two labels under the wildcard route to it too (the certificate covers one label: not verified)
  const deep = await curl('a.b.example.org', '--http1.1', '-k');
  assert.equal(deep.out.trim(), 'org HTTP/1.1 a.b.example.org');

  // HTTP/2 negotiated by ALPN, end to end
  const h2 = await curl('api.example.com', '--http2', '-w', '%{http_version}\n');
  assert.equal(h2.code, 0, h2.out);
  assert.deepEqual(h2.out.trim().split('\n'), ['api HTTP/2.0 api.example.com', '2']);

  // a name no service lists, and no name at all, take the default route (web)
  const unknown = await runTool('curl', ['-sS', '-k', '--http1.1', '--max-time', '10', '--resolve', `other.example.com:${port}:127.0.0.1`, `https://other.example.com:${port}/`]);
  assert.equal(unknown.out.trim(), 'web HTTP/1.1 other.example.com');
  const noName = await runTool('curl', ['-sS', '-k', '--http1.1', '--max-time', '10', `https://127.0.0.1:${port}/`]);
  assert.equal(noName.out.trim(), 'web HTTP/1.1');

  // openssl s_client: the certificate of the name, verified, and the ALPN protocol the backend chose
  for (const [name, alpn, subject] of [
    ['shop.example.org', 'h2', 'CN = *.example.org'],
    ['api.example.com', 'http/1.1', 'CN = api.example.com'],
  ] as const) {
    const r = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', name, '-alpn', `${alpn},other`, '-CAfile', ca, '-verify_hostname', name, '-verify_return_error'], 'Q\n');
    assert.match(r.out, new RegExp(`subject=${subject.replace(/[.*]/g, '\\$&')}`), r.out);
    assert.match(r.out, new RegExp(`ALPN protocol: ${alpn.replace('/', '\\/')}`), r.out);
    assert.match(r.out, /Verify return code: 0 \(ok\)/, r.out);
  }

  // each service counted its own connections; /services lists the names
  const rows = await services(lb);
  assert.deepEqual(rows.map((r) => [r.name, r.listen_address, r.sni]), [
    ['api', `127.0.0.1:${port}`, ['api.example.com']],
    ['org', `127.0.0.1:${port}`, ['*.example.org']],
    ['web', `127.0.0.1:${port}`, []],
  ]);
  const total = Object.fromEntries(rows.map((r) => [r.name, r.total]));
  assert.deepEqual(total, { api: 3, org: 3, web: 3 });
});

// -------------------------------------------------------------------------------------------
// 2. The bytes, on both relays

/** A backend that keeps every byte each connection sent, and whether it ended. */
interface Recorder extends TestServer {
  /** connections that sent something (health checks send nothing) */
  readonly got: { data: Buffer; ended: boolean }[];
}

async function recorder(t: Ends, reply = ''): Promise<Recorder> {
  const got: { data: Buffer; ended: boolean }[] = [];
  const srv = await startTcpServer(t, (s) => {
    const rec = { data: Buffer.alloc(0), ended: false };
    s.on('data', (d: Buffer) => {
      if (rec.data.length === 0) {
        got.push(rec);
        if (reply) s.write(reply);
      }
      rec.data = Buffer.concat([rec.data, d]);
    });
    s.on('end', () => {
      rec.ended = true;
      s.end();
    });
  });
  return Object.assign(srv, { got });
}

/** A backend that greets with its name at once (a server-first protocol), then echoes. */
function greeter(t: Ends, name: string): Promise<TestServer> {
  return startTcpServer(t, (s) => {
    s.write(`${name}\n`);
    s.pipe(s);
  });
}

/** Connect, run `send`, and collect what comes back until the balancer or backend closes (bounded). */
function exchange(port: number, send: (s: net.Socket) => Promise<void> | void, opts: { untilText?: string; timeoutMs?: number } = {}): Promise<{ text: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    let text = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text, closed, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 10_000);
    s.on('connect', () => void send(s));
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (opts.untilText !== undefined && text.includes(opts.untilText)) finish(false);
    });
    s.on('error', () => finish(true));
    s.on('close', () => finish(true));
  });
}

async function oneByteAtATime(s: net.Socket, bytes: Buffer): Promise<void> {
  for (const b of bytes) {
    if (s.destroyed) return;
    s.write(Buffer.from([b]));
    await new Promise((r) => setTimeout(r, 1));
  }
}

for (const relay of ['raw', 'net.Socket'] as const) {
  test(`the bytes on the ${relay} relay: one byte at a time, PROXY header first, end of file, silence, a banner at once, no route`, async (t) => {
    const [api, web, pp, plain] = await Promise.all([recorder(t, 'api\n'), recorder(t, 'web\n'), recorder(t, 'pp\n'), greeter(t, 'banner')]);
    const [a, b, c] = await ports(3);
    const lb = await startBalancer(
      t,
      servicesFile({
        proxy: ['inspect_timeout = "1500ms"'],
        // one round of health checks at start: afterwards every connection a backend accepts is a proxied one
        health: ['interval = "1h"', 'timeout = "300ms"'],
        // on standard output, among the log lines: a no_route refusal has its line too
        tables: ['[access_log]', 'enabled = true'],
        services: [
          svc('api', a!, [{ name: 'api-1', address: api.address }], ['sni = ["api.example.com"]']),
          svc('pp', a!, [{ name: 'pp-1', address: pp.address }], ['sni = ["pp.example.com"]', 'proxy_protocol = "v1"']),
          svc('web', a!, [{ name: 'web-1', address: web.address }]),
          // a plain service: relays at once, whatever inspect_timeout says
          svc('plain', b!, [{ name: 'plain-1', address: plain.address }], ['inspect_timeout = "5s"']),
          // names only: no default route
          svc('strict', c!, [{ name: 'strict-1', address: api.address }], ['sni = ["strict.example.com"]']),
        ],
      }),
      { env: { LEMONADE_LB_NET_SOCKETS: relay === 'net.Socket' ? '1' : undefined } },
    );
    const started = await lb.waitForLog((l) => l['msg'] === 'lemonade-lb started');
    assert.equal(started['relay'], relay);

    // a ClientHello in 1-byte TCP writes is read whole and routed by its name; the backend gets it byte for byte
    const hello = records(handshake([supportedVersions, sniExt('API.example.com')]), 60); // several records too
    const r1 = await exchange(a!, (s) => oneByteAtATime(s, hello), { untilText: 'api\n' });
    assert.equal(r1.text, 'api\n');
    assert.equal(api.got.length, 1);
    assert.ok(api.got[0]!.data.equals(hello), 'the backend received exactly the bytes the client sent');

    // PROXY v1 comes before the ClientHello, then the ClientHello as sent, then what follows
    const ppHello = clientHello('pp.example.com');
    const r2 = await exchange(a!, (s) => void s.write(Buffer.concat([ppHello, Buffer.from('after')])), { untilText: 'pp\n' });
    assert.equal(r2.text, 'pp\n');
    // (the health checks of this service send a PROXY header alone: the proxied connection is the one with more)
    const proxied = await waitFor(() => pp.got.find((g) => g.data.includes('after')), 5000, 'the bytes after the ClientHello');
    const got = proxied.data;
    const header = got.subarray(0, got.indexOf('\r\n') + 2).toString('latin1');
    assert.match(header, new RegExp(`^PROXY TCP4 127\\.0\\.0\\.1 127\\.0\\.0\\.1 \\d+ ${a}\\r\\n$`));
    assert.ok(got.subarray(header.length).equals(Buffer.concat([ppHello, Buffer.from('after')])));

    // a client that sends its ClientHello and its end of file at once: both reach the backend
    const r3 = await exchange(a!, (s) => void s.end(clientHello('api.example.com')));
    assert.equal(r3.text, 'api\n');
    await waitFor(() => api.got[1]?.ended, 5000, 'the end of file at the backend');
    assert.ok(api.got[1]!.data.equals(clientHello('api.example.com')));

    // not TLS: the default route, at once, with the bytes
    const r4 = await exchange(a!, (s) => void s.write('GET / HTTP/1.0\r\n\r\n'), { untilText: 'web\n' });
    assert.equal(r4.text, 'web\n');
    assert.equal(web.got[0]!.data.toString(), 'GET / HTTP/1.0\r\n\r\n');
    assert.ok(r4.ms < 1500, `not TLS is routed without waiting for inspect_timeout (${r4.ms} ms)`);

    // a client that sends nothing is routed to the default once inspect_timeout passes; then its bytes flow
    let connectedAfter = 0;
    const r5 = await exchange(
      a!,
      async (s) => {
        const t0 = Date.now();
        const n0 = web.accepted;
        await waitFor(() => web.accepted > n0, 10_000, 'the default route connecting its backend');
        connectedAfter = Date.now() - t0;
        s.write('late');
      },
      { untilText: 'web\n' },
    );
    assert.equal(r5.text, 'web\n');
    assert.equal(web.got.at(-1)!.data.toString(), 'late');
    assert.ok(connectedAfter >= 1300, `routed after ${connectedAfter} ms, before the 1500 ms inspect_timeout`);

    // a server-first protocol on a plain service gets its banner at once (5 s inspect_timeout unused)
    const r6 = await exchange(b!, () => {}, { untilText: 'banner\n' });
    assert.equal(r6.text, 'banner\n');
    assert.ok(r6.ms < 2000, `banner after ${r6.ms} ms`);

    // no default route: a name nothing matches, or not TLS, is closed and counted as no_route
    const before = metric((await lb.admin('/metrics')).body, 'lemonade_connections_rejected_total', ['reason="no_route"']);
    const r7 = await exchange(c!, (s) => void s.write(clientHello('other.example.com')));
    const r8 = await exchange(c!, (s) => void s.write('hello'));
    assert.deepEqual([r7.closed, r7.text, r8.closed, r8.text], [true, '', true, '']);
    const after = metric((await lb.admin('/metrics')).body, 'lemonade_connections_rejected_total', ['service=""', 'reason="no_route"']);
    assert.equal(after - before, 2);
    assert.equal(before, 0);
    const noRoute = await waitFor(() => {
      const l = lb.logs.filter((x) => x['termination'] === 'no_route');
      return l.length === 2 ? l : undefined;
    }, 5000, 'two access log lines for the no_route refusals');
    for (const l of noRoute) assert.deepEqual([l['service'], l['backend'], l['connect_ms']], ['', null, null]);
    const terminations = metric((await lb.admin('/metrics')).body, 'lemonade_connection_terminations_total', ['service=""', 'termination="no_route"']);
    assert.equal(terminations, 2);
  });
}

test('a client that sends nothing takes the default route once inspect_timeout passes', async (t) => {
  const web = await greeter(t, 'web');
  const api = await greeter(t, 'api');
  const [a] = await ports(1);
  await startBalancer(
    t,
    servicesFile({
      proxy: ['inspect_timeout = "500ms"'],
      services: [svc('api', a!, [{ name: 'api-1', address: api.address }], ['sni = ["api.example.com"]']), svc('web', a!, [{ name: 'web-1', address: web.address }])],
    }),
  );
  // the default's backend greets once the balancer connects it: after the timeout, not before
  const r = await exchange(a!, () => {}, { untilText: 'web\n' });
  assert.equal(r.text, 'web\n');
  assert.ok(r.ms >= 450, `routed after ${r.ms} ms, before inspect_timeout`);
  assert.ok(r.ms < 5000, `routed after ${r.ms} ms`);
});

// -------------------------------------------------------------------------------------------
// 3. hash_key = "sni", and a reload on a shared address

/** The greeting of the backend a connection with this ClientHello reaches. */
function reachedWith(port: number, name: string): Promise<string> {
  return exchange(port, (s) => void s.write(clientHello(name)), { untilText: '\n' }).then((r) => r.text.split('\n')[0]!);
}

test('consistent_hash with hash_key = "sni" sends each name to one backend', async (t) => {
  const servers = await Promise.all(['b1', 'b2', 'b3'].map((n) => greeter(t, n)));
  const [p] = await ports(1);
  await startBalancer(
    t,
    servicesFile({
      services: [svc('tls', p!, servers.map((s, i) => ({ name: `b${i + 1}`, address: s.address })), ['algorithm = "consistent_hash"', 'hash_key = "sni"'])],
    }),
  );
  const names = Array.from({ length: 12 }, (_, i) => `tenant${i}.example.com`);
  const first = new Map<string, string>();
  for (const n of names) first.set(n, await reachedWith(p!, n));
  for (const n of names) for (let k = 0; k < 3; k++) assert.equal(await reachedWith(p!, n), first.get(n), `${n} moved`);
  assert.ok(new Set(first.values()).size >= 2, `12 names all on one backend: ${JSON.stringify([...first])}`);
  // the name is compared lower-cased, as the reader gives it
  assert.equal(await reachedWith(p!, 'TENANT3.example.com'), first.get('tenant3.example.com'));
});

test('a reload adding a name to a shared address keeps its socket and an open connection flowing', async (t) => {
  const [api, web, neu] = await Promise.all([greeter(t, 'api'), greeter(t, 'web'), greeter(t, 'new')]);
  const [p] = await ports(1);
  const file = (withNew: boolean): string =>
    servicesFile({
      services: [
        svc('api', p!, [{ name: 'api-1', address: api.address }], ['sni = ["api.example.com"]']),
        svc('web', p!, [{ name: 'web-1', address: web.address }]),
        ...(withNew ? [svc('new', p!, [{ name: 'new-1', address: neu.address }], ['sni = ["new.example.com"]'])] : []),
      ],
    });
  const lb = await startBalancer(t, file(false));
  assert.equal(await reachedWith(p!, 'new.example.com'), 'web');

  // a connection to api, open across the reload: greeted, then echoing
  const conn = net.connect({ host: '127.0.0.1', port: p! });
  t.after(() => conn.destroy());
  let seen = '';
  conn.on('data', (d: Buffer) => (seen += d.toString('latin1')));
  conn.on('error', () => {});
  conn.write(clientHello('api.example.com'));
  await waitFor(() => seen.startsWith('api\n'), 5000, 'the greeting');
  conn.write('ping1');
  await waitFor(() => seen.endsWith('ping1'), 5000, 'the first echo');

  lb.writeConfig(file(true));
  await waitFor(async () => (await adminJson<{ config: { generation: number } }>(lb, '/status')).config.generation >= 2, 10_000, 'the reload');
  const line = await lb.waitForLog((l) => l['msg'] === 'config reloaded: +service new', 2000, 'the reload line');
  assert.ok(line);
  assert.equal(await reachedWith(p!, 'new.example.com'), 'new');
  assert.equal(await reachedWith(p!, 'api.example.com'), 'api');
  // the open connection still flows
  conn.write('ping2');
  await waitFor(() => seen.endsWith('ping2'), 5000, 'the echo after the reload');
  assert.equal(conn.destroyed, false);
  // the socket was kept: no bind was logged as failing and the address is the same one
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.listen_address]), [
    ['api', `127.0.0.1:${p}`],
    ['web', `127.0.0.1:${p}`],
    ['new', `127.0.0.1:${p}`],
  ]);
});

// -------------------------------------------------------------------------------------------
// 4. Worker processes and socket activation: one socket per address, whoever holds it

test('with [runtime] workers = 2, the shared socket routes by name in every worker, and a reload adds a name', async (t) => {
  const [api, web, neu] = await Promise.all([greeter(t, 'api'), greeter(t, 'web'), greeter(t, 'new')]);
  const [p] = await ports(1);
  const file = (withNew: boolean): string =>
    servicesFile({
      runtime: ['workers = 2', 'drain_timeout_millis = 5000', 'config_watch_interval_millis = 60000'],
      services: [
        svc('api', p!, [{ name: 'api-1', address: api.address }], ['sni = ["api.example.com"]']),
        svc('web', p!, [{ name: 'web-1', address: web.address }]),
        ...(withNew ? [svc('new', p!, [{ name: 'new-1', address: neu.address }], ['sni = ["*.new.example"]'])] : []),
      ],
    });
  const lb = await startBalancer(t, file(false));
  // enough connections that both workers take some (the kernel spreads them)
  for (let i = 0; i < 10; i++) {
    assert.equal(await reachedWith(p!, 'api.example.com'), 'api');
    assert.equal(await reachedWith(p!, 'x.new.example'), 'web');
  }
  lb.writeConfig(file(true));
  await waitFor(async () => (await adminJson<{ config: { generation: number } }>(lb, '/status')).config.generation >= 2, 10_000, 'the reload');
  // each worker applies the snapshot when its message arrives: wait until every connection routes anew
  await waitFor(async () => {
    const got = await Promise.all(Array.from({ length: 6 }, () => reachedWith(p!, 'x.new.example')));
    return got.every((g) => g === 'new');
  }, 10_000, 'every worker routing the new name');
  assert.deepEqual((await services(lb)).map((r) => [r.name, r.listen_address]), [
    ['api', `127.0.0.1:${p}`],
    ['web', `127.0.0.1:${p}`],
    ['new', `127.0.0.1:${p}`],
  ]);
});

test('socket activation: the passed socket serves every service of its address; a reload may drop one of them, not the last', async (t) => {
  if (!requireTool(t, 'systemd-socket-activate (package systemd)', SOCKET_ACTIVATE !== '')) return;
  const [api, web, plain] = await Promise.all([greeter(t, 'api'), greeter(t, 'web'), greeter(t, 'plain')]);
  const [shared, other, adminPort] = await ports(3);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const conf = join(dir, 'config.toml');
  const file = (list: SvcSpec[]): string => servicesFile({ services: list }).replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`);
  const apiSvc = svc('api', shared!, [{ name: 'api-1', address: api.address }], ['sni = ["api.example.com"]']);
  const webSvc = svc('web', shared!, [{ name: 'web-1', address: web.address }]);
  const plainSvc = svc('plain', other!, [{ name: 'plain-1', address: plain.address }]);
  writeFileSync(conf, file([apiSvc, webSvc, plainSvc]));
  const { proc, stderr, exited } = await socketActivated(t, [shared!, other!], conf);
  // the first connection starts the balancer; then both services answer through the one passed socket
  assert.equal(await reachedWith(shared!, 'api.example.com'), 'api');
  assert.equal(await reachedWith(shared!, 'www.example.com'), 'web');
  assert.equal(await reachedWith(other!, 'anything'), 'plain');
  await waitFor(async () => (await httpRequest(adminPort!, '/status').catch(() => null))?.status === 200, 10_000, 'the admin API');

  // dropping one of the two services of the passed address: applied, the socket serves on
  writeFileSync(conf, file([webSvc, plainSvc]));
  const dropped = await httpRequest(adminPort!, '/reload', { method: 'POST' });
  assert.equal(dropped.status, 200, dropped.body);
  assert.equal(await reachedWith(shared!, 'api.example.com'), 'web');
  // dropping the last one would close the .socket unit's socket: refused whole
  writeFileSync(conf, file([plainSvc]));
  const last = await httpRequest(adminPort!, '/reload', { method: 'POST' });
  assert.equal(last.status, 422, last.body);
  assert.match(last.body, /serves the socket systemd passed .*the \.socket unit owns that address/);
  assert.equal(await reachedWith(shared!, 'api.example.com'), 'web');
  proc.kill('SIGTERM');
  assert.equal(await exited, 0, stderr());
});
