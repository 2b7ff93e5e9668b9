// The admin API's declared JSON (src/admin/wire.ts) against what a running balancer serves: every
// endpoint's answer, the errors included, has each key its declaration requires and no key it
// does not declare, with the declared types; and each declared key, the optional ones included,
// is served at least once (two services, a name found by DNS, agent checks, consistent_hash, two
// worker processes, connections that did not end cleanly, a reload that fails, one a stopped
// worker did not acknowledge).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ACTION,
  AMBIGUOUS,
  BACKENDS,
  ERROR,
  EVENTS,
  HEALTH,
  READY,
  RELOAD,
  SERVICES,
  STATUS,
  TRAFFIC,
  VERSION,
  checkWire,
  declaredKeys,
  type Field,
  type StatusAnswer,
  type TrafficAnswer,
  type WireReport,
} from '../../src/admin/wire';
import { adminJson, portOf, requireTool, startBalancer, startEcho, startTcpServer, tempDir, tcpExchange, testConfig, waitFor } from '../helpers';
import { DNSMASQ, startDnsmasq } from '../dnsmasq';

/** Answers of one declaration, checked together: its problems, and the keys seen across them. */
class Checked {
  readonly report: WireReport = { problems: [], seen: new Set() };
  count = 0;
  constructor(
    readonly name: string,
    readonly field: Field<unknown>,
  ) {}

  add(what: string, body: string): void {
    this.count++;
    const before = this.report.problems.length;
    checkWire(this.field, JSON.parse(body), this.report);
    // say which request an answer's problems came from
    for (let i = before; i < this.report.problems.length; i++) this.report.problems[i] = `${what}: ${this.report.problems[i]}`;
  }
}

/** dnsmasq's address here (dns.test.ts has 127.77.0.53) */
const DNS_IP = '127.77.1.53';

function config(agentPort: number, echo: number, reset: number, dns: string): string {
  return [
    '[runtime]',
    'workers = 2',
    '[proxy]',
    'listen_address = "127.0.0.1:0"',
    'connect_timeout = "1s"',
    '[strategy]',
    'algorithm = "consistent_hash"',
    '[health]',
    'interval = "200ms"',
    'timeout = "200ms"',
    `agent_port = ${agentPort}`,
    'agent_interval = "100ms"',
    '[admin]',
    'listen_address = "127.0.0.1:0"',
    '[dns]',
    `servers = ["${dns}"]`,
    '[[backends]]',
    'id = 0',
    'name = "shared"',
    `address = "127.0.0.1:${echo}"`,
    // its endpoints (local/127.0.0.1:PORT) have a parent, and the name a row in dns
    '[[backends]]',
    'id = 1',
    'name = "local"',
    `address = "local.ldns.test:${echo}"`,
    'resolve = "dns"',
    '[[services]]',
    'name = "other"',
    'listen_address = "127.0.0.1:0"',
    'algorithm = "round_robin"',
    '[[services.backends]]',
    'id = 0',
    'name = "shared"',
    `address = "127.0.0.1:${reset}"`,
    '',
  ].join('\n');
}

test('what a running balancer serves is what src/admin/wire.ts declares, every declared key served', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await startDnsmasq(tempDir('lemonade-dns-'), DNS_IP, ['127.0.0.1 local.ldns.test']);
  t.after(() => dns.stop());
  const echo = await startEcho();
  t.after(() => echo.close());
  // a backend that resets every connection: connections through it do not end cleanly
  const reset = await startTcpServer((s) => s.resetAndDestroy());
  t.after(() => reset.close());
  const agent = await startTcpServer((s) => {
    s.on('error', () => {});
    s.end('up 50%\n');
  });
  t.after(() => agent.close());
  const cfg = config(agent.port, echo.port, reset.port, dns.server);
  const lb = await startBalancer(cfg);
  t.after(() => lb.stop());

  // every part with something to show: checks and agents answered, the name resolved
  await waitFor(
    async () => {
      const st = await adminJson<StatusAnswer>(lb, '/status');
      return (
        st.backends.every((b) => b.last_check?.ok === true && b.agent?.last != null) &&
        st.backends.some((b) => b.parent !== undefined) &&
        st.dns.some((d) => d.addresses !== null && d.last_success !== null) &&
        (st.workers ?? []).every((w) => w.up)
      );
    },
    20_000,
    'health and agent checks and the DNS answer in /status',
  );
  const other = portOf((await adminJson<{ name: string; listen_address: string }[]>(lb, '/services')).find((s) => s.name === 'other')!.listen_address);
  // traffic for the charts; the other service's (to a backend that resets) does not end cleanly
  for (let i = 0; i < 3; i++) {
    await tcpExchange(lb.port, 'ping');
    await tcpExchange(other, 'ping');
  }
  // chart points (a second apart) and the connections that did not end cleanly
  await waitFor(
    async () => {
      const tr = await adminJson<TrafficAnswer>(lb, '/traffic');
      return tr.terminations.length > 0 && tr.services.length === 2 && tr.services.every((s) => s.points.length > 0);
    },
    20_000,
    'chart points and a non-clean termination in /traffic',
  );

  const checked = {
    health: new Checked('HEALTH', HEALTH),
    ready: new Checked('READY', READY),
    status: new Checked('STATUS', STATUS),
    backends: new Checked('BACKENDS', BACKENDS),
    services: new Checked('SERVICES', SERVICES),
    events: new Checked('EVENTS', EVENTS),
    traffic: new Checked('TRAFFIC', TRAFFIC),
    action: new Checked('ACTION', ACTION),
    ambiguous: new Checked('AMBIGUOUS', AMBIGUOUS),
    error: new Checked('ERROR', ERROR),
    reload: new Checked('RELOAD', RELOAD),
    version: new Checked('VERSION', VERSION),
  };
  const ask = async (c: Checked, path: string, method: string, code: number): Promise<void> => {
    const r = await lb.admin(path, method);
    assert.equal(r.status, code, `${method} ${path}: ${r.body}`);
    c.add(`${method} ${path}`, r.body);
  };

  await ask(checked.health, '/health', 'GET', 200);
  await ask(checked.health, '/health?service=default', 'GET', 200);
  await ask(checked.ready, '/ready', 'GET', 200);
  await ask(checked.status, '/status', 'GET', 200);
  await ask(checked.backends, '/backends', 'GET', 200);
  await ask(checked.services, '/services', 'GET', 200);
  await ask(checked.events, '/events', 'GET', 200);
  await ask(checked.traffic, '/traffic', 'GET', 200);
  await ask(checked.version, '/version', 'GET', 200);
  await ask(checked.ambiguous, '/backends/shared/drain', 'POST', 409);
  await ask(checked.action, '/services/default/backends/shared/drain', 'POST', 200);
  await ask(checked.action, '/backends/local/enable', 'POST', 200);
  await ask(checked.error, '/backends/nope/disable', 'POST', 404);
  await ask(checked.error, '/health?service=nope', 'GET', 404);
  await ask(checked.error, '/nope', 'GET', 404);
  await ask(checked.reload, '/reload', 'POST', 200);
  // a worker that cannot acknowledge the new snapshot (stopped) is named in the answer after 2 s
  const stopped = (await adminJson<StatusAnswer>(lb, '/status')).workers![0]!.pid!;
  process.kill(stopped, 'SIGSTOP');
  try {
    await ask(checked.reload, '/reload', 'POST', 200);
  } finally {
    process.kill(stopped, 'SIGCONT');
  }
  // a file that does not validate: the answer lists each problem and where
  lb.replaceConfig(cfg.replace('agent_interval = "100ms"', 'agent_interval = "100ms"\nunhealthy_threshold = "many"'));
  await ask(checked.reload, '/reload', 'POST', 422);
  // the same /status, now with the reload that failed
  await ask(checked.status, '/status', 'GET', 200);

  for (const c of Object.values(checked)) {
    assert.ok(c.count > 0, c.name);
    assert.deepEqual(c.report.problems, [], `${c.name}: what the balancer served departs from src/admin/wire.ts`);
    const unseen = declaredKeys(c.field).filter((k) => !c.report.seen.has(k));
    assert.deepEqual(unseen, [], `${c.name}: declared in src/admin/wire.ts, never served`);
  }
});

test('the check fails on a key missing, a key not declared, a value of another type', async (t) => {
  const echo = await startEcho();
  t.after(() => echo.close());
  const lb = await startBalancer(testConfig([{ address: `127.0.0.1:${echo.port}` }]));
  t.after(() => lb.stop());
  const served = await adminJson<Record<string, unknown>>(lb, '/status');
  assert.deepEqual(checkWire(STATUS, served).problems, []);

  const { connections, backends, ...rest } = served as { connections: Record<string, unknown>; backends: Record<string, unknown>[] };
  const { rejected: _gone, ...fewer } = connections;
  const bad = { ...rest, connections: fewer, backends: [{ ...backends[0], state: 'sleepy', weight: '1' }, ...backends.slice(1)], extra: 1 };
  assert.deepEqual(checkWire(STATUS, bad).problems.sort(), [
    '$.backends[0].state: one of healthy, unhealthy, draining, disabled expected, got "sleepy"',
    '$.backends[0].weight: number expected, got string',
    '$.connections.rejected: missing',
    '$.extra: not declared in admin/wire.ts',
  ]);
  assert.deepEqual(checkWire(STATUS, [served]).problems, ['$: object expected, got an array']);
});
