// diff(old, new): what a reload changes. Pure. Services are matched by name, backends within a
// service by id; the top-level [[backends]] are the service "default", whose changes are named
// without a service, as before there were services.

import { DEFAULT_SERVICE, SCHEMA, SECRET_PATHS, serviceSettingsOf, settingsOf, type BackendConfig, type Config } from './schema';

/** `service` is set on changes inside a [[services]] entry (not the default service). */
export type Change = (
  | { readonly kind: 'backend-added'; readonly backend: BackendConfig }
  | { readonly kind: 'backend-removed'; readonly backend: BackendConfig }
  | { readonly kind: 'backend-address'; readonly from: BackendConfig; readonly to: BackendConfig }
  | { readonly kind: 'backend-changed'; readonly backend: BackendConfig; readonly fields: readonly FieldChange[] }
  | { readonly kind: 'setting'; readonly path: string; readonly from: string; readonly to: string }
  /** a secret setting changed: said without either value */
  | { readonly kind: 'secret'; readonly path: string }
  | { readonly kind: 'service-added' }
  | { readonly kind: 'service-removed' }
) & { readonly service?: string };

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
  backendChanges(a.backends, b.backends, undefined, out);
  // every other setting, named by its file key (both lists follow the schema's table order)
  const next = settingsOf(b);
  settingsOf(a).forEach((s, i) => {
    const sa = show(s.value);
    const sb = show(next[i]!.value);
    if (sa !== sb) out.push(SECRET_PATHS.includes(s.path) ? { kind: 'secret', path: s.path } : { kind: 'setting', path: s.path, from: sa, to: sb });
  });
  const named = (c: Config): Map<string, Config['services'][number]> => new Map(c.services.filter((s) => s.name !== DEFAULT_SERVICE).map((s) => [s.name, s]));
  const [before, after] = [named(a), named(b)];
  for (const [name, svc] of after) {
    const old = before.get(name);
    if (!old) {
      out.push({ kind: 'service-added', service: name });
      continue;
    }
    const next = serviceSettingsOf(svc);
    serviceSettingsOf(old).forEach((s, i) => {
      const [sa, sb] = [show(s.value), show(next[i]!.value)];
      if (sa !== sb) out.push({ kind: 'setting', path: s.path, from: sa, to: sb, service: name });
    });
    backendChanges(old.backends, svc.backends, name, out);
  }
  for (const name of before.keys()) if (!after.has(name)) out.push({ kind: 'service-removed', service: name });
  return out;
}

/** Backends of one list matched by id. */
function backendChanges(a: readonly BackendConfig[], b: readonly BackendConfig[], service: string | undefined, out: Change[]): void {
  const tag = service === undefined ? {} : { service };
  const before = new Map(a.map((x) => [x.id, x]));
  const after = new Map(b.map((x) => [x.id, x]));
  for (const nb of b) {
    const ob = before.get(nb.id);
    if (!ob) {
      out.push({ kind: 'backend-added', backend: nb, ...tag });
      continue;
    }
    if (ob.address !== nb.address) out.push({ kind: 'backend-address', from: ob, to: nb, ...tag });
    const fields: FieldChange[] = [];
    for (const f of BACKEND_FIELDS) {
      if (ob[f.prop] !== nb[f.prop]) fields.push({ field: f.key, from: String(ob[f.prop]), to: String(nb[f.prop]) });
    }
    if (fields.length > 0) out.push({ kind: 'backend-changed', backend: nb, fields, ...tag });
  }
  for (const ob of a) if (!after.has(ob.id)) out.push({ kind: 'backend-removed', backend: ob, ...tag });
}

function show(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  if (v === null || v === undefined || v === '') return '""';
  if (typeof v === 'object' && 'text' in v) return String((v as { text: string }).text);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/**
 * One line: `+backend-4 -backend-2(draining) ~backend-1 weight 10→5 strategy adaptive→round_robin`;
 * then, comma-separated, added and removed services and each changed service's own changes:
 * `+service redis, -service old(draining), postgres: +pg-3 ~pg-1 weight 10→5`.
 */
export function summarize(changes: readonly Change[]): string {
  if (changes.length === 0) return 'no changes';
  const parts: string[] = [];
  const top = changes.filter((c) => c.service === undefined);
  if (top.length > 0) parts.push(top.map(one).join(' '));
  const byService = new Map<string, Change[]>();
  for (const c of changes) if (c.service !== undefined) (byService.get(c.service) ?? byService.set(c.service, []).get(c.service)!).push(c);
  for (const [name, list] of byService) {
    const own = list.filter((c) => c.kind !== 'service-added' && c.kind !== 'service-removed');
    for (const c of list) if (c.kind === 'service-added' || c.kind === 'service-removed') parts.push(one(c));
    if (own.length > 0) parts.push(`${name}: ${own.map(one).join(' ')}`);
  }
  return parts.join(', ');
}

function one(c: Change): string {
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
        case 'service-added':
          return `+service ${c.service}`;
        case 'service-removed':
          return `-service ${c.service}(draining)`;
      }
}
