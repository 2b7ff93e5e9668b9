// Reading one field: a raw TOML value checked against its row (the parsed value, or what was
// expected), a row's default, a table's rows read with defaults or inherited values, and a
// Config's settings named back as the file spells them. Pure.

import { parseHostPort, parseCidr, parseIp, formatHostPort, type Cidr, type HostPort } from './address';
import { ALGORITHMS, DEFAULT_SERVICE, KEYS, OVERRIDABLE, SECTIONS, isFlat, isList, rows, type Config, type RateLimit, type Row, type SectionName, type ServiceConfig } from './settings';
import { checkSteps, checkText } from './step-text';
import { describe, didYouMean, type Raw } from './suggest';

/** The longest duration a setting takes. */
export const MAX_MS = 7 * 24 * 3600 * 1000;

/**
 * Every setting of a Config outside [[backends]], in table order, named as the file spells it
 * (a flat section by its own name: `strategy`): what the diff compares and the secrets are read from.
 */
export function settingsOf(config: Config): { readonly path: string; readonly value: unknown }[] {
  const out: { path: string; value: unknown }[] = [];
  for (const s of SECTIONS) {
    if (isList(s)) continue;
    const value: unknown = config[s];
    if (isFlat(s)) {
      // the section's first key is its value (`strategy`); the others are the default service's
      out.push({ path: s, value });
      const svc = config.services.find((x) => x.name === DEFAULT_SERVICE) as Record<string, unknown> | undefined;
      for (const [key, r] of rows(s).slice(1)) out.push({ path: `${s}.${key}`, value: svc !== undefined ? svc[r.prop] : defaultOf(r) });
      continue;
    }
    for (const [key, r] of rows(s)) out.push({ path: `${s}.${key}`, value: (value as Record<string, unknown>)[r.prop] });
  }
  return out;
}

/**
 * A [[services]] entry's own settings, named as the file spells them (`health.interval` for its
 * [services.health] keys): what the diff compares for a service present before and after.
 */
export function serviceSettingsOf(svc: ServiceConfig): { readonly path: string; readonly value: unknown }[] {
  const own = svc as unknown as Record<string, unknown>;
  return [
    ...rows('services').filter(([k]) => k !== 'name').map(([k, r]) => ({ path: k, value: own[r.prop] })),
    ...OVERRIDABLE.strategy.map(([k, r]) => ({ path: k, value: own[r.prop] })),
    ...OVERRIDABLE.proxy.map(([k, r]) => ({ path: k, value: (svc.proxy as Record<string, unknown>)[r.prop] })),
    ...OVERRIDABLE.health.map(([k, r]) => ({ path: `health.${k}`, value: (svc.health as Record<string, unknown>)[r.prop] })),
    ...rows('tls').map(([k, r]) => ({ path: `tls.${k}`, value: svc.tls === null ? null : (svc.tls as Record<string, unknown>)[r.prop] })),
    ...rows('backend_tls').map(([k, r]) => ({ path: `backend_tls.${k}`, value: svc.backendTls === null ? null : (svc.backendTls as Record<string, unknown>)[r.prop] })),
  ];
}

/** Checked values (by file key) → the section's Config object (by prop), with each derived property. */
export function toValues(s: SectionName | readonly [string, Row][], checked: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, r] of typeof s === 'string' ? rows(s) : s) {
    const v = checked[key];
    if (r.kind === 'listen') {
      out[r.prop] = v === null ? '' : formatHostPort(v as HostPort);
      out[r.parsed] = v;
    } else if (r.kind === 'address') {
      const hp = v as HostPort;
      out[r.prop] = formatHostPort(hp);
      out['host'] = hp.host;
      out['port'] = hp.port;
    } else {
      out[r.prop] = v;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Value checks. Each returns the parsed value, or a message saying what was expected.

const DURATION_RE = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60000, h: 3600000 };

export function parseDuration(v: unknown): number | string {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) return `expected a duration (milliseconds as a whole number, or a string like "250ms", "10s", "2m", "1h"), got ${v}`;
    return v;
  }
  if (typeof v === 'string') {
    const m = DURATION_RE.exec(v);
    if (!m) return `expected a duration like "250ms", "10s", "2m" or "1h", got "${v}"`;
    return Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
  }
  return `expected a duration (integer milliseconds or a string like "10s"), got ${describe(v)}`;
}

const RATE_RE = /^\s*(\d+)\s*\/\s*(s|sec|second|m|min|minute|h|hour)\s*$/;

export function parseRate(v: string): RateLimit | null | string {
  if (v.trim() === '') return null;
  const m = RATE_RE.exec(v);
  if (!m) return `expected a rate like "100/s" or "600/m", or "" for off, got "${v}"`;
  const count = Number(m[1]);
  if (count < 1) return `rate must allow at least 1 connection, got "${v}"`;
  const unit = m[2]![0]!;
  const perMs = unit === 's' ? 1000 : unit === 'm' ? 60000 : 3600000;
  return { count, perMs, text: v.trim() };
}

export function normaliseAlgorithm(v: string): string {
  const snake = v
    .trim()
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[-\s]+/g, '_');
  if (snake === 'fastest_response_time') return 'fastest_response';
  if (snake === 'roundrobin') return 'round_robin';
  if (snake === 'weighted_roundrobin' || snake === 'weightedroundrobin') return 'weighted_round_robin';
  if (snake === 'leastconn' || snake === 'leastconnections' || snake === 'least_conn') return 'least_connections';
  return snake;
}

/** Rows read from a table; a key left out takes `inherit`'s value when given, else the row's default. */
export function readRows(list: readonly [string, Row][], table: Raw, prefix: string, report: (path: string, message: string) => void, inherit?: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, field] of list) {
    const v = table[key];
    const r = v === undefined ? (inherit !== undefined ? inherit[key] : defaultOf(field)) : checkField(field, v);
    if (typeof r === 'object' && r !== null && 'error' in r) report(`${prefix}.${key}`, (r as { error: string }).error);
    else out[key] = r;
  }
  return out;
}

export function readFields(s: SectionName, table: Raw, prefix: string, report: (path: string, message: string) => void): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const names = KEYS.get(s)!;
  for (const key of Object.keys(table)) {
    if (!names.includes(key)) report(`${prefix}.${key}`, `unknown key "${key}" in [${prefix.replace(/\[\d+\]$/, '')}]${didYouMean(key, names)}`);
  }
  for (const [key, field] of rows(s)) {
    const path = `${prefix}.${key}`;
    const v = table[key];
    const r = v === undefined ? defaultOf(field) : checkField(field, v);
    if (typeof r === 'object' && r !== null && 'error' in r) report(path, (r as { error: string }).error);
    else out[key] = r;
  }
  return out;
}

export function defaultOf(f: Row): unknown {
  switch (f.kind) {
    case 'cidrs':
    case 'hosts':
    case 'servers':
    case 'steps':
    case 'certificates':
    case 'strings':
      return [];
    case 'rate':
      return null;
    case 'listen':
      return f.def === null ? null : checkField(f, f.def);
    case 'address':
      return undefined;
    default:
      return f.def;
  }
}

type Checked = unknown | { error: string };

/**
 * A value checked against its row. A secret's error names what was expected and the type that
 * was given, never the value: these messages reach the log and /status.
 */
export function checkField(f: Row, v: unknown): Checked {
  const r = checkValue(f, v);
  if (f.secret !== true || typeof r !== 'object' || r === null || !('error' in r)) return r;
  return { error: `expected ${f.kind === 'string' ? 'a string' : `a ${f.kind}`}, got ${typeName(v)} (a secret: its value is not shown)` };
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null || v === undefined) return 'nothing';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'object') return 'a table';
  return `a ${typeof v === 'bigint' ? 'number' : typeof v}`;
}

function checkValue(f: Row, v: unknown): Checked {
  const err = (error: string): { error: string } => ({ error });
  if (typeof v === 'bigint') v = Number(v);
  switch (f.kind) {
    case 'int': {
      if (typeof v !== 'number' || !Number.isInteger(v)) return err(`expected a whole number, got ${describe(v)}`);
      if (v < f.min) return err(f.min === 1 ? `must be greater than 0, got ${v}` : `must be at least ${f.min}, got ${v}`);
      if (f.max !== undefined && v > f.max) return err(`must be at most ${f.max}, got ${v}`);
      return v;
    }
    case 'duration': {
      const d = parseDuration(v);
      if (typeof d === 'string') return err(d);
      if (d === 0 && !f.zeroOk) return err('must be greater than 0');
      if (f.maxMs !== undefined && d > f.maxMs) return err(`must be at most ${f.maxMs / 1000}s, got ${d} ms`);
      if (d > MAX_MS) return err(`must be at most 7 days, got ${d} ms`);
      return d;
    }
    case 'enum': {
      if (typeof v !== 'string') return err(`expected one of ${f.values.map((x) => `"${x}"`).join(', ')}, got ${describe(v)}`);
      const n = f.values === ALGORITHMS ? normaliseAlgorithm(v) : v;
      if (!f.values.includes(n)) return err(`expected one of ${f.values.map((x) => `"${x}"`).join(', ')}, got "${v}"${didYouMean(n, f.values)}`);
      return n;
    }
    case 'string':
      if (typeof v !== 'string') return err(`expected a string, got ${describe(v)}`);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') return err(`expected true or false, got ${describe(v)}`);
      return v;
    case 'fraction':
      if (typeof v !== 'number' || !Number.isFinite(v)) return err(`expected a number between 0 (excluded) and 1, got ${describe(v)}`);
      if (v <= 0 || v > 1) return err(`must be greater than 0 and at most 1, got ${v}`);
      return v;
    case 'listen':
    case 'address': {
      if (typeof v !== 'string') return err(`expected an address "host:port" as a string, got ${describe(v)}`);
      if (f.kind === 'listen' && f.emptyOk && v.trim() === '') return null;
      const hp = parseHostPort(v);
      return typeof hp === 'string' ? err(hp) : hp;
    }
    case 'cidrs': {
      if (!Array.isArray(v)) return err(`expected an array of CIDR strings like ["10.0.0.0/8"], got ${describe(v)}`);
      const out: Cidr[] = [];
      for (const item of v) {
        if (typeof item !== 'string') return err(`expected CIDR strings, got ${describe(item)}`);
        const c = parseCidr(item);
        if (typeof c === 'string') return err(c);
        out.push(c);
      }
      return out;
    }
    case 'hosts': {
      if (!Array.isArray(v)) return err(`expected an array of host names like ["lb1.example.com"], got ${describe(v)}`);
      const out: string[] = [];
      // a set: duplicates found in time linear in the list's length
      const seen = new Set<string>();
      const re = f.wildcard ? WILDCARD_HOST_RE : HOST_RE;
      for (const item of v) {
        if (typeof item !== 'string') return err(`expected host name strings, got ${describe(item)}`);
        const h = item.trim().toLowerCase().replace(/\.$/, '');
        if (!re.test(h)) return err(`"${item}" is not a host name${f.wildcard ? ' or a wildcard "*.example.org"' : ''} (write the name alone, without scheme, port or path)`);
        if (seen.has(h)) return err(`"${item}" is listed twice`);
        seen.add(h);
        out.push(h);
      }
      return out;
    }
    case 'servers': {
      if (!Array.isArray(v)) return err(`expected an array of DNS server addresses like ["127.0.0.1:53"], got ${describe(v)}`);
      const out: string[] = [];
      for (const item of v) {
        if (typeof item !== 'string') return err(`expected DNS server address strings, got ${describe(item)}`);
        const hp = parseIp(item) !== null ? { host: item.trim(), port: 53 } : parseHostPort(item);
        if (typeof hp === 'string' || parseIp(hp.host) === null) return err(`"${item}" is not a DNS server address: expected "ip" or "ip:port", e.g. "127.0.0.1:53" or "[::1]:53"`);
        out.push(formatHostPort(hp));
      }
      return out;
    }
    case 'rate': {
      if (typeof v !== 'string') return err(`expected a rate string like "100/s", got ${describe(v)}`);
      const r = parseRate(v);
      return typeof r === 'string' ? err(r) : r;
    }
    case 'bytes':
    case 'regex':
      return checkText(f.kind, v);
    case 'steps':
      return checkSteps(v);
    case 'certificates': {
      const shape = 'an array of tables like [{ cert = "/etc/lemonade/tls/a.pem", key = "/etc/lemonade/tls/a.key" }]';
      if (!Array.isArray(v)) return err(`expected ${shape}, got ${describe(v)}`);
      const out: { cert: string; key: string }[] = [];
      for (const [i, item] of v.entries()) {
        if (typeof item !== 'object' || item === null || Array.isArray(item)) return err(`expected ${shape}, got ${describe(item)} at [${i}]`);
        const t = item as Record<string, unknown>;
        for (const k of Object.keys(t)) if (k !== 'cert' && k !== 'key') return err(`unknown key "${k}" in certificate [${i}] (expected cert and key)`);
        for (const k of ['cert', 'key'] as const) {
          if (typeof t[k] !== 'string' || (t[k] as string).trim() === '') return err(`certificate [${i}] needs ${k}, the path of a PEM file, got ${describe(t[k])}`);
        }
        out.push({ cert: t['cert'] as string, key: t['key'] as string });
      }
      return out;
    }
    case 'strings': {
      if (!Array.isArray(v)) return err(`expected an array of strings like ["h2", "http/1.1"], got ${describe(v)}`);
      for (const item of v) {
        if (typeof item !== 'string' || item === '' || Buffer.byteLength(item) > 255) return err(`expected non-empty strings of at most 255 bytes, got ${describe(item)}`);
      }
      return v as string[];
    }
  }
}

const HOST_RE = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
const WILDCARD_HOST_RE = /^(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
