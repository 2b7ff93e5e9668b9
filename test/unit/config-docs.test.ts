// The configuration reference, docs/settings.md, is written from the settings tables
// (scripts/settings-doc.ts): a key added, removed or changed in src/config/ without running
// `npm run docs:settings` fails here. And no environment variable is read outside those tables.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ENV_SETTINGS } from '../../src/config/schema';
import { PROCESS_VARIABLES } from '../../src/config/environment';
import { ENV_VARIABLES, parseAndValidate } from '../../src/config/load';
import { REGENERATE, SETTINGS_DOC, renderSettingsDoc } from '../../scripts/settings-doc';

const ROOT = join(__dirname, '..', '..'); // no helpers: this needs no build
const EXAMPLE = '**Worked example: PostgreSQL';

test('docs/settings.md is what scripts/settings-doc.ts writes from the settings tables', () => {
  const committed = readFileSync(SETTINGS_DOC, 'utf8');
  const written = renderSettingsDoc();
  if (committed !== written) {
    const a = committed.split('\n');
    const b = written.split('\n');
    const i = a.findIndex((line, n) => line !== b[n]);
    assert.fail(`docs/settings.md is out of date with src/config/ (first difference at line ${i + 1}):\n  committed: ${a[i]}\n  written:   ${b[i]}\nrun: ${REGENERATE}`);
  }
});

test('the reference names every environment variable, and a section per table', () => {
  const doc = renderSettingsDoc();
  const names = [...ENV_SETTINGS.map((t) => t.name), ...PROCESS_VARIABLES.map((v) => v.name)];
  assert.ok(names.length >= 20, `${names.length} variables`);
  assert.deepEqual(names.filter((n) => !doc.includes('`' + n + '`')), []);
  assert.deepEqual(ENV_VARIABLES.filter((n) => !names.includes(n)), []);
  for (const h of ['## `[runtime]`', '## `[[backends]]`', '## `[[services]]`', '## `[admin]`', '## Process environment']) assert.ok(doc.includes(h), h);
  assert.match(doc, /\| `health\.interval` \| duration \| `"10s"` \| > 0, at most 7 days \| `LEMONADE_LB_HEALTH_INTERVAL_MS` \| yes \| /);
});

/** Every .ts file under a directory. */
function files(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('src/ reads no environment variable by a literal name but through the config tables', () => {
  // systemd's own protocol (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*) is read where it is spoken
  const allowed = new Set(['runtime/systemd.ts']);
  const reads: string[] = [];
  for (const f of files(join(ROOT, 'src'))) {
    const name = relative(join(ROOT, 'src'), f);
    if (allowed.has(name)) continue;
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/\benv(?:\[\s*['"`]([A-Z_]+)['"`]\s*\]|\.([A-Z][A-Z_]+)\b)/g)) reads.push(`${name}: ${m[1] ?? m[2]}`);
  }
  assert.deepEqual(reads, []);
});

test('the services worked example (README or docs/) is a valid configuration of three services', () => {
  const text = [readFileSync(join(ROOT, 'README.md'), 'utf8'), ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => readFileSync(join(ROOT, 'docs', f), 'utf8'))].find((t) => t.includes(EXAMPLE));
  assert.ok(text !== undefined, 'the worked example is in the README or docs/');
  const at = text.indexOf(EXAMPLE);
  const start = text.indexOf('```toml\n', at) + '```toml\n'.length;
  const r = parseAndValidate(text.slice(start, text.indexOf('```', start)), {});
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  assert.deepEqual(
    r.config.services.map((s) => [s.name, s.listenAddress, s.algorithm, s.backends.length]),
    [
      ['postgres', '0.0.0.0:5432', 'least_connections', 2],
      ['redis', '0.0.0.0:6379', 'round_robin', 1],
      ['https', '0.0.0.0:443', 'adaptive', 2],
    ],
  );
  assert.equal(r.config.services[2]!.proxy.proxyProtocol, 'v2');
  assert.equal(r.config.services[1]!.health.intervalMs, 1000);
});
