// A UDP service with worker processes: real `dig` clients, each from a source port of its own and
// each sending several queries, through `[runtime] workers = 2` to two real dnsmasq backends.
// Every answer comes back; each client's queries are one flow on one worker (one access log line,
// datagrams_in = the queries it sent, every answer from the one backend its flow picked: a flow
// split between workers would be two lines, each picking on its own); /backends, /status and the
// UDP metrics are the sums over the workers. With SO_REUSEPORT (Node 22.12+) both workers take
// flows; without it (Node 20, or LEMONADE_LB_REUSE_PORT=0) worker 0 alone serves the address. A
// reload that adds a UDP service has the workers bind its address as UDP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { adminJson, freePort, requireTool, startBalancer, startNamed, tcpExchange, tempDir, testConfig, waitFor, type Balancer } from '../helpers';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from '../dnsmasq';
import { reusePort } from '../../src/proxy/listener';

const DIG = spawnSync('sh', ['-c', 'command -v dig'], { encoding: 'utf8' }).stdout.trim();
const NAME = 'who.ldns.test';
const ANSWER = ['10.0.0.1', '10.0.0.2'];
const CLIENTS = 24;
/** queries each client sends, one after the other, from its one source port */
const QUERIES = 3;

/** `dig -b 127.0.0.1#from`: QUERIES queries from one source port; the answers, one per query ("none" for one that got none). */
function digFrom(port: number, from: number): Promise<string[]> {
  const args = ['@127.0.0.1', '-p', String(port), '-b', `127.0.0.1#${from}`, '+short', '+tries=1', '+time=3'];
  for (let i = 0; i < QUERIES; i++) args.push(NAME, 'A');
  return new Promise((resolve) => {
    execFile(DIG, args, { encoding: 'utf8', timeout: 20_000 }, (_err, stdout) => {
      const lines = stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith(';'));
      resolve(Array.from({ length: QUERIES }, (_, i) => (/^\d+\.\d+\.\d+\.\d+$/.test(lines[i] ?? '') ? lines[i]! : 'none')));
    });
  });
}

const accessLines = (lb: Balancer): Record<string, unknown>[] => lb.logs.filter((l) => typeof l['termination'] === 'string' && 'datagrams_in' in l);

async function metric(lb: Balancer, name: string): Promise<string[]> {
  return (await lb.admin('/metrics')).body.split('\n').filter((l) => l.startsWith(name));
}

function config(dns: readonly Dnsmasq[]): string {
  return `[proxy]
listen_address = "127.0.0.1:0"
protocol = "udp"
udp_idle_timeout = "4s"
[strategy]
algorithm = "round_robin"
[health]
interval = "10s"
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[runtime]
workers = 2
${dns.map((d, i) => `[[backends]]\nname = "dns${i + 1}"\naddress = "${d.server}"\n`).join('')}`;
}

const MODES: readonly { name: string; env: Record<string, string>; reuse: boolean }[] = reusePort(process.version, {})
  ? [
      { name: 'SO_REUSEPORT: each worker binds the address', env: {}, reuse: true },
      { name: 'LEMONADE_LB_REUSE_PORT=0: worker 0 alone serves the address', env: { LEMONADE_LB_REUSE_PORT: '0' }, reuse: false },
    ]
  : [{ name: `Node ${process.version} has no dgram reusePort: worker 0 alone serves the address`, env: {}, reuse: false }];

for (const mode of MODES) {
  test(`workers = 2, ${mode.name}: ${CLIENTS} clients of ${QUERIES} queries, each one flow on one worker, figures summed`, { timeout: 90_000 }, async (t) => {
    if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
    if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
    const dns: Dnsmasq[] = [];
    t.after(() => Promise.all(dns.map((d) => d.stop())));
    for (const i of [0, 1]) dns.push(await startDnsmasq(tempDir('lemonade-udp-workers-'), `127.79.0.${i + 1}`, [`${ANSWER[i]} ${NAME}`]));
    const lb = await startBalancer(t, config(dns), { env: mode.env });

    const ports = new Set<number>();
    while (ports.size < CLIENTS) ports.add(await freePort());
    const answers = await Promise.all([...ports].map((p) => digFrom(lb.port, p)));
    const byClient = new Map<string, string[]>([...ports].map((p, i) => [`127.0.0.1:${p}`, answers[i]!]));
    for (const [client, a] of byClient) {
      assert.ok(a.every((x) => ANSWER.includes(x)), `${client}: ${a.join(', ')}`);
      // one flow, one pick: every answer of a client from the same backend
      assert.equal(new Set(a).size, 1, `${client} was answered by both backends: ${a.join(', ')}`);
    }

    // the flows are open (udp_idle_timeout 4 s): the admin figures are the sums over the workers
    type Row = { name: string; active: number; total: number };
    const open = await adminJson<Row[]>(lb, '/backends');
    assert.equal(open.reduce((n, b) => n + b.active, 0), CLIENTS, JSON.stringify(open));
    assert.deepEqual(await metric(lb, 'lemonade_udp_flows_active'), [`lemonade_udp_flows_active{service="default"} ${CLIENTS}`]);
    const status = await adminJson<{ workers: { index: number; accepted: number }[] }>(lb, '/status');
    const accepted = status.workers.sort((a, b) => a.index - b.index).map((w) => w.accepted);
    t.diagnostic(`flows per worker: ${accepted.join(' / ')}`);
    assert.equal(accepted.reduce((a, b) => a + b, 0), CLIENTS);
    // with SO_REUSEPORT the kernel spreads clients over both (all 24 on one: odds 2^-23); without, worker 0 takes all
    if (mode.reuse) assert.ok(accepted.every((n) => n > 0), `flows per worker: ${accepted.join(' / ')}`);
    else assert.deepEqual(accepted, [CLIENTS, 0]);

    // each flow ends idle: one line per client, with every datagram it sent and got
    const lines = await waitFor(() => (accessLines(lb).length >= CLIENTS ? accessLines(lb) : null), 15_000, `${CLIENTS} access log lines`);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(accessLines(lb).length, CLIENTS, JSON.stringify(accessLines(lb)));
    for (const l of lines) {
      const client = String(l['client']);
      assert.ok(byClient.has(client), `a line for a client that is not one of the test's: ${JSON.stringify(l)}`);
      assert.equal(l['termination'], 'udp_idle', JSON.stringify(l));
      assert.equal(l['datagrams_in'], QUERIES, JSON.stringify(l));
      assert.equal(l['datagrams_out'], QUERIES, JSON.stringify(l));
      assert.equal(ANSWER[Number(String(l['backend']).slice(3)) - 1], byClient.get(client)![0], JSON.stringify(l));
    }
    assert.equal(new Set(lines.map((l) => l['client'])).size, CLIENTS);

    assert.deepEqual(await metric(lb, 'lemonade_udp_datagrams_total'), [
      `lemonade_udp_datagrams_total{service="default",direction="in"} ${CLIENTS * QUERIES}`,
      `lemonade_udp_datagrams_total{service="default",direction="out"} ${CLIENTS * QUERIES}`,
    ]);
    assert.deepEqual(await metric(lb, 'lemonade_udp_flows_active'), ['lemonade_udp_flows_active{service="default"} 0']);
    const done = await adminJson<Row[]>(lb, '/backends');
    assert.equal(done.reduce((n, b) => n + b.active, 0), 0);
    assert.equal(done.reduce((n, b) => n + b.total, 0), CLIENTS, JSON.stringify(done));
    // round robin per worker: both backends took flows
    assert.ok(done.every((b) => b.total > 0), JSON.stringify(done));
  });
}

test('workers = 2: a reload that adds a UDP service binds its address as UDP in the workers; the TCP service goes on', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await startDnsmasq(tempDir('lemonade-udp-workers-'), '127.79.0.3', [`${ANSWER[0]} ${NAME}`]);
  t.after(() => dns.stop());
  const web = await startNamed(t, 'web1');
  const tcp = testConfig([{ address: web.address, name: 'web1' }], { runtime: 'workers = 2' });
  const lb = await startBalancer(t, tcp);
  const udpPort = await freePort();
  lb.writeConfig(`${tcp}\n[[services]]\nname = "dns"\nprotocol = "udp"\nlisten_address = "127.0.0.1:${udpPort}"\nudp_responses = 1\n[[services.backends]]\nname = "dns1"\naddress = "${dns.server}"\n`);
  const r = await lb.admin('/reload', 'POST');
  assert.equal(r.status, 200, r.body);
  const answers = await Promise.all(Array.from({ length: 8 }, async () => digFrom(udpPort, await freePort())));
  assert.deepEqual(answers, Array(8).fill(Array(QUERIES).fill(ANSWER[0])));
  assert.equal((await tcpExchange(lb.port, '')).data.toString(), 'web1\n');
  // udp_responses = 1: each query its own flow
  await waitFor(async () => (await metric(lb, 'lemonade_udp_datagrams_total{service="dns",direction="out"}'))[0] === `lemonade_udp_datagrams_total{service="dns",direction="out"} ${8 * QUERIES}` || null, 5000, 'every answer counted');
});

test('workers = 2: a second balancer on the same UDP address is refused, as a single process would be', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await startDnsmasq(tempDir('lemonade-udp-workers-'), '127.79.0.4', [`${ANSWER[0]} ${NAME}`]);
  t.after(() => dns.stop());
  const first = await startBalancer(t, config([dns]));
  // with SO_REUSEPORT the workers' binds alone would succeed beside the first balancer's and split its clients
  await assert.rejects(startBalancer(config([dns]).replace('listen_address = "127.0.0.1:0"', `listen_address = "127.0.0.1:${first.port}"`)), /exited \(1\)[\s\S]*EADDRINUSE/);
  assert.deepEqual(await digFrom(first.port, await freePort()), Array(QUERIES).fill(ANSWER[0]));
});
