// Standard output, shared by the ordinary log and the access log (when its path is ""). A pipe or
// a socket (journald's) whose reader stops must never stall the process: lines go to a bounded
// queue that process.stdout (for a pipe or a socket: a non-blocking libuv stream, no thread held)
// empties one write at a time; what does not fit is dropped and counted, never buffered without
// bound and never waited for. The access log brings its own bounded queue and hands over one
// batch at a time, written in turn with the log's lines so that neither crowds the other out.
// Writes are whole lines of at most PIPE_BUF bytes (a longer line alone), which the kernel does
// not interleave with another process's (worker processes share the descriptor).

import { IdleWaiters } from './idle-waiters';

export const MAX_LOG_LINES = 4096;
export const MAX_LOG_BYTES = 1024 * 1024;
/** PIPE_BUF: a write of at most this many bytes to a pipe is never split by another writer's */
const BATCH = 4096;

/** What the sink needs of process.stdout. */
export interface OutStream {
  write(chunk: string | Buffer, cb: (err?: Error | null) => void): boolean;
  on(event: 'error', f: (err: Error) => void): unknown;
}

export class StdoutSink {
  /** lines of the ordinary log dropped: the queue was full, or standard output failed */
  logDropped = 0;
  private readonly lines: string[] = [];
  private bytes = 0;
  /** another writer's batch, waiting its turn */
  private batchBuf: Buffer | null = null;
  private batchDone: ((err: Error | null) => void) | null = null;
  private writing = false;
  /** the batch's turn comes next when both wait */
  private batchTurn = false;
  /** standard output failed (EPIPE: the reader went away): every line from then on is dropped */
  private broken: Error | null = null;
  private readonly idle = new IdleWaiters();

  constructor(private readonly out: OutStream) {
    // without a listener, an EPIPE on standard output would be an uncaught exception
    out.on('error', (e) => this.fail(e));
  }

  /** One line of the ordinary log (pino's destination). */
  readonly write = (line: string): void => {
    if (this.broken !== null || this.lines.length >= MAX_LOG_LINES || this.bytes + line.length > MAX_LOG_BYTES) {
      this.logDropped++;
      return;
    }
    this.lines.push(line);
    this.bytes += line.length;
    this.next();
  };

  /** Whole lines of another writer, at most one batch at a time per sink; `done` once written (or not). */
  batch(buf: Buffer, done: (err: Error | null) => void): void {
    if (this.broken !== null || this.batchDone !== null) {
      const err = this.broken ?? new Error('a batch is already waiting');
      process.nextTick(done, err);
      return;
    }
    this.batchBuf = buf;
    this.batchDone = done;
    this.next();
  }

  /** Resolves once everything queued is written (or after `timeoutMs`): before the process exits. */
  flushed(timeoutMs: number): Promise<void> {
    return this.idle.wait(this.isIdle(), timeoutMs);
  }

  private isIdle(): boolean {
    return !this.writing && this.lines.length === 0 && this.batchDone === null;
  }

  private next(): void {
    if (this.writing || this.broken !== null) return;
    if (this.batchDone !== null && (this.batchTurn || this.lines.length === 0)) {
      const buf = this.batchBuf!;
      const done = this.batchDone;
      this.batchBuf = null;
      this.batchDone = null;
      this.batchTurn = false;
      this.writing = true;
      this.out.write(buf, (err) => {
        this.writing = false;
        done(err ?? null);
        if (err) this.fail(err);
        else this.next();
      });
      return;
    }
    if (this.lines.length > 0) {
      let n = 0;
      let size = 0;
      while (n < this.lines.length && (n === 0 || size + this.lines[n]!.length <= BATCH)) size += this.lines[n++]!.length;
      const chunk = n === 1 ? this.lines[0]! : this.lines.slice(0, n).join('');
      this.lines.splice(0, n);
      this.bytes -= size;
      this.batchTurn = true;
      this.writing = true;
      this.out.write(chunk, (err) => {
        this.writing = false;
        if (err) {
          this.logDropped += n;
          this.fail(err);
        } else this.next();
      });
      return;
    }
    this.idle.wake();
  }

  /** Standard output is gone: what waits is dropped (counted), and so is every later line. */
  private fail(err: Error): void {
    if (this.broken === null) this.broken = err;
    this.logDropped += this.lines.length;
    this.lines.length = 0;
    this.bytes = 0;
    const done = this.batchDone;
    this.batchBuf = null;
    this.batchDone = null;
    if (done) process.nextTick(done, err);
    if (!this.writing) {
      this.idle.wake();
    }
  }
}

let shared: StdoutSink | null = null;

/** The process's standard output (one sink per process: every writer to fd 1 goes through it). */
export function processStdout(): StdoutSink {
  return (shared ??= new StdoutSink(process.stdout));
}
