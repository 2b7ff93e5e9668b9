// No secret is ever shown (admin.token): a reload that changes [admin] token says so without either
// value in every place an operator or a page could read it; config.hash does not let a guess be
// checked; --help prints no token; a file over 1 MiB and a missing explicit --config are refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBalancer, startNamed, testConfig, runCli, tempDir } from '../helpers';

const OLD = 'old-S3cret-4f1e9a';
const NEW = 'new-S3cret-77c2d0';

test('a reload that changes admin.token shows neither value: log, /events, /status, /reload answer, status page', async (t) => {
  const srv = await startNamed(t, 's1');
  const config = (token: string): string => testConfig([{ address: srv.address, name: 's1' }], { admin: `listen_address = "127.0.0.1:0"\ntoken = "${token}"`, runtime: 'config_watch_interval_millis = 60000' });
  const lb = await startBalancer(t, config(OLD));
  const fileHash = (): string => createHash('sha256').update(readFileSync(lb.configPath)).digest('hex');
  const hashBefore = ((await lb.admin('/status')).body.match(/"hash": "([0-9a-f]+)"/) ?? [])[1];
  assert.ok(hashBefore, 'config.hash is shown');
  assert.notEqual(hashBefore, fileHash(), 'config.hash is not the hash of a file holding a secret');

  lb.writeConfig(config(NEW));
  const answer = await lb.admin('/reload', 'POST', { authorization: `Bearer ${OLD}` });
  assert.equal(answer.status, 200, answer.body);
  assert.match(answer.body, /admin\.token changed/);
  await lb.waitForLog((l) => String(l['msg']).includes('admin.token changed'), 3000, 'the reload line');

  const seen = [
    answer.body,
    (await lb.admin('/events')).body,
    (await lb.admin('/status')).body,
    (await lb.admin('/')).body,
    (await lb.admin('/backends')).body,
    (await lb.admin('/metrics')).body,
    JSON.stringify(lb.logs),
    lb.stderr(),
  ].join('\n');
  for (const secret of [OLD, NEW]) assert.ok(!seen.includes(secret), `the token ${secret.slice(0, 3)}… appears in an output`);
  const hashAfter = ((await lb.admin('/status')).body.match(/"hash": "([0-9a-f]+)"/) ?? [])[1];
  assert.notEqual(hashAfter, fileHash());
  // the new token is the one asked for now
  assert.equal((await lb.admin('/reload', 'POST', { authorization: `Bearer ${OLD}` })).status, 403);
  assert.equal((await lb.admin('/reload', 'POST', { authorization: `Bearer ${NEW}` })).status, 200);
});

test('--help prints no token, even with LEMONADE_ADMIN_TOKEN set', async () => {
  for (const args of [['--help'], ['lb', '--help'], ['backend', '--help'], ['status', '--help']]) {
    const r = await runCli(args, { env: { LEMONADE_ADMIN_TOKEN: NEW } });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!(r.stdout + r.stderr).includes(NEW), `lemonade ${args.join(' ')} shows the token`);
  }
});

test('a configuration file over 1 MiB is refused before it is parsed, at start and at a reload', async (t) => {
  const dir = tempDir();
  const big = join(dir, 'big.toml');
  const body = '[proxy]\nlisten_address = "127.0.0.1:1"\n[[backends]]\naddress = "127.0.0.1:2"\n';
  writeFileSync(big, body + '#'.repeat(1024 * 1024) + '\n');
  const r = await runCli(['lb', '--config', big, '--validate']);
  assert.equal(r.code, 1);
  assert.match(r.stdout + r.stderr, /at most 1 MiB/);
  const j = await runCli(['lb', '--config', big, '--validate', '--json']);
  assert.equal(j.code, 1);
  assert.equal((JSON.parse(j.stdout) as { valid: boolean }).valid, false);

  const srv = await startNamed(t, 's1');
  const lb = await startBalancer(t, testConfig([{ address: srv.address, name: 's1' }], { runtime: 'config_watch_interval_millis = 60000' }));
  writeFileSync(lb.configPath, readFileSync(lb.configPath, 'utf8') + '#'.repeat(1024 * 1024) + '\n');
  const answer = await lb.admin('/reload', 'POST');
  assert.equal(answer.status, 422);
  assert.match(answer.body, /at most 1 MiB/);
  const st = JSON.parse((await lb.admin('/status')).body) as { config: { generation: number } };
  assert.equal(st.config.generation, 1, 'still serving the first configuration');
});

test('a --config or LEMONADE_LB_CONFIG path that does not exist is refused, even with LEMONADE_LB_BACKEND_ADDRESSES set', async () => {
  const env = { LEMONADE_LB_BACKEND_ADDRESSES: '127.0.0.1:9', LEMONADE_LB_LISTEN_ADDRESS: '127.0.0.1:18080', LEMONADE_LB_ADMIN_ADDRESS: '' };
  const missing = join(tempDir(), 'typo.toml');
  const a = await runCli(['lb', '--config', missing], { env });
  assert.equal(a.code, 1);
  assert.match(a.stderr, /typo\.toml: no such configuration file \(it was named by --config or LEMONADE_LB_CONFIG/);
  const b = await runCli(['lb', '--validate'], { env: { ...env, LEMONADE_LB_CONFIG: missing } });
  assert.equal(b.code, 1);
  assert.match(b.stdout + b.stderr, /no such configuration file/);
  // the default path may be absent: the environment alone is a whole configuration
  const c = await runCli(['lb', '--validate'], { env });
  assert.equal(c.code, 0, c.stdout + c.stderr);
});
