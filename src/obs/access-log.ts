// The access log ([access_log]): one line per client connection when it ends, JSON or a text line
// in the spirit of HAProxy's tcplog, to standard output or a file (appended to, reopened on
// SIGUSR1 for logrotate). It never blocks the relay: a line goes to a bounded in-memory queue
// (lines and bytes bounded) that asynchronous writes empty, one at a time, in batches; the queue is
// one buffer of MAX_QUEUED_BYTES, written into as a ring, so that what it holds is the bytes it
// counts (a line kept as a string held several times its length on the heap); when the
// destination cannot keep up (a stopped reader, a slow disk) the queue fills and the next lines
// are dropped and counted (lemonade_access_log_dropped_total), never buffered without bound.
// Standard output is shared with the ordinary log through the process's stdout sink (a
// non-blocking stream); a path is opened non-blocking, so that a FIFO (or /dev/stdout) whose
// reader stops answers EAGAIN instead of holding a libuv pool thread, which would also hold the
// process at exit. Only a regular file's write may wait (on the disk), in one pool thread.
//
// Several worker processes each log their own connections to the same destination: a file is
// opened O_APPEND by each (every write lands at the end, whole), and a pipe or socket (stdout,
// journald) gets writes of at most PIPE_BUF bytes of whole lines, which the kernel does not
// interleave with another process's. Shipping lines to the primary instead would put every
// connection through IPC and the primary's one thread.

import { IdleWaiters } from './idle-waiters';
import { close, constants, fstat, open, write } from 'node:fs';
import type { SessionEnd, TlsFacts, UdpFacts } from '../proxy/events';
import { processStdout } from './stdout';
import type { Config } from '../config/schema';

export type AccessLogSettings = Config['access_log'];

/** Queue bounds: past either, lines are dropped (and counted). The bytes are one buffer, allocated with the first line. */
export const MAX_QUEUED_LINES = 8192;
export const MAX_QUEUED_BYTES = 2 * 1024 * 1024;
/** Bytes per write() to a regular file. */
const FILE_BATCH = 256 * 1024;
/** Bytes per write() to a pipe or socket: PIPE_BUF, so that writes of several processes stay whole. */
const STREAM_BATCH = 4096;
/** Lines are gathered this long before a write: one write per batch, not per connection. */
const GATHER_MS = 10;
/** After EAGAIN (a non-blocking pipe that is full), or a failed write, try again this much later. */
const RETRY_MS = 50;
/** A FIFO without a reader yet (ENXIO) is opened again this much later. */
const REOPEN_MS = 1000;
/** The descriptor stands for the process's stdout sink. */
const STDOUT = 1;
const OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK;

/** What the access log needs of the process's standard output (obs/stdout.ts). */
export interface StdoutBatches {
  batch(buf: Buffer, done: (err: Error | null) => void): void;
}

export interface AccessLogDeps {
  /** a problem with the destination (open or write failed), said at most once a second */
  readonly warn: (message: string, error: string) => void;
  /** `n` lines were dropped */
  readonly dropped: (n: number) => void;
  readonly now: () => number;
  /** standard output, shared with the ordinary log (default: this process's) */
  readonly stdout?: StdoutBatches;
}

export class AccessLog {
  /** the fraction of connections to log: 0 when off (what the listener reads at accept) */
  sampleRate = 0;
  private format: 'json' | 'text' = 'json';
  /** what the destination should be: "" = stdout, a path, null = none (off) */
  private wanted: string | null = null;
  /** the descriptor written to (-1: none yet), and what it is */
  private fd = -1;
  private fdKey: string | null = null;
  private batchLimit = STREAM_BATCH;
  /** a newer open() supersedes one still under way */
  private openGen = 0;
  /** the queue: lines encoded into `ring`, the i-th queued at starts[(first + i) % MAX_QUEUED_LINES] */
  private ring: Buffer | null = null;
  private readonly starts = new Int32Array(MAX_QUEUED_LINES);
  private readonly lengths = new Int32Array(MAX_QUEUED_LINES);
  private first = 0;
  /** lines queued, those of a write under way included (their bytes are free once it is done) */
  private count = 0;
  /** where the oldest queued line starts, and where the next one goes */
  private head = 0;
  private tail = 0;
  private queuedBytes = 0;
  private writing = false;
  private scheduled = false;
  private retry: NodeJS.Timeout | null = null;
  /** descriptors replaced while a write to them was under way: closed once it completes */
  private toClose: number[] = [];
  private warnedAt = 0;
  private readonly idle = new IdleWaiters();

  constructor(private readonly d: AccessLogDeps) {}

  /** Apply [access_log]: on/off, the format and the rate now; a new path is opened at once. */
  configure(s: AccessLogSettings): void {
    this.sampleRate = s.enabled ? s.sample : 0;
    this.format = s.format;
    const want = s.enabled ? s.path : null;
    // a file that could not be opened is tried again at each reload
    if (want !== this.wanted || (want !== null && this.fd < 0)) {
      this.wanted = want;
      this.openWanted();
    }
  }

  /** SIGUSR1: open the file again by its name (logrotate moved it); lines queued go to the new one. */
  reopen(): void {
    if (this.wanted !== null && this.wanted !== '') this.openWanted();
  }

  /** The line of a connection that ended at `at` (ms since the epoch). */
  write(e: SessionEnd, at: number): void {
    if (this.sampleRate === 0) return; // turned off since the connection was accepted
    const line = this.format === 'json' ? jsonLine(e, at) : textLine(e, at);
    const at0 = this.count < MAX_QUEUED_LINES ? this.place(Buffer.byteLength(line)) : -1;
    if (at0 < 0) {
      this.d.dropped(1);
      return;
    }
    const n = this.ring!.write(line, at0);
    const i = (this.first + this.count) % MAX_QUEUED_LINES;
    this.starts[i] = at0;
    this.lengths[i] = n;
    this.count++;
    this.tail = at0 + n;
    this.queuedBytes += n;
    this.kick();
  }

  /**
   * Where a line of `n` bytes goes in the ring, -1 if it does not fit: after the last line, or at
   * the start when the end is too short (a line is never split, so a batch is whole lines).
   */
  private place(n: number): number {
    if (this.ring === null) this.ring = Buffer.allocUnsafeSlow(MAX_QUEUED_BYTES);
    if (this.count === 0) {
      this.head = this.tail = 0;
      return n <= MAX_QUEUED_BYTES ? 0 : -1;
    }
    // not wrapped: free from tail to the end, and before head
    if (this.tail > this.head) {
      if (this.tail + n <= MAX_QUEUED_BYTES) return this.tail;
      return n <= this.head ? 0 : -1;
    }
    // wrapped: free from tail to head
    return this.tail + n <= this.head ? this.tail : -1;
  }

  /** Resolves once the queue is written (or after `timeoutMs`): before the process exits. */
  flushed(timeoutMs: number): Promise<void> {
    return this.idle.wait(this.count === 0 && !this.writing, timeoutMs);
  }

  /** `again`: a FIFO's reader is awaited (said once, not at each try) */
  private openWanted(again = false): void {
    const key = this.wanted;
    const gen = ++this.openGen;
    if (key === null) {
      this.settle();
      return;
    }
    if (key === '') {
      this.install(STDOUT, '', false);
      return;
    }
    open(key, OPEN_FLAGS, 0o640, (err, fd) => {
      if (gen !== this.openGen) {
        if (!err) close(fd, ignore);
        return;
      }
      if (err) {
        // the old destination (if any) stays: nothing is lost that need not be
        if (!again) this.warn(`cannot open the access log ${key}`, err);
        // a FIFO whose reader has not opened it yet
        if ((err as NodeJS.ErrnoException).code === 'ENXIO') {
          setTimeout(() => {
            if (gen === this.openGen) this.openWanted(true);
          }, REOPEN_MS).unref();
        }
        return;
      }
      fstat(fd, (e2, st) => {
        if (gen !== this.openGen) {
          close(fd, ignore);
          return;
        }
        this.install(fd, key, !e2 && st.isFile());
      });
    });
  }

  private install(fd: number, key: string, regular: boolean): void {
    const old = this.fd;
    this.fd = fd;
    this.fdKey = key;
    this.batchLimit = regular ? FILE_BATCH : STREAM_BATCH;
    if (old > 2 && old !== fd) {
      if (this.writing) this.toClose.push(old);
      else close(old, ignore);
    }
    this.kick();
  }

  /** Write soon, unless a write (or its retry) is under way: its completion goes on with the queue. */
  private kick(): void {
    if (!this.writing && !this.scheduled && this.retry === null && this.count > 0) {
      this.scheduled = true;
      setTimeout(this.flush, GATHER_MS);
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.writing || this.fd < 0) return;
    if (this.count === 0) {
      this.settle();
      return;
    }
    // whole lines that lie one after the other in the ring, up to the batch size (at least one line)
    const start = this.starts[this.first]!;
    let end = start;
    let n = 0;
    while (n < this.count) {
      const i = (this.first + n) % MAX_QUEUED_LINES;
      if (this.starts[i] !== end || (n > 0 && end + this.lengths[i]! - start > this.batchLimit)) break;
      end += this.lengths[i]!;
      n++;
    }
    this.writing = true;
    // the bytes stay queued (not overwritten) until the write is done
    this.writeOut(this.fd, this.ring!.subarray(start, end), n);
  };

  /** The first `lines` queued lines (one after the other in the ring) are written or dropped: their room is free. */
  private dequeue(lines: number): void {
    if (lines === 0) return;
    const last = (this.first + lines - 1) % MAX_QUEUED_LINES;
    this.queuedBytes -= this.starts[last]! + this.lengths[last]! - this.starts[this.first]!;
    this.first = (last + 1) % MAX_QUEUED_LINES;
    this.count -= lines;
    if (this.count === 0) this.head = this.tail = this.queuedBytes = 0;
    else this.head = this.starts[this.first]!;
  }

  private writeOut(fd: number, buf: Buffer, lines: number): void {
    if (fd === STDOUT && this.fdKey === '') {
      (this.d.stdout ?? processStdout()).batch(buf, (err) => this.written(fd, buf, lines, err, buf.length));
      return;
    }
    write(fd, buf, 0, buf.length, null, (err, written) => this.written(fd, buf, lines, err, written));
  }

  private written(fd: number, buf: Buffer, lines: number, err: Error | null, written: number): void {
    if (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
        this.later(() => this.writeOut(fd, buf, lines));
        return;
      }
      // the destination fails (a full disk, a closed pipe): what is queued is dropped with the
      // batch, and writing is tried again a little later with the lines that come by then
      this.warn(`cannot write the access log ${this.fdKey === '' ? '(standard output)' : this.fdKey}`, err);
      this.d.dropped(this.count);
      this.count = this.head = this.tail = this.queuedBytes = 0;
      this.writing = false;
      this.later(this.flush);
      return;
    }
    if (written < buf.length) {
      this.writeOut(fd, buf.subarray(written), lines);
      return;
    }
    this.writing = false;
    this.dequeue(lines);
    for (const old of this.toClose) close(old, ignore);
    this.toClose = [];
    // a full batch goes at once; fewer lines wait to be gathered with the next ones
    if (this.queuedBytes >= this.batchLimit) this.flush();
    else if (this.count > 0) this.kick();
    else this.settle();
  }

  private later(f: () => void): void {
    this.retry = setTimeout(() => {
      this.retry = null;
      f();
    }, RETRY_MS);
    this.retry.unref();
  }

  /** Nothing queued: close a file the log no longer wants, and wake flushed(). */
  private settle(): void {
    if (this.writing || this.count > 0) return;
    if (this.wanted === null && this.fd >= 0) {
      if (this.fd > 2) close(this.fd, ignore);
      this.fd = -1;
      this.fdKey = null;
    }
    this.idle.wake();
  }

  private warn(what: string, err: Error): void {
    const now = this.d.now();
    if (now - this.warnedAt < 1000) return;
    this.warnedAt = now;
    this.d.warn(what, (err as NodeJS.ErrnoException).code ?? err.message);
  }
}

function ignore(): void {}

/** The JSON line: its fields always in this order (time, client, service, backend, …, termination). */
export function jsonLine(e: SessionEnd, at: number): string {
  const b = e.pickedBackend;
  return (
    `{"time":"${new Date(at).toISOString()}","client":${e.logClient === null ? 'null' : JSON.stringify(e.logClient)},"service":${JSON.stringify(e.service)},` +
    `"backend":${b ? JSON.stringify(b.name) : 'null'},"backend_address":${b ? JSON.stringify(b.spec.address) : 'null'},` +
    `"connect_ms":${e.connected && e.udp == null ? e.connectMs : 'null'},"duration_ms":${e.durationMs},"bytes_in":${e.bytesIn},"bytes_out":${e.bytesOut},` +
    `"retries":${e.retries},"queue_ms":${e.queueMs ?? 0},"termination":"${e.termination}"${e.tls != null ? tlsFields(e.tls) : ''}${e.udp != null ? udpFields(e.udp) : ''}}\n`
  );
}

const str = (v: string | null): string => (v === null ? 'null' : JSON.stringify(v));

/** A terminated connection's handshake, after the termination (absent for a plain connection). */
function tlsFields(t: TlsFacts): string {
  return (
    `,"tls_version":${str(t.version)},"tls_cipher":${str(t.cipher)},"sni":${str(t.sni)},"alpn":${str(t.alpn)},` +
    `"client_cert_subject":${str(t.clientCertSubject)},"handshake_ms":${t.handshakeMs >= 0 ? t.handshakeMs : 'null'},"resumed":${t.secure ? t.resumed : 'null'}`
  );
}

/** A UDP flow's datagrams, after the termination (absent for a connection). */
function udpFields(u: UdpFacts): string {
  return `,"datagrams_in":${u.datagramsIn},"datagrams_out":${u.datagramsOut},"datagrams_dropped":${u.datagramsDropped}`;
}

/**
 * The text line: `TIME CLIENT SERVICE/BACKEND BACKEND_ADDRESS CONNECT_MS/DURATION_MS BYTES_IN
 * BYTES_OUT RETRIES TERMINATION`, "-" for what there is none of (docs/operations.md, Access log).
 */
export function textLine(e: SessionEnd, at: number): string {
  const b = e.pickedBackend;
  return `${new Date(at).toISOString()} ${e.logClient ?? '-'} ${e.service}/${b ? b.name : '-'} ${b ? b.spec.address : '-'} ${e.connected && e.udp == null ? e.connectMs : '-'}/${e.durationMs} ${e.bytesIn} ${e.bytesOut} ${e.retries} ${e.termination}\n`;
}
