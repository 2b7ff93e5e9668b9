// `[runtime] workers = 2`: POST /reload answers once every worker process has the new snapshot.
// From the moment the answer arrives, no worker serves the old configuration: a removed service's
// address refuses, a changed backend gets the next connection. A worker that does not acknowledge
// within 2 s (stopped) is named in the answer by its pid; one that exits meanwhile holds nothing up.
// Real processes, real sockets; the file is written and POST /reload sent at once, so the reload
// that applies the change is the one that answers (the watcher's, 100 ms later, finds nothing new).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adminJson, connectOutcome, startBalancer, startNamed, waitFor, type Balancer } from '../helpers';
import { greeting, ports, servicesFile, type SvcSpec } from '../services-helpers';

interface ReloadAnswer {
  result: string;
  generation: number;
  changes?: string;
  error?: string;
  unacknowledged?: number[];
}

const RUNTIME = ['workers = 2', 'config_watch_interval_millis = 60000', 'drain_timeout_millis = 5000'];
/** Reload rounds per test: the window the old order left open is an IPC round trip wide. */
const ROUNDS = 15;

async function reload(lb: Balancer, text: string): Promise<ReloadAnswer> {
  lb.writeConfig(text);
  const r = await lb.admin('/reload', 'POST');
  const a = JSON.parse(r.body) as ReloadAnswer;
  assert.equal(a.result, 'success', r.body);
  return a;
}

const svc = (name: string, port: number, backend: string, address: string): SvcSpec => ({ name, port, backends: [{ name: backend, address }] });

test('workers = 2: when POST /reload answers, a removed service’s address refuses in every worker', async (t) => {
  const [a1, b1] = await Promise.all([startNamed(t, 'a1'), startNamed(t, 'b1')]);
  const [pa, pb] = (await ports(2)) as [number, number];
  const file = (withB: boolean): string =>
    servicesFile({ runtime: RUNTIME, services: [svc('a', pa, 'a1', a1.address), ...(withB ? [svc('b', pb, 'b1', b1.address)] : [])] });
  const lb = await startBalancer(t, file(true), { stopSignal: 'SIGKILL' });
  const accepted: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0) {
      await reload(lb, file(true));
      // (before the fix the answer came before the workers served it: wait, so only the removal is tested)
      await waitFor(async () => (await greeting(pb)) === 'b1', 5000, 'service b back');
    }
    await reload(lb, file(false));
    // right after the answer: 50 connects, none accepted
    for (let i = 0; i < 50; i++) {
      const o = await connectOutcome(pb);
      if (o !== 'ECONNREFUSED') accepted.push(`round ${round} connect ${i}: ${o}`);
    }
    assert.equal(await greeting(pa), 'a1', 'the other service serves');
  }
  assert.deepEqual(accepted, [], 'no connect to the removed address succeeds once the reload answered');
});

test('workers = 2: the first connection after POST /reload answers goes to the new backend', async (t) => {
  const [n1, n2] = await Promise.all([startNamed(t, 'n1'), startNamed(t, 'n2')]);
  const [port] = (await ports(1)) as [number];
  const file = (name: 'n1' | 'n2'): string => servicesFile({ runtime: RUNTIME, services: [svc('s', port, name, (name === 'n1' ? n1 : n2).address)] });
  const lb = await startBalancer(t, file('n1'), { stopSignal: 'SIGKILL' });
  assert.equal(await greeting(port), 'n1');
  const wrong: string[] = [];
  for (let round = 0; round < 2 * ROUNDS; round++) {
    const name = round % 2 === 0 ? 'n2' : 'n1';
    await reload(lb, file(name));
    const got = await greeting(port);
    if (got !== name) wrong.push(`round ${round}: ${got}, not ${name}`);
    // the following ones too (either worker may take each)
    for (let i = 0; i < 3; i++) {
      const next = await greeting(port);
      if (next !== name) wrong.push(`round ${round}, connection ${i + 2}: ${next}, not ${name}`);
    }
  }
  assert.deepEqual(wrong, [], 'every connection after the answer goes to the new backend');
});

test('workers = 2: a stopped worker is named in the reload answer after 2 s; one that exits meanwhile holds nothing up', async (t) => {
  const [n1, n2] = await Promise.all([startNamed(t, 'n1'), startNamed(t, 'n2')]);
  const [port] = (await ports(1)) as [number];
  const file = (name: 'n1' | 'n2'): string => servicesFile({ runtime: RUNTIME, services: [svc('s', port, name, (name === 'n1' ? n1 : n2).address)] });
  const lb = await startBalancer(t, file('n1'), { stopSignal: 'SIGKILL' });
  const pids = (await adminJson<{ workers: { pid: number }[] }>(lb, '/status')).workers.map((w) => w.pid);
  assert.equal(pids.length, 2);
  const stopped = pids[0]!;
  process.kill(stopped, 'SIGSTOP');
  t.after(() => {
    try {
      process.kill(stopped, 'SIGCONT');
    } catch {
      // gone already
    }
  });
  const started = Date.now();
  const late = await reload(lb, file('n2'));
  const took = Date.now() - started;
  process.kill(stopped, 'SIGCONT');
  assert.deepEqual(late.unacknowledged, [stopped], JSON.stringify(late));
  assert.ok(took >= 1900 && took < 6000, `answered after ${took} ms (the 2 s bound)`);
  assert.equal(late.generation, 2, 'applied: the other worker has it');
  const line = await lb.waitForLog((l) => String(l['msg']).startsWith('config reloaded:') && l['generation'] === 2, 2000, 'the reload line');
  assert.deepEqual(line['unacknowledged'], [stopped]);
  assert.match(String(line['msg']), new RegExp(`; not acknowledged within 2 s by worker pid ${stopped}$`));
  // once it runs again it catches up (its answer to /status's pull comes after the snapshot, in
  // order): every connection goes to n2, whichever worker takes it
  const st = await adminJson<{ workers: { pid: number; up: boolean }[] }>(lb, '/status');
  assert.ok(st.workers.every((w) => w.up), JSON.stringify(st.workers));
  for (let i = 0; i < 10; i++) assert.equal(await greeting(port), 'n2');

  // a stopped worker killed while the reload waits for it: the answer comes at its exit
  const victim = pids[1]!;
  process.kill(victim, 'SIGSTOP');
  lb.writeConfig(file('n1'));
  const asked = lb.admin('/reload', 'POST');
  // the other worker serves n1 once it applied it: the reload is waiting for the stopped one now
  await waitFor(async () => (await greeting(port, 300)) === 'n1', 5000, 'the running worker to apply generation 3');
  process.kill(victim, 'SIGKILL');
  const killedAt = Date.now();
  const answer = JSON.parse((await asked).body) as ReloadAnswer;
  const after = Date.now() - killedAt;
  assert.equal(answer.result, 'success');
  assert.equal(answer.unacknowledged, undefined, 'a worker that exited is not waited for');
  assert.ok(after < 1000, `answered ${after} ms after the stopped worker was killed`);
});
