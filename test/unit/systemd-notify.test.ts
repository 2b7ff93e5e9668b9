// SystemdNotifier without the native module spawns systemd-notify per message. Messages must
// reach systemd in the order they were sent: READY=1 overtaken by the RELOADING=1 sent before it
// would leave the unit "reloading". A fake systemd-notify on PATH that takes a random time
// records the order in which the messages arrive.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { SystemdNotifier } from '../../src/runtime/systemd';
import { tempDir, waitFor } from '../helpers';

test('systemd-notify messages arrive in the order they were sent, however long each spawn takes', async (t) => {
  const dir = tempDir('lemonade-notify-');
  const log = join(dir, 'received');
  // sleeps 0-40 ms before "delivering": spawned all at once, later messages would often win
  writeFileSync(join(dir, 'systemd-notify'), `#!/bin/sh\nsleep 0.0$(( $$ % 5 ))\necho "$*" >> ${log}\n`);
  chmodSync(join(dir, 'systemd-notify'), 0o755);
  const path = process.env['PATH'];
  process.env['PATH'] = `${dir}:${path}`;
  t.after(() => (process.env['PATH'] = path));
  const n = new SystemdNotifier({ NOTIFY_SOCKET: join(dir, 'notify.sock') }, { native: false });
  const ROUNDS = 10;
  for (let i = 0; i < ROUNDS; i++) {
    n.reloading();
    n.ready(`generation ${i}`);
  }
  const lines = await waitFor(() => {
    const l = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
    return l.length === 2 * ROUNDS ? l : null;
  }, 10_000, 'every message');
  for (let i = 0; i < ROUNDS; i++) {
    assert.match(lines[2 * i]!, /^RELOADING=1 MONOTONIC_USEC=\d+$/, `message ${2 * i}: ${lines[2 * i]}`);
    assert.match(lines[2 * i + 1]!, new RegExp(`^READY=1 STATUS=generation ${i} MAINPID=${process.pid}$`), `message ${2 * i + 1}: ${lines[2 * i + 1]}`);
  }
});
