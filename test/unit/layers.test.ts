// The layer order of src/: each directory imports only from itself and the directories below it,
// type imports included, so the directories form no cycle. docs/architecture.md draws it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const SRC = resolve(__dirname, '..', '..', 'src');

/** Bottom to top. A layer's files may import their own layer and any below; peers on one rank may not import each other. */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'version.ts'],
  ['config'],
  ['core'],
  ['strategy'],
  ['health', 'proxy'],
  ['obs'],
  ['discovery'],
  ['runtime'],
  ['admin'],
  ['app.ts'],
  ['cli'],
  ['main.ts'],
];

const rank = new Map(LAYERS.flatMap((names, i) => names.map((n) => [n, i] as const)));

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The layer a file of src/ belongs to: its top directory, or its own name at the top. */
const layerOf = (file: string): string => relative(SRC, file).split(sep)[0]!;

/** Relative specifiers a file imports: static, type-only, re-exports, side-effect and dynamic. */
export function relativeImports(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/gms)) out.push(m[1]!);
  for (const m of text.matchAll(/^\s*import\s+'([^']+)'/gm)) out.push(m[1]!);
  for (const m of text.matchAll(/\b(?:import|require)\(\s*'([^']+)'\s*\)/g)) out.push(m[1]!);
  return out.filter((s) => s.startsWith('.'));
}

/** Every import that runs against the order, as "from → to (file: specifier)". */
export function violations(srcFiles: readonly string[], read: (f: string) => string): string[] {
  const bad: string[] = [];
  for (const f of srcFiles) {
    const from = layerOf(f);
    for (const spec of relativeImports(read(f))) {
      const target = resolve(dirname(f), spec);
      const to = layerOf(target.endsWith('.ts') ? target : `${target}.ts`);
      if (to === from) continue;
      const a = rank.get(from);
      const b = rank.get(to);
      if (a === undefined || b === undefined || b >= a) bad.push(`${from} → ${to} (${relative(SRC, f)}: '${spec}')`);
    }
  }
  return bad;
}

test('every directory and top-level file of src/ has a place in the layer order', () => {
  const top = readdirSync(SRC).filter((e) => statSync(join(SRC, e)).isDirectory() || e.endsWith('.ts'));
  assert.deepEqual(top.filter((e) => !rank.has(e)), [], 'add it to LAYERS (and to docs/architecture.md)');
  assert.ok(top.length >= 12, top.join(', '));
});

test('no import runs up or sideways in the layer order, type imports included', () => {
  const bad = violations(files(SRC), (f) => readFileSync(f, 'utf8'));
  assert.deepEqual(bad, []);
});

test('the check sees each kind of import that runs against the order', () => {
  const f = join(SRC, 'core', 'x.ts');
  const cases: [string, boolean][] = [
    ["import type { A } from '../runtime/live-state';", true],
    ["import { b } from '../config/schema';", false],
    ["export { c } from '../admin/server';", true],
    ["import '../obs/metrics';", true],
    ["const m = await import('../cli/demo');", true],
    ["import {\n  d,\n  type E,\n} from '../proxy/listener';", true],
    ["import { f } from './snapshot';", false],
    ["import { g } from '../errors';", false],
  ];
  for (const [text, against] of cases) assert.equal(violations([f], () => text).length, against ? 1 : 0, text);
  // peers on one rank may not import each other
  assert.equal(violations([join(SRC, 'health', 'checker.ts')], () => "import { x } from '../proxy/events';").length, 1);
});
