// send_expect health checks: the escapes of `send` and `expect`, the steps of a check
// as bytes and matchers, and the conversation they make, bytes in and bytes out. Pure: the socket
// is health/checker.ts's. Validation (config/schema.ts) uses the same parsers, so a file that
// loads compiles here. `expect_regex` runs on RE2 (re2js, pure JS): linear in the reply's
// length whatever the pattern, so a pattern cannot stall the process on a hostile reply.

import { RE2JS } from 're2js';

/** Bytes of one reply kept while waiting for its match: past this the step fails. */
export const MAX_REPLY_BYTES = 64 * 1024;
/** Steps one check may have. */
export const MAX_STEPS = 16;
/** Instructions of a compiled `expect_regex`: matching costs this times the reply's length. */
export const MAX_REGEX_PROGRAM = 500;

const EMPTY = Buffer.alloc(0);

/** What RE2 does not have that a JavaScript or PCRE pattern may use, for its error messages. */
export const RE2_DIFFERENCES =
  'RE2 has no backreferences (\\1), lookahead or lookbehind ((?=…) (?!…) (?<=…)), possessive or atomic groups, \\Z or \\uNNNN (write \\x{NNNN}); repeat counts at most {1000}';

/** A step as the file writes it ('' = absent): `send` and `expect` with escapes, or `expect_regex`. */
export interface StepText {
  readonly send: string;
  readonly expect: string;
  readonly expectRegex: string;
}

/**
 * The bytes a `send` or `expect` text stands for: `\r \n \t \\` and `\xNN` (one byte, two hex
 * digits) are escapes, every other character is its UTF-8. A string with what is wrong otherwise.
 * (A TOML basic string "…\r\n" has already turned its own escapes into characters; a literal
 * string '…\r\n' or '\x00' leaves them for this.)
 */
export function unescape(text: string): Buffer | string {
  const parts: Buffer[] = [];
  let plain = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '\\') {
      plain += c;
      continue;
    }
    const e = text[i + 1];
    const simple = e === 'r' ? '\r' : e === 'n' ? '\n' : e === 't' ? '\t' : e === '\\' ? '\\' : null;
    if (simple !== null) {
      plain += simple;
      i++;
    } else if (e === 'x' && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 2, i + 4))) {
      parts.push(Buffer.from(plain, 'utf8'), Buffer.from([parseInt(text.slice(i + 2, i + 4), 16)]));
      plain = '';
      i += 3;
    } else {
      const at = text.slice(i, i + 4);
      return e === 'x' ? `"${at}" at character ${i + 1}: \\x takes two hex digits (\\x0d)` : `unknown escape "\\${e ?? ''}" at character ${i + 1}: use \\r \\n \\t \\\\ or \\xNN`;
    }
  }
  parts.push(Buffer.from(plain, 'utf8'));
  return Buffer.concat(parts);
}

/** The compiled `expect_regex` (RE2 syntax), or what is wrong with it. */
export function compileRegex(source: string): RE2JS | string {
  let re: RE2JS;
  try {
    re = RE2JS.compile(source);
  } catch (e) {
    return `not a valid regular expression (RE2 syntax): ${printableText((e as Error).message)} (${RE2_DIFFERENCES})`;
  }
  const size = re.programSize();
  if (size > MAX_REGEX_PROGRAM) return `regular expression too large: ${size} instructions, at most ${MAX_REGEX_PROGRAM} (large repeat counts such as {500} make big programs)`;
  return re;
}

/**
 * Bytes as a quoted text safe to print, in the escapes `send` and `expect` take: printable ASCII
 * as is, `\r \n \t \\`, every other byte (and `"`) as `\xNN`. At most `max` bytes are shown.
 */
export function printable(bytes: Uint8Array, max = 60): string {
  let out = '"';
  const n = Math.min(bytes.length, max);
  for (let i = 0; i < n; i++) {
    const b = bytes[i]!;
    if (b === 0x5c) out += '\\\\';
    else if (b === 0x0d) out += '\\r';
    else if (b === 0x0a) out += '\\n';
    else if (b === 0x09) out += '\\t';
    else if (b >= 0x20 && b < 0x7f && b !== 0x22) out += String.fromCharCode(b);
    else out += `\\x${b < 16 ? '0' : ''}${b.toString(16)}`;
  }
  return `${out}"${bytes.length > max ? `… ${bytes.length} bytes` : ''}`;
}

/** Text with its control characters (C0, DEL, C1) as `\xNN`, the rest as is: safe to print. */
export function printableText(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0) < 16 ? '0' : ''}${c.charCodeAt(0).toString(16)}`);
}

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
