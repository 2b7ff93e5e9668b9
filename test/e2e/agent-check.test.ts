// Agent checks (health.agent_port) end to end: the real balancer, two backends on their own loopback
// addresses (127.77.0.1 and 127.77.0.2), each with a small agent on the same agent_port that
// answers whatever line the test sets. Each word is observed in /backends and in where
// connections go: down and up, drain, ready, maint, NN% (the weights' ratio), 0 %, an agent that
// cannot be reached, and how an operator's drain and the agent's words meet. The same with two
// worker processes, whose snapshots must follow the agent as the control plane's does.

import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { freePort, startBalancer, tcpExchange, testConfig, waitFor, adminJson, type Balancer } from '../helpers';

const HOSTS = ['127.77.0.1', '127.77.0.2'] as const;
const NAMES = ['b1', 'b2'] as const;

type Agent = { state: string; admin: string | null; weight_percent: number | null; last: { at: string; reply: string | null; error: string | null } | null };
type Row = { name: string; state: string; weight: number; effective_weight: number; agent: Agent | null };

/** A TCP server on host that writes `name\n` to each connection, then ends with the client. */
function named(t: TestContext, host: string, name: string): Promise<number> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.write(`${name}\n`);
    s.on('data', () => {});
    s.on('end', () => s.end());
  });
  t.after(() => srv.close());
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => resolve((srv.address() as net.AddressInfo).port));
  });
}

/** The agents: one per host on one port, each answering its current line and closing. */
interface Agents {
  readonly port: number;
  /** set the line the agent of backend i answers from now on */
  say(i: number, line: string): void;
  /** stop (or restart) the agent of backend i */
  setListening(i: number, on: boolean): Promise<void>;
}

async function startAgents(t: TestContext): Promise<Agents> {
  const lines = ['up', 'up'];
  const servers: (net.Server | null)[] = [null, null];
  const listen = (i: number, port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const srv = net.createServer((s) => {
        s.on('error', () => {});
        s.end(`${lines[i]}\n`);
      });
      srv.once('error', reject);
      srv.listen(port, HOSTS[i], () => {
        servers[i] = srv;
        resolve();
      });
    });
  let port = 0;
  for (let attempt = 0; attempt < 10 && port === 0; attempt++) {
    const p = await freePort();
    try {
      await listen(0, p);
      await listen(1, p);
      port = p;
    } catch {
      for (const s of servers) s?.close();
      servers.fill(null);
    }
  }
  if (port === 0) throw new Error('no port free on both agent addresses');
  t.after(() => {
    for (const s of servers) s?.close();
  });
  return {
    port,
    say: (i, line) => (lines[i] = line),
    setListening: async (i, on) => {
      if (!on) {
        const s = servers[i];
        servers[i] = null;
        await new Promise<void>((r) => (s ? s.close(() => r()) : r()));
      } else await listen(i, port);
    },
  };
}

const rows = (lb: Balancer): Promise<Row[]> => adminJson<Row[]>(lb, '/backends');
const row = async (lb: Balancer, name: string): Promise<Row> => (await rows(lb)).find((r) => r.name === name)!;

/**
 * Wait until the balancer has applied `line` from backend `name`'s agent, then one agent round
 * more: with worker processes the change reaches them by a message sent when it was applied, so
 * a later round is a margin many times the message's way.
 */
async function applied(lb: Balancer, name: string, line: string): Promise<Row> {
  const since = Date.now();
  let first = 0;
  await waitFor(
    async () => {
      const a = (await row(lb, name)).agent?.last;
      if (!a || a.reply !== line || Date.parse(a.at) < since) return false;
      first = Date.parse(a.at);
      return true;
    },
    8000,
    `${name}'s agent answer "${line}" applied`,
  );
  return waitFor(
    async () => {
      const r = await row(lb, name);
      return r.agent?.last && Date.parse(r.agent.last.at) > first ? r : null;
    },
    8000,
    `a later agent round of ${name}`,
  );
}

/** `n` connections through the balancer, one after the other; how many each backend answered. */
async function spread(lb: Balancer, n: number): Promise<Record<string, number>> {
  const got: Record<string, number> = { b1: 0, b2: 0 };
  for (let i = 0; i < n; i++) {
    const r = await tcpExchange(lb.port, '', { timeoutMs: 5000 });
    const name = r.data.toString().trim();
    assert.ok(name in got, `connection ${i}: got ${JSON.stringify(name)} (${r.error ?? 'no error'})`);
    got[name]!++;
  }
  return got;
}

interface Setup {
  readonly lb: Balancer;
  readonly agents: Agents;
  /** the balancer's file with these weights and agent lines of [health] (as started: 4 and 4, the agent on) */
  config(weights: readonly number[], agent: boolean): string;
}

async function setup(t: TestContext, runtime = ''): Promise<Setup> {
  const agents = await startAgents(t);
  const ports = [await named(t, HOSTS[0], 'b1'), await named(t, HOSTS[1], 'b2')];
  const config = (weights: readonly number[], agent: boolean): string =>
    testConfig(
      NAMES.map((name, i) => ({ name, address: `${HOSTS[i]}:${ports[i]}`, weight: weights[i]! })),
      { strategy: 'weighted_round_robin', health: `interval = "1s"\ntimeout = "2s"\n${agent ? `agent_port = ${agents.port}\nagent_interval = "100ms"` : ''}`, runtime },
    );
  const lb = await startBalancer(t, config([4, 4], true));
  await applied(lb, 'b1', 'up');
  return { lb, agents, config };
}

describe('agent checks', { concurrency: true }, () => {
  test('up, down, drain, ready, maint, NN% and 0 %, each in /backends and in where connections go; an unreachable agent changes nothing', { timeout: 90_000 }, async (t) => {
    const { lb, agents } = await setup(t);
    let r = await row(lb, 'b1');
    assert.equal(r.state, 'healthy');
    assert.deepEqual({ ...r.agent, last: null }, { state: 'up', admin: null, weight_percent: null, last: null });
    assert.equal(r.effective_weight, 4);
    assert.deepEqual(await spread(lb, 20), { b1: 10, b2: 10 });

    // each line b1's agent says: b1's state, then how many of n connections b1 gets (b2 the rest)
    const sequence: [line: string, state: string, n: number, b1: number, agent: Partial<Agent>][] = [
      ['down#maintenance window', 'unhealthy', 10, 0, { state: 'down' }],
      ['up', 'healthy', 20, 10, { state: 'up' }],
      ['drain', 'draining', 10, 0, { admin: 'drain' }],
      ['up', 'draining', 10, 0, { state: 'up', admin: 'drain' }], // the agent's up does not end its own drain
      ['ready', 'healthy', 20, 10, { admin: 'ready' }],
      ['maint', 'disabled', 10, 0, { admin: 'maint' }],
      ['ready', 'healthy', 20, 10, { admin: 'ready' }],
    ];
    for (const [line, state, n, b1, agent] of sequence) {
      agents.say(0, line);
      r = await applied(lb, 'b1', line);
      assert.equal(r.state, state, `after "${line}"`);
      for (const [k, v] of Object.entries(agent)) assert.equal(r.agent![k as keyof Agent], v, `agent.${k} after "${line}"`);
      assert.deepEqual(await spread(lb, n), { b1, b2: n - b1 }, `connections after "${line}"`);
      if (line.startsWith('down')) assert.equal((await adminJson<{ status: string }>(lb, '/health')).status, 'degraded');
    }

    // 25 % of weight 4 against 100 % of 4: one connection in five (smooth WRR is exact)
    agents.say(0, '25%');
    r = await applied(lb, 'b1', '25%');
    assert.equal(r.agent!.weight_percent, 25);
    assert.equal(r.effective_weight, 1);
    assert.equal(r.weight, 4);
    assert.deepEqual(await spread(lb, 50), { b1: 10, b2: 40 });
    const metrics = (await lb.admin('/metrics')).body;
    assert.match(metrics, /lemonade_backend_weight\{service="default",backend="b1"\} 1\n/);
    assert.match(metrics, /lemonade_agent_checks_total\{service="default",backend="b1",result="success"\} [1-9]\d*/);

    // several words in one line; 0 % takes no new connections and shows as draining
    agents.say(0, 'up 0%');
    r = await applied(lb, 'b1', 'up 0%');
    assert.equal(r.state, 'draining');
    assert.equal(r.effective_weight, 0);
    assert.deepEqual(await spread(lb, 10), { b1: 0, b2: 10 });

    agents.say(0, '100%');
    r = await applied(lb, 'b1', '100%');
    assert.equal(r.state, 'healthy');
    assert.deepEqual(await spread(lb, 20), { b1: 10, b2: 10 });

    // an agent that does not answer changes nothing: the active check owns connectivity
    agents.say(0, 'down');
    await applied(lb, 'b1', 'down');
    await agents.setListening(0, false);
    await waitFor(async () => (await row(lb, 'b1')).agent?.last?.error === 'ECONNREFUSED', 5000, "b1's agent refusing");
    r = await row(lb, 'b1');
    assert.equal(r.state, 'unhealthy');
    assert.equal(r.agent!.state, 'down');
    assert.deepEqual(await spread(lb, 5), { b1: 0, b2: 5 });
    agents.say(0, 'up');
    await agents.setListening(0, true);
    assert.equal((await applied(lb, 'b1', 'up')).state, 'healthy');

    const events = await adminJson<{ kind: string; message: string }[]>(lb, '/events');
    const said = events.map((e) => e.message);
    for (const m of ['b1 is down (agent: down#maintenance window)', 'b1: drain (agent)', 'b1: enable (agent)', 'b1: disable (agent)', 'b1: weight 25% of 4 (agent)']) {
      assert.ok(said.includes(m), `/events has "${m}": ${JSON.stringify(said)}`);
    }
  });

  test("an operator's drain and the agent: up leaves it, ready ends it; an agent's drain said again does not undo the operator's enable", { timeout: 60_000 }, async (t) => {
    const { lb, agents } = await setup(t);
    const drain = await lb.admin('/backends/b1/drain', 'POST');
    assert.equal(drain.status, 200, drain.body);
    agents.say(0, 'up');
    // three agent rounds saying up: still the operator's drain
    for (let i = 0; i < 3; i++) assert.equal((await applied(lb, 'b1', 'up')).state, 'draining');
    assert.deepEqual(await spread(lb, 10), { b1: 0, b2: 10 });

    agents.say(0, 'ready');
    assert.equal((await applied(lb, 'b1', 'ready')).state, 'healthy');
    assert.deepEqual(await spread(lb, 20), { b1: 10, b2: 10 });

    agents.say(0, 'drain');
    assert.equal((await applied(lb, 'b1', 'drain')).state, 'draining');
    const enable = await lb.admin('/backends/b1/enable', 'POST');
    assert.equal(enable.status, 200, enable.body);
    // the agent keeps saying drain: the operator had the last word, until the agent says something else
    for (let i = 0; i < 3; i++) assert.equal((await applied(lb, 'b1', 'drain')).state, 'healthy');
    assert.deepEqual(await spread(lb, 20), { b1: 10, b2: 10 });
  });

  test("the agent's down and weight survive a reload (the weight applies to the new configured one); a reload that turns agent checks off forgets them", { timeout: 60_000 }, async (t) => {
    const { lb, agents, config } = await setup(t);
    agents.say(0, 'down 50%');
    let r = await applied(lb, 'b1', 'down 50%');
    assert.deepEqual([r.state, r.effective_weight], ['unhealthy', 2]);

    lb.writeConfig(config([8, 4], true));
    await waitFor(async () => (await row(lb, 'b1')).weight === 8, 10_000, 'the reload to weight 8');
    r = await row(lb, 'b1');
    assert.deepEqual([r.state, r.effective_weight, r.agent!.state, r.agent!.weight_percent], ['unhealthy', 4, 'down', 50]);
    agents.say(0, 'up');
    r = await applied(lb, 'b1', 'up');
    assert.deepEqual([r.state, r.effective_weight], ['healthy', 4]);
    assert.deepEqual(await spread(lb, 16), { b1: 8, b2: 8 });

    agents.say(0, 'down');
    await applied(lb, 'b1', 'down');
    lb.writeConfig(config([8, 4], false));
    await waitFor(async () => (await row(lb, 'b1')).agent === null, 10_000, 'the reload without agent_port');
    r = await row(lb, 'b1');
    assert.deepEqual([r.state, r.effective_weight], ['healthy', 8]);
    assert.deepEqual(await spread(lb, 12), { b1: 8, b2: 4 });
  });

  test('with two worker processes: down, NN% and drain reach every worker', { timeout: 60_000 }, async (t) => {
    const { lb, agents } = await setup(t, 'workers = 2');
    const status = await adminJson<{ workers?: unknown[] }>(lb, '/status');
    assert.equal(status.workers?.length, 2);

    agents.say(0, 'down');
    assert.equal((await applied(lb, 'b1', 'down')).state, 'unhealthy');
    assert.deepEqual(await spread(lb, 20), { b1: 0, b2: 20 });

    agents.say(0, 'up 25%');
    assert.equal((await applied(lb, 'b1', 'up 25%')).effective_weight, 1);
    // each worker runs its own smooth WRR over the connections the kernel gives it: about one in five
    const got = await spread(lb, 100);
    assert.ok(got.b1! >= 12 && got.b1! <= 28, `b1 got ${got.b1} of 100 at 25 % of its weight (expected about 20)`);

    agents.say(0, 'drain');
    assert.equal((await applied(lb, 'b1', 'drain')).state, 'draining');
    assert.deepEqual(await spread(lb, 20), { b1: 0, b2: 20 });
  });
});
