// An active-active fleet behind ECMP, for real: a router and three balancer nodes in network
// namespaces made by this test (names `lec-*`; private 10.214.x.y addresses that exist only inside
// them), each node running `lemonade lb` with consistent_hash, BIRD 2 with the shipped
// packaging/ecmp/bird-node.conf and the shipped announcement program lemonade-announce.sh; the
// router running BIRD 2 with the shipped bird-router.conf (one multipath route to the VIP, L4
// hashing); three backends; a client with 200 source addresses.
//
//   client 10.214.1.10-209 ── router 10.214.1.1 / 10.214.0.1 ── LAN 10.214.0.0/24 (a bridge)
//                                                                 ├ lb1 .11  lb2 .12  lb3 .13 (VIP 10.214.100.1 on lo)
//                                                                 └ backends .21 .22 .23
//
// Phases, each printing a `figures` line: (1) 900 connections from 100 addresses spread over the
// three nodes, and each address reaches one backend whatever node carried it; (2) lb2's /health
// turns 503 (an operator drains its backends): its route is withdrawn within 2 s and no new
// connection fails after that, then it is brought back; (3) lb3 stops as `systemctl stop
// lemonade-lb` stops it with the lemonade-lb-announce unit (the announcer's SIGTERM: withdraw,
// grace; then the balancer's SIGTERM: drain): no request fails, those open at the very instant of
// the withdrawal counted apart (the router's rehash may move them to a node that resets them).
// Through (2) and (3), long-lived connections measure what ECMP rehashing does to the flows of the
// surviving nodes when a next hop goes and comes back; (4) the same measurement with a resilient
// next-hop group made by hand (BIRD installs plain multipath routes).
//
// Run as root: `npm run test:ecmp` (needs iproute2, bird2 and curl; .ci/run installs them).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, ROOT, requireTool, waitFor } from '../helpers';
import { Lab, alive, hasTool, inNs, must, run, type Proc } from './netns';

const NET = '10.214.0'; // the LAN: router .1, nodes .11-.13, backends .21-.23
const CNET = '10.214.1'; // the client's link: router .1, client .10-.209
const VIP = '10.214.100.1';
const CLIENT_ADDRS = 200;
const tag = String(process.pid);
const NODES = [1, 2, 3] as const;
type N = (typeof NODES)[number];
const NS = { r: `lec-r-${tag}`, c: `lec-c-${tag}`, b: `lec-b-${tag}`, 1: `lec-n1-${tag}`, 2: `lec-n2-${tag}`, 3: `lec-n3-${tag}` } as const;
const nodeAddr = (n: N) => `${NET}.1${n}`;
const DIR = `/run/lemonade-ecmp-${tag}`;
const PKG = join(ROOT, 'packaging', 'ecmp');
const WITHDRAW_TARGET_MS = 2000;

const lab = new Lab(Object.values(NS));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Namespaces left by an earlier run of this test that was killed before its cleanup. */
function removeStale(): void {
  for (const line of run('ip', ['netns', 'list']).stdout.split('\n')) {
    const m = /^(lec-(?:r|c|b|n\d)-(\d+))\b/.exec(line);
    if (!m || m[2] === tag) continue;
    if (run('kill', ['-0', m[2]!]).code === 0 && run('sh', ['-c', `grep -q ecmp /proc/${m[2]}/cmdline`]).code === 0) continue; // another run, live
    for (const pid of run('ip', ['netns', 'pids', m[1]!]).stdout.split('\n').filter(Boolean)) run('kill', ['-9', pid]);
    run('ip', ['netns', 'del', m[1]!]);
    rmSync(`/run/lemonade-ecmp-${m[2]}`, { recursive: true, force: true });
  }
}

// -------------------------------------------------------------------------------------------
// network

function buildNetwork(): void {
  for (const ns of Object.values(NS)) must('ip', ['netns', 'add', ns]);
  for (const ns of Object.values(NS)) must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const r = NS.r;
  must('ip', ['-n', r, 'link', 'add', 'lec-br', 'type', 'bridge', 'forward_delay', '0']);
  must('ip', ['-n', r, 'addr', 'add', `${NET}.1/24`, 'dev', 'lec-br']);
  must('ip', ['-n', r, 'link', 'set', 'lec-br', 'up']);
  const lan = (port: string, ns: string, addrs: string[]) => {
    must('ip', ['-n', r, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'lec0', 'netns', ns]);
    must('ip', ['-n', r, 'link', 'set', port, 'master', 'lec-br', 'up']);
    for (const a of addrs) must('ip', ['-n', ns, 'addr', 'add', a, 'dev', 'lec0']);
    must('ip', ['-n', ns, 'link', 'set', 'lec0', 'up']);
    must('ip', ['-n', ns, 'route', 'add', 'default', 'via', `${NET}.1`]);
  };
  for (const n of NODES) {
    lan(`lec-n${n}`, NS[n], [`${nodeAddr(n)}/24`]);
    must('ip', ['-n', NS[n], 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  }
  lan('lec-b', NS.b, [21, 22, 23].map((h) => `${NET}.${h}/24`));
  // the client's link, and its 200 source addresses
  must('ip', ['-n', r, 'link', 'add', 'lec-c', 'type', 'veth', 'peer', 'name', 'lec0', 'netns', NS.c]);
  must('ip', ['-n', r, 'addr', 'add', `${CNET}.1/24`, 'dev', 'lec-c']);
  must('ip', ['-n', r, 'link', 'set', 'lec-c', 'up']);
  const batch = Array.from({ length: CLIENT_ADDRS }, (_, i) => `addr add ${CNET}.${10 + i}/24 dev lec0\n`).join('');
  must('ip', ['-n', NS.c, '-batch', '-'], 10, batch);
  must('ip', ['-n', NS.c, 'link', 'set', 'lec0', 'up']);
  must('ip', ['-n', NS.c, 'route', 'add', 'default', 'via', `${CNET}.1`]);
  // the router forwards, and hashes each flow's addresses and ports over the next hops
  must('ip', ['netns', 'exec', r, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.fib_multipath_hash_policy=1']);
}

/** The shipped BIRD configs with this network's addresses (AS numbers as shipped), logging to stderr. */
function birdConfig(which: 'node' | 'router', n?: N): string {
  let text = readFileSync(join(PKG, `bird-${which}.conf`), 'utf8')
    .replaceAll('10.0.0.', `${NET}.`)
    .replaceAll('192.0.2.100', VIP)
    .replace('log syslog all;', 'log stderr all;');
  if (n !== undefined) text = text.replace(/router id \S+;/, `router id ${nodeAddr(n)};`);
  return text;
}
const birdc = (name: string) => `birdc -s ${join(DIR, `${name}.ctl`)}`;
function startBird(ns: string, name: string): Proc {
  return lab.start(ns, `bird-${name}`, ['bird', '-f', '-c', join(DIR, `${name}.conf`), '-s', join(DIR, `${name}.ctl`), '-P', join(DIR, `${name}.pid`)]);
}

let monitor: Proc; // `ip -ts monitor route` in the router's namespace

/** The VIP's route in the router's kernel after each change: when (the monitor's time stamp) and its next hops. */
function routeChanges(): Array<{ at: number; hops: N[] }> {
  // [2026-01-02T10:11:54.412930] 10.214.100.1 proto bird metric 32 \n\tnexthop via 10.214.0.11 dev lec-br weight 1 ...
  const out: Array<{ at: number; hops: N[] }> = [];
  for (const block of monitor.out.split(/(?=^\[)/m)) {
    const m = /^\[(\S+)\] (Deleted )?(\S+) /.exec(block);
    if (!m || m[3] !== VIP || !/proto bird/.test(block)) continue; // BIRD's route only, not the hand-made one
    out.push({ at: Date.parse(`${m[1]}Z`), hops: m[2] ? [] : NODES.filter((n) => block.includes(`via ${nodeAddr(n)} `)) }); // the monitor runs with TZ=UTC
  }
  return out;
}

/**
 * Wait until the router's kernel has changed the VIP's route, at or after `since`, so that `cond`
 * holds of its next hops; resolves with the monitor's time stamp of that change, taken as the kernel
 * reported it (not when the test, maybe busy, saw it).
 */
async function routeWhen(since: number, cond: (hops: N[]) => boolean, timeoutMs: number, what: string): Promise<number> {
  const found = () => routeChanges().find((c) => c.at >= since && cond(c.hops))?.at;
  return waitFor(found, timeoutMs, `${what} (the route's changes: ${JSON.stringify(routeChanges().slice(-3))})`, 5);
}

// -------------------------------------------------------------------------------------------
// the balancer nodes

function lbConfig(): string {
  return [
    '[runtime]',
    'drain_timeout_millis = 5000',
    '[proxy]',
    'listen_address = "0.0.0.0:8080"',
    'connect_timeout = "1s"',
    '[strategy]',
    'algorithm = "consistent_hash"',
    'hash_key = "source_ip"',
    '[health]',
    'interval = "500ms"',
    'timeout = "300ms"',
    '[admin]',
    'listen_address = "127.0.0.1:9090"',
    ...[1, 2, 3].flatMap((i) => ['[[backends]]', `id = ${i - 1}`, `name = "b${i}"`, `address = "${NET}.2${i}:9000"`]),
    '',
  ].join('\n');
}

const lbs = {} as Record<N, Proc>;
const announcers = {} as Record<N, Proc>;

function startLb(n: N): void {
  lbs[n] = lab.start(NS[n], `lb${n}`, [process.execPath, BUNDLE, 'lb', '--config', join(DIR, 'lb.toml')]);
}
/** The shipped announcement program with its defaults, told where this node's BIRD listens. */
function startAnnouncer(n: N): void {
  announcers[n] = lab.start(NS[n], `announce${n}`, [join(DIR, 'lemonade-announce.sh')], 600, { LEMONADE_ANNOUNCE_BIRDC: birdc(`n${n}`), PATH: process.env['PATH'] ?? '/usr/bin:/bin' });
}
/** When lb`n` recorded the operator's last `verb` of `backend` (from its /events: `b3: drain`). */
function operatorAt(n: N, backend: string, verb: 'drain' | 'enable'): number {
  const r = inNs(NS[n], ['curl', '-sf', '--max-time', '2', 'http://127.0.0.1:9090/events']);
  const events = JSON.parse(r.stdout) as Array<{ at: string; kind: string; message: string }>;
  const e = events.filter((x) => x.kind === 'admin' && x.message.startsWith(`${backend}:`) && x.message.includes(verb)).at(-1);
  assert.ok(e, `no ${verb} of ${backend} in lb${n}'s events: ${r.stdout}`);
  return Date.parse(e.at);
}
async function health(n: N): Promise<number> {
  return Number(inNs(NS[n], ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', 'http://127.0.0.1:9090/health']).stdout);
}
/** What an operator types: `lemonade backend drain|enable NAME` on the node (not blocking the clients' pipes). */
async function backendCmd(n: N, verb: 'drain' | 'enable', name: string): Promise<void> {
  const p = lab.start(NS[n], `backend ${verb} ${name}`, [process.execPath, BUNDLE, 'backend', verb, name, '--admin', 'http://127.0.0.1:9090'], 20);
  await p.exited;
  assert.equal(p.proc.exitCode, 0, `lemonade backend ${verb} ${name} on lb${n}: ${p.out}`);
}

// -------------------------------------------------------------------------------------------
// backends and the client

// A backend answers each line it reads with its name and the address of its peer, which is the
// node that carried the connection (the balancer is a full proxy).
const BACKEND = `
  const net = require('net');
  const [name, host] = process.argv.slice(1);
  net.createServer((s) => {
    s.setEncoding('utf8');
    let buf = '';
    s.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\n')) >= 0) { buf = buf.slice(i + 1); s.write(name + ' ' + s.remoteAddress + '\\n'); } });
    s.on('error', () => {});
  }).listen(9000, host);
`;

// The client, in three modes; one line of JSON per result, appended to the file named first.
// Connect timeout 2 s, answer timeout 3 s: loose, since with ECMP no SYN waits for a VIP to move
// (a route goes from one set of live next hops to another) and the machine may be loaded.
//   spread N K    K connections from each of N addresses, 10 at a time: { src, who, node, err }
//   loops L MS    L loops until stdin closes (at most MS ms), a new connection per request, each
//                 from the next of the 200 addresses: { s, e, src, who, node, err }
//   long N        N connections from N addresses, kept open; one request each at the start
//                 ({ phase: 'open', id, who, node, err }), and another on each live one for every
//                 line read from stdin, the line being the phase's label; { phase, done } ends one
const CLIENT = `
  const net = require('net');
  const [file, mode, a1, a2] = process.argv.slice(1);
  const SRC = (i) => '${CNET}.' + (10 + (i % ${CLIENT_ADDRS}));
  const fd = require('fs').openSync(file, 'a');
  const out = (o) => require('fs').writeSync(fd, JSON.stringify(o) + '\\n');
  const connect = (src) => new Promise((res) => {
    const s = net.connect({ host: '${VIP}', port: 8080, localAddress: src });
    s.setEncoding('utf8');
    s.on('error', () => {});
    const t = setTimeout(() => { s.destroy(); res({ err: 'CONNECT_TIMEOUT' }); }, 2000);
    s.once('connect', () => { clearTimeout(t); res({ s }); });
    s.once('error', (e) => { clearTimeout(t); res({ err: e.code || e.message }); });
  });
  const ask = (s) => new Promise((res) => {
    let buf = '';
    const done = (o) => { clearTimeout(t); s.off('data', onData); s.off('error', onErr); s.off('close', onClose); res(o); };
    const onData = (d) => { buf += d; const i = buf.indexOf('\\n'); if (i >= 0) { const [who, node] = buf.slice(0, i).split(' '); done({ who, node }); } };
    const onErr = (e) => done({ err: e.code || e.message });
    const onClose = () => done({ err: 'CLOSED' });
    const t = setTimeout(() => done({ err: 'ANSWER_TIMEOUT' }), 3000);
    s.on('data', onData); s.on('error', onErr); s.on('close', onClose);
    s.write('ping\\n');
  });
  const one = async (src) => {
    const s = Date.now();
    const c = await connect(src);
    if (c.err) return { s, e: Date.now(), src, err: c.err };
    const r = await ask(c.s);
    c.s.destroy();
    return { s, e: Date.now(), src, ...r };
  };
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));
  if (mode === 'spread') {
    const jobs = [];
    for (let k = 0; k < Number(a2); k++) for (let i = 0; i < Number(a1); i++) jobs.push(SRC(i));
    const worker = async () => { for (let src; (src = jobs.shift()); ) out(await one(src)); };
    Promise.all(Array.from({ length: 10 }, worker)).then(() => process.exit(0));
  } else if (mode === 'loops') {
    const loops = Number(a1), end = Date.now() + Number(a2);
    let over = false;
    process.stdin.on('end', () => (over = true)).resume();
    const loop = async (j) => { for (let i = j; !over && Date.now() < end; i += loops) { out(await one(SRC(i))); await pause(5); } };
    Promise.all(Array.from({ length: loops }, (_, j) => loop(j))).then(() => process.exit(0));
  } else if (mode === 'long') {
    const conns = [];
    (async () => {
      for (let id = 0; id < Number(a1); id++) {
        const c = await connect(SRC(id));
        const r = c.err ? c : await ask(c.s);
        if (!r.err) conns.push({ id, s: c.s });
        out({ phase: 'open', id, ...r });
      }
      out({ phase: 'open', done: true });
      let queue = Promise.resolve();
      let buf = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\\n')) >= 0) {
          const phase = buf.slice(0, i); buf = buf.slice(i + 1);
          queue = queue.then(async () => {
            await Promise.all(conns.filter((c) => !c.dead).map(async (c) => { const r = await ask(c.s); if (r.err) { c.dead = true; c.s.destroy(); } out({ phase, id: c.id, ...r }); }));
            out({ phase, done: true });
          });
        }
      });
      process.stdin.on('end', () => queue.then(() => process.exit(0)));
    })();
  }
`;

interface Res {
  readonly s?: number;
  readonly e?: number;
  readonly src?: string;
  readonly who?: string;
  readonly node?: string;
  readonly err?: string;
  readonly phase?: string;
  readonly id?: number;
  readonly done?: boolean;
}
const resultFiles = new Map<Proc, string>();
/** A client's results so far, from its file: a client writing to a pipe would stall whenever the test is busy. */
function results(p: Proc): Res[] {
  const text = readFileSync(resultFiles.get(p)!, 'utf8');
  return text.split('\n').filter((l) => l.endsWith('}')).map((l) => JSON.parse(l) as Res);
}
const nodeOf = (r: Res): N | 0 => NODES.find((n) => r.node === nodeAddr(n)) ?? 0;
function perNode(rs: readonly Res[]): Record<string, number> {
  const c: Record<string, number> = { lb1: 0, lb2: 0, lb3: 0 };
  for (const r of rs) if (!r.err) c[`lb${nodeOf(r)}`] = (c[`lb${nodeOf(r)}`] ?? 0) + 1;
  return c;
}
let clients = 0;
function startClient(args: string[], maxSec = 300): Proc {
  const file = join(DIR, `client-${++clients}.jsonl`);
  writeFileSync(file, '');
  const p = lab.start(NS.c, `client-${args[0]}`, [process.execPath, '-e', CLIENT, file, ...args], maxSec);
  resultFiles.set(p, file);
  return p;
}
/**
 * The load a phase watches: 60 long-lived connections, opened and asked once ('before'), and
 * client loops making new connections until endLoops() (at most 60 s).
 */
async function startLoad(): Promise<{ long: LongLived; before: Record<string, string>; loops: Proc; endLoops: () => Promise<void> }> {
  const long = new LongLived(60);
  await long.open();
  const before = await long.tick('before');
  const loops = startClient(['loops', '4', '60000']);
  await waitFor(() => results(loops).length > 50, 10_000, 'the client loops to run');
  return { long, before, loops, endLoops: () => (loops.proc.stdin!.end(), loops.exited) };
}

/** Long-lived connections: open them, then ask on each at every `tick`. */
class LongLived {
  readonly p: Proc;
  /** the node that carried each connection when it opened */
  readonly opened = new Map<number, N>();
  constructor(readonly count: number) {
    this.p = startClient(['long', String(count)], 400);
  }
  async open(): Promise<void> {
    await waitFor(() => results(this.p).some((r) => r.phase === 'open' && r.done), 30_000, `the long-lived connections to open: ${this.p.out.slice(-500)}`);
    for (const r of results(this.p)) if (r.phase === 'open' && !r.done && !r.err) this.opened.set(r.id!, nodeOf(r) as N);
    assert.equal(this.opened.size, this.count, `long-lived connections that failed to open: ${JSON.stringify(results(this.p).filter((r) => r.err))}`);
  }
  /** Ask on every live connection; per node it opened through: how many answered, from the same node. */
  async tick(label: string): Promise<Record<string, string>> {
    this.p.proc.stdin!.write(`${label}\n`);
    await waitFor(() => results(this.p).some((r) => r.phase === label && r.done), 20_000, `the long-lived connections' ${label} round`);
    const rs = results(this.p).filter((r) => r.phase === label && !r.done);
    const out: Record<string, string> = {};
    for (const n of NODES) {
      const mine = rs.filter((r) => this.opened.get(r.id!) === n);
      const same = mine.filter((r) => !r.err && nodeOf(r) === n).length;
      out[`lb${n}`] = `${same}/${mine.length}`;
    }
    return out;
  }
  /** Of the connections opened through `nodes`, how many answered from where they opened in `label`. */
  kept(label: string, nodes: readonly N[]): { kept: number; of: number; errors: string[] } {
    const rs = results(this.p).filter((r) => r.phase === label && !r.done && nodes.includes(this.opened.get(r.id!)!));
    return { kept: rs.filter((r) => !r.err && nodeOf(r) === this.opened.get(r.id!)).length, of: rs.length, errors: [...new Set(rs.filter((r) => r.err).map((r) => r.err!))] };
  }
  async close(): Promise<void> {
    this.p.proc.stdin!.end();
    await Promise.race([this.p.exited, sleep(5000)]);
    await lab.stop(this.p);
  }
}

// -------------------------------------------------------------------------------------------

test('ECMP fleet: three nodes announcing one VIP over BGP (BIRD 2), health-gated, consistent_hash', { timeout: 480_000 }, async (t) => {
  for (const tool of ['ip', 'bird', 'birdc', 'curl', 'timeout', 'sysctl']) {
    if (!requireTool(t, tool, hasTool(tool))) return;
  }
  if (process.getuid?.() !== 0 && !requireTool(t, 'root (network namespaces need it)', false)) return;

  removeStale();
  t.after(async () => {
    await lab.cleanup();
    rmSync(DIR, { recursive: true, force: true });
  });
  mkdirSync(DIR, { recursive: true, mode: 0o755 });
  copyFileSync(join(PKG, 'lemonade-announce.sh'), join(DIR, 'lemonade-announce.sh'));
  chmodSync(join(DIR, 'lemonade-announce.sh'), 0o755);
  writeFileSync(join(DIR, 'lb.toml'), lbConfig());
  writeFileSync(join(DIR, 'r.conf'), birdConfig('router'));
  for (const n of NODES) writeFileSync(join(DIR, `n${n}.conf`), birdConfig('node', n));
  buildNetwork();

  for (const [i, name] of ['b1', 'b2', 'b3'].entries()) lab.start(NS.b, name, [process.execPath, '-e', BACKEND, name, `${NET}.2${i + 1}`]);
  monitor = lab.start(NS.r, 'route-monitor', ['ip', '-ts', 'monitor', 'route'], 600, { TZ: 'UTC' });
  const routerBird = startBird(NS.r, 'r');
  for (const n of NODES) {
    startBird(NS[n], `n${n}`);
    startLb(n);
  }
  for (const n of NODES) await waitFor(async () => (await health(n)) === 200, 20_000, `lb${n} to be healthy; its output: ${lbs[n].out}`, 100);
  for (const n of NODES) startAnnouncer(n);
  await routeWhen(0, (h) => h.length === 3, 30_000, `the router's multipath route through the three nodes; its BIRD said:\n${routerBird.out}\nlb1's announcer said:\n${announcers[1].out}`);
  t.diagnostic(`router: ${must('ip', ['-n', NS.r, 'route', 'show', `${VIP}/32`]).replace(/\s+/g, ' ')}`);

  await t.test('flows spread over the three nodes, and an address reaches one backend through any node', async (s) => {
    const ADDRS = 100;
    const PER = 9;
    const c = startClient(['spread', String(ADDRS), String(PER)]);
    await c.exited;
    const rs = results(c);
    assert.equal(rs.length, ADDRS * PER, `client output: ${c.out.slice(-1000)}`);
    const failed = rs.filter((r) => r.err);
    const counts = perNode(rs);
    const bySrc = new Map<string, { nodes: Set<N | 0>; backends: Set<string> }>();
    for (const r of rs.filter((x) => !x.err)) {
      const e = bySrc.get(r.src!) ?? { nodes: new Set(), backends: new Set() };
      e.nodes.add(nodeOf(r));
      e.backends.add(r.who!);
      bySrc.set(r.src!, e);
    }
    const entries = [...bySrc.values()];
    const split = entries.filter((e) => e.backends.size > 1);
    const through = (k: number) => entries.filter((e) => e.nodes.size >= k).length;
    const backends = perBackend(rs);
    s.diagnostic(`figures spread: ${rs.length} connections from ${ADDRS} addresses: per node ${JSON.stringify(counts)}, per backend ${JSON.stringify(backends)}, ${failed.length} failed; addresses seen through 2+ nodes: ${through(2)}, through all 3: ${through(3)}; addresses that reached more than one backend: ${split.length}`);
    assert.equal(failed.length, 0, `failed connections: ${JSON.stringify(failed.slice(0, 5))}`);
    for (const n of NODES) assert.ok(counts[`lb${n}`]! >= rs.length * 0.2, `lb${n} carried ${counts[`lb${n}`]} of ${rs.length} (expected about a third)`);
    assert.ok(through(2) >= ADDRS * 0.9, `only ${through(2)} of ${ADDRS} addresses went through more than one node: the router does not hash ports`);
    assert.equal(split.length, 0, `addresses that reached different backends through different nodes: ${JSON.stringify(split.slice(0, 3).map((e) => [...e.backends]))}`);
  });

  await t.test("lb2's /health turns 503: its route is withdrawn in < 2 s and new connections go to the others", async (s) => {
    const { long, before, loops, endLoops } = await startLoad();
    for (const b of ['b1', 'b2']) await backendCmd(2, 'drain', b);
    await sleep(300);
    await backendCmd(2, 'drain', 'b3');
    assert.equal(await health(2), 503, "lb2's /health after draining its backends");
    const t503 = operatorAt(2, 'b3', 'drain'); // the balancer's own record: /health is 503 from then on
    const tGone = await routeWhen(t503, (h) => !h.includes(2), 5000, "lb2's route to be withdrawn");
    assert.deepEqual(routeChanges().at(-1)?.hops, [1, 3]);
    const after = await long.tick('after-withdrawal');
    // connections opened while lb2 is out, to see what its return does to them
    const during = new LongLived(60);
    await during.open();
    await waitFor(() => results(loops).filter((r) => r.s! >= tGone).length >= 400, 20_000, 'new connections after the withdrawal');
    await endLoops();
    const rs = results(loops);
    const later = rs.filter((r) => r.s! >= tGone);
    const lost = later.filter((r) => r.err);
    const between = rs.filter((r) => r.s! >= t503 - 200 && r.s! < tGone);
    const survivors = long.kept('after-withdrawal', [1, 3]);
    s.diagnostic(`figures health: route withdrawn ${tGone - t503} ms after /health turned 503 (target < ${WITHDRAW_TARGET_MS}); ${later.length} connections started after the withdrawal, ${lost.length} failed, per node ${JSON.stringify(perNode(later))}; started from 200 ms before the 503 to the withdrawal: ${between.length}, per node ${JSON.stringify(perNode(between))}, ${between.filter((r) => r.err).length} failed ${JSON.stringify([...new Set(between.filter((r) => r.err).map((r) => r.err))])}; long-lived connections answered by the node they opened through, before ${JSON.stringify(before)}, after the withdrawal ${JSON.stringify(after)}: the survivors' ${survivors.kept}/${survivors.of} kept (errors ${survivors.errors.join(',') || 'none'})`);

    // back (before asserting, so that a failure leaves the next phases a whole fleet): the
    // backends enabled, /health 200, the announcer announces after 2 good checks
    for (const b of ['b1', 'b2', 'b3']) await backendCmd(2, 'enable', b);
    await waitFor(async () => (await health(2)) === 200, 10_000, "lb2's /health to be 200 again", 20);
    const t200 = operatorAt(2, 'b1', 'enable'); // a usable backend: /health is 200 from then on
    const tBack = await routeWhen(tGone, (h) => h.length === 3, 10_000, "lb2's route to come back");
    const back = await long.tick('after-return');
    const survivorsBack = long.kept('after-return', [1, 3]);
    const duringBack = await during.tick('after-return');
    const kept = during.kept('after-return', [1, 3]);
    s.diagnostic(`figures health-return: route back ${tBack - t200} ms after /health turned 200 (rise 2 checks); long-lived connections opened before the withdrawal, after the return ${JSON.stringify(back)}: ${survivorsBack.kept}/${survivorsBack.of} kept; opened while lb2 was out ${JSON.stringify(duringBack)}: ${kept.kept}/${kept.of} kept (errors ${kept.errors.join(',') || 'none'})`);
    await long.close();
    await during.close();
    assert.ok(tGone - t503 < WITHDRAW_TARGET_MS, `withdrawn after ${tGone - t503} ms`);
    assert.ok(later.length > 100, `only ${later.length} connections after the withdrawal`);
    assert.equal(lost.length, 0, `new connections that failed after the withdrawal: ${JSON.stringify(lost.slice(0, 5))}`);
    assert.equal(perNode(later)['lb2'], 0, 'lb2 still took new connections after its withdrawal');
  });

  await t.test('lb3 stops as systemctl stop would (announcer withdraws, grace, then the balancer drains): no request lost', async (s) => {
    const { long, before, loops, endLoops } = await startLoad();
    // lemonade-lb-announce.service is ordered after lemonade-lb.service, so `systemctl stop
    // lemonade-lb` stops it first (SIGTERM, wait for its exit), then the balancer (SIGTERM)
    const t0 = Date.now();
    const announcerDone = lab.stop(announcers[3]);
    const tGone = await routeWhen(t0, (h) => !h.includes(3), 5000, "lb3's route to be withdrawn");
    const after = await long.tick('after-withdrawal');
    await announcerDone;
    const tAnnouncerExit = Date.now();
    const served = results(loops).filter((r) => r.s! >= tGone && nodeOf(r) === 3).length;
    await lab.stop(lbs[3]);
    const tLbExit = Date.now();
    await waitFor(() => results(loops).filter((r) => r.s! >= tLbExit).length >= 200, 20_000, "new connections after lb3's exit");
    await endLoops();
    const rs = results(loops);
    // A connection open at the instant of the withdrawal may be moved by the router's rehash to a
    // node that does not know it (lb3's own, and some of the survivors': see the rehash figures):
    // those are counted apart. Every other request must succeed.
    const window = rs.filter((r) => r.e! >= t0 - 1000);
    const inflight = window.filter((r) => r.s! < tGone && r.e! >= tGone);
    const lost = window.filter((r) => r.err && !inflight.includes(r));
    const later = rs.filter((r) => r.s! >= tGone);
    const stopped = /stopped: (\d+) connections drained, (\d+) cut/.exec(lbs[3].out);
    const survivors = long.kept('after-withdrawal', [1, 2]);
    s.diagnostic(`figures stop: route withdrawn ${tGone - t0} ms after SIGTERM to lb3's announcer, which exited ${tAnnouncerExit - t0} ms after it (grace 2 s), then lb3 stopped in ${tLbExit - tAnnouncerExit} ms (${stopped?.[0] ?? 'no stop line'}, exit ${lbs[3].proc.exitCode}); ${window.length} requests from 1 s before the stop to the end, ${lost.length} lost ${JSON.stringify(lost.slice(0, 5))}; open at the instant of the withdrawal ${inflight.length}, of which ${inflight.filter((r) => r.err).length} failed ${JSON.stringify(inflight.filter((r) => r.err))}; started after it ${later.length}, per node ${JSON.stringify(perNode(later))}, through lb3 ${served}; long-lived connections before ${JSON.stringify(before)}, after the withdrawal ${JSON.stringify(after)}: the survivors' ${survivors.kept}/${survivors.of} kept (errors ${survivors.errors.join(',') || 'none'})`);
    await long.close();
    // lb3 back before asserting, for the next phase
    const exitCode = lbs[3].proc.exitCode;
    startLb(3);
    await waitFor(async () => (await health(3)) === 200, 20_000, 'lb3 to be healthy again', 100);
    startAnnouncer(3);
    await routeWhen(tGone, (h) => h.length === 3, 10_000, "lb3's route to come back");
    assert.ok(tGone - t0 < WITHDRAW_TARGET_MS, `withdrawn after ${tGone - t0} ms`);
    assert.equal(exitCode, 0, `lb3's exit code after SIGTERM`);
    assert.equal(served, 0, 'lb3 took new connections after its withdrawal');
    assert.equal(lost.length, 0, `requests lost around the stop: ${JSON.stringify(lost)}`);
  });

  await t.test('the same next hop removed from a resilient next-hop group (made by hand): survivors keep their flows', async (s) => {
    const probe = run('ip', ['-n', NS.r, 'nexthop', 'add', 'id', '901', 'via', nodeAddr(1), 'dev', 'lec-br']);
    if (probe.code !== 0) {
      s.skip(`this kernel or iproute2 has no next-hop objects: ${probe.stderr}`);
      return;
    }
    must('ip', ['-n', NS.r, 'nexthop', 'add', 'id', '902', 'via', nodeAddr(2), 'dev', 'lec-br']);
    must('ip', ['-n', NS.r, 'nexthop', 'add', 'id', '903', 'via', nodeAddr(3), 'dev', 'lec-br']);
    const figures: Record<string, string> = {};
    const kept: Record<string, { kept: number; of: number }> = {};
    for (const kind of ['hash-threshold', 'resilient'] as const) {
      const group = (ids: string) => ['nexthop', 'replace', 'id', '910', 'group', ids, ...(kind === 'resilient' ? ['type', 'resilient', 'buckets', '512'] : [])];
      // [what, the group the connections open through, the group then, the nodes that stay]
      const changes = [
        ['lb3 removed', '901/902/903', '901/902', [1, 2]],
        ['lb1 removed', '901/902/903', '902/903', [2, 3]],
        ['lb2 added', '901/903', '901/902/903', [1, 3]],
      ] as const;
      for (const [what, from, to, stay] of changes) {
        must('ip', ['-n', NS.r, ...group(from)]);
        // a route of lower metric than BIRD's (32) takes the VIP's traffic; BIRD leaves it alone
        must('ip', ['-n', NS.r, 'route', 'replace', `${VIP}/32`, 'nhid', '910', 'metric', '10']);
        const long = new LongLived(60);
        await long.open();
        must('ip', ['-n', NS.r, ...group(to)]);
        await long.tick('changed');
        const k = long.kept('changed', stay);
        await long.close();
        must('ip', ['-n', NS.r, 'route', 'del', `${VIP}/32`, 'metric', '10']);
        must('ip', ['-n', NS.r, 'nexthop', 'del', 'id', '910']);
        figures[`${kind}, ${what}`] = `${k.kept}/${k.of}`;
        kept[`${kind}, ${what}`] = k;
      }
    }
    s.diagnostic(`figures rehash: long-lived connections through the nodes that stay, kept when the group changes (resilient: 512 buckets, idle timer 120 s): ${JSON.stringify(figures)}`);
    for (const [what, k] of Object.entries(kept)) {
      if (what.startsWith('resilient')) assert.equal(k.kept, k.of, `${what}: a resilient group moved flows of surviving next hops`);
    }
  });

  for (const n of NODES) assert.ok(alive(lbs[n]), `lb${n} died: ${lbs[n].out.slice(-500)}`);
});

function perBackend(rs: readonly Res[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const r of rs) if (!r.err) c[r.who!] = (c[r.who!] ?? 0) + 1;
  return c;
}
