// The access log across a real `logrotate -f` (Debian package logrotate) under load: a state
// file and a configuration of the test's own pointing at the running balancer's log file, whose
// postrotate signals it (SIGUSR1, as the packaged snippet does through systemctl). Every
// connection made is a line in one of the files: none lost across three rotations. The packaged
// snippet itself is parsed by logrotate too.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, requireTool, tempDir, waitFor } from '../helpers';
import { accessLogTable, echoBalancer, exchange, jsonLines } from '../access-log-helpers';

const LOGROTATE = spawnSync('sh', ['-c', 'command -v logrotate || ls /usr/sbin/logrotate'], { encoding: 'utf8' }).stdout.trim().split('\n')[0] ?? '';

test('logrotate -f three times under load: every connection is one line in the live file or a rotated one', { timeout: 120_000 }, async (t) => {
  if (!requireTool(t, 'logrotate (Debian package logrotate)', LOGROTATE !== '')) return;
  const dir = tempDir();
  const log = join(dir, 'access.log');
  const { lb, port } = await echoBalancer(t, () => accessLogTable(log));
  const conf = join(dir, 'logrotate.conf');
  writeFileSync(conf, `${log} {\n  rotate 5\n  missingok\n  nocompress\n  postrotate\n    kill -USR1 ${lb.proc.pid}\n  endscript\n}\n`);
  const state = join(dir, 'logrotate.state');

  let made = 0;
  let stop = false;
  const client = async (): Promise<void> => {
    for (let i = 0; i < 100_000 && !stop; i++) {
      await exchange(port, 'rotate me');
      made++;
    }
  };
  const load = Promise.all(Array.from({ length: 8 }, client));
  const files = (): string[] => [log, ...[1, 2, 3, 4, 5].map((i) => `${log}.${i}`)].filter((f) => existsSync(f));
  const lines = (): number => files().reduce((n, f) => n + jsonLines(f).length, 0);
  await waitFor(() => made >= 200, 30_000, '200 connections before the first rotation');
  for (let r = 1; r <= 3; r++) {
    const at = made;
    const out = spawnSync(LOGROTATE, ['-f', '-s', state, conf], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(out.status, 0, `logrotate: ${out.stdout}${out.stderr}`);
    assert.ok(existsSync(`${log}.${r}`), `rotation ${r} renamed the file`);
    // the balancer reopened by its name and goes on writing there, under load
    await waitFor(() => existsSync(log) && jsonLines(log).length > 0 && made >= at + 100, 30_000, `lines in the new file after rotation ${r}`);
  }
  stop = true;
  await load;
  await waitFor(() => lines() === made, 20_000, `${made} lines over ${files().join(', ')} (have ${lines()})`);
  const per = files().map((f) => `${f.slice(dir.length + 1)}: ${jsonLines(f).length}`);
  t.diagnostic(`${made} connections, ${lines()} lines: ${per.join(', ')}`);
  for (const f of files()) assert.ok(jsonLines(f).length > 0, `${f} has lines`);
  assert.equal(files().length, 4);
  // whole lines only: each parses (jsonLines throws otherwise) and names its termination
  for (const f of files()) for (const l of jsonLines(f)) assert.equal(l['termination'], 'client_closed');
  assert.equal(readFileSync(log, 'utf8').endsWith('\n'), true);
});

test('the packaged snippet (/etc/logrotate.d/lemonade-lb) parses, and its postrotate sends SIGUSR1 to the unit', (t) => {
  if (!requireTool(t, 'logrotate (Debian package logrotate)', LOGROTATE !== '')) return;
  const snippet = join(ROOT, 'packaging', 'logrotate', 'lemonade-lb');
  const state = join(tempDir(), 'state');
  const out = spawnSync(LOGROTATE, ['-d', '-s', state, snippet], { encoding: 'utf8', timeout: 30_000 });
  const text = `${out.stdout}${out.stderr}`;
  assert.equal(out.status, 0, text);
  assert.doesNotMatch(text, /^error:/m);
  assert.match(text, /rotating pattern: \/var\/log\/lemonade\/\*\.log/);
  assert.match(readFileSync(snippet, 'utf8'), /postrotate\n\s+systemctl kill --signal=USR1 lemonade-lb\.service/);
});
