// Smoke test of `npm run bench`: runs scripts/bench.ts --quick (one round, 1 s per measurement,
// 1,000 idle connections, never installs anything) so the script cannot rot. It uses only what
// is installed: W4 (idle connections, lemonade, lemonade with a worker per CPU and the two Node references)
// always runs; W1/W2/W5 need wrk (W2 also runs lemonade with 20 services configured, with its
// port shared by sni, with consistent_hash, with the access log on (every connection, and 1 %), and with
// dnsmasq with its backend found by DNS),
// W3 iperf3, the HAProxy column haproxy (each left out, with a note, when missing). Figures of
// so short a run on a shared machine mean little: completion and the rows are asserted.
// A second run prices TLS termination (T2, a handshake per connection with RSA 2048, and T3, bulk
// over TLS, with ECDSA P-256: both certificates) through haproxy, nginx-stream and lemonade
// (about 16 s): it needs openssl, socat for T3 and nginx's stream module for nginx-stream.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { runScriptBounded } from '../helpers';

// about 30 s on a quiet 2-core machine; the bound leaves room for a loaded one
const BOUND_MS = 120_000;

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`], { stdio: 'ignore' }).status === 0;
}

test('bench --quick completes and prints a row per contender and workload it can run', { timeout: BOUND_MS + 10_000 }, async (t) => {
  if (!has('taskset')) {
    t.skip('taskset (util-linux) is not installed');
    return;
  }
  const tools = { haproxy: has('haproxy'), wrk: has('wrk'), iperf3: has('iperf3'), dnsmasq: has('dnsmasq') };
  const { code, out, err } = await runScriptBounded('bench.ts', ['--quick', '--json'], BOUND_MS);
  const ctx = `exit ${code}\nstdout:\n${out}\nstderr:\n${err}`;
  assert.equal(code, 0, ctx);

  const want: [string, string][] = [];
  const proxies = ['pipe', 'node-raw', 'lemonade', 'lemonade-workers', ...(tools.haproxy ? ['haproxy'] : [])];
  if (tools.wrk) for (const w of ['W1', 'W2']) for (const c of ['direct', ...proxies]) want.push([w, c]);
  if (tools.wrk) for (const c of ['lemonade', 'lemonade-workers']) want.push(['W5', c]);
  if (tools.wrk) for (const c of ['lemonade-20svc', 'lemonade-sni', 'lemonade-chash', 'lemonade-alog', 'lemonade-alog1']) want.push(['W2', c]);
  if (tools.wrk && tools.dnsmasq) want.push(['W2', 'lemonade-dns']);
  if (tools.iperf3) for (const c of ['direct', ...proxies]) want.push(['W3', c]);
  for (const c of proxies) want.push(['W4', c]);

  for (const [w, c] of want) {
    const row = out.split('\n').find((l) => l.startsWith(`| ${w} | ${c} |`));
    assert.ok(row, `no table row for ${w} ${c}\n${ctx}`);
  }

  const last = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  assert.ok(last, ctx);
  const j = JSON.parse(last) as { failed: string | null; cpus: number; scaling: { ratio: number } | null; rows: { workload: string; contender: string; throughput: number; cost: number | null; samples: { errors: number }[] }[] };
  assert.equal(j.failed, null, ctx);
  for (const [w, c] of want) {
    const r = j.rows.find((x) => x.workload === w && x.contender === c);
    assert.ok(r, `${w} ${c} missing from the JSON\n${ctx}`);
    assert.ok(r.throughput > 0, `${w} ${c}: no throughput\n${ctx}`);
    // RSS growth over 1,000 idle connections can round to ~0: only its presence is checked
    if (c !== 'direct') assert.ok(r.cost !== null && (w === 'W4' || r.cost > 0), `${w} ${c}: no cost figure\n${ctx}`);
    assert.equal(r.samples.reduce((a, s) => a + s.errors, 0), 0, `${w} ${c}: errors\n${ctx}`);
  }
  // W5: a scaling ratio from the same round, and the line that reports it
  if (tools.wrk) {
    assert.ok(j.scaling !== null && j.scaling.ratio > 0, `no W5 scaling ratio\n${ctx}`);
    assert.match(out, new RegExp(`W5 scaling: ${j.cpus} workers give [\\d.]+× the conn/s of 1`));
    // W2 with 20 services next to one, and the line that compares them
    assert.match(out, /^W2 20 services: lemonade-20svc \/ lemonade [\d.]+ \(per round [\d.]+-[\d.]+;/m);
    assert.match(out, /^W2 SNI inspection: lemonade-sni \/ lemonade [\d.]+ \(per round [\d.]+-[\d.]+;/m);
    assert.match(out, /^W2 consistent_hash: lemonade-chash \/ lemonade [\d.]+ \(per round [\d.]+-[\d.]+;/m);
    assert.match(out, /^W2 access log to a file: lemonade-alog \/ lemonade [\d.]+ \(per round [\d.]+-[\d.]+;/m);
    assert.match(out, /^W2 access log, sample 0.01: lemonade-alog1 \/ lemonade [\d.]+ \(per round [\d.]+-[\d.]+;/m);
    assert.ok(!out.split('\n').some((l) => /^\| W[1345] \| lemonade-(20svc|sni|chash|dns|alog|alog1) \|/.test(l)), `a W2-only variant outside W2 in a default run\n${ctx}`);
    // W2 with the backend found by DNS next to a literal address, and the line that compares them
    if (tools.dnsmasq) assert.match(out, /^W2 DNS-resolved backend: lemonade-dns \/ lemonade [\d.]+ \(per round [\d.]+-[\d.]+;/m);
  }
});

test('bench --quick --workloads T2,T3 prices TLS termination against haproxy and nginx stream', { timeout: BOUND_MS + 10_000 }, async (t) => {
  for (const tool of ['taskset', 'openssl']) {
    if (!has(tool)) {
      t.skip(`${tool} is not installed`);
      return;
    }
  }
  const stream = ['/usr/lib/nginx/modules', '/usr/share/nginx/modules'].some((d) => existsSync(`${d}/ngx_stream_module.so`));
  const contenders = ['lemonade', ...(has('haproxy') ? ['haproxy'] : []), ...(has('nginx') && stream ? ['nginx-stream'] : [])];
  const workloads = ['T2', ...(has('socat') && has('iperf3') ? ['T3'] : [])];
  const { code, out, err } = await runScriptBounded('bench.ts', ['--quick', '--json', '--only', 'haproxy,nginx-stream,lemonade', '--workloads', 'T2,T3'], BOUND_MS);
  const ctx = `exit ${code}\nstdout:\n${out}\nstderr:\n${err}`;
  assert.equal(code, 0, ctx);
  const last = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  assert.ok(last, ctx);
  const j = JSON.parse(last) as { failed: string | null; negotiated: Record<string, string>; rows: { workload: string; contender: string; throughput: number; cost: number | null; samples: { errors: number }[] }[] };
  assert.equal(j.failed, null, ctx);
  for (const w of workloads) {
    for (const c of contenders) {
      assert.ok(out.split('\n').some((l) => l.startsWith(`| ${w} | ${c} |`)), `no table row for ${w} ${c}\n${ctx}`);
      const r = j.rows.find((x) => x.workload === w && x.contender === c);
      assert.ok(r && r.throughput > 0 && r.cost !== null && r.cost > 0, `${w} ${c}: no figures\n${ctx}`);
      assert.equal(r.samples.reduce((a, s) => a + s.errors, 0), 0, `${w} ${c}: errors\n${ctx}`);
      // each proxy presented the workload's certificate over TLS 1.3
      assert.match(j.negotiated[`${w}/${c}`] ?? '', new RegExp(`^TLSv1\\.3 \\S+ ${w === 'T2' ? 'RSA-PSS' : 'ECDSA'} `), ctx);
    }
  }
  // no contender without TLS in a TLS workload
  assert.ok(!j.rows.some((r) => ['direct', 'pipe', 'node-raw', 'lemonade-workers'].includes(r.contender)), ctx);
  if (contenders.includes('nginx-stream')) assert.match(out, /^T2: lemonade \/ nginx-stream [\d.]+ \(/m, ctx);
});
