// diff(old, new): what a reload changes. Pure. Backends are matched by id.

import { SECRET_PATHS, type BackendConfig, type Config } from './schema';

export type Change =
  | { readonly kind: 'backend-added'; readonly backend: BackendConfig }
  | { readonly kind: 'backend-removed'; readonly backend: BackendConfig }
  | { readonly kind: 'backend-address'; readonly from: BackendConfig; readonly to: BackendConfig }
  | { readonly kind: 'backend-changed'; readonly backend: BackendConfig; readonly fields: readonly FieldChange[] }
  | { readonly kind: 'setting'; readonly path: string; readonly from: string; readonly to: string }
  /** a secret setting changed: said without either value */
  | { readonly kind: 'secret'; readonly path: string };

export interface FieldChange {
  readonly field: string;
  readonly from: string;
  readonly to: string;
}

const BACKEND_FIELDS = ['name', 'weight', 'maxConnections', 'backup'] as const;
const FIELD_NAMES: Record<(typeof BACKEND_FIELDS)[number], string> = {
  name: 'name',
  weight: 'weight',
  maxConnections: 'max_connections',
  backup: 'backup',
};

export function diff(a: Config, b: Config): Change[] {
  const out: Change[] = [];
  const before = new Map(a.backends.map((x) => [x.id, x]));
  const after = new Map(b.backends.map((x) => [x.id, x]));
  for (const nb of b.backends) {
    const ob = before.get(nb.id);
    if (!ob) {
      out.push({ kind: 'backend-added', backend: nb });
      continue;
    }
    if (ob.address !== nb.address) out.push({ kind: 'backend-address', from: ob, to: nb });
    const fields: FieldChange[] = [];
    for (const f of BACKEND_FIELDS) {
      if (ob[f] !== nb[f]) fields.push({ field: FIELD_NAMES[f], from: String(ob[f]), to: String(nb[f]) });
    }
    if (fields.length > 0) out.push({ kind: 'backend-changed', backend: nb, fields });
  }
  for (const ob of a.backends) if (!after.has(ob.id)) out.push({ kind: 'backend-removed', backend: ob });
  settingChanges(a, b, '', out);
  return out;
}

function settingChanges(a: unknown, b: unknown, prefix: string, out: Change[]): void {
  for (const key of Object.keys(a as object)) {
    if ((prefix === '' && key === 'backends') || key === 'listen') continue; // listen: derived from listenAddress
    const va = (a as Record<string, unknown>)[key];
    const vb = (b as Record<string, unknown>)[key];
    const path = prefix ? `${prefix}.${fileKey(prefix, key)}` : key;
    if (isPlain(va) && isPlain(vb)) {
      settingChanges(va, vb, path, out);
      continue;
    }
    const sa = show(va);
    const sb = show(vb);
    if (sa === sb) continue;
    out.push(SECRET_PATHS.includes(path) ? { kind: 'secret', path } : { kind: 'setting', path, from: sa, to: sb });
  }
}

/** The key as the file spells it: connectTimeoutMs → connect_timeout, drainTimeoutMs → drain_timeout_millis. */
function fileKey(section: string, key: string): string {
  const ms = key.endsWith('Ms') ? (section === 'runtime' ? '_millis' : '') : null;
  const base = ms === null ? key : key.slice(0, -2);
  return base.replace(/[A-Z]/g, (m) => '_' + m.toLowerCase()) + (ms ?? '');
}

/** A nested settings table (not a leaf value such as a CIDR or a rate limit, which carry their text). */
function isPlain(v: unknown): v is object {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !('text' in v);
}

function show(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  if (v === null || v === undefined || v === '') return '""';
  if (typeof v === 'object' && 'text' in v) return String((v as { text: string }).text);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** One line: `+backend-4 -backend-2(draining) ~backend-1 weight 10→5 strategy adaptive→round_robin`. */
export function summarize(changes: readonly Change[]): string {
  if (changes.length === 0) return 'no changes';
  return changes
    .map((c) => {
      switch (c.kind) {
        case 'backend-added':
          return `+${c.backend.name}`;
        case 'backend-removed':
          return `-${c.backend.name}(draining)`;
        case 'backend-address':
          return `~${c.to.name} address ${c.from.address}→${c.to.address}(old draining)`;
        case 'backend-changed':
          return `~${c.backend.name} ${c.fields.map((f) => `${f.field} ${f.from}→${f.to}`).join(' ')}`;
        case 'setting':
          return `${c.path} ${c.from}→${c.to}`;
        case 'secret':
          return `${c.path} changed`;
      }
    })
    .join(' ');
}
