// The admin API's exposure: 421 for a Host a DNS-rebinding page could send, 403 for a
// cross-site mutation and for a tokenless mutation from another host, the security headers on
// every answer and the status page's CSP, and the --validate warning for a non-loopback admin
// address without a token. The "other host" is real: a network namespace this test creates (a
// veth pair on a private 10.213.x.0/24 that exists only for the test; run as root with iproute2
// and curl, as .ci/run does).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AdminServer, type AdminApi } from '../../src/admin/server';
import type { BackendRow, StatusAnswer } from '../../src/admin/wire';
import { adminExposureWarnings, checkCrossSite, checkHost, isLoopback } from '../../src/config/admin-exposure';
import { validate } from '../../src/config/schema';
import { startBalancer, startEcho, testConfig, httpRequest, runCli, tempDir, requireTool, waitFor, type Balancer, type TestServer } from '../helpers';

// -------------------------------------------------------------------------------------------
// An admin server in this process, over a fake app that counts mutations

function fakeApi(o: { token?: string; allowedHosts?: string[] } = {}): AdminApi & { mutations: number } {
  const api = {
    mutations: 0,
    health: () => ({ status: 'healthy' as const, usable: 1, total: 1 }),
    ready: () => true,
    refresh: async () => undefined,
    // only the HTTP layer is under test: the answers carry a field or two of their shapes
    status: () => ({ version: 'test' }) as StatusAnswer,
    backends: () => [{ name: 'b1', state: 'healthy' }] as BackendRow[],
    events: () => [],
    traffic: () => ({ interval_ms: 1000, services: [], terminations: [] }),
    services: () => [],
    backendAction: (_service: string | undefined, name: string) => {
      api.mutations++;
      return name === 'b1' ? { kind: 'ok' as const, service: 'default', state: 'draining' as const } : { kind: 'not_found' as const, what: `backend named "${name}"` };
    },
    reload: async () => {
      api.mutations++;
      return { result: 'success' as const, generation: 2 };
    },
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4; charset=utf-8', body: 'm 1\n' }),
    token: () => o.token ?? '',
    allowedHosts: () => o.allowedHosts ?? [],
  };
  return api;
}

async function startAdmin(t: { after(fn: () => Promise<void>): void }, api: AdminApi): Promise<number> {
  const admin = new AdminServer(api);
  await admin.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => admin.close());
  return Number(admin.address.split(':').pop());
}

/** Raw bytes to 127.0.0.1:port, the answer's status line, headers and body. */
function raw(port: number, text: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(5000, () => s.destroy(new Error('no answer within 5 s')));
    s.on('connect', () => s.end(text));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const all = Buffer.concat(chunks).toString('utf8');
      const at = all.indexOf('\r\n\r\n');
      const head = at < 0 ? all : all.slice(0, at);
      let body = at < 0 ? '' : all.slice(at + 4);
      if (/^transfer-encoding: chunked/im.test(head)) body = body.replace(/(?:^|\r\n)[0-9a-f]+\r\n/gi, '');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), head, body });
    });
  });
}

const errorOf = (body: string): string => (JSON.parse(body) as { error: string }).error;

test('pure rules: loopback addresses, Host values, cross-site headers, the exposure warning', () => {
  for (const h of ['127.0.0.1', '127.9.8.7', '::1', '[::1]', '::ffff:127.0.0.1', 'localhost', 'LocalHost']) assert.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', '128.0.0.1', 'lb.example', '']) assert.ok(!isLoopback(h), h);

  for (const h of ['127.0.0.1:9090', '10.1.2.3', '[::1]:9090', '[fe80::1]', 'localhost', 'LOCALHOST:9090', 'localhost.', 'lb.example:1', 'LB.Example']) {
    assert.equal(checkHost(h, ['lb.example']), null, h);
  }
  for (const h of ['evil.example', 'evil.example:9090', 'lb.example.evil', 'localhost.evil.example', '127.0.0.1.nip.io', '', '::1', '[zz]:1', 'a b', '1.2.3']) {
    const r = checkHost(h, ['lb.example']);
    assert.equal(r?.code, 421, h);
    assert.match(r!.message, /\[admin\] allowed_hosts/);
  }
  assert.equal(checkHost(undefined, []), null, 'no Host: not a browser');

  assert.equal(checkCrossSite({ host: '127.0.0.1:9090' }), null, 'no Origin: curl, scripts');
  assert.equal(checkCrossSite({ host: '127.0.0.1:9090', origin: 'http://127.0.0.1:9090', secFetchSite: 'same-origin' }), null);
  assert.equal(checkCrossSite({ host: 'LB.example', origin: 'https://lb.example' }), null, 'behind a TLS proxy: no port in Host');
  assert.equal(checkCrossSite({ host: '[::1]:9090', origin: 'http://[::1]:9090' }), null);
  for (const origin of ['http://evil.example', 'http://127.0.0.1:9091', 'http://127.0.0.1', 'null', 'file://', 'chrome-extension://abc']) {
    assert.equal(checkCrossSite({ host: '127.0.0.1:9090', origin })?.code, 403, origin);
  }
  assert.equal(checkCrossSite({ host: '127.0.0.1:9090', secFetchSite: 'cross-site' })?.code, 403);
  assert.equal(checkCrossSite({ host: '127.0.0.1:9090', secFetchSite: 'same-origin, cross-site' })?.code, 403, 'a repeated header');
  assert.equal(checkCrossSite({ host: '127.0.0.1:9090', secFetchSite: 'none' }), null, 'typed in the address bar');

  const config = (admin: string): Parameters<typeof adminExposureWarnings>[0] => {
    const r = validate({ proxy: { listen_address: '127.0.0.1:8080' }, backends: [{ address: '127.0.0.1:8081' }], admin: Object.fromEntries(admin.split(',').filter(Boolean).map((kv) => kv.split('='))) });
    assert.ok(r.ok, JSON.stringify(r));
    return r.config;
  };
  assert.deepEqual(adminExposureWarnings(config('listen_address=127.0.0.1:9090')), []);
  assert.deepEqual(adminExposureWarnings(config('listen_address=[::1]:9090')), []);
  assert.deepEqual(adminExposureWarnings(config('listen_address=localhost:9090')), []);
  assert.deepEqual(adminExposureWarnings(config('listen_address=')), [], 'admin API off');
  assert.deepEqual(adminExposureWarnings(config('listen_address=0.0.0.0:9090,token=t')), []);
  const w = adminExposureWarnings(config('listen_address=0.0.0.0:9090'));
  assert.equal(w.length, 1);
  assert.match(w[0]!, /^admin\.listen_address 0\.0\.0\.0:9090 is not a loopback address and \[admin\] token is empty/);
});

test('[admin] allowed_hosts: an array of host names, stored lower case; anything else is an error with its key path', () => {
  const v = (allowed: unknown): ReturnType<typeof validate> =>
    validate({ proxy: { listen_address: '127.0.0.1:8080' }, backends: [{ address: '127.0.0.1:8081' }], admin: { allowed_hosts: allowed } });
  const ok = v(['LB1.Example.com', 'lb2.example.com.', 'prometheus-target']);
  assert.ok(ok.ok);
  assert.deepEqual(ok.config.admin.allowedHosts, ['lb1.example.com', 'lb2.example.com', 'prometheus-target']);
  const none = validate({ proxy: { listen_address: '127.0.0.1:8080' }, backends: [{ address: '127.0.0.1:8081' }] });
  assert.ok(none.ok);
  assert.deepEqual(none.config.admin.allowedHosts, [], 'default []');
  for (const [bad, msg] of [
    ['lb.example', /expected an array of host names/],
    [['lb.example:9090'], /"lb\.example:9090" is not a host name/],
    [['http://lb.example'], /is not a host name/],
    [[''], /is not a host name/],
    [[3], /expected host name strings, got number 3/],
  ] as const) {
    const r = v(bad);
    assert.ok(!r.ok, JSON.stringify(bad));
    assert.equal(r.issues[0]!.path, 'admin.allowed_hosts');
    assert.match(r.issues[0]!.message, msg);
  }
});

test('a loopback admin API answers 421 to every request with a foreign Host, naming it; IPs, localhost and allowed_hosts pass', async (t) => {
  const api = fakeApi({ allowedHosts: ['lb.example'] });
  const port = await startAdmin(t, api);
  for (const path of ['/health', '/status', '/metrics', '/', '/nope']) {
    const r = await httpRequest(port, path, { headers: { host: `evil.example:${port}` } });
    assert.equal(r.status, 421, `GET ${path}`);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.match(errorOf(r.body), new RegExp(`Host "evil\\.example:${port}" is not allowed here: .*add "evil\\.example" to \\[admin\\] allowed_hosts`));
  }
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST', `[::1]:${port}`, `10.9.8.7:${port}`, `lb.example:${port}`, 'LB.EXAMPLE']) {
    assert.equal((await httpRequest(port, '/health', { headers: { host } })).status, 200, host);
  }
  // the POST is refused before it reaches the app
  const post = await httpRequest(port, '/backends/b1/drain', { method: 'POST', headers: { host: 'evil.example' } });
  assert.equal(post.status, 421);
  assert.equal(api.mutations, 0);
  // without Host: HTTP/1.1 requires one (400); HTTP/1.0 cannot come from a browser, so it passes
  const v11 = await raw(port, 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n');
  assert.equal(v11.status, 400);
  assert.match(errorOf(v11.body), /needs a Host header/);
  assert.match(v11.head, /x-content-type-options: nosniff/i);
  assert.equal((await raw(port, 'GET /health HTTP/1.0\r\n\r\n')).status, 200);
});

test('a cross-site mutation is 403 (Origin not the Host, or Sec-Fetch-Site: cross-site); the page\'s own POST and curl\'s pass', async (t) => {
  const api = fakeApi();
  const port = await startAdmin(t, api);
  const host = `127.0.0.1:${port}`;
  const post = (headers: Record<string, string>) => httpRequest(port, '/backends/b1/drain', { method: 'POST', headers: { host, ...headers } });

  const crossSite: Record<string, string>[] = [
    { origin: 'http://evil.example' },
    { origin: `http://127.0.0.1:${port + 1}` },
    { origin: 'null' },
    { 'sec-fetch-site': 'cross-site' },
    { origin: `http://${host}`, 'sec-fetch-site': 'cross-site' },
  ];
  for (const headers of crossSite) {
    const r = await post(headers);
    assert.equal(r.status, 403, JSON.stringify(headers));
    assert.match(errorOf(r.body), /^cross-site request refused/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
  }
  assert.equal((await httpRequest(port, '/reload', { method: 'POST', headers: { host, origin: 'http://evil.example' } })).status, 403);
  assert.equal(api.mutations, 0, 'nothing was done');

  // reading stays open to any Origin (a loopback admin already checked the Host)
  assert.equal((await httpRequest(port, '/status', { headers: { host, origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' } })).status, 200);
  // the status page's own fetch, and curl (no Origin)
  assert.equal((await post({ origin: `http://${host}`, 'sec-fetch-site': 'same-origin' })).status, 200);
  assert.equal((await post({})).status, 200);
  assert.equal(api.mutations, 2);
  // the Host is checked first: a foreign Host with a foreign Origin is 421
  assert.equal((await post({ host: 'evil.example', origin: 'http://evil.example' })).status, 421);
});

test('every admin answer carries X-Content-Type-Options: nosniff; the status page also its CSP (inline code by hash) and X-Frame-Options', async (t) => {
  const port = await startAdmin(t, fakeApi({ token: 't0k' }));
  const cases: [string, string, number][] = [
    ['GET', '/health', 200],
    ['GET', '/status', 200],
    ['GET', '/metrics', 200],
    ['HEAD', '/health', 200],
    ['GET', '/nope', 404],
    ['PUT', '/health', 405],
    ['POST', '/reload', 401],
    ['GET', '/backends/%E0%A4%A/drain', 405],
    ['POST', '/backends/%E0%A4%A/drain', 401],
  ];
  for (const [method, path, code] of cases) {
    const r = await httpRequest(port, path, { method });
    assert.equal(r.status, code, `${method} ${path}`);
    assert.equal(r.headers['x-content-type-options'], 'nosniff', `${method} ${path}`);
  }
  const bad = await httpRequest(port, '/backends/%E0%A4%A/drain', { method: 'POST', headers: { authorization: 'Bearer t0k' } });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers['x-content-type-options'], 'nosniff');

  const page = await httpRequest(port, '/');
  assert.equal(page.status, 200);
  assert.equal(page.headers['x-content-type-options'], 'nosniff');
  assert.equal(page.headers['x-frame-options'], 'DENY');
  const csp = String(page.headers['content-security-policy']);
  const directives = new Map(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k!, v]));
  assert.deepEqual(directives.get('default-src'), ["'self'"]);
  assert.deepEqual(directives.get('frame-ancestors'), ["'none'"]);
  assert.ok(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'), csp);
  // each inline block is allowed by the hash of its exact text, and there is one of each
  const hash = (s: string): string => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;
  const scripts = [...page.body.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
  const styles = [...page.body.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]!);
  assert.equal(scripts.length, 1);
  assert.equal(styles.length, 1);
  assert.deepEqual(directives.get('script-src'), [hash(scripts[0]!)]);
  assert.deepEqual(directives.get('style-src'), [hash(styles[0]!)]);
  assert.ok(!/\sstyle\s*=|\son[a-z]+\s*=/i.test(page.body), 'no inline style attribute or event handler, which the CSP would block');
});

test('a real balancer: 421 on a foreign Host, 403 on a cross-site POST, headers on its answers, allowed_hosts from the file', async (t) => {
  const alpha = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: alpha.address, name: 'alpha' }], { admin: 'listen_address = "127.0.0.1:0"\nallowed_hosts = ["lb.example"]' }));
  const foreign = await lb.admin('/status', 'GET', { host: `evil.example:${lb.adminPort}` });
  assert.equal(foreign.status, 421);
  assert.match(errorOf(foreign.body), /add "evil\.example" to \[admin\] allowed_hosts/);
  const drain = await lb.admin('/backends/alpha/drain', 'POST', { origin: 'http://evil.example' });
  assert.equal(drain.status, 403);
  const fetchSite = await lb.admin('/reload', 'POST', { 'sec-fetch-site': 'cross-site' });
  assert.equal(fetchSite.status, 403);
  const backends = JSON.parse((await lb.admin('/backends')).body) as { name: string; state: string }[];
  assert.equal(backends[0]!.state, 'healthy', 'the refused drain did nothing');
  for (const r of [foreign, drain, await lb.admin('/health'), await lb.admin('/metrics')]) assert.equal(r.headers['x-content-type-options'], 'nosniff');
  const page = await lb.admin('/');
  assert.match(String(page.headers['content-security-policy']), /^default-src 'self'; .*frame-ancestors 'none'/);
  assert.equal(page.headers['x-frame-options'], 'DENY');
  const named = await lb.admin('/health', 'GET', { host: `LB.example:${lb.adminPort}` });
  assert.equal(named.status, 200, `[admin] allowed_hosts reaches the admin API (src/app.ts adminApi() passes allowedHosts): ${named.body}`);
});

// -------------------------------------------------------------------------------------------
// --validate

function file(text: string): string {
  const p = join(tempDir(), 'config.toml');
  writeFileSync(p, text);
  return p;
}
const configWithAdmin = (admin: string): string => `[proxy]\nlisten_address = "127.0.0.1:18080"\n[admin]\n${admin}\n[[backends]]\naddress = "127.0.0.1:18081"\n`;

test('--validate warns of a non-loopback admin address without a token (text and --json), and stays valid', async () => {
  const exposed = file(configWithAdmin('listen_address = "0.0.0.0:9090"'));
  const text = await runCli(['lb', '--config', exposed, '--validate']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /: valid \(/);
  assert.match(text.stdout, /^warning: admin\.listen_address 0\.0\.0\.0:9090 is not a loopback address and \[admin\] token is empty: .*refused \(403\); set \[admin\] token/m);
  const json = await runCli(['lb', '--config', exposed, '--validate', '--json']);
  assert.equal(json.code, 0);
  const j = JSON.parse(json.stdout) as { valid: boolean; warnings: { path: string; message: string }[] };
  assert.equal(j.valid, true);
  assert.deepEqual(j.warnings.map((w) => w.path), ['admin.listen_address']);
  assert.match(j.warnings[0]!.message, /is not a loopback address and \[admin\] token is empty/);

  for (const admin of ['listen_address = "0.0.0.0:9090"\ntoken = "t"', 'listen_address = "127.0.0.1:9090"', 'listen_address = "[::1]:9090"', 'listen_address = ""']) {
    const p = file(configWithAdmin(admin));
    const quiet = await runCli(['lb', '--config', p, '--validate']);
    assert.doesNotMatch(quiet.stdout, /warning/, admin);
    assert.equal((JSON.parse((await runCli(['lb', '--config', p, '--validate', '--json'])).stdout) as Record<string, unknown>)['warnings'], undefined, admin);
  }
});

// -------------------------------------------------------------------------------------------
// From another host: a network namespace joined to this one by a veth pair

const tag = String(process.pid % 100000);
const NS = `lemx-${tag}`;
const HOST_IF = `lemxh-${tag}`;
const NS_IF = `lemxn-${tag}`;
const NET = `10.213.${100 + (process.pid % 100)}`;
const HOST_IP = `${NET}.1`;
const PEER_IP = `${NET}.2`;
let nsMade = false;

function run(cmd: string, args: string[], timeoutSec = 10): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('timeout', ['-k', '3', String(timeoutSec), cmd, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
function must(cmd: string, args: string[]): void {
  const r = run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
}
function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

function removeNamespace(): void {
  if (!nsMade) return;
  // deleting the namespace deletes its end of the pair, and with it ours
  run('ip', ['netns', 'del', NS]);
  run('ip', ['link', 'del', HOST_IF]);
  nsMade = false;
}
after(removeNamespace);
process.on('exit', removeNamespace);

/** curl from inside the namespace: the status and the body. */
function curlFromPeer(method: string, url: string, headers: string[] = []): { status: number; body: string } {
  const r = run('ip', ['netns', 'exec', NS, 'curl', '-sS', '--max-time', '5', '-X', method, ...headers.flatMap((h) => ['-H', h]), '-w', '\n%{http_code}', url]);
  assert.equal(r.code, 0, `curl ${method} ${url}: ${r.stderr}`);
  const i = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

test('from another host: reads are open, a tokenless mutation is 403 naming the peer, a foreign Host on a POST is 421, the token lets it through', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'ip (iproute2)', hasTool('ip'))) return;
  if (!requireTool(t, 'curl', hasTool('curl'))) return;
  if (process.getuid?.() !== 0) {
    const msg = 'needs root to create a network namespace';
    if (process.env['LEMONADE_REQUIRE_SYSTEM_TESTS'] === '1') throw new Error(`${msg}; LEMONADE_REQUIRE_SYSTEM_TESTS=1 forbids skipping`);
    t.skip(msg);
    return;
  }
  must('ip', ['netns', 'add', NS]);
  nsMade = true;
  must('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF, 'netns', NS]);
  must('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', HOST_IF]);
  must('ip', ['link', 'set', HOST_IF, 'up']);
  must('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  must('ip', ['-n', NS, 'addr', 'add', `${PEER_IP}/24`, 'dev', NS_IF]);
  must('ip', ['-n', NS, 'link', 'set', NS_IF, 'up']);

  let alpha: TestServer | undefined;
  let lb: Balancer | undefined;
  t.after(async () => {
    await lb?.stop();
    await alpha?.close();
    removeNamespace();
  });
  alpha = await startEcho();
  const config = (admin: string): string => testConfig([{ address: alpha!.address, name: 'alpha' }], { admin: `listen_address = "${HOST_IP}:9090"\n${admin}` });
  lb = await startBalancer(config(''));
  const base = `http://${HOST_IP}:9090`;
  await waitFor(() => run('ip', ['netns', 'exec', NS, 'curl', '-s', '-o', '/dev/null', '--max-time', '1', `${base}/ready`]).code === 0, 10_000, 'the admin API to be reachable from the namespace');

  // reads: open, also by a DNS name (Prometheus, keepalived)
  const health = curlFromPeer('GET', `${base}/health`);
  assert.equal(health.status, 200, health.body);
  assert.equal(curlFromPeer('GET', `${base}/metrics`, ['Host: lb1.example:9090']).status, 200);
  assert.equal(curlFromPeer('GET', `${base}/backends`).status, 200);

  // a tokenless mutation from this peer: 403, naming it; nothing changes
  const drain = curlFromPeer('POST', `${base}/backends/alpha/drain`);
  assert.equal(drain.status, 403, drain.body);
  assert.deepEqual(JSON.parse(drain.body), { error: `set [admin] token to allow this from ${PEER_IP}` });
  assert.equal(curlFromPeer('POST', `${base}/reload`).status, 403);
  // on a non-loopback address the Host is checked for mutations: first, before the peer
  const named = curlFromPeer('POST', `${base}/backends/alpha/drain`, ['Host: lb1.example:9090']);
  assert.equal(named.status, 421, named.body);
  assert.match(errorOf(named.body), /add "lb1\.example" to \[admin\] allowed_hosts/);
  const cross = curlFromPeer('POST', `${base}/backends/alpha/drain`, ['Origin: http://evil.example']);
  assert.equal(cross.status, 403);
  assert.match(errorOf(cross.body), /^cross-site request refused/);
  const state = (): string => (JSON.parse(curlFromPeer('GET', `${base}/backends`).body) as { state: string }[])[0]!.state;
  assert.equal(state(), 'healthy');

  // with a token set in the file, the same peer may mutate with it (and only with it)
  lb.writeConfig(config('token = "n3tns"'));
  await waitFor(() => (JSON.parse(curlFromPeer('GET', `${base}/status`).body) as { admin_token_set: boolean }).admin_token_set, 15_000, 'the reload that sets the token');
  assert.equal(curlFromPeer('POST', `${base}/backends/alpha/drain`).status, 401);
  const ok = curlFromPeer('POST', `${base}/backends/alpha/drain`, ['Authorization: Bearer n3tns']);
  assert.equal(ok.status, 200, ok.body);
  assert.equal(state(), 'draining');
});
