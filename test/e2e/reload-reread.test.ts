// A config rewritten in place is briefly half-written: a truncated prefix followed by the rest
// within the settle time is read again rather than reported as a failed reload, and only the
// whole file is applied. A file that stays invalid is still reported, once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { startBalancer, startNamed, testConfig, waitFor, adminJson, type Balancer, type TestServer } from '../helpers';

type Status = {
  config: { generation: number; last_reload: { result: string; error: string | null } | null };
  backends: { name: string; weight: number }[];
};

const status = (lb: Balancer): Promise<Status> => adminJson<Status>(lb, '/status');

/** The watcher waits this long for the file to be still (runtime/reload.ts SETTLE_MS). */
const SETTLE_MS = 100;
const ROUNDS = 25;
const POLL_MS = 30;

function cfg(servers: TestServer[], w1: number): string {
  return testConfig(
    servers.map((s, i) => ({ address: s.address, name: `s${i + 1}`, weight: i === 0 ? w1 : 1 })),
    // a short poll, so that the poll as well as the file events meets the file half-written
    { strategy: 'weighted_round_robin', runtime: `config_watch_interval_millis = ${POLL_MS}` },
  );
}

async function failures(lb: Balancer): Promise<{ metric: number; logs: number; events: string[] }> {
  const body = (await lb.admin('/metrics')).body;
  const m = /^lemonade_config_reloads_total\{result="failure"\} (\d+)/m.exec(body);
  const events = (await adminJson<{ kind: string; message: string }[]>(lb, '/events')).filter((e) => e.kind === 'reload' && /reload failed/.test(e.message)).map((e) => e.message);
  return { metric: m ? Number(m[1]) : 0, logs: lb.logs.filter((l) => l['msg'] === 'config reload failed; the running configuration is unchanged').length, events };
}

test('a file written in two parts within the settle time is applied whole, with no failed reload reported', async (t) => {
  const servers = await Promise.all(['s1', 's2'].map((x) => startNamed(x)));
  const lb = await startBalancer(cfg(servers, 1));
  t.after(async () => {
    await lb.stop();
    await Promise.all(servers.map((s) => s.close()));
  });
  const started = readFileSync(lb.configPath, 'utf8');
  for (let round = 1; round <= ROUNDS; round++) {
    const w1 = round + 1;
    // the file as the balancer started from it (its ports filled in), s1's weight changed
    const next = started.replace(/weight = \d+/, `weight = ${w1}`);
    // the prefix stops inside a quoted address: it never parses
    const cut = next.lastIndexOf('address = "') + 'address = "'.length + 3;
    writeFileSync(lb.configPath, next.slice(0, cut));
    // the rest arrives within the settle time, at varying points of it
    await new Promise((r) => setTimeout(r, (round * 17) % (SETTLE_MS - 20)));
    appendFileSync(lb.configPath, next.slice(cut));
    await waitFor(async () => ((await status(lb)).backends.find((b) => b.name === 's1')!.weight === w1 ? true : null), 5000, `round ${round}: the whole file applied`);
  }
  const f = await failures(lb);
  assert.deepEqual(f, { metric: 0, logs: 0, events: [] }, `a half-written file was reported as a failed reload in ${ROUNDS} rounds`);
  assert.equal((await status(lb)).config.last_reload?.result, 'success');
});

test('a file that stays invalid is still reported, once', async (t) => {
  const servers = await Promise.all(['s1', 's2'].map((x) => startNamed(x)));
  const lb = await startBalancer(cfg(servers, 1));
  t.after(async () => {
    await lb.stop();
    await Promise.all(servers.map((s) => s.close()));
  });
  lb.writeConfig(cfg(servers, 1).replace('[proxy]', '[proxy]\nmax_connections = -1'));
  await waitFor(async () => ((await status(lb)).config.last_reload?.result === 'failure' ? true : null), 5000, 'the invalid file to be reported');
  // the same bytes are not reported again: watched over several polls and settle times
  const until = Date.now() + 10 * POLL_MS + 3 * SETTLE_MS;
  while (Date.now() < until) assert.equal((await failures(lb)).metric, 1, 'the invalid file reported once');
  // then a valid save is applied and the report stays the one
  lb.writeConfig(cfg(servers, 7));
  await waitFor(async () => ((await status(lb)).config.last_reload?.result === 'success' ? true : null), 5000, 'the valid file to be applied');
  const f = await failures(lb);
  assert.equal(f.metric, 1, 'one failure counted');
  assert.equal(f.logs, 1, 'one failure logged');
  assert.equal(f.events.length, 1, 'one failure event');
  const logged = lb.logs.find((l) => l['msg'] === 'config reload failed; the running configuration is unchanged')!;
  assert.match(String(logged['error']), /max_connections/, 'the report names the invalid setting');
  assert.equal((await status(lb)).config.generation, 2, 'the invalid file never applied');
});
