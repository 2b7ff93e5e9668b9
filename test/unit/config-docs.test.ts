// The README's configuration reference is the schema's tables rendered (src/config/schema.ts):
// a key added to a table without its README row, a row left behind by a removed key, or a
// default changed in one place only fails here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENV_SETTINGS, LISTS, SCHEMA, SECTIONS } from '../../src/config/schema';
import { parseAndValidate } from '../../src/config/load';

type AnyRow = { readonly kind: string; readonly def?: unknown; readonly shown?: string; readonly doc: string };

/** A duration as the README writes it: the largest whole unit ("3s", "1h"). */
function duration(ms: number): string {
  if (ms === 0) return '0s';
  for (const [unit, n] of [['h', 3600000], ['m', 60000], ['s', 1000]] as const) if (ms % n === 0) return `${ms / n}${unit}`;
  return `${ms}ms`;
}

/** The default column: a row's `shown` text, or its default as a TOML value would be written. */
function shownDefault(key: string, r: AnyRow): string {
  if (r.shown !== undefined) return r.shown;
  switch (r.kind) {
    case 'int':
    case 'bool':
      return String(r.def);
    case 'duration': // the runtime keys say their unit in their name and are written as integers
      return key.endsWith('_millis') ? String(r.def) : `\`"${duration(r.def as number)}"\``;
    case 'listen':
    case 'address':
      return r.def === null ? '(required)' : `\`"${String(r.def)}"\``;
    case 'cidrs':
    case 'hosts':
      return '`[]`';
    default:
      return `\`"${String(r.def)}"\``;
  }
}

function referenceRows(): string[] {
  return SECTIONS.flatMap((s) =>
    Object.entries(SCHEMA[s] as Record<string, AnyRow>).map(([key, r]) => `| \`${s}${(LISTS as readonly string[]).includes(s) ? '[]' : ''}.${key}\` | ${shownDefault(key, r)} | ${r.doc} |`),
  );
}

const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8'); // no helpers: this needs no build

test("the README's configuration reference table is exactly the schema's rows, in order", () => {
  const lines = readme.split('\n');
  const start = lines.indexOf('| key | default | meaning |');
  assert.ok(start > lines.indexOf('## Configuration') && lines.indexOf('## Configuration') >= 0, 'the reference table stands under ## Configuration');
  let end = start;
  while (end < lines.length && lines[end]!.startsWith('|')) end++;
  assert.deepEqual(lines.slice(start + 2, end), referenceRows());
});

test('every LEMONADE_LB_* variable of the schema is named in the README (or as "…_SUFFIX" in a group)', () => {
  const env = readme.slice(readme.indexOf('### Environment'));
  const missing = ENV_SETTINGS.map((t) => t.name).filter((n) => !env.includes('`' + n + '`') && !env.includes('`…' + n.slice('LEMONADE_LB'.length) + '`'));
  assert.deepEqual(missing, []);
});

test("the README's services worked example is a valid configuration of three services", () => {
  const at = readme.indexOf('**Worked example: PostgreSQL');
  assert.ok(at > 0, 'the worked example is in the README');
  const start = readme.indexOf('```toml\n', at) + '```toml\n'.length;
  const r = parseAndValidate(readme.slice(start, readme.indexOf('```', start)), {});
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
