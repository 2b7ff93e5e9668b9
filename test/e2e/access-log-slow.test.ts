// The access log never blocks the relay: its destination is a FIFO whose reader (cat) is
// stopped (SIGSTOP) half way. The relay keeps its connection rate, the lines past the bounded
// queue are dropped and counted (lemonade_access_log_dropped_total), the process's RSS stays
// bounded; once the reader goes on, every line is either read or counted as dropped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, waitFor, requireTool } from '../helpers';
import { accessLogTable, echoBalancer, exchange, samples } from '../access-log-helpers';
import { MAX_QUEUED_LINES } from '../../src/obs/access-log';

const HAS_MKFIFO = spawnSync('sh', ['-c', 'command -v mkfifo'], { encoding: 'utf8' }).stdout.trim() !== '';

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

/** A FIFO in a new directory, read by `cat` (which the test may SIGSTOP), counting the lines read. */
function fifoReader(t: { after(f: () => unknown): void }): { fifo: string; reader: ChildProcess; read(): number } {
  const fifo = join(tempDir(), 'access.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    reader.kill('SIGCONT');
    reader.kill('SIGKILL');
  });
  let read = 0;
  reader.stdout!.on('data', (d: Buffer) => {
    for (let i = d.indexOf(10); i !== -1; i = d.indexOf(10, i + 1)) read++;
  });
  return { fifo, reader, read: () => read };
}

test('a destination that stops reading: the relay keeps its pace, lines are dropped and counted, memory stays bounded', { timeout: 180_000 }, async (t) => {
  if (!requireTool(t, 'mkfifo (Debian package coreutils)', HAS_MKFIFO)) return;
  const { fifo, reader, read } = fifoReader(t);
  const { lb, port } = await echoBalancer(t, () => accessLogTable(fifo));
  const pid = lb.proc.pid!;

  /** `n` connections over 20 clients; their rate per second */
  const burst = async (n: number): Promise<number> => {
    let left = n;
    const started = Date.now();
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (left-- > 0) await exchange(port);
      }),
    );
    return (n / (Date.now() - started)) * 1000;
  };
  const dropped = async (): Promise<number> => samples((await lb.admin('/metrics')).body, 'lemonade_access_log_dropped_total')[0]!.value;

  const A = 3000;
  const rateA = await burst(A);
  await waitFor(() => read() >= A, 20_000, `the reader to read ${A} lines`);
  assert.equal(await dropped(), 0, 'nothing dropped while the reader keeps up');

  reader.kill('SIGSTOP');
  const rss0 = rssKiB(pid);
  const B = 15_000;
  const rateB = await burst(B);
  const rss1 = rssKiB(pid);
  const d = await dropped();
  t.diagnostic(
    `reader running: ${A} connections at ${rateA.toFixed(0)}/s; reader stopped: ${B} connections at ${rateB.toFixed(0)}/s, ` +
      `${d} lines dropped, ${read() - A} read meanwhile; RSS ${(rss0 / 1024).toFixed(1)} MiB before, ${(rss1 / 1024).toFixed(1)} MiB after (queue bound ${MAX_QUEUED_LINES} lines)`,
  );
  // the queue holds at most MAX_QUEUED_LINES, the FIFO and cat's buffers a few hundred more
  assert.ok(d >= B - MAX_QUEUED_LINES - 3000, `${d} dropped of ${B}`);
  assert.ok(rateB >= rateA * 0.5, `the relay kept its pace: ${rateB.toFixed(0)}/s against ${rateA.toFixed(0)}/s`);
  assert.ok(rss1 - rss0 < 64 * 1024, `RSS grew ${rss1 - rss0} KiB`);

  // the reader goes on: what was queued is written; every line is read or was dropped
  reader.kill('SIGCONT');
  await waitFor(async () => read() + (await dropped()) === A + B, 30_000, `every line read or dropped (read ${read()})`);
});

test('a FIFO whose reader stopped does not hold the process: SIGTERM exits at once', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'mkfifo (Debian package coreutils)', HAS_MKFIFO)) return;
  const { fifo, reader, read } = fifoReader(t);
  const { lb, port } = await echoBalancer(t, () => accessLogTable(fifo));
  await exchange(port);
  await waitFor(() => read() === 1, 10_000, 'the first line read');
  reader.kill('SIGSTOP');
  // far more than the FIFO holds: a write to it would wait for the reader
  for (let i = 0; i < 40; i++) await Promise.all(Array.from({ length: 50 }, () => exchange(port)));
  const started = Date.now();
  const code = await lb.stop('SIGTERM', 20_000);
  const took = Date.now() - started;
  t.diagnostic(`stopped in ${took} ms with the reader stopped`);
  assert.equal(code, 0);
  assert.ok(took < 10_000, `the balancer took ${took} ms to exit`);
});
