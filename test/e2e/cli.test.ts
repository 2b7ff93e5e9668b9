// The command line as an operator meets it: exit codes, messages, --validate, env overrides.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { spawn } from 'node:child_process';
import {
  atEnd,
  runCli,
  tempDir,
  startEcho,
  startNamed,
  startBalancer,
  testConfig,
  tcpExchange,
  freePort,
  cleanEnv,
  BUNDLE,
  ROOT,
  portOf,
  waitFor,
  httpRequest,
} from '../helpers';

function file(text: string): string {
  const p = join(tempDir(), 'config.toml');
  writeFileSync(p, text);
  return p;
}

const VALID = `
[proxy]
listen_address = "127.0.0.1:18080"
[[backends]]
id = 0
name = "a"
address = "127.0.0.1:18081"
`;

test('--validate: a valid file exits 0 and says so', async () => {
  const r = await runCli(['load-balancer', '--config', file(VALID), '--validate']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /valid \(listen 127\.0\.0\.1:18080, 1 backend, strategy adaptive\)/);
});

test('--validate: the shipped example configurations are valid', async () => {
  for (const f of ['config/load-balancer.toml', 'config/demo.toml']) {
    const r = await runCli(['lb', '-c', join(ROOT, f), '--validate']);
    assert.equal(r.code, 0, `${f}: ${r.stdout}${r.stderr}`);
  }
});

test('--validate: an invalid file exits 1 and prints every error with key path and line', async () => {
  const p = file(`[proxy]
listen_address = "0.0.0.0:99999"
max_conections = 5

[[backends]]
id = 0
address = "10.0.0.1"
weight = -2
`);
  const r = await runCli(['lb', '--config', p, '--validate']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /invalid, 4 errors/);
  assert.match(r.stdout, /proxy\.listen_address \(line 2\): port must be from 1 to 65535, got 99999/);
  assert.match(r.stdout, /proxy\.max_conections \(line 3\): unknown key "max_conections" in \[proxy\] \(did you mean "max_connections"\?\)/);
  assert.match(r.stdout, /backends\[0\]\.address \(line 7\): expected "host:port"/);
  assert.match(r.stdout, /backends\[0\]\.weight \(line 8\): must be at least 0, got -2/);
  assert.doesNotMatch(r.stdout + r.stderr, /\bat .*\.js:\d+/, 'no stack trace');
});

test('--validate --json prints the documented shape', async () => {
  const bad = await runCli(['lb', '--config', file('[proxy]\nlisten_address = "x"\n'), '--validate', '--json']);
  assert.equal(bad.code, 1);
  const j = JSON.parse(bad.stdout) as { valid: boolean; errors: { path: string; line?: number; message: string }[] };
  assert.equal(j.valid, false);
  assert.deepEqual(
    j.errors.map((e) => e.path),
    ['proxy.listen_address', 'backends'],
  );
  assert.equal(j.errors[0]!.line, 2);
  const good = await runCli(['lb', '--config', file(VALID), '--validate', '--json']);
  assert.equal(good.code, 0);
  assert.deepEqual(JSON.parse(good.stdout).errors, []);
  assert.equal(JSON.parse(good.stdout).valid, true);
});

test('--validate: a TOML syntax error names the line', async () => {
  const r = await runCli(['lb', '--config', file('[proxy]\nlisten_address = = 1\n'), '--validate', '--json']);
  assert.equal(r.code, 1);
  const j = JSON.parse(r.stdout) as { errors: { path: string; line: number; message: string }[] };
  assert.equal(j.errors[0]!.line, 2);
  assert.match(j.errors[0]!.message, /TOML syntax error/);
});

test('--validate --check-backends reports unreachable backends as warnings and exits 0', async () => {
  const echo = await startEcho();
  const deadPort = await freePort();
  const p = file(`[proxy]
listen_address = "127.0.0.1:18080"
[[backends]]
id = 0
name = "up"
address = "${echo.address}"
[[backends]]
id = 1
name = "down"
address = "127.0.0.1:${deadPort}"
`);
  try {
    const r = await runCli(['lb', '--config', p, '--validate', '--check-backends']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /warning: backends: down \(127\.0\.0\.1:\d+\) is unreachable: ECONNREFUSED/);
    assert.doesNotMatch(r.stdout, /warning: backends: up/);
    const j = await runCli(['lb', '--config', p, '--validate', '--check-backends', '--json']);
    assert.deepEqual(
      (JSON.parse(j.stdout).warnings as { backend: string }[]).map((w) => w.backend),
      ['down'],
    );
  } finally {
    await echo.close();
  }
});

test('a missing file is a clear error with exit 1', async () => {
  const r = await runCli(['lb', '--config', '/nonexistent/lemonade.toml']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\/nonexistent\/lemonade\.toml: no such configuration file/);
});

test('starting on an invalid file exits 1 without listening', async () => {
  const port = await freePort();
  const p = file(`[proxy]
listen_address = "127.0.0.1:${port}"
max_connections = 0
[[backends]]
address = "127.0.0.1:1"
`);
  const r = await runCli(['lb', '--config', p]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /proxy\.max_connections \(line 3\): must be greater than 0, got 0/);
  // nothing listens on the port
  const refused = await new Promise<boolean>((res) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => (s.destroy(), res(false)));
    s.on('error', () => res(true));
  });
  assert.equal(refused, true);
});

test('wrong usage exits 2; --version and --help exit 0 on every command', async () => {
  assert.equal((await runCli(['no-such-command'])).code, 2);
  assert.equal((await runCli(['lb', '--no-such-flag'])).code, 2);
  assert.equal((await runCli([])).code, 2);
  assert.equal((await runCli(['lb', '--json'])).code, 2, '--json without --validate');
  const v = await runCli(['--version']);
  assert.equal(v.code, 0);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const { commit } = JSON.parse(readFileSync(join(ROOT, 'dist', 'build-info.json'), 'utf8')) as { commit: string };
  assert.equal(v.stdout.trim(), `lemonade ${pkg.version} (${commit === '' ? '' : `commit ${commit}, `}Node.js ${process.version})`, 'the version, the commit built and the Node inside');
  for (const cmd of [[], ['load-balancer'], ['demo-backend'], ['worker'], ['demo'], ['status'], ['backend']]) {
    const h = await runCli([...cmd, '--help']);
    assert.equal(h.code, 0, `${cmd.join(' ')} --help: ${h.stderr}`);
    assert.match(h.stdout, /lemonade/);
  }
});

test('LEMONADE_LB_BACKEND_ADDRESSES and LEMONADE_LB_LISTEN_ADDRESS run it from the environment alone', async (t) => {
  // only the default path may be absent (a path named by --config must exist: test/e2e/secrets.test.ts)
  assert.ok(!existsSync('/etc/lemonade/config.toml'), 'this test needs no /etc/lemonade/config.toml on the machine');
  const [a, b] = await Promise.all([startNamed(t, 'A'), startNamed(t, 'B')]);
  const port = await freePort();
  const admin = await freePort();
  const child = spawn(process.execPath, [BUNDLE, 'lb'], {
    env: cleanEnv({
      LEMONADE_LB_BACKEND_ADDRESSES: `${a.address},${b.address}`,
      LEMONADE_LB_LISTEN_ADDRESS: `127.0.0.1:${port}`,
      LEMONADE_LB_ADMIN_ADDRESS: `127.0.0.1:${admin}`,
      LEMONADE_LB_STRATEGY: 'round-robin',
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  atEnd(t, () => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('lemonade-lb started'), 10_000, 'start');
  const names: string[] = [];
  for (let i = 0; i < 4; i++) names.push((await tcpExchange(port, '')).data.toString().trim());
  assert.deepEqual(names.sort(), ['A', 'A', 'B', 'B']);
  const backends = JSON.parse((await httpRequest(admin, '/backends')).body) as { id: number; name: string }[];
  assert.deepEqual(
    backends.map((x) => [x.id, x.name]),
    [
      [0, 'backend-1'],
      [1, 'backend-2'],
    ],
  );
});

test('an environment override wins over the file; an invalid one names the variable', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]), { env: { LEMONADE_LB_STRATEGY: 'least_connections' } });
  const status = JSON.parse((await lb.admin('/status')).body) as { strategy: string };
  assert.equal(status.strategy, 'least_connections');
  const r = await runCli(['lb', '--config', file(VALID), '--validate'], { env: { LEMONADE_LB_MAX_CONNECTIONS: 'lots' } });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /LEMONADE_LB_MAX_CONNECTIONS: expected a whole number, got "lots"/);
});

test('LEMONADE_LB_CONFIG names the file when --config is absent', async () => {
  const r = await runCli(['lb', '--validate'], { env: { LEMONADE_LB_CONFIG: file(VALID) } });
  assert.equal(r.code, 0, r.stdout + r.stderr);
});

test('status and backend commands talk to the admin API; unreachable is exit 1 with a message', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address, name: 'alpha' }, { address: '127.0.0.1:1', name: 'beta' }]));
  const admin = `http://127.0.0.1:${lb.adminPort}`;
  const st = await runCli(['status', '--admin', admin]);
  assert.equal(st.code, 0, st.stderr);
  const lines = st.stdout.trim().split('\n');
  // a SERVICE column first once the balancer names services (this file's is "default")
  assert.match(lines[0]!, /^(SERVICE\s+)?NAME\s+ADDRESS\s+STATE\s+WEIGHT\s+ACTIVE\s+TOTAL\s+LATENCY\s+LAST CHECK$/);
  assert.ok(lines.some((l) => /^(default\s+)?alpha\s+127\.0\.0\.1:\d+\s+healthy/.test(l)), st.stdout);
  const js = await runCli(['status', '--admin', admin, '--json']);
  assert.deepEqual(
    (JSON.parse(js.stdout) as { name: string }[]).map((b) => b.name),
    ['alpha', 'beta'],
  );
  const d = await runCli(['backend', 'drain', 'alpha', '--admin', admin]);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /alpha: draining/);
  const e = await runCli(['backend', 'enable', 'alpha', '--admin', admin]);
  assert.match(e.stdout, /alpha: healthy/);
  const nf = await runCli(['backend', 'drain', 'nobody', '--admin', admin]);
  assert.equal(nf.code, 1);
  assert.match(nf.stderr, /404 no backend named "nobody"/);
  const port = await freePort();
  const un = await runCli(['status', '--admin', `http://127.0.0.1:${port}`]);
  assert.equal(un.code, 1);
  assert.match(un.stderr, /cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+\/backends: ECONNREFUSED/);
});

test('`demo-backend` and its former name `worker` (an alias) both start a backend that answers over HTTP', async (t) => {
  for (const command of ['demo-backend', 'worker']) {
    const child = spawn(process.execPath, [BUNDLE, command, '--listen', '127.0.0.1:0', '--name', `by-${command}`], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => /listening on \S+\n/.test(out), 10_000, `${command} to listen`);
    assert.match(out, new RegExp(`^demo-backend by-${command} listening on 127\\.0\\.0\\.1:\\d+\n$`));
    const port = portOf(/listening on (\S+)/.exec(out)![1]!);
    const r = await httpRequest(port, '/');
    assert.equal(r.status, 200);
    assert.equal(r.body, `by-${command}\n`);
    child.kill('SIGTERM');
    assert.equal(await new Promise<number | null>((res) => child.once('exit', (c) => res(c))), 0, `${command} stops cleanly on SIGTERM`);
  }
  const help = await runCli(['--help']);
  assert.match(help.stdout, /demo-backend/, 'the help names the new command');
});

test('demo-backend answers its name after the delay; /health at once; bad flags exit 2', async (t) => {
  const port = await freePort();
  const child = spawn(process.execPath, [BUNDLE, 'demo-backend', '-a', `127.0.0.1:${port}`, '-n', 'slowpoke', '-d', '150'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise<void>((res) => child.stdout.once('data', () => res()));
  const t0 = Date.now();
  const r = await httpRequest(port, '/work');
  assert.equal(r.body, 'slowpoke\n');
  assert.ok(Date.now() - t0 >= 140, 'delay honoured');
  const t1 = Date.now();
  const h = await httpRequest(port, '/health');
  assert.equal(h.status, 200);
  assert.ok(Date.now() - t1 < 140, '/health answers at once');
  const bad = await runCli(['demo-backend', '-a', '127.0.0.1:1', '--delay', '-5']);
  assert.equal(bad.code, 2);
  assert.equal(portOf(`127.0.0.1:${port}`), port);
});
