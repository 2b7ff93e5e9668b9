// PROXY protocol header (HAProxy's proxy-protocol.txt), version 1 (text) and 2 (binary), sent
// to the backend before the client's bytes (and first on each health check's own connection).
// IPv4-mapped IPv6 addresses are sent as IPv4.

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


/** Encode the header; an endpoint that is not an IP address gives the protocol's UNKNOWN/LOCAL form. */
export function encodeProxyHeader(version: 'v1' | 'v2', e: ProxyEndpoints): Buffer {
  const src = parseIp(e.srcAddress);
  const dst = parseIp(e.dstAddress);
  const known = src !== null && dst !== null && src.v4 === dst.v4;
  if (version === 'v1') {
    if (!known) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    const fam = src.v4 ? 'TCP4' : 'TCP6';
    const text = src.v4 ? [v4Text(src.bytes), v4Text(dst.bytes)] : [v6Text(src.bytes), v6Text(dst.bytes)];
    return Buffer.from(`PROXY ${fam} ${text[0]} ${text[1]} ${e.srcPort} ${e.dstPort}\r\n`, 'latin1');
  }
  if (!known) return V2_LOCAL;
  const addrLen = src.v4 ? 12 : 36;
  const out = Buffer.alloc(16 + addrLen);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x21; // version 2, PROXY
  out[13] = src.v4 ? 0x11 : 0x21; // AF_INET/AF_INET6, STREAM
  out.writeUInt16BE(addrLen, 14);
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
