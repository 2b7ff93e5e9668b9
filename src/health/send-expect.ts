// send_expect health checks (SPEC §11): the escapes of `send` and `expect`, the steps of a check
// as bytes and matchers, and the conversation they make, bytes in and bytes out. Pure: the socket
// is health/checker.ts's. Validation (config/schema.ts) uses the same parsers, so a file that
// loads compiles here.

/** Bytes of one reply kept while waiting for its match: past this the step fails. */
export const MAX_REPLY_BYTES = 64 * 1024;
/** Steps one check may have. */
export const MAX_STEPS = 16;

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

/** The regular expression of an `expect_regex`, or what is wrong with it. */
export function compileRegex(source: string): RegExp | string {
  try {
    return new RegExp(source);
  } catch (e) {
    return `not a valid regular expression: ${(e as Error).message}`;
  }
}

/** One step ready to run: bytes to send (or none), then what the reply must hold (or no wait). */
export interface Step {
  readonly send: Buffer | null;
  readonly expect: Buffer | RegExp | null;
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
      shown: regex !== null ? `expect_regex ${JSON.stringify(t.expectRegex)}` : `expect ${JSON.stringify(t.expect)}`,
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
}

/**
 * One check's exchange: each step sends its bytes, then reads until its reply matches, at most
 * MAX_REPLY_BYTES. The reply of a step is what arrives after its send (a step without `send`
 * reads from what is already there: a greeting). The caller bounds the whole in time.
 */
export class Conversation {
  private i = 0;
  private sent = false;
  private buf: Buffer = Buffer.alloc(0);
  private finished = false;

  constructor(private readonly steps: readonly Step[]) {}

  /** The first bytes to write once connected. */
  start(): Turn {
    return this.advance();
  }

  /** Bytes from the backend. */
  receive(chunk: Buffer): Turn {
    if (this.finished) return { write: null, done: null };
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.matches()) {
      this.i++;
      this.sent = false;
      this.buf = Buffer.alloc(0);
      return this.advance();
    }
    if (this.buf.length >= MAX_REPLY_BYTES) return this.fail(`no match in the first ${MAX_REPLY_BYTES} bytes of the reply`);
    return { write: null, done: null };
  }

  /** The backend closed its side. */
  ended(): Turn {
    if (this.finished) return { write: null, done: null };
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
          this.buf = Buffer.alloc(0);
        }
      }
      if (step.expect !== null && !this.matches()) break;
      this.i++;
      this.sent = false;
      if (step.expect !== null) this.buf = Buffer.alloc(0);
    }
    const write = out.length === 0 ? null : out.length === 1 ? out[0]! : Buffer.concat(out);
    if (this.i < this.steps.length) return { write, done: null };
    this.finished = true;
    return { write, done: { error: null } };
  }

  private matches(): boolean {
    const e = this.steps[this.i]!.expect;
    if (e === null) return true;
    if (this.buf.length === 0) return false;
    return Buffer.isBuffer(e) ? this.buf.includes(e) : e.test(this.buf.toString('utf8'));
  }

  private fail(why: string): Turn {
    const msg = `step ${this.i + 1} (${this.steps[this.i]!.shown}): ${why}${this.got()}`;
    this.finished = true;
    return { write: null, done: { error: msg } };
  }

  /** The start of what the step's reply holds so far, for messages. */
  private got(): string {
    if (this.buf.length === 0) return ' (nothing received)';
    const head = this.buf.subarray(0, 60).toString('latin1');
    return ` (got ${JSON.stringify(head)}${this.buf.length > 60 ? `… ${this.buf.length} bytes` : ''})`;
  }
}
