// Parsing of host:port addresses, IP addresses and CIDR blocks. Pure: no node:net.

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** "host:port", "[v6]:port". Returns an error message instead of throwing. */
export function parseHostPort(s: string, allowPortZero = false): HostPort | string {
  const text = s.trim();
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return `expected "[ipv6]:port", got "${s}"`;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (parseIp(host) === null) return `"${host}" is not an IPv6 address`;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return `expected "host:port", got "${s}"`;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return `an IPv6 address needs brackets: "[${host}]:${portText}"`;
    if (host === '') return `expected "host:port" with a host, got "${s}"`;
    if (!/^[A-Za-z0-9.\-_]+$/.test(host)) return `"${host}" is not a valid host name or address`;
  }
  if (!/^\d{1,5}$/.test(portText)) return `port must be a number from 1 to 65535, got "${portText}"`;
  const port = Number(portText);
  if ((port < 1 && !(allowPortZero && port === 0)) || port > 65535) return `port must be from 1 to 65535, got ${port}`;
  return { host, port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** An IP address as 16 bytes (IPv4 is stored IPv4-mapped: ::ffff:a.b.c.d). */
export interface Ip {
  readonly v4: boolean;
  readonly bytes: Uint8Array;
}

/** Dotted-quad IPv4, each part 1-3 digits and at most 255; read by char codes (DNS answers pass thousands through here). */
function parseV4(s: string): number[] | null {
  const out: number[] = [];
  let n = 0;
  let digits = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46;
    if (c >= 48 && c <= 57) {
      if (++digits > 3) return null;
      n = n * 10 + (c - 48);
    } else if (c === 46) {
      if (digits === 0 || n > 255 || out.length === 4) return null;
      out.push(n);
      n = 0;
      digits = 0;
    } else return null;
  }
  return out.length === 4 ? out : null;
}

export function parseIp(input: string): Ip | null {
  const s = input.trim();
  const v4 = parseV4(s);
  if (v4) {
    const bytes = new Uint8Array(16);
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.set(v4, 12);
    return { v4: true, bytes };
  }
  if (!s.includes(':')) return null;
  const zone = s.indexOf('%');
  const body = zone >= 0 ? s.slice(0, zone) : s;
  const halves = body.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    const parts = h.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes('.')) {
        const q = parseV4(p);
        if (!q) return null;
        out.push((q[0]! << 8) | q[1]!, (q[2]! << 8) | q[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  let all: number[];
  if (halves.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return null;
    all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    all = head;
  }
  if (all.length !== 8) return null;
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return { v4: mapped, bytes };
}

export interface Cidr {
  readonly text: string;
  readonly bytes: Uint8Array;
  /** prefix length over the 128-bit (mapped) form */
  readonly bits: number;
}

export function parseCidr(s: string): Cidr | string {
  const slash = s.indexOf('/');
  const ipText = slash >= 0 ? s.slice(0, slash) : s;
  const ip = parseIp(ipText);
  if (!ip) return `"${s}" is not an IP address or CIDR block`;
  // the prefix counts over the notation written: 32 bits for a.b.c.d, 128 for IPv6 text (also
  // for an IPv4-mapped address written as ::ffff:a.b.c.d)
  const v4Text = !ipText.includes(':');
  const max = v4Text ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const b = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(b) || Number(b) > max) return `"${s}": prefix length must be 0 to ${max}`;
    bits = Number(b);
  }
  return { text: s, bytes: ip.bytes, bits: v4Text ? bits + 96 : bits };
}

export function cidrContains(c: Cidr, ip: Ip): boolean {
  let bits = c.bits;
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((c.bytes[i]! & mask) !== (ip.bytes[i]! & mask)) return false;
  }
  return true;
}

/**
 * RFC 5952 text, as HAProxy's inet_ntop writes it: lowercase hex without leading zeros, the
 * longest run of two or more zero groups (the leftmost of equal runs) written as "::".
 */
export function v6Text(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = (g: number[]): string => g.map((n) => n.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}
