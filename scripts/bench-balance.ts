// `npm run bench:balance`: how the strategies cope with backends of different speed.
//
// Three real `lemonade demo-backend` processes: two fast (2-4 ms) and one slow (60-80 ms). For every
// strategy in turn a real balancer (dist/lemonade.js) is started in front of them (a fresh one
// per strategy, so no strategy inherits another's load figures), closed-loop clients run at
// concurrency 6, and after a warm-up:
//   1. steady window: requests, p50/p99 latency, the slow backend's share, errors;
//   2. one fast backend turns slow (90 ms, through its POST /_control endpoint): the share that
//      backend gets in the window after (and in the last seconds of that window).
// The backend is restored before the next strategy. Requests are attributed by the response body
// (the worker's name) and to a window by their start time.
//
// Clients: HTTP/1.1 over raw sockets, each connection carrying --per-conn requests (default 1,
// then "Connection: close"). A layer-4 balancer picks a backend per *connection*, so a
// connection that lives for the whole run would pin each client to its first backend and the
// strategies could not be compared; a fresh connection per request lets every request be a pick.
//
// Flags: --quick (a ~20 s smoke run; targets are printed but never fail the run),
//        --concurrency N (6), --per-conn N (1), --json (one JSON line with every figure at the end).
// Exit code: 0 when every target is met (always 0 with --quick unless a request errored or the
// run broke), 1 when a target was missed, 2 when the run itself failed.
//
// Everything runs on 127.0.0.1 with ephemeral ports (workers on port 0, the balancer on free
// ports test/helpers picks); every process is killed at the end, also on
// error or Ctrl-C.

import net from 'node:net';
import { startBalancer, startWorker, testConfig, httpRequest, type Balancer, type WorkerProc } from '../test/helpers';

const STRATEGIES = ['round_robin', 'weighted_round_robin', 'least_connections', 'fastest_response', 'adaptive'] as const;
type StrategyName = (typeof STRATEGIES)[number];

interface Args {
  readonly quick: boolean;
  readonly concurrency: number;
  readonly perConn: number;
  readonly json: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  let quick = false;
  let concurrency = 6;
  let perConn = 1;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1 || v > 1000) throw new Error(`${a} wants an integer in 1..1000`);
      return v;
    };
    if (a === '--quick') quick = true;
    else if (a === '--json') json = true;
    else if (a === '--concurrency') concurrency = num();
    else if (a === '--per-conn') perConn = num();
    else throw new Error(`unknown argument ${a} (known: --quick --concurrency N --per-conn N --json)`);
  }
  return { quick, concurrency, perConn, json };
}

/** Phase lengths, ms. */
interface Timing {
  readonly warmupMs: number;
  readonly steadyMs: number;
  /** the window after one fast backend turned slow */
  readonly shiftMs: number;
  /** "the last seconds" of that window */
  readonly shiftTailMs: number;
}

const FULL: Timing = { warmupMs: 2000, steadyMs: 10_000, shiftMs: 5000, shiftTailMs: 2000 };
const QUICK: Timing = { warmupMs: 500, steadyMs: 1500, shiftMs: 1500, shiftTailMs: 700 };

/** Per-request timeout: far above any backend delay here; a hit counts as an error. */
const REQUEST_TIMEOUT_MS = 5000;

const FAST = ['fast-a', 'fast-b'] as const;
const SLOW = 'slow';
/** The fast backend that turns slow mid-run. */
const TURNS_SLOW = 'fast-b';
const FAST_ARGS = ['--delay', '2', '--jitter', '2'];
const SLOW_ARGS = ['--delay', '60', '--jitter', '20'];
const TURNED_DELAY_MS = 90;

// ---------------------------------------------------------------------------------------------
// Recording: one entry per finished request, in flat arrays.

class Recorder {
  readonly start: number[] = [];
  readonly ms: number[] = [];
  /** backend name, or null for an error */
  readonly backend: (string | null)[] = [];
  readonly errors = new Map<string, number>();

  add(start: number, ms: number, backend: string | null, err: string | null): void {
    this.start.push(start);
    this.ms.push(ms);
    this.backend.push(backend);
    if (err !== null) this.errors.set(err, (this.errors.get(err) ?? 0) + 1);
  }
}

interface WindowStats {
  readonly requests: number;
  readonly errors: number;
  readonly p50: number;
  readonly p99: number;
  readonly share: (name: string) => number;
}

function windowStats(r: Recorder, from: number, to: number): WindowStats {
  const lat: number[] = [];
  const count = new Map<string, number>();
  let ok = 0;
  let errors = 0;
  for (let i = 0; i < r.start.length; i++) {
    const s = r.start[i]!;
    if (s < from || s >= to) continue;
    const b = r.backend[i]!;
    if (b === null) {
      errors++;
      continue;
    }
    ok++;
    lat.push(r.ms[i]!);
    count.set(b, (count.get(b) ?? 0) + 1);
  }
  lat.sort((a, b) => a - b);
  const q = (p: number): number => (lat.length === 0 ? NaN : lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)]!);
  return { requests: ok, errors, p50: q(0.5), p99: q(0.99), share: (name) => (ok === 0 ? NaN : (count.get(name) ?? 0) / ok) };
}

// ---------------------------------------------------------------------------------------------
// Closed-loop clients over raw sockets (cheap: the machine is shared with the balancer and the
// workers, and the client must not be the bottleneck).

function requestBytes(close: boolean): Buffer {
  return Buffer.from(`GET / HTTP/1.1\r\nHost: bench\r\nConnection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`, 'latin1');
}
const REQ_CLOSE = requestBytes(true);
const REQ_KEEP = requestBytes(false);

/** A complete response in `buf`: [status, body, bytes used] or null when more is needed. */
function parseResponse(buf: string): [number, string, number] | null {
  const h = buf.indexOf('\r\n\r\n');
  if (h < 0) return null;
  const status = Number(buf.slice(9, 12));
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, h + 2));
  const len = m ? Number(m[1]) : 0;
  if (buf.length < h + 4 + len) return null;
  return [status, buf.slice(h + 4, h + 4 + len), h + 4 + len];
}

class Clients {
  private running = false;
  private inFlight = 0;
  private idle: (() => void) | null = null;

  constructor(
    private readonly port: number,
    private readonly concurrency: number,
    private readonly perConn: number,
    private readonly rec: Recorder,
  ) {}

  start(): void {
    this.running = true;
    for (let i = 0; i < this.concurrency; i++) this.connection();
  }

  /** Stop issuing requests; resolves when the last in-flight one finished (bounded by its timeout). */
  stop(): Promise<void> {
    this.running = false;
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => (this.idle = r));
  }

  /** One connection: up to perConn requests in a row, then a new connection (while running). */
  private connection(): void {
    this.inFlight++;
    const s = net.connect({ host: '127.0.0.1', port: this.port });
    s.setNoDelay(true);
    let buf = '';
    let sent = 0;
    let started = performance.now();
    let done = false;
    let timer: NodeJS.Timeout | null = null;
    const send = (): void => {
      // the first request's latency includes the connect (as the balancer's own figure does)
      if (sent > 0) started = performance.now();
      sent++;
      buf = '';
      timer = setTimeout(() => finish('timeout'), REQUEST_TIMEOUT_MS);
      s.write(sent >= this.perConn ? REQ_CLOSE : REQ_KEEP);
    };
    const finish = (err: string | null, backend: string | null = null): void => {
      if (done) return;
      if (timer) clearTimeout(timer);
      this.rec.add(started, performance.now() - started, err === null ? backend : null, err);
      if (err === null && sent < this.perConn && this.running) {
        send();
        return;
      }
      done = true;
      s.destroy();
      this.inFlight--;
      if (this.running) setImmediate(() => this.connection());
      else if (this.inFlight === 0 && this.idle) this.idle();
    };
    s.on('connect', send);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const r = parseResponse(buf);
      if (!r) return;
      const [status, body] = r;
      if (status !== 200) finish(`HTTP ${status}`);
      else finish(null, body.trim());
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    s.on('close', () => finish('closed before the response'));
  }
}

// ---------------------------------------------------------------------------------------------

interface Row {
  readonly strategy: StrategyName;
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly slowShare: number;
  readonly turnedShare: number;
  readonly turnedTailShare: number;
  readonly shiftP99: number;
  readonly errors: number;
  readonly errorKinds: Record<string, number>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function control(w: WorkerProc, query: string): Promise<void> {
  const r = await httpRequest(w.port, `/_control?${query}`, { method: 'POST', timeoutMs: 5000 });
  if (r.status !== 200) throw new Error(`POST /_control?${query} answered ${r.status}`);
}

async function runStrategy(strategy: StrategyName, workers: Map<string, WorkerProc>, args: Args, timing: Timing): Promise<Row> {
  const backends = [...FAST, SLOW].map((name, i) => ({ id: i, name, address: workers.get(name)!.address }));
  let lb: Balancer | null = null;
  const rec = new Recorder();
  try {
    lb = await startBalancer(testConfig(backends, { strategy, health: 'interval = "1s"\ntimeout = "500ms"' }));
    const clients = new Clients(lb.port, args.concurrency, args.perConn, rec);
    const t0 = performance.now();
    clients.start();
    await sleep(timing.warmupMs);
    const steadyFrom = performance.now();
    await sleep(timing.steadyMs);
    const steadyTo = performance.now();
    await control(workers.get(TURNS_SLOW)!, `delay=${TURNED_DELAY_MS}&jitter=0`);
    const shiftFrom = performance.now();
    await sleep(timing.shiftMs);
    const shiftTo = performance.now();
    await clients.stop();
    const steady = windowStats(rec, steadyFrom, steadyTo);
    const shift = windowStats(rec, shiftFrom, shiftTo);
    const tail = windowStats(rec, shiftTo - timing.shiftTailMs, shiftTo);
    const all = windowStats(rec, t0, Infinity);
    const errors = rec.backend.reduce((n, b) => (b === null ? n + 1 : n), 0);
    return {
      strategy,
      requests: steady.requests,
      rps: steady.requests / ((steadyTo - steadyFrom) / 1000),
      p50: steady.p50,
      p99: steady.p99,
      slowShare: steady.share(SLOW),
      turnedShare: shift.share(TURNS_SLOW),
      turnedTailShare: tail.share(TURNS_SLOW),
      shiftP99: shift.p99,
      errors: Math.max(errors, all.errors),
      errorKinds: Object.fromEntries(rec.errors),
    };
  } finally {
    await control(workers.get(TURNS_SLOW)!, 'delay=2&jitter=2').catch(() => undefined);
    if (lb) await lb.stop('SIGTERM', 5000);
  }
}

const pct = (x: number): string => (Number.isNaN(x) ? '-' : `${(x * 100).toFixed(1)}%`);
const ms = (x: number): string => (Number.isNaN(x) ? '-' : x.toFixed(1));

function table(rows: readonly Row[], timing: Timing): string {
  const head = [
    'strategy',
    'requests',
    'req/s',
    'p50 ms',
    'p99 ms',
    'slow share',
    `${TURNS_SLOW} 0-${timing.shiftMs / 1000}s`,
    `${TURNS_SLOW} last ${timing.shiftTailMs / 1000}s`,
    'p99 after turn',
    'errors',
  ];
  const body = rows.map((r) => [r.strategy, String(r.requests), r.rps.toFixed(0), ms(r.p50), ms(r.p99), pct(r.slowShare), pct(r.turnedShare), pct(r.turnedTailShare), ms(r.shiftP99), String(r.errors)]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(' | ') + ' |';
  return [line(head), '|' + w.map((n, i) => (i === 0 ? ':' : '') + '-'.repeat(n + 1) + (i === 0 ? '' : ':')).join('|') + '|', ...body.map(line)].join('\n');
}

interface Target {
  readonly what: string;
  readonly met: boolean;
  readonly detail: string;
}

function targets(rows: readonly Row[], timing: Timing): Target[] {
  const by = (s: StrategyName): Row => rows.find((r) => r.strategy === s)!;
  const ad = by('adaptive');
  const rr = by('round_robin');
  const lc = by('least_connections');
  const out: Target[] = [
    { what: 'adaptive p99 <= 0.5 x round_robin p99', met: ad.p99 <= 0.5 * rr.p99, detail: `${ms(ad.p99)} vs ${ms(0.5 * rr.p99)}` },
    { what: 'adaptive p99 <= least_connections p99', met: ad.p99 <= lc.p99, detail: `${ms(ad.p99)} vs ${ms(lc.p99)}` },
  ];
  for (const s of ['adaptive', 'fastest_response'] as const) {
    const r = by(s);
    out.push({ what: `${s}: slow backend share < 15%`, met: r.slowShare < 0.15, detail: pct(r.slowShare) });
  }
  for (const s of ['adaptive', 'fastest_response'] as const) {
    const r = by(s);
    out.push({
      what: `${s}: ${TURNS_SLOW} below 20% within ${timing.shiftMs / 1000} s of turning slow`,
      met: r.turnedShare < 0.2,
      detail: `${pct(r.turnedShare)} over the window, ${pct(r.turnedTailShare)} in its last ${timing.shiftTailMs / 1000} s`,
    });
  }
  const errs = rows.reduce((n, r) => n + r.errors, 0);
  out.push({ what: '0 errors', met: errs === 0, detail: String(errs) });
  return out;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const timing = args.quick ? QUICK : FULL;
  const workers = new Map<string, WorkerProc>();
  const stopAll = async (): Promise<void> => {
    await Promise.all([...workers.values()].map((w) => w.stop()));
  };
  // On a signal, exit at once: test/helpers kills every worker and balancer it started on 'exit'.
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`bench:balance: ${sig}, stopping`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const started = await Promise.all([
      ...FAST.map((n) => startWorker(n, FAST_ARGS).then((w) => [n, w] as const)),
      startWorker(SLOW, SLOW_ARGS).then((w) => [SLOW, w] as const),
    ]);
    for (const [n, w] of started) workers.set(n, w);
    const perStrategy = timing.warmupMs + timing.steadyMs + timing.shiftMs;
    console.log(
      `bench:balance${args.quick ? ' --quick' : ''}: workers ${FAST.join(', ')} (2-4 ms), ${SLOW} (60-80 ms); concurrency ${args.concurrency}, ` +
        `${args.perConn} request(s) per connection; per strategy: ${timing.warmupMs / 1000} s warm-up, ${timing.steadyMs / 1000} s measured, ` +
        `then ${TURNS_SLOW} turns ${TURNED_DELAY_MS} ms for ${timing.shiftMs / 1000} s (~${Math.ceil((perStrategy * STRATEGIES.length) / 1000)} s in all)`,
    );
    const rows: Row[] = [];
    for (const s of STRATEGIES) {
      const row = await runStrategy(s, workers, args, timing);
      rows.push(row);
      console.log(`  ${s}: ${row.requests} requests, p50 ${ms(row.p50)} ms, p99 ${ms(row.p99)} ms, ${row.errors} errors${row.errors ? ' ' + JSON.stringify(row.errorKinds) : ''}`);
    }
    console.log('');
    console.log(table(rows, timing));
    console.log('');
    const ts = targets(rows, timing);
    for (const t of ts) console.log(`${t.met ? 'MET   ' : 'MISSED'} ${t.what} (${t.detail})`);
    if (args.json) console.log(JSON.stringify({ timing, args, rows, targets: ts }));
    const missed = ts.filter((t) => !t.met);
    if (args.quick) {
      // the smoke run is too short for the figures to mean anything; only errors fail it
      return rows.some((r) => r.errors > 0) ? 1 : 0;
    }
    console.log(missed.length === 0 ? 'all targets met' : `${missed.length} target(s) missed`);
    return missed.length === 0 ? 0 : 1;
  } finally {
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`bench:balance failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(2);
  },
);
