// The text of send_expect checks, as the file writes it: the escapes of `send` and `expect`,
// `expect_regex` compiled with RE2, the limits on both, and how bytes and text are printed back
// safely. Validation reads them here, and health/send-expect.ts runs the conversation from the
// same parsers, so a file that loads compiles there. RE2 (re2js, pure JS) matches in time linear
// in the reply's length whatever the pattern: a pattern cannot stall the process on a hostile reply.

import { RE2JS } from 're2js';

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
