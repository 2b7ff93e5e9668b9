// Every error code is a literal, documented in the README's error table, and reaches the user
// as a message without a stack trace.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as errors from '../src/errors';
import { ROOT } from './helpers';

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
    new errors.AdminUnreachableError('http://x', 'ECONNREFUSED'),
    new errors.AdminRequestError('http://x', 404, 'no'),
  ];
  const codes = instances.map((e) => e.code);
  assert.deepEqual([...codes].sort(), [...errors.ERROR_CODES].sort());
  for (const e of instances) assert.equal(e.exitCode, 1);
  assert.equal(instances[0]!.message, 'f.toml: 1 error\n  proxy.x (line 3): bad');
});
