// `npm run bench`: what lemonade-lb costs per request, per connection, per byte and per idle
// connection, next to HAProxy and a 30-line Node `pipe` proxy, in one run.
//
// Contenders: direct (the client talks to the backend: the limit), haproxy (`mode tcp`,
// `nbthread 1`), pipe (scripts/bench/pipe-proxy.mjs), node-raw (scripts/bench/raw-proxy.mjs: a
// relay on libuv's handles without net.Socket, the floor of what a Node relay costs; a
// reference, not a target), lemonade (dist/lemonade.js, one process),
// lemonade-workers (the same with `[runtime] workers = 0`: one data-plane worker per CPU, pinned
// like the others, so its row is the CPU cost of the multi-process form; CPU and RSS are summed
// over the process and its workers), lemonade-dns (the lemonade contender with its backend named
// `bench.ldns.test` with `resolve = "dns"`, answered by a dnsmasq the run starts: what following
// the DNS costs per connection; W2, and W1 when --only names it), lemonade-20svc (the lemonade contender's bundle, settings,
// listen address and backend, plus 19 more [[services]] on loopback ports of their own, each with
// its own backend entry pointing at the same backend: what a connection costs when the balancer
// fronts 20 services, next to one; in the default run it takes part in W2 only, and in W1 too
// when --only names it: a keep-alive request never meets the per-service routing, which runs once
// per accepted connection, so W1 would add ~15 s to the default run to repeat lemonade's row; it
// is left out of W3 (per byte), W4 (RSS growth per connection over a baseline taken with the 20
// listeners already open) and W5 (workers over one process) for the same reason), lemonade-sni
// (the lemonade contender's port shared by three services told apart by sni, the measured one
// its default route: every connection is read before it is routed; wrk's plain HTTP is not a
// ClientHello, so it is routed on its first bytes; the ClientHello parse itself is measured by
// test/unit/client-hello.test.ts's figures, not here) and lemonade-chash (algorithm consistent_hash
// on the client's IP); these two also take part in W2 only, each next to lemonade's round robin;
// lemonade-alog and lemonade-alog1 (the access log on, JSON to a file in the run's directory,
// every connection or sample = 0.01): W2 only, next to lemonade with the log off.
// nginx-stream (nginx's `stream` module, one process, `ssl` on its listener) takes part in the
// TLS workloads, beside haproxy (`bind … ssl crt`) and lemonade (a `[tls]` table), and in U1
// (`listen … udp`, `proxy_responses 1`) beside lemonade (`protocol = "udp"`, `udp_responses =
// 1`) and direct; the others have no TLS or UDP and stay out of them.
// Workloads:
//   W1 keep-alive HTTP through the proxy: `wrk -c64`; req/s, p50/p99, proxy CPU µs per request
//   W2 one new connection per request (`Connection: close`): conn/s, proxy CPU µs per connection
//   W3 bulk: `iperf3` through the proxy; Gbit/s, proxy CPU ms per GB
//   W4 idle connections (10,000, or fewer when the file-descriptor limit forbids): RSS KiB each
//   W5 scaling: conn/s of W2's load through lemonade with 1 worker and with one per CPU, the
//      proxy and the load both spread over every CPU (not pinned apart: on a 2-CPU machine the
//      load generator cannot have a core of its own, and the report says so)
// TLS workloads (named with --workloads; not in the default run): the proxy terminates TLS 1.3
// and relays plaintext to the same backends, with certificates the run makes with openssl.
//   T1 a full TLS 1.3 handshake per connection, ECDSA P-256 certificate: `openssl s_time -new
//      -www /` (--tls-clients processes at once; never resumes a session, which wrk does every
//      other connection); handshakes/s, proxy CPU µs per handshake
//   T2 the same with an RSA 2048 certificate
//   T3 bulk over TLS: `iperf3` through a `socat` TLS client (ECDSA P-256); Gbit/s, proxy CPU
//      ms per GB
// UDP workload (named with --workloads; not in the default run):
//   U1 DNS over UDP: `dnsperf` (--dns-clients sockets, 100 queries outstanding) to a dnsmasq on the
//      load CPU; a flow ends once its queries are answered (udp_responses = 1, nginx's
//      proxy_responses 1); queries/s, proxy CPU µs per query, judged against nginx-stream in the
//      same round (≤ 1.5)
// Each measurement gets a fresh proxy process (W1-W3 and T1-T3 after a 1 s warm-up), the contenders'
// order rotates every round, and rounds interleave the contenders so that the noise of a
// shared machine hits them alike. Costs are reported as medians, min-max and as ratios to
// HAProxy measured in the same round (the median of the per-round ratios).
//
// The proxy runs pinned to one CPU (taskset, --proxy-cpu, default 1); load generators, the
// backends (nginx, iperf3 -s) and this script on the other (--load-cpu, default 0). CPU time is
// read from /proc/PID/stat (utime + stime, all threads). Everything listens on 127.0.0.1.
//
// Missing tools (haproxy, nginx, wrk, iperf3) are installed with apt-get when running as root,
// unless --no-install; what is still missing is left out and said so (without wrk no W1/W2,
// without iperf3 no W3, without haproxy no ratios, without nginx a small Node HTTP backend
// stands in, without dnsmasq, which .ci/run installs, no lemonade-dns row; without openssl no
// T1-T3, without socat no T3, without nginx's stream module, libnginx-mod-stream, no
// nginx-stream row, without dnsperf or dnsmasq no U1). --quick is a short smoke run (1 round, 1 s per measurement, 1,000 idle
// connections, never installs anything) used by test/e2e/bench-smoke.test.ts.
//
// Flags: --quick, --rounds N (3), --duration S (3), --idle N (10000), --no-install,
//        --baseline-bundle PATH (another build of dist/lemonade.js, run as "lemonade-base"),
//        --only a,b (contenders; default all but lemonade-base; naming lemonade-20svc or
//        lemonade-dns here adds its W1 row), --workloads W1,W2 (subset), --lemonade-exe PATH (run
//        lemonade as this executable, e.g. the single executable dist/lemonade), --lemonade-env
//        NAME=VALUE (e.g. LEMONADE_LB_REUSE_PORT=0; repeatable), --lemonade-node-args "…" (e.g.
//        "--cpu-prof --cpu-prof-dir=/tmp/prof"), --tls-clients N (T1/T2: s_time processes at
//        once, 4), --dns-clients N (U1: dnsperf's client sockets, 8), --dns-qps N (U1: dnsperf's
//        rate, -Q; default as fast as answers come), --json (one JSON line with every figure last).
// Exit code: 0 when every target is met (always 0 with --quick unless the run broke), 1 when a
// target was missed, 2 when the run itself failed. The run is bounded (--budget S, default 540):
// rounds that would not fit are left out. Every process started is stopped by its PID.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { promises as dnsPromises } from 'node:dns';
import net from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from '../test/helpers';
import { DNSMASQ, startDnsmasq, type Dnsmasq } from '../test/dnsmasq';

const ROOT = resolve(__dirname, '..');
const BUNDLE = join(ROOT, 'dist', 'lemonade.js');
const PIPE_PROXY = join(ROOT, 'scripts', 'bench', 'pipe-proxy.mjs');
const RAW_PROXY = join(ROOT, 'scripts', 'bench', 'raw-proxy.mjs');
const HTTP_BACKEND = join(ROOT, 'scripts', 'bench', 'http-backend.mjs');
const TICK_US = 1e6 / (Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100);

const CONTENDERS = ['direct', 'haproxy', 'nginx-stream', 'pipe', 'node-raw', 'lemonade', 'lemonade-20svc', 'lemonade-sni', 'lemonade-chash', 'lemonade-dns', 'lemonade-alog', 'lemonade-alog1', 'lemonade-workers', 'lemonade-base'] as const;
type ContenderName = (typeof CONTENDERS)[number];
/** lemonade with one thing changed, measured in W2 (a new connection each) next to lemonade, same round */
const VARIANTS = {
  'lemonade-20svc': '20 services',
  'lemonade-sni': 'SNI inspection',
  'lemonade-chash': 'consistent_hash',
  'lemonade-dns': 'DNS-resolved backend',
  'lemonade-alog': 'access log to a file',
  'lemonade-alog1': 'access log, sample 0.01',
} as const satisfies Partial<Record<ContenderName, string>>;
type Variant = keyof typeof VARIANTS;
const isVariant = (c: ContenderName): c is Variant => c in VARIANTS;
const WORKLOADS = ['W1', 'W2', 'W3', 'W4', 'W5', 'T1', 'T2', 'T3', 'U1'] as const;
type Workload = (typeof WORKLOADS)[number];
/** the run without --workloads: the plain relay's */
const DEFAULT_WORKLOADS: readonly Workload[] = ['W1', 'W2', 'W3', 'W4', 'W5'];
const TLS_WORKLOADS: readonly Workload[] = ['T1', 'T2', 'T3'];
const isTls = (w: Workload): boolean => TLS_WORKLOADS.includes(w);
/** the contenders that terminate TLS (the others have no TLS and stay out of T1-T3) */
const TLS_CONTENDERS: readonly ContenderName[] = ['haproxy', 'nginx-stream', 'lemonade', 'lemonade-base'];
/** the contenders that relay UDP (U1) */
const UDP_CONTENDERS: readonly ContenderName[] = ['direct', 'nginx-stream', 'lemonade', 'lemonade-workers', 'lemonade-base'];
const isUdp = (w: Workload): w is 'U1' => w === 'U1';
/** U1: lemonade's CPU per query over nginx-stream's, same round, at most */
const UDP_TARGET = 1.5;
/** U1's query name, answered by the run's dnsmasq from its hosts file */
const U1_NAME = 'u1.ldns.test';
/** the certificate each TLS workload's proxies present */
const TLS_KEY_OF = { T1: 'ec', T2: 'rsa', T3: 'ec' } as const;

/** Targets: lemonade's cost over HAProxy's, same run. */
const TARGETS: Record<Exclude<Workload, 'W5' | 'U1'>, number> = { W1: 1.2, W2: 1.5, W3: 1.5, W4: 3, T1: 1.2, T2: 1.2, T3: 1.2 };
/** W5: conn/s with every CPU's worker over conn/s with one, at least. */
const SCALING_TARGET = 1.6;
const CPUS = Math.max(1, availableParallelism());
const ALL_CPUS = `0-${CPUS - 1}`;
/** lemonade-20svc: the measured (default) service plus this many more. */
const EXTRA_SERVICES = 19;
/**
 * Variants of the lemonade contender that differ from it in one thing, each compared with it in
 * the same round, per connection (W2; W1 as well when --only names them): what the report's line
 * calls them.
 */

interface Args {
  quick: boolean;
  rounds: number;
  durationS: number;
  idle: number;
  install: boolean;
  only: ContenderName[];
  /** --only was given (lemonade-20svc then takes part in W1 as well as W2) */
  onlyGiven: boolean;
  workloads: Workload[];
  lemonadeNodeArgs: string[];
  /** another build of lemonade to compare with (contender "lemonade-base") */
  baselineBundle: string | null;
  /** run lemonade (and lemonade-workers) as this executable, e.g. the single executable dist/lemonade */
  lemonadeExe: string | null;
  /** extra environment for lemonade, e.g. LEMONADE_LB_REUSE_PORT=0 (the LEMONADE_* of this shell are not passed) */
  lemonadeEnv: Record<string, string>;
  json: boolean;
  budgetS: number;
  proxyCpu: number;
  loadCpu: number;
  /** T1/T2: openssl s_time processes at once */
  tlsClients: number;
  /** U1: dnsperf's client sockets */
  dnsClients: number;
  /** U1: dnsperf's queries per second at most (0: as fast as the answers come) */
  dnsQps: number;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = {
    quick: false,
    rounds: 3,
    durationS: 3,
    idle: 10_000,
    install: true,
    only: CONTENDERS.filter((c) => c !== 'lemonade-base'),
    onlyGiven: false,
    baselineBundle: null,
    lemonadeExe: null,
    lemonadeEnv: {},
    workloads: [...DEFAULT_WORKLOADS],
    lemonadeNodeArgs: [],
    json: false,
    budgetS: 540,
    proxyCpu: 1,
    loadCpu: 0,
    tlsClients: 4,
    dnsClients: 8,
    dnsQps: 0,
  };
  let roundsSet = false;
  let durationSet = false;
  let idleSet = false;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${k} wants a value`);
      return v;
    };
    const int = (lo: number, hi: number): number => {
      const v = Number(val());
      if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`${k} wants an integer in ${lo}..${hi}`);
      return v;
    };
    if (k === '--quick') a.quick = true;
    else if (k === '--json') a.json = true;
    else if (k === '--no-install') a.install = false;
    else if (k === '--rounds') (a.rounds = int(1, 50)), (roundsSet = true);
    else if (k === '--duration') (a.durationS = int(1, 60)), (durationSet = true);
    else if (k === '--idle') (a.idle = int(10, 100_000)), (idleSet = true);
    else if (k === '--budget') a.budgetS = int(10, 3600);
    else if (k === '--proxy-cpu') a.proxyCpu = int(0, 1023);
    else if (k === '--load-cpu') a.loadCpu = int(0, 1023);
    else if (k === '--tls-clients') a.tlsClients = int(1, 64);
    else if (k === '--dns-clients') a.dnsClients = int(1, 256);
    else if (k === '--dns-qps') a.dnsQps = int(0, 10_000_000);
    else if (k === '--baseline-bundle') a.baselineBundle = resolve(val());
    else if (k === '--lemonade-exe') a.lemonadeExe = resolve(val());
    else if (k === '--lemonade-env') {
      const [name, ...v] = val().split('=');
      a.lemonadeEnv[name!] = v.join('=');
    }
    else if (k === '--lemonade-node-args') a.lemonadeNodeArgs = val().split(/\s+/).filter(Boolean);
    else if (k === '--only') {
      const names = val().split(',');
      for (const n of names) if (!(CONTENDERS as readonly string[]).includes(n)) throw new Error(`--only: unknown contender ${n} (known: ${CONTENDERS.join(',')})`);
      a.only = CONTENDERS.filter((c) => names.includes(c));
      a.onlyGiven = true;
    } else if (k === '--workloads') {
      const names = val().toUpperCase().split(',');
      for (const n of names) if (!(WORKLOADS as readonly string[]).includes(n)) throw new Error(`--workloads: unknown workload ${n} (known: ${WORKLOADS.join(',')})`);
      a.workloads = WORKLOADS.filter((w) => names.includes(w));
    } else throw new Error(`unknown argument ${k} (see the header of scripts/bench.ts)`);
  }
  if (a.baselineBundle !== null && !a.only.includes('lemonade-base')) a.only.push('lemonade-base');
  if (a.quick) {
    a.install = false;
    if (!roundsSet) a.rounds = 1;
    if (!durationSet) a.durationS = 1;
    if (!idleSet) a.idle = 1000;
    a.budgetS = Math.min(a.budgetS, 60);
  }
  return a;
}

// -------------------------------------------------------------------------------------------
// Processes

const children = new Set<ChildProcess>();

interface Proc {
  readonly pid: number;
  readonly child: ChildProcess;
  stderr(): string;
}

/** Start `cmd` pinned to `cpu` (taskset: a CPU or a list). The PID is the program's own (taskset execs). */
function startPinned(cpu: number | string, cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Proc {
  const child = spawn('taskset', ['-c', String(cpu), cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (err.length < 8000) err += d.toString();
  });
  child.on('exit', () => children.delete(child));
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
  return { pid: child.pid, child, stderr: () => err };
}

async function stop(p: Proc | null): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.child.once('exit', () => r()));
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  const t = setTimeout(() => {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }, 3000);
  await gone;
  clearTimeout(t);
}

function killAllNow(): void {
  for (const c of children) {
    if (c.pid !== undefined && c.exitCode === null) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
}

/** Run a command pinned to the load CPU to completion; bounded. */
function runPinned(cpu: number | string, cmd: string, args: readonly string[], timeoutMs: number): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((res) => {
    const child = spawn('taskset', ['-c', String(cpu), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(t);
      children.delete(child);
      res({ code, out, err });
    });
  });
}

/** `pid` and its descendants (lemonade's data-plane workers), from /proc. */
function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const s = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone meanwhile */
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [c, pp] of parent) if (pp === out[i]) out.push(c);
  return out;
}

/** utime + stime of the process tree (all threads). */
function cpuTicks(pid: number): number {
  let n = 0;
  for (const p of processTree(pid)) {
    try {
      const s = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      n += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone meanwhile */
    }
  }
  return n;
}

/** Resident memory of the process tree. */
function rssKiB(pid: number): number {
  let n = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) n += Number(m[1]);
    } catch {
      /* gone meanwhile */
    }
  }
  return n;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}


/** Wait until 127.0.0.1:port accepts a connection. */
async function waitListening(port: number, proc: Proc | null, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) throw new Error(`${what} exited: ${proc.stderr()}`);
    if (Date.now() > end) throw new Error(`${what} is not listening on ${port} after ${timeoutMs} ms${proc ? `: ${proc.stderr()}` : ''}`);
    await sleep(50);
  }
}

/** Established TCP connections whose local port is `port` (IPv4, from /proc/net/tcp). */
function establishedOn(port: number): number {
  return socketsOn(port, '01');
}

/** A socket listens on 127.0.0.1:port (from /proc/net/tcp, without connecting to it). */
function listeningOn(port: number): boolean {
  return socketsOn(port, '0A') > 0;
}

/** TCP sockets whose local port is `port` in state `st` (IPv4, from /proc/net/tcp). */
function socketsOn(port: number, st: string): number {
  const hex = ':' + port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  const text = readFileSync('/proc/net/tcp', 'utf8');
  let i = text.indexOf('\n') + 1;
  while (i > 0 && i < text.length) {
    const j = text.indexOf('\n', i);
    const line = text.slice(i, j < 0 ? text.length : j);
    // "  sl  local_address rem_address   st ..."
    const parts = line.trim().split(/\s+/);
    if (parts[1]?.endsWith(hex) && parts[3] === st) n++;
    i = j + 1;
    if (j < 0) break;
  }
  return n;
}

// -------------------------------------------------------------------------------------------
// Tools

const TOOLS = ['haproxy', 'nginx', 'wrk', 'iperf3', 'openssl', 'socat', 'ngx_stream_module', 'dnsperf'] as const;
type Tool = (typeof TOOLS)[number];
/** what the TLS workloads need beyond the others: openssl (certificates, s_time), socat (T3), nginx's stream module */
const TLS_TOOLS: readonly Tool[] = ['openssl', 'socat', 'ngx_stream_module'];
/** what U1 needs beyond the others: the DNS load generator, nginx's stream module (dnsmasq: test/dnsmasq.ts, from .ci/run) */
const UDP_TOOLS: readonly Tool[] = ['dnsperf', 'ngx_stream_module'];
/** the Debian package of each tool */
const PACKAGE: Record<Tool, string> = { haproxy: 'haproxy', nginx: 'nginx', wrk: 'wrk', iperf3: 'iperf3', openssl: 'openssl', socat: 'socat', ngx_stream_module: 'libnginx-mod-stream', dnsperf: 'dnsperf' };

function which(tool: string): string | null {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/sbin'])) {
    if (dir && existsSync(join(dir, tool))) return join(dir, tool);
  }
  return null;
}

/** nginx's dynamic stream module (Debian's libnginx-mod-stream), where nginx looks for modules */
function streamModule(): string | null {
  for (const dir of ['/usr/lib/nginx/modules', '/usr/share/nginx/modules']) if (existsSync(join(dir, 'ngx_stream_module.so'))) return join(dir, 'ngx_stream_module.so');
  return null;
}

/** The tools found; the TLS workloads' and U1's own only when `tls`, `udp` (a run without them installs none of them). */
function findTools(install: boolean, tls: boolean, udp: boolean, log: (s: string) => void): Record<Tool, string | null> {
  const wanted = TOOLS.filter((t) => (tls && TLS_TOOLS.includes(t)) || (udp && UDP_TOOLS.includes(t)) || (!TLS_TOOLS.includes(t) && !UDP_TOOLS.includes(t)));
  const find = (): Record<Tool, string | null> => Object.fromEntries(TOOLS.map((t) => [t, !wanted.includes(t) ? null : t === 'ngx_stream_module' ? streamModule() : which(t)])) as Record<Tool, string | null>;
  let found = find();
  const missing = wanted.filter((t) => !found[t]).map((t) => PACKAGE[t]);
  if (missing.length > 0 && install) {
    if (process.getuid?.() === 0 && which('apt-get')) {
      log(`installing ${missing.join(' ')} with apt-get …`);
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
      spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env, timeout: 180_000 });
      const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'ignore', env, timeout: 300_000 });
      if (r.status !== 0) log(`apt-get install ${missing.join(' ')} failed (exit ${r.status})`);
      found = find();
    } else {
      log(`missing ${missing.join(' ')} and not root (or no apt-get): install them to compare`);
    }
  }
  return found;
}

// -------------------------------------------------------------------------------------------
// Backends and contenders

interface Backends {
  httpPort: number;
  httpKind: 'nginx' | 'node';
  iperfPort: number | null;
}

async function startBackends(tools: Record<Tool, string | null>, cpu: number, dir: string, idle: number): Promise<Backends> {
  const httpPort = await freePort();
  let httpKind: 'nginx' | 'node';
  if (tools.nginx) {
    const conf = join(dir, 'nginx.conf');
    writeFileSync(
      conf,
      [
        // one process (no master): the backend is cheap next to any proxy and easy to stop by PID
        'daemon off;',
        'master_process off;',
        `worker_rlimit_nofile ${idle * 2 + 1000};`,
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${join(dir, 'nginx-error.log')} error;`,
        `events { worker_connections ${idle * 2 + 1000}; multi_accept on; }`,
        'http {',
        '  access_log off;',
        `  client_body_temp_path ${dir}/nginx-body; proxy_temp_path ${dir}/nginx-proxy; fastcgi_temp_path ${dir}/nginx-fcgi;`,
        `  uwsgi_temp_path ${dir}/nginx-uwsgi; scgi_temp_path ${dir}/nginx-scgi;`,
        '  keepalive_requests 10000000; keepalive_timeout 300s; client_header_timeout 300s;',
        `  server { listen 127.0.0.1:${httpPort} backlog=4096; location / { return 200 "hello from nginx\\n"; } }`,
        '}',
        '',
      ].join('\n'),
    );
    const p = startPinned(cpu, tools.nginx, ['-p', dir, '-c', conf, '-e', join(dir, 'nginx-error.log')]);
    backendProcs.push(p);
    await waitListening(httpPort, p, 'nginx');
    httpKind = 'nginx';
  } else {
    const p = startPinned(cpu, process.execPath, [HTTP_BACKEND, String(httpPort)]);
    backendProcs.push(p);
    await waitListening(httpPort, p, 'node http backend');
    httpKind = 'node';
  }
  let iperfPort: number | null = null;
  if (tools.iperf3) {
    iperfPort = await freePort();
    const p = startPinned(cpu, tools.iperf3, ['-s', '-B', '127.0.0.1', '-p', String(iperfPort)]);
    backendProcs.push(p);
    await waitListening(iperfPort, p, 'iperf3 -s');
  }
  return { httpPort, httpKind, iperfPort };
}

const backendProcs: Proc[] = [];

/** U1's queries (dnsperf's data file: one query, U1_NAME A) */
let u1Queries = '';

/** U1's backend: a dnsmasq on the load CPU answering U1_NAME from a hosts file (no upstream, nothing else); its port. */
async function startDnsBackend(cpu: number, dir: string): Promise<number> {
  const port = await freePort();
  const hosts = join(dir, 'u1-hosts');
  writeFileSync(hosts, `127.0.0.1 ${U1_NAME}\n`);
  u1Queries = join(dir, 'u1-queries.txt');
  writeFileSync(u1Queries, `${U1_NAME} A\n`);
  const p = startPinned(cpu, DNSMASQ, [
    '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`,
    '--listen-address=127.0.0.1', '--bind-interfaces', `--port=${port}`, '--local=/ldns.test/', '--pid-file=', '--user=root', '--log-facility=-',
  ]);
  backendProcs.push(p);
  await waitAnswering(port, p, 'dnsmasq');
  return port;
}

/** Wait until 127.0.0.1:port answers U1_NAME over UDP. */
async function waitAnswering(port: number, proc: Proc | null, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  const r = new dnsPromises.Resolver({ timeout: 200, tries: 1 });
  r.setServers([`127.0.0.1:${port}`]);
  for (;;) {
    const ok = await r.resolve4(U1_NAME).then(
      (a) => a.length > 0,
      () => false,
    );
    if (ok) return;
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) throw new Error(`${what} exited: ${proc.stderr()}`);
    if (Date.now() > end) throw new Error(`${what} does not answer DNS on ${port} after ${timeoutMs} ms${proc ? `: ${proc.stderr()}` : ''}`);
    await sleep(50);
  }
}
/** lemonade-dns's DNS server: the backend's name resolves to 127.0.0.1, TTL 1 s (lookups every second, as min_ttl) */
let benchDns: Dnsmasq | null = null;
const DNS_NAME = 'bench.ldns.test';
/** HAProxy refuses to start when maxconn needs more descriptors than the limit allows. */
let haproxyMaxconn = 10_000;

interface Running {
  readonly port: number;
  readonly proc: Proc | null;
}

/** A certificate the TLS workloads' proxies present: PEM files in the run's directory. */
interface TlsCert {
  readonly cert: string;
  readonly key: string;
  /** the certificate then its key, one file (HAProxy's `crt`) */
  readonly both: string;
}

/** Make the run's certificates (self-signed, CN and SAN bench.test) with openssl. */
function makeCerts(openssl: string, dir: string): Record<'ec' | 'rsa', TlsCert> {
  const make = (kind: 'ec' | 'rsa'): TlsCert => {
    const cert = join(dir, `${kind}.pem`);
    const key = join(dir, `${kind}.key`);
    const alg = kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] : ['-newkey', 'rsa:2048'];
    const r = spawnSync(openssl, ['req', '-x509', ...alg, '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=bench.test', '-addext', 'subjectAltName=DNS:bench.test'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl req (${kind}) failed: ${r.stderr}`);
    const both = join(dir, `${kind}-both.pem`);
    writeFileSync(both, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));
    return { cert, key, both };
  };
  return { ec: make('ec'), rsa: make('rsa') };
}

async function startContender(name: ContenderName, backendPort: number, args: Args, tools: Record<Tool, string | null>, dir: string, cpu: number | string = args.proxyCpu, tls: TlsCert | null = null, udp = false): Promise<Running> {
  if (name === 'direct') return { port: backendPort, proc: null };
  const port = await freePort();
  let proc: Proc;
  if (name === 'nginx-stream') {
    // one process, no master (as the HTTP backend): one worker, like HAProxy's one thread
    const conf = join(dir, `nginx-stream-${port}.conf`);
    writeFileSync(
      conf,
      [
        `load_module ${tools.ngx_stream_module};`,
        'daemon off;',
        'master_process off;',
        'worker_processes 1;',
        `pid ${join(dir, `nginx-stream-${port}.pid`)};`,
        `error_log ${join(dir, `nginx-stream-${port}.log`)} error;`,
        'events { worker_connections 4096; }',
        'stream {',
        '  server {',
        `    listen 127.0.0.1:${port}${udp ? ' udp' : ' backlog=4096'}${tls ? ' ssl' : ''};`,
        ...(tls ? [`    ssl_certificate ${tls.cert};`, `    ssl_certificate_key ${tls.key};`, '    ssl_protocols TLSv1.3;'] : []),
        `    proxy_pass 127.0.0.1:${backendPort};`,
        // U1: a session ends with its answer (lemonade's udp_responses = 1)
        ...(udp ? ['    proxy_responses 1;'] : []),
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    proc = startPinned(cpu, tools.nginx!, ['-p', dir, '-c', conf, '-e', join(dir, `nginx-stream-${port}.log`)]);
  } else if (name === 'haproxy') {
    const conf = join(dir, `haproxy-${port}.cfg`);
    writeFileSync(
      conf,
      [
        'global',
        '  nbthread 1',
        `  maxconn ${haproxyMaxconn}`,
        'defaults',
        '  mode tcp',
        '  timeout connect 3s',
        '  timeout client 1h',
        '  timeout server 1h',
        'frontend f',
        `  bind 127.0.0.1:${port}${tls ? ` ssl crt ${tls.both} ssl-min-ver TLSv1.3` : ''}`,
        '  default_backend b',
        'backend b',
        `  server s1 127.0.0.1:${backendPort}`,
        '',
      ].join('\n'),
    );
    proc = startPinned(cpu, tools.haproxy!, ['-db', '-f', conf]);
  } else if (name === 'pipe' || name === 'node-raw') {
    proc = startPinned(cpu, process.execPath, [name === 'pipe' ? PIPE_PROXY : RAW_PROXY, String(port), `127.0.0.1:${backendPort}`]);
  } else {
    // lemonade-20svc: 19 more services, each on a loopback port and with a backend entry of its
    // own (all pointing at the same backend); the measured one is the default service, as for
    // lemonade, so the two rows differ only in the services configured
    const extraPorts: number[] = [];
    if (name === 'lemonade-20svc') for (let i = 0; i < EXTRA_SERVICES; i++) extraPorts.push(await freePort());
    const extra = extraPorts.flatMap((p, i) => {
      const n = String(i + 1).padStart(2, '0');
      return ['[[services]]', `name = "svc-${n}"`, `listen_address = "127.0.0.1:${p}"`, 'algorithm = "round_robin"', '[[services.backends]]', 'id = 0', `name = "bench-${n}"`, `address = "127.0.0.1:${backendPort}"`];
    });
    // lemonade-sni: two more services on the same port, told apart by name; the default service
    // (the measured one) is the port's default route
    if (name === 'lemonade-sni') {
      for (const [n, sni] of [['tls-a', '"a.example.com"'], ['tls-b', '"*.example.org"']] as const) {
        extra.push('[[services]]', `name = "${n}"`, `listen_address = "127.0.0.1:${port}"`, `sni = [${sni}]`, '[[services.backends]]', 'id = 0', `name = "${n}-1"`, `address = "127.0.0.1:${backendPort}"`);
      }
    }
    const conf = join(dir, `lemonade-${port}.toml`);
    writeFileSync(
      conf,
      [
        '[runtime]',
        'drain_timeout_millis = 2000',
        `workers = ${name === 'lemonade-workers' ? 0 : 1}`,
        '[proxy]',
        `listen_address = "127.0.0.1:${port}"`,
        'max_connections = 100000',
        ...(udp ? ['protocol = "udp"', 'udp_responses = 1'] : []),
        '[strategy]',
        `algorithm = "${name === 'lemonade-chash' ? 'consistent_hash' : 'round_robin'}"`,
        '[health]',
        'interval = "10s"',
        '[admin]',
        'listen_address = ""',
        ...(name === 'lemonade-dns' ? ['[dns]', `servers = ["${benchDns!.server}"]`] : []),
        ...(name === 'lemonade-alog' || name === 'lemonade-alog1'
          ? ['[access_log]', 'enabled = true', `path = "${join(dir, `access-${port}.log`)}"`, `sample = ${name === 'lemonade-alog1' ? 0.01 : 1}`]
          : []),
        '[[backends]]',
        'id = 0',
        'name = "bench"',
        ...(name === 'lemonade-dns' ? [`address = "${DNS_NAME}:${backendPort}"`, 'resolve = "dns"'] : [`address = "127.0.0.1:${backendPort}"`]),
        // the default service's TLS table (after its backends: a table ends the top-level keys)
        ...(tls ? ['[tls]', `certificates = [{ cert = "${tls.cert}", key = "${tls.key}" }]`, 'min_version = "TLSv1.3"'] : []),
        ...extra,
        '',
      ].join('\n'),
    );
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LEMONADE_') && !k.startsWith('NOTIFY_SOCKET') && !k.startsWith('LISTEN_')) env[k] = v;
    env['LEMONADE_LOG'] = 'info';
    Object.assign(env, args.lemonadeEnv);
    const bundle = name === 'lemonade-base' ? args.baselineBundle! : BUNDLE;
    proc =
      args.lemonadeExe !== null && name !== 'lemonade-base'
        ? startPinned(cpu, args.lemonadeExe, ['lb', '--config', conf], env)
        : startPinned(cpu, process.execPath, [...args.lemonadeNodeArgs, bundle, 'lb', '--config', conf], env);
    if (udp) await waitAnswering(port, proc, name);
    else await waitListening(port, proc, name);
    // every service is up (and so the file was read as 20 services) before anything is measured
    for (const p of extraPorts) await waitListening(p, proc, `${name} service on ${p}`);
    return { port, proc };
  }
  if (udp) await waitAnswering(port, proc, name);
  else await waitListening(port, proc, name);
  return { port, proc };
}

// -------------------------------------------------------------------------------------------
// Workloads: each returns its figures, or throws

interface Sample {
  /** W1 req/s, W2 conn/s, W3 Gbit/s, W4 connections held */
  throughput: number;
  /** W1 µs/req, W2 µs/conn, W3 ms/GB, W4 KiB/conn; NaN for direct */
  cost: number;
  p50Ms?: number;
  p99Ms?: number;
  errors: number;
}

function parseWrkTime(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** W5 spreads the load over every CPU: one wrk thread each, twice W2's connections. */
interface Spread {
  readonly cpu: string;
  readonly threads: number;
  readonly conns: number;
}

async function wrk(args: Args, tools: Record<Tool, string | null>, port: number, seconds: number, close: boolean, spread?: Spread): Promise<{ requests: number; rps: number; p50: number; p99: number; errors: number }> {
  const a = [`-t${spread?.threads ?? 1}`, `-c${spread?.conns ?? (close ? 32 : 64)}`, `-d${seconds}s`, '--latency', '--timeout', '5s'];
  if (close) a.push('-H', 'Connection: close');
  a.push(`http://127.0.0.1:${port}/`);
  const r = await runPinned(spread?.cpu ?? args.loadCpu, tools.wrk!, a, (seconds + 20) * 1000);
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.err}${r.out}`);
  const num = (re: RegExp): number => {
    const m = re.exec(r.out);
    return m ? Number(m[1]) : 0;
  };
  const requests = num(/(\d+) requests in/);
  const rps = num(/Requests\/sec:\s+([\d.]+)/);
  const p50 = parseWrkTime(/\s50%\s+(\S+)/.exec(r.out)?.[1] ?? '');
  const p99 = parseWrkTime(/\s99%\s+(\S+)/.exec(r.out)?.[1] ?? '');
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.out);
  // with Connection: close a read error is wrk noticing the server's close: not a failure
  const errors = num(/Non-2xx or 3xx responses: (\d+)/) + (sock ? Number(sock[1]) + Number(sock[3]) + Number(sock[4]) + (close ? 0 : Number(sock[2])) : 0);
  if (requests === 0) throw new Error(`wrk made no request: ${r.out}${r.err}`);
  return { requests, rps, p50, p99, errors };
}

async function runHttp(args: Args, tools: Record<Tool, string | null>, c: Running, close: boolean, spread?: Spread): Promise<Sample> {
  if (!args.quick) await wrk(args, tools, c.port, 1, close, spread); // warm-up (JIT, pools)
  const before = c.proc ? cpuTicks(c.proc.pid) : 0;
  const w = await wrk(args, tools, c.port, args.durationS, close, spread);
  const cost = c.proc ? ((cpuTicks(c.proc.pid) - before) * TICK_US) / w.requests : NaN;
  return { throughput: w.rps, cost, p50Ms: w.p50, p99Ms: w.p99, errors: w.errors };
}

async function iperf(args: Args, tools: Record<Tool, string | null>, port: number, seconds: number): Promise<{ bytes: number; gbps: number }> {
  const r = await runPinned(args.loadCpu, tools.iperf3!, ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-J'], (seconds + 20) * 1000);
  let j: { end?: { sum_sent?: { bytes: number }; sum_received?: { bytes: number; bits_per_second: number } }; error?: string };
  try {
    j = JSON.parse(r.out) as typeof j;
  } catch {
    throw new Error(`iperf3 printed no JSON (exit ${r.code}): ${r.err}${r.out.slice(0, 500)}`);
  }
  if (j.error || !j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? 'no result'}`);
  // bytes the proxy relayed: what the client sent (the receiver has it all once the test ends)
  return { bytes: j.end.sum_sent?.bytes ?? j.end.sum_received.bytes, gbps: j.end.sum_received.bits_per_second / 1e9 };
}

async function runBulk(args: Args, tools: Record<Tool, string | null>, c: Running, warm = true): Promise<Sample> {
  // the readiness probe's connection reached `iperf3 -s` as a control connection that never
  // spoke; the server refuses others until it has dropped it: retry the first test briefly
  for (let i = 0; warm; i++) {
    try {
      await iperf(args, tools, c.port, 1);
      break;
    } catch (e) {
      if (i >= 5) throw e;
      await sleep(300);
    }
  }
  const before = c.proc ? cpuTicks(c.proc.pid) : 0;
  const r = await iperf(args, tools, c.port, args.durationS);
  const cost = c.proc ? ((cpuTicks(c.proc.pid) - before) * TICK_US) / 1000 / (r.bytes / 1e9) : NaN;
  return { throughput: r.gbps, cost, errors: 0 };
}

/** openssl s_time's figures: "N connections in Xs; … bytes read B" */
async function sTime(args: Args, tools: Record<Tool, string | null>, port: number, seconds: number): Promise<{ conns: number; bytes: number; wallS: number }> {
  const t = process.hrtime.bigint();
  // -new: a full handshake every connection; -www: each sends a GET and reads the answer to the close
  const runs = await Promise.all(
    Array.from({ length: args.tlsClients }, () =>
      runPinned(args.loadCpu, tools.openssl!, ['s_time', '-connect', `127.0.0.1:${port}`, '-new', '-time', String(seconds), '-www', '/'], (seconds + 20) * 1000),
    ),
  );
  const wallS = Number(process.hrtime.bigint() - t) / 1e9;
  let conns = 0;
  let bytes = 0;
  for (const r of runs) {
    // one failed connection ends s_time without its figures
    const m = /(\d+) connections in [\d.]+s;.*bytes read (\d+)/.exec(r.out);
    if (r.code !== 0 || !m) throw new Error(`openssl s_time exited ${r.code}: ${r.err.slice(0, 500)}${r.out.slice(-500)}`);
    conns += Number(m[1]);
    bytes += Number(m[2]);
  }
  return { conns, bytes, wallS };
}

/** What a handshake with the proxy negotiates, as `openssl s_client -brief` tells it: "TLSv1.3 TLS_AES_256_GCM_SHA384 ECDSA X25519". */
async function negotiated(args: Args, tools: Record<Tool, string | null>, port: number): Promise<string> {
  const r = await runPinned(args.loadCpu, tools.openssl!, ['s_client', '-connect', `127.0.0.1:${port}`, '-brief'], 10_000);
  const f = (k: string): string => new RegExp(`^${k}: *(.*)$`, 'm').exec(r.err)?.[1]?.trim() ?? '?';
  return `${f('Protocol version')} ${f('Ciphersuite')} ${f('Signature type')} ${f('Server Temp Key').split(',')[0]}`;
}

/** T1/T2: a full TLS handshake per connection; proxy CPU µs per handshake. */
async function runHandshakes(args: Args, tools: Record<Tool, string | null>, c: Running): Promise<Sample> {
  if (!args.quick) await sTime(args, tools, c.port, 1); // warm-up
  const before = cpuTicks(c.proc!.pid);
  const r = await sTime(args, tools, c.port, args.durationS);
  const cost = ((cpuTicks(c.proc!.pid) - before) * TICK_US) / r.conns;
  // every connection read the backend's answer through the proxy
  const short = r.bytes < r.conns * 20 ? 1 : 0;
  return { throughput: r.conns / r.wallS, cost, errors: short };
}

/** T3: iperf3 through a socat TLS client on the load CPU, to the proxy, to `iperf3 -s` in plaintext. */
async function runTlsBulk(args: Args, tools: Record<Tool, string | null>, c: Running): Promise<Sample> {
  const port = await freePort();
  const socat = startPinned(args.loadCpu, tools.socat!, ['-b', '131072', `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `OPENSSL-CONNECT:127.0.0.1:${c.port},verify=0`]);
  try {
    // not a probe connection: socat would carry it through the proxy to iperf3 -s
    const end = Date.now() + 10_000;
    while (!listeningOn(port)) {
      if (socat.child.exitCode !== null || Date.now() > end) throw new Error(`socat is not listening on ${port}: ${socat.stderr()}`);
      await sleep(20);
    }
    // no probe reached iperf3 -s: a quick run can do without the warm-up
    return await runBulk(args, tools, { port, proc: c.proc }, !args.quick);
  } finally {
    await stop(socat);
  }
}

/** dnsperf's figures for `seconds` against 127.0.0.1:port (U1's query, --dns-clients sockets, 100 outstanding, 2 s timeout). */
async function dnsperf(args: Args, tools: Record<Tool, string | null>, port: number, seconds: number): Promise<{ completed: number; lost: number; qps: number }> {
  const a = ['-s', '127.0.0.1', '-p', String(port), '-d', u1Queries, '-l', String(seconds), '-c', String(args.dnsClients), '-q', '100', '-t', '2', ...(args.dnsQps > 0 ? ['-Q', String(args.dnsQps)] : [])];
  const r = await runPinned(args.loadCpu, tools.dnsperf!, a, (seconds + 20) * 1000);
  const num = (re: RegExp): number => Number(re.exec(r.out)?.[1] ?? NaN);
  const completed = num(/Queries completed:\s+(\d+)/);
  const lost = num(/Queries lost:\s+(\d+)/);
  const qps = num(/Queries per second:\s+([\d.]+)/);
  if (r.code !== 0 || !Number.isFinite(completed) || completed === 0) throw new Error(`dnsperf exited ${r.code} with no answer: ${r.err.slice(0, 500)}${r.out.slice(-1000)}`);
  return { completed, lost, qps };
}

/** U1: DNS queries through the proxy; proxy CPU µs per query answered, a lost query an error. */
async function runDns(args: Args, tools: Record<Tool, string | null>, c: Running): Promise<Sample> {
  if (!args.quick) await dnsperf(args, tools, c.port, 1); // warm-up
  const before = c.proc ? cpuTicks(c.proc.pid) : 0;
  const r = await dnsperf(args, tools, c.port, args.durationS);
  const cost = c.proc ? ((cpuTicks(c.proc.pid) - before) * TICK_US) / r.completed : NaN;
  return { throughput: r.qps, cost, errors: r.lost };
}

/** Open n connections through the proxy and hold them idle (no byte either way). */
async function runIdle(c: Running, backendPort: number, n: number): Promise<Sample> {
  const pid = c.proc!.pid;
  const open = async (count: number, into: net.Socket[]): Promise<number> => {
    let errors = 0;
    const BATCH = 256;
    for (let i = 0; i < count; i += BATCH) {
      const k = Math.min(BATCH, count - i);
      await Promise.all(
        Array.from(
          { length: k },
          () =>
            new Promise<void>((r) => {
              const s = net.connect({ host: '127.0.0.1', port: c.port });
              s.on('error', () => {
                errors++;
                r();
              });
              s.once('connect', () => {
                into.push(s);
                r();
              });
            }),
        ),
      );
    }
    return errors;
  };
  const closeAll = async (socks: net.Socket[]): Promise<void> => {
    for (const s of socks) s.destroy();
    socks.length = 0;
    await sleep(100);
  };
  // warm-up: a few hundred connections opened and closed, so start-up allocations are done
  const warm: net.Socket[] = [];
  await open(200, warm);
  await closeAll(warm);
  const baseline = establishedOn(backendPort);
  await sleep(500);
  const base = rssKiB(pid);
  const held: net.Socket[] = [];
  const errors = await open(n, held);
  // wait until the proxy holds every backend connection
  const end = Date.now() + 15_000;
  while (establishedOn(backendPort) - baseline < held.length && Date.now() < end) await sleep(100);
  const atBackend = establishedOn(backendPort) - baseline;
  await sleep(1000);
  const rss = rssKiB(pid);
  await closeAll(held);
  // a health check's connection may come and go meanwhile: a few missing are not failures
  const missing = n - atBackend > Math.max(2, n / 200) ? n - atBackend : 0;
  return { throughput: atBackend, cost: (rss - base) / Math.max(1, atBackend), errors: errors + missing };
}

// -------------------------------------------------------------------------------------------
// Statistics and report

function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

function range(xs: readonly number[]): [number, number] {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length ? [Math.min(...v), Math.max(...v)] : [NaN, NaN];
}

function fmt(x: number, digits = 0): string {
  if (!Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 1000 && digits === 0) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(digits);
}

function fmtRange(xs: readonly number[], digits = 0): string {
  const [lo, hi] = range(xs);
  return Number.isFinite(lo) ? `${fmt(lo, digits)}-${fmt(hi, digits)}` : '-';
}

const UNITS: Record<Workload, { thr: string; cost: string; thrDigits: number; costDigits: number; what: string }> = {
  W1: { thr: 'req/s', cost: 'µs/req', thrDigits: 0, costDigits: 1, what: 'keep-alive HTTP, wrk -c64' },
  W2: { thr: 'conn/s', cost: 'µs/conn', thrDigits: 0, costDigits: 1, what: 'new connection per request, wrk -c32 Connection: close' },
  W3: { thr: 'Gbit/s', cost: 'ms/GB', thrDigits: 2, costDigits: 0, what: 'bulk, iperf3 one stream' },
  W4: { thr: 'conns', cost: 'KiB/conn', thrDigits: 0, costDigits: 2, what: 'idle connections, proxy RSS growth' },
  W5: { thr: 'conn/s', cost: 'µs/conn', thrDigits: 0, costDigits: 1, what: `scaling: W2's load (wrk -t${CPUS} -c64) through lemonade with 1 worker and with ${CPUS}, proxy and load over CPUs ${ALL_CPUS}` },
  T1: { thr: 'hs/s', cost: 'µs/hs', thrDigits: 0, costDigits: 1, what: 'a full TLS 1.3 handshake per connection, ECDSA P-256, openssl s_time -new -www' },
  T2: { thr: 'hs/s', cost: 'µs/hs', thrDigits: 0, costDigits: 1, what: 'the same with RSA 2048' },
  T3: { thr: 'Gbit/s', cost: 'ms/GB', thrDigits: 2, costDigits: 0, what: 'bulk over TLS 1.3, iperf3 one stream through a socat TLS client' },
  U1: { thr: 'q/s', cost: 'µs/q', thrDigits: 0, costDigits: 1, what: 'DNS over UDP to dnsmasq, dnsperf -q100, a flow ends once its queries are answered (udp_responses = 1, proxy_responses 1)' },
};

interface Row {
  workload: Workload;
  contender: ContenderName;
  samples: Sample[];
  /** cost / haproxy's cost in the same round */
  ratios: number[];
}

// -------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const log = (s: string): void => void process.stderr.write(`[bench] ${s}\n`);
  const t0 = Date.now();
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run "npm run build" first (npm run bench does)`);
  if (!which('taskset')) throw new Error('taskset (util-linux) is missing');
  // this script (the idle-connection client) runs on the load CPU too
  spawnSync('taskset', ['-apc', String(args.loadCpu), String(process.pid)], { stdio: 'ignore' });

  const tools = findTools(args.install, args.workloads.some(isTls), args.workloads.some(isUdp), log);
  const notes: string[] = [];
  let workloads = args.workloads;
  if (!tools.openssl && workloads.some(isTls)) {
    notes.push('openssl is missing: T1, T2 and T3 left out');
    workloads = workloads.filter((w) => !isTls(w));
  }
  if (!tools.socat && workloads.includes('T3')) {
    notes.push('socat is missing: T3 left out');
    workloads = workloads.filter((w) => w !== 'T3');
  }
  if (!tools.wrk && workloads.some((w) => w === 'W1' || w === 'W2' || w === 'W5')) {
    notes.push('wrk is missing: W1, W2 and W5 left out');
    workloads = workloads.filter((w) => w !== 'W1' && w !== 'W2' && w !== 'W5');
  }
  if ((!tools.dnsperf || DNSMASQ === '') && workloads.includes('U1')) {
    notes.push(`${!tools.dnsperf ? 'dnsperf' : 'dnsmasq'} is missing: U1 left out`);
    workloads = workloads.filter((w) => w !== 'U1');
  }
  if (!tools.iperf3 && workloads.includes('W3')) {
    notes.push('iperf3 is missing: W3 left out');
    workloads = workloads.filter((w) => w !== 'W3');
  }
  let contenders = args.only;
  if (!tools.haproxy && contenders.includes('haproxy')) {
    notes.push('haproxy is missing: no HAProxy column, no ratios');
    contenders = contenders.filter((c) => c !== 'haproxy');
  }
  if (!tools.nginx) notes.push('nginx is missing: a Node HTTP backend (scripts/bench/http-backend.mjs) stands in');
  // nginx-stream takes part in the TLS workloads and U1 only
  const streamed = workloads.some((w) => isTls(w) || isUdp(w));
  if (contenders.includes('nginx-stream') && streamed && (!tools.nginx || !tools.ngx_stream_module)) notes.push("nginx's stream module (libnginx-mod-stream) is missing: no nginx-stream row");
  if (contenders.includes('nginx-stream') && (!streamed || !tools.nginx || !tools.ngx_stream_module)) contenders = contenders.filter((c) => c !== 'nginx-stream');
  if (DNSMASQ === '' && contenders.includes('lemonade-dns')) {
    notes.push('dnsmasq is missing: no lemonade-dns row');
    contenders = contenders.filter((c) => c !== 'lemonade-dns');
  }

  // file descriptors: the proxy holds two per idle connection
  const nofile = Number(spawnSync('sh', ['-c', 'ulimit -n']).stdout?.toString().trim()) || 1024;
  let idle = args.idle;
  const fit = Math.floor((nofile - 400) / 2);
  haproxyMaxconn = Math.floor((nofile - 200) / 2);
  if (idle > fit) {
    if (workloads.includes('W4')) notes.push(`W4 holds ${fit} idle connections, not ${idle}: the file-descriptor limit is ${nofile} (two per connection in the proxy)`);
    idle = fit;
  }
  for (const n of notes) log(n);

  const dir = mkdtempSync(join(tmpdir(), 'lemonade-bench-'));
  const rows = new Map<string, Row>();
  const rowOf = (w: Workload, c: ContenderName): Row => {
    const k = `${w}/${c}`;
    let r = rows.get(k);
    if (!r) rows.set(k, (r = { workload: w, contender: c, samples: [], ratios: [] }));
    return r;
  };
  /** per variant and workload: its cost over lemonade's, one per round where both ran */
  const overLemonade = new Map<string, number[]>();
  const sameRound = (c: Variant, w: Workload): number[] => {
    let l = overLemonade.get(`${c}/${w}`);
    if (!l) overLemonade.set(`${c}/${w}`, (l = []));
    return l;
  };
  let roundsDone = 0;
  let failure: Error | null = null;
  /** per TLS workload and contender: what its handshake negotiated (checked once) */
  const negotiation = new Map<string, string>();
  try {
    const certs = workloads.some(isTls) ? makeCerts(tools.openssl!, dir) : null;
    const be = await startBackends(tools, args.loadCpu, dir, idle);
    if (contenders.includes('lemonade-dns')) benchDns = await startDnsmasq(dir, '127.0.0.1', [`127.0.0.1 ${DNS_NAME}`]);
    const dnsPort = workloads.includes('U1') ? await startDnsBackend(args.loadCpu, dir) : 0;
    let roundMs = 0;
    for (let round = 0; round < args.rounds; round++) {
      const elapsed = Date.now() - t0;
      if (round > 0 && elapsed + roundMs * 1.2 > args.budgetS * 1000) {
        notes.push(`stopped after ${round} rounds: the next would pass the ${args.budgetS} s budget`);
        log(notes[notes.length - 1]!);
        break;
      }
      const rs = Date.now();
      // rotate the contenders' order every round
      const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
      for (const w of workloads) {
        const got = new Map<ContenderName, Sample>();
        for (const c of order) {
          if (w === 'W4' && c === 'direct') continue;
          // TLS: the contenders that terminate it, and only those
          if (isTls(w) ? !TLS_CONTENDERS.includes(c) : isUdp(w) ? !UDP_CONTENDERS.includes(c) : c === 'nginx-stream') continue;
          // W5 compares lemonade with itself: one worker, one per CPU
          if (w === 'W5' && c !== 'lemonade' && c !== 'lemonade-workers') continue;
          // the variants: W2 (a new connection, routed at accept), W1 when asked (header)
          if (isVariant(c) && w !== 'W2' && !(w === 'W1' && args.onlyGiven)) continue;
          const backendPort = w === 'W3' || w === 'T3' ? be.iperfPort! : w === 'U1' ? dnsPort : be.httpPort;
          const spread: Spread | undefined = w === 'W5' ? { cpu: ALL_CPUS, threads: CPUS, conns: 64 } : undefined;
          const tls = isTls(w) ? certs![TLS_KEY_OF[w as keyof typeof TLS_KEY_OF]] : null;
          const run = await startContender(c, backendPort, args, tools, dir, spread?.cpu, tls, isUdp(w));
          try {
            if (tls && !negotiation.has(`${w}/${c}`)) {
              const n = await negotiated(args, tools, run.port);
              negotiation.set(`${w}/${c}`, n);
              if (!n.startsWith('TLSv1.3 ')) throw new Error(`${w} ${c}: the handshake negotiated "${n}", not TLS 1.3`);
            }
            const s =
              w === 'W1' ? await runHttp(args, tools, run, false)
              : w === 'W2' || w === 'W5' ? await runHttp(args, tools, run, true, spread)
              : w === 'W3' ? await runBulk(args, tools, run)
              : w === 'T1' || w === 'T2' ? await runHandshakes(args, tools, run)
              : w === 'T3' ? await runTlsBulk(args, tools, run)
              : w === 'U1' ? await runDns(args, tools, run)
              : await runIdle(run, backendPort, idle);
            got.set(c, s);
            rowOf(w, c).samples.push(s);
            log(`round ${round + 1} ${w} ${c}: ${fmt(s.throughput, UNITS[w].thrDigits)} ${UNITS[w].thr}, ${fmt(s.cost, UNITS[w].costDigits)} ${UNITS[w].cost}${s.errors ? `, ${s.errors} errors` : ''}`);
          } finally {
            await stop(run.proc);
          }
        }
        const h = got.get('haproxy');
        const ngx = got.get('nginx-stream');
        if (isUdp(w)) {
          // U1: over nginx's stream module in the same round (HAProxy has no UDP)
          if (ngx && Number.isFinite(ngx.cost) && ngx.cost > 0) for (const [c, s] of got) rowOf(w, c).ratios.push(s.cost / ngx.cost);
        } else if (w === 'W5') {
          // the scaling: conn/s with every CPU's worker over conn/s with one, same round
          const one = got.get('lemonade');
          const all = got.get('lemonade-workers');
          if (one && all && one.throughput > 0) rowOf(w, 'lemonade-workers').ratios.push(all.throughput / one.throughput);
        } else if (h && Number.isFinite(h.cost) && h.cost > 0) for (const [c, s] of got) rowOf(w, c).ratios.push(s.cost / h.cost);
        // each variant over lemonade, same round
        const one = got.get('lemonade');
        for (const [c, s] of got) if (isVariant(c) && one && one.cost > 0 && Number.isFinite(s.cost)) sameRound(c, w).push(s.cost / one.cost);
      }
      roundsDone++;
      roundMs = Date.now() - rs;
    }
  } catch (e) {
    failure = e as Error;
  } finally {
    for (const p of backendProcs) await stop(p);
    await benchDns?.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  // ---- report
  const out: string[] = [];
  out.push(`# lemonade-lb data-plane benchmark: ${roundsDone} round(s), ${args.durationS} s per measurement, proxy on CPU ${args.proxyCpu}, load and backends on CPU ${args.loadCpu}`);
  out.push(`# HTTP backend: ${tools.nginx ? 'nginx' : 'node'}; ${((Date.now() - t0) / 1000).toFixed(0)} s in all`);
  for (const n of notes) out.push(`# note: ${n}`);
  out.push('');
  out.push(`# lemonade-workers runs ${CPUS} data-plane workers (one per CPU)`);
  out.push('');
  out.push('| workload | contender | throughput (median) | min-max | p50 ms | p99 ms | proxy cost (median) | min-max | cost / haproxy (median; W5: conn/s over 1 worker\'s; U1: cost / nginx-stream) | min-max | errors |');
  out.push('|---|---|---|---|---|---|---|---|---|---|---|');
  const targets: { workload: Workload; ratio: number; target: number; vsPipe: number; vsRaw: number; met: boolean }[] = [];
  let scaling: { ratio: number; met: boolean; measurable: boolean } | null = null;
  let udp: { ratio: number; ratios: number[]; lemonade: number; nginx: number; met: boolean } | null = null;
  for (const w of workloads) {
    const u = UNITS[w];
    for (const c of contenders) {
      const r = rows.get(`${w}/${c}`);
      if (!r || r.samples.length === 0) continue;
      const thr = r.samples.map((s) => s.throughput);
      const cost = r.samples.map((s) => s.cost);
      const hasLat = r.samples[0]!.p50Ms !== undefined;
      out.push(
        `| ${w} | ${c} | ${fmt(median(thr), u.thrDigits)} ${u.thr} | ${fmtRange(thr, u.thrDigits)} | ${hasLat ? fmt(median(r.samples.map((s) => s.p50Ms!)), 2) : '-'} | ${hasLat ? fmt(median(r.samples.map((s) => s.p99Ms!)), 2) : '-'} | ${Number.isFinite(median(cost)) ? `${fmt(median(cost), u.costDigits)} ${u.cost}` : '-'} | ${fmtRange(cost, u.costDigits)} | ${fmt(median(r.ratios), 2)} | ${fmtRange(r.ratios, 2)} | ${r.samples.reduce((a, s) => a + s.errors, 0)} |`,
      );
    }
    if (isUdp(w)) {
      const lem = rows.get(`${w}/lemonade`);
      const ngx = rows.get(`${w}/nginx-stream`);
      if (lem && ngx && lem.ratios.length > 0) {
        const ratio = median(lem.ratios);
        udp = { ratio, ratios: lem.ratios, lemonade: median(lem.samples.map((x) => x.cost)), nginx: median(ngx.samples.map((x) => x.cost)), met: ratio <= UDP_TARGET };
      }
      continue;
    }
    if (w === 'W5') {
      const r = rows.get('W5/lemonade-workers');
      // the target assumes the load generator has a core of its own: with 2 CPUs or fewer it
      // shares them with the workers, and the figure is reported, not judged
      if (r && r.ratios.length > 0) scaling = { ratio: median(r.ratios), met: median(r.ratios) >= SCALING_TARGET, measurable: CPUS > 2 };
      continue;
    }
    const lem = rows.get(`${w}/lemonade`);
    const pipe = rows.get(`${w}/pipe`);
    if (lem && lem.ratios.length > 0) {
      const ratio = median(lem.ratios);
      const raw = rows.get(`${w}/node-raw`);
      const over = (r: Row | undefined): number => (r ? median(lem.samples.map((s) => s.cost)) / median(r.samples.map((s) => s.cost)) : NaN);
      const vsPipe = over(pipe);
      targets.push({ workload: w, ratio, target: TARGETS[w], vsPipe, vsRaw: over(raw), met: ratio <= TARGETS[w] && !(vsPipe >= 1) });
    }
  }
  out.push('');
  out.push('Workloads: ' + workloads.map((w) => `${w} ${UNITS[w].what}`).join('; '));
  // what each TLS contender's handshake negotiated, and lemonade next to nginx's stream module
  for (const w of workloads.filter(isTls)) {
    const n = contenders.filter((c) => negotiation.has(`${w}/${c}`)).map((c) => `${c} ${negotiation.get(`${w}/${c}`)}`);
    if (n.length > 0) out.push(`${w} negotiated: ${n.join('; ')}`);
    const lem = rows.get(`${w}/lemonade`);
    const ngx = rows.get(`${w}/nginx-stream`);
    if (lem && ngx && lem.samples.length > 0 && ngx.samples.length > 0) {
      const u = UNITS[w];
      const l = median(lem.samples.map((s) => s.cost));
      const g = median(ngx.samples.map((s) => s.cost));
      out.push(`${w}: lemonade / nginx-stream ${fmt(l / g, 2)} (${fmt(l, u.costDigits)} vs ${fmt(g, u.costDigits)} ${u.cost}, medians)`);
    }
  }
  if (udp) {
    out.push(
      `U1: lemonade / nginx-stream ${fmt(udp.ratio, 2)} (per round ${fmtRange(udp.ratios, 2)}; ${fmt(udp.lemonade, 1)} vs ${fmt(udp.nginx, 1)} µs/q, medians) (wanted ≤ ${UDP_TARGET}): ${udp.met ? 'met' : 'NOT met'}`,
    );
  }
  if (targets.length > 0) {
    out.push('');
    out.push('| target | lemonade / haproxy | wanted | lemonade / pipe | met | lemonade / node-raw (for reference) |');
    out.push('|---|---|---|---|---|---|');
    for (const t of targets) out.push(`| ${t.workload} | ${fmt(t.ratio, 2)} | ≤ ${t.target} | ${fmt(t.vsPipe, 2)} (< 1) | ${t.met ? 'yes' : 'NO'} | ${fmt(t.vsRaw, 2)} |`);
  }
  // each variant next to lemonade: the ratio of the median costs, and the min-max of the
  // same-round ratios; reported, not judged (issue 13: 20 services "cost the same per
  // connection"; issue 14: SNI routing and consistent_hash next to round robin; issue 17: a
  // DNS-resolved backend as a literal address; compare with the lemonade rows' own min-max for
  // the run's noise)
  const variants: { variant: Variant; workload: Workload; ratio: number; ratios: number[]; one: number; many: number }[] = [];
  for (const v of Object.keys(VARIANTS) as Variant[]) {
    for (const w of workloads) {
      const one = rows.get(`${w}/lemonade`);
      const many = rows.get(`${w}/${v}`);
      if (!one || !many || one.samples.length === 0 || many.samples.length === 0) continue;
      const c1 = median(one.samples.map((s) => s.cost));
      const cv = median(many.samples.map((s) => s.cost));
      variants.push({ variant: v, workload: w, ratio: cv / c1, ratios: sameRound(v, w), one: c1, many: cv });
    }
  }
  if (variants.length > 0) out.push('');
  for (const t of variants) {
    const u = UNITS[t.workload];
    const per = t.workload === 'W1' ? 'request' : 'connection';
    const wanted =
      t.variant === 'lemonade-20svc' ? `the same per ${per} as with one service, within the run's noise`
      : t.variant === 'lemonade-dns' ? `the same per ${per} as with a literal address, within the run's noise`
      : t.variant === 'lemonade-alog' ? 'at most 1.15 (issue 15: +15 % CPU per connection)'
      : t.variant === 'lemonade-alog1' ? "within the run's noise of the log off"
      : 'close to round robin on one plain service';
    out.push(
      `${t.workload} ${VARIANTS[t.variant]}: ${t.variant} / lemonade ${fmt(t.ratio, 2)} (per round ${fmtRange(t.ratios, 2)}; ${fmt(t.many, u.costDigits)} vs ${fmt(t.one, u.costDigits)} ${u.cost}, medians) ` +
        `(wanted: ${wanted}; reported, not judged)`,
    );
  }
  const svc20 = variants.filter((t) => t.variant === 'lemonade-20svc');
  if (scaling) {
    out.push('');
    out.push(
      `W5 scaling: ${CPUS} workers give ${fmt(scaling.ratio, 2)}× the conn/s of 1 (wanted ≥ ${SCALING_TARGET} with the load generator on a core of its own)` +
        (scaling.measurable ? (scaling.met ? ': met' : ': NOT met') : `: not judged: this machine has ${CPUS} CPU(s), so the load generator and nginx share them with the workers`),
    );
  }
  if (failure) out.push(`\nRUN FAILED: ${failure.stack ?? failure.message}`);
  process.stdout.write(out.join('\n') + '\n');
  if (args.json) {
    const j = {
      rounds: roundsDone,
      durationS: args.durationS,
      idle,
      notes,
      failed: failure ? failure.message : null,
      rows: [...rows.values()].map((r) => ({ workload: r.workload, contender: r.contender, samples: r.samples, ratios: r.ratios, throughput: median(r.samples.map((s) => s.throughput)), cost: median(r.samples.map((s) => s.cost)), ratio: median(r.ratios) })),
      targets,
      scaling,
      udp,
      services20: svc20,
      variants,
      negotiated: Object.fromEntries(negotiation),
      cpus: CPUS,
    };
    process.stdout.write(JSON.stringify(j) + '\n');
  }
  if (failure) return 2;
  if (args.quick) return 0;
  return targets.every((t) => t.met) && (!scaling || !scaling.measurable || scaling.met) && (!udp || udp.met) ? 0 : 1;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAllNow();
    process.exit(2);
  });
}
process.on('exit', killAllNow);

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`);
    killAllNow();
    process.exitCode = 2;
  },
);
