// Shared helpers for tests that run the real bundle (dist/lemonade.js) against real sockets on
// 127.0.0.1. Every wait is bounded; nothing sleeps for a fixed time where a condition can be
// awaited. Every process a test starts is killed when the test ends: the fixtures (startBalancer,
// startEcho, startNamed, startTcpServer, startWorker given the test's context first) stop what they
// started when the test ends, last started first stopped.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, renameSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import net from 'node:net';
import http from 'node:http';

export const ROOT = resolve(__dirname, '..');
export const BUNDLE = join(ROOT, 'dist', 'lemonade.js');

/** The bundle's path, once it is known to exist: test/unit/ imports these helpers and needs no build. */
function bundle(): string {
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run "npm run build" first (npm test does)`);
  return BUNDLE;
}

export function tempDir(prefix = 'lemonade-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Debian's nginx (nginx-light), or null when it is not installed. */
export const NGINX = ['nginx', '/usr/sbin/nginx'].find((c) => spawnSync(c, ['-v'], { stdio: 'ignore' }).status === 0) ?? null;

/**
 * A test's own nginx in `dir` (logs/ and tmp/ made there) with `servers` inside its http block,
 * stopped when the test ends; resolves once each of `ports` accepts a connection.
 */
export async function runNginx(t: { after(fn: () => unknown): void }, dir: string, servers: string, ports: readonly number[]): Promise<ChildProcess> {
  for (const d of ['logs', 'tmp']) mkdirSync(join(dir, d), { recursive: true });
  const errorLog = join(dir, 'logs', 'error.log');
  writeFileSync(join(dir, 'nginx.conf'), nginxConf(dir, errorLog, 'warn', `  access_log off;\n${servers}`));
  const proc = spawn(NGINX ?? 'nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.after(() => stopProcess(proc));
  await listening(proc, ports, 'nginx', () => `${stderr}${existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : ''}`);
  return proc;
}

/**
 * A test's own HAProxy in tcp mode, logging to its standard output: `proxies` (frontends and
 * backends) after a defaults section with `defaults` lines more; stopped when the test ends,
 * resolved once each of `ports` accepts. `out()`: what it printed so far.
 */
export async function runHaproxy(t: { after(fn: () => unknown): void }, dir: string, proxies: string, ports: readonly number[], defaults = ''): Promise<{ out: () => string }> {
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, `global\n  log stdout format raw local0\ndefaults\n  mode tcp\n  log global\n${defaults}  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n${proxies}`);
  const hap = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  hap.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  hap.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  t.after(() => stopProcess(hap));
  await listening(hap, ports, 'haproxy', () => out);
  return { out: () => out };
}

/** Wait until each of `ports` on 127.0.0.1 accepts; `proc` exiting first is an error with what `said()`. */
async function listening(proc: ChildProcess, ports: readonly number[], name: string, said: () => string): Promise<void> {
  const accepts = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`${name} exited (${proc.exitCode}): ${said()}`);
      return (await Promise.all(ports.map(accepts))).every(Boolean);
    },
    10_000,
    `${name} to listen`,
  );
}

/** Poll `cond` every `stepMs` until it returns a truthy value or `timeoutMs` passes (then throw). */
/**
 * An nginx.conf for a test's own nginx in `dir` (one process, no master, temp files and the pid
 * in `dir`): errors to `errorLog` at `level`, and `http` inside the http block.
 */
export function nginxConf(dir: string, errorLog: string, level: string, http: string): string {
  return `daemon off;
master_process off;
pid ${join(dir, 'nginx.pid')};
error_log ${errorLog} ${level};
events { worker_connections 64; }
http {
  client_body_temp_path ${join(dir, 'tmp')};
  proxy_temp_path ${join(dir, 'tmp')};
  fastcgi_temp_path ${join(dir, 'tmp')};
  uwsgi_temp_path ${join(dir, 'tmp')};
  scgi_temp_path ${join(dir, 'tmp')};
${http}
}
`;
}

export async function waitFor<T>(cond: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition', stepMs = 20): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run the CLI to completion (bounded). */
export function runCli(args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [bundle(), ...args], {
      env: cleanEnv(opts.env),
      cwd: opts.cwd ?? ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`lemonade ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 15000} ms\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 15_000);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolveRun({ code, signal, stdout, stderr });
    });
  });
}

/** The environment for a child: the test's own, minus LEMONADE_* unless given explicitly. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('LEMONADE_') && !k.startsWith('NOTIFY_SOCKET') && !k.startsWith('LISTEN_')) env[k] = v;
  }
  // test/e2e/net-sockets.test.ts runs suites again with the net.Socket relay
  if (process.env['LEMONADE_TEST_NET_SOCKETS'] === '1') env['LEMONADE_LB_NET_SOCKETS'] = '1';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

// -------------------------------------------------------------------------------------------
// The balancer as a child process

export interface Balancer {
  readonly proc: ChildProcess;
  readonly dir: string;
  readonly configPath: string;
  /** proxy port actually bound */
  port: number;
  /** admin port actually bound (0 if the admin API is off) */
  adminPort: number;
  readonly logs: Record<string, unknown>[];
  readonly stderr: () => string;
  admin(path: string, method?: string, headers?: Record<string, string>): Promise<HttpResult>;
  writeConfig(text: string): void;
  /** write the file as a rename-save does (a temp file renamed over it): never read half-written */
  replaceConfig(text: string): void;
  /** resolves with the first log line (JSON) that matches */
  waitForLog(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  /** send a signal and wait for exit; resolves with the exit code */
  /** `patienceMs`: a second signal after this long ends a drain still under way */
  stop(signal?: NodeJS.Signals, timeoutMs?: number, patienceMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface BalancerOptions {
  readonly env?: Record<string, string | undefined>;
  readonly args?: string[];
  /** do not wait for the admin API (e.g. it is disabled) */
  readonly noAdmin?: boolean;
  /** the signal the fixture stops it with when the test ends (SIGTERM) */
  readonly stopSignal?: NodeJS.Signals;
}

/** A test's context as the fixtures need it. */
export interface Ends {
  after(f: () => unknown): void;
}

const atEnds = new WeakMap<Ends, (() => unknown)[]>();

/**
 * Run `stop` when the test `t` ends, before whatever was registered earlier the same way (a
 * balancer stops before the backends started ahead of it). Every stop runs; the first error is thrown.
 */
export function atEnd(t: Ends, stop: () => unknown): void {
  let stops = atEnds.get(t);
  if (!stops) {
    const list: (() => unknown)[] = [];
    atEnds.set(t, list);
    t.after(async () => {
      const errors: unknown[] = [];
      for (const f of list.reverse()) await Promise.resolve().then(f).catch((e: unknown) => errors.push(e));
      if (errors.length > 0) throw errors[0];
    });
    stops = list;
  }
  stops.push(stop);
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/**
 * Write `config` to a temp dir and start `lemonade lb --config FILE`; resolves once the startup
 * log line is seen (proxy and admin listening). Write "127.0.0.1:0" for listen addresses: each
 * becomes a free port (also in writeConfig, so a rewritten file keeps the same ports).
 */
export function startBalancer(config: string, opts?: BalancerOptions): Promise<Balancer>;
/** The fixture: the same, stopped when the test `t` ends (opts.stopSignal, SIGTERM by default), started or not. */
export function startBalancer(t: Ends, config: string, opts?: BalancerOptions): Promise<Balancer>;
export function startBalancer(...a: [string, BalancerOptions?] | [Ends, string, BalancerOptions?]): Promise<Balancer> {
  return typeof a[0] === 'string' ? launchBalancer(undefined, a[0], a[1] as BalancerOptions | undefined) : launchBalancer(a[0], a[1] as string, a[2]);
}

async function launchBalancer(t: Ends | undefined, config: string, opts: BalancerOptions = {}): Promise<Balancer> {
  const dir = tempDir();
  const configPath = join(dir, 'config.toml');
  // configs need real ports (1-65535): each "127.0.0.1:0" becomes a free port, in order
  // (testConfig writes the proxy's first, then the admin API's)
  const ports: number[] = [];
  const zeros = config.split('"127.0.0.1:0"').length - 1;
  for (let i = 0; i < zeros; i++) ports.push(await freePort());
  const fill = (text: string): string => {
    let i = 0;
    return text.replace(/"127\.0\.0\.1:0"/g, () => `"127.0.0.1:${ports[i++] ?? 0}"`);
  };
  writeFileSync(configPath, fill(config));
  const proc = spawn(process.execPath, [bundle(), 'lb', '--config', configPath, ...(opts.args ?? [])], {
    env: cleanEnv({ LEMONADE_LOG: 'info', ...opts.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  const logs: Record<string, unknown>[] = [];
  const watchers: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let buf = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        o = { msg: line, raw: true };
      }
      logs.push(o);
      for (const w of [...watchers]) {
        if (w.pred(o)) {
          watchers.splice(watchers.indexOf(w), 1);
          w.resolve(o);
        }
      }
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) =>
    proc.on('exit', (code) => {
      running.delete(proc);
      r(code);
    }),
  );

  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 10_000, what = 'log line'): Promise<Record<string, unknown>> => {
    const hit = logs.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((res, rej) => {
      const w = { pred, resolve: (l: Record<string, unknown>) => (clearTimeout(t), res(l)) };
      const t = setTimeout(() => {
        watchers.splice(watchers.indexOf(w), 1);
        rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${err}; logs: ${JSON.stringify(logs.slice(-10))}`));
      }, timeoutMs);
      watchers.push(w);
      void exited.then((code) => {
        if (watchers.includes(w)) {
          watchers.splice(watchers.indexOf(w), 1);
          clearTimeout(t);
          rej(new Error(`balancer exited (${code}) before ${what}; stderr: ${err}`));
        }
      });
    });
  };

  const b: Balancer = {
    proc,
    dir,
    configPath,
    port: 0,
    adminPort: 0,
    logs,
    stderr: () => err,
    admin: (path, method = 'GET', headers = {}) => httpRequest(b.adminPort, path, { method, headers }),
    writeConfig: (text) => writeFileSync(configPath, fill(text)),
    replaceConfig: (text) => {
      writeFileSync(`${configPath}.tmp`, fill(text));
      renameSync(`${configPath}.tmp`, configPath);
    },
    waitForLog,
    exited,
    stop: async (signal = 'SIGTERM', timeoutMs = 15_000, patienceMs = Infinity) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      // a second stop signal ends a drain at once (exit 130)
      const again = Number.isFinite(patienceMs) ? setTimeout(() => proc.kill(signal), patienceMs) : null;
      const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      if (again !== null) clearTimeout(again);
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
  // at the test's end nothing waits on the drain of connections the test left open: a second
  // signal after a second ends it
  if (t) atEnd(t, () => b.stop(opts.stopSignal, 15_000, 1000));
  const started = await waitForLog((l) => l['msg'] === 'lemonade-lb started', 15_000, 'the balancer to start');
  if (process.env['LEMONADE_TEST_NET_SOCKETS'] === '1' && opts.env?.['LEMONADE_LB_NET_SOCKETS'] === undefined && started['relay'] !== 'net.Socket') {
    throw new Error(`asked for the net.Socket relay, the balancer says relay=${String(started['relay'])}`);
  }
  b.port = portOf(String(started['listen']));
  b.adminPort = started['admin'] ? portOf(String(started['admin'])) : 0;
  return b;
}

/**
 * `clients` loops of HTTP GET / through the proxy while `more(done)` holds (and at most
 * `limitMs`), alternating a keep-alive connection and one connection per request. A response
 * counts as ok when it is a 200 whose body passes `accept`; anything else is a failure, named.
 */
export async function requestsUnderLoad(port: number, o: { clients: number; more: (done: number) => boolean; accept: (body: string) => boolean; limitMs?: number }): Promise<{ ok: number; failures: string[] }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.clients });
  let ok = 0;
  const failures: string[] = [];
  const deadline = Date.now() + (o.limitMs ?? 60_000);
  const client = async (): Promise<void> => {
    while (o.more(ok + failures.length) && Date.now() < deadline) {
      const useAgent = (ok + failures.length) % 2 === 0;
      try {
        const r = await httpRequest(port, '/', { agent: useAgent ? agent : false, timeoutMs: 5000 });
        if (r.status === 200 && o.accept(r.body)) ok++;
        else failures.push(`${r.status} ${JSON.stringify(r.body)}`);
      } catch (e) {
        failures.push(String((e as Error).message));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.clients }, client));
  } finally {
    agent.destroy();
  }
  return { ok, failures };
}

/**
 * Rewrite the balancer's file with makeConfig(1), makeConfig(2), ... every `everyMs` until stop()
 * (a reload storm); count() is how many rewrites so far. Each is a rename-save: an in-place
 * rewrite this often, on a loaded machine, is now and then read by a reload half-written.
 */
export function rewriteEvery(lb: Balancer, makeConfig: (n: number) => string, everyMs: number): { count(): number; stop(): Promise<void> } {
  let stopped = false;
  let n = 0;
  const loop = (async () => {
    while (!stopped) {
      n++;
      lb.replaceConfig(makeConfig(n));
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    count: () => n,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** SIGTERM a child, SIGKILL it if it has not exited within timeoutMs; resolves once it exited. */
export function stopProcess(proc: ChildProcess, timeoutMs = 5000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

/**
 * Run a TypeScript script of scripts/ to completion, bounded: SIGTERM at boundMs (the script
 * stops what it started), SIGKILL 3 s later.
 */
export async function runScriptBounded(script: string, args: string[], boundMs: number): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', script), ...args], {
    cwd: ROOT,
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const term = setTimeout(() => child.kill('SIGTERM'), boundMs);
  const kill = setTimeout(() => child.kill('SIGKILL'), boundMs + 3000);
  const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
  clearTimeout(term);
  clearTimeout(kill);
  return { code, out, err };
}

/** A port that was free a moment ago (bind to 0, read it, close). */
/** Ports the tests pick from: below Linux's default ephemeral range, above the well-known ones. */
const PICK_FROM = 20000;
const PICK_BELOW = 32768;
/** ports already handed out by this process: two calls in a row never get the same one */
const handedOut = new Set<number>();

/**
 * A port free on 127.0.0.1 now, from below the kernel's ephemeral range (32768-60999 here): a
 * port the kernel handed out for listening is also one it hands out as the local port of
 * outgoing connections, and the many the tests make could take it before the balancer binds it.
 */
export async function freePort(): Promise<number> {
  const tryBind = (port: number): Promise<number | null> =>
    new Promise((res) => {
      const s = net.createServer();
      s.once('error', () => res(null));
      s.listen(port, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => res(p));
      });
    });
  for (let i = 0; i < 50; i++) {
    const want = PICK_FROM + Math.floor(Math.random() * (PICK_BELOW - PICK_FROM));
    if (handedOut.has(want)) continue;
    const p = await tryBind(want);
    if (p !== null) {
      handedOut.add(p);
      return p;
    }
  }
  const p = await tryBind(0);
  if (p === null) throw new Error('no free port on 127.0.0.1');
  return p;
}

export function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

// -------------------------------------------------------------------------------------------
// Backends

export interface TestServer {
  readonly port: number;
  readonly address: string;
  /** sockets currently open on the server */
  readonly sockets: Set<net.Socket>;
  accepted: number;
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 with the given connection handler (allowHalfOpen). */
export function startTcpServer(onConn: (s: net.Socket) => void, port?: number): Promise<TestServer>;
/** The fixture: the same, closed when the test `t` ends. */
export function startTcpServer(t: Ends, onConn: (s: net.Socket) => void, port?: number): Promise<TestServer>;
export async function startTcpServer(...a: [(s: net.Socket) => void, number?] | [Ends, (s: net.Socket) => void, number?]): Promise<TestServer> {
  if (typeof a[0] === 'function') return tcpServer(a[0], a[1] as number | undefined);
  const t = a[0];
  const ts = await tcpServer(a[1] as (s: net.Socket) => void, a[2]);
  atEnd(t, () => ts.close());
  return ts;
}

function tcpServer(onConn: (s: net.Socket) => void, port = 0): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    ts.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onConn(s);
  });
  const ts: TestServer = {
    port: 0,
    address: '',
    sockets,
    accepted: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  };
  return new Promise((res, rej) => {
    srv.once('error', rej);
    srv.listen(port, '127.0.0.1', () => {
      const a = srv.address() as net.AddressInfo;
      (ts as { port: number }).port = a.port;
      (ts as { address: string }).address = `127.0.0.1:${a.port}`;
      res(ts);
    });
  });
}

/** Echo server: writes back what it reads; ends its side when the client ends (half-close). */
export function startEcho(port?: number): Promise<TestServer>;
/** The fixture: the same, closed when the test `t` ends. */
export function startEcho(t: Ends, port?: number): Promise<TestServer>;
export function startEcho(...a: [number?] | [Ends, number?]): Promise<TestServer> {
  const echo = (s: net.Socket): void => {
    s.pipe(s);
  };
  return typeof a[0] === 'object' ? startTcpServer(a[0], echo, a[1]) : startTcpServer(echo, a[0]);
}

/** Server that writes `name\n` to each connection, then keeps reading until the client ends. */
export function startNamed(name: string, port?: number): Promise<TestServer>;
/** The fixture: the same, closed when the test `t` ends. */
export function startNamed(t: Ends, name: string, port?: number): Promise<TestServer>;
export function startNamed(...a: [string, number?] | [Ends, string, number?]): Promise<TestServer> {
  const [t, name, port] = typeof a[0] === 'string' ? [undefined, a[0], a[1] as number | undefined] : [a[0], a[1] as string, a[2]];
  const named = (s: net.Socket): void => {
    s.write(`${name}\n`);
    s.on('data', () => {});
    s.on('end', () => s.end());
  };
  return t ? startTcpServer(t, named, port) : startTcpServer(named, port);
}

export interface WorkerProc {
  readonly proc: ChildProcess;
  readonly address: string;
  readonly port: number;
  stop(): Promise<void>;
}

/** Start `lemonade demo-backend` on an ephemeral port. */
export function startWorker(name: string, extra?: string[]): Promise<WorkerProc>;
/** The fixture: the same, stopped when the test `t` ends. */
export function startWorker(t: Ends, name: string, extra?: string[]): Promise<WorkerProc>;
export async function startWorker(...a: [string, string[]?] | [Ends, string, string[]?]): Promise<WorkerProc> {
  if (typeof a[0] === 'string') return launchWorker(a[0], a[1] as string[] | undefined);
  const t = a[0];
  const w = await launchWorker(a[1] as string, a[2]);
  atEnd(t, () => w.stop());
  return w;
}

async function launchWorker(name: string, extra: string[] = []): Promise<WorkerProc> {
  const proc = spawn(process.execPath, [bundle(), 'demo-backend', '--listen', '127.0.0.1:0', '--name', name, ...extra], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  const exited = new Promise<void>((r) => proc.on('exit', () => (running.delete(proc), r())));
  const address = await new Promise<string>((res, rej) => {
    let out = '';
    const t = setTimeout(() => rej(new Error(`worker ${name} did not start`)), 10_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(t);
        res(m[1]!);
      }
    });
    proc.on('exit', (c) => rej(new Error(`worker ${name} exited ${c}`)));
  });
  return {
    proc,
    address,
    port: portOf(address),
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

// -------------------------------------------------------------------------------------------
// Clients

export interface HttpResult {
  readonly status: number;
  readonly body: string;
  readonly headers: http.IncomingHttpHeaders;
}

export function httpRequest(port: number, path: string, opts: { method?: string; headers?: Record<string, string>; timeoutMs?: number; agent?: http.Agent | false } = {}): Promise<HttpResult> {
  return new Promise((res, rej) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false },
      (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (d: string) => (body += d));
        r.on('end', () => res({ status: r.statusCode ?? 0, body, headers: r.headers }));
        r.on('error', rej);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 10_000, () => req.destroy(new Error(`request to :${port}${path} timed out`)));
    req.on('error', rej);
    req.end();
  });
}

export async function adminJson<T = Record<string, unknown>>(b: Balancer, path: string): Promise<T> {
  const r = await b.admin(path);
  return JSON.parse(r.body) as T;
}

/** Connect to the proxy, send `data` (then end when `end`), collect everything until close. */
export function tcpExchange(port: number, data: Buffer | string, opts: { end?: boolean; timeoutMs?: number } = {}): Promise<{ data: Buffer; closedMs: number; error?: string }> {
  return new Promise((res) => {
    const started = Date.now();
    const chunks: Buffer[] = [];
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let error: string | undefined;
    const t = setTimeout(() => s.destroy(new Error('timeout')), opts.timeoutMs ?? 10_000);
    s.on('connect', () => {
      if (data.length > 0) s.write(data);
      if (opts.end !== false) s.end();
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => s.end());
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => {
      clearTimeout(t);
      const r = { data: Buffer.concat(chunks), closedMs: Date.now() - started };
      res(error ? { ...r, error } : r);
    });
  });
}

/** A TOML config for tests: listen and admin on port 0, the given backends, fast health checks. */
export function testConfig(backends: { address: string; name?: string; weight?: number; id?: number; backup?: boolean; max_connections?: number }[], extra: { proxy?: string; strategy?: string; health?: string; runtime?: string; admin?: string } = {}): string {
  return [
    '[runtime]',
    ...['drain_timeout_millis = 5000', 'config_watch_interval_millis = 1000'].filter((l) => !(extra.runtime ?? '').includes(l.split(' ')[0]!)),
    extra.runtime ?? '',
    '[proxy]',
    'listen_address = "127.0.0.1:0"',
    'connect_timeout = "1s"',
    extra.proxy ?? '',
    '[strategy]',
    `algorithm = "${extra.strategy ?? 'round_robin'}"`,
    '[health]',
    extra.health ?? 'interval = "500ms"\ntimeout = "300ms"',
    '[admin]',
    extra.admin ?? 'listen_address = "127.0.0.1:0"',
    ...backends.flatMap((b, i) => [
      '[[backends]]',
      `id = ${b.id ?? i}`,
      `name = "${b.name ?? `b${i + 1}`}"`,
      `address = "${b.address}"`,
      ...(b.weight !== undefined ? [`weight = ${b.weight}`] : []),
      ...(b.backup ? ['backup = true'] : []),
      ...(b.max_connections !== undefined ? [`max_connections = ${b.max_connections}`] : []),
    ]),
    '',
  ].join('\n');
}

/** Has a system tool? Tests that need one skip with a message naming it, or fail in CI. */
export function requireTool(t: { skip(msg: string): void }, tool: string, found: boolean): boolean {
  if (found) return true;
  const msg = `${tool} is not installed (the test setup installs it: see .ci/run)`;
  if (process.env['LEMONADE_REQUIRE_SYSTEM_TESTS'] === '1') throw new Error(`${msg}; LEMONADE_REQUIRE_SYSTEM_TESTS=1 forbids skipping`);
  t.skip(msg);
  return false;
}

/** Connect and hang up at once: 'connected' or the error code (ECONNREFUSED: nothing listens). */
export function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** systemd-socket-activate's path, "" when it is not installed (Debian package systemd). */
export const SOCKET_ACTIVATE = spawnSync('sh', ['-c', 'command -v systemd-socket-activate'], { encoding: 'utf8' }).stdout.trim();

export interface Activated {
  readonly proc: ChildProcess;
  /** what systemd-socket-activate and the balancer wrote to stderr so far */
  stderr(): string;
  readonly exited: Promise<number | null>;
}

/**
 * `lemonade lb --config FILE` under systemd-socket-activate listening on 127.0.0.1 at each port:
 * resolves once every socket listens; the balancer starts at the first connection and gets the
 * sockets in this order. Killed when the test ends.
 */
export async function socketActivated(t: { after(f: () => unknown): void }, ports: readonly number[], configPath: string): Promise<Activated> {
  const proc = spawn(SOCKET_ACTIVATE, [...ports.flatMap((p) => ['-l', `127.0.0.1:${p}`]), process.execPath, bundle(), 'lb', '--config', configPath], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
  t.after(() => proc.kill('SIGKILL'));
  await waitFor(() => err.split('Listening on').length > ports.length, 5000, 'systemd-socket-activate to listen');
  return { proc, stderr: () => err, exited };
}
