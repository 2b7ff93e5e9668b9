// Who may use the admin API, and from where. Pure: no node:net, no I/O. The server
// applies these checks in order: the Host header (DNS rebinding), then the cross-site headers of
// a mutating request, then the token or, without one, a loopback peer. validate and the start log
// share adminExposureWarnings().

import { parseIp } from '../config/address';
import type { Config } from '../config/schema';

/** A refusal: the status to answer and the error message of its JSON body. */
export interface Refusal {
  readonly code: number;
  readonly message: string;
}

/** 127.0.0.0/8, ::1, IPv4-mapped loopback (a dual-stack socket's view of 127.x), "localhost". */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase();
  if (h === 'localhost') return true;
  const ip = parseIp(h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h);
  if (!ip) return false;
  if (ip.v4) return ip.bytes[12] === 127;
  return ip.bytes.subarray(0, 15).every((b) => b === 0) && ip.bytes[15] === 1;
}

/** An address as people write it: "::ffff:10.0.0.2" (how a dual-stack socket shows IPv4) → "10.0.0.2". */
export function showPeer(address: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address;
}

export interface HostHeader {
  /** lower case, without brackets, port or a trailing dot */
  readonly host: string;
  /** the port as written, "" when absent */
  readonly port: string;
  readonly ip: boolean;
}

/** The parts of a Host header ("name", "name:port", "1.2.3.4:port", "[v6]:port"); null when malformed. */
export function parseHostHeader(value: string): HostHeader | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::(\d{0,5}))?$/.exec(value.trim());
  if (!m) return null;
  const port = m[3] ?? '';
  if (m[1] !== undefined) return m[1].includes(':') && parseIp(m[1]) ? { host: m[1].toLowerCase(), port, ip: true } : null;
  const host = m[2]!.toLowerCase().replace(/\.$/, '');
  if (host === '') return null;
  return { host, port, ip: parseIp(host) !== null };
}

/**
 * Is this Host header one a browser tricked by DNS rebinding cannot send? An IP literal, a
 * "localhost", or a name listed in [admin] allowed_hosts (compared lower case, port ignored).
 */
export function checkHost(value: string | undefined, allowedHosts: readonly string[]): Refusal | null {
  // no Host at all cannot come from a browser (it always sends one); HTTP/1.1 without one is
  // refused before this, as the protocol requires
  if (value === undefined) return null;
  const h = parseHostHeader(value);
  if (h && (h.ip || h.host === 'localhost' || allowedHosts.includes(h.host))) return null;
  const name = h ? h.host : value;
  return {
    code: 421,
    message: `Host ${JSON.stringify(value)} is not allowed here: use an IP address or localhost, or add ${JSON.stringify(name)} to [admin] allowed_hosts`,
  };
}

/**
 * A mutating request a browser sent on behalf of another site: an Origin whose host:port is not
 * the Host (a missing port is the scheme's default), or Sec-Fetch-Site: cross-site.
 */
export function checkCrossSite(headers: { host?: string; origin?: string; secFetchSite?: string }): Refusal | null {
  // repeated headers arrive joined with commas
  if ((headers.secFetchSite ?? '').split(',').some((v) => v.trim().toLowerCase() === 'cross-site')) {
    return { code: 403, message: 'cross-site request refused (Sec-Fetch-Site: cross-site)' };
  }
  if (headers.origin === undefined) return null;
  if (!sameHostPort(headers.origin, headers.host)) {
    return { code: 403, message: `cross-site request refused: Origin ${JSON.stringify(headers.origin)} is not Host ${JSON.stringify(headers.host ?? '')}` };
  }
  return null;
}

function sameHostPort(origin: string, host: string | undefined): boolean {
  let o: URL;
  try {
    o = new URL(origin);
  } catch {
    return false; // "null" (a sandboxed frame, a file:// page) and anything malformed
  }
  if (o.protocol !== 'http:' && o.protocol !== 'https:') return false;
  const h = host === undefined ? null : parseHostHeader(host);
  if (!h) return false;
  const oHost = o.hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  const oPort = o.port || (o.protocol === 'https:' ? '443' : '80');
  // behind a TLS-terminating proxy the Host has no port while the Origin says https (443)
  const portOk = h.port === oPort || (h.port === '' && (oPort === '80' || oPort === '443'));
  return oHost === h.host && portOk;
}

/**
 * Without [admin] token, mutations are for this host only: from any other peer they are 403.
 * `peer` undefined is a Unix socket's peer, which is local.
 */
export function checkTokenlessPeer(peer: string | undefined): Refusal | null {
  if (peer === undefined || isLoopback(peer)) return null;
  return { code: 403, message: `set [admin] token to allow this from ${showPeer(peer)}` };
}

/** Warnings for how the admin API is exposed: for `--validate` and the start log. */
export function adminExposureWarnings(config: Config): string[] {
  const a = config.admin;
  if (!a.listen || a.token !== '' || isLoopback(a.listen.host)) return [];
  return [
    `admin.listen_address ${a.listenAddress} is not a loopback address and [admin] token is empty: ` +
      'other hosts can read /status, /backends and /metrics, and their drain, enable, disable and reload requests are refused (403); ' +
      'set [admin] token to allow those, or listen on 127.0.0.1',
  ];
}
