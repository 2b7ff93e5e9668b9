// The status page (GET /) in a real headless Chromium: the backends are listed with their state,
// the live chart draws the traffic made while the page is open (connections per second and the
// backend latency, from GET /traffic), a client's reset shows in the list of recent non-clean
// terminations, the drain button of one changes its state to "draining" in the page, the page's
// Content-Security-Policy blocks none of its own code, and a screenshot is kept for a human to
// look at. A second test serves the page as the admin server does, beside canned JSON for two
// services ([[services]]), and checks the grouping by service and the per-service action path,
// and each service's certificates with the days left (highlighted within 14 days or expired). A
// third runs a balancer that terminates TLS with certificates made by openssl and reads their
// expiry in the page.
// Chromium is started here (so each test owns its process and kills it)
// and driven over the DevTools protocol with playwright-core, which downloads no browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PAGE_READS, STATUS_PAGE, STATUS_PAGE_CSP } from '../../src/admin/status-page';
import type { CertificateRow } from '../../src/admin/wire';
import { startBalancer, startEcho, testConfig, tcpExchange, tempDir, requireTool, adminJson, stopProcess, waitFor, type TestServer, type Balancer } from '../helpers';
import { closed, open, roundTrip } from '../access-log-helpers';

const CHROMIUM = '/usr/bin/chromium';

test("the page's script reads each answer key that PAGE_READS (typed by src/admin/wire.ts) lists", () => {
  const script = /<script>([\s\S]*)<\/script>/.exec(STATUS_PAGE)![1]!;
  // how the script names each answer (or its part) when it reads a key of it
  const names: Record<keyof typeof PAGE_READS, string | readonly string[]> = {
    status: 's',
    config: 's.config',
    connections: 's.connections',
    backend: 'b',
    lastCheck: 'b.last_check',
    service: 'v',
    health: 'health',
    event: 'e',
    traffic: 'traffic',
    chart: ['chart', 'c'],
    termination: 'r',
    certificate: 'crt',
    error: 'body',
  };
  const unread: string[] = [];
  for (const [part, keys] of Object.entries(PAGE_READS) as [keyof typeof PAGE_READS, readonly string[]][]) {
    for (const key of keys) {
      const reads = [names[part]].flat().map((name) => `${name}.${key}`);
      if (!reads.some((read) => new RegExp(`\\b${read.replace(/\./g, '\\.')}\\b`).test(script))) unread.push(reads.join(' or '));
    }
  }
  assert.deepEqual(unread, []);
});

/** Start headless Chromium with a DevTools port chosen by the kernel; resolves with its ws:// URL. */
function startChromium(userDataDir: string): Promise<{ proc: ChildProcess; ws: string }> {
  const proc = spawn(
    CHROMIUM,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--no-default-browser-check',
      '--window-size=1280,720',
      `--user-data-dir=${userDataDir}`,
      '--remote-debugging-address=127.0.0.1',
      '--remote-debugging-port=0',
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`chromium did not print its DevTools address within 20 s; stderr:\n${err}`));
    }, 20_000);
    proc.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, ws: m[1]! });
      }
    });
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`chromium exited (${code ?? signal}) before it was ready; stderr:\n${err}`));
    });
  });
}


interface Watched {
  readonly page: Page;
  readonly dir: string;
  readonly pageErrors: string[];
  /** CSP refusals reported on the console */
  readonly cspConsole: string[];
  /** securitypolicyviolation events seen by the page */
  cspViolations(): Promise<string[]>;
}

/** Start Chromium for this test (stopped in t.after) and open one page that records errors and CSP refusals. */
async function openPage(t: { after(fn: () => Promise<void>): void }): Promise<Watched> {
  const dir = tempDir('lemonade-status-page-');
  let browser: Browser | undefined;
  let chrome: ChildProcess | undefined;
  t.after(async () => {
    // ask Chromium to quit (it then reaps its own helper processes), kill it if it does not
    if (browser) {
      const b = browser;
      await b
        .newBrowserCDPSession()
        .then((s) => s.send('Browser.close'))
        .catch(() => {});
      await b.close().catch(() => {});
    }
    if (chrome) await stopProcess(chrome);
  });
  const started = await startChromium(join(dir, 'chromium-profile'));
  chrome = started.proc;
  browser = await chromium.connectOverCDP(started.ws, { timeout: 15_000 });
  const context = browser.contexts()[0] ?? (await browser.newContext());
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(10_000);
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // the CSP must block nothing the page itself needs: Chromium reports each refusal on the
  // console and as a securitypolicyviolation event
  const cspConsole: string[] = [];
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspConsole.push(m.text());
  });
  await page.addInitScript(() => {
    const w = window as unknown as { cspViolations: string[] };
    w.cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => w.cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));
  });
  return {
    page,
    dir,
    pageErrors,
    cspConsole,
    cspViolations: () => page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations),
  };
}

test('status page lists the backends and drains one with its button (headless Chromium)', { timeout: 50_000 }, async (t) => {
  if (!requireTool(t, 'chromium', existsSync(CHROMIUM))) return;

  const backends: TestServer[] = [];
  let lb: Balancer | undefined;
  t.after(async () => {
    await lb?.stop();
    await Promise.all(backends.map((b) => b.close()));
  });

  for (let i = 0; i < 3; i++) backends.push(await startEcho());
  const names = ['alpha', 'beta', 'gamma'];
  lb = await startBalancer(testConfig(backends.map((b, i) => ({ address: b.address, name: names[i]! }))));
  // some traffic, so that totals, shares and latencies have values
  for (let i = 0; i < 9; i++) {
    const r = await tcpExchange(lb.port, `ping ${i}\n`);
    assert.equal(r.data.toString(), `ping ${i}\n`);
  }

  const { page, dir, pageErrors, cspConsole, cspViolations } = await openPage(t);

  const resp = await page.goto(`http://127.0.0.1:${lb.adminPort}/`);
  assert.equal(resp?.status(), 200);
  assert.match(resp!.headers()['content-security-policy'] ?? '', /^default-src 'self'; /, 'served with its CSP');
  assert.equal(await page.title(), 'lemonade-lb status');

  // every backend has a row with its name, address, state, counts, share and latency
  const rows = page.locator('#backends tr[data-backend]');
  await page.waitForFunction((n) => document.querySelectorAll('#backends tr[data-backend]').length === n, names.length, { timeout: 10_000 });
  assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-backend'))), names);
  for (const [i, name] of names.entries()) {
    const cells = await page.locator(`#backends tr[data-backend="${name}"] td`).allInnerTexts();
    assert.equal(cells[0], name);
    assert.equal(cells[1], backends[i]!.address);
    assert.equal(cells[2], 'healthy');
    assert.equal(cells[5], '3', `${name} total`);
    assert.match(cells[6]!, /33\.3%/, `${name} share`);
    assert.match(cells[7]!, /^\d+(\.\d+)? ms$/, `${name} latency`);
    assert.match(cells[9]!, /drain/);
  }
  await page.locator('#health', { hasText: 'healthy' }).waitFor();
  await page.locator('#total', { hasText: '9' }).waitFor();

  // the live chart: traffic made while the page is open is drawn (a line above the zero line),
  // with the latency; a client that resets shows in the recent non-clean terminations
  const service = (await adminJson<{ service?: string }[]>(lb, '/backends'))[0]!.service ?? 'default';
  await page.locator(`[data-chart="${service}"] svg`).first().waitFor();
  const chartDrawn = async (): Promise<boolean> => {
    for (let i = 0; i < 10; i++) await tcpExchange(lb!.port, `chart ${i}\n`);
    const pts = await page.locator(`[data-chart="${service}"] polyline.all`).getAttribute('points', { timeout: 2000 }).catch(() => null);
    // y of an idle second is 106 (the bottom of a 110-high chart): a point above it is traffic
    return pts !== null && pts.split(' ').some((p) => Number(p.split(',')[1]) < 100);
  };
  await waitFor(chartDrawn, 20_000, 'the chart to draw the connections per second', 200);
  // a steady p99 draws a flat line, which has an empty bounding box that Playwright calls hidden:
  // wait for a line of two points or more instead
  await page.waitForFunction((s) => (document.querySelector(`[data-chart="${s}"] polyline.p99`)?.getAttribute('points') ?? '').trim().split(/\s+/).length >= 2, service, { timeout: 10_000 });
  const traffic = await adminJson<{ services: { name: string; points: [number, number, number, number | null, number | null][] }[] }>(lb, '/traffic');
  const mine = traffic.services.find((x) => x.name === service)!;
  assert.ok(mine.points.some((p) => p[1] > 0 && p[3] !== null && p[4] !== null && p[4] >= p[3]), JSON.stringify(mine.points.slice(-5)));
  const rs = await open(lb.port);
  await roundTrip(rs, Buffer.from('reset me'));
  rs.resetAndDestroy();
  await closed(rs);
  const row = page.locator('#terminations tr[data-termination="client_reset"]');
  await row.first().waitFor({ timeout: 10_000 });
  assert.match(await row.first().innerText(), new RegExp(`${service}\\s+alpha|${service}\\s+beta|${service}\\s+gamma`));

  // drain beta with its button: the page shows it draining, with an enable button instead
  const posts: string[] = [];
  page.on('request', (r) => void (r.method() === 'POST' && posts.push(new URL(r.url()).pathname)));
  await page.locator('#backends tr[data-backend="beta"] button[data-act="drain"]').click();
  await page.locator('#backends tr[data-backend="beta"] td.state', { hasText: 'draining' }).waitFor();
  await page.locator('#backends tr[data-backend="beta"] button[data-act="enable"]').waitFor();
  await page.locator('#events li', { hasText: 'beta: drain' }).waitFor();
  assert.equal(await page.locator('#backends tr[data-backend="alpha"] td.state').innerText(), 'healthy');
  assert.equal(await page.locator('#backends tr[data-backend="gamma"] td.state').innerText(), 'healthy');
  assert.equal(await page.locator('#error').innerText(), '');

  // the balancer agrees
  const view = await adminJson<{ service?: string; name: string; state: string }[]>(lb, '/backends');
  assert.equal(view.find((b) => b.name === 'beta')?.state, 'draining');
  // through its service's path when the balancer names services (this file's is "default")
  const named = view[0]!.service;
  assert.deepEqual(posts, [named === undefined ? '/backends/beta/drain' : `/services/${named}/backends/beta/drain`]);
  if (named !== undefined) assert.equal(await page.locator(`#backends section[data-service="${named}"] h2 .name`).innerText(), named);

  const shot = join(dir, 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
  t.diagnostic(`screenshot: ${shot}`);
  assert.deepEqual(pageErrors, []);
  // the share bars got their widths (set through the DOM, which the CSP allows)
  // (alpha's share of every connection made, the chart's and the reset one included)
  const totals = await adminJson<{ name: string; total: number }[]>(lb, '/backends');
  const share = (100 * totals.find((b) => b.name === 'alpha')!.total) / totals.reduce((n, b) => n + b.total, 0);
  await waitFor(async () => (await page.locator('#backends tr[data-backend="alpha"] .bar').evaluate((e) => (e as HTMLElement).style.width)) === `${share.toFixed(0)}px`, 5000, `alpha's bar ${share.toFixed(0)}px wide`);
  assert.deepEqual(await cspViolations(), [], 'securitypolicyviolation events');
  assert.deepEqual(cspConsole, [], 'CSP messages on the console');
});

/** A backend row of GET /backends, with `service` as balancers since [[services]] have it. */
function backendRow(service: string | undefined, id: number, name: string, state: string, active: number, total: number) {
  return {
    ...(service === undefined ? {} : { service }),
    id,
    name,
    address: `10.0.${id}.${name.length}:${6000 + id}`,
    weight: 1,
    backup: false,
    max_connections: 0,
    state,
    active,
    total,
    latency_ms: total > 0 ? 0.8 + id : null,
    connect_errors: 0,
    last_check: { at: new Date().toISOString(), ok: state !== 'unhealthy', error: state === 'unhealthy' ? 'ECONNREFUSED' : null },
  };
}

/**
 * The page as src/admin/server.ts serves it (same headers), beside canned /status, /health and
 * /events of a balancer; every POST is recorded and drains, enables or disables the row it names.
 */
async function fakeAdmin(status: () => Record<string, unknown>, rows: ReturnType<typeof backendRow>[], certificates: readonly CertificateRow[] = []) {
  const posts: string[] = [];
  const json = (res: http.ServerResponse, code: number, body: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const server = http.createServer((req, res) => {
    req.resume();
    res.setHeader('x-content-type-options', 'nosniff');
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/') {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
        'content-security-policy': STATUS_PAGE_CSP,
        'x-frame-options': 'DENY',
      });
      return res.end(STATUS_PAGE);
    }
    if (req.method === 'GET' && url === '/status') return json(res, 200, status());
    if (req.method === 'GET' && url === '/health') return json(res, 200, { status: 'degraded', usable: 3, total: 5 });
    if (req.method === 'GET' && url === '/events') return json(res, 200, []);
    if (req.method === 'GET' && url === '/certificates') return json(res, 200, certificates);
    const m = /^(?:\/services\/([^/]+))?\/backends\/([^/]+)\/(drain|enable|disable)$/.exec(url);
    if (req.method === 'POST' && m) {
      posts.push(url);
      const service = m[1] === undefined ? undefined : decodeURIComponent(m[1]);
      const name = decodeURIComponent(m[2]!);
      const hit = rows.filter((r) => r.name === name && (service === undefined || r.service === service));
      if (hit.length !== 1) return json(res, hit.length ? 409 : 404, { error: `no single backend "${name}"` });
      hit[0]!.state = m[3] === 'enable' ? 'healthy' : m[3] === 'drain' ? 'draining' : 'disabled';
      return json(res, 200, { service, backend: name, action: m[3], state: hit[0]!.state });
    }
    json(res, 404, { error: `no such endpoint: ${url}` });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    posts,
    close: () => new Promise<void>((resolve) => (server.close(() => resolve()), server.closeAllConnections())),
  };
}

test('status page groups the backends by service and acts through /services/SVC/backends/NAME (headless Chromium)', { timeout: 50_000 }, async (t) => {
  if (!requireTool(t, 'chromium', existsSync(CHROMIUM))) return;

  // two services; the name "shared" is in both, and the API interleaves their rows
  const rows = [
    backendRow('postgres', 0, 'pg-1', 'healthy', 2, 70),
    backendRow('redis', 0, 'shared', 'healthy', 1, 40),
    backendRow('postgres', 1, 'pg-2', 'healthy', 1, 30),
    backendRow('redis', 1, 'r-2', 'unhealthy', 0, 0),
    backendRow('postgres', 2, 'shared', 'draining', 0, 0),
  ];
  const services = [
    { name: 'postgres', listen_address: '0.0.0.0:5432', sni: [], algorithm: 'least_connections', active: 3, total: 100, rejected: 4, usable: 2, backends: 3 },
    { name: 'redis', listen_address: '0.0.0.0:6379', sni: [], algorithm: 'round_robin', active: 1, total: 40, rejected: 0, usable: 1, backends: 2 },
  ];
  let mode: 'services' | 'rows' | 'old' = 'services';
  const status = (): Record<string, unknown> => ({
    version: '0.1.0',
    uptime_seconds: 42,
    strategy: 'adaptive',
    config: { path: '/etc/lemonade/config.toml', generation: 3, hash: 'abc', last_reload: null },
    connections: { active: 4, total: 140, rejected: 4 },
    admin_token_set: false,
    backends: mode === 'old' ? rows.filter((r) => r.service === 'postgres').map(({ service: _s, ...r }) => r) : rows,
    ...(mode === 'services' ? { services } : {}),
  });
  // postgres serves an expired certificate, redis one with 5 days left and one with 200; the admin API's has 30
  const at = (days: number): string => new Date(Date.now() + days * 86_400_000 + 3_600_000).toISOString();
  const cert = (service: string, names: string[], days: number, sha: string): CertificateRow => ({ service, names, not_after: at(days), sha256: sha.repeat(64), file: `/etc/lemonade/tls/${names[0]}.pem` });
  const certs = [cert('postgres', ['pg.example.com'], -3, 'a'), cert('redis', ['redis.example.com', 'r.example.com'], 5, 'b'), cert('redis', ['redis.example.com'], 200, 'c'), cert('(admin)', ['lb.example.com'], 30, 'd')];
  const api = await fakeAdmin(status, rows, certs);
  t.after(() => api.close());
  const { page, dir, pageErrors, cspConsole, cspViolations } = await openPage(t);

  const resp = await page.goto(api.url);
  assert.equal(resp?.status(), 200);
  const sections = page.locator('#backends section.service');
  await page.waitForFunction(() => document.querySelectorAll('#backends section.service[data-service]').length === 2);
  assert.deepEqual(await sections.evaluateAll((ss) => ss.map((s) => s.getAttribute('data-service'))), ['postgres', 'redis']);

  // each section: its name, listen address, algorithm and figures, then its own rows in API order
  const figures = async (svc: string): Promise<Record<string, string>> =>
    Object.fromEntries(
      await page
        .locator(`section[data-service="${svc}"] .figures .fig`)
        .evaluateAll((fs) => fs.map((f) => [f.getAttribute('data-fig'), f.querySelector('b')!.textContent])),
    );
  const names = (svc: string): Promise<string[]> =>
    page.locator(`section[data-service="${svc}"] tbody tr[data-backend]`).evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-backend')!));
  assert.equal(await page.locator('section[data-service="postgres"] h2 .name').innerText(), 'postgres');
  assert.equal(await page.locator('section[data-service="postgres"] h2 .listen').innerText(), 'listen 0.0.0.0:5432');
  assert.equal(await page.locator('section[data-service="redis"] h2 .listen').innerText(), 'listen 0.0.0.0:6379');
  assert.deepEqual(await figures('postgres'), { algorithm: 'least_connections', active: '3', total: '100', rejected: '4', usable: '2 / 3' });
  assert.deepEqual(await figures('redis'), { algorithm: 'round_robin', active: '1', total: '40', rejected: '0', usable: '1 / 2' });
  assert.deepEqual(await names('postgres'), ['pg-1', 'pg-2', 'shared']);
  assert.deepEqual(await names('redis'), ['shared', 'r-2']);
  // the existing per-backend cells, with the share taken within the service
  const cells = await page.locator('section[data-service="postgres"] tr[data-backend="pg-1"] td').allInnerTexts();
  assert.deepEqual(cells.slice(0, 6), ['pg-1', '10.0.0.4:6000', 'healthy', '1', '2', '70']);
  assert.match(cells[6]!, /70\.0%/);
  assert.match(await page.locator('section[data-service="redis"] tr[data-backend="shared"] td').nth(6).innerText(), /100\.0%/);
  assert.equal(await page.locator('section[data-service="redis"] tr[data-backend="r-2"] td.state').innerText(), 'unhealthy');
  assert.match(await page.locator('section[data-service="postgres"] tr[data-backend="shared"] td').nth(9).innerText(), /enable/);

  // drain "shared" of redis (the name is in both services): the page posts to that service's path
  await page.locator('section[data-service="redis"] tr[data-backend="shared"] button[data-act="drain"]').click();
  await page.locator('section[data-service="redis"] tr[data-backend="shared"] td.state', { hasText: 'draining' }).waitFor();
  assert.deepEqual(api.posts, ['/services/redis/backends/shared/drain']);
  assert.equal(await page.locator('section[data-service="postgres"] tr[data-backend="pg-1"] td.state').innerText(), 'healthy');
  assert.equal(await page.locator('#error').innerText(), '');
  assert.equal(await page.locator('section[data-service="postgres"] tr[data-backend="pg-1"] .bar').evaluate((e) => (e as HTMLElement).style.width), '70px');

  // each service's certificates with the days left: within 14 days or expired, highlighted
  const certLines = (where: string): Promise<{ text: string; cls: string; color: string }[]> =>
    page.locator(`${where} .cert`).evaluateAll((cs) =>
      cs.map((c) => {
        const left = c.querySelector('.left')!;
        return { text: (c as HTMLElement).innerText, cls: left.className, color: getComputedStyle(left).color };
      }),
    );
  await page.locator('section[data-service="redis"] .certs .cert').first().waitFor();
  const day = (days: number): string => at(days).slice(0, 10);
  const [warn, bad, plain] = ['rgb(154, 103, 0)', 'rgb(207, 34, 46)', 'rgb(87, 96, 106)'];
  assert.deepEqual(await certLines('section[data-service="postgres"]'), [{ text: `pg.example.com · expires ${day(-3)} · expired`, cls: 'left expired', color: bad }]);
  assert.deepEqual(await certLines('section[data-service="redis"]'), [
    { text: `redis.example.com, r.example.com · expires ${day(5)} · 5 days left`, cls: 'left soon', color: warn },
    { text: `redis.example.com · expires ${day(200)} · 200 days left`, cls: 'left ok', color: plain },
  ]);
  assert.deepEqual(await certLines('#admin-cert'), [{ text: `lb.example.com · expires ${day(30)} · 30 days left`, cls: 'left ok', color: plain }]);
  assert.match(await page.locator('#admin-cert').innerText(), /^admin API certificate/);

  const shot = join(dir, 'status-page-services.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.diagnostic(`screenshot: ${shot}`);

  // without status.services, the rows' own service groups them; figures come from the rows
  mode = 'rows';
  await page.locator('section[data-service="postgres"] .fig[data-fig="rejected"] b', { hasText: '–' }).waitFor();
  assert.deepEqual(await sections.evaluateAll((ss) => ss.map((s) => s.getAttribute('data-service'))), ['postgres', 'redis']);
  assert.deepEqual(await figures('postgres'), { active: '3', total: '100', rejected: '–', usable: '2 / 3' });
  assert.deepEqual(await names('redis'), ['shared', 'r-2']);
  assert.equal(await page.locator('section[data-service="redis"] h2 .listen').count(), 0);

  // a balancer older than services: one table without a heading, actions through the old path
  mode = 'old';
  await page.waitForFunction(() => document.querySelectorAll('#backends section.service').length === 1 && !document.querySelector('#backends section[data-service]'));
  assert.equal(await page.locator('#backends h2').count(), 0);
  assert.deepEqual(await page.locator('#backends tr[data-backend]').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-backend'))), ['pg-1', 'pg-2', 'shared']);
  await page.locator('#backends tr[data-backend="pg-2"] button[data-act="disable"]').click();
  await page.locator('#backends tr[data-backend="pg-2"] td.state', { hasText: 'disabled' }).waitFor();
  assert.deepEqual(api.posts, ['/services/redis/backends/shared/drain', '/backends/pg-2/disable']);

  assert.deepEqual(pageErrors, []);
  assert.deepEqual(await cspViolations(), [], 'securitypolicyviolation events');
  assert.deepEqual(cspConsole, [], 'CSP messages on the console');
});

test("status page shows a terminating service's certificates with the days left, the one within 14 days highlighted (headless Chromium, openssl)", { timeout: 50_000 }, async (t) => {
  if (!requireTool(t, 'chromium', existsSync(CHROMIUM))) return;
  if (!requireTool(t, 'openssl', spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0)) return;
  const dir = tempDir('lemonade-status-certs-');
  const make = (name: string, days: number): string => {
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', String(days), '-subj', `/CN=${name}.test`, '-addext', `subjectAltName=DNS:${name}.test`], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const end = /notAfter=(.*)/.exec(spawnSync('openssl', ['x509', '-in', `${name}.pem`, '-noout', '-enddate'], { cwd: dir, encoding: 'utf8' }).stdout)![1]!;
    return new Date(Date.parse(end)).toISOString().slice(0, 10);
  };
  const soonEnd = make('soon', 5);
  const laterEnd = make('later', 60);
  const echo = await startEcho(t);
  const certs = `certificates = [{ cert = "${join(dir, 'soon.pem')}", key = "${join(dir, 'soon.key')}" }, { cert = "${join(dir, 'later.pem')}", key = "${join(dir, 'later.key')}" }]`;
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]) + `[tls]\n${certs}\n`);
  const { page, pageErrors, cspViolations } = await openPage(t);
  await page.goto(`http://127.0.0.1:${lb.adminPort}/`);
  const lines = page.locator('section[data-service="default"] .certs .cert');
  await lines.first().waitFor();
  assert.deepEqual(await lines.allInnerTexts(), [`soon.test · expires ${soonEnd} · 4 days left`, `later.test · expires ${laterEnd} · 59 days left`]);
  assert.equal(await lines.nth(0).locator('.left').getAttribute('class'), 'left soon');
  assert.equal(await lines.nth(1).locator('.left').getAttribute('class'), 'left ok');
  assert.equal(await page.locator('#admin-cert').innerText(), '', 'a plain HTTP admin API has no certificate');
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(await cspViolations(), []);
});
