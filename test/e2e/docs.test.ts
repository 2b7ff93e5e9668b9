// Every error code and every exported metric is documented in docs/operations.md, and every
// termination cause in docs/behaviour.md's table with its clean column; error classes carry
// literal codes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as errors from '../../src/errors';
import { TERMINATIONS, CLEAN_TERMINATIONS } from '../../src/proxy/events';
import { ROOT, startBalancer, startEcho, testConfig, tcpExchange } from '../helpers';

const doc = (name: string): string => readFileSync(join(ROOT, 'docs', name), 'utf8');

test('every error code is documented in docs/operations.md', () => {
  const ops = doc('operations.md');
  for (const code of errors.ERROR_CODES) assert.match(ops, new RegExp('`' + code + '`'), `${code} is not in docs/operations.md`);
});

test("every termination cause is a row of docs/behaviour.md's table, clean or not as the code says", () => {
  const beh = doc('behaviour.md');
  const section = beh.slice(beh.indexOf('## How a connection ends'));
  assert.ok(beh.includes('## How a connection ends'), 'the section is there');
  const rows = new Map([...section.matchAll(/^\| `(\w+)` \| .+ \| (yes|no) \|$/gm)].map((m) => [m[1]!, m[2]!]));
  assert.deepEqual([...rows.keys()], [...TERMINATIONS], 'one row per cause, in the code\'s order');
  for (const t of TERMINATIONS) assert.equal(rows.get(t), CLEAN_TERMINATIONS.has(t) ? 'yes' : 'no', `${t}: clean column`);
});

test('every error class carries a listed literal code and exit code 1', () => {
  const instances: errors.LemonadeError[] = [
    new errors.ConfigInvalidError('f.toml', [{ path: 'proxy.x', line: 3, message: 'bad' }]),
    new errors.ConfigReadError('f.toml', 'EACCES'),
    new errors.ConfigMissingError('f.toml'),
    new errors.BindError('proxy', '127.0.0.1:1', 'EACCES'),
    new errors.ShuttingDownError(),
    new errors.AdminUnreachableError('http://x', 'ECONNREFUSED'),
    new errors.AdminTlsError('https://x', 'DEPTH_ZERO_SELF_SIGNED_CERT'),
    new errors.AdminRequestError('http://x', 404, 'no'),
  ];
  const codes = instances.map((e) => e.code);
  assert.deepEqual([...codes].sort(), [...errors.ERROR_CODES].sort());
  for (const e of instances) assert.equal(e.exitCode, 1);
  assert.equal(instances[0]!.message, 'f.toml: 1 error\n  proxy.x (line 3): bad');
});

test('every lemonade_* metric a running balancer exports is documented in docs/operations.md', async (t) => {
  const echo = await startEcho(t);
  const lb = await startBalancer(t, testConfig([{ address: echo.address }]));
  await tcpExchange(lb.port, 'x');
  const text = (await lb.admin('/metrics')).body;
  const names = new Set([...text.matchAll(/^(lemonade_\w+?)(?:_bucket|_sum|_count)?[{ ]/gm)].map((m) => m[1]!));
  assert.ok(names.size >= 15, `${names.size} metrics`);
  const metrics = doc('operations.md');
  const missing = [...names].filter((n) => !metrics.includes('`' + n));
  assert.deepEqual(missing, []);
});
