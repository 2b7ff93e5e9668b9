// Inbound PROXY protocol (accept_proxy): HAProxy in front (send-proxy-v2, send-proxy), nginx
// behind (listen … proxy_protocol, answering with $proxy_protocol_addr) with the balancer's
// proxy_protocol = "v2" onward. The client is curl (or a socket) bound to 127.0.0.7 or 127.0.0.8,
// so the address in HAProxy's header differs from the TCP peer the balancer sees (HAProxy, on
// 127.0.0.1): what nginx answers, the access log's client, allow/deny and client_max_connections
// show which one the balancer took. Then what is refused (rejected_proxy_header, counted): an
// untrusted peer, a client without a header, garbage, a truncated v2 header, a v1 line without
// CRLF in 107 bytes, a v2 length over the bound, a client that sends nothing (cut at
// inspect_timeout); HAProxy's health checks (a v2 LOCAL command) pass; a TLS-terminating service
// on an SNI address reads the header, then the ClientHello.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { freePort, NGINX, requireTool, runCli, runHaproxy, runNginx, startBalancer, tempDir, waitFor, type Balancer } from '../helpers';
import { metric, ports, servicesFile, type SvcSpec } from '../services-helpers';

const have = (cmd: string, args: string[]): boolean => {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
};
const HAPROXY = have('haproxy', ['-v']);
const CURL = have('curl', ['--version']);
const OPENSSL = have('openssl', ['version']);

const ready = (t: TestContext): boolean =>
  requireTool(t, 'nginx (package nginx-light)', NGINX !== null) && requireTool(t, 'haproxy', HAPROXY) && requireTool(t, 'curl', CURL) && requireTool(t, 'openssl', OPENSSL);

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** curl from a loopback source address: the body, or "" when the connection was closed without an answer */
async function curlFrom(source: string, url: string, more: string[] = []): Promise<string> {
  const r = await run('curl', ['-sS', '--max-time', '10', '--interface', source, ...more, url]);
  return r.code === 0 ? r.out : '';
}

/** An nginx whose http server reads a PROXY header and answers with the addresses in it. */
async function startNginx(t: TestContext, dir: string): Promise<number> {
  return (await startNginxes(t, dir, ['']))[0]!;
}

/** One nginx, an http server per name (its answer starts with the name), each reading a PROXY header. */
async function startNginxes(t: TestContext, dir: string, names: string[]): Promise<number[]> {
  const list: number[] = [];
  for (let i = 0; i < names.length; i++) list.push(await freePort());
  const servers = names
    .map(
      (name, i) => `  server {
    listen 127.0.0.1:${list[i]} proxy_protocol;
    location / { return 200 "${name}from=$proxy_protocol_addr to=$proxy_protocol_server_addr\\n"; }
  }`,
    )
    .join('\n');
  await runNginx(t, dir, servers, list);
  return list;
}

/** HAProxy in tcp mode: each frontend port to a balancer port, with this server line's options. */
async function startHaproxy(t: TestContext, dir: string, fronts: { port: number; to: number; server: string; backend?: string }[]): Promise<{ out: () => string }> {
  const proxies = fronts
    .map(
      (f, i) => `frontend f${i}
  bind 127.0.0.1:${f.port}
  default_backend b${i}
backend b${i}
${f.backend ?? ''}
  server lb${i} 127.0.0.1:${f.to} ${f.server}
`,
    )
    .join('');
  return runHaproxy(t, dir, proxies, fronts.map((f) => f.port), '  retries 0\n');
}

interface LogLine {
  client: string;
  service: string;
  termination: string;
  duration_ms: number;
}

function accessLog(dir: string): LogLine[] {
  const path = join(dir, 'access.log');
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as LogLine);
}

const svc = (name: string, port: number, backend: number, lines: string[]): SvcSpec => ({ name, port, lines, backends: [{ name: `${name}-nginx`, address: `127.0.0.1:${backend}` }] });

async function balancer(t: TestContext, dir: string, services: SvcSpec[]): Promise<Balancer> {
  return startBalancer(t, servicesFile({ services, tables: ['[access_log]', 'enabled = true', `path = "${join(dir, 'access.log')}"`, 'format = "json"'] }));
}

async function metrics(lb: Balancer): Promise<string> {
  return (await lb.admin('/metrics')).body;
}

/** A raw connection to `port` writing `bytes`: how long until the balancer closed it, and what came back. */
function rawClient(port: number, bytes: Buffer, source = '127.0.0.1'): Promise<{ closedMs: number; data: string }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let data = '';
    const s = net.connect({ host: '127.0.0.1', port, localAddress: source });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`still open after 10 s (wrote ${bytes.toString('hex')})`));
    }, 10_000);
    s.on('connect', () => {
      if (bytes.length > 0) s.write(bytes);
    });
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ closedMs: Date.now() - started, data });
    });
  });
}

test('HAProxy send-proxy-v2 and send-proxy in front: nginx behind sees the client HAProxy saw, and so does the access log; HAProxy\'s LOCAL health checks pass', async (t) => {
  if (!ready(t)) return;
  const dir = tempDir('lemonade-accept-proxy-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const nginx = await startNginx(t, dir);
  const [v2, v1, hap2, hap1] = await ports(4);
  const hap = await startHaproxy(t, dir, [
    // HTTP checks through the balancer to nginx, each opening with a v2 LOCAL command
    { port: hap2!, to: v2!, server: 'send-proxy-v2 check check-send-proxy inter 300 fall 1 rise 1', backend: '  option httpchk GET /\n  option log-health-checks' },
    { port: hap1!, to: v1!, server: 'send-proxy' },
  ]);
  const lb = await balancer(t, dir, [
    svc('v2', v2!, nginx, ['accept_proxy = "v2"', 'accept_proxy_from = ["127.0.0.1/32"]', 'proxy_protocol = "v2"']),
    svc('v1', v1!, nginx, ['accept_proxy = "any"', 'accept_proxy_from = ["127.0.0.0/8"]', 'proxy_protocol = "v2"']),
  ]);

  // HAProxy's checks (LOCAL, then GET /) go through the balancer to nginx: they failed until it started, then pass
  await waitFor(() => /Health check for server b0\/lb0 succeeded/.test(hap.out()), 10_000, `haproxy's check to pass: ${hap.out()}`);
  assert.equal(await curlFrom('127.0.0.7', `http://127.0.0.1:${hap2}/`), `from=127.0.0.7 to=127.0.0.1\n`, 'v2: the client address HAProxy saw reached nginx');
  assert.equal(await curlFrom('127.0.0.8', `http://127.0.0.1:${hap1}/`), `from=127.0.0.8 to=127.0.0.1\n`, 'v1 (accept_proxy = "any"): the same');

  const lines = await waitFor(() => {
    const l = accessLog(dir).filter((x) => x.client.startsWith('127.0.0.7:') || x.client.startsWith('127.0.0.8:'));
    return l.length >= 2 ? l : null;
  }, 10_000, 'the access log lines of both requests');
  assert.deepEqual(lines.map((l) => [l.service, l.client.split(':')[0], l.termination]).sort(), [['v1', '127.0.0.8', 'client_closed'], ['v2', '127.0.0.7', 'client_closed']]);

  // the checks' connections are the balancer's own (HAProxy's 127.0.0.1), not refused
  const checks = await waitFor(() => {
    const l = accessLog(dir).filter((x) => x.service === 'v2' && x.client.startsWith('127.0.0.1:'));
    return l.length > 0 ? l : null;
  }, 10_000, 'a check connection in the access log');
  assert.ok(checks.every((l) => l.termination !== 'rejected_proxy_header'), JSON.stringify(checks));
  assert.equal(metric(await metrics(lb), 'lemonade_connections_rejected_total', ['reason="proxy_header"']), 0);
});

test('allow/deny and client_max_connections act on the header\'s address, not on HAProxy\'s', async (t) => {
  if (!ready(t)) return;
  const dir = tempDir('lemonade-accept-proxy-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const nginx = await startNginx(t, dir);
  const [acl, hap] = await ports(2);
  // HAProxy first: its start's probes do not reach the balancer
  await startHaproxy(t, dir, [{ port: hap!, to: acl!, server: 'send-proxy-v2' }]);
  const lb = await balancer(t, dir, [svc('acl', acl!, nginx, ['accept_proxy = "v2"', 'accept_proxy_from = ["127.0.0.1/32"]', 'proxy_protocol = "v2"', 'deny = ["127.0.0.7/32"]', 'client_max_connections = 1'])]);

  // the TCP peer is 127.0.0.1 either way: only the header says 127.0.0.7
  assert.equal(await curlFrom('127.0.0.7', `http://127.0.0.1:${hap}/`), '', 'denied by the header\'s address');
  assert.equal(await curlFrom('127.0.0.8', `http://127.0.0.1:${hap}/`), 'from=127.0.0.8 to=127.0.0.1\n');
  await waitFor(() => accessLog(dir).some((l) => l.termination === 'rejected_acl' && l.client.startsWith('127.0.0.7:')), 10_000, 'rejected_acl for 127.0.0.7');

  // one connection held from 127.0.0.8 (nginx keeps it alive): a second from the same client is refused, one from 127.0.0.9 is not
  const held = net.connect({ host: '127.0.0.1', port: hap!, localAddress: '127.0.0.8' });
  t.after(() => held.destroy());
  let answer = '';
  held.on('data', (d: Buffer) => (answer += d.toString()));
  held.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => answer.includes('from=127.0.0.8'), 10_000, 'the held connection\'s answer');
  assert.equal(await curlFrom('127.0.0.8', `http://127.0.0.1:${hap}/`), '', 'a second connection of 127.0.0.8');
  assert.equal(await curlFrom('127.0.0.9', `http://127.0.0.1:${hap}/`), 'from=127.0.0.9 to=127.0.0.1\n', 'another client, through the same HAProxy');
  await waitFor(() => accessLog(dir).some((l) => l.termination === 'rejected_client_limit' && l.client.startsWith('127.0.0.8:')), 10_000, 'rejected_client_limit for 127.0.0.8');
  const m = await metrics(lb);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['reason="acl"']), 1);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['reason="client_limit"']), 1);
});

test('refused with rejected_proxy_header: an untrusted peer, no header, garbage, a truncated v2, a v1 line without CRLF, a v2 length over the bound, silence past inspect_timeout', async (t) => {
  if (!ready(t)) return;
  const dir = tempDir('lemonade-accept-proxy-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const nginx = await startNginx(t, dir);
  const [untrusted, open, hap] = await ports(3);
  await startHaproxy(t, dir, [{ port: hap!, to: untrusted!, server: 'send-proxy-v2' }]);
  const lb = await balancer(t, dir, [
    svc('untrusted', untrusted!, nginx, ['accept_proxy = "v2"', 'accept_proxy_from = ["10.0.0.0/8"]', 'proxy_protocol = "v2"']),
    svc('open', open!, nginx, ['accept_proxy = "any"', 'accept_proxy_from = ["127.0.0.0/8"]', 'proxy_protocol = "v2"', 'inspect_timeout = "600ms"']),
  ]);

  assert.equal(await curlFrom('127.0.0.7', `http://127.0.0.1:${hap}/`), '', 'HAProxy on 127.0.0.1 is not in accept_proxy_from');
  assert.equal(await curlFrom('127.0.0.7', `http://127.0.0.1:${open}/`), '', 'a client connecting directly, without a header');

  const sig = '0d0a0d0a000d0a515549540a';
  const cases: [string, Buffer][] = [
    ['garbage', Buffer.from('GET / HTTP/1.0\r\n\r\n')],
    ['a v2 length over the bound', Buffer.from(`${sig}2111ffff`, 'hex')],
    ['a v1 line without CRLF within 107 bytes', Buffer.from(`PROXY TCP4 127.0.0.7 127.0.0.1 1234 80 ${'x'.repeat(80)}`)],
    ['a v1 line with a bad address', Buffer.from('PROXY TCP4 127.0.0.700 127.0.0.1 1234 80\r\n')],
  ];
  for (const [name, bytes] of cases) {
    const r = await rawClient(open!, bytes);
    assert.equal(r.data, '', `${name}: nothing relayed`);
    assert.ok(r.closedMs < 500, `${name}: closed at once, not at the deadline (${r.closedMs} ms)`);
  }
  // nothing more comes: cut at inspect_timeout
  for (const [name, bytes] of [
    ['a truncated v2 header', Buffer.from(`${sig}2111000c7f000007`, 'hex')],
    ['half a v1 line', Buffer.from('PROXY TCP4 127.0.0.7 ')],
    ['nothing at all', Buffer.alloc(0)],
  ] as const) {
    const r = await rawClient(open!, bytes);
    assert.equal(r.data, '', `${name}: nothing relayed`);
    assert.ok(r.closedMs >= 550 && r.closedMs < 3000, `${name}: closed at inspect_timeout (${r.closedMs} ms)`);
  }
  // and a header written by hand is taken
  const ok = await rawClient(open!, Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.2 4000 80\r\n'), Buffer.from('GET / HTTP/1.0\r\n\r\n')]));
  assert.match(ok.data, /from=192\.0\.2\.1 to=198\.51\.100\.2/);

  const refused = 2 + cases.length + 3;
  const lines = await waitFor(() => {
    const l = accessLog(dir).filter((x) => x.termination === 'rejected_proxy_header');
    return l.length >= refused ? l : null;
  }, 10_000, 'every refusal in the access log');
  assert.equal(lines.length, refused, JSON.stringify(accessLog(dir)));
  assert.deepEqual(lines.filter((l) => l.service === 'untrusted').map((l) => l.client.split(':')[0]), ['127.0.0.1'], 'HAProxy\'s connection: its header was never read');
  const m = await metrics(lb);
  assert.equal(metric(m, 'lemonade_connections_rejected_total', ['reason="proxy_header"']), refused);
  assert.equal(metric(m, 'lemonade_connection_terminations_total', ['termination="rejected_proxy_header"']), refused);
  // nginx answered HTTP/1.0 and closed first
  await waitFor(() => accessLog(dir).some((l) => l.service === 'open' && l.client.startsWith('192.0.2.1:') && l.termination === 'backend_closed'), 10_000, 'the line of the connection whose header was taken');
});

test('an SNI address: the header first, then the ClientHello; a TLS-terminating service handshakes after the header', async (t) => {
  if (!ready(t)) return;
  const dir = tempDir('lemonade-accept-proxy-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'a.key', '-out', 'a.pem', '-days', '2', '-subj', '/CN=a.test', '-addext', 'subjectAltName=DNS:a.test'], { cwd: dir, encoding: 'utf8' });
  assert.equal(ssl.status, 0, ssl.stderr);
  const nginx = await startNginx(t, dir);
  const [port, hap] = await ports(2);
  const common = ['accept_proxy = "v2"', 'accept_proxy_from = ["127.0.0.1/32"]', 'proxy_protocol = "v2"'];
  await startHaproxy(t, dir, [{ port: hap!, to: port!, server: 'send-proxy-v2' }]);
  await balancer(t, dir, [
    svc('tls', port!, nginx, ['sni = ["a.test"]', ...common, '[services.tls]', `certificates = [{ cert = "${join(dir, 'a.pem')}", key = "${join(dir, 'a.key')}" }]`]),
    svc('plain', port!, nginx, common),
  ]);
  assert.equal(await curlFrom('127.0.0.7', `https://a.test:${hap}/`, ['--cacert', join(dir, 'a.pem'), '--resolve', `a.test:${hap}:127.0.0.1`]), 'from=127.0.0.7 to=127.0.0.1\n', 'TLS terminated after the header');
  assert.equal(await curlFrom('127.0.0.8', `http://127.0.0.1:${hap}/`), 'from=127.0.0.8 to=127.0.0.1\n', 'no ClientHello: the default route');
  const lines = await waitFor(() => {
    const l = accessLog(dir).filter((x) => x.termination === 'client_closed');
    return l.length >= 2 ? l : null;
  }, 10_000, 'both lines');
  assert.deepEqual(lines.map((l) => [l.service, l.client.split(":")[0]]).sort(), [["plain", "127.0.0.8"], ["tls", "127.0.0.7"]], JSON.stringify(accessLog(dir)));
});

test('lb --validate names the file and the key: accept_proxy without trusted peers', async (t) => {
  const dir = tempDir('lemonade-accept-proxy-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'lb.toml');
  writeFileSync(path, '[proxy]\nlisten_address = "127.0.0.1:8080"\naccept_proxy = "v2"\n[[backends]]\naddress = "10.0.0.1:80"\n');
  const r = await runCli(['lb', '--config', path, '--validate']);
  assert.equal(r.code, 1);
  assert.match(r.stderr + r.stdout, new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid`));
  assert.match(r.stderr + r.stdout, /proxy\.accept_proxy_from \(line \d+\): accept_proxy = "v2" .*\["0\.0\.0\.0\/0", "::\/0"\] trusts every peer/);
});

test('consistent_hash keys on the header\'s address: one client stays on its backend, clients behind one HAProxy spread', async (t) => {
  if (!ready(t)) return;
  const dir = tempDir('lemonade-accept-proxy-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [a, b] = await startNginxes(t, dir, ['A ', 'B ']);
  const [port, hap] = await ports(2);
  await startHaproxy(t, dir, [{ port: hap!, to: port!, server: 'send-proxy-v2' }]);
  await startBalancer(
    t,
    servicesFile({
      algorithm: 'consistent_hash',
      services: [
        {
          name: 'hashed',
          port: port!,
          lines: ['accept_proxy = "v2"', 'accept_proxy_from = ["127.0.0.1/32"]', 'proxy_protocol = "v2"'],
          backends: [
            { name: 'a', address: `127.0.0.1:${a}` },
            { name: 'b', address: `127.0.0.1:${b}` },
          ],
        },
      ],
    }),
  );
  const seen = new Map<string, Set<string>>();
  for (let i = 0; i < 3; i++) {
    for (let x = 2; x <= 21; x++) {
      const source = `127.0.0.${x}`;
      const body = await curlFrom(source, `http://127.0.0.1:${hap}/`);
      assert.match(body, new RegExp(`^[AB] from=${source.replace(/\./g, '\\.')} `), source);
      if (!seen.has(source)) seen.set(source, new Set());
      seen.get(source)!.add(body[0]!);
    }
  }
  // each client on one backend every time; twenty clients (one TCP peer) on both
  for (const [source, backends] of seen) assert.equal(backends.size, 1, `${source} moved: ${[...backends].join(', ')}`);
  assert.deepEqual(new Set([...seen.values()].map((v) => [...v][0])), new Set(['A', 'B']), 'the clients spread over both backends');
});
