// The configuration's types, its defaults in one table, and validate(): raw TOML object →
// frozen Config or the list of every problem. Pure: no fs, no net, no logger.

import type { ConfigIssue } from '../errors';
import { parseHostPort, parseCidr, formatHostPort, type Cidr, type HostPort } from '../core/address';

export const ALGORITHMS = [
  'round_robin',
  'weighted_round_robin',
  'least_connections',
  'fastest_response',
  'adaptive',
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export type ProxyProtocol = 'off' | 'v1' | 'v2';
export type HealthKind = 'tcp' | 'http';

export interface BackendConfig {
  readonly id: number;
  readonly name: string;
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly maxConnections: number;
  readonly backup: boolean;
}

export interface RateLimit {
  readonly count: number;
  readonly perMs: number;
  readonly text: string;
}

export interface Config {
  readonly runtime: {
    readonly metricsCap: number;
    readonly healthCap: number;
    readonly drainTimeoutMs: number;
    readonly backgroundTimeoutMs: number;
    readonly acceptTimeoutMs: number;
    readonly configWatchIntervalMs: number;
    readonly workers: number;
  };
  readonly proxy: {
    readonly listenAddress: string;
    readonly listen: HostPort;
    readonly maxConnections: number;
    readonly connectTimeoutMs: number;
    readonly idleTimeoutMs: number;
    readonly connectRetries: number;
    readonly proxyProtocol: ProxyProtocol;
    readonly allow: readonly Cidr[];
    readonly deny: readonly Cidr[];
    readonly clientRateLimit: RateLimit | null;
    readonly clientMaxConnections: number;
  };
  readonly strategy: Algorithm;
  readonly backends: readonly BackendConfig[];
  readonly health: {
    readonly intervalMs: number;
    readonly timeoutMs: number;
    readonly kind: HealthKind;
    readonly path: string;
    readonly healthyThreshold: number;
    readonly unhealthyThreshold: number;
    readonly slowStartMs: number;
  };
  readonly metrics: { readonly intervalMs: number };
  readonly admin: {
    readonly listenAddress: string;
    readonly listen: HostPort | null;
    readonly token: string;
    /** lower case, no trailing dot: the names a Host header may carry besides IPs and localhost */
    readonly allowedHosts: readonly string[];
  };
}

// ---------------------------------------------------------------------------------------------
// Field descriptors and the one table of defaults.

type Field =
  | { readonly kind: 'int'; readonly def: number; readonly min: number; readonly max?: number; readonly doc: string }
  | { readonly kind: 'duration'; readonly def: number; readonly zeroOk?: boolean; readonly doc: string }
  | { readonly kind: 'enum'; readonly def: string; readonly values: readonly string[]; readonly doc: string }
  | { readonly kind: 'string'; readonly def: string; readonly doc: string; readonly secret?: true }
  | { readonly kind: 'listen'; readonly def: string | null; readonly emptyOk: boolean; readonly doc: string }
  | { readonly kind: 'address'; readonly def: string | null; readonly doc: string }
  | { readonly kind: 'cidrs'; readonly doc: string }
  | { readonly kind: 'hosts'; readonly doc: string }
  | { readonly kind: 'rate'; readonly def: string; readonly doc: string }
  | { readonly kind: 'bool'; readonly def: boolean; readonly doc: string };

const MAX_MS = 7 * 24 * 3600 * 1000;

export const SCHEMA = {
  runtime: {
    metrics_cap: { kind: 'int', def: 10000, min: 1, doc: 'bound of the in-memory metric event buffer' },
    health_cap: { kind: 'int', def: 1000, min: 1, doc: 'bound of the health event history kept for /status' },
    drain_timeout_millis: { kind: 'duration', def: 30000, doc: 'how long draining connections may live' },
    background_timeout_millis: { kind: 'duration', def: 60000, doc: 'how long background tasks get to stop' },
    accept_timeout_millis: { kind: 'duration', def: 120000, doc: 'hard upper bound on the whole shutdown' },
    config_watch_interval_millis: { kind: 'duration', def: 5000, doc: 'config file poll period' },
    workers: { kind: 'int', def: 1, min: 0, max: 256, doc: 'data-plane processes; 0 = one per CPU' },
  },
  proxy: {
    listen_address: { kind: 'listen', def: null, emptyOk: false, doc: 'host:port the balancer listens on' },
    max_connections: { kind: 'int', def: 100000, min: 1, doc: 'concurrent client connections, hard cap' },
    connect_timeout: { kind: 'duration', def: 3000, doc: 'connect timeout to a backend' },
    idle_timeout: { kind: 'duration', def: 3600000, doc: 'close a connection idle both ways this long' },
    connect_retries: { kind: 'int', def: 2, min: 0, max: 100, doc: 'other backends tried when a connect fails' },
    proxy_protocol: { kind: 'enum', def: 'off', values: ['off', 'v1', 'v2'], doc: 'PROXY header sent to backends' },
    allow: { kind: 'cidrs', doc: 'client CIDRs allowed; empty = all' },
    deny: { kind: 'cidrs', doc: 'client CIDRs refused' },
    client_rate_limit: { kind: 'rate', def: '', doc: 'new connections per client address, e.g. "100/s"' },
    client_max_connections: { kind: 'int', def: 0, min: 0, doc: 'concurrent connections per client address; 0 = off' },
  },
  strategy: {
    algorithm: { kind: 'enum', def: 'adaptive', values: ALGORITHMS, doc: 'balancing algorithm' },
  },
  backends: {
    id: { kind: 'int', def: -1, min: 0, max: 2 ** 31 - 1, doc: 'unique integer identity' },
    name: { kind: 'string', def: '', doc: 'unique name' },
    address: { kind: 'address', def: null, doc: 'host:port' },
    weight: { kind: 'int', def: 1, min: 0, max: 1_000_000, doc: 'relative weight; 0 = no new connections' },
    max_connections: { kind: 'int', def: 0, min: 0, doc: 'per-backend cap; 0 = unlimited' },
    backup: { kind: 'bool', def: false, doc: 'used only when no primary is usable' },
  },
  health: {
    interval: { kind: 'duration', def: 10000, doc: 'active check period' },
    timeout: { kind: 'duration', def: 3000, doc: 'bound on one check' },
    kind: { kind: 'enum', def: 'tcp', values: ['tcp', 'http'], doc: 'tcp connect or http GET' },
    path: { kind: 'string', def: '/health', doc: 'path of the http check' },
    healthy_threshold: { kind: 'int', def: 2, min: 1, max: 1000, doc: 'successes to come back' },
    unhealthy_threshold: { kind: 'int', def: 3, min: 1, max: 1000, doc: 'failures to go down' },
    slow_start: { kind: 'duration', def: 0, zeroOk: true, doc: 'weight ramp-up time after coming back' },
  },
  metrics: {
    interval: { kind: 'duration', def: 30000, doc: 'summary log period' },
  },
  admin: {
    listen_address: { kind: 'listen', def: '127.0.0.1:9090', emptyOk: true, doc: 'admin API address; "" disables' },
    token: { kind: 'string', def: '', doc: 'bearer token for mutating endpoints', secret: true },
    allowed_hosts: { kind: 'hosts', doc: 'host names the admin API answers to besides IPs and localhost' },
  },
} as const satisfies Record<string, Record<string, Field>>;

export type SectionName = keyof typeof SCHEMA;
const SECTIONS = Object.keys(SCHEMA) as SectionName[];

/** File key paths of the settings marked `secret`: never shown (logs, diffs, /status, hashes). */
export const SECRET_PATHS: readonly string[] = Object.freeze(
  SECTIONS.flatMap((s) => Object.entries(SCHEMA[s] as Record<string, Field>).filter(([, f]) => f.kind === 'string' && f.secret === true).map(([k]) => `${s}.${k}`)),
);

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

function describe(v: unknown): string {
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

// ---------------------------------------------------------------------------------------------
// validate()

export interface ValidateContext {
  /** 1-based line where a key path (or its nearest ancestor) stands in the file */
  readonly locate?: (path: string) => number | undefined;
  /** key paths whose value came from an environment variable, with its name */
  readonly origins?: ReadonlyMap<string, string>;
}

export type ValidateResult = { readonly ok: true; readonly config: Config } | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

type Raw = Record<string, unknown>;

function isTable(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function validate(raw: Raw, ctx: ValidateContext = {}): ValidateResult {
  const issues: ConfigIssue[] = [];
  const report = (path: string, message: string): void => {
    const env = ctx.origins?.get(path);
    if (env) {
      issues.push({ path: env, message: `${message} (from the environment, for ${path})` });
      return;
    }
    const line = ctx.locate?.(path);
    issues.push(line === undefined ? { path, message } : { path, line, message });
  };

  // The older top-level `strategy = "…"` form.
  const top: Raw = { ...raw };
  if (typeof top['strategy'] === 'string') top['strategy'] = { algorithm: top['strategy'] };

  for (const key of Object.keys(top)) {
    if (!(SECTIONS as string[]).includes(key)) {
      report(key, `unknown section or key "${key}"${didYouMean(key, SECTIONS)}`);
    }
  }

  const section = (name: Exclude<SectionName, 'backends'>): Record<string, unknown> => {
    const v = top[name];
    if (v === undefined) return {};
    if (!isTable(v)) {
      report(name, `expected a table [${name}], got ${describe(v)}`);
      return {};
    }
    return v;
  };

  const values = (name: Exclude<SectionName, 'backends'>, table = section(name)): Record<string, unknown> => readFields(SCHEMA[name], table, name, report);

  const rt = values('runtime');
  const proxyTable = section('proxy');
  const px = values('proxy', proxyTable);
  const st = values('strategy');
  const hl = values('health');
  const mt = values('metrics');
  const ad = values('admin');

  // backends
  const backends: BackendConfig[] = [];
  const rawBackends = top['backends'];
  if (rawBackends === undefined || (Array.isArray(rawBackends) && rawBackends.length === 0)) {
    report('backends', 'at least one [[backends]] entry is required (or set LEMONADE_LB_BACKEND_ADDRESSES)');
  } else if (!Array.isArray(rawBackends)) {
    report('backends', `expected an array of tables [[backends]], got ${describe(rawBackends)}`);
  } else {
    const seen = { id: new Map<number, number>(), name: new Map<string, number>(), address: new Map<string, number>() };
    rawBackends.forEach((b: unknown, i: number) => {
      const p = `backends[${i}]`;
      if (!isTable(b)) {
        report(p, `expected a table, got ${describe(b)}`);
        return;
      }
      const f = readFields(SCHEMA.backends, b, p, report);
      const id = b['id'] === undefined ? i : (f['id'] as number | undefined);
      const name = typeof f['name'] === 'string' && f['name'] !== '' ? (f['name'] as string) : `backend-${(id ?? i) + 1}`;
      if (b['name'] !== undefined && f['name'] === '') report(`${p}.name`, 'expected a non-empty name');
      const hp = f['address'] as HostPort | undefined;
      if (b['address'] === undefined) report(`${p}.address`, 'every backend needs an address "host:port"');
      const dup = <K>(kind: 'id' | 'name' | 'address', map: Map<K, number>, key: K | undefined): void => {
        if (key === undefined) return;
        const prev = map.get(key);
        if (prev !== undefined) report(`${p}.${kind}`, `duplicate ${kind} ${JSON.stringify(key)} (also backends[${prev}])`);
        else map.set(key, i);
      };
      dup('id', seen.id, id);
      dup('name', seen.name, name);
      const addressText = hp ? formatHostPort(hp) : undefined;
      dup('address', seen.address, addressText);
      if (id === undefined || !hp || addressText === undefined) return;
      backends.push({
        id,
        name,
        address: addressText,
        host: hp.host,
        port: hp.port,
        weight: f['weight'] as number,
        maxConnections: f['max_connections'] as number,
        backup: f['backup'] as boolean,
      });
    });
  }

  if (px['listen_address'] === null && proxyTable['listen_address'] === undefined) {
    report('proxy.listen_address', 'required: the address to listen on, e.g. "0.0.0.0:8080" (or set LEMONADE_LB_LISTEN_ADDRESS)');
  }

  if (issues.length > 0) return { ok: false, issues };

  const listen = px['listen_address'] as HostPort;
  const adminListen = ad['listen_address'] as HostPort | null;
  const config: Config = {
    runtime: {
      metricsCap: rt['metrics_cap'] as number,
      healthCap: rt['health_cap'] as number,
      drainTimeoutMs: rt['drain_timeout_millis'] as number,
      backgroundTimeoutMs: rt['background_timeout_millis'] as number,
      acceptTimeoutMs: rt['accept_timeout_millis'] as number,
      configWatchIntervalMs: rt['config_watch_interval_millis'] as number,
      workers: rt['workers'] as number,
    },
    proxy: {
      listenAddress: formatHostPort(listen),
      listen,
      maxConnections: px['max_connections'] as number,
      connectTimeoutMs: px['connect_timeout'] as number,
      idleTimeoutMs: px['idle_timeout'] as number,
      connectRetries: px['connect_retries'] as number,
      proxyProtocol: px['proxy_protocol'] as ProxyProtocol,
      allow: px['allow'] as Cidr[],
      deny: px['deny'] as Cidr[],
      clientRateLimit: px['client_rate_limit'] as RateLimit | null,
      clientMaxConnections: px['client_max_connections'] as number,
    },
    strategy: st['algorithm'] as Algorithm,
    backends,
    health: {
      intervalMs: hl['interval'] as number,
      timeoutMs: hl['timeout'] as number,
      kind: hl['kind'] as HealthKind,
      path: hl['path'] as string,
      healthyThreshold: hl['healthy_threshold'] as number,
      unhealthyThreshold: hl['unhealthy_threshold'] as number,
      slowStartMs: hl['slow_start'] as number,
    },
    metrics: { intervalMs: mt['interval'] as number },
    admin: {
      listenAddress: adminListen ? formatHostPort(adminListen) : '',
      listen: adminListen,
      token: ad['token'] as string,
      allowedHosts: ad['allowed_hosts'] as string[],
    },
  };
  return { ok: true, config: deepFreeze(config) };
}

function readFields(
  fields: Record<string, Field>,
  table: Raw,
  prefix: string,
  report: (path: string, message: string) => void,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const names = Object.keys(fields);
  for (const key of Object.keys(table)) {
    if (!names.includes(key)) report(`${prefix}.${key}`, `unknown key "${key}" in [${prefix.replace(/\[\d+\]$/, '')}]${didYouMean(key, names)}`);
  }
  for (const [key, field] of Object.entries(fields)) {
    const path = `${prefix}.${key}`;
    const v = table[key];
    const r = v === undefined ? defaultOf(field) : checkField(field, v);
    if (typeof r === 'object' && r !== null && 'error' in r) report(path, (r as { error: string }).error);
    else out[key] = r;
  }
  return out;
}

function defaultOf(f: Field): unknown {
  switch (f.kind) {
    case 'cidrs':
    case 'hosts':
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

function checkField(f: Field, v: unknown): Checked {
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
      for (const item of v) {
        if (typeof item !== 'string') return err(`expected host name strings, got ${describe(item)}`);
        const h = item.trim().toLowerCase().replace(/\.$/, '');
        if (!/^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/.test(h)) return err(`"${item}" is not a host name (write the name alone, without scheme, port or path)`);
        out.push(h);
      }
      return out;
    }
    case 'rate': {
      if (typeof v !== 'string') return err(`expected a rate string like "100/s", got ${describe(v)}`);
      const r = parseRate(v);
      return typeof r === 'string' ? err(r) : r;
    }
  }
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o) && !(o instanceof Uint8Array)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
