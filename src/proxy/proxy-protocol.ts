// PROXY protocol header (HAProxy's proxy-protocol.txt), version 1 (text) and 2 (binary), sent
// to the backend before the client's bytes. IPv4-mapped IPv6 addresses are sent as IPv4.

import type { Socket } from 'node:net';
import { parseIp } from '../core/address';

export interface ProxyEndpoints {
  readonly srcAddress: string;
  readonly srcPort: number;
  readonly dstAddress: string;
  readonly dstPort: number;
}

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v4Text(bytes: Uint8Array): string {
  return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
}

function v6Text(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':');
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
  if (!known) {
    // LOCAL command, UNSPEC family, no addresses
    return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  }
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

export function proxyHeader(version: 'v1' | 'v2', client: Socket): Buffer {
  return encodeProxyHeader(version, {
    srcAddress: client.remoteAddress ?? '',
    srcPort: client.remotePort ?? 0,
    dstAddress: client.localAddress ?? '',
    dstPort: client.localPort ?? 0,
  });
}
