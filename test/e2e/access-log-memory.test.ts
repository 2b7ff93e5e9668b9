// What the access log holds while its destination does not read is bounded by its queue
// (MAX_QUEUED_BYTES), measured on the balancer's heap and buffers after a full GC: the process's
// RSS is not the measure, as V8's young generation grows to its maximum (16 MiB semi-spaces by
// default) under the allocation churn of thousands of connections, whatever is retained.
// The balancer runs with --expose-gc and a preload (written here) that answers SIGUSR2 with
// process.memoryUsage() after a gc(). The queue is one buffer used as a ring: a second test
// follows lines through it, across its end, with a destination that takes a batch when told.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireTool, startBalancer, startEcho, tempDir, waitFor } from '../helpers';
import { accessLogTable, exchange, samples } from '../access-log-helpers';
import { servicesFile } from '../services-helpers';
import { AccessLog, MAX_QUEUED_BYTES, MAX_QUEUED_LINES } from '../../src/obs/access-log';

/** A connection's end, as the access log takes it (its type named through the log alone). */
type SessionEnd = Parameters<AccessLog['write']>[0];

const HAS_MKFIFO = spawnSync('sh', ['-c', 'command -v mkfifo'], { encoding: 'utf8' }).stdout.trim() !== '';

const PRELOAD = `
const v8 = require('node:v8');
const fs = require('node:fs');
process.on('SIGUSR2', () => {
  globalThis.gc();
  const spaces = {};
  for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name] = s.space_size;
  fs.writeFileSync(process.env.MEMDUMP + '.tmp', JSON.stringify({ ...process.memoryUsage(), newSpace: spaces.new_space }));
  fs.renameSync(process.env.MEMDUMP + '.tmp', process.env.MEMDUMP);
});
`;

interface Mem {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  newSpace: number;
}

const MiB = (n: number): string => (n / 1048576).toFixed(1);

test('a destination that stops reading: what the access log holds stays within its queue bound', { timeout: 180_000 }, async (t) => {
  if (!requireTool(t, 'mkfifo (Debian package coreutils)', HAS_MKFIFO)) return;
  const dir = tempDir();
  const fifo = join(dir, 'access.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    reader.kill('SIGCONT');
    reader.kill('SIGKILL');
  });
  let text = '';
  let read = 0;
  reader.stdout!.setEncoding('utf8');
  reader.stdout!.on('data', (d: string) => {
    text += d;
    for (let i = d.indexOf('\n'); i !== -1; i = d.indexOf('\n', i + 1)) read++;
  });

  const echo = await startEcho();
  t.after(() => echo.close());
  const port = await freePort();
  const preload = join(dir, 'memory-preload.cjs');
  writeFileSync(preload, PRELOAD);
  const memdump = join(dir, 'memory.json');
  const file = servicesFile({ services: [{ name: 'echo', port, backends: [{ name: 'echo-1', address: echo.address }] }] }) + accessLogTable(fifo);
  const lb = await startBalancer(file, { env: { NODE_OPTIONS: `--expose-gc --require ${preload}`, MEMDUMP: memdump } });
  t.after(() => lb.stop());
  const memory = async (): Promise<Mem> => {
    rmSync(memdump, { force: true });
    lb.proc.kill('SIGUSR2');
    await waitFor(() => existsSync(memdump), 10_000, 'the memory figures');
    return JSON.parse(readFileSync(memdump, 'utf8')) as Mem;
  };
  const burst = async (n: number): Promise<void> => {
    let left = n;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (left-- > 0) await exchange(port);
      }),
    );
  };
  const dropped = async (): Promise<number> => samples((await lb.admin('/metrics')).body, 'lemonade_access_log_dropped_total')[0]!.value;

  // warm: the code is compiled and the queue in use, with a reader that keeps up
  const A = 3000;
  await burst(A);
  await waitFor(() => read >= A, 20_000, `the reader to read ${A} lines`);
  assert.equal(await dropped(), 0, 'nothing dropped while the reader keeps up');
  const m0 = await memory();

  reader.kill('SIGSTOP');
  const B = 15_000;
  await burst(B);
  const d = await dropped();
  const m1 = await memory();
  const held = m1.heapUsed + m1.external - (m0.heapUsed + m0.external);
  t.diagnostic(
    `${B} connections with the reader stopped, ${d} lines dropped; after a full GC, heapUsed ${MiB(m0.heapUsed)} → ${MiB(m1.heapUsed)} MiB, ` +
      `external ${MiB(m0.external)} → ${MiB(m1.external)} MiB (arrayBuffers ${MiB(m0.arrayBuffers)} → ${MiB(m1.arrayBuffers)}); ` +
      `RSS ${MiB(m0.rss)} → ${MiB(m1.rss)} MiB, V8 new space ${MiB(m0.newSpace)} → ${MiB(m1.newSpace)} MiB`,
  );
  // the queue is full: what did not fit was dropped
  assert.ok(d >= B - MAX_QUEUED_LINES - 3000, `${d} dropped of ${B}: the queue was not filled`);
  assert.ok(
    held <= MAX_QUEUED_BYTES,
    `with its queue full the access log holds ${MiB(held)} MiB more (heapUsed + external, after a full GC) than with it empty: the bound is ${MiB(MAX_QUEUED_BYTES)} MiB`,
  );

  // the reader goes on: every line queued is written whole, and every line is read or was dropped
  reader.kill('SIGCONT');
  await waitFor(async () => read + (await dropped()) === A + B, 30_000, `every line read or dropped (read ${read})`);
  const lines = text.split('\n').slice(0, -1);
  assert.equal(lines.length, read);
  for (const l of lines) assert.equal((JSON.parse(l) as { service: string }).service, 'echo', `a whole line: ${l}`);
});

test('lines go through the queue whole and in order, across the end of its buffer, none overwritten while written', async () => {
  // standard output as a destination that holds each batch until the test lets it go
  const held: { buf: Buffer; done: (err: Error | null) => void }[] = [];
  const out: string[] = [];
  const release = (): void => {
    const b = held.shift()!;
    out.push(b.buf.toString('utf8')); // read when written: the bytes were not reused meanwhile
    b.done(null);
  };
  let dropped = 0;
  const log = new AccessLog({ now: Date.now, warn: () => {}, dropped: (n) => (dropped += n), stdout: { batch: (buf, done) => held.push({ buf, done }) } });
  log.configure({ enabled: true, path: '', format: 'json', sample: 1 });
  // long lines (a long service name, accents included), so that the byte bound is the one reached
  const backend = { name: 'b', spec: { address: '10.0.0.1:80' } } as unknown as SessionEnd['pickedBackend'];
  const service = 'é'.repeat(150) + 's'.repeat(200);
  let id = 0;
  const line = (): void => {
    const e: SessionEnd = { service, pickedBackend: backend, connected: true, connectMs: 1, durationMs: 2, bytesIn: id++, bytesOut: 0, retries: 0, termination: 'client_closed', latencyMs: 1, logClient: '127.0.0.1:1' };
    log.write(e, Date.now());
  };
  const first = 6000;
  for (let i = 0; i < first; i++) line();
  const accepted1 = first - dropped;
  assert.ok(dropped > 0 && accepted1 < MAX_QUEUED_LINES, `the byte bound is reached first (${accepted1} lines queued)`);
  // a third of the queue goes out, then more lines come: they fit only from the start of the buffer
  await waitFor(() => held.length > 0, 5000, 'the first batch');
  while (out.join('').split('\n').length - 1 < accepted1 / 3) {
    if (held.length > 0) release();
    else await waitFor(() => held.length > 0, 5000, 'the next batch');
  }
  const droppedBefore = dropped;
  const second = 3000;
  for (let i = 0; i < second; i++) line();
  const accepted2 = second - (dropped - droppedBefore);
  assert.ok(accepted2 >= accepted1 / 4, `${accepted2} lines queued after a third was written`);
  let idle = false;
  void log.flushed(30_000).then(() => (idle = true));
  while (!idle) {
    if (held.length > 0) release();
    else await new Promise((r) => setTimeout(r, 5));
  }
  const lines = out.join('').split('\n').slice(0, -1);
  assert.equal(lines.length + dropped, first + second, 'every line written or counted as dropped');
  const ids = lines.map((l) => {
    const o = JSON.parse(l) as { service: string; bytes_in: number };
    assert.equal(o.service, service, 'a whole line');
    return o.bytes_in;
  });
  // the first accepted1 lines, then the accepted2 lines that followed the third written
  const expected = [...Array.from({ length: accepted1 }, (_, i) => i), ...Array.from({ length: accepted2 }, (_, i) => first + i)];
  assert.deepEqual(ids, expected);
});
