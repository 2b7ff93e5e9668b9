// ClientHellos built field by field for the SNI tests (test/unit/client-hello.test.ts, test/e2e/sni.test.ts):
// a handshake message with the extensions asked for, cut into TLS records of a chosen size.

export const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff];
export const u24 = (n: number): number[] => [(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
const ascii = (s: string): number[] => [...Buffer.from(s, 'latin1')];

export const ext = (type: number, body: number[]): number[] => [...u16(type), ...u16(body.length), ...body];
export const sniExt = (name: string): number[] => {
  const entry = [0, ...u16(name.length), ...ascii(name)];
  return ext(0, [...u16(entry.length), ...entry]);
};
export const alpnExt = (protos: string[]): number[] => {
  const list = protos.flatMap((p) => [p.length, ...ascii(p)]);
  return ext(16, [...u16(list.length), ...list]);
};
/** a GREASE extension (RFC 8701: 0x?A?A), empty or with a byte */
export const grease = (n: number): number[] => ext(0x0a0a + 0x1010 * n, n % 2 === 0 ? [] : [0]);
export const supportedVersions = ext(43, [4, 0x03, 0x04, 0x03, 0x03]);

/** A ClientHello handshake message (type, length, body) with these extensions (null: none at all). */
export function handshake(exts: number[][] | null, sessionId = 32): number[] {
  const body = [
    0x03, 0x03, // legacy_version
    ...new Array<number>(32).fill(7), // random
    sessionId, ...new Array<number>(sessionId).fill(9),
    ...u16(6), 0x13, 0x01, 0x13, 0x02, 0x0a, 0x0a, // three suites, one GREASE
    1, 0, // compression: null
  ];
  if (exts !== null) {
    const all = exts.flat();
    body.push(...u16(all.length), ...all);
  }
  return [1, ...u24(body.length), ...body];
}

/** The handshake in TLS records of at most `size` bytes each. */
export function records(hs: number[], size = 16384): Buffer {
  const out: number[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const part = hs.slice(i, i + size);
    out.push(0x16, 0x03, 0x01, ...u16(part.length), ...part);
  }
  return Buffer.from(out);
}

/** A whole ClientHello in one record: with this server name (null: no server_name extension). */
export function clientHello(serverName: string | null): Buffer {
  return records(handshake([supportedVersions, ...(serverName === null ? [] : [sniExt(serverName)]), alpnExt(['h2'])]));
}
