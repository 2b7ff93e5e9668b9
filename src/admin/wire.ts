// The admin API's JSON, declared once: each answer's shape is a value here (checkable at run
// time) and its TypeScript type is inferred from that value. The server's handlers return these
// types, the CLI reads its answers as them, the status page's script reads their fields, and a
// test holds what a running balancer serves against these declarations, field by field. The
// names are a contract with operators' scripts and monitoring: never rename one.

import type { AdminAction } from '../runtime/backend-admin';

export type { AdminAction };

/** What a check found: the departures from the declaration, and the object keys present. */
export interface WireReport {
  readonly problems: string[];
  /** each key as a path with [] for any index and .* for any key of a map: "$.backends[].name" */
  readonly seen: Set<string>;
}

/** A JSON value's declaration, checkable at run time; `T` is the TypeScript type it stands for. */
export interface Field<T> {
  /** may be absent (as a key of an object) */
  readonly optional?: true;
  /** `at` says where for a problem ("$.backends[2].name"), `path` the same as WireReport.seen */
  check(value: unknown, at: string, path: string, r: WireReport): void;
  /** the object keys declared at and under `path` */
  keys(path: string): string[];
  /** never set: carries T */
  readonly type?: T;
}

export type Infer<F> = F extends Field<infer T> ? T : never;
type Shape = { readonly [key: string]: Field<unknown> };
type OptionalKeys<S> = { [K in keyof S]: S[K] extends { readonly optional: true } ? K : never }[keyof S];
type Flat<T> = { [K in keyof T]: T[K] };
type ObjectOf<S extends Shape> = Flat<
  { readonly [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { readonly [K in OptionalKeys<S>]?: Infer<S[K]> }
>;

const show = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const none = (): string[] => [];

function primitive<T>(kind: 'string' | 'number' | 'boolean'): Field<T> {
  return { check: (v, at, _path, r) => void (typeof v !== kind && r.problems.push(`${at}: ${kind} expected, got ${show(v)}`)), keys: none };
}

const str = primitive<string>('string');
const num = primitive<number>('number');
const bool = primitive<boolean>('boolean');
/** an ISO 8601 time, as Date.toISOString() writes it */
const time = str;

function oneOf<const T extends readonly string[]>(...values: T): Field<T[number]> {
  return {
    check: (v, at, _path, r) => void (!values.includes(v as string) && r.problems.push(`${at}: one of ${values.join(', ')} expected, got ${JSON.stringify(v)}`)),
    keys: none,
  };
}

function nullable<T>(f: Field<T>): Field<T | null> {
  return { check: (v, at, path, r) => v !== null && f.check(v, at, path, r), keys: f.keys };
}

/** A key that an answer has only sometimes (said in its comment). */
function optional<T>(f: Field<T>): Field<T> & { readonly optional: true } {
  return { optional: true, check: f.check, keys: f.keys };
}

function arrayOf<T>(f: Field<T>): Field<readonly T[]> {
  return {
    check: (v, at, path, r) => {
      if (!Array.isArray(v)) return void r.problems.push(`${at}: array expected, got ${show(v)}`);
      v.forEach((x, i) => f.check(x, `${at}[${i}]`, `${path}[]`, r));
    },
    keys: (path) => f.keys(`${path}[]`),
  };
}

/** An object with any keys, each value a `f` (a map by name). */
function recordOf<T>(f: Field<T>): Field<Readonly<Record<string, T>>> {
  return {
    check: (v, at, path, r) => {
      if (!isObject(v)) return void r.problems.push(`${at}: object expected, got ${show(v)}`);
      for (const [k, x] of Object.entries(v)) f.check(x, `${at}.${k}`, `${path}.*`, r);
    },
    keys: (path) => f.keys(`${path}.*`),
  };
}

function tuple<const F extends readonly Field<unknown>[]>(...fields: F): Field<{ readonly [I in keyof F]: Infer<F[I]> }> {
  return {
    check: (v, at, path, r) => {
      if (!Array.isArray(v) || v.length !== fields.length) return void r.problems.push(`${at}: array of ${fields.length} expected, got ${JSON.stringify(v)}`);
      fields.forEach((f, i) => f.check(v[i], `${at}[${i}]`, `${path}[${i}]`, r));
    },
    keys: (path) => fields.flatMap((f, i) => f.keys(`${path}[${i}]`)),
  };
}

/** An object of exactly these keys: a required key missing, or a key not declared here, is a problem. */
function object<const S extends Shape>(shape: S): Field<ObjectOf<S>> {
  return {
    check: (v, at, path, r) => {
      if (!isObject(v)) return void r.problems.push(`${at}: object expected, got ${show(v)}`);
      for (const [k, f] of Object.entries(shape)) {
        if (k in v) {
          r.seen.add(`${path}.${k}`);
          f.check(v[k], `${at}.${k}`, `${path}.${k}`, r);
        } else if (!f.optional) r.problems.push(`${at}.${k}: missing`);
      }
      for (const k of Object.keys(v)) if (!(k in shape)) r.problems.push(`${at}.${k}: not declared in admin/wire.ts`);
    },
    keys: (path) => Object.entries(shape).flatMap(([k, f]) => [`${path}.${k}`, ...f.keys(`${path}.${k}`)]),
  };
}

/** Check `value` against `field` ("$" is the answer itself), adding to `into`. */
export function checkWire(field: Field<unknown>, value: unknown, into: WireReport = { problems: [], seen: new Set() }): WireReport {
  field.check(value, '$', '$', into);
  return into;
}

/** Every object key `field` declares, optional ones included, as paths like WireReport.seen's. */
export function declaredKeys(field: Field<unknown>): string[] {
  return field.keys('$');
}

// ---- the answers

export const HEALTH_STATUS = oneOf('healthy', 'degraded', 'unhealthy');
export type HealthStatus = Infer<typeof HEALTH_STATUS>;

/** GET /health (503 when unhealthy), GET /health?service=NAME */
export const HEALTH = object({
  status: HEALTH_STATUS,
  usable: num,
  total: num,
  /** each service's own status: the whole balancer's report */
  services: optional(recordOf(HEALTH_STATUS)),
  /** the service judged alone (?service=NAME) */
  service: optional(str),
});
export type HealthAnswer = Infer<typeof HEALTH>;

/** GET /ready (503 when not ready) */
export const READY = object({ ready: bool });
export type ReadyAnswer = Infer<typeof READY>;

export const BACKEND_STATE = oneOf('healthy', 'unhealthy', 'draining', 'disabled');

/** A row of GET /backends (and of /status's backends). */
export const BACKEND_ROW = object({
  service: str,
  id: num,
  name: str,
  /** a backend found by DNS: the configured name its endpoint came from */
  parent: optional(str),
  address: str,
  weight: num,
  /** the weight the strategies use (scaled by an agent) */
  effective_weight: num,
  backup: bool,
  max_connections: num,
  state: BACKEND_STATE,
  active: num,
  total: num,
  latency_ms: nullable(num),
  connect_errors: num,
  last_check: nullable(object({ at: time, ok: bool, error: nullable(str) })),
  /** null when the service runs no agent check */
  agent: nullable(
    object({
      state: oneOf('up', 'down'),
      admin: nullable(oneOf('ready', 'drain', 'maint')),
      weight_percent: nullable(num),
      last: nullable(object({ at: time, reply: nullable(str), error: nullable(str) })),
    }),
  ),
  /** the backend's share of a consistent_hash service's table (only in such services) */
  hash_share: optional(num),
});
export type BackendRow = Infer<typeof BACKEND_ROW>;

/** A row of GET /services (and of /status's services). */
export const SERVICE_ROW = object({
  name: str,
  listen_address: str,
  sni: arrayOf(str),
  algorithm: str,
  active: num,
  total: num,
  rejected: num,
  usable: num,
  backends: num,
});
export type ServiceRow = Infer<typeof SERVICE_ROW>;

/** A backend name looked up in the DNS, in /status's dns. */
export const DNS_ROW = object({
  query: str,
  addresses: nullable(arrayOf(str)),
  last_success: nullable(time),
  last_error: nullable(str),
  failures: num,
  next_lookup: nullable(time),
  notes: arrayOf(str),
});
export type DnsRow = Infer<typeof DNS_ROW>;

/** A data-plane process, in /status's workers. */
export const WORKER_ROW = object({ index: num, pid: nullable(num), up: bool, open: num, accepted: num, restarts: num });
export type WorkerRow = Infer<typeof WORKER_ROW>;

/** GET /status */
export const STATUS = object({
  version: str,
  uptime_seconds: num,
  /** the default service's algorithm; null without a default service */
  strategy: nullable(str),
  listen_address: str,
  ready: bool,
  admin_token_set: bool,
  config: object({
    path: str,
    generation: num,
    hash: str,
    last_reload: nullable(object({ at: time, result: oneOf('success', 'failure'), error: nullable(str) })),
  }),
  connections: object({ active: num, total: num, rejected: num }),
  backends: arrayOf(BACKEND_ROW),
  services: arrayOf(SERVICE_ROW),
  dns: arrayOf(DNS_ROW),
  /** only with more than one data-plane process */
  workers: optional(arrayOf(WORKER_ROW)),
});
export type StatusAnswer = Infer<typeof STATUS>;

/** GET /version: what is running, for an inventory or a rollout check */
export const VERSION = object({
  /** the package version (`lemonade --version`) */
  version: str,
  /** the Node.js it runs on, process.versions.node ("20.20.2") */
  node: str,
  /** the git commit the build was made from, a hex prefix; "" when unknown */
  commit: str,
});
export type VersionAnswer = Infer<typeof VERSION>;

/** GET /backends */
export const BACKENDS = arrayOf(BACKEND_ROW);
/** GET /services */
export const SERVICES = arrayOf(SERVICE_ROW);

/** GET /events, oldest first */
export const EVENTS = arrayOf(object({ at: time, kind: oneOf('health', 'reload', 'admin', 'lifecycle', 'dns'), message: str }));
export type EventRow = Infer<typeof EVENTS>[number];

/** GET /traffic: the status page's charts and recent connections that did not end cleanly */
export const TRAFFIC = object({
  interval_ms: num,
  /** per service, one point a second: [at (ms), connections/s, not clean/s, p50 ms, p99 ms] */
  services: arrayOf(object({ name: str, points: arrayOf(tuple(num, num, num, nullable(num), nullable(num))) })),
  /** newest first */
  terminations: arrayOf(object({ at: time, service: str, backend: nullable(str), client: nullable(str), termination: str, duration_ms: num })),
});
export type TrafficAnswer = Infer<typeof TRAFFIC>;

/** The service name /certificates and the expiry metric give the admin API's own certificate: never a service's (no service name has parentheses). */
export const ADMIN_CERTIFICATE_SERVICE = '(admin)';

/** GET /certificates: every certificate served, each terminating service's in its table's order, then the admin API's */
export const CERTIFICATES = arrayOf(
  object({
    /** the service, or "(admin)" for the admin API's own [admin] tls_cert */
    service: str,
    /** the DNS subject alternative names, else the CN */
    names: arrayOf(str),
    not_after: time,
    /** SHA-256 of the certificate's DER, lowercase hex */
    sha256: str,
    /** the certificate file's path */
    file: str,
  }),
);
export type CertificateRow = Infer<typeof CERTIFICATES>[number];

/** POST /backends/NAME/ACTION, POST /services/SVC/backends/NAME/ACTION */
export const ACTION = object({ service: str, backend: str, action: oneOf('drain', 'enable', 'disable'), state: BACKEND_STATE });
export type ActionAnswer = Infer<typeof ACTION>;

/** 409 to POST /backends/NAME/ACTION when NAME is in several services */
export const AMBIGUOUS = object({ error: str, services: arrayOf(str) });
export type AmbiguousAnswer = Infer<typeof AMBIGUOUS>;

/** every other 4xx and 5xx */
export const ERROR = object({ error: str });
export type ErrorAnswer = Infer<typeof ERROR>;

/** POST /reload (422 on failure) */
export const RELOAD = object({
  result: oneOf('success', 'failure'),
  generation: num,
  /** success: what changed */
  changes: optional(str),
  /** success with worker processes: the pids of those that did not acknowledge the new snapshot within 2 s */
  unacknowledged: optional(arrayOf(num)),
  /** failure: why */
  error: optional(str),
  /** failure of validation: each problem and where */
  errors: optional(arrayOf(object({ path: str, line: optional(num), message: str }))),
});
export type ReloadAnswer = Infer<typeof RELOAD>;

/** Every JSON body the admin API sends. */
export type Answer =
  | HealthAnswer
  | ReadyAnswer
  | StatusAnswer
  | VersionAnswer
  | readonly BackendRow[]
  | readonly ServiceRow[]
  | readonly EventRow[]
  | TrafficAnswer
  | readonly CertificateRow[]
  | ActionAnswer
  | AmbiguousAnswer
  | ErrorAnswer
  | ReloadAnswer;
