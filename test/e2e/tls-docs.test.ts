// docs/tls.md's worked example (Redis with TLS and client certificates behind a keepalived pair),
// run as written where it can be without keepalived: its openssl commands make the CA and the
// certificates, its TOML (the paths and addresses filled) passes --validate and starts a balancer
// in front of a real redis-server master and replica, and its redis-cli command answers PONG from
// the master with the client certificate; without one the handshake is refused, counted and logged,
// and the server's certificate offered as a client's is refused too.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, freePort, requireTool, ROOT, runCli, startBalancer, stopProcess, tempDir, waitFor } from '../helpers';
import { metric } from '../services-helpers';

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

const doc = readFileSync(join(ROOT, 'docs', 'tls.md'), 'utf8');
const example = doc.slice(doc.indexOf('## Worked example: Redis'));
const blocks = (lang: string): string[] => [...example.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].filter((m) => m[1] === lang).map((m) => m[2]!);

/** The example's block of this language that contains `marker`. */
function block(lang: string, marker: string): string {
  const b = blocks(lang).find((x) => x.includes(marker));
  assert.ok(b !== undefined, `docs/tls.md's worked example has a ${lang} block with ${marker}`);
  return b;
}

/** `text` with each `from` replaced by its `to`; every `from` must be there (the doc and the test agree). */
function fill(text: string, pairs: [string, string][]): string {
  let out = text;
  for (const [from, to] of pairs) {
    assert.ok(out.includes(from), `the example's configuration has ${from}`);
    out = out.split(from).join(to);
  }
  return out;
}

function redisCli(args: string[], cwd: string): { out: string; err: string } {
  const r = spawnSync('redis-cli', args, { cwd, encoding: 'utf8', timeout: 10_000 });
  return { out: r.stdout.trim(), err: r.stderr.trim() };
}

async function startRedis(t: TestContext, dir: string, replicaOf?: number): Promise<number> {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(replicaOf ? ['--replicaof', '127.0.0.1', String(replicaOf)] : [])], { stdio: 'ignore' });
  t.after(() => stopProcess(proc));
  await waitFor(() => redisCli(['-p', String(port), 'PING'], dir).out === 'PONG', 10_000, `redis-server on ${port}`);
  return port;
}

test("docs/tls.md's Redis example: its certificates, its configuration validated and served, redis-cli with and without a client certificate", { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, 'openssl', has('openssl')) || !requireTool(t, 'redis-server and redis-cli', has('redis-server') && has('redis-cli'))) return;
  const dir = tempDir('lemonade-tls-doc-');

  // 1. the openssl commands, as written
  const made = spawnSync('sh', ['-e', '-c', block('sh', 'openssl req -x509')], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  assert.equal(made.status, 0, made.stderr);
  for (const f of ['ca.pem', 'redis.pem', 'redis.key', 'client.pem', 'client.key', 'tickets.key']) assert.ok(existsSync(join(dir, f)), `the commands make ${f}`);

  // 2. the configuration, with this test's paths and addresses: --validate, then a balancer from it
  const master = await startRedis(t, dir);
  const replica = await startRedis(t, dir, master);
  const port = await freePort();
  const toml = block('toml', 'client_auth = "required"');
  const config = fill(toml, [
    ['"0.0.0.0:6379"', `"127.0.0.1:${port}"`],
    ['"127.0.0.1:9090"', '"127.0.0.1:0"'],
    ['/etc/lemonade/tls/', `${dir}/`],
    ['"10.0.0.21:6379"', `"127.0.0.1:${master}"`],
    ['"10.0.0.22:6379"', `"127.0.0.1:${replica}"`],
  ]);
  const file = join(dir, 'config.toml');
  writeFileSync(file, config.replace('"127.0.0.1:0"', '"127.0.0.1:1"'));
  const v = await runCli(['lb', '--config', file, '--validate']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /valid/);
  const b = await startBalancer(t, config);
  await waitFor(async () => {
    const rows = await adminJson<{ name: string; state: string }[]>(b, '/backends');
    return JSON.stringify(Object.fromEntries(rows.map((r) => [r.name, r.state]))) === JSON.stringify({ 'redis-a': 'healthy', 'redis-b': 'unhealthy' });
  }, 15_000, 'redis-a (the master) healthy, redis-b (the replica) unhealthy');

  // 3. the redis-cli command, as written, to this balancer instead of the VIP
  const line = example.split('\n').find((l) => l.startsWith('redis-cli --tls'));
  assert.ok(line, 'the example has a redis-cli --tls command');
  const args = fill(line, [['-h 10.0.0.100', `-h 127.0.0.1 -p ${port}`]]).split(/\s+/).slice(1);
  assert.deepEqual(redisCli(args, dir), { out: 'PONG', err: '' });
  const withWrite = args.slice(0, -1);
  assert.equal(redisCli([...withWrite, 'SET', 'through', 'tls'], dir).out, 'OK');
  assert.equal(redisCli(['-p', String(master), 'GET', 'through'], dir).out, 'tls', 'the write reached the master');
  assert.match(redisCli([...withWrite, 'INFO', 'server'], dir).out, new RegExp(`tcp_port:${master}\\b`));
  const accepted = await b.waitForLog((l) => l['service'] === 'redis' && typeof l['client_cert_subject'] === 'string', 10_000, 'the access log line of a client with a certificate');
  const shown = /"client_cert_subject":"([^"]+)"/.exec(example);
  assert.ok(shown, 'the example shows a client_cert_subject');
  assert.equal(accepted['client_cert_subject'], shown[1]);

  // without a client certificate: refused, counted and logged
  const noCert = args.filter((a, i) => !['--cert', '--key'].includes(a) && !['--cert', '--key'].includes(args[i - 1]!));
  assert.ok(!noCert.includes('client.pem') && noCert.includes('--cacert'), noCert.join(' '));
  const refused = redisCli(noCert, dir);
  assert.notEqual(refused.out, 'PONG', 'no answer without a client certificate');
  assert.match(refused.err, /^Error: /, 'redis-cli says why');
  const failedLine = await b.waitForLog((l) => l['termination'] === 'tls_handshake_failed', 10_000, 'the refused handshake in the access log');
  assert.equal(failedLine['client_cert_subject'], null);
  const m = (await b.admin('/metrics')).body;
  assert.ok(metric(m, 'lemonade_tls_handshakes_total', ['service="redis"', 'result="failed"']) >= 1, 'counted as failed');
  // the extendedKeyUsage keeps them apart: the server's certificate is no client certificate
  assert.ok(example.includes("a server's certificate is refused as a client's"));
  const asServer = args.map((a) => (a === 'client.pem' ? 'redis.pem' : a === 'client.key' ? 'redis.key' : a));
  assert.ok(asServer.includes('redis.pem'), asServer.join(' '));
  assert.notEqual(redisCli(asServer, dir).out, 'PONG', "the server's certificate is refused as a client's");
  await waitFor(async () => metric((await b.admin('/metrics')).body, 'lemonade_tls_handshakes_total', ['service="redis"', 'result="failed"']) >= 2, 5000, 'the second refusal counted');
  assert.ok(doc.includes('lemonade_tls_handshakes_total{service="redis",result="failed"}'));
});
