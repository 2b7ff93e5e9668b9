// send_expect health checks: the steps of a check as bytes and matchers, and the conversation
// they make, bytes in and bytes out. Pure: the socket is health/checker.ts's. The text's escapes
// and regex parsing are config/step-text.ts's, which validation uses too, so a file that loads
// compiles here.

import type { RE2JS } from 're2js';
import { compileRegex, printable, printableText, unescape, type StepText } from '../config/step-text';

/** Bytes of one reply kept while waiting for its match: past this the step fails. */
export const MAX_REPLY_BYTES = 64 * 1024;

const EMPTY = Buffer.alloc(0);

/** One step ready to run: bytes to send (or none), then what the reply must hold (or no wait). */
export interface Step {
  readonly send: Buffer | null;
  readonly expect: Buffer | RE2JS | null;
  /** the expectation as the file wrote it, for error messages */
  readonly shown: string;
}

/** Steps from their text; the text was validated (a bad escape or regex throws here). */
export function compileSteps(list: readonly StepText[]): Step[] {
  return list.map((t) => {
    const bytes = (s: string): Buffer => {
      const b = unescape(s);
      if (typeof b === 'string') throw new Error(b);
      return b;
    };
    const regex = t.expectRegex === '' ? null : compileRegex(t.expectRegex);
    if (typeof regex === 'string') throw new Error(regex);
    return {
      send: t.send === '' ? null : bytes(t.send),
      expect: regex ?? (t.expect === '' ? null : bytes(t.expect)),
      // the file's text in the escapes it takes, once: safe to print, pastes back into the file
      shown: regex !== null ? `expect_regex "${printableText(t.expectRegex)}"` : `expect ${printable(bytes(t.expect), Infinity)}`,
    };
  });
}

/** A check's settings: its `steps`, or the one step its `send`, `expect` and `expect_regex` make. */
export interface SendExpectSettings extends StepText {
  readonly steps: readonly StepText[];
}

const compiled = new WeakMap<SendExpectSettings, readonly Step[]>();

/** The steps of a check, compiled once per (frozen) settings object. */
export function stepsOf(h: SendExpectSettings): readonly Step[] {
  let s = compiled.get(h);
  if (!s) {
    s = Object.freeze(compileSteps(h.steps.length > 0 ? h.steps : [h]));
    compiled.set(h, s);
  }
  return s;
}

/** What the socket does next: write these bytes (if any); then, when `done`, close with that result. */
export interface Turn {
  readonly write: Buffer | null;
  /** null while the conversation goes on; `{ error: null }` passed */
  readonly done: { readonly error: string | null } | null;
  /** set when bytes wait for their regex test: call recheck() in this many ms */
  readonly recheckInMs?: number;
}

/**
 * An `expect_regex` runs again over a reply that grows, at most this often unless the reply has
 * doubled since its last run: a backend dripping bytes costs a bounded share of the process.
 */
export const REGEX_RETEST_MS = 20;

/**
 * One check's exchange: each step sends its bytes, then reads until its reply matches, at most
 * MAX_REPLY_BYTES. The reply of a step is what arrives after its send (a step without `send`
 * reads from what is already there: a greeting). The caller bounds the whole in time.
 */
export class Conversation {
  private i = 0;
  private sent = false;
  /** the current step's reply so far: `len` bytes of `store` (at most MAX_REPLY_BYTES are kept) */
  private store: Buffer = EMPTY;
  private len = 0;
  /** bytes of the reply a byte `expect` has been searched in already */
  private searched = 0;
  /** bytes of the reply an `expect_regex` last ran over, and when (the caller's clock) */
  private tested = 0;
  private testedAt = 0;
  private finished = false;

  constructor(private readonly steps: readonly Step[]) {}

  /** The first bytes to write once connected. */
  start(): Turn {
    return this.advance();
  }

  /**
   * Bytes from the backend, at `now` (ms): with a clock, an `expect_regex` runs on the reply when
   * it has doubled or REGEX_RETEST_MS after its last run (the turn then asks for a recheck);
   * without one, on every chunk.
   */
  receive(chunk: Buffer, now?: number): Turn {
    if (this.finished) return { write: null, done: null };
    this.append(chunk);
    const full = this.len >= MAX_REPLY_BYTES;
    if (this.matches(full ? undefined : now)) return this.next();
    if (full) return this.fail(`no match in the first ${MAX_REPLY_BYTES} bytes of the reply`);
    return this.pending(now);
  }

  /** Bytes that wait for their regex test are tested now. */
  recheck(now?: number): Turn {
    if (this.finished) return { write: null, done: null };
    if (this.untested() && this.matches()) return this.next();
    return this.pending(now);
  }

  /** The backend closed its side: what it sent is tested once more, then the step fails. */
  ended(): Turn {
    if (this.finished) return { write: null, done: null };
    if (this.untested() && this.matches()) {
      const t = this.next();
      if (t.done !== null) return t;
    }
    return this.fail('connection closed by the backend');
  }

  /** Where the conversation stands, for a timeout's message. */
  waiting(): string {
    return this.finished ? 'finished' : `step ${this.i + 1} (${this.steps[this.i]!.shown}): no match yet${this.got()}`;
  }

  private advance(): Turn {
    const out: Buffer[] = [];
    while (this.i < this.steps.length) {
      const step = this.steps[this.i]!;
      if (!this.sent) {
        this.sent = true;
        if (step.send !== null) {
          out.push(step.send);
          this.clear();
        }
      }
      if (step.expect !== null && !this.matches()) break;
      this.i++;
      this.sent = false;
      if (step.expect !== null) this.clear();
    }
    const write = out.length === 0 ? null : out.length === 1 ? out[0]! : Buffer.concat(out);
    if (this.i < this.steps.length) return { write, done: null };
    this.finished = true;
    return { write, done: { error: null } };
  }

  /** The step matched: on to the next. */
  private next(): Turn {
    this.i++;
    this.sent = false;
    this.clear();
    return this.advance();
  }

  /** Bytes a regex has not run over yet. */
  private untested(): boolean {
    return this.len > this.tested && !Buffer.isBuffer(this.steps[this.i]!.expect) && this.steps[this.i]!.expect !== null;
  }

  private pending(now: number | undefined): Turn {
    if (now === undefined || !this.untested()) return { write: null, done: null };
    return { write: null, done: null, recheckInMs: Math.max(1, this.testedAt + REGEX_RETEST_MS - now) };
  }

  /** Keeps the chunk's bytes up to MAX_REPLY_BYTES in all; the store grows by doubling. */
  private append(chunk: Buffer): void {
    const take = Math.min(chunk.length, MAX_REPLY_BYTES - this.len);
    if (take <= 0) return;
    if (this.len + take > this.store.length) {
      const grown = Buffer.allocUnsafe(Math.min(MAX_REPLY_BYTES, Math.max(256, this.store.length * 2, this.len + take)));
      this.store.copy(grown, 0, 0, this.len);
      this.store = grown;
    }
    chunk.copy(this.store, this.len, 0, take);
    this.len += take;
  }

  private clear(): void {
    this.len = 0;
    this.searched = 0;
    this.tested = 0;
  }

  /**
   * Whether the reply so far holds the step's expectation. Bytes are searched from where the last
   * search could not have matched, so a reply arriving in many small chunks costs its length; a
   * regex runs over the whole reply in linear time, at `now` only when due (see receive()).
   */
  private matches(now?: number): boolean {
    const e = this.steps[this.i]!.expect;
    if (e === null) return true;
    if (this.len === 0) return false;
    const reply = this.store.subarray(0, this.len);
    if (!Buffer.isBuffer(e)) {
      if (now !== undefined && this.tested > 0 && this.len < 2 * this.tested && now - this.testedAt < REGEX_RETEST_MS) return false;
      this.tested = this.len;
      if (now !== undefined) this.testedAt = now;
      return e.test(reply);
    }
    const from = Math.max(0, this.searched - e.length + 1);
    this.searched = this.len;
    return reply.includes(e, from);
  }

  private fail(why: string): Turn {
    const msg = `step ${this.i + 1} (${this.steps[this.i]!.shown}): ${why}${this.got()}`;
    this.finished = true;
    return { write: null, done: { error: msg } };
  }

  /** The start of what the step's reply holds so far, for messages. */
  private got(): string {
    return this.len === 0 ? ' (nothing received)' : ` (got ${printable(this.store.subarray(0, this.len))})`;
  }
}
