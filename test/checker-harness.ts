// The health checker alone, in the test's process: one snapshot of a config text, the checker
// probing its backends, every result collected. Stopped when the test ends.

import type { TestContext } from 'node:test';
import { HealthChecker, type HealthEvent } from '../src/health/checker';
import { Snapshot } from '../src/core/snapshot';
import { LoadTable } from '../src/core/stats';
import { STRATEGIES } from '../src/strategy/index';
import { parseAndValidate } from '../src/config/load';

/** Start a checker over the backends of `text` (a whole config file); its results as they come. */
export function runChecker(t: TestContext, text: string): HealthEvent[] {
  const parsed = parseAndValidate(text, {});
  if (!parsed.ok) throw new Error(`test config: ${JSON.stringify(parsed.issues)}`);
  const snap = new Snapshot(parsed.config, 1, new LoadTable(Date.now), { now: Date.now, random: () => 0.5, strategies: STRATEGIES });
  const results: HealthEvent[] = [];
  const c = new HealthChecker({ current: () => snap, now: Date.now, random: () => 0.5, onResult: (e) => results.push(e) });
  c.sync(snap);
  t.after(() => c.stop());
  return results;
}
