// A keepalived pair in front of two balancers, for real: four network namespaces made by this test
// (a switch with a bridge, two balancer hosts, a client host; private 10.213.0.0/24 addresses that
// exist only inside them), two `lemonade lb` each with two `lemonade worker` backends, two
// keepalived (the shipped packaging/keepalived configs with this network's addresses), and a
// client polling the virtual IP. It measures how long the VIP takes to move when the MASTER's
// /health turns 503, when its keepalived stops cleanly, and to come back (failback) after both.
// Targets: < 2 s on a health failure, < 1 s on a clean stop, no request lost on a clean stop
// beyond those in flight.
//
// Run as root: `npm run test:ha` (needs iproute2, keepalived and curl; .ci/run installs them).
// Everything it made (processes, namespaces, files) is removed at the end, also on failure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, ROOT, cleanEnv, requireTool, waitFor } from '../helpers';

const NET = '10.213.0';
const VIP = `${NET}.100`;
const tag = String(process.pid % 100000);
const NS = { sw: `lemha-sw-${tag}`, m: `lemha-m-${tag}`, b: `lemha-b-${tag}`, c: `lemha-c-${tag}` } as const;
const ADDR = { m: `${NET}.11`, b: `${NET}.12`, c: `${NET}.20` } as const;
const DIR = `/run/lemonade-ha-${tag}`; // root-owned path: keepalived's script security accepts it

function run(cmd: string, args: string[], timeoutSec = 10): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('timeout', ['-k', '3', String(timeoutSec), cmd, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
function must(cmd: string, args: string[], timeoutSec = 10): string {
  const r = run(cmd, args, timeoutSec);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}
function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}
const inNs = (ns: string, args: string[], timeoutSec = 10) => run('ip', ['netns', 'exec', ns, ...args], timeoutSec);

// -------------------------------------------------------------------------------------------
// processes

interface Proc {
  readonly name: string;
  readonly proc: ChildProcess;
  out: string;
  readonly exited: Promise<void>;
}
const procs: Proc[] = [];

/** Start a long-running process inside a namespace, bounded by `timeout` (ip netns exec execs it). */
function startIn(ns: string, name: string, args: string[], maxSec = 300): Proc {
  const proc = spawn('timeout', ['-k', '3', String(maxSec), 'ip', 'netns', 'exec', ns, ...args], { env: cleanEnv({ LEMONADE_LOG: 'info' }), stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Proc = { name, proc, out: '', exited: new Promise<void>((r) => proc.on('close', () => r())) };
  proc.stdout!.on('data', (d: Buffer) => (p.out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (p.out += d.toString()));
  procs.push(p);
  return p;
}
async function stop(p: Proc, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  // `timeout` forwards the signal to its child
  p.proc.kill(signal);
  const k = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(k);
}

async function cleanup(): Promise<void> {
  await Promise.all(procs.map((p) => stop(p)));
  for (const ns of Object.values(NS)) {
    // anything still running in our namespaces (a check script, say) is ours
    const pids = run('ip', ['netns', 'pids', ns]).stdout.split('\n').filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    run('ip', ['netns', 'del', ns]);
  }
  rmSync(DIR, { recursive: true, force: true });
}
process.on('exit', () => {
  for (const p of procs) p.proc.kill('SIGKILL');
  for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 });
});

// -------------------------------------------------------------------------------------------
// network and nodes

function buildNetwork(): void {
  for (const ns of Object.values(NS)) must('ip', ['netns', 'add', ns]);
  must('ip', ['-n', NS.sw, 'link', 'add', 'br0', 'type', 'bridge', 'forward_delay', '0']);
  must('ip', ['-n', NS.sw, 'link', 'set', 'br0', 'up']);
  for (const host of ['m', 'b', 'c'] as const) {
    must('ip', ['-n', NS.sw, 'link', 'add', `p-${host}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS[host]]);
    must('ip', ['-n', NS.sw, 'link', 'set', `p-${host}`, 'master', 'br0', 'up']);
    must('ip', ['-n', NS[host], 'link', 'set', 'lo', 'up']);
    must('ip', ['-n', NS[host], 'addr', 'add', `${ADDR[host]}/24`, 'dev', 'eth0']);
    must('ip', ['-n', NS[host], 'link', 'set', 'eth0', 'up']);
  }
}

function lbConfig(): string {
  return [
    '[runtime]',
    'drain_timeout_millis = 5000',
    '[proxy]',
    'listen_address = "0.0.0.0:8080"',
    'connect_timeout = "1s"',
    '[strategy]',
    'algorithm = "round_robin"',
    '[health]',
    'interval = "500ms"',
    'timeout = "300ms"',
    '[admin]',
    'listen_address = "127.0.0.1:9090"',
    '[[backends]]',
    'id = 0',
    'name = "w1"',
    'address = "127.0.0.1:9001"',
    '[[backends]]',
    'id = 1',
    'name = "w2"',
    'address = "127.0.0.1:9002"',
    '',
  ].join('\n');
}

/** The shipped keepalived config with this test network's addresses and the check script's path. */
function keepalivedConfig(role: 'master' | 'backup', script: string): string {
  const text = readFileSync(join(ROOT, 'packaging', 'keepalived', `keepalived-${role}.conf`), 'utf8');
  return text
    .replaceAll('10.0.0.', `${NET}.`)
    .replace('/usr/local/libexec/keepalived/check_lemonade.sh', script)
    .replace(/router_id (\S+)/, `router_id $1_${tag}`);
}

function startKeepalived(host: 'm' | 'b'): Proc {
  const conf = join(DIR, `keepalived-${host}.conf`);
  return startIn(NS[host], `keepalived-${host}`, ['keepalived', '--dont-fork', '--log-console', '--log-detail', '--vrrp', '-f', conf, '-p', join(DIR, `ka-${host}.pid`), '-r', join(DIR, `ka-${host}-vrrp.pid`), '-c', join(DIR, `ka-${host}-chk.pid`)]);
}

function hasVip(host: 'm' | 'b'): boolean {
  return run('ip', ['-n', NS[host], '-o', 'addr', 'show', 'dev', 'eth0']).stdout.includes(`${VIP}/`);
}

/** Poll (every 5 ms) until the VIP is on `host`; resolves with the time it was seen. */
async function vipOn(host: 'm' | 'b', timeoutMs: number, what: string): Promise<number> {
  await waitFor(() => hasVip(host), timeoutMs, what, 5);
  return Date.now();
}

async function health(host: 'm' | 'b'): Promise<number> {
  const r = inNs(NS[host], ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', 'http://127.0.0.1:9090/health']);
  return Number(r.stdout);
}

function admin(host: 'm' | 'b', path: string): void {
  const r = inNs(NS[host], ['curl', '-sf', '-X', 'POST', '--max-time', '2', `http://127.0.0.1:9090${path}`]);
  assert.equal(r.code, 0, `POST ${path} on ${host}: ${r.stderr}`);
}

// -------------------------------------------------------------------------------------------
// the client: sequential requests to the VIP from two loops, one line of JSON per request

interface Req {
  readonly s: number; // start (ms since epoch)
  readonly e: number; // end
  readonly who?: string; // backend name that answered (m1, m2 = MASTER's, b1, b2 = BACKUP's)
  readonly err?: string;
}
const CLIENT = `
  const http = require('http');
  const end = Date.now() + Number(process.argv[1]);
  const one = () => new Promise((r) => {
    const s = Date.now();
    const done = (o) => { process.stdout.write(JSON.stringify({ s, e: Date.now(), ...o }) + '\\n'); r(); };
    const req = http.get({ host: '${VIP}', port: 8080, path: '/', agent: false, timeout: 5000 }, (res) => {
      let b = ''; res.setEncoding('utf8'); res.on('data', (d) => (b += d));
      res.on('end', () => (res.statusCode === 200 ? done({ who: b.trim() }) : done({ err: 'status ' + res.statusCode })));
      res.on('error', (e) => done({ err: e.code || e.message }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (e) => done({ err: e.code || e.message }));
  });
  const loop = async () => { while (Date.now() < end) { await one(); await new Promise((r) => setTimeout(r, 10)); } };
  Promise.all([loop(), loop()]).then(() => process.exit(0));
`;
function requests(client: Proc): Req[] {
  return client.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Req);
}
const isM = (r: Req) => !!r.who && r.who.startsWith('m');
const isB = (r: Req) => !!r.who && r.who.startsWith('b');

test('keepalived pair: VIP failover on /health 503 and on a clean stop, and failback', { timeout: 300_000 }, async (t) => {
  for (const tool of ['ip', 'keepalived', 'curl', 'timeout']) {
    if (!requireTool(t, tool, hasTool(tool))) return;
  }
  if (process.getuid?.() !== 0 && !requireTool(t, 'root (network namespaces need it)', false)) return;

  t.after(cleanup);
  mkdirSync(DIR, { recursive: true, mode: 0o755 });
  chmodSync(DIR, 0o755);
  const script = join(DIR, 'check_lemonade.sh');
  copyFileSync(join(ROOT, 'packaging', 'keepalived', 'check_lemonade.sh'), script);
  chmodSync(script, 0o755);
  writeFileSync(join(DIR, 'lb.toml'), lbConfig());
  writeFileSync(join(DIR, 'keepalived-m.conf'), keepalivedConfig('master', script));
  writeFileSync(join(DIR, 'keepalived-b.conf'), keepalivedConfig('backup', script));
  buildNetwork();

  // the two balancer hosts: two workers and a balancer each
  const lbs: Record<'m' | 'b', Proc> = {} as Record<'m' | 'b', Proc>;
  for (const host of ['m', 'b'] as const) {
    for (const i of [1, 2]) startIn(NS[host], `worker-${host}${i}`, [process.execPath, BUNDLE, 'worker', '--listen', `127.0.0.1:900${i}`, '--name', `${host}${i}`]);
    lbs[host] = startIn(NS[host], `lb-${host}`, [process.execPath, BUNDLE, 'lb', '--config', join(DIR, 'lb.toml')]);
  }
  for (const host of ['m', 'b'] as const) {
    await waitFor(async () => (await health(host)) === 200, 20_000, `the ${host} balancer to be healthy; its output: ${lbs[host].out}`, 100);
  }

  const kaM = startKeepalived('m');
  const kaB = startKeepalived('b');
  await vipOn('m', 15_000, `the VIP on the MASTER; keepalived said:\n${kaM.out}\n${kaB.out}`);
  assert.equal(hasVip('b'), false, 'the VIP is on both nodes');

  const client = startIn(NS.c, 'client', [process.execPath, '-e', CLIENT, '120000'], 150);
  await waitFor(() => requests(client).some(isM), 10_000, `the client to reach the MASTER through the VIP: ${client.out}`, 20);
  const figures: Record<string, number> = {};

  await t.test('MASTER /health turns 503: the VIP moves to the BACKUP in < 2 s', async () => {
    admin('m', '/backends/w1/disable');
    admin('m', '/backends/w2/disable');
    assert.equal(await health('m'), 503);
    const t503 = Date.now();
    const tVip = await vipOn('b', 10_000, 'the VIP to move to the BACKUP');
    await waitFor(() => requests(client).some((r) => r.s >= tVip && isB(r)), 5000, 'the client to be served by the BACKUP', 20);
    figures['health_failover_ms'] = tVip - t503;
    const firstB = requests(client).filter((r) => r.s >= t503 && isB(r)).sort((a, z) => a.e - z.e)[0]!;
    figures['health_failover_served_ms'] = firstB.e - t503;
    t.diagnostic(`health failure: VIP on the BACKUP ${tVip - t503} ms after /health turned 503; client served by the BACKUP after ${firstB.e - t503} ms`);
    assert.ok(tVip - t503 < 2000, `VIP moved after ${tVip - t503} ms (target < 2000 ms)`);
    assert.equal(hasVip('m'), false, 'the MASTER still holds the VIP');
  });

  await t.test('MASTER /health back to 200: the VIP fails back', async () => {
    admin('m', '/backends/w1/enable');
    admin('m', '/backends/w2/enable');
    await waitFor(async () => (await health('m')) === 200, 10_000, 'the MASTER to be healthy again', 20);
    const t200 = Date.now();
    const tVip = await vipOn('m', 15_000, 'the VIP to come back to the MASTER');
    await waitFor(() => requests(client).some((r) => r.s >= tVip && isM(r)), 5000, 'the client to be served by the MASTER', 20);
    figures['health_failback_ms'] = tVip - t200;
    t.diagnostic(`failback after health recovery: VIP on the MASTER ${tVip - t200} ms after /health turned 200 (rise 2 checks at 1 s)`);
  });

  await t.test('MASTER keepalived stops cleanly: the VIP moves in < 1 s and no request is lost', async () => {
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    const stopping = stop(kaM);
    let tGone = 0;
    const tVip = await waitFor(() => {
      if (!tGone && !hasVip('m')) tGone = Date.now();
      return hasVip('b') ? Date.now() : 0;
    }, 10_000, 'the VIP to move to the BACKUP', 5);
    if (!tGone) await waitFor(() => !hasVip('m'), 5000, 'the MASTER to release the VIP', 5).then(() => (tGone = Date.now()));
    await stopping;
    await waitFor(() => requests(client).some((r) => r.s >= tVip + 200 && isB(r)), 10_000, 'the client to be served by the BACKUP', 20);
    await new Promise((r) => setTimeout(r, 1500)); // let the requests started around the switch finish
    const all = requests(client);
    // Requests in flight while the VIP moves (connections open on the MASTER when it releases the
    // VIP) may be reset: the BACKUP knows nothing of them. Every request started once the VIP is on
    // the BACKUP, and every one that ended before the MASTER released it, must succeed.
    const moving = Math.min(tGone, tVip);
    const later = all.filter((r) => r.s >= tVip && r.e <= Date.now());
    const lost = [...later, ...all.filter((r) => r.s >= t0 && r.e < moving)].filter((r) => r.err);
    const firstB = all.filter((r) => r.s >= t0 && isB(r)).sort((a, z) => a.e - z.e)[0]!;
    const inflight = all.filter((r) => r.s < tVip && r.e >= moving);
    figures['clean_stop_failover_ms'] = tVip - t0;
    figures['clean_stop_served_ms'] = firstB.e - t0;
    figures['clean_stop_lost'] = lost.length;
    const slowest = Math.max(...later.map((r) => r.e - r.s));
    t.diagnostic(`clean stop: the MASTER released the VIP ${tGone - t0} ms and the BACKUP held it ${tVip - t0} ms after SIGTERM to the MASTER's keepalived; first answer from the BACKUP after ${firstB.e - t0} ms; ${later.length} requests started after the move, ${lost.length} failed ${JSON.stringify(lost.slice(0, 5))}; ${inflight.filter((r) => r.err).length} of ${inflight.length} in flight during the move failed; slowest request ${slowest} ms`);
    assert.ok(tVip - t0 < 1000, `VIP moved after ${tVip - t0} ms (target < 1000 ms)`);
    assert.equal(lost.length, 0, `requests lost on a clean stop: ${JSON.stringify(lost)}`);
  });

  await t.test('MASTER keepalived starts again: the VIP fails back', async () => {
    const t0 = Date.now();
    const ka = startKeepalived('m');
    const tVip = await vipOn('m', 20_000, `the VIP to come back to the MASTER: ${ka.out}`);
    await waitFor(() => requests(client).some((r) => r.s >= tVip + 200 && isM(r)), 10_000, 'the client to be served by the MASTER', 20);
    await new Promise((r) => setTimeout(r, 1500));
    const lost = requests(client).filter((r) => r.s >= t0 && r.err);
    figures['restart_failback_ms'] = tVip - t0;
    figures['restart_failback_lost'] = lost.length;
    t.diagnostic(`failback after keepalived restart: VIP on the MASTER ${tVip - t0} ms after keepalived started; ${lost.length} requests failed ${JSON.stringify(lost.slice(0, 5))}`);
  });

  await stop(client);
  t.diagnostic(`failover figures: ${JSON.stringify(figures)}`);
});
