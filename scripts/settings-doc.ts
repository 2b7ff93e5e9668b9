// Writes docs/settings.md, the configuration reference, from the settings tables
// (src/config/settings.ts) and the process-level environment variables (src/config/environment.ts).
// test/unit/config-docs.test.ts fails when the committed file differs from what this writes.
//
//   npm run docs:settings            (node --import tsx scripts/settings-doc.ts)

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LISTS, SCHEMA, SECTIONS, type Row } from '../src/config/schema';
import { defaultOf, MAX_MS } from '../src/config/fields';
import { MAX_REGEX_PROGRAM, MAX_STEPS } from '../src/config/step-text';
import { PROCESS_VARIABLES } from '../src/config/environment';

export const SETTINGS_DOC = join(__dirname, '..', 'docs', 'settings.md');
export const REGENERATE = 'npm run docs:settings';


/** A duration as a file would write it: the largest whole unit ("3s", "1h"). */
function duration(ms: number): string {
  if (ms === 0) return '0s';
  for (const [unit, n] of [['h', 3600000], ['m', 60000], ['s', 1000]] as const) if (ms % n === 0) return `${ms / n}${unit}`;
  return `${ms}ms`;
}

/** The default column: a row's `shown` text, or its default as a TOML value would be written. */
function shownDefault(key: string, r: Row): string {
  if (r.shown !== undefined) return r.shown;
  // every list kind defaults to empty (config/fields.ts's defaultOf says which they are)
  if (Array.isArray(defaultOf(r))) return '`[]`';
  switch (r.kind) {
    case 'int':
    case 'bool':
    case 'fraction':
      return String(r.def);
    case 'duration': // the runtime keys say their unit in their name and are written as integers
      return key.endsWith('_millis') ? String(r.def) : `\`"${duration(r.def)}"\``;
    case 'listen':
    case 'address':
      return r.def === null ? '(required)' : `\`"${String(r.def)}"\``;
    default: // a string, an enum or a regex (the list kinds returned above)
      return `\`"${String('def' in r ? r.def : '')}"\``;
  }
}

const TYPES: Record<Row['kind'], string> = {
  int: 'integer',
  duration: 'duration',
  enum: 'string',
  string: 'string',
  listen: 'address',
  address: 'address',
  cidrs: 'array of CIDRs',
  hosts: 'array of host names',
  servers: 'array of addresses',
  rate: 'rate',
  bool: 'boolean',
  fraction: 'number',
  bytes: 'string with escapes',
  regex: 'regular expression (RE2)',
  steps: 'array of tables',
  certificates: 'array of tables',
  strings: 'array of strings',
};

/** What values a row takes beyond its type. */
function range(r: Row): string {
  switch (r.kind) {
    case 'int':
      return r.max === undefined ? `>= ${r.min}` : `${r.min}-${r.max}`;
    case 'duration':
      return `${r.zeroOk === true ? '>= 0' : '> 0'}, at most ${r.maxMs !== undefined ? duration(r.maxMs) : `${MAX_MS / 86400000} days`}`;
    case 'enum':
      return r.values.map((v) => `\`"${v}"\``).join(', ');
    case 'listen':
      return `\`host:port\`, port 1-65535${r.emptyOk ? '; `""` = none' : ''}`;
    case 'address':
      return '`host:port`, port 1-65535';
    case 'fraction':
      return '> 0, at most 1';
    case 'rate':
      return '`N/s`, `N/m`, `N/h`, or `""`';
    case 'regex':
      return `at most ${MAX_REGEX_PROGRAM} instructions compiled`;
    case 'steps':
      return `at most ${MAX_STEPS}`;
    default:
      return '';
  }
}

const cell = (s: string): string => s.replace(/\|/g, '\\|');

/** The reference, as docs/settings.md holds it. */
export function renderSettingsDoc(): string {
  const out: string[] = [
    '# Configuration reference',
    '',
    `<!-- Written by \`${REGENERATE}\` from src/config/settings.ts and src/config/environment.ts: edit those, not this file. -->`,
    '',
    'Every section and key of the configuration file (TOML), in the order of the settings tables. Durations',
    'are whole milliseconds or a string with a unit (`"250ms"`, `"10s"`, `"2m"`, `"1h"`). A key marked',
    '*service: yes* may be set in a `[[services]]` entry (its `[health]` keys in `[services.health]`), where',
    'it defaults to the top-level value. A key with an environment variable takes that variable\'s value over',
    "the file's, at start and at every reload (whole numbers; milliseconds for durations); it applies to the",
    'service the top-level keys make, not to `[[services]]` entries.',
  ];
  for (const s of SECTIONS) {
    const list = (LISTS as readonly string[]).includes(s);
    out.push('', `## \`${list ? `[[${s}]]` : `[${s}]`}\``, '', '| key | type | default | range | environment | service | meaning |', '|---|---|---|---|---|---|---|');
    for (const [key, r] of Object.entries(SCHEMA[s] as Record<string, Row>)) {
      const type = TYPES[r.kind] + (r.secret === true ? ', secret (never shown)' : '');
      const env = r.env === undefined ? '' : `\`${r.env}\``;
      const row = [`\`${s}${list ? '[]' : ''}.${key}\``, type, shownDefault(key, r), range(r), env, r.overridable === true ? 'yes' : '', r.doc];
      out.push(`| ${row.map(cell).join(' | ')} |`);
    }
  }
  out.push(
    '',
    '## Process environment',
    '',
    'Variables that are not a key of the file: where it is, the backend list, and what the process does whatever',
    'the file says.',
    '',
    '| variable | default | meaning |',
    '|---|---|---|',
    ...PROCESS_VARIABLES.map((v) => `| ${[`\`${v.name}\``, v.def === '' ? '(unset)' : `\`${v.def}\``, v.doc].map(cell).join(' | ')} |`),
    '',
  );
  return out.join('\n');
}

if (require.main === module) {
  writeFileSync(SETTINGS_DOC, renderSettingsDoc());
  process.stdout.write(`wrote ${SETTINGS_DOC}\n`);
}
