// consistent_hash: the key (the client's IP) picks a slot of a weighted Maglev table
// (./maglev.ts), built once with the strategy, i.e. when the snapshot is built, never on the
// pick path. The slot's backend takes the connection when it is among the candidates (usable:
// healthy, enabled, not draining, not full, not already tried).
//
// Preference order: a key's preference order is the distinct backends met walking the table
// from the key's slot onwards (slot, slot + 1, … mod M). Its first is the Maglev backend; when
// that one is not a candidate the key goes to the next one that is, so only the unusable
// backend's keys move (the others' first choice is still usable), and they come back when it
// is usable again. Neighbouring slots are filled by the members' independent permutations, so
// the keys of a backend that went away spread over the others by their shares.
//
// hash_balance_factor (HAProxy's hash-balance-factor): 0 = off; else a candidate whose active
// connections exceed ceil(factor % × the mean over the candidates, scaled by its weight)
// (bound_b = ceil(factor × Σactive × w_b / (100 × Σw))) takes no new connection: the key goes
// on along its preference order to the first one under the bound. One candidate is always
// under it (not all can be above their weighted mean).
//
// Cost: one hash of the key and one table read. When every backend of the pool is a candidate
// and there is no balance factor (the common case) that is all: O(1). Otherwise the candidates
// are marked in one pass (the length of the snapshot's own pass that built them; the balance
// factor needs their total load anyway) and the walk is one step unless the key's backend is
// unusable or over the bound. No per-connection state: the pick is a function of the key, the table
// and the candidates' loads.

import type { Candidate, Strategy, StrategyEnv } from '../core/strategy';
import { buildMaglev, identity, slotOf, TABLE_SIZE, type MaglevMember, type MaglevTable } from './maglev';

// The tables some snapshot still uses, by their members: a reload, a DNS answer or an agent's word
// that leaves a pool as it was reuses its table instead of filling 65,537 slots again, so a
// reload costs what it changed. Held weakly: a table no snapshot uses is collected and forgotten.
const tables = new Map<string, WeakRef<MaglevTable>>();
const forget = new FinalizationRegistry<string>((key) => {
  if (tables.get(key)?.deref() === undefined) tables.delete(key);
});

/** The pool's Maglev table, built once for as long as a snapshot holds it. */
export function maglevOf(pool: readonly MaglevMember[]): MaglevTable {
  // buildMaglev depends on the set of (id, address, weight > 0), not on the pool's order
  const key = pool
    .filter((m) => m.weight > 0)
    .map((m) => `${identity(m)}*${m.weight}`)
    .sort()
    .join(' ');
  const known = tables.get(key)?.deref();
  if (known !== undefined) return known;
  const table = buildMaglev(pool);
  tables.set(key, new WeakRef(table));
  forget.register(table, key);
  return table;
}

/** `::ffff:10.1.2.3` (an IPv4 client on a dual-stack listener) hashes as `10.1.2.3`. */
export function normaliseKey(key: string): string {
  return key.length > 7 && key.charCodeAt(0) === 58 && key.startsWith('::ffff:') && key.includes('.') ? key.slice(7) : key;
}

export function consistentHash(env: StrategyEnv): Strategy {
  const table = maglevOf(env.pool ?? []);
  const { members, slots } = table;
  const size = slots.length;
  const factor = env.hashBalanceFactor ?? 0;
  const indexOf = new Map<number, number>(members.map((m, i) => [m.id, i]));
  // where each member stands in the candidates when every member is one (the snapshot passes
  // them in pool order): the common case needs no pass over the candidates
  const inPool = new Map<number, number>();
  let at = 0;
  for (const m of env.pool ?? []) {
    if (m.weight <= 0) continue;
    if (!inPool.has(m.id)) inPool.set(m.id, at);
    at++;
  }
  const position = Int32Array.from(members, (m) => inPool.get(m.id) ?? -1);
  const shares = new Map<number, number>(members.map((m, i) => [m.id, table.counts[i]! / TABLE_SIZE]));
  // per pick: which members are candidates (stamp), and the candidate for each member
  const mark = new Int32Array(members.length);
  const cand: (Candidate | undefined)[] = new Array(members.length).fill(undefined);
  let stamp = 0;

  return {
    keyed: true,
    share: (id: number): number => shares.get(id) ?? 0,
    pick(c: readonly Candidate[], key?: string): Candidate | undefined {
      const n = c.length;
      if (n === 0) return undefined;
      const k = normaliseKey(key ?? '');
      if (size === 0) return c[slotOf(k, n)];
      const start = slotOf(k, size);
      if (factor === 0 && n === members.length) {
        const x = c[position[slots[start]!]!];
        if (x !== undefined && x.id === members[slots[start]!]!.id) return x;
      }
      stamp = (stamp + 1) | 0;
      if (stamp === 0) {
        mark.fill(0);
        stamp = 1;
      }
      let active = 0;
      let weight = 0;
      let marked = 0;
      for (let i = 0; i < n; i++) {
        const x = c[i]!;
        active += x.load.active;
        weight += x.weight;
        const m = indexOf.get(x.id);
        if (m === undefined) continue;
        mark[m] = stamp;
        cand[m] = x;
        marked++;
      }
      let first: Candidate | undefined;
      if (marked > 0) {
        for (let s = start, steps = 0; steps < size; steps++, s = s + 1 === size ? 0 : s + 1) {
          const m = slots[s]!;
          if (mark[m] !== stamp) continue;
          const x = cand[m]!;
          if (!over(x, factor, active, weight)) return x;
          first ??= x;
        }
      }
      // no candidate in the table under the bound (cannot happen while the candidates are the
      // table's members): the least loaded relative to weight, else the key's candidate by hash
      let best = first ?? c[slotOf(k, n)]!;
      if (factor > 0) for (const x of c) if (x.load.active * best.weight < best.load.active * x.weight) best = x;
      return best;
    },
  };
}

/** Above the balance bound: more active connections than ceil(factor % of its weighted share of the mean). */
function over(x: Candidate, factor: number, active: number, weight: number): boolean {
  return factor > 0 && x.load.active > Math.ceil((factor * active * x.weight) / (100 * weight));
}
