// The stdout sink with a stream that stands for standard output: one write at a time, whole
// lines of at most PIPE_BUF bytes, a bounded queue whose overflow is counted, the access log's
// batches in turn with the log's lines, and a stream that fails (EPIPE) dropping and counting
// everything from then on, never throwing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { MAX_LOG_BYTES, MAX_LOG_LINES, StdoutSink, type OutStream } from '../../src/obs/stdout';

/** A stream whose writes complete only when the test says so (a reader that stopped, then goes on). */
class HeldStream extends EventEmitter implements OutStream {
  readonly written: string[] = [];
  private readonly pending: ((err?: Error | null) => void)[] = [];
  write(chunk: string | Buffer, cb: (err?: Error | null) => void): boolean {
    this.written.push(chunk.toString());
    this.pending.push(cb);
    return false;
  }
  get inFlight(): number {
    return this.pending.length;
  }
  /** complete the writes under way (with `err`, as a failed write would) */
  release(err?: Error): void {
    for (const cb of this.pending.splice(0)) cb(err ?? null);
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('one write at a time, whole lines of at most 4096 bytes, the overflow dropped and counted', async () => {
  const out = new HeldStream();
  const sink = new StdoutSink(out);
  const line = (i: number): string => `{"n":${i},"pad":"${'x'.repeat(90)}"}\n`;
  const n = MAX_LOG_LINES + 1000;
  for (let i = 0; i < n; i++) sink.write(line(i));
  assert.equal(out.inFlight, 1, 'one write under way');
  assert.equal(sink.logDropped, n - 1 - MAX_LOG_LINES, 'the first line went out, the queue holds its bound, the rest is counted');
  // the reader goes on: every queued line goes, in order, in writes of whole lines
  while (out.inFlight > 0) {
    out.release();
    await tick();
  }
  const text = out.written.join('');
  assert.ok(out.written.every((w) => w.length <= 4096 && w.endsWith('\n')));
  const got = text.trim().split('\n').map((l) => (JSON.parse(l) as { n: number }).n);
  assert.deepEqual(got, Array.from({ length: MAX_LOG_LINES + 1 }, (_, i) => i));
  await sink.flushed(100);
});

test('the queue is bounded in bytes too; a line longer than 4096 bytes goes alone', async () => {
  const out = new HeldStream();
  const sink = new StdoutSink(out);
  const big = 'y'.repeat(64 * 1024) + '\n';
  for (let i = 0; i < 40; i++) sink.write(big);
  const queued = Math.floor(MAX_LOG_BYTES / big.length);
  assert.equal(sink.logDropped, 40 - 1 - queued);
  out.release();
  await tick();
  assert.equal(out.written[1], big, 'alone in its write');
});

test("the access log's batches go in turn with the log's lines, neither crowding the other out", async () => {
  const out = new HeldStream();
  const sink = new StdoutSink(out);
  sink.write('log-1\n'); // under way
  for (let i = 2; i < 2000; i++) sink.write(`log-${i}\n`);
  const done: (Error | null)[] = [];
  sink.batch(Buffer.from('access-1\n'), (e) => done.push(e));
  out.release();
  await tick();
  // the log's queued lines and the batch alternate: after a write of the log's, the batch
  assert.equal(out.written[1], 'access-1\n');
  out.release();
  await tick();
  assert.deepEqual(done, [null] as (Error | null)[]);
  assert.ok(out.written[2]!.startsWith('log-2\n'), out.written[2]!.slice(0, 20));
  sink.batch(Buffer.from('access-2\n'), (e) => done.push(e));
  out.release();
  await tick();
  assert.equal(out.written[3], 'access-2\n', 'the next batch waits for one write of the log only');
  const flushed = sink.flushed(5000);
  while (out.inFlight > 0) {
    out.release();
    await tick();
  }
  await flushed;
  assert.equal(out.written.join('').split('\n').filter((l) => l.startsWith('log-')).length, 1999);
});

test('flushed() waits for the queue, bounded in time when the reader does not go on', async () => {
  const out = new HeldStream();
  const sink = new StdoutSink(out);
  sink.write('a\n');
  const started = Date.now();
  // flushed()'s timer does not hold the process; this one holds the test's
  const hold = setTimeout(() => {}, 1000);
  await sink.flushed(200);
  clearTimeout(hold);
  assert.ok(Date.now() - started >= 150, 'it waited');
  assert.equal(out.inFlight, 1, 'for a write that never completed');
});

test('standard output fails (EPIPE: the reader went away): what waits and every later line is dropped and counted, nothing throws', async () => {
  const out = new HeldStream();
  const sink = new StdoutSink(out);
  for (let i = 0; i < 10; i++) sink.write(`line-${i}\n`);
  const done: (Error | null)[] = [];
  sink.batch(Buffer.from('access\n'), (e) => done.push(e));
  const epipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
  out.emit('error', epipe); // without the sink's listener this would throw
  out.release(epipe);
  await tick();
  assert.equal(sink.logDropped, 10, 'the line under way and the nine queued');
  assert.equal(done.length, 1);
  assert.equal((done[0] as NodeJS.ErrnoException).code, 'EPIPE');
  sink.write('later\n');
  assert.equal(sink.logDropped, 11);
  const again: (Error | null)[] = [];
  sink.batch(Buffer.from('access\n'), (e) => again.push(e));
  await tick();
  assert.equal(again.length, 1, 'a later batch fails at once');
  assert.equal(out.written.length, 1, 'nothing more written');
  await sink.flushed(100);
});
