// Read + TOML parse + environment overrides + validate → frozen Config, or every problem.

import { readFileSync, statSync } from 'node:fs';
import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import TOML from '@iarna/toml';
import { DEFAULT_SERVICE, ENV_SETTINGS, SCHEMA, SECRET_PATHS, settingsOf, validate, type CertificateFiles, type Config } from './schema';
import { PROCESS_ENV } from './environment';
import { readAdminTls, type AdminTls } from './admin-tls';
import { readTicketKey } from './ticket-keys';
import { ConfigInvalidError, ConfigMissingError, ConfigReadError, type ConfigIssue } from '../errors';

export const DEFAULT_CONFIG_PATH = PROCESS_ENV.config.def;

export interface Loaded {
  readonly config: Config;
  /** the file read, or "(environment)" when running from the environment alone */
  readonly path: string;
  /** sha256 of the file's bytes, "" without a file: compared by the watcher, never shown */
  readonly hash: string;
  /** sha256 of the file with every secret value blanked, "" without a file: the one shown */
  readonly shownHash: string;
  /** the file's text, "" without a file */
  readonly text: string;
  /** [admin] tls_cert and tls_key as read and checked; null = plain HTTP */
  readonly adminTls: AdminTls | null;
  /** [tls_tickets] key_file's key as read and checked (a secret); null = none named */
  readonly ticketKey: Buffer | null;
  /** sha256 of each tls file as read (unreadable ones absent): which files a reload renewed */
  readonly fileDigests: ReadonlyMap<string, string>;
}

export type Env = Readonly<Record<string, string | undefined>>;

/** The largest configuration file read; a larger one is refused before it is parsed. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

export interface ConfigSource {
  readonly path: string;
  /** named by --config or $LEMONADE_LB_CONFIG: then it must exist */
  readonly explicit: boolean;
}

/** The file to read: --config, then $LEMONADE_LB_CONFIG, then /etc/lemonade/config.toml. */
export function resolveConfigPath(cli: string | undefined, env: Env): ConfigSource {
  const named = cli ?? env[PROCESS_ENV.config.name];
  return named === undefined ? { path: DEFAULT_CONFIG_PATH, explicit: false } : { path: named, explicit: true };
}

/**
 * Load and validate. Throws ConfigMissingError, ConfigReadError or ConfigInvalidError (with every
 * issue); never anything else for bad input.
 */
export function loadConfig(src: ConfigSource | string, env: Env = process.env): Loaded {
  const source = typeof src === 'string' ? { path: src, explicit: false } : src;
  return loadFromText(source.path, readConfigText(source, env), env);
}

/**
 * The file's text; null when the default file is absent but the environment names the backends
 * (a file named explicitly must exist).
 */
export function readConfigText(src: ConfigSource, env: Env): string | null {
  const { path } = src;
  try {
    const size = statSync(path).size;
    if (size > MAX_CONFIG_BYTES) {
      throw new ConfigInvalidError(path, [{ path: '(file)', message: `the file is ${size} bytes; a configuration file may be at most 1 MiB (${MAX_CONFIG_BYTES} bytes)` }]);
    }
    return readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof ConfigInvalidError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !src.explicit && env[PROCESS_ENV.backendAddresses.name]) return null;
    if (code === 'ENOENT') throw new ConfigMissingError(path, src.explicit);
    throw new ConfigReadError(path, (e as Error).message);
  }
}

/** Validate text already read from `path` (null = no file: the environment alone). */
export function loadFromText(path: string, text: string | null, env: Env): Loaded {
  if (text !== null && Buffer.byteLength(text) > MAX_CONFIG_BYTES) {
    throw new ConfigInvalidError(path, [{ path: '(file)', message: `the text is ${Buffer.byteLength(text)} bytes; a configuration file may be at most 1 MiB (${MAX_CONFIG_BYTES} bytes)` }]);
  }
  const result = parseAndValidate(text ?? '', env);
  const shown = text === null ? '(environment)' : path;
  if (!result.ok) throw new ConfigInvalidError(shown, result.issues);
  const config = result.config;
  // the files the tls tables and [admin] name are part of the load: a bad one fails it whole
  const files = new Map<string, Buffer | null>();
  const fileIssues = checkTlsFiles(config, files);
  const adminTls = readAdminTls(config, fileIssues, (f) => {
    const bytes = readFileSync(f);
    files.set(f, bytes);
    return bytes;
  });
  const ticketKey = readTicketKey(config, fileIssues, (f) => {
    const bytes = readFileSync(f);
    files.set(f, bytes);
    return bytes;
  });
  if (fileIssues.length > 0) throw new ConfigInvalidError(shown, fileIssues);
  const named = tlsFiles(config).map((f) => [f, files.has(f) ? files.get(f)! : readOrNull(f)] as const);
  const fileDigests = new Map<string, string>();
  for (const [f, bytes] of named) if (bytes !== null) fileDigests.set(f, createHash('sha256').update(bytes).digest('hex'));
  return {
    config,
    path: shown,
    // in tlsFiles' order, the watcher's: the same files hash the same whatever read them first
    hash: text === null ? '' : contentHash(text, named),
    shownHash: text === null ? '' : sha256(blankSecrets(text, config)),
    text: text ?? '',
    adminTls,
    ticketKey,
    fileDigests,
  };
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * What the watcher compares: the file's text and the contents of the files its tls tables and
 * [admin] name (null: unreadable), so that a certificate renewed in place is a change. Without tls files, the
 * text's hash alone.
 */
export function contentHash(text: string, files: readonly (readonly [string, Buffer | null])[]): string {
  if (files.length === 0) return sha256(text);
  const h = createHash('sha256').update(text);
  for (const [path, bytes] of files) {
    h.update(`\0${path}\0`);
    if (bytes === null) h.update('(unreadable)');
    else h.update(createHash('sha256').update(bytes).digest());
  }
  return h.digest('hex');
}

/** contentHash() of the text and the files named, read now (the watcher's and a reload's view). */
export function hashWithFiles(text: string, paths: readonly string[]): string {
  return contentHash(
    text,
    paths.map((p) => [p, readOrNull(p)] as const),
  );
}

function readOrNull(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch {
    return null;
  }
}

/** Every file the tls tables, [admin] and [tls_tickets] name (certificates, keys, client CAs, the ticket key), each once, in table order. */
export function tlsFiles(config: Config): string[] {
  const out = new Set<string>();
  for (const f of [config.admin.tlsCert, config.admin.tlsKey]) if (f !== '') out.add(f);
  for (const svc of config.services) {
    if (svc.tls === null) continue;
    for (const c of svc.tls.certificates) {
      out.add(c.cert);
      out.add(c.key);
    }
    if (svc.tls.clientCa !== '') out.add(svc.tls.clientCa);
  }
  for (const svc of config.services) {
    const o = svc.backendTls;
    if (o === null) continue;
    for (const f of [o.ca, o.cert, o.key]) if (f !== '') out.add(f);
  }
  if (config.tls_tickets.keyFile !== '') out.add(config.tls_tickets.keyFile);
  return [...out];
}

/** The key path of each service's tls table as the file writes it: `tls` (the default service) or `services[i].tls`. */
export function tlsTablePath(config: Config, i: number, table: 'tls' | 'backend_tls' = 'tls'): string {
  const hasDefault = config.services[0]?.name === DEFAULT_SERVICE;
  return config.services[i]!.name === DEFAULT_SERVICE ? table : `services[${hasDefault ? i - 1 : i}].${table}`;
}

const PEM_CERT = '-----BEGIN CERTIFICATE-----';

/**
 * Each file a tls table names, read and checked: readable, PEM, a certificate that parses, a
 * private key that matches its certificate. `read` gets every file's bytes (null: unreadable).
 * The issues name the key path and the file, never a key's contents.
 */
function checkTlsFiles(config: Config, read: Map<string, Buffer | null>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const load = (path: string, at: string): Buffer | null => {
    if (!read.has(path)) {
      try {
        read.set(path, readFileSync(path));
      } catch (e) {
        read.set(path, null);
        issues.push({ path: at, message: `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
        return null;
      }
    }
    return read.get(path)!;
  };
  const certificate = (path: string, at: string): X509Certificate | null => {
    const bytes = load(path, at);
    if (bytes === null) return null;
    if (!bytes.includes(PEM_CERT)) {
      issues.push({ path: at, message: `${path} is not a PEM certificate (no "${PEM_CERT}" line)` });
      return null;
    }
    try {
      return new X509Certificate(bytes);
    } catch (e) {
      issues.push({ path: at, message: `${path}: the certificate does not parse (${(e as Error).message})` });
      return null;
    }
  };
  const pair = (c: CertificateFiles, certAt: string, keyAt: string): void => {
    const cert = certificate(c.cert, certAt);
    const bytes = load(c.key, keyAt);
    if (bytes === null) return;
    let key: KeyObject;
    try {
      key = createPrivateKey(bytes);
    } catch {
      // the parser's message is not shown: it could quote what it read
      issues.push({ path: keyAt, message: `${c.key} is not a PEM private key` });
      return;
    }
    if (cert !== null && !cert.checkPrivateKey(key)) issues.push({ path: keyAt, message: `the key in ${c.key} does not match the certificate in ${c.cert}` });
  };
  config.services.forEach((svc, i) => {
    if (svc.tls === null) return;
    const at = tlsTablePath(config, i);
    svc.tls.certificates.forEach((c, j) => pair(c, `${at}.certificates[${j}].cert`, `${at}.certificates[${j}].key`));
    if (svc.tls.clientCa !== '') certificate(svc.tls.clientCa, `${at}.client_ca`);
  });
  config.services.forEach((svc, i) => {
    const o = svc.backendTls;
    if (o === null) return;
    const at = tlsTablePath(config, i, 'backend_tls');
    if (o.ca !== '') certificate(o.ca, `${at}.ca`);
    if (o.cert !== '') pair(o, `${at}.cert`, `${at}.key`);
  });
  return issues;
}

/**
 * The text with every occurrence of each secret value removed, so that a hash of it cannot be
 * used to check a guess of the secret offline.
 */
export function blankSecrets(text: string, config: Config): string {
  let out = text;
  for (const v of secretValues(config)) out = out.split(v).join('');
  return out;
}

/** The values of the settings marked secret in the schema (non-empty ones). */
export function secretValues(config: Config): string[] {
  return settingsOf(config).flatMap((s) => (SECRET_PATHS.includes(s.path) && typeof s.value === 'string' && s.value !== '' ? [s.value] : []));
}

export type ParseResult = { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] };

/** Parse TOML text, apply the environment, validate. Pure apart from reading `env`. */
export function parseAndValidate(text: string, env: Env): ParseResult {
  const deep = tooDeep(text);
  if (deep) return { ok: false, issues: [deep] };
  let raw: Record<string, unknown>;
  try {
    raw = TOML.parse(text) as Record<string, unknown>;
  } catch (e) {
    const te = e as { line?: number; col?: number; message?: string };
    const first = String(te.message ?? e).split('\n')[0]!.replace(/ at row \d+, col \d+, pos \d+:?$/, '');
    const line = typeof te.line === 'number' ? te.line + 1 : undefined;
    const issue: ConfigIssue =
      line === undefined
        ? { path: '(syntax)', message: `TOML syntax error: ${first}` }
        : { path: '(syntax)', line, message: `TOML syntax error at column ${(te.col ?? 0) + 1}: ${first}` };
    return { ok: false, issues: [issue] };
  }
  const origins = new Map<string, string>();
  const envIssues = applyEnv(raw, env, origins);
  const lines = locateKeys(text);
  const result = validate(raw, { origins, locate: (p) => locate(lines, p) });
  const issues = [...envIssues, ...(result.ok ? [] : result.issues)];
  if (issues.length > 0) return { ok: false, issues };
  return result as { ok: true; config: Config };
}

/** No setting nests arrays or inline tables more than 2 deep; the TOML parser is slow on thousands. */
export const MAX_NESTING = 32;

/**
 * One pass over the text counting `[` and `{` against `]` and `}` outside strings and comments: a
 * file nesting deeper than MAX_NESTING is refused before the TOML parser spends tens of
 * milliseconds on it. Text this pass misreads is malformed TOML, which the parser refuses anyway.
 */
export function tooDeep(text: string): ConfigIssue | null {
  let depth = 0;
  let line = 1;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x0a) {
      line++;
    } else if (c === 0x23 /* # */) {
      while (i + 1 < n && text.charCodeAt(i + 1) !== 0x0a) i++;
    } else if (c === 0x22 /* " */ || c === 0x27 /* ' */) {
      const q = text[i]!;
      const end = text.startsWith(q + q + q, i) ? q + q + q : q;
      const multi = end.length === 3;
      for (i += end.length; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x0a) {
          line++;
          if (!multi) break;
        } else if (d === 0x5c /* backslash */ && c === 0x22) {
          if (text.charCodeAt(i + 1) === 0x0a) line++;
          i++;
        } else if (text.startsWith(end, i)) {
          i += end.length - 1;
          // a multi-line string may close with up to two quotes of its own before the delimiter
          while (multi && text[i + 1] === q) i++;
          break;
        }
      }
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > MAX_NESTING) {
        return { path: '(syntax)', line, message: `arrays or inline tables nested more than ${MAX_NESTING} deep (no setting nests more than 2)` };
      }
    } else if ((c === 0x5d /* ] */ || c === 0x7d) /* } */ && depth > 0) {
      depth--;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Environment overrides

// Each LEMONADE_LB_* variable that overrides one setting is the `env` column of its row in the
// settings tables (ENV_SETTINGS); the backend list and the file's path are the two others, and the
// process-level variables (./environment.ts) are checked here with the rest.

/** The variables that configure the balancer: the settings' overrides, the backend list and the file. */
export const ENV_VARIABLES = [...ENV_SETTINGS.map((t) => t.name), PROCESS_ENV.backendAddresses.name, PROCESS_ENV.config.name];

/**
 * The environment overrides the default service only: a [[services]] entry that leaves
 * an overridable key out keeps inheriting the file's value (or the key's default), so that value
 * is written into the entry before the override replaces the top-level one.
 */
function keepForServices(raw: Record<string, unknown>, section: string, key: string): void {
  const row = (SCHEMA as unknown as Record<string, Record<string, { overridable?: true; def?: unknown }>>)[section]?.[key];
  const services = raw['services'];
  if (!row?.overridable || !Array.isArray(services)) return;
  const sec = raw[section];
  const fileValue = typeof sec === 'object' && sec !== null && !Array.isArray(sec) ? (sec as Record<string, unknown>)[key] : undefined;
  const value = fileValue ?? row.def;
  if (value === undefined) return;
  for (const svc of services) {
    if (typeof svc !== 'object' || svc === null || Array.isArray(svc)) continue;
    const t = svc as Record<string, unknown>;
    // [services.health] keys sit in the entry's own health table; the others in the entry
    const target = section === 'health' ? ((t['health'] ??= {}) as Record<string, unknown>) : section === 'strategy' || section === 'proxy' ? t : null;
    if (target !== null && typeof target === 'object' && !Array.isArray(target) && target[key] === undefined) target[key] = value;
  }
}

function applyEnv(raw: Record<string, unknown>, env: Env, origins: Map<string, string>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const t of ENV_SETTINGS) {
    const name = t.name;
    const v = env[name];
    if (v === undefined) continue;
    let value: unknown = v;
    if (t.kind === 'int') {
      if (!/^\s*\d+\s*$/.test(v)) {
        issues.push({ path: name, message: `expected a whole number, got "${v}"` });
        continue;
      }
      value = Number(v);
    }
    if (t.section === 'strategy' && typeof raw['strategy'] === 'string') raw['strategy'] = { algorithm: raw['strategy'] };
    keepForServices(raw, t.section, t.key);
    const sec = raw[t.section];
    if (sec === undefined) raw[t.section] = { [t.key]: value };
    else if (typeof sec === 'object' && sec !== null && !Array.isArray(sec)) (sec as Record<string, unknown>)[t.key] = value;
    else continue; // the section itself is malformed: validate() reports it
    origins.set(`${t.section}.${t.key}`, name);
  }
  for (const { name, check } of [PROCESS_ENV.log, PROCESS_ENV.logFormat]) {
    const v = env[name];
    const problem = v === undefined || v === '' ? null : check(v);
    if (problem !== null) issues.push({ path: name, message: problem });
  }
  const listName = PROCESS_ENV.backendAddresses.name;
  const list = env[listName];
  if (list !== undefined) {
    const addresses = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (addresses.length === 0) {
      issues.push({ path: listName, message: 'expected a comma-separated list of host:port, got nothing' });
    } else {
      raw['backends'] = addresses.map((address, i) => ({ id: i, name: `backend-${i + 1}`, address }));
      addresses.forEach((_, i) => origins.set(`backends[${i}].address`, listName));
    }
  }
  return issues;
}

// ---------------------------------------------------------------------------------------------
// Line locator: where each key path stands in the text, for error messages.

export function locateKeys(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const arrayCounts = new Map<string, number>();
  let table = '';
  const lines = text.split(/\r?\n/);
  let inMultiline: string | null = null;
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (inMultiline) {
      if (line.includes(inMultiline)) inMultiline = null;
      continue;
    }
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    let m = /^\[\[\s*([A-Za-z0-9_.\-]+)\s*\]\]/.exec(trimmed);
    if (m) {
      const name = within(m[1]!, arrayCounts);
      const idx = arrayCounts.get(name) ?? 0;
      arrayCounts.set(name, idx + 1);
      table = `${name}[${idx}]`;
      if (!out.has(name)) out.set(name, n + 1);
      out.set(table, n + 1);
      continue;
    }
    m = /^\[\s*([A-Za-z0-9_.\-]+)\s*\]/.exec(trimmed);
    if (m) {
      table = within(m[1]!, arrayCounts);
      out.set(table, n + 1);
      continue;
    }
    m = /^([A-Za-z0-9_\-]+)\s*=\s*(.*)$/.exec(trimmed);
    if (m) {
      const path = table === '' ? m[1]! : `${table}.${m[1]}`;
      if (!out.has(path)) out.set(path, n + 1);
      const rest = m[2]!;
      for (const q of ['"""', "'''"]) {
        if (rest.startsWith(q) && rest.indexOf(q, 3) < 0) inMultiline = q;
      }
    }
  }
  return out;
}

/**
 * A dotted table header as the key path of the table it opens: a prefix naming an array of
 * tables means its latest entry, as TOML reads it (`[services.health]` after the second
 * `[[services]]` is `services[1].health`; `[[services.backends]]` counts within its service).
 */
function within(header: string, arrayCounts: ReadonlyMap<string, number>): string {
  const parts = header.split('.');
  let path = '';
  parts.forEach((part, i) => {
    path = path === '' ? part : `${path}.${part}`;
    const count = arrayCounts.get(path);
    if (i < parts.length - 1 && count !== undefined) path = `${path}[${count - 1}]`;
  });
  return path;
}

function locate(lines: Map<string, number>, path: string): number | undefined {
  let p = path;
  for (;;) {
    const hit = lines.get(p);
    if (hit !== undefined) return hit;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    if (cut <= 0) return undefined;
    p = p.slice(0, cut);
  }
}
