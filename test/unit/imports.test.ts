// The import rules of the architecture: no import cycles in src/, and the pure layers (config
// but its loader, core/, strategy/, health/state) touch no network, file system, watcher,
// logger or metrics library; strategies import only core/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const SRC = resolve(__dirname, '..', '..', 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Module specifiers imported by a file (static imports and re-exports; type-only ones included). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/gms)) out.push(m[1]!);
  for (const m of text.matchAll(/^\s*import\s+'([^']+)'/gm)) out.push(m[1]!);
  return out;
}

const graph = new Map<string, string[]>();
const external = new Map<string, string[]>();
for (const f of files(SRC)) {
  const key = relative(SRC, f).replace(/\.ts$/, '');
  const specs = importsOf(f);
  graph.set(
    key,
    specs.filter((s) => s.startsWith('.')).map((s) => relative(SRC, resolve(dirname(f), s)).replace(/\.ts$/, '')),
  );
  external.set(key, specs.filter((s) => !s.startsWith('.')));
}

test('src/ has no import cycles', () => {
  const state = new Map<string, 'visiting' | 'done'>();
  const cycles: string[] = [];
  const visit = (n: string, path: string[]): void => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'visiting') {
      cycles.push([...path.slice(path.indexOf(n)), n].join(' → '));
      return;
    }
    state.set(n, 'visiting');
    for (const m of graph.get(n) ?? []) visit(m, [...path, n]);
    state.set(n, 'done');
  };
  for (const n of graph.keys()) visit(n, []);
  assert.ok(graph.size > 30, `found ${graph.size} modules`);
  assert.deepEqual(cycles, []);
});

test('the pure layers import no I/O, logger or metrics library', () => {
  // config/ but load.ts (which reads the file) is pure, as are core/, strategy/ and health/state
  const pure = [...graph.keys()].filter((k) => (k.startsWith('config/') && k !== 'config/load') || k === 'health/state' || k.startsWith('core/') || k.startsWith('strategy/'));
  assert.ok(pure.length >= 10, pure.join(', '));
  const forbidden = /^(node:)?(net|fs|http|child_process|cluster|dgram)$|^(chokidar|pino|prom-client)$/;
  for (const k of pure) {
    const bad = external.get(k)!.filter((s) => forbidden.test(s));
    assert.deepEqual(bad, [], `${k} imports ${bad.join(', ')}`);
  }
  // strategy/index (the table of names to factories) also reads the names' type from config/schema
  for (const k of pure.filter((x) => x.startsWith('strategy/') && x !== 'strategy/index')) {
    const outside = graph.get(k)!.filter((m) => !m.startsWith('core/') && !m.startsWith('strategy/'));
    assert.deepEqual(outside, [], `${k} imports ${outside.join(', ')} (strategies import only core/)`);
  }
});

test('the parts split from the composition root do no I/O themselves, and only app.ts builds them', () => {
  // the live state, the admin views, the reload transaction, the events list and the summary line
  // work on what they are handed: sockets, files and the watcher stay in the parts they are given
  const parts = ['runtime/live-state', 'runtime/reload-transaction', 'runtime/lifecycle', 'admin/views', 'obs/events', 'obs/summary'];
  const forbidden = /^(node:)?(net|fs|fs\/promises|http|child_process|cluster|dgram)$|^(chokidar|pino|prom-client)$/;
  for (const k of parts) {
    assert.ok(graph.has(k), `${k} exists`);
    const bad = external.get(k)!.filter((s) => forbidden.test(s));
    assert.deepEqual(bad, [], `${k} imports ${bad.join(', ')}`);
  }
  // the admin views never reach the HTTP server's code, only its types
  const views = readFileSync(join(SRC, 'admin/views.ts'), 'utf8');
  assert.doesNotMatch(views, /^import\s+\{[^}]*\}\s+from\s+'\.\/server'/m, 'admin/views imports admin/server for types only');
  const wired = ['runtime/reload-transaction', 'runtime/lifecycle', 'admin/views'];
  for (const [k, deps] of graph) {
    if (k === 'app') continue;
    const bad = deps.filter((d) => wired.includes(d));
    assert.deepEqual(bad, [], `${k} imports ${bad.join(', ')} (the composition root wires these)`);
  }
});
