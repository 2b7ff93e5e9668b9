// UDP services: real `dig` queries through lemonade to two real dnsmasq backends (each answers
// the same name with its own address, so an answer says which backend served it). Flows spread
// by round robin, udp_responses = 1 ends each flow after its answer, udp_idle_timeout ends an
// idle one, a killed backend's traffic fails over once its health check marks it down, allow/deny
// refuses a flow with one access log line, and a udp_* key on a TCP service fails --validate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, freePort, requireTool, runCli, startBalancer, tempDir, waitFor, type Balancer } from '../helpers';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from '../dnsmasq';

const DIG = spawnSync('sh', ['-c', 'command -v dig'], { encoding: 'utf8' }).stdout.trim();
const NAME = 'who.ldns.test';
/** backend i answers NAME with this address */
const ANSWER = ['10.0.0.1', '10.0.0.2'];

/** Two dnsmasq backends on 127.78.0.1 and .2, stopped when the test ends. */
async function backends(t: { after(f: () => unknown): void }): Promise<Dnsmasq[]> {
  const out: Dnsmasq[] = [];
  t.after(() => Promise.all(out.map((d) => d.stop())));
  for (const i of [0, 1]) out.push(await startDnsmasq(tempDir('lemonade-udp-'), `127.78.0.${i + 1}`, [`${ANSWER[i]} ${NAME}`]));
  return out;
}

/** The balancer's file: a UDP default service over the backends `only` (by index, each with its id) of `dns`. */
function config(dns: readonly Dnsmasq[], proxy: string, health = 'interval = "10s"', only: readonly number[] = [0, 1], runtime = ''): string {
  return `[proxy]
listen_address = "127.0.0.1:0"
protocol = "udp"
${proxy}
[strategy]
algorithm = "round_robin"
[health]
${health}
[admin]
listen_address = "127.0.0.1:0"
[access_log]
enabled = true
[runtime]
${runtime}
${only.map((i) => `[[backends]]\nid = ${i}\nname = "dns${i + 1}"\naddress = "${dns[i]!.server}"\n`).join('')}`;
}

/** One query with dig through the balancer: the answer's address, or null when none came back. `from`: dig's source port (0: any). */
function dig(port: number, timeoutS = 2, from = 0): string | null {
  const r = spawnSync(DIG, ['@127.0.0.1', '-p', String(port), ...(from > 0 ? ['-b', `127.0.0.1#${from}`] : []), NAME, 'A', '+short', '+tries=1', `+time=${timeoutS}`], { encoding: 'utf8' });
  const line = r.stdout.trim();
  return /^\d+\.\d+\.\d+\.\d+$/.test(line) ? line : null;
}

/** dig, off the event loop's thread (the balancer's output must keep being read meanwhile). */
function digAsync(port: number, timeoutS = 2, from = 0): Promise<string | null> {
  return new Promise((resolve) => setImmediate(() => resolve(dig(port, timeoutS, from))));
}

const accessLines = (lb: Balancer): Record<string, unknown>[] => lb.logs.filter((l) => typeof l['termination'] === 'string' && 'bytes_in' in l);

async function metric(lb: Balancer, name: string): Promise<string[]> {
  const text = (await lb.admin('/metrics')).body;
  return text.split('\n').filter((l) => l.startsWith(name));
}

test('answers come back, round robin spreads flows, udp_responses = 1 ends each flow after its answer', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t);
  const lb = await startBalancer(t, config(dns, 'udp_responses = 1'));
  const answers: string[] = [];
  for (let i = 0; i < 6; i++) answers.push((await digAsync(lb.port)) ?? 'none');
  // round robin: one backend, then the other, each flow picked anew
  assert.deepEqual(new Set(answers), new Set(ANSWER), `answers: ${answers.join(', ')}`);
  for (let i = 1; i < answers.length; i++) assert.notEqual(answers[i], answers[i - 1], `answers: ${answers.join(', ')}`);
  const lines = await waitFor(() => (accessLines(lb).length >= 6 ? accessLines(lb) : null), 5000, 'six access log lines');
  for (const l of lines) {
    assert.equal(l['termination'], 'udp_responses', JSON.stringify(l));
    assert.equal(l['datagrams_in'], 1);
    assert.equal(l['datagrams_out'], 1);
    assert.equal(l['connect_ms'], null);
    assert.ok((l['bytes_in'] as number) > 12 && (l['bytes_out'] as number) > (l['bytes_in'] as number), JSON.stringify(l));
    assert.match(String(l['client']), /^127\.0\.0\.1:\d+$/);
  }
  assert.deepEqual(new Set(lines.map((l) => l['backend'])), new Set(['dns1', 'dns2']));
  assert.deepEqual(await metric(lb, 'lemonade_udp_datagrams_total'), ['lemonade_udp_datagrams_total{service="default",direction="in"} 6', 'lemonade_udp_datagrams_total{service="default",direction="out"} 6']);
  assert.deepEqual(await metric(lb, 'lemonade_udp_flows_active'), ['lemonade_udp_flows_active{service="default"} 0']);
  const totals = await adminJson<{ name: string; total: number; active: number }[]>(lb, '/backends');
  assert.deepEqual(totals.map((b) => [b.name, b.total, b.active]), [['dns1', 3, 0], ['dns2', 3, 0]]);
});

test('udp_idle_timeout ends a flow with no datagram either way; while open it counts as an active connection', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t);
  const lb = await startBalancer(t, config(dns, 'udp_idle_timeout = "1500ms"'));
  const startedAt = Date.now();
  assert.ok(ANSWER.includes((await digAsync(lb.port)) ?? 'none'));
  const open = await adminJson<{ name: string; active: number }[]>(lb, '/backends');
  assert.equal(open.reduce((n, b) => n + b.active, 0), 1, JSON.stringify(open));
  assert.deepEqual(await metric(lb, 'lemonade_udp_flows_active'), ['lemonade_udp_flows_active{service="default"} 1']);
  const line = await lb.waitForLog((l) => l['termination'] === 'udp_idle', 5000, 'the idle flow ending');
  assert.ok(Date.now() - startedAt >= 1500);
  assert.equal(line['datagrams_in'], 1);
  assert.equal(line['datagrams_out'], 1);
  assert.ok((line['duration_ms'] as number) >= 1500, JSON.stringify(line));
  assert.deepEqual(await metric(lb, 'lemonade_udp_flows_active'), ['lemonade_udp_flows_active{service="default"} 0']);
});

/** A DNS query for NAME, type A, id 0x1234, as send_expect's escapes write it. */
const QUERY = String.raw`\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03who\x04ldns\x04test\x00\x00\x01\x00\x01`;

const KILLED_HEALTH: readonly (readonly [string, string])[] = [
  // dnsmasq answers DNS over TCP on the same port
  ['kind = "tcp"', 'a TCP connect to the port'],
  // the query as one datagram; the answer must echo its id
  [`kind = "send_expect"\nsend = '${QUERY}'\nexpect = '${String.raw`\x12\x34`}'`, 'send_expect over UDP (a real DNS query)'],
];

for (const [kind, what] of KILLED_HEALTH) {
  test(`a killed backend: every query goes to the other once its health check (${what}) marks it down`, { timeout: 60_000 }, async (t) => {
    if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
    if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
    const dns = await backends(t);
    const lb = await startBalancer(t, config(dns, 'udp_responses = 1', `${kind}\ninterval = "200ms"\ntimeout = "500ms"\nunhealthy_threshold = 2`));
    type Row = { name: string; state: string; last_check: { ok: boolean; error: string | null } | null };
    await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).every((b) => b.state === 'healthy' && b.last_check?.ok === true), 10_000, 'both backends checked healthy');
    await dns[0]!.stop();
    const down = await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).find((b) => b.name === 'dns1' && b.state === 'unhealthy'), 10_000, 'dns1 marked down');
    assert.equal(down.last_check?.ok, false);
    const answers: (string | null)[] = [];
    for (let i = 0; i < 6; i++) answers.push(await digAsync(lb.port));
    assert.deepEqual(answers, Array(6).fill(ANSWER[1]));
    assert.equal((await adminJson<Row[]>(lb, '/backends')).find((b) => b.name === 'dns2')?.state, 'healthy');
  });
}

test('a flow sent to a dead backend ends on its ICMP error (backend_reset), counted against the backend', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t);
  const lb = await startBalancer(t, config(dns, 'udp_responses = 1'));
  await dns[0]!.stop();
  // round robin: within two queries one goes to the dead backend and gets no answer
  const answers = [await digAsync(lb.port, 1), await digAsync(lb.port, 1)];
  assert.ok(answers.includes(null) && answers.includes(ANSWER[1]!), `answers: ${answers.join(', ')}`);
  const line = await lb.waitForLog((l) => l['termination'] === 'backend_reset', 5000, 'the refused flow ending');
  assert.equal(line['backend'], 'dns1');
  assert.equal(line['datagrams_in'], 1);
  assert.equal(line['datagrams_out'], 0);
  const rows = await adminJson<{ name: string; connect_errors: number }[]>(lb, '/backends');
  assert.equal(rows.find((b) => b.name === 'dns1')?.connect_errors, 1);
});

test('a reload that removes a backend: its open flow goes on (the same client port still reaches it) until the drain deadline; new flows go to the others', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t);
  const lb = await startBalancer(t, config(dns, '', undefined, [0]));
  const from = await freePort();
  assert.equal(await digAsync(lb.port, 2, from), ANSWER[0]);
  lb.writeConfig(config(dns, '', undefined, [1], 'drain_timeout_millis = 2000'));
  const r = await lb.admin('/reload', 'POST');
  assert.equal(r.status, 200, r.body);
  const reloadedAt = Date.now();
  // the flow of `from` is still dns1's; another client's is dns2's
  assert.equal(await digAsync(lb.port, 2, from), ANSWER[0]);
  assert.equal(await digAsync(lb.port), ANSWER[1]);
  const line = await lb.waitForLog((l) => l['termination'] === 'drain_timeout', 6000, 'the drained flow cut');
  assert.ok(Date.now() - reloadedAt >= 1900);
  assert.equal(line['backend'], 'dns1');
  assert.equal(line['client'], `127.0.0.1:${from}`);
  assert.equal(line['datagrams_in'], 2);
  assert.equal(line['datagrams_out'], 2);
});

test('consistent_hash keeps a client on one backend across its flows', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t);
  const lb = await startBalancer(t, config(dns, 'udp_responses = 1').replace('algorithm = "round_robin"', 'algorithm = "consistent_hash"'));
  const answers = new Set<string | null>();
  for (let i = 0; i < 6; i++) answers.add(await digAsync(lb.port));
  assert.equal(answers.size, 1, [...answers].join(', '));
  assert.ok(ANSWER.includes([...answers][0]!));
  await waitFor(() => accessLines(lb).length === 6, 5000, 'six flows');
});

test('allow/deny refuses a flow: no answer, one access log line however many datagrams it sends', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dig (bind9-dnsutils)', DIG !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t);
  const lb = await startBalancer(t, config(dns, 'deny = ["127.0.0.0/8"]'));
  assert.equal(await digAsync(lb.port, 1), null);
  await lb.waitForLog((l) => l['termination'] === 'rejected_acl', 5000, 'the refusal of dig');
  // one client socket, five datagrams: one refused flow
  const sock = dgram.createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const client = `127.0.0.1:${sock.address().port}`;
  for (let i = 0; i < 5; i++) await new Promise<void>((r, j) => sock.send(Buffer.from(`datagram ${i}`), lb.port, '127.0.0.1', (e) => (e ? j(e) : r())));
  // then one datagram from another client: the socket reads in order, so once its refusal is
  // logged all five were read
  const marker = dgram.createSocket('udp4');
  t.after(() => marker.close());
  await new Promise<void>((r) => marker.bind(0, '127.0.0.1', r));
  await new Promise<void>((r, j) => marker.send(Buffer.from('marker'), lb.port, '127.0.0.1', (e) => (e ? j(e) : r())));
  await lb.waitForLog((l) => l['client'] === `127.0.0.1:${marker.address().port}`, 5000, 'the refusal of the marker');
  const lines = accessLines(lb).filter((l) => l['client'] === client);
  assert.equal(lines.length, 1, JSON.stringify(lines));
  assert.equal(lines[0]!['termination'], 'rejected_acl');
  assert.deepEqual(await metric(lb, 'lemonade_udp_datagrams_total'), []);
  assert.deepEqual(await metric(lb, 'lemonade_connections_rejected_total{service="default",reason="acl"}'), ['lemonade_connections_rejected_total{service="default",reason="acl"} 3']);
});

test('a udp_* key on a TCP service, and a UDP service with a shared address, sni, TLS, tcp_keepalive or an unknown udp_affinity, fail --validate naming the key', async () => {
  const dir = tempDir('lemonade-udp-');
  const check = async (text: string): Promise<string> => {
    const p = join(dir, 'config.toml');
    writeFileSync(p, text);
    const r = await runCli(['lb', '--config', p, '--validate']);
    assert.notEqual(r.code, 0, r.stdout);
    return r.stdout + r.stderr;
  };
  const tcp = await check('[[services]]\nname = "web"\nlisten_address = "127.0.0.1:8080"\nudp_responses = 1\n[[services.backends]]\naddress = "127.0.0.1:8081"\n');
  assert.match(tcp, /config\.toml/);
  assert.match(tcp, /services\[0\]\.udp_responses \(line \d+\): udp_responses applies to UDP services only, and this service's protocol is "tcp": set protocol = "udp" or remove udp_responses/);
  const top = await check('[proxy]\nlisten_address = "127.0.0.1:8080"\nudp_idle_timeout = "5s"\n[[backends]]\naddress = "127.0.0.1:8081"\n');
  assert.match(top, /proxy\.udp_idle_timeout \(line \d+\): udp_idle_timeout applies to UDP services only/);
  const shared = await check(
    '[[services]]\nname = "dns"\nprotocol = "udp"\nlisten_address = "127.0.0.1:53"\n[[services.backends]]\naddress = "127.0.0.1:5353"\n' +
      '[[services]]\nname = "web"\nlisten_address = "127.0.0.1:53"\nsni = ["a.example"]\n[[services.backends]]\naddress = "127.0.0.1:5354"\n',
  );
  assert.match(shared, /services\[0\]\.listen_address(?: \(line \d+\))?: 127\.0\.0\.1:53 is also the listen address of service "web": a protocol = "udp" service has its listen address to itself/);
  const sni = await check('[[services]]\nname = "dns"\nprotocol = "udp"\nlisten_address = "127.0.0.1:53"\nsni = ["a.example"]\n[[services.backends]]\naddress = "127.0.0.1:5353"\n');
  assert.match(sni, /services\[0\]\.sni \(line \d+\): a protocol = "udp" service has no TLS server name to route by/);
  const affinity = await check('[[services]]\nname = "q"\nprotocol = "udp"\nudp_affinity = "sticky"\nlisten_address = "127.0.0.1:443"\n[[services.backends]]\naddress = "127.0.0.1:4433"\n');
  assert.match(affinity, /services\[0\]\.udp_affinity \(line \d+\): expected one of "flow", "quic"/);
  const tls = await check('[[services]]\nname = "dns"\nprotocol = "udp"\nlisten_address = "127.0.0.1:53"\n[services.tls]\ncertificates = [{ cert = "a.pem", key = "a.key" }]\n[[services.backends]]\naddress = "127.0.0.1:5353"\n');
  assert.match(tls, /services\[0\]\.tls(?: \(line \d+\))?: a protocol = "udp" service relays datagrams as they come, with no TLS either way: remove the tls table/);
  const quicWorkers = await check('[runtime]\nworkers = 2\n[[services]]\nname = "h3"\nprotocol = "udp"\nudp_affinity = "quic"\nlisten_address = "127.0.0.1:443"\n[[services.backends]]\naddress = "127.0.0.1:4433"\n');
  assert.match(quicWorkers, /runtime\.workers \(line \d+\): service "h3" has udp_affinity = "quic", whose connection IDs one process learns: set workers = 1/);
  const keepalive = await check('[[services]]\nname = "dns"\nprotocol = "udp"\ntcp_keepalive = "60s"\nlisten_address = "127.0.0.1:53"\n[[services.backends]]\naddress = "127.0.0.1:5353"\n');
  assert.match(keepalive, /services\[0\]\.tcp_keepalive(?: \(line \d+\))?: a protocol = "udp" service has no TCP connection to keep alive/);
});
