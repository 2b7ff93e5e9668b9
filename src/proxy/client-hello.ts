// Reads the server name (and ALPN) from the first bytes of a TLS connection without terminating
// it: the ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) with its server_name extension
// (RFC 6066 §3) and application_layer_protocol_negotiation (RFC 7301). Pure and bounded: it looks
// at the bytes received so far and says whether more are needed. A hello in one record (the usual
// case) is parsed in place; one split over several records is joined in a reused scratch buffer.
// The answer for some bytes is the answer for any longer bytes they begin: what follows a whole
// ClientHello (early data, another record) changes nothing.

import { MAX_SERVER_NAME } from '../core/sni-routes';

/** The most bytes a client may send before its ClientHello is whole (the listener's bound too). */
export const MAX_HELLO_BYTES = 16 * 1024;

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
/** TLSPlaintext.length may not exceed 2^14 */
const MAX_RECORD = 16384;

export type HelloResult =
  /** the bytes so far are a ClientHello's beginning */
  | { readonly kind: 'need-more' }
  /** not a TLS handshake record (another protocol, or an SSLv2-style hello) */
  | { readonly kind: 'not-tls' }
  /** TLS records, but not a ClientHello that parses */
  | { readonly kind: 'malformed'; readonly reason: string }
  /** the ClientHello would not fit in MAX_HELLO_BYTES */
  | { readonly kind: 'too-large' }
  /** a whole ClientHello: its server name lower-cased without a trailing dot (null when it has none, or one over 255 bytes) */
  | { readonly kind: 'hello'; readonly serverName: string | null; readonly alpn: readonly string[] };

const NEED_MORE: HelloResult = Object.freeze({ kind: 'need-more' });
const NOT_TLS: HelloResult = Object.freeze({ kind: 'not-tls' });
const TOO_LARGE: HelloResult = Object.freeze({ kind: 'too-large' });
const NO_ALPN: readonly string[] = Object.freeze([]);

const malformed = (reason: string): HelloResult => ({ kind: 'malformed', reason });

/** where a handshake split over several records is joined (one per process: the reader is synchronous) */
const scratch = new Uint8Array(MAX_HELLO_BYTES);

/**
 * How far the records of one connection's bytes were walked, kept by the caller between reads
 * (both 0 at first) so that each read walks only the records that are new: bytes that come a
 * record of one byte at a time cost time in proportion to their length, not its square.
 */
export interface HelloCursor {
  /** offset of the first record not walked whole yet */
  walked: number;
  /** handshake bytes in the records before it */
  counted: number;
}

/**
 * What the first `len` bytes of `buf` say. Call again with more bytes after 'need-more' (the
 * bytes read so far unchanged in front, and the same cursor, if any); the caller bounds what it
 * collects at MAX_HELLO_BYTES (then a 'need-more' means too large).
 */
export function readClientHello(buf: Uint8Array, len: number = buf.length, cursor: HelloCursor | null = null): HelloResult {
  if (len === 0) return NEED_MORE;
  // TLS starts with a handshake record; an SSLv2-style hello starts with a length with its top bit set
  if (buf[0] !== RECORD_HANDSHAKE) return NOT_TLS;
  if (len < 2) return NEED_MORE;
  if (buf[1] !== 3) return NOT_TLS;
  if (len < 5) return NEED_MORE;
  const first = (buf[3]! << 8) | buf[4]!;
  if (first === 0 || first > MAX_RECORD) return malformed(`record length ${first}`);
  // the usual case: the handshake header, and then the whole handshake, in the first record
  if (first >= 4) {
    if (len < 9) return NEED_MORE;
    if (buf[5] !== HANDSHAKE_CLIENT_HELLO) return malformed(`handshake type ${buf[5]} is not a ClientHello`);
    const total = 4 + ((buf[6]! << 16) | (buf[7]! << 8) | buf[8]!);
    if (total > MAX_HELLO_BYTES) return TOO_LARGE;
    if (first >= total) return len - 5 >= total ? parseHello(buf, 9, 5 + total) : NEED_MORE;
  }
  // a handshake split over records: count what the records hold (headers only), join when whole;
  // a record that cannot be part of it is wrong only if it comes before the ClientHello is whole
  const have = handshakeBytes(buf, len, cursor);
  if (have < 4) return stopped !== null ? malformed(stopped) : NEED_MORE;
  join(buf, 4);
  if (scratch[0] !== HANDSHAKE_CLIENT_HELLO) return malformed(`handshake type ${scratch[0]} is not a ClientHello`);
  const total = 4 + ((scratch[1]! << 16) | (scratch[2]! << 8) | scratch[3]!);
  if (total > MAX_HELLO_BYTES) return TOO_LARGE;
  if (have < total) return stopped !== null ? malformed(stopped) : NEED_MORE;
  join(buf, total);
  return parseHello(scratch, 4, total);
}

/** why handshakeBytes() stopped before the end of the bytes (null: it did not) */
let stopped: string | null = null;

/**
 * Handshake bytes held by the handshake records at the start of buf[0, len) (the last one may be
 * partial); a record that is not one, or of an impossible length, stops the count (`stopped`).
 */
function handshakeBytes(buf: Uint8Array, len: number, cur: HelloCursor | null): number {
  stopped = null;
  let o = cur !== null ? cur.walked : 0;
  let have = cur !== null ? cur.counted : 0;
  while (o + 5 <= len && have < MAX_HELLO_BYTES) {
    if (buf[o] !== RECORD_HANDSHAKE) {
      stopped = 'a record of another type inside the ClientHello';
      return have;
    }
    const n = (buf[o + 3]! << 8) | buf[o + 4]!;
    if (n === 0 || n > MAX_RECORD) {
      stopped = `record length ${n}`;
      return have;
    }
    if (o + 5 + n > len) return have + (len - o - 5);
    have += n;
    o += 5 + n;
    if (cur !== null) {
      cur.walked = o;
      cur.counted = have;
    }
  }
  return have;
}

/** Copy the first `want` handshake bytes (known to be there) out of their records into scratch. */
function join(buf: Uint8Array, want: number): void {
  for (let at = 0, o = 0; at < want; ) {
    const n = (buf[o + 3]! << 8) | buf[o + 4]!;
    const take = Math.min(n, want - at);
    scratch.set(buf.subarray(o + 5, o + 5 + take), at);
    at += take;
    o += 5 + n;
  }
}

/** The ClientHello body in b[off, end): version, random, session id, suites, compression, extensions. */
function parseHello(b: Uint8Array, off: number, end: number): HelloResult {
  let o = off + 2 + 32; // legacy_version, random
  if (o + 1 > end) return malformed('truncated before the session id');
  o += 1 + b[o]!; // legacy_session_id
  if (o + 2 > end) return malformed('truncated before the cipher suites');
  const suites = (b[o]! << 8) | b[o + 1]!;
  if (suites < 2 || (suites & 1) !== 0) return malformed(`cipher suites length ${suites}`);
  o += 2 + suites;
  if (o + 1 > end) return malformed('truncated before the compression methods');
  o += 1 + b[o]!;
  if (o > end) return malformed('truncated in the compression methods');
  if (o === end) return { kind: 'hello', serverName: null, alpn: NO_ALPN }; // no extensions at all
  if (o + 2 > end) return malformed('truncated extensions length');
  const extEnd = o + 2 + ((b[o]! << 8) | b[o + 1]!);
  if (extEnd > end) return malformed('extensions longer than the ClientHello');
  o += 2;
  let serverName: string | null = null;
  let alpn = NO_ALPN;
  while (o < extEnd) {
    if (o + 4 > extEnd) return malformed('truncated extension header');
    const type = (b[o]! << 8) | b[o + 1]!;
    const n = (b[o + 2]! << 8) | b[o + 3]!;
    o += 4;
    if (o + n > extEnd) return malformed(`extension ${type} longer than the extensions`);
    if (type === EXT_SERVER_NAME) {
      const name = readServerName(b, o, o + n);
      if (name === undefined) return malformed('server_name extension does not parse');
      serverName = name;
    } else if (type === EXT_ALPN) {
      const list = readAlpn(b, o, o + n);
      if (list === undefined) return malformed('ALPN extension does not parse');
      alpn = list;
    }
    o += n;
  }
  return { kind: 'hello', serverName, alpn };
}

/** The host_name entry of a server_name extension (null when it has none); undefined: malformed. */
function readServerName(b: Uint8Array, o: number, end: number): string | null | undefined {
  if (o + 2 > end) return undefined;
  const listEnd = o + 2 + ((b[o]! << 8) | b[o + 1]!);
  if (listEnd > end) return undefined;
  o += 2;
  while (o + 3 <= listEnd) {
    const type = b[o]!;
    const n = (b[o + 1]! << 8) | b[o + 2]!;
    o += 3;
    if (o + n > listEnd) return undefined;
    if (type === 0) return hostName(b, o, o + n);
    o += n;
  }
  return o === listEnd ? null : undefined;
}

/**
 * A host name's bytes as a lower-case string without a trailing dot; undefined unless printable
 * ASCII; null (no name) when longer than a DNS name can be, whatever its bytes.
 */
function hostName(b: Uint8Array, o: number, end: number): string | null | undefined {
  if (end - o > MAX_SERVER_NAME) return null;
  if (end > o && b[end - 1] === 0x2e) end--;
  if (end === o) return undefined;
  let s = '';
  for (let i = o; i < end; i++) {
    let c = b[i]!;
    if (c <= 0x20 || c >= 0x7f) return undefined;
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    s += String.fromCharCode(c);
  }
  return s;
}

function readAlpn(b: Uint8Array, o: number, end: number): string[] | undefined {
  if (o + 2 > end) return undefined;
  const listEnd = o + 2 + ((b[o]! << 8) | b[o + 1]!);
  if (listEnd !== end) return undefined;
  o += 2;
  const out: string[] = [];
  while (o < listEnd) {
    const n = b[o]!;
    if (n === 0 || o + 1 + n > listEnd) return undefined;
    let s = '';
    for (let i = o + 1; i <= o + n; i++) s += String.fromCharCode(b[i]!);
    out.push(s);
    o += 1 + n;
  }
  return out;
}
