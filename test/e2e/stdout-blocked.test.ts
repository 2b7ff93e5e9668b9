// Standard output that stops being read (a pipe whose reader is SIGSTOPped, as journald's
// socket or `| cat` can be) never stops the process: connections through the balancer and
// GET /health keep answering, the lines that do not fit are dropped and counted, RSS stays
// bounded, and once the reader goes on every line is either read or counted as dropped. Two
// writers of standard output: the access log (path = "") and the ordinary log at debug.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLE, cleanEnv, freePort, httpRequest, requireTool, startEcho, tempDir, waitFor } from '../helpers';
import { accessLogTable, exchange, samples } from '../access-log-helpers';
import { servicesFile } from '../services-helpers';
import { MAX_QUEUED_LINES } from '../../src/obs/access-log';
import { MAX_LOG_LINES } from '../../src/obs/stdout';

const HAS_MKFIFO = spawnSync('sh', ['-c', 'command -v mkfifo'], { encoding: 'utf8' }).stdout.trim() !== '';

/** The resident memory of a process and its children (the worker processes), KiB. */
function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return Number(m![1]) + children.reduce((n, c) => n + rssKiB(c), 0);
}

interface Case {
  readonly name: string;
  /** more of the [runtime] table */
  readonly runtime?: readonly string[];
  readonly env: Record<string, string>;
  readonly tail: string;
  /** the metric that counts this writer's dropped lines */
  readonly metric: string;
  /** lines of this writer per connection, and whether a line read is one of them */
  readonly perConnection: number;
  readonly isLine: (line: Record<string, unknown>) => boolean;
  /** its queue's bound, in lines */
  readonly bound: number;
}

const CASES: readonly Case[] = [
  {
    name: 'the access log on standard output',
    env: { LEMONADE_LOG: 'info' },
    tail: accessLogTable(''),
    metric: 'lemonade_access_log_dropped_total',
    perConnection: 1,
    isLine: (l) => typeof l['termination'] === 'string' && l['level'] === undefined,
    bound: MAX_QUEUED_LINES,
  },
  {
    name: 'the ordinary log at debug',
    env: { LEMONADE_LOG: 'debug' },
    tail: '',
    metric: 'lemonade_log_dropped_total',
    perConnection: 2, // "connection opened" and "connection closed"
    isLine: (l) => l['msg'] === 'connection opened' || l['msg'] === 'connection closed',
    bound: MAX_LOG_LINES,
  },
  {
    name: 'the ordinary log at debug, two worker processes',
    runtime: ['workers = 2'],
    env: { LEMONADE_LOG: 'debug' },
    tail: '',
    metric: 'lemonade_log_dropped_total',
    perConnection: 2,
    isLine: (l) => l['msg'] === 'connection opened' || l['msg'] === 'connection closed',
    // each worker's own queue
    bound: 2 * MAX_LOG_LINES,
  },
];

for (const c of CASES) {
  test(`standard output stops being read (${c.name}): traffic and the admin API go on, lines are dropped and counted, memory stays bounded`, { timeout: 240_000 }, async (t) => {
    if (!requireTool(t, 'mkfifo (Debian package coreutils)', HAS_MKFIFO)) return;
    const dir = tempDir();
    const fifo = join(dir, 'stdout.fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    // the reader: cat, between the balancer's stdout and this test
    const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
    const procs: ChildProcess[] = [reader];
    t.after(() => {
      for (const p of procs) {
        p.kill('SIGCONT');
        p.kill('SIGKILL');
      }
    });
    let read = 0;
    let other = 0;
    const msgs: string[] = [];
    let rest = '';
    reader.stdout!.on('data', (d: Buffer) => {
      const parts = (rest + d.toString('utf8')).split('\n');
      rest = parts.pop()!;
      for (const p of parts) {
        let o: Record<string, unknown> = {};
        try {
          o = JSON.parse(p) as Record<string, unknown>;
        } catch {
          assert.fail(`a line that is not whole JSON: ${p.slice(0, 200)}`);
        }
        if (c.isLine(o)) read++;
        else {
          other++;
          msgs.push(String(o['msg']));
        }
      }
    });

    const echo = await startEcho(t);
    const port = await freePort();
    const adminPort = await freePort();
    const config = join(dir, 'config.toml');
    writeFileSync(config, servicesFile({
        runtime: ['drain_timeout_millis = 5000', 'config_watch_interval_millis = 60000', ...(c.runtime ?? [])],
        services: [{ name: 'echo', port, backends: [{ name: 'echo-1', address: echo.address }] }],
      }).replace('"127.0.0.1:0"', `"127.0.0.1:${adminPort}"`) + '[metrics]\ninterval = "1s"\n' + c.tail);
    // the balancer's stdout is the FIFO (opened once cat has it open for reading)
    const out = openSync(fifo, 'w');
    const lb = spawn(process.execPath, [BUNDLE, 'lb', '--config', config], { env: cleanEnv(c.env), stdio: ['ignore', out, 'pipe'] });
    closeSync(out);
    procs.push(lb);
    let stderr = '';
    lb.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const pid = lb.pid!;
    await waitFor(async () => (await httpRequest(adminPort, '/health', { timeoutMs: 1000 })).status === 200, 15_000, `the admin API to answer (stderr: ${stderr})`);

    const dropped = async (): Promise<number> => samples((await httpRequest(adminPort, '/metrics', { timeoutMs: 5000 })).body, c.metric)[0]?.value ?? 0;
    /** `n` connections over 20 clients, each bounded in time; resolves with their rate per second */
    const burst = async (n: number): Promise<number> => {
      let left = n;
      const started = Date.now();
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          while (left-- > 0) {
            const s = Date.now();
            await exchange(port);
            assert.ok(Date.now() - s < 5000, `a connection through the balancer took ${Date.now() - s} ms`);
          }
        }),
      );
      return (n / (Date.now() - started)) * 1000;
    };
    /** GET /health every 100 ms while `during` runs, and 2.5 s more: the slowest answer, ms */
    const healthWhile = async <T>(during: Promise<T>): Promise<[T, number]> => {
      let done = false;
      let worst = 0;
      const poll = (async () => {
        while (!done) {
          const s = Date.now();
          const r = await httpRequest(adminPort, '/health', { timeoutMs: 3000 });
          assert.equal(r.status, 200);
          worst = Math.max(worst, Date.now() - s);
          await new Promise((r2) => setTimeout(r2, 100));
        }
      })();
      try {
        const r = await during;
        // the summary line (every second here) is logged while the reader is stopped
        await new Promise((r2) => setTimeout(r2, 2500));
        return [r, worst];
      } finally {
        done = true;
        await poll;
      }
    };

    const A = 1000;
    const rateA = await burst(A);
    await waitFor(() => read >= A * c.perConnection, 20_000, `the reader to read ${A * c.perConnection} lines (read ${read})`);
    assert.equal(await dropped(), 0, 'nothing dropped while the reader keeps up');

    reader.kill('SIGSTOP');
    const rss0 = rssKiB(pid);
    // past the queue's bound and the pipe's
    const B = 4000 + Math.ceil(c.bound / c.perConnection);
    const [rateB, worst] = await healthWhile(burst(B));
    const rss1 = rssKiB(pid);
    const d = await dropped();
    t.diagnostic(
      `reader running: ${A} connections at ${rateA.toFixed(0)}/s; reader stopped: ${B} connections at ${rateB.toFixed(0)}/s, ` +
        `GET /health at worst ${worst} ms; ${d} lines dropped; RSS ${(rss0 / 1024).toFixed(1)} MiB before, ${(rss1 / 1024).toFixed(1)} MiB after`,
    );
    assert.ok(worst < 2000, `GET /health answered within 2 s (worst ${worst} ms)`);
    // the queue holds its bound, the FIFO and cat's buffers a few thousand lines more
    const lines = B * c.perConnection;
    assert.ok(d >= lines - c.bound - 3000, `${d} dropped of ${lines}`);
    assert.ok(rss1 - rss0 < 64 * 1024, `RSS grew ${rss1 - rss0} KiB`);

    // the reader goes on: what was queued is written; every line is read or was dropped
    reader.kill('SIGCONT');
    const total = (A + B) * c.perConnection;
    // a few other lines of the same writer (health checks, the summary) may be dropped too
    await waitFor(async () => read + (await dropped()) >= total, 30_000, `every line read or dropped (read ${read} of ${total})`);
    const after = read + (await dropped());
    assert.ok(after <= total + 100, `${after} lines read or dropped for ${total} (${other} other lines read)`);

    // it stops in a bounded time, its last lines written
    lb.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => lb.on('exit', (x) => r(x)));
    assert.equal(code, 0, stderr);
    await waitFor(() => msgs.some((m) => m.startsWith('stopped: ')), 5000, `the last log line (${msgs.slice(-3).join(' | ')})`);
  });
}
