// The text of send_expect checks, as the file writes it: the escapes of `send` and `expect`,
// `expect_regex` compiled with RE2, the limits on both, and how bytes and text are printed back
// safely. Validation reads them here, and health/send-expect.ts runs the conversation from the
// same parsers, so a file that loads compiles there. RE2 (re2js, pure JS) matches in time linear
// in the reply's length whatever the pattern: a pattern cannot stall the process on a hostile reply.

import { RE2JS } from 're2js';
import { describe, didYouMean, isTable, type Raw } from './suggest';

/** Steps one check may have. */
export const MAX_STEPS = 16;
/** Instructions of a compiled `expect_regex`: matching costs this times the reply's length. */
export const MAX_REGEX_PROGRAM = 500;

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

// ---------------------------------------------------------------------------------------------
// The send_expect keys checked: `send`, `expect` and `expect_regex` alone or as `steps`.

/** A `send`/`expect` (bytes) or `expect_regex` (regex) value: the text as written, or what is wrong. */
export function checkText(kind: 'bytes' | 'regex', v: unknown): string | { error: string } {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v !== 'string') return { error: `expected a string, got ${describe(v)}` };
  const r = kind === 'bytes' ? unescape(v) : compileRegex(v);
  return typeof r === 'string' ? { error: r } : v;
}

const STEP_KEYS = ['send', 'expect', 'expect_regex'];

/** A `steps` array: each a table of `send`, `expect` or `expect_regex`, each value checked as its [health] key is. */
export function checkSteps(v: unknown): StepText[] | { error: string } {
  const err = (error: string): { error: string } => ({ error });
  if (!Array.isArray(v)) return err(`expected an array of tables like [{ send = "PING\\r\\n", expect = "+PONG" }], got ${describe(v)}`);
  if (v.length > MAX_STEPS) return err(`at most ${MAX_STEPS} steps, got ${v.length}`);
  const out: StepText[] = [];
  for (const [i, t] of v.entries()) {
    const at = `step ${i + 1}`;
    if (!isTable(t)) return err(`${at}: expected a table { send = "…", expect = "…" }, got ${describe(t)}`);
    for (const k of Object.keys(t)) if (!STEP_KEYS.includes(k)) return err(`${at}: unknown key "${k}"${didYouMean(k, STEP_KEYS)} (a step has send, expect, expect_regex)`);
    const text: Record<string, string> = {};
    for (const k of STEP_KEYS) {
      const r = t[k] === undefined ? '' : checkText(k === 'expect_regex' ? 'regex' : 'bytes', t[k]);
      if (typeof r === 'object' && r !== null && 'error' in r) return err(`${at}: ${k}: ${(r as { error: string }).error}`);
      text[k] = r as string;
    }
    const step = { send: text['send']!, expect: text['expect']!, expectRegex: text['expect_regex']! };
    const problem = stepProblem(step);
    if (problem !== null) return err(`${at}: ${problem}`);
    out.push(step);
  }
  if (out.length > 0 && out.every((x) => x.expect === '' && x.expectRegex === '')) return err('no step has expect or expect_regex: the check would pass on any connection');
  return out;
}

/** What a step (or the one step of `send`/`expect`/`expect_regex`) cannot be, or null. */
function stepProblem(s: StepText): string | null {
  if (s.expect !== '' && s.expectRegex !== '') return 'give expect or expect_regex, not both';
  if (s.send === '' && s.expect === '' && s.expectRegex === '') return 'needs send, expect or expect_regex';
  return null;
}

const SEND_EXPECT_KEYS = ['send', 'expect', 'expect_regex', 'steps'] as const;

/**
 * What the [health] rows cannot say alone, checked on a table's values with what it inherits:
 * kind = "send_expect" needs its keys (one step, or `steps`, not both), and those keys are
 * refused where they are written without it.
 */
export function checkHealth(table: Raw, values: Record<string, unknown>, prefix: string, report: (path: string, message: string) => void): void {
  const written = SEND_EXPECT_KEYS.filter((k) => table[k] !== undefined);
  if (values['kind'] !== 'send_expect') {
    for (const k of written) report(`${prefix}${k}`, `only used by kind = "send_expect" (kind is "${String(values['kind'])}")`);
    return;
  }
  // an inherited value was checked where it was written
  if (table['kind'] === undefined && written.length === 0) return;
  const steps = values['steps'] as readonly StepText[] | undefined;
  const one = { send: values['send'] as string, expect: values['expect'] as string, expectRegex: values['expect_regex'] as string };
  if (steps === undefined || one.send === undefined || one.expect === undefined || one.expectRegex === undefined) return; // reported already
  if (steps.length > 0) {
    const both = (['send', 'expect', 'expect_regex'] as const).filter((k) => values[k] !== '');
    if (both.length > 0) report(`${prefix}${both[0]}`, 'give steps, or send/expect/expect_regex, not both');
    return;
  }
  const at = `${prefix}${table['kind'] !== undefined || written.length === 0 ? 'kind' : written[0]}`;
  if (one.expect === '' && one.expectRegex === '') report(at, 'kind = "send_expect" needs expect or expect_regex (after send), or steps');
  else if (one.expect !== '' && one.expectRegex !== '') report(at, 'give expect or expect_regex, not both');
}
