// PROXY protocol header (HAProxy's proxy-protocol.txt), version 1 (text) and 2 (binary), sent
// to the backend before the client's bytes (and first on each health check's own connection).
// IPv4-mapped IPv6 addresses are sent as IPv4. A v2 header may carry TLVs after the addresses:
// a service that terminates TLS sends what its handshake learned (tlsTlvs below).

import { parseIp, v6Text } from '../config/address';

/** The addresses of a connection as a net.Socket shows them (any object with these fields will do). */
export interface SocketAddresses {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

export interface ProxyEndpoints {
  readonly srcAddress: string;
  readonly srcPort: number;
  readonly dstAddress: string;
  readonly dstPort: number;
}

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** LOCAL command, UNSPEC family, no addresses: the receiver keeps the connection's own addresses */
const V2_LOCAL = Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);

function v4Text(bytes: Uint8Array): string {
  return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
}


/**
 * Encode the header; an endpoint that is not an IP address gives the protocol's UNKNOWN/LOCAL form.
 * `tlvs`: bytes appended to a v2 header (its length counts them); v1 has none.
 */
export function encodeProxyHeader(version: 'v1' | 'v2', e: ProxyEndpoints, tlvs: Buffer | null = null): Buffer {
  const src = parseIp(e.srcAddress);
  const dst = parseIp(e.dstAddress);
  const known = src !== null && dst !== null && src.v4 === dst.v4;
  if (version === 'v1') {
    if (!known) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    const fam = src.v4 ? 'TCP4' : 'TCP6';
    const text = src.v4 ? [v4Text(src.bytes), v4Text(dst.bytes)] : [v6Text(src.bytes), v6Text(dst.bytes)];
    return Buffer.from(`PROXY ${fam} ${text[0]} ${text[1]} ${e.srcPort} ${e.dstPort}\r\n`, 'latin1');
  }
  const extra = tlvs === null ? 0 : tlvs.length;
  if (!known) return extra === 0 ? V2_LOCAL : withTlvs(V2_LOCAL, tlvs!);
  const addrLen = src.v4 ? 12 : 36;
  const out = Buffer.alloc(16 + addrLen + extra);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x21; // version 2, PROXY
  out[13] = src.v4 ? 0x11 : 0x21; // AF_INET/AF_INET6, STREAM
  out.writeUInt16BE(addrLen + extra, 14);
  if (extra > 0) out.set(tlvs!, 16 + addrLen);
  if (src.v4) {
    out.set(src.bytes.subarray(12), 16);
    out.set(dst.bytes.subarray(12), 20);
    out.writeUInt16BE(e.srcPort, 24);
    out.writeUInt16BE(e.dstPort, 26);
  } else {
    out.set(src.bytes, 16);
    out.set(dst.bytes, 32);
    out.writeUInt16BE(e.srcPort, 48);
    out.writeUInt16BE(e.dstPort, 50);
  }
  return out;
}

/** A v2 header (addresses or none) with `tlvs` appended, its length field counting them. */
function withTlvs(header: Buffer, tlvs: Buffer): Buffer {
  const out = Buffer.concat([header, tlvs]);
  out.writeUInt16BE(out.length - 16, 14);
  return out;
}

// The TLV types of proxy-protocol.txt section 2.2 this header sends
const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
/** PP2_TYPE_SSL's client bits: over TLS; a certificate sent on this connection; one in its TLS session */
export const PP2_CLIENT_SSL = 0x01;
export const PP2_CLIENT_CERT_CONN = 0x02;
export const PP2_CLIENT_CERT_SESS = 0x04;

/** What the handshake of a terminating service learned, as the v2 header's TLVs carry it. */
export interface ProxyTls {
  /** the ALPN protocol agreed, or null */
  readonly alpn: string | null;
  /** the server name the client sent, or null */
  readonly authority: string | null;
  /** "TLSv1.3" */
  readonly version: string | null;
  /** PP2_CLIENT_* bits */
  readonly client: number;
  /** 0: the client's certificate was verified; else why not (an OpenSSL X509_V_ERR code, 1 without a certificate) */
  readonly verify: number;
  /** the client certificate's common name, or null */
  readonly cn: string | null;
}

/**
 * The TLVs of a connection the balancer terminated, as HAProxy's send-proxy-v2-ssl-cn writes them:
 * PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY (the server name, which HAProxy leaves out), then PP2_TYPE_SSL
 * (client bits, verify, and the sub-TLVs SSL_VERSION and SSL_CN). Strings go as UTF-8.
 */
export function tlsTlvs(t: ProxyTls): Buffer {
  const alpn = t.alpn !== null ? Buffer.from(t.alpn, 'latin1') : null;
  const authority = t.authority !== null ? Buffer.from(t.authority, 'utf8') : null;
  const version = t.version !== null ? Buffer.from(t.version, 'latin1') : null;
  // X.509 bounds a common name at 64 characters: a longer one is not sent (the header's length is 16 bits)
  const cn = t.cn !== null && t.cn.length <= 64 ? Buffer.from(t.cn, 'utf8') : null;
  const sslLen = 5 + tlvSize(version) + tlvSize(cn);
  const out = Buffer.alloc(tlvSize(alpn) + tlvSize(authority) + 3 + sslLen);
  let at = putTlv(out, 0, PP2_TYPE_ALPN, alpn);
  at = putTlv(out, at, PP2_TYPE_AUTHORITY, authority);
  out[at] = PP2_TYPE_SSL;
  out.writeUInt16BE(sslLen, at + 1);
  out[at + 3] = t.client;
  out.writeUInt32BE(t.verify >>> 0, at + 4);
  at = putTlv(out, at + 8, PP2_SUBTYPE_SSL_VERSION, version);
  putTlv(out, at, PP2_SUBTYPE_SSL_CN, cn);
  return out;
}

/** a TLV's size: type, length and value (none for a null value) */
function tlvSize(v: Buffer | null): number {
  return v === null ? 0 : 3 + v.length;
}

/** write one TLV at `at` (nothing for a null value); where the next one goes */
function putTlv(out: Buffer, at: number, type: number, v: Buffer | null): number {
  if (v === null) return at;
  out[at] = type;
  out.writeUInt16BE(v.length, at + 1);
  out.set(v, at + 3);
  return at + 3 + v.length;
}

export function proxyHeader(version: 'v1' | 'v2', client: SocketAddresses): Buffer {
  return encodeProxyHeader(version, {
    srcAddress: client.remoteAddress ?? '',
    srcPort: client.remotePort ?? 0,
    dstAddress: client.localAddress ?? '',
    dstPort: client.localPort ?? 0,
  });
}

/**
 * The header a health check sends first on its own connection (HAProxy's check-send-proxy).
 * v2: the LOCAL command, meant for the proxy's own connections. v1 has no such command, and the
 * spec advises against UNKNOWN on a connection that is meant to be accepted, so the line carries
 * the check connection's real addresses, the balancer as the source, as HAProxy's checks do.
 */
export function checkProxyHeader(version: 'v1' | 'v2', conn: SocketAddresses): Buffer {
  if (version === 'v2') return V2_LOCAL;
  return encodeProxyHeader('v1', {
    srcAddress: conn.localAddress ?? '',
    srcPort: conn.localPort ?? 0,
    dstAddress: conn.remoteAddress ?? '',
    dstPort: conn.remotePort ?? 0,
  });
}

// ---------------------------------------------------------------------------------------------
// Reading a header a balancer in front sent (accept_proxy). Pure and bounded: nothing past
// MAX_V1_HEADER (v1) or MAX_V2_HEADER (v2) is ever looked at, and no input throws.

/** v1: the longest line the spec allows, CRLF included. */
export const MAX_V1_HEADER = 107;
/** v2: the addresses and TLVs a header may carry here (its 16-bit length could say 65535). */
export const MAX_V2_BODY = 4096;
export const MAX_V2_HEADER = 16 + MAX_V2_BODY;

export type AcceptProxy = 'v1' | 'v2' | 'any';

/** A whole header: `length` bytes to skip; `client` null for LOCAL / UNKNOWN / UNSPEC (keep the connection's own addresses). */
export interface ProxyHeaderRead {
  readonly kind: 'header';
  readonly version: 1 | 2;
  readonly length: number;
  readonly client: ProxyEndpoints | null;
}
export type ProxyHeaderResult = ProxyHeaderRead | { readonly kind: 'need-more' } | { readonly kind: 'invalid'; readonly reason: string };

const NEED_MORE: ProxyHeaderResult = Object.freeze({ kind: 'need-more' });
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

const invalid = (reason: string): ProxyHeaderResult => ({ kind: 'invalid', reason });

/** Do the first `len` bytes of `b` start like `prefix` (as far as both go)? */
function startsLike(b: Uint8Array, len: number, prefix: Uint8Array): boolean {
  const n = Math.min(len, prefix.length);
  for (let i = 0; i < n; i++) if (b[i] !== prefix[i]) return false;
  return true;
}

/**
 * Read a PROXY header from the first `len` bytes of `b` (the bytes past `len` are not looked at),
 * of the version(s) `accept` allows: a whole header, need-more (what came so far may still
 * become one), or invalid (it cannot: the connection is refused).
 */
export function parseProxyHeader(b: Uint8Array, len: number, accept: AcceptProxy): ProxyHeaderResult {
  len = Math.max(0, Math.min(len, b.length));
  if (len === 0) return NEED_MORE;
  if (b[0] === 0x0d && accept !== 'v1') return parseV2(b, len);
  if (b[0] === 0x50 && accept !== 'v2') return parseV1(b, len);
  return invalid(accept === 'v1' ? 'not a PROXY v1 header' : accept === 'v2' ? 'not a PROXY v2 header' : 'not a PROXY header');
}

function parseV1(b: Uint8Array, len: number): ProxyHeaderResult {
  if (!startsLike(b, len, V1_PREFIX)) return invalid('not a PROXY v1 header');
  const n = Math.min(len, MAX_V1_HEADER);
  let end = -1;
  for (let i = V1_PREFIX.length; i < n; i++) {
    const c = b[i]!;
    if (c === 0x0d) {
      if (i + 1 >= n) break;
      if (b[i + 1] !== 0x0a) return invalid('v1: CR not followed by LF');
      end = i;
      break;
    }
    if (c < 0x20 || c > 0x7e) return invalid('v1: a byte that is not printable ASCII');
  }
  if (end < 0) return len >= MAX_V1_HEADER ? invalid(`v1: no CRLF within ${MAX_V1_HEADER} bytes`) : NEED_MORE;
  const line = Buffer.from(b.buffer, b.byteOffset, end).toString('latin1');
  const parts = line.split(' ');
  const length = end + 2;
  if (parts[1] === 'UNKNOWN') return { kind: 'header', version: 1, length, client: null };
  if (parts.length !== 6) return invalid('v1: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT');
  const fam = parts[1];
  if (fam !== 'TCP4' && fam !== 'TCP6') return invalid(`v1: unknown protocol ${JSON.stringify(fam!.slice(0, 8))}`);
  const src = v1Address(parts[2]!, fam === 'TCP4');
  const dst = v1Address(parts[3]!, fam === 'TCP4');
  const sport = v1Port(parts[4]!);
  const dport = v1Port(parts[5]!);
  if (src === null || dst === null) return invalid(`v1: not ${fam === 'TCP4' ? 'IPv4' : 'IPv6'} addresses`);
  if (sport < 0 || dport < 0) return invalid('v1: a port that is not 0-65535');
  return { kind: 'header', version: 1, length, client: { srcAddress: src, srcPort: sport, dstAddress: dst, dstPort: dport } };
}

/** An address of a v1 line in its family, as text the rest of the balancer reads; null: not one. */
function v1Address(s: string, v4: boolean): string | null {
  if (s.length === 0 || s.length > 39 || s.includes('%')) return null;
  if (v4 !== !s.includes(':')) return null;
  const ip = parseIp(s);
  if (ip === null) return null;
  return v4 ? v4Text(ip.bytes) : ipText(ip.bytes);
}

/** 16 bytes as text: an IPv4-mapped address as IPv4, as a dual-stack socket shows it. */
function ipText(bytes: Uint8Array): string {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return v6Text(bytes);
  return bytes[10] === 0xff && bytes[11] === 0xff ? v4Text(bytes) : v6Text(bytes);
}

/** A decimal port without a sign or leading zeros, or -1. */
function v1Port(s: string): number {
  if (s.length === 0 || s.length > 5 || (s.length > 1 && s.charCodeAt(0) === 0x30)) return -1;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n <= 65535 ? n : -1;
}

function parseV2(b: Uint8Array, len: number): ProxyHeaderResult {
  if (!startsLike(b, len, V2_SIGNATURE)) return invalid('not a PROXY v2 header');
  if (len < 16) return NEED_MORE;
  const vc = b[12]!;
  if (vc >> 4 !== 2) return invalid(`v2: version ${vc >> 4}`);
  const command = vc & 0x0f;
  if (command > 1) return invalid(`v2: unknown command ${command}`);
  const body = (b[14]! << 8) | b[15]!;
  if (body > MAX_V2_BODY) return invalid(`v2: ${body} bytes of addresses and TLVs, more than ${MAX_V2_BODY}`);
  const length = 16 + body;
  if (len < length) return NEED_MORE;
  const famProto = b[13]!;
  const family = famProto >> 4;
  const proto = famProto & 0x0f;
  if (family > 3 || proto > 2) return invalid(`v2: unknown address family or protocol 0x${famProto.toString(16)}`);
  // LOCAL: the balancer's own connection (a health check); UNSPEC, UNIX or datagram: no client address here
  if (command === 0 || proto !== 1 || family === 0 || family === 3) return { kind: 'header', version: 2, length, client: null };
  const v4 = family === 1;
  if (body < (v4 ? 12 : 36)) return invalid(`v2: ${body} bytes, too short for ${v4 ? 'IPv4' : 'IPv6'} addresses`);
  if (v4) {
    return {
      kind: 'header',
      version: 2,
      length,
      client: { srcAddress: `${b[16]}.${b[17]}.${b[18]}.${b[19]}`, dstAddress: `${b[20]}.${b[21]}.${b[22]}.${b[23]}`, srcPort: (b[24]! << 8) | b[25]!, dstPort: (b[26]! << 8) | b[27]! },
    };
  }
  const at = b.byteOffset;
  return {
    kind: 'header',
    version: 2,
    length,
    client: {
      srcAddress: ipText(new Uint8Array(b.buffer, at + 16, 16)),
      dstAddress: ipText(new Uint8Array(b.buffer, at + 32, 16)),
      srcPort: (b[48]! << 8) | b[49]!,
      dstPort: (b[50]! << 8) | b[51]!,
    },
  };
}
