// A weighted Maglev lookup table (Eisenbud et al., NSDI 2016) and the hash it uses. Pure: no
// imports, no clock, no randomness. The table depends only on the members' ids, addresses and
// weights (never on their order in the file, the process or the time), so every worker, every
// restart and every balancer with the same configuration maps a key to the same backend.

/** Table size: a prime (Maglev needs one so that every skip is coprime with it), ≥ 65537. */
export const TABLE_SIZE = 65537;

/** A backend as the table knows it: its stable identity and its configured weight. */
export interface MaglevMember {
  readonly id: number;
  readonly address: string;
  readonly weight: number;
}

/**
 * MurmurHash3 (x86, 32-bit) over the string's code units: one byte for a code unit below 0x80
 * (every address and IP is ASCII), two (low, high) otherwise. Non-cryptographic, fast, with a
 * good avalanche; the seed gives independent hashes of one string.
 */
export function murmur3(s: string, seed: number): number {
  let h = seed | 0;
  let k = 0; // the block being filled
  let n = 0; // bytes fed
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    for (let b = c < 0x80 ? c : c & 0xff, more = c >= 0x80; ; b = c >>> 8, more = false) {
      k |= b << ((n & 3) << 3);
      n++;
      if ((n & 3) === 0) {
        k = Math.imul(k, 0xcc9e2d51);
        k = (k << 15) | (k >>> 17);
        h ^= Math.imul(k, 0x1b873593);
        h = (h << 13) | (h >>> 19);
        h = (Math.imul(h, 5) + 0xe6546b64) | 0;
        k = 0;
      }
      if (!more) break;
    }
  }
  if ((n & 3) !== 0) {
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export const OFFSET_SEED = 0x9747b28c;
export const SKIP_SEED = 0x5bd1e995;
export const KEY_SEED = 0x1b873593;

/** A member's identity as the hashes read it: id and address. */
export function identity(m: Pick<MaglevMember, 'id' | 'address'>): string {
  return `${m.id}@${m.address}`;
}

export interface MaglevTable {
  /** the members with weight > 0, sorted by id (then address): the table's entries index them */
  readonly members: readonly MaglevMember[];
  /** slot → index into `members` (empty table when no member has weight) */
  readonly slots: Int32Array;
  /** entries per member, same order as `members` */
  readonly counts: readonly number[];
}

/**
 * Populate the table. Each member walks its own permutation of the slots, (offset + j × skip)
 * mod M, with offset and skip from two hashes of its identity, and takes the next free slot on
 * its turn. Weighted: in round r a member may hold up to r × weight / max weight entries, so the
 * entries end up in proportion to the weights (a member of the largest weight takes one per
 * round). Members take their turns in id order: the file's order does not matter.
 */
export function buildMaglev(pool: readonly MaglevMember[], size: number = TABLE_SIZE): MaglevTable {
  const members = pool
    .filter((m) => m.weight > 0)
    .slice()
    .sort((a, b) => a.id - b.id || (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  const n = members.length;
  const slots = new Int32Array(size).fill(-1);
  const counts = new Array<number>(n).fill(0);
  if (n === 0) return { members, slots: new Int32Array(0), counts };
  const offset = new Float64Array(n);
  const skip = new Float64Array(n);
  const next = new Float64Array(n); // how far along its permutation each member is
  let maxW = 0;
  for (let i = 0; i < n; i++) {
    const id = identity(members[i]!);
    offset[i] = murmur3(id, OFFSET_SEED) % size;
    skip[i] = (murmur3(id, SKIP_SEED) % (size - 1)) + 1;
    maxW = Math.max(maxW, members[i]!.weight);
  }
  let filled = 0;
  for (let round = 1; filled < size; round++) {
    for (let i = 0; i < n && filled < size; i++) {
      if (counts[i]! >= (round * members[i]!.weight) / maxW) continue;
      let slot: number;
      do {
        slot = (offset[i]! + next[i]! * skip[i]!) % size;
        next[i] = next[i]! + 1;
      } while (slots[slot]! >= 0);
      slots[slot] = i;
      counts[i] = counts[i]! + 1;
      filled++;
    }
  }
  return { members, slots, counts };
}

/** The key's slot. */
export function slotOf(key: string, size: number = TABLE_SIZE): number {
  return murmur3(key, KEY_SEED) % size;
}
