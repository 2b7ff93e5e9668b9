// Small holes of issue 23: a secret's value never in a validation message whatever its type,
// long lists validated in linear time, the demo's taken port in one line, and the strategy
// /status and the start log name for a file of [[services]] only.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseAndValidate } from '../../src/config/load';
import { SECRET_PATHS } from '../../src/config/schema';
import { BUNDLE, ROOT, adminJson, cleanEnv, freePort, startBalancer, startEcho, tempDir } from '../helpers';
import { spawn } from 'node:child_process';

const BASE = '[proxy]\nlisten_address = "127.0.0.1:1"\n[[backends]]\naddress = "127.0.0.1:2"\n';

describe("a secret's value never appears in a validation message", () => {
  const SECRET = 'hunter2-8c1f';
  for (const [what, value, type] of [
    ['a number', '918273645', 'a number'],
    ['an array', `["${SECRET}", 918273645]`, 'an array'],
    ['an inline table', `{ t = "${SECRET}" }`, 'a table'],
    ['a boolean', 'true', 'a boolean'],
    ['a float', '918273.645', 'a number'],
  ] as const) {
    test(`admin.token as ${what}`, () => {
      const r = parseAndValidate(`${BASE}[admin]\ntoken = ${value}\n`, {});
      assert.equal(r.ok, false);
      if (r.ok) return;
      const shown = JSON.stringify(r.issues);
      assert.equal(r.issues.length, 1, shown);
      assert.equal(r.issues[0]!.path, 'admin.token');
      assert.equal(r.issues[0]!.message, `expected a string, got ${type} (a secret: its value is not shown)`);
      for (const leak of [SECRET, '918273645', '918273.645', '9.18273645e']) assert.ok(!shown.includes(leak), shown);
    });
  }

  test('every setting marked secret (not only the token)', () => {
    assert.ok(SECRET_PATHS.length > 0);
    for (const path of SECRET_PATHS) {
      const [section, key] = path.split('.') as [string, string];
      for (const value of ['918273645', '[918273645]', '{ x = 918273645 }']) {
        const r = parseAndValidate(`${BASE}[${section}]\n${key} = ${value}\n`, {});
        assert.equal(r.ok, false, path);
        if (!r.ok) assert.ok(!JSON.stringify(r.issues).includes('918273645'), `${path}: ${JSON.stringify(r.issues)}`);
      }
    }
  });
});

describe('long lists validate in linear time', () => {
  const N = 100_000;
  /** ms of parseAndValidate on `text`, and its result */
  function timed(text: string): { ms: number; r: ReturnType<typeof parseAndValidate> } {
    const t0 = performance.now();
    const r = parseAndValidate(text, {});
    return { ms: performance.now() - t0, r };
  }
  const names = (n: number, wildcard = false): string => Array.from({ length: n }, (_, i) => `"${wildcard && i % 2 ? '*.' : ''}h${i}.example.org"`).join(',');

  test(`admin.allowed_hosts with ${N} names, and the same with its last name repeated`, () => {
    const ok = timed(`${BASE}[admin]\nallowed_hosts = [${names(N)}]\n`);
    assert.equal(ok.r.ok, true, JSON.stringify(!ok.r.ok && ok.r.issues));
    const dup = timed(`${BASE}[admin]\nallowed_hosts = [${names(N)}, "H0.example.org."]\n`);
    assert.equal(dup.r.ok, false);
    if (!dup.r.ok) assert.equal(dup.r.issues[0]!.message, '"H0.example.org." is listed twice');
    assert.ok(ok.ms < 3000 && dup.ms < 3000, `${ok.ms.toFixed(0)} ms, ${dup.ms.toFixed(0)} ms`);
  });

  test(`services.sni with ${N} names (wildcards among them), split between two services on one address`, () => {
    const half = N / 2;
    const list = (from: number): string => Array.from({ length: half }, (_, i) => `"${i % 2 ? '*.' : ''}s${from + i}.example.org"`).join(',');
    const svc = (name: string, from: number): string => `[[services]]\nname = "${name}"\nlisten_address = "127.0.0.1:3"\nsni = [${list(from)}]\n[[services.backends]]\naddress = "127.0.0.1:2"\n`;
    const { ms, r } = timed(`${BASE}${svc('a', 0)}${svc('b', half)}`);
    assert.equal(r.ok, true, JSON.stringify(!r.ok && r.issues.slice(0, 3)));
    assert.ok(ms < 4000, `${ms.toFixed(0)} ms`);
  });

  test('allow/deny CIDRs, backends and services: long lists each within a bound', () => {
    const cidrs = Array.from({ length: N }, (_, i) => `"10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32"`).join(',');
    const allow = timed(`[proxy]\nlisten_address = "127.0.0.1:1"\nallow = [${cidrs}]\ndeny = [${cidrs}]\n[[backends]]\naddress = "127.0.0.1:2"\n`);
    assert.equal(allow.r.ok, true);
    const B = 20_000;
    const backends = Array.from({ length: B }, (_, i) => `[[backends]]\nid = ${i}\nname = "b${i}"\naddress = "10.0.${i >> 8}.${i & 255}:80"\n`).join('');
    const many = timed(`[proxy]\nlisten_address = "127.0.0.1:1"\n${backends}`);
    assert.equal(many.r.ok, true, JSON.stringify(!many.r.ok && many.r.issues.slice(0, 3)));
    const S = 5_000;
    const services = Array.from({ length: S }, (_, i) => `[[services]]\nname = "s${i}"\nlisten_address = "127.0.${i >> 8}.${i & 255}:80"\n[[services.backends]]\naddress = "127.0.0.1:2"\n`).join('');
    const svcs = timed(services);
    assert.equal(svcs.r.ok, true, JSON.stringify(!svcs.r.ok && svcs.r.issues.slice(0, 3)));
    assert.ok(allow.ms < 3000 && many.ms < 3000 && svcs.ms < 3000, `allow/deny ${allow.ms.toFixed(0)} ms, ${B} backends ${many.ms.toFixed(0)} ms, ${S} services ${svcs.ms.toFixed(0)} ms`);
  });
});

test('demo: a taken port is one line naming it, exit 1, no stack trace', async (t) => {
  let text = readFileSync(join(ROOT, 'config', 'demo.toml'), 'utf8');
  const ports = new Map<string, number>();
  for (const port of ['8080', '9090', '9101', '9102', '9103']) {
    ports.set(port, await freePort());
    text = text.replace(`127.0.0.1:${port}"`, `127.0.0.1:${ports.get(port)}"`);
  }
  const config = join(tempDir(), 'demo.toml');
  writeFileSync(config, text);
  const run = (): Promise<{ code: number | null; out: string; err: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [BUNDLE, 'demo', '--config', config], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('close', (code) => {
        clearTimeout(killer);
        resolve({ code, out, err });
      });
    });
  for (const taken of ['9102', '8080']) {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(ports.get(taken), '127.0.0.1', r));
    t.after(() => blocker.close());
    const { code, out, err } = await run();
    blocker.close();
    assert.equal(code, 1, `${out}\n${err}`);
    const lines = err.trim().split('\n');
    assert.equal(lines.length, 1, err);
    assert.match(lines[0]!, new RegExp(`^lemonade: cannot listen on 127\\.0\\.0\\.1:${ports.get(taken)} \\(.+\\): EADDRINUSE$`));
    assert.doesNotMatch(err, /internal error|\n\s+at /);
  }
});

test('a file of [[services]] only: /status strategy is null, the start log names none; each service has its own', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(
    t,
    [
      '[admin]',
      'listen_address = "127.0.0.1:0"',
      '[[services]]',
      'name = "web"',
      'listen_address = "127.0.0.1:0"',
      'algorithm = "least_connections"',
      '[[services.backends]]',
      `address = "${echo.address}"`,
      '',
    ].join('\n'),
  );
  const status = await adminJson<{ strategy: unknown; services: { name: string; algorithm: string }[] }>(lb, '/status');
  assert.equal(status.strategy, null);
  assert.deepEqual(status.services.map((s) => [s.name, s.algorithm]), [['web', 'least_connections']]);
  const started = lb.logs.find((l) => l['msg'] === 'lemonade-lb started')!;
  assert.ok(started, 'the start log line');
  assert.ok(!('strategy' in started), JSON.stringify(started));
  // with a default service, /status names its algorithm as before
  const withDefault = await startBalancer(
    t,
    ['[proxy]', 'listen_address = "127.0.0.1:0"', '[strategy]', 'algorithm = "round_robin"', '[admin]', 'listen_address = "127.0.0.1:0"', '[[backends]]', `address = "${echo.address}"`, ''].join('\n'),
  );
  assert.equal((await adminJson<{ strategy: unknown }>(withDefault, '/status')).strategy, 'round_robin');
  assert.equal(withDefault.logs.find((l) => l['msg'] === 'lemonade-lb started')!['strategy'], 'round_robin');
});
