// The invariant fields of a QUIC packet's header (RFC 8999), read without decrypting anything,
// for udp_affinity = "quic": a long header's version and its Destination and Source Connection
// IDs, a short header's Destination Connection ID (whose length the header does not say: the
// caller tries the lengths it learned). Only versions 1 (RFC 9000) and 2 (RFC 9369) are taken,
// so their 20-byte bound on an ID holds. Each read is bounds-checked against the datagram and
// nothing is allocated: the result goes into a caller's reused object. Pure.

/** QUIC version 1 (RFC 9000) and version 2 (RFC 9369). */
export const QUIC_V1 = 0x00000001;
export const QUIC_V2 = 0x6b3343cf;
/** The longest connection ID of versions 1 and 2. */
export const MAX_CID_LENGTH = 20;

/** A long header of version 1 or 2, a short header, or neither (not QUIC, another version, cut short). */
export const QuicForm = { None: 0, Long: 1, Short: 2 } as const;
export type QuicForm = (typeof QuicForm)[keyof typeof QuicForm];

/** The long header packet types, the same numbers for both versions (version 2 encodes them differently). */
export const QuicLongType = { Initial: 0, ZeroRtt: 1, Handshake: 2, Retry: 3 } as const;

/** What readQuicHeader() found: offsets into the datagram, no copies. */
export interface QuicHeader {
  form: QuicForm;
  /** a long header's version */
  version: number;
  /** a long header's packet type (QuicLongType) */
  type: number;
  /** a long header's Destination Connection ID: its offset and length */
  dcidOffset: number;
  dcidLength: number;
  /** a long header's Source Connection ID: its offset and length */
  scidOffset: number;
  scidLength: number;
}

export function emptyQuicHeader(): QuicHeader {
  return { form: QuicForm.None, version: 0, type: 0, dcidOffset: 0, dcidLength: 0, scidOffset: 0, scidLength: 0 };
}

/**
 * Read the header of the first QUIC packet in `d` into `h`; returns h.form. A short header
 * (the form bit clear, the fixed bit set) has its Destination Connection ID at offset 1, of a
 * length the header does not carry (dcidOffset = 1, dcidLength = 0: see shortDcidFits()).
 */
export function readQuicHeader(d: Uint8Array, h: QuicHeader): QuicForm {
  h.form = QuicForm.None;
  const n = d.length;
  if (n < 1) return QuicForm.None;
  const b0 = d[0]!;
  if ((b0 & 0x80) === 0) {
    // a short header needs at least a packet number and a sample after its ID; the fixed bit
    // is set unless grease_quic_bit (RFC 9287) was negotiated: both are accepted
    if (n < 2) return QuicForm.None;
    h.dcidOffset = 1;
    h.dcidLength = 0;
    h.form = QuicForm.Short;
    return QuicForm.Short;
  }
  // long: first byte, version (4), DCID length (1), DCID, SCID length (1), SCID
  if (n < 7) return QuicForm.None;
  const version = ((d[1]! << 24) | (d[2]! << 16) | (d[3]! << 8) | d[4]!) >>> 0;
  if (version !== QUIC_V1 && version !== QUIC_V2) return QuicForm.None;
  const dl = d[5]!;
  if (dl > MAX_CID_LENGTH || 6 + dl + 1 > n) return QuicForm.None;
  const sl = d[6 + dl]!;
  if (sl > MAX_CID_LENGTH || 7 + dl + sl > n) return QuicForm.None;
  const raw = (b0 >> 4) & 0x03;
  h.version = version;
  // version 2 numbers them Retry 0, Initial 1, 0-RTT 2, Handshake 3
  h.type = version === QUIC_V2 ? (raw + 3) & 0x03 : raw;
  h.dcidOffset = 6;
  h.dcidLength = dl;
  h.scidOffset = 7 + dl;
  h.scidLength = sl;
  h.form = QuicForm.Long;
  return QuicForm.Long;
}

/** Does a short header in `d` have room for a Destination Connection ID of `length` bytes? */
export function shortDcidFits(d: Uint8Array, length: number): boolean {
  return length > 0 && length <= MAX_CID_LENGTH && 1 + length < d.length;
}
