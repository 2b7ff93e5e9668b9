// The settings, declared once: one table per section below, from which the Config type, the
// defaults, validate() (raw TOML object → frozen Config or the list of every problem), the
// environment overrides (config/load.ts), the diff's key names (config/diff.ts) and the README's
// reference rows (test/config-docs.test.ts) are all read. Pure: no fs, no net, no logger.

import type { ConfigIssue } from '../errors';
import { parseHostPort, parseCidr, parseIp, formatHostPort, type Cidr, type HostPort } from './address';
import { compileRegex, MAX_STEPS, unescape, type StepText } from '../health/send-expect';

export const ALGORITHMS = [
  'round_robin',
  'weighted_round_robin',
  'least_connections',
  'fastest_response',
  'adaptive',
  'consistent_hash',
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** What consistent_hash hashes: the client's IP, or the TLS server name read from the ClientHello (hash_key = "sni"). */
export const HASH_KEYS = ['source_ip', 'sni'] as const;

export interface RateLimit {
  readonly count: number;
  readonly perMs: number;
  readonly text: string;
}

// ---------------------------------------------------------------------------------------------
// The tables. A row is one key of the file, named as the file spells it, and says:
//   prop         the property it becomes in Config (`parsed`: a second one with the parsed address)
//   kind         how it is read and checked, with its default (`def`) and range (`min`, `max`, …)
//   env          the LEMONADE_LB_* variable that overrides it, if any (integers for int/duration)
//   doc          its line in the README's reference table (`shown`: the default as the README
//                writes it, where the value alone does not say it)
//   secret       never shown: logs, diffs, /status, the shown hash
//   overridable  a [[services]] entry may set its own value, defaulting to this one
// Adding a key is one row here and its README row (test/config-docs.test.ts demands it).

type Row = {
  readonly prop: string;
  readonly doc: string;
  readonly env?: string;
  readonly shown?: string;
  readonly secret?: true;
  readonly overridable?: true;
} & (
  | { readonly kind: 'int'; readonly def: number; readonly min: number; readonly max?: number }
  | { readonly kind: 'duration'; readonly def: number; readonly zeroOk?: boolean }
  | { readonly kind: 'enum'; readonly def: string; readonly values: readonly string[] }
  | { readonly kind: 'string'; readonly def: string }
  | { readonly kind: 'listen'; readonly def: string | null; readonly emptyOk: boolean; readonly parsed: string }
  | { readonly kind: 'address'; readonly def: null }
  | { readonly kind: 'cidrs' }
  /** host names, lower case; `wildcard`: a leading `*.` is allowed */
  | { readonly kind: 'hosts'; readonly wildcard?: true }
  | { readonly kind: 'servers' }
  | { readonly kind: 'rate'; readonly def: string }
  | { readonly kind: 'bool'; readonly def: boolean }
  | { readonly kind: 'fraction'; readonly def: number }
  /** bytes written with escapes (health/send-expect.ts) */
  | { readonly kind: 'bytes'; readonly def: '' }
  | { readonly kind: 'regex'; readonly def: '' }
  /** send_expect steps: an array of tables of `send`, `expect`, `expect_regex` */
  | { readonly kind: 'steps' }
);

const MAX_MS = 7 * 24 * 3600 * 1000;

export const SCHEMA = {
  runtime: {
    metrics_cap: { prop: 'metricsCap', kind: 'int', def: 10000, min: 1, env: 'LEMONADE_LB_METRICS_CAP', doc: 'bound of the in-memory metric event buffer (> 0)' },
    health_cap: { prop: 'healthCap', kind: 'int', def: 1000, min: 1, env: 'LEMONADE_LB_HEALTH_CAP', doc: 'health, reload and admin events kept for `/events` and the status page (> 0)' },
    drain_timeout_millis: { prop: 'drainTimeoutMs', kind: 'duration', def: 30000, env: 'LEMONADE_LB_DRAIN_TIMEOUT_MS', doc: 'how long draining connections may live (shutdown, removed backends)' },
    background_timeout_millis: { prop: 'backgroundTimeoutMs', kind: 'duration', def: 60000, env: 'LEMONADE_LB_BACKGROUND_TIMEOUT_MS', doc: 'how long background tasks (health, watcher, admin) get to stop' },
    accept_timeout_millis: { prop: 'acceptTimeoutMs', kind: 'duration', def: 120000, env: 'LEMONADE_LB_ACCEPT_TIMEOUT_MS', doc: 'hard bound on the whole shutdown; past it the process exits 1' },
    config_watch_interval_millis: { prop: 'configWatchIntervalMs', kind: 'duration', def: 5000, env: 'LEMONADE_LB_CONFIG_WATCH_INTERVAL_MS', doc: 'the file is also polled this often (a safety net for missed events)' },
    workers: { prop: 'workers', kind: 'int', def: 1, min: 0, max: 256, env: 'LEMONADE_LB_WORKERS', doc: 'data-plane processes; 0 = one per CPU. 1 is the single process. Read at start: a reload that changes it applies the rest and says the number stays until a restart. See *Several worker processes* below' },
  },
  proxy: {
    listen_address: { prop: 'listenAddress', parsed: 'listen', kind: 'listen', def: null, emptyOk: true, env: 'LEMONADE_LB_LISTEN_ADDRESS', doc: '`host:port` of the `default` service; IPv6 as `"[::]:8080"`; ports 1-65535. Required with top-level `[[backends]]`' },
    max_connections: { prop: 'maxConnections', kind: 'int', def: 100000, min: 1, env: 'LEMONADE_LB_MAX_CONNECTIONS', doc: 'concurrent client connections; the next one is closed at once and counted' },
    connect_timeout: { prop: 'connectTimeoutMs', kind: 'duration', def: 3000, overridable: true, doc: 'connect to a backend' },
    idle_timeout: { prop: 'idleTimeoutMs', kind: 'duration', def: 3600000, overridable: true, doc: 'a connection with no bytes either way for this long is closed' },
    connect_retries: { prop: 'connectRetries', kind: 'int', def: 2, min: 0, max: 100, overridable: true, doc: 'other backends tried when a connect fails before any byte flowed' },
    proxy_protocol: { prop: 'proxyProtocol', kind: 'enum', def: 'off', values: ['off', 'v1', 'v2'], overridable: true, doc: '`"off"`, `"v1"` or `"v2"`: the PROXY protocol header sent to backends, on proxied connections and on health checks (see **Health**)' },
    allow: { prop: 'allow', kind: 'cidrs', overridable: true, doc: 'client CIDRs allowed (`"10.0.0.0/8"`, `"::1"`); empty = all' },
    deny: { prop: 'deny', kind: 'cidrs', overridable: true, doc: 'client CIDRs refused, checked after `allow`' },
    client_rate_limit: { prop: 'clientRateLimit', kind: 'rate', def: '', overridable: true, doc: 'new connections per client address, `"100/s"`, `"600/m"`, `"1000/h"`; `""` = off' },
    client_max_connections: { prop: 'clientMaxConnections', kind: 'int', def: 0, min: 0, overridable: true, doc: 'concurrent connections per client address; 0 = off' },
    inspect_timeout: { prop: 'inspectTimeoutMs', kind: 'duration', def: 5000, overridable: true, doc: 'on an address that reads the TLS ClientHello (see [SNI routing](#sni-routing-tls-passthrough)): a client that has not sent a whole one in this time (or within 16 KiB) is routed as having no server name. Services sharing an address must agree on it' },
  },
  strategy: {
    algorithm: { prop: 'algorithm', kind: 'enum', def: 'adaptive', values: ALGORITHMS, env: 'LEMONADE_LB_STRATEGY', overridable: true, doc: '`round_robin`, `weighted_round_robin`, `least_connections`, `fastest_response`, `adaptive`, `consistent_hash` (hyphenated spellings and `fastest_response_time` accepted; so is a top-level `strategy = "…"` key as older lemonade files have it)' },
    hash_key: { prop: 'hashKey', kind: 'enum', def: 'source_ip', values: HASH_KEYS, overridable: true, doc: '`consistent_hash`\'s key: `"source_ip"` (the client\'s IP address) or `"sni"` (the TLS server name from the ClientHello, which makes the listener read it; no name hashes as `""`)' },
    hash_balance_factor: { prop: 'hashBalanceFactor', kind: 'int', def: 0, min: 0, max: 100000, overridable: true, doc: '`consistent_hash`: 0 = off, else a percentage >= 100: a backend above that share of the mean active connections takes no new ones (its keys go to the next in their preference order)' },
  },
  backends: {
    id: { prop: 'id', kind: 'int', def: -1, min: 0, max: 2 ** 31 - 1, shown: 'its index', doc: 'integer, unique: the identity kept across reloads' },
    name: { prop: 'name', kind: 'string', def: '', shown: '`backend-<id+1>`', doc: 'unique; shown in metrics, logs and the admin API' },
    address: { prop: 'address', kind: 'address', def: null, shown: '(required, or `srv`)', doc: '`host:port`; a host name is looked up off the connect path and cached for its TTL (see [DNS discovery](#dns-discovery))' },
    resolve: { prop: 'resolve', kind: 'enum', def: 'none', values: ['none', 'dns'], doc: '`"dns"`: the host name of `address` becomes one endpoint per A/AAAA record, `PARENT/IP:PORT`, followed as its records change; `"none"`: one backend, connected to at the name\'s cached addresses (tried in order)' },
    srv: { prop: 'srv', kind: 'string', def: '', doc: 'an SRV name (`"_pg._tcp.db.internal"`) instead of `address`: one endpoint per address of the lowest-priority targets, with their ports and weights' },
    weight: { prop: 'weight', kind: 'int', def: 1, min: 0, max: 1_000_000, doc: 'integer >= 0; 0 takes no new connections' },
    max_connections: { prop: 'maxConnections', kind: 'int', def: 0, min: 0, doc: 'per-backend cap, 0 = unlimited; a full backend is skipped' },
    backup: { prop: 'backup', kind: 'bool', def: false, doc: 'used only when no primary backend is usable' },
  },
  health: {
    interval: { prop: 'intervalMs', kind: 'duration', def: 10000, env: 'LEMONADE_LB_HEALTH_INTERVAL_MS', overridable: true, doc: 'active check period per backend (jittered ±10 %)' },
    timeout: { prop: 'timeoutMs', kind: 'duration', def: 3000, env: 'LEMONADE_LB_HEALTH_TIMEOUT_MS', overridable: true, doc: 'bound on one check' },
    kind: { prop: 'kind', kind: 'enum', def: 'tcp', values: ['tcp', 'http', 'send_expect'], overridable: true, doc: '`"tcp"` (connect), `"http"` (GET `path`; 2xx/3xx is healthy) or `"send_expect"` (`send`, then the reply must match `expect` or `expect_regex`; or `steps`)' },
    port: { prop: 'port', kind: 'int', def: 0, min: 0, max: 65535, overridable: true, doc: "the port checks connect to; 0 = the backend's own (e.g. Patroni's REST port 8008 for an http check of `/primary`)" },
    path: { prop: 'path', kind: 'string', def: '/health', overridable: true, doc: 'path of the http check' },
    send: { prop: 'send', kind: 'bytes', def: '', overridable: true, doc: 'send_expect: bytes sent once connected; escapes `\\r \\n \\t \\\\ \\xNN` (write them in a literal string `\'…\'`, or let a TOML basic string `"…\\r\\n"` make the characters)' },
    expect: { prop: 'expect', kind: 'bytes', def: '', overridable: true, doc: 'send_expect: the reply must contain these bytes (same escapes); read within `timeout`, at most 64 KiB' },
    expect_regex: { prop: 'expectRegex', kind: 'regex', def: '', overridable: true, doc: 'send_expect: instead of `expect`, a regular expression in RE2 syntax (no backreferences or lookaround; see [Behaviour](#behaviour)) the reply (as UTF-8 text) must match; checked at load' },
    steps: { prop: 'steps', kind: 'steps', shown: '`[]`', overridable: true, doc: 'send_expect: several exchanges in order, `[{ send = "…", expect = "…" }, …]` (each with `send`, `expect` or `expect_regex`; at most 16), instead of the three keys above; the whole check within `timeout`' },
    healthy_threshold: { prop: 'healthyThreshold', kind: 'int', def: 2, min: 1, max: 1000, overridable: true, doc: 'consecutive successes to come back' },
    unhealthy_threshold: { prop: 'unhealthyThreshold', kind: 'int', def: 3, min: 1, max: 1000, overridable: true, doc: 'consecutive failures to go down (also: consecutive failed connects on live traffic before a passive ejection)' },
    slow_start: { prop: 'slowStartMs', kind: 'duration', def: 0, zeroOk: true, overridable: true, doc: 'a backend coming back ramps its weight from 5 % to 100 % over this time; 0 = off' },
    agent_port: { prop: 'agentPort', kind: 'int', def: 0, min: 0, max: 65535, overridable: true, doc: "agent check: the port of the backend's agent, which answers one line (`up`, `down`, `drain`, `ready`, `maint`, `NN%`; see **Agent checks**); 0 = off" },
    agent_interval: { prop: 'agentIntervalMs', kind: 'duration', def: 0, zeroOk: true, shown: '`interval`', overridable: true, doc: "period of the agent check (jittered ±10 %), each bounded by `timeout`; 0 = the health `interval`" },
  },
  dns: {
    servers: { prop: 'servers', kind: 'servers', shown: "`[]` (the system's)", doc: 'DNS servers for `resolve = "dns"`, `srv` and the TTL of cached names, `"ip"` or `"ip:port"` (`"[::1]:53"`); empty = those of `/etc/resolv.conf`' },
    min_ttl: { prop: 'minTtlMs', kind: 'duration', def: 1000, doc: 'a name is looked up again no sooner than this after an answer, whatever its TTL (also the retry delay after a failed lookup)' },
    max_ttl: { prop: 'maxTtlMs', kind: 'duration', def: 300000, doc: 'and no later than this (>= `min_ttl`)' },
    timeout: { prop: 'timeoutMs', kind: 'duration', def: 2000, doc: 'bound on one DNS query attempt (two attempts per lookup)' },
    family: { prop: 'family', kind: 'enum', def: 'any', values: ['any', 'ipv4', 'ipv6'], doc: 'the address records asked for: `"any"` (A and AAAA; one that fails or times out keeps what the other gave), `"ipv4"` (A only, as nginx\'s `ipv6=off`) or `"ipv6"` (AAAA only); for SRV targets and cached host names too' },
    max_endpoints: { prop: 'maxEndpoints', kind: 'int', def: 64, min: 1, max: 4096, doc: 'endpoints taken from one name\'s answer (the first by address; the rest are reported and not used)' },
  },
  services: {
    name: { prop: 'name', kind: 'string', def: '', shown: '(required)', doc: 'unique, 1-64 of `[A-Za-z0-9._-]`; `default` is the service the top-level `[proxy]` and `[[backends]]` make' },
    listen_address: { prop: 'listenAddress', parsed: 'listen', kind: 'listen', def: null, emptyOk: false, doc: '`host:port` this service listens on; services may share one when told apart by `sni`' },
    sni: { prop: 'sni', kind: 'hosts', wildcard: true, doc: 'TLS server names this service takes on its address, `["api.example.com", "*.example.org"]` (a wildcard matches one or more labels before); `[]` = the address\'s default route. See [SNI routing](#sni-routing-tls-passthrough)' },
    max_connections: { prop: 'maxConnections', kind: 'int', def: 0, min: 0, doc: "this service's concurrent client connections; 0 = only `proxy.max_connections`, the cap over all services" },
  },
  metrics: {
    interval: { prop: 'intervalMs', kind: 'duration', def: 30000, env: 'LEMONADE_LB_METRICS_INTERVAL_MS', doc: 'period of the summary log line' },
  },
  access_log: {
    enabled: { prop: 'enabled', kind: 'bool', def: false, doc: 'one line per client connection when it ends, rejected ones included (see [Access log](#access-log)); turning it on or off applies at once on a reload' },
    path: { prop: 'path', kind: 'string', def: '', doc: '`""` = standard output (journald); else a file, appended to and reopened on `SIGUSR1` (logrotate); a new path applies at once on a reload' },
    format: { prop: 'format', kind: 'enum', def: 'json', values: ['json', 'text'], doc: '`"json"` (one object per line) or `"text"` (one human line in the spirit of HAProxy\'s tcplog)' },
    sample: { prop: 'sample', kind: 'fraction', def: 1, shown: '1.0', doc: 'fraction of connections logged, 0 < sample <= 1 (the termination counts always count every connection)' },
  },
  admin: {
    listen_address: { prop: 'listenAddress', parsed: 'listen', kind: 'listen', def: '127.0.0.1:9090', emptyOk: true, env: 'LEMONADE_LB_ADMIN_ADDRESS', doc: 'the admin API; `""` disables it' },
    token: { prop: 'token', kind: 'string', def: '', secret: true, doc: 'if set, mutating endpoints require `Authorization: Bearer TOKEN`; if empty, they are accepted from loopback peers only' },
    // read lower case, without a trailing dot
    allowed_hosts: { prop: 'allowedHosts', kind: 'hosts', doc: 'host names the admin API answers to besides IP addresses and `localhost` (the `Host` header\'s name, case-insensitive, port ignored), e.g. `["lb1.example.com"]`; see [Admin API](#admin-api)' },
  },
} as const satisfies Record<string, Record<string, Row>>;

export type SectionName = keyof typeof SCHEMA;
export const SECTIONS = Object.keys(SCHEMA) as SectionName[];

// ---------------------------------------------------------------------------------------------
// The Config type, read from the tables: each row gives `prop` (and `parsed`) with its kind's type.

type ValueOf<R> = R extends { kind: 'int' | 'duration' }
  ? number
  : R extends { kind: 'enum'; values: readonly (infer V)[] }
    ? V
    : R extends { kind: 'string' | 'listen' | 'address' }
      ? string
      : R extends { kind: 'bool' }
        ? boolean
        : R extends { kind: 'fraction' }
          ? number
        : R extends { kind: 'cidrs' }
          ? readonly Cidr[]
          : R extends { kind: 'hosts' | 'servers' }
            ? readonly string[]
            : R extends { kind: 'rate' }
              ? RateLimit | null
              : R extends { kind: 'bytes' | 'regex' }
                ? string
                : R extends { kind: 'steps' }
                  ? readonly StepText[]
                  : never;

type Flat<T> = { [K in keyof T]: T[K] } & {};

/** One section's values; an `address` row also gives the parsed `host` and `port`. */
type Values<T> = Flat<
  { readonly [K in keyof T as T[K] extends { prop: infer P extends string } ? P : never]: ValueOf<T[K]> } & {
    readonly [K in keyof T as T[K] extends { parsed: infer P extends string } ? P : never]: T[K] extends { emptyOk: true } ? HostPort | null : HostPort;
  } & ([Extract<T[keyof T], { kind: 'address' }>] extends [never] ? unknown : { readonly host: string; readonly port: number })
>;

/** The keys a [[services]] entry may set for itself (marked `overridable`), by section. */
type Overridable<T> = { [K in keyof T as T[K] extends { overridable: true } ? K : never]: T[K] };

/** Sections of one key whose value stands for the whole section in Config: `config.strategy`. */
const FLAT = ['strategy'] as const satisfies readonly SectionName[];
const isFlat = (s: SectionName): boolean => (FLAT as readonly string[]).includes(s);

type Schema = typeof SCHEMA;
export type BackendConfig = Values<Schema['backends']>;

/** One service: a listener address and a pool, with its [proxy] and [health] settings resolved. */
export type ServiceConfig = Values<Schema['services']> &
  Values<Overridable<Schema['strategy']>> & {
    readonly proxy: Values<Overridable<Schema['proxy']>>;
    readonly health: Values<Schema['health']>;
    readonly backends: readonly BackendConfig[];
  };

/** The sections that are lists of tables: [[backends]] and [[services]]. */
export const LISTS = ['backends', 'services'] as const satisfies readonly SectionName[];
const isList = (s: SectionName): boolean => (LISTS as readonly string[]).includes(s);

/**
 * Every section's values; [[backends]] is a list of them. `services` holds every service, the
 * one named `default` (top-level [proxy] and [[backends]], when there are backends) first.
 */
export type Config = {
  readonly [S in SectionName]: S extends 'backends'
    ? readonly BackendConfig[]
    : S extends 'services'
      ? readonly ServiceConfig[]
      : S extends (typeof FLAT)[number]
        ? ValueOf<Schema[S][keyof Schema[S] & 'algorithm']>
        : Values<Schema[S]>;
};

/** The name of the service the top-level [proxy], [strategy], [health] and [[backends]] make. */
export const DEFAULT_SERVICE = 'default';

/** The default service's algorithm, or null when the file has none (only [[services]]). */
export function defaultAlgorithm(config: Config): Algorithm | null {
  return config.services.find((s) => s.name === DEFAULT_SERVICE)?.algorithm ?? null;
}
const SERVICE_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
const DNS_NAME_RE = /^[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*$/;

export type ProxyProtocol = Config['proxy']['proxyProtocol'];
export type HealthKind = Config['health']['kind'];

const ROWS = new Map(SECTIONS.map((s) => [s, Object.entries(SCHEMA[s] as Record<string, Row>)]));
const KEYS = new Map(SECTIONS.map((s) => [s, Object.keys(SCHEMA[s])]));
const rows = (s: SectionName): readonly [string, Row][] => ROWS.get(s)!;

/** The overridable rows of [proxy], [strategy] and [health]: what a [[services]] entry may set. */
const OVERRIDABLE = {
  proxy: rows('proxy').filter(([, r]) => r.overridable === true),
  strategy: rows('strategy').filter(([, r]) => r.overridable === true),
  health: rows('health').filter(([, r]) => r.overridable === true),
};

/** The settings overridden by a LEMONADE_LB_* variable, in table order. */
export const ENV_SETTINGS: readonly { readonly name: string; readonly section: SectionName; readonly key: string; readonly kind: 'int' | 'string' }[] = SECTIONS.flatMap((section) =>
  rows(section).flatMap(([key, r]) => (r.env === undefined ? [] : [{ name: r.env, section, key, kind: r.kind === 'int' || r.kind === 'duration' ? ('int' as const) : ('string' as const) }])),
);

/** File key paths of the settings marked `secret`: never shown (logs, diffs, /status, hashes). */
export const SECRET_PATHS: readonly string[] = Object.freeze(SECTIONS.flatMap((s) => rows(s).filter(([, r]) => r.secret === true).map(([k]) => `${s}.${k}`)));

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
  ];
}

/** Checked values (by file key) → the section's Config object (by prop), with each derived property. */
function toValues(s: SectionName | readonly [string, Row][], checked: Record<string, unknown>): Record<string, unknown> {
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

  const section = (name: SectionName): Record<string, unknown> => {
    const v = top[name];
    if (v === undefined) return {};
    if (!isTable(v)) {
      report(name, `expected a table [${name}], got ${describe(v)}`);
      return {};
    }
    return v;
  };

  // Every section but the lists: checked values by file key, defaults filled in.
  const checked = new Map<SectionName, Record<string, unknown>>();
  for (const s of SECTIONS) {
    if (isList(s)) continue;
    checked.set(s, readFields(s, section(s), s, report));
  }
  checkStrategy(isTable(top['strategy']) ? top['strategy'] : {}, checked.get('strategy')!, 'strategy.', report);
  checkHealth(isTable(top['health']) ? top['health'] : {}, checked.get('health')!, 'health.', report);
  const dns = checked.get('dns')!;
  if (typeof dns['min_ttl'] === 'number' && typeof dns['max_ttl'] === 'number' && dns['max_ttl'] < dns['min_ttl']) {
    report('dns.max_ttl', `must be at least min_ttl (${dns['min_ttl']} ms), got ${dns['max_ttl']} ms`);
  }

  const rawBackends = top['backends'];
  // top-level [[backends]] make the service "default"; a file may have it, [[services]], or both
  const hasDefault = rawBackends !== undefined && !(Array.isArray(rawBackends) && rawBackends.length === 0);
  const backends = hasDefault ? readBackends(rawBackends, 'backends', report) : [];
  const services = top['services'] === undefined ? [] : readServices(top['services'], checked, report);
  if (!hasDefault && top['services'] === undefined) {
    report('backends', 'at least one [[backends]] entry is required (or set LEMONADE_LB_BACKEND_ADDRESSES), or a [[services]] entry with its own');
  }
  if (hasDefault && checked.get('proxy')!['listen_address'] === null) {
    report('proxy.listen_address', 'required with top-level [[backends]]: the address "host:port" to listen on, e.g. "0.0.0.0:8080" (or set LEMONADE_LB_LISTEN_ADDRESS)');
  }

  if (issues.length > 0) return { ok: false, issues };

  const config: Record<string, unknown> = {}; // in table order, which the diff's order follows
  for (const s of SECTIONS) {
    const c = checked.get(s);
    config[s] = s === 'backends' ? backends : s === 'services' ? services : isFlat(s) ? Object.values(c!)[0] : toValues(s, c!);
  }
  if (backends.length > 0) {
    // the seed's layout is the service named "default", first
    const proxy = config['proxy'] as Record<string, unknown>;
    services.unshift(
      serviceValues(
        { name: DEFAULT_SERVICE, listenAddress: proxy['listenAddress'], listen: proxy['listen'], sni: [], maxConnections: 0 },
        toValues(OVERRIDABLE.strategy, checked.get('strategy')!),
        toValues(OVERRIDABLE.proxy, checked.get('proxy')!),
        config['health'] as Record<string, unknown>,
        backends,
      ),
    );
  }
  checkSharedAddresses(services, (i, key) => (services[i]!.name === DEFAULT_SERVICE ? `proxy.${key}` : `services[${backends.length > 0 ? i - 1 : i}].${key}`), report);
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, config: deepFreeze(config as Config) };
}

const SERVICE_KEYS = [...KEYS.get('services')!, ...[...OVERRIDABLE.proxy, ...OVERRIDABLE.strategy].map(([k]) => k), 'health', 'backends'];

function serviceValues(
  own: Record<string, unknown>,
  strategy: Record<string, unknown>,
  proxy: Record<string, unknown>,
  health: Record<string, unknown>,
  backends: readonly BackendConfig[],
): ServiceConfig {
  return { ...own, ...strategy, proxy, health, backends } as unknown as ServiceConfig;
}

/**
 * Services on one listen address: they are told apart by sni, so at most one leaves it
 * empty (the default route) and a name belongs to one of them; and the socket reads the
 * ClientHello before it knows the service, so they share one inspect_timeout. `at(i, key)`: the
 * path of service i's key.
 */
function checkSharedAddresses(services: readonly ServiceConfig[], at: (i: number, key: string) => string, report: (path: string, message: string) => void): void {
  const byAddress = new Map<string, number[]>();
  services.forEach((svc, i) => {
    const list = byAddress.get(svc.listenAddress);
    if (list) list.push(i);
    else byAddress.set(svc.listenAddress, [i]);
  });
  for (const [address, list] of byAddress) {
    if (list.length < 2) continue;
    let fallback: number | undefined;
    const owner = new Map<string, number>();
    const first = services[list[0]!]!;
    for (const i of list) {
      const svc = services[i]!;
      if (svc.sni.length === 0) {
        if (fallback !== undefined) {
          report(
            at(i, 'listen_address'),
            `${address} is also the listen address of service "${services[fallback]!.name}", and neither lists sni: services may share an address only when told apart by sni, and at most one of them may leave it empty (the default route)`,
          );
        } else fallback = i;
      }
      for (const name of svc.sni) {
        const o = owner.get(name);
        if (o !== undefined) report(at(i, 'sni'), `"${name}" is also in the sni of service "${services[o]!.name}" on ${address}: a name routes to one service`);
        else owner.set(name, i);
      }
      if (svc.proxy.inspectTimeoutMs !== first.proxy.inspectTimeoutMs) {
        report(
          at(i, 'inspect_timeout'),
          `services sharing ${address} must have the same inspect_timeout (the ClientHello is read before the service is known): "${first.name}" has ${first.proxy.inspectTimeoutMs} ms, "${svc.name}" ${svc.proxy.inspectTimeoutMs} ms`,
        );
      }
    }
  }
}

/**
 * What the [strategy] rows cannot say alone: hash_balance_factor is 0 or at least 100. Checked
 * where the key is written (an inherited value was checked at the top level).
 */
function checkStrategy(table: Raw, values: Record<string, unknown>, prefix: string, report: (path: string, message: string) => void): void {
  const f = values['hash_balance_factor'];
  if (table['hash_balance_factor'] !== undefined && typeof f === 'number' && f > 0 && f < 100) {
    report(`${prefix}hash_balance_factor`, `must be 0 (off) or a percentage of at least 100, got ${f}`);
  }
}

/** A [[backends]] list (top-level or a service's): ids, names and addresses unique within it. */
function readBackends(raw: unknown, at: string, report: (path: string, message: string) => void): BackendConfig[] {
  const backends: BackendConfig[] = [];
  if (!Array.isArray(raw)) {
    report(at, `expected an array of tables [[${at.replace(/\[\d+\]/g, '')}]], got ${describe(raw)}`);
    return backends;
  }
  const seen = { id: new Map<number, number>(), name: new Map<string, number>(), address: new Map<string, number>() };
  raw.forEach((b: unknown, i: number) => {
    const p = `${at}[${i}]`;
    if (!isTable(b)) {
      report(p, `expected a table, got ${describe(b)}`);
      return;
    }
    const f = readFields('backends', b, p, report);
    const id = b['id'] === undefined ? i : (f['id'] as number | undefined);
    const name = typeof f['name'] === 'string' && f['name'] !== '' ? (f['name'] as string) : `backend-${(id ?? i) + 1}`;
    if (b['name'] !== undefined && f['name'] === '') report(`${p}.name`, 'expected a non-empty name');
    const srv = typeof f['srv'] === 'string' ? (f['srv'] as string).trim().replace(/\.$/, '') : '';
    // an SRV backend's address is its SRV name (port 0): the records give the ports
    const hp = srv !== '' ? { host: srv, port: 0 } : (f['address'] as HostPort | undefined);
    if (b['address'] === undefined && srv === '') report(`${p}.address`, 'every backend needs an address "host:port" (or an SRV name as `srv`)');
    if (b['address'] !== undefined && srv !== '') report(`${p}.srv`, 'a backend has either address or srv, not both: srv takes the addresses and ports from the SRV records');
    if (srv !== '' && !DNS_NAME_RE.test(srv)) report(`${p}.srv`, `expected an SRV name like "_pg._tcp.db.internal", got "${f['srv'] as string}"`);
    const dup = <K>(kind: 'id' | 'name' | 'address', map: Map<K, number>, key: K | undefined): void => {
      if (key === undefined) return;
      const prev = map.get(key);
      if (prev !== undefined) report(`${p}.${kind}`, `duplicate ${kind} ${JSON.stringify(key)} (also ${at}[${prev}])`);
      else map.set(key, i);
    };
    dup('id', seen.id, id);
    dup('name', seen.name, name);
    const backend = hp ? toValues('backends', { ...f, address: hp, srv }) : undefined;
    if (backend && srv !== '') backend['address'] = srv;
    dup('address', seen.address, backend?.['address'] as string | undefined);
    if (id === undefined || !backend) return;
    backend['id'] = id;
    backend['name'] = name;
    backends.push(backend as BackendConfig);
  });
  return backends;
}

/**
 * The [[services]] entries: their own keys, the overridable [proxy], [strategy] and [health] keys
 * (each defaulting to the top-level value), and their [[services.backends]].
 */
function readServices(raw: unknown, top: ReadonlyMap<SectionName, Record<string, unknown>>, report: (path: string, message: string) => void): ServiceConfig[] {
  const out: ServiceConfig[] = [];
  if (!Array.isArray(raw)) {
    report('services', `expected an array of tables [[services]], got ${describe(raw)}`);
    return out;
  }
  const names = new Map<string, number>();
  raw.forEach((t: unknown, i: number) => {
    const p = `services[${i}]`;
    if (!isTable(t)) {
      report(p, `expected a table, got ${describe(t)}`);
      return;
    }
    for (const key of Object.keys(t)) {
      if (!SERVICE_KEYS.includes(key)) report(`${p}.${key}`, `unknown key "${key}" in [[services]]${didYouMean(key, SERVICE_KEYS)}`);
    }
    const own = readRows(rows('services'), t, p, report);
    const name = own['name'];
    if (t['name'] === undefined) report(`${p}.name`, 'every service needs a name');
    else if (typeof name === 'string' && !SERVICE_NAME_RE.test(name)) report(`${p}.name`, `expected 1-64 of A-Z a-z 0-9 . _ -, got "${name}"`);
    else if (name === DEFAULT_SERVICE) report(`${p}.name`, `"${DEFAULT_SERVICE}" is the name of the service the top-level [proxy] and [[backends]] make; choose another`);
    else if (typeof name === 'string') {
      const prev = names.get(name);
      if (prev !== undefined) report(`${p}.name`, `duplicate name "${name}" (also services[${prev}])`);
      else names.set(name, i);
    }
    if (t['listen_address'] === undefined) report(`${p}.listen_address`, 'every service needs a listen address "host:port"');
    const proxy = readRows(OVERRIDABLE.proxy, t, p, report, top.get('proxy'));
    const strategy = readRows(OVERRIDABLE.strategy, t, p, report, top.get('strategy'));
    checkStrategy(t, strategy, `${p}.`, report);
    let healthTable: Raw = {};
    if (t['health'] !== undefined) {
      if (!isTable(t['health'])) report(`${p}.health`, `expected a table [services.health], got ${describe(t['health'])}`);
      else {
        healthTable = t['health'];
        const keys = OVERRIDABLE.health.map(([k]) => k);
        for (const key of Object.keys(healthTable)) {
          if (!keys.includes(key)) report(`${p}.health.${key}`, `unknown key "${key}" in [services.health]${didYouMean(key, keys)}`);
        }
      }
    }
    const health = readRows(OVERRIDABLE.health, healthTable, `${p}.health`, report, top.get('health'));
    checkHealth(healthTable, health, `${p}.health.`, report);
    const backends = t['backends'] === undefined ? [] : readBackends(t['backends'], `${p}.backends`, report);
    if (backends.length === 0) report(`${p}.backends`, 'a service needs at least one [[services.backends]] entry');
    if (t['name'] === undefined || t['listen_address'] === undefined || own['listen_address'] == null) return;
    out.push(serviceValues(toValues(rows('services'), own), toValues(OVERRIDABLE.strategy, strategy), toValues(OVERRIDABLE.proxy, proxy), toValues(OVERRIDABLE.health, health), backends));
  });
  return out;
}

/** Rows read from a table; a key left out takes `inherit`'s value when given, else the row's default. */
function readRows(list: readonly [string, Row][], table: Raw, prefix: string, report: (path: string, message: string) => void, inherit?: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, field] of list) {
    const v = table[key];
    const r = v === undefined ? (inherit !== undefined ? inherit[key] : defaultOf(field)) : checkField(field, v);
    if (typeof r === 'object' && r !== null && 'error' in r) report(`${prefix}.${key}`, (r as { error: string }).error);
    else out[key] = r;
  }
  return out;
}

function readFields(s: SectionName, table: Raw, prefix: string, report: (path: string, message: string) => void): Record<string, unknown> {
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

function defaultOf(f: Row): unknown {
  switch (f.kind) {
    case 'cidrs':
    case 'hosts':
    case 'servers':
    case 'steps':
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
function checkField(f: Row, v: unknown): Checked {
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
    case 'regex': {
      if (typeof v !== 'string') return err(`expected a string, got ${describe(v)}`);
      const r = f.kind === 'bytes' ? unescape(v) : compileRegex(v);
      return typeof r === 'string' ? err(r) : v;
    }
    case 'steps':
      return checkSteps(v);
  }
}

const STEP_KEYS = ['send', 'expect', 'expect_regex'];
const HOST_RE = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
const WILDCARD_HOST_RE = /^(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;

/** A `steps` array: each a table of `send`, `expect` or `expect_regex`, each value as its row checks it. */
function checkSteps(v: unknown): StepText[] | { error: string } {
  const err = (error: string): { error: string } => ({ error });
  if (!Array.isArray(v)) return err(`expected an array of tables like [{ send = "PING\\r\\n", expect = "+PONG" }], got ${describe(v)}`);
  if (v.length > MAX_STEPS) return err(`at most ${MAX_STEPS} steps, got ${v.length}`);
  const out: StepText[] = [];
  for (const [i, t] of v.entries()) {
    const at = `step ${i + 1}`;
    if (!isTable(t)) return err(`${at}: expected a table { send = "…", expect = "…" }, got ${describe(t)}`);
    for (const k of Object.keys(t)) if (!STEP_KEYS.includes(k)) return err(`${at}: unknown key "${k}"${didYouMean(k, STEP_KEYS)} (a step has send, expect, expect_regex)`);
    const text: Record<string, string> = {};
    for (const k of STEP_KEYS) {
      const row = SCHEMA.health[k as 'send' | 'expect' | 'expect_regex'];
      const r = t[k] === undefined ? '' : checkField(row, t[k]);
      if (typeof r === 'object' && r !== null && 'error' in r) return err(`${at}: ${k}: ${(r as { error: string }).error}`);
      text[k] = r as string;
    }
    const step = { send: text['send']!, expect: text['expect']!, expectRegex: text['expect_regex']! };
    const problem = stepProblem(step);
    if (problem !== null) return err(`${at}: ${problem}`);
    out.push(step);
  }
  if (out.length > 0 && out.every((x) => x.expect === '' && x.expectRegex === '')) return err('no step has expect or expect_regex: the check would pass on any connection');
  return out;
}

/** What a step (or the one step of `send`/`expect`/`expect_regex`) cannot be, or null. */
function stepProblem(s: StepText): string | null {
  if (s.expect !== '' && s.expectRegex !== '') return 'give expect or expect_regex, not both';
  if (s.send === '' && s.expect === '' && s.expectRegex === '') return 'needs send, expect or expect_regex';
  return null;
}

const SEND_EXPECT_KEYS = ['send', 'expect', 'expect_regex', 'steps'] as const;

/**
 * What the [health] rows cannot say alone, checked on a table's values with what it inherits:
 * kind = "send_expect" needs its keys (one step, or `steps`, not both), and those keys are
 * refused where they are written without it.
 */
function checkHealth(table: Raw, values: Record<string, unknown>, prefix: string, report: (path: string, message: string) => void): void {
  const written = SEND_EXPECT_KEYS.filter((k) => table[k] !== undefined);
  if (values['kind'] !== 'send_expect') {
    for (const k of written) report(`${prefix}${k}`, `only used by kind = "send_expect" (kind is "${String(values['kind'])}")`);
    return;
  }
  // an inherited value was checked where it was written
  if (table['kind'] === undefined && written.length === 0) return;
  const steps = values['steps'] as readonly StepText[] | undefined;
  const one = { send: values['send'] as string, expect: values['expect'] as string, expectRegex: values['expect_regex'] as string };
  if (steps === undefined || one.send === undefined || one.expect === undefined || one.expectRegex === undefined) return; // reported already
  if (steps.length > 0) {
    const both = (['send', 'expect', 'expect_regex'] as const).filter((k) => values[k] !== '');
    if (both.length > 0) report(`${prefix}${both[0]}`, 'give steps, or send/expect/expect_regex, not both');
    return;
  }
  const at = `${prefix}${table['kind'] !== undefined || written.length === 0 ? 'kind' : written[0]}`;
  if (one.expect === '' && one.expectRegex === '') report(at, 'kind = "send_expect" needs expect or expect_regex (after send), or steps');
  else if (one.expect !== '' && one.expectRegex !== '') report(at, 'give expect or expect_regex, not both');
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o) && !(o instanceof Uint8Array)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
