// What a message says about a raw value: what it is ("the string \"x\"", "a table"), and the
// known name it was probably meant to be ("did you mean"). Pure.

/** A TOML table as parsed. */
export type Raw = Record<string, unknown>;

export function isTable(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'object') return 'a table';
  if (typeof v === 'string') return `the string "${v}"`;
  return `${typeof v} ${String(v)}`;
}

let row = new Int32Array(64);

/** Levenshtein distance; one reused row, no allocation for names under 64 characters. */
export function editDistance(a: string, b: string): number {
  if (row.length <= b.length) row = new Int32Array(b.length + 1);
  const dp = row;
  for (let j = 0; j <= b.length; j++) dp[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    const ca = a.charCodeAt(i - 1);
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      const sub = prev + (ca === b.charCodeAt(j - 1) ? 0 : 1);
      const del = dp[j]! + 1;
      const ins = dp[j - 1]! + 1;
      dp[j] = sub < del ? (sub < ins ? sub : ins) : del < ins ? del : ins;
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

const bag = new Int32Array(128);

/**
 * A lower bound of the edit distance, in one pass over each word: every edit changes the count of
 * at most one character in each direction, so the distance is at least the larger of the surplus
 * characters either word has over the other. Non-ASCII text gets 0 (no bound).
 */
export function bagDistance(a: string, b: string): number {
  let ok = true;
  for (let i = 0; i < a.length; i++) {
    const c = a.charCodeAt(i);
    if (c < 128) bag[c]!++;
    else ok = false;
  }
  for (let i = 0; i < b.length; i++) {
    const c = b.charCodeAt(i);
    if (c < 128) bag[c]!--;
    else ok = false;
  }
  let surplusA = 0;
  let surplusB = 0;
  for (let i = 0; i < a.length; i++) {
    const c = a.charCodeAt(i);
    if (c < 128 && bag[c]! !== 0) {
      if (bag[c]! > 0) surplusA += bag[c]!;
      bag[c] = 0;
    }
  }
  for (let i = 0; i < b.length; i++) {
    const c = b.charCodeAt(i);
    if (c < 128 && bag[c]! !== 0) {
      if (bag[c]! < 0) surplusB -= bag[c]!;
      bag[c] = 0;
    }
  }
  return ok ? Math.max(surplusA, surplusB) : 0;
}

export function didYouMean(word: string, candidates: readonly string[]): string {
  const limit = Math.max(2, Math.floor(word.length / 3));
  const w = word.toLowerCase();
  let best = '';
  let bestD = Infinity;
  for (const c of candidates) {
    if (Math.abs(c.length - w.length) > limit) continue; // the distance is at least this
    const lc = c.toLowerCase();
    if (bagDistance(w, lc) > limit) continue; // and at least this
    const d = editDistance(w, lc);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return bestD <= limit ? ` (did you mean "${best}"?)` : '';
}
