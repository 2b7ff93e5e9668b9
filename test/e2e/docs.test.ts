// Every error code and every exported metric is documented in the README; error classes carry
// literal codes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as errors from '../../src/errors';
import { ROOT, startBalancer, startEcho, testConfig, tcpExchange } from '../helpers';

test('every error code is documented in the README', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  for (const code of errors.ERROR_CODES) assert.match(readme, new RegExp('`' + code + '`'), `${code} is not in README.md`);
});

test('every error class carries a listed literal code and exit code 1', () => {
  const instances: errors.LemonadeError[] = [
    new errors.ConfigInvalidError('f.toml', [{ path: 'proxy.x', line: 3, message: 'bad' }]),
    new errors.ConfigReadError('f.toml', 'EACCES'),
    new errors.ConfigMissingError('f.toml'),
    new errors.BindError('proxy', '127.0.0.1:1', 'EACCES'),
    new errors.ShuttingDownError(),
    new errors.AdminUnreachableError('http://x', 'ECONNREFUSED'),
    new errors.AdminRequestError('http://x', 404, 'no'),
  ];
  const codes = instances.map((e) => e.code);
  assert.deepEqual([...codes].sort(), [...errors.ERROR_CODES].sort());
  for (const e of instances) assert.equal(e.exitCode, 1);
  assert.equal(instances[0]!.message, 'f.toml: 1 error\n  proxy.x (line 3): bad');
});

test('every lemonade_* metric a running balancer exports is documented in the README', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]));
  await tcpExchange(lb.port, 'x');
  const text = (await lb.admin('/metrics')).body;
  const names = new Set([...text.matchAll(/^(lemonade_\w+?)(?:_bucket|_sum|_count)?[{ ]/gm)].map((m) => m[1]!));
  assert.ok(names.size >= 15, `${names.size} metrics`);
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const missing = [...names].filter((n) => !readme.includes('`' + n));
  assert.deepEqual(missing, []);
});
