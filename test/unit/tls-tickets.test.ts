// [tls_tickets] key_file and the session ticket key's owner: the file's two forms (HAProxy's base64
// lines, nginx's 48 raw bytes) and what is wrong with a bad one, named by key and path, never by
// contents (src/config/ticket-keys.ts); the file read, hashed and watched with the tls files
// (src/config/load.ts); the key made by the control plane without a file, replaced every 12 h, and
// a reload's key (src/runtime/ticket-keys.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashWithFiles, loadFromText, parseAndValidate, tlsFiles } from '../../src/config/load';
import { parseTicketKeys } from '../../src/config/ticket-keys';
import { TICKET_KEY_ROTATION_MS, TicketKeys } from '../../src/runtime/ticket-keys';
import { ConfigInvalidError } from '../../src/errors';
import { requireTool, tempDir } from '../helpers';

const OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

test('a key file: base64 lines (the next-to-last of several is used) or 48 raw bytes', () => {
  const [k1, k2, k3] = [randomBytes(48), randomBytes(48), randomBytes(48)];
  assert.deepEqual(parseTicketKeys(Buffer.from(`${k1.toString('base64')}\n`)), k1);
  assert.deepEqual(parseTicketKeys(Buffer.from(`# made by openssl rand -base64 48\n\n  ${k1.toString('base64')}  \r\n`)), k1);
  assert.deepEqual(parseTicketKeys(Buffer.from([k1, k2, k3].map((k) => k.toString('base64')).join('\n'))), k2);
  assert.deepEqual(parseTicketKeys(Buffer.from([k1, k2].map((k) => k.toString('base64')).join('\n'))), k1);
  // nginx's ssl_session_ticket_key: the bytes themselves
  let raw = randomBytes(48);
  while (raw.every((b) => b >= 0x20 && b < 0x7f)) raw = randomBytes(48);
  assert.deepEqual(parseTicketKeys(raw), raw);
});

test('a bad key file says what is wrong, never what it read', () => {
  const cases: [Buffer, RegExp][] = [
    [Buffer.from(`${randomBytes(32).toString('base64')}\n`), /^line 1 decodes to 32 bytes; a ticket key is 48 bytes$/],
    [Buffer.from(`${randomBytes(80).toString('base64')}\n`), /^line 1 decodes to 80 bytes; a ticket key is 48 bytes \(80-byte AES-256 keys are not supported/],
    [Buffer.from('# comment\nnot base64 at all!\n'), /^line 2 is not a base64 key/],
    [Buffer.from(`${randomBytes(48).toString('base64').slice(0, -1)}\n`), /^line 1 is not a base64 key/],
    [Buffer.from('\n# only a comment\n'), /^no key/],
    [Buffer.alloc(0), /^no key/],
    [Buffer.alloc(80, 0xff), /^80 raw bytes \(an AES-256 key\) are not supported/],
    [Buffer.alloc(100_000, 0x41), /too large/],
  ];
  for (const [bytes, expected] of cases) {
    const r = parseTicketKeys(bytes);
    assert.equal(typeof r, 'string', `refused: ${expected}`);
    assert.match(r as string, expected);
  }
});

test('the key file is part of the load: checked (key path and file named), hashed and watched with the tls files', () => {
  const dir = tempDir();
  const file = join(dir, 'ticket.keys');
  const secret = randomBytes(32).toString('base64');
  writeFileSync(file, `${secret}\n`);
  const text = `[proxy]\nlisten_address = "127.0.0.1:8080"\n[tls_tickets]\nkey_file = "${file}"\n[[backends]]\naddress = "127.0.0.1:1"\n`;
  const parsed = parseAndValidate(text, {});
  assert.ok(parsed.ok);
  assert.equal(parsed.config.tls_tickets.keyFile, file);
  assert.deepEqual(tlsFiles(parsed.config), [file]);
  let error: ConfigInvalidError | null = null;
  try {
    loadFromText('/etc/lemonade/config.toml', text, {});
  } catch (e) {
    error = e as ConfigInvalidError;
  }
  assert.ok(error instanceof ConfigInvalidError);
  assert.deepEqual(error.issues.map((i) => i.path), ['tls_tickets.key_file']);
  assert.ok(error.message.includes(file) && !error.message.includes(secret), error.message);
  const key = randomBytes(48);
  writeFileSync(file, `${key.toString('base64')}\n`);
  const loaded = loadFromText('/etc/lemonade/config.toml', text, {});
  assert.deepEqual(loaded.ticketKey, key);
  // the watcher's hash is the load's (else every poll would reload), and a new key changes it
  assert.equal(hashWithFiles(text, tlsFiles(loaded.config)), loaded.hash);
  writeFileSync(file, `${randomBytes(48).toString('base64')}\n`);
  assert.notEqual(hashWithFiles(text, tlsFiles(loaded.config)), loaded.hash);
  // no file named: no key from the load
  assert.equal(loadFromText('/etc/lemonade/config.toml', text.replace(/\[tls_tickets\]\nkey_file = ".*"\n/, ''), {}).ticketKey, null);
});

test('with TLS termination files too, the watcher\'s hash is the load\'s', (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'a.key', '-out', 'a.pem', '-days', '1', '-subj', '/CN=a.test'], { cwd: dir });
  assert.equal(r.status, 0);
  const file = join(dir, 'ticket.keys');
  writeFileSync(file, `${randomBytes(48).toString('base64')}\n`);
  const text = `[proxy]\nlisten_address = "127.0.0.1:8080"\n[tls]\ncertificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }]\n[tls_tickets]\nkey_file = "${file}"\n[[backends]]\naddress = "127.0.0.1:1"\n`;
  const loaded = loadFromText('/etc/lemonade/config.toml', text, {});
  assert.deepEqual(tlsFiles(loaded.config), [`${dir}/a.pem`, `${dir}/a.key`, file]);
  assert.equal(hashWithFiles(text, tlsFiles(loaded.config)), loaded.hash);
});

function fakeClock(): { every: (ms: number, f: () => void) => () => void; tick: () => void; periods: number[]; cancelled: number } {
  const jobs = new Set<() => void>();
  const c = {
    periods: [] as number[],
    cancelled: 0,
    every: (ms: number, f: () => void) => {
      c.periods.push(ms);
      jobs.add(f);
      return () => {
        c.cancelled++;
        jobs.delete(f);
      };
    },
    tick: () => {
      for (const f of [...jobs]) f();
    },
  };
  return c;
}

test('without key_file the control plane makes the key and replaces it every 12 hours; a key_file stops that', () => {
  const clock = fakeClock();
  const applied: Buffer[] = [];
  const keys = new TicketKeys(null, { apply: (k) => applied.push(k), every: clock.every });
  const first = keys.current;
  assert.equal(first.length, 48);
  assert.deepEqual(clock.periods, [TICKET_KEY_ROTATION_MS]);
  assert.equal(TICKET_KEY_ROTATION_MS, 12 * 3600 * 1000);
  clock.tick();
  assert.equal(applied.length, 1);
  assert.notDeepEqual(keys.current, first);
  assert.equal(applied[0], keys.current);
  // a reload without a file keeps the key and its schedule
  assert.equal(keys.reloaded(null), false);
  assert.equal(applied.length, 1);
  // a file's key replaces it and the schedule stops
  const fromFile = randomBytes(48);
  assert.equal(keys.reloaded(fromFile), true);
  assert.deepEqual(keys.current, fromFile);
  assert.equal(clock.cancelled, 1);
  clock.tick();
  assert.deepEqual(keys.current, fromFile, 'no rotation of a file\'s key');
  // the same bytes again: no change; other bytes: a change
  assert.equal(keys.reloaded(Buffer.from(fromFile)), false);
  const next = randomBytes(48);
  assert.equal(keys.reloaded(next), true);
  assert.equal(applied.at(-1), next);
  // the file removed: a new key made here (not the file's), rotating again
  assert.equal(keys.reloaded(null), true);
  assert.notDeepEqual(keys.current, next);
  assert.deepEqual(clock.periods, [TICKET_KEY_ROTATION_MS, TICKET_KEY_ROTATION_MS]);
  keys.stop();
});

test('a key_file at start: its key, no schedule', () => {
  const clock = fakeClock();
  const key = randomBytes(48);
  const keys = new TicketKeys(key, { apply: () => assert.fail('nothing applied'), every: clock.every });
  assert.equal(keys.current, key);
  assert.deepEqual(clock.periods, []);
});

test('every tls file at once (the admin API\'s, a terminating service\'s, backend_tls\'s, the ticket key): the watcher\'s hash is the load\'s', (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  for (const n of ['a', 'admin', 'client']) {
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.pem`, '-days', '1', '-subj', `/CN=${n}.test`], { cwd: dir });
    assert.equal(r.status, 0);
  }
  const file = join(dir, 'ticket.keys');
  writeFileSync(file, `${randomBytes(48).toString('base64')}\n`);
  const text =
    `[admin]\nlisten_address = "127.0.0.1:9090"\ntls_cert = "${dir}/admin.pem"\ntls_key = "${dir}/admin.key"\n` +
    `[proxy]\nlisten_address = "127.0.0.1:8080"\n[tls]\ncertificates = [{ cert = "${dir}/a.pem", key = "${dir}/a.key" }]\n` +
    `[backend_tls]\nenabled = true\nca = "${dir}/a.pem"\ncert = "${dir}/client.pem"\nkey = "${dir}/client.key"\n` +
    `[tls_tickets]\nkey_file = "${file}"\n[[backends]]\naddress = "127.0.0.1:1"\n`;
  const loaded = loadFromText('/etc/lemonade/config.toml', text, {});
  assert.equal(tlsFiles(loaded.config).length, 7, 'a.pem is named twice, read once');
  assert.equal(hashWithFiles(text, tlsFiles(loaded.config)), loaded.hash, 'else the watcher would reload at every poll');
});
