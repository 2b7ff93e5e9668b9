// Smoke test of `npm run bench:balance`: runs scripts/bench-balance.ts in --quick mode (real
// workers and balancers, ~20 s) so the script cannot rot. The figures of so short a run on a
// shared machine mean little: only completion, 0 errors and a row per strategy are asserted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runScriptBounded } from '../helpers';

const STRATEGIES = ['round_robin', 'weighted_round_robin', 'least_connections', 'fastest_response', 'adaptive'];
const BOUND_MS = 40_000;

test('bench:balance --quick completes with 0 errors and a row per strategy', { timeout: BOUND_MS + 5000 }, async () => {
  const { code, out, err } = await runScriptBounded('bench-balance.ts', ['--quick', '--json'], BOUND_MS);
  const ctx = `exit ${code}\nstdout:\n${out}\nstderr:\n${err}`;
  assert.equal(code, 0, ctx);

  // the human table: one row per strategy with its error count last
  for (const s of STRATEGIES) {
    const row = out.split('\n').find((l) => l.startsWith(`| ${s} `));
    assert.ok(row, `no table row for ${s}\n${ctx}`);
    const cells = row.split('|').map((c) => c.trim()).filter((c) => c !== '');
    assert.equal(cells[cells.length - 1], '0', `errors for ${s}\n${ctx}`);
    assert.ok(Number(cells[1]) > 0, `no requests for ${s}\n${ctx}`);
  }

  // the machine-readable line agrees
  const last = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  assert.ok(last, ctx);
  const j = JSON.parse(last) as { rows: { strategy: string; requests: number; errors: number; slowShare: number }[] };
  assert.deepEqual(
    j.rows.map((r) => r.strategy),
    STRATEGIES,
  );
  for (const r of j.rows) {
    assert.equal(r.errors, 0, `${r.strategy}: ${ctx}`);
    assert.ok(r.requests > 0 && r.slowShare >= 0 && r.slowShare <= 1, `${r.strategy}: ${ctx}`);
  }
});
