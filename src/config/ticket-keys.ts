// [tls_tickets] key_file: the session ticket key shared by the balancers that read the same file,
// checked at load (start, --validate, every reload) so that a bad file fails the whole load and the
// runtime is handed a key already checked. Two forms: HAProxy's `tls-ticket-keys` (base64 keys,
// one a line) and nginx's `ssl_session_ticket_key` (the raw bytes). Pure: the reading is
// ./load.ts's. The key is a secret: no message here quotes the file's contents, only its path.

import type { ConfigIssue } from '../errors';
import type { Config } from './settings';

/** node:tls takes one 48-byte ticket key per secure context (name, HMAC and AES keys of 16 bytes each). */
export const TICKET_KEY_BYTES = 48;
/** A larger file is not a key file. */
const MAX_KEY_FILE_BYTES = 64 * 1024;
const AT = 'tls_tickets.key_file';
const BASE64_LINE = /^[A-Za-z0-9+/]+={0,2}$/;

/** A file's bytes, or a thrown error with its `code` (ENOENT…). */
export type ReadFile = (path: string) => Buffer;

/** Read and check the key file; null when none is named. Problems go to `issues`. */
export function readTicketKey(config: Config, issues: ConfigIssue[], read: ReadFile): Buffer | null {
  const path = config.tls_tickets.keyFile;
  if (path === '') return null;
  let bytes: Buffer;
  try {
    bytes = read(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    issues.push({ path: AT, message: `${path}: ${code === 'ENOENT' ? 'no such file' : `cannot be read (${code ?? 'error'})`}` });
    return null;
  }
  const r = parseTicketKeys(bytes);
  if (typeof r === 'string') {
    issues.push({ path: AT, message: `${path}: ${r}` });
    return null;
  }
  return r;
}

/**
 * The key in use from a key file's bytes, or what is wrong with them (never quoting them). 48 bytes
 * that are not text are one raw key (nginx); anything else is read as lines of base64 (HAProxy),
 * blank lines and `#` comments skipped, each a 48-byte key; of several, the next-to-last is the one
 * HAProxy encrypts with (the last is the next key, appended ahead of a rotation), so it is used.
 */
export function parseTicketKeys(bytes: Buffer): Buffer | string {
  if (bytes.length > MAX_KEY_FILE_BYTES) return `${bytes.length} bytes is too large for a ticket key file`;
  if (bytes.length === TICKET_KEY_BYTES && !isText(bytes)) return Buffer.from(bytes);
  if (bytes.length === 80 && !isText(bytes)) return `80 raw bytes (an AES-256 key) are not supported: a ticket key is ${TICKET_KEY_BYTES} bytes`;
  const keys: Buffer[] = [];
  const lines = bytes.toString('latin1').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (!BASE64_LINE.test(line) || line.length % 4 !== 0) return `line ${i + 1} is not a base64 key (expected ${TICKET_KEY_BYTES} bytes in base64 a line, as \`openssl rand -base64 ${TICKET_KEY_BYTES}\` writes, or ${TICKET_KEY_BYTES} raw bytes)`;
    const key = Buffer.from(line, 'base64');
    if (key.length !== TICKET_KEY_BYTES) {
      const more = key.length === 80 ? ' (80-byte AES-256 keys are not supported: node:tls takes 48)' : '';
      return `line ${i + 1} decodes to ${key.length} bytes; a ticket key is ${TICKET_KEY_BYTES} bytes${more}`;
    }
    keys.push(key);
  }
  if (keys.length === 0) return `no key (expected ${TICKET_KEY_BYTES} bytes in base64 a line, or ${TICKET_KEY_BYTES} raw bytes)`;
  return keys.length === 1 ? keys[0]! : keys[keys.length - 2]!;
}

/** Printable ASCII and whitespace only: 48 random bytes are that with a chance of about 1e-20. */
function isText(bytes: Buffer): boolean {
  for (const b of bytes) if (!((b >= 0x20 && b < 0x7f) || b === 0x09 || b === 0x0a || b === 0x0d)) return false;
  return true;
}
