// DNS load through a UDP service with dnsperf (a real load generator: several client sockets,
// each with up to 100 queries outstanding) to two real dnsmasq backends. A client that sends its
// next query before the last one's answer keeps its flow under udp_responses = 1 and gets every
// answer. One backend killed mid-run: the queries lost are bounded (its flows end on the ICMP
// error, passive health and the UDP health check take it out), and once the check has marked it
// down every query is answered. And the bench's U1 row (scripts/bench.ts --quick --workloads U1),
// so that it cannot rot.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, requireTool, runScriptBounded, startBalancer, tempDir, waitFor } from '../helpers';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from '../dnsmasq';

const DNSPERF = spawnSync('sh', ['-c', 'command -v dnsperf'], { encoding: 'utf8' }).stdout.trim();
const NAME = 'who.ldns.test';
/** A DNS query for NAME, type A, id 0x1234, as send_expect's escapes write it. */
const QUERY = String.raw`\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03who\x04ldns\x04test\x00\x00\x01\x00\x01`;

interface Run {
  sent: number;
  completed: number;
  lost: number;
  out: string;
}

/** dnsperf against the balancer for `seconds` at `qps` from `clients` sockets, each query timing out after 1 s. */
function dnsperf(dir: string, port: number, seconds: number, qps: number, clients: number): Promise<Run> {
  const data = join(dir, 'queries.txt');
  writeFileSync(data, `${NAME} A\n`);
  const args = ['-s', '127.0.0.1', '-p', String(port), '-d', data, '-l', String(seconds), '-Q', String(qps), '-c', String(clients), '-t', '1'];
  return new Promise((resolve, reject) => {
    execFile(DNSPERF, args, { encoding: 'utf8', timeout: (seconds + 10) * 1000 }, (err, stdout, stderr) => {
      const n = (what: string): number => Number(new RegExp(`Queries ${what}:\\s+(\\d+)`).exec(stdout)?.[1] ?? NaN);
      const run = { sent: n('sent'), completed: n('completed'), lost: n('lost'), out: stdout + stderr };
      if (err || Number.isNaN(run.sent)) reject(new Error(`dnsperf failed: ${err?.message ?? ''}\n${run.out}`));
      else resolve(run);
    });
  });
}

async function backends(t: { after(f: () => unknown): void }, ips: readonly string[]): Promise<Dnsmasq[]> {
  const out: Dnsmasq[] = [];
  t.after(() => Promise.all(out.map((d) => d.stop())));
  for (const [i, ip] of ips.entries()) out.push(await startDnsmasq(tempDir('lemonade-dnsperf-'), ip, [`10.0.0.${i + 1} ${NAME}`]));
  return out;
}

function config(dns: readonly Dnsmasq[], proxy: string): string {
  return `[proxy]
listen_address = "127.0.0.1:0"
protocol = "udp"
${proxy}
[strategy]
algorithm = "round_robin"
[health]
kind = "send_expect"
send = '${QUERY}'
expect = '${String.raw`\x12\x34`}'
interval = "200ms"
timeout = "500ms"
unhealthy_threshold = 2
[admin]
listen_address = "127.0.0.1:0"
${dns.map((d, i) => `[[backends]]\nname = "dns${i + 1}"\naddress = "${d.server}"\n`).join('')}`;
}

test('udp_responses = 1 and a client with queries outstanding on one socket: every query answered', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'dnsperf', DNSPERF !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  const dns = await backends(t, ['127.81.0.1', '127.81.0.2']);
  const lb = await startBalancer(t, config(dns, 'udp_responses = 1'));
  // one client socket, up to 100 queries in flight: the next query often arrives before the last answer
  const run = await dnsperf(lb.dir, lb.port, 2, 2000, 1);
  t.diagnostic(`sent ${run.sent}, completed ${run.completed}, lost ${run.lost}`);
  assert.ok(run.sent >= 1000, run.out);
  assert.equal(run.lost, 0, run.out);
  assert.equal(run.completed, run.sent, run.out);
});

for (const responses of [1, 0]) {
  test(`udp_responses = ${responses}: a backend killed under dnsperf load, loss bounded, and every query answered once it is marked down`, { timeout: 90_000 }, async (t) => {
    if (!requireTool(t, 'dnsperf', DNSPERF !== '')) return;
    if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
    const dns = await backends(t, ['127.81.0.3', '127.81.0.4']);
    const lb = await startBalancer(t, config(dns, `udp_responses = ${responses}\nudp_idle_timeout = "5s"`));
    type Row = { name: string; state: string; total: number; last_check: { ok: boolean } | null };
    await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).every((b) => b.state === 'healthy'), 10_000, 'both backends checked healthy');
    // 6 s at 500 queries a second from 4 sockets; dns1 killed 2 s in
    const whole = dnsperf(lb.dir, lb.port, 6, 500, 4);
    await new Promise((r) => setTimeout(r, 2000));
    const before = await adminJson<Row[]>(lb, '/backends');
    assert.ok(before.every((b) => b.total > 0), `both backends took flows before the kill: ${JSON.stringify(before)}`);
    await dns[0]!.stop();
    const killedAt = Date.now();
    // passive health (the flows' ICMP errors) ejects it first; the active check then marks it down
    await waitFor(async () => (await adminJson<Row[]>(lb, '/backends')).find((b) => b.name === 'dns1' && b.state === 'unhealthy' && b.last_check?.ok === false), 10_000, 'dns1 marked down by its check');
    t.diagnostic(`dns1 marked down ${Date.now() - killedAt} ms after the kill`);
    // from the mark-down on, while the first run goes on: a second run of 3 s loses nothing
    const after = await dnsperf(lb.dir, lb.port, 3, 500, 4);
    const first = await whole;
    t.diagnostic(`whole run: sent ${first.sent}, completed ${first.completed}, lost ${first.lost}; after the mark-down: sent ${after.sent}, lost ${after.lost}`);
    assert.ok(first.sent >= 2400, first.out);
    assert.ok(first.completed >= 0.9 * first.sent, `more than 10 % lost across the kill:\n${first.out}`);
    assert.ok(after.sent >= 1200, after.out);
    assert.equal(after.lost, 0, after.out);
    assert.equal(after.completed, after.sent, after.out);
    const rows = await adminJson<Row[]>(lb, '/backends');
    assert.equal(rows.find((b) => b.name === 'dns2')?.state, 'healthy');
  });
}

test('bench --quick --workloads U1: DNS queries through lemonade and nginx stream, next to direct, none lost', { timeout: 130_000 }, async (t) => {
  if (!requireTool(t, 'dnsperf', DNSPERF !== '')) return;
  if (!requireTool(t, 'dnsmasq', DNSMASQ !== '')) return;
  if (!requireTool(t, 'taskset (util-linux)', spawnSync('sh', ['-c', 'command -v taskset'], { stdio: 'ignore' }).status === 0)) return;
  const stream = ['/usr/lib/nginx/modules', '/usr/share/nginx/modules'].some((d) => spawnSync('test', ['-f', join(d, 'ngx_stream_module.so')]).status === 0);
  const { code, out, err } = await runScriptBounded('bench.ts', ['--quick', '--workloads', 'U1', '--only', 'direct,nginx-stream,lemonade', '--json'], 120_000);
  const ctx = `exit ${code}\nstdout:\n${out}\nstderr:\n${err}`;
  assert.equal(code, 0, ctx);
  const want = ['direct', 'lemonade', ...(stream ? ['nginx-stream'] : [])];
  const j = JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}') as { failed: string | null; rows: { workload: string; contender: string; throughput: number; cost: number | null; samples: { errors: number }[] }[] };
  assert.equal(j.failed, null, ctx);
  for (const c of want) {
    assert.ok(out.split('\n').some((l) => l.startsWith(`| U1 | ${c} |`)), `no U1 row for ${c}\n${ctx}`);
    const r = j.rows.find((x) => x.workload === 'U1' && x.contender === c);
    assert.ok(r && r.throughput > 0, `U1 ${c}: no queries per second\n${ctx}`);
    if (c !== 'direct') assert.ok(r.cost !== null && r.cost > 0, `U1 ${c}: no CPU per query\n${ctx}`);
    assert.equal(r.samples.reduce((a, x) => a + x.errors, 0), 0, `U1 ${c}: queries lost\n${ctx}`);
  }
  if (stream) assert.match(out, /^U1: lemonade \/ nginx-stream [\d.]+ \(per round [\d.]+-[\d.]+; [\d.]+ vs [\d.]+ µs\/q, medians\) \(wanted ≤ 1\.5\): (met|NOT met)$/m);
});
