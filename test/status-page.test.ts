// The status page (GET /) in a real headless Chromium: the backends are listed with their state,
// the drain button of one changes its state to "draining" in the page, the page's
// Content-Security-Policy blocks none of its own code, and a screenshot is kept for a human to
// look at. Chromium is started here (so this test owns its process and kills it)
// and driven over the DevTools protocol with playwright-core, which downloads no browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { startBalancer, startEcho, testConfig, tcpExchange, tempDir, requireTool, adminJson, stopProcess, type TestServer, type Balancer } from './helpers';

const CHROMIUM = '/usr/bin/chromium';

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


test('status page lists the backends and drains one with its button (headless Chromium)', { timeout: 50_000 }, async (t) => {
  if (!requireTool(t, 'chromium', existsSync(CHROMIUM))) return;

  const backends: TestServer[] = [];
  let lb: Balancer | undefined;
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

  const dir = tempDir('lemonade-status-page-');
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

  // drain beta with its button: the page shows it draining, with an enable button instead
  await page.locator('#backends tr[data-backend="beta"] button[data-act="drain"]').click();
  await page.locator('#backends tr[data-backend="beta"] td.state', { hasText: 'draining' }).waitFor();
  await page.locator('#backends tr[data-backend="beta"] button[data-act="enable"]').waitFor();
  await page.locator('#events li', { hasText: 'beta: drain' }).waitFor();
  assert.equal(await page.locator('#backends tr[data-backend="alpha"] td.state').innerText(), 'healthy');
  assert.equal(await page.locator('#backends tr[data-backend="gamma"] td.state').innerText(), 'healthy');
  assert.equal(await page.locator('#error').innerText(), '');

  // the balancer agrees
  const view = await adminJson<{ name: string; state: string }[]>(lb, '/backends');
  assert.equal(view.find((b) => b.name === 'beta')?.state, 'draining');

  const shot = join(dir, 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
  t.diagnostic(`screenshot: ${shot}`);
  assert.deepEqual(pageErrors, []);
  // the share bars got their widths (set through the DOM, which the CSP allows)
  assert.equal(await page.locator('#backends tr[data-backend="alpha"] .bar').evaluate((e) => (e as HTMLElement).style.width), '33px');
  assert.deepEqual(await page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations), [], 'securitypolicyviolation events');
  assert.deepEqual(cspConsole, [], 'CSP messages on the console');
});
