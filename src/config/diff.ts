// diff(old, new): what a reload changes. Pure. Backends are matched by id.

import { SCHEMA, SECRET_PATHS, settingsOf, type BackendConfig, type Config } from './schema';

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

/** The backend settings compared field by field (id is the identity, address its own change). */
const BACKEND_FIELDS = Object.entries(SCHEMA.backends)
  .filter(([key]) => key !== 'id' && key !== 'address')
  .map(([key, r]) => ({ key, prop: r.prop as keyof BackendConfig }));

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
      if (ob[f.prop] !== nb[f.prop]) fields.push({ field: f.key, from: String(ob[f.prop]), to: String(nb[f.prop]) });
    }
    if (fields.length > 0) out.push({ kind: 'backend-changed', backend: nb, fields });
  }
  for (const ob of a.backends) if (!after.has(ob.id)) out.push({ kind: 'backend-removed', backend: ob });
  // every other setting, named by its file key (both lists follow the schema's table order)
  const next = settingsOf(b);
  settingsOf(a).forEach((s, i) => {
    const sa = show(s.value);
    const sb = show(next[i]!.value);
    if (sa !== sb) out.push(SECRET_PATHS.includes(s.path) ? { kind: 'secret', path: s.path } : { kind: 'setting', path: s.path, from: sa, to: sb });
  });
  return out;
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
