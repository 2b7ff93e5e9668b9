// The admin API's JSON, declared once: each answer's shape is a value here (checkable at run
// time) and its TypeScript type is inferred from that value. The server's handlers return these
// types, the CLI reads its answers as them, the status page's script reads their fields, and a
// test holds what a running balancer serves against these declarations, field by field. The
// field names are a contract with scripts, keepalived and Prometheus: never rename one.

import type { AdminAction } from '../runtime/backend-admin';

export type { AdminAction };

/** A JSON value's declaration: `check` lists what in `value` departs from it. */
export interface Field<T> {
  /** absent keys allowed (in an object) */
  readonly optional?: true;
  check(value: unknown, at: string, problems: string[]): void;
  /** the TypeScript type it stands for (never set) */
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

function primitive<T>(kind: 'string' | 'number' | 'boolean'): Field<T> {
  return { check: (v, at, p) => void (typeof v !== kind && p.push(`${at}: ${kind} expected, got ${show(v)}`)) };
}

const str = primitive<string>('string');
const num = primitive<number>('number');
const bool = primitive<boolean>('boolean');

function oneOf<const T extends readonly string[]>(...values: T): Field<T[number]> {
  return { check: (v, at, p) => void (!values.includes(v as string) && p.push(`${at}: one of ${values.join(', ')} expected, got ${JSON.stringify(v)}`)) };
}

function nullable<T>(f: Field<T>): Field<T | null> {
  return { check: (v, at, p) => v !== null && f.check(v, at, p) };
}

/** A key that an answer has only sometimes (said in its comment). */
function optional<T>(f: Field<T>): Field<T> & { readonly optional: true } {
  return { optional: true, check: f.check };
}

function arrayOf<T>(f: Field<T>): Field<readonly T[]> {
  return {
    check: (v, at, p) => {
      if (!Array.isArray(v)) return void p.push(`${at}: array expected, got ${show(v)}`);
      v.forEach((x, i) => f.check(x, `${at}[${i}]`, p));
    },
  };
}

/** An object with any keys, each value a `f` (a map by name). */
function recordOf<T>(f: Field<T>): Field<Readonly<Record<string, T>>> {
  return {
    check: (v, at, p) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return void p.push(`${at}: object expected, got ${show(v)}`);
      for (const [k, x] of Object.entries(v)) f.check(x, `${at}.${k}`, p);
    },
  };
}

function tuple<const F extends readonly Field<unknown>[]>(...fields: F): Field<{ readonly [I in keyof F]: Infer<F[I]> }> {
  return {
    check: (v, at, p) => {
      if (!Array.isArray(v) || v.length !== fields.length) return void p.push(`${at}: array of ${fields.length} expected, got ${JSON.stringify(v)}`);
      fields.forEach((f, i) => f.check(v[i], `${at}[${i}]`, p));
    },
  };
}

/** An object with exactly these keys: a missing required key, or one not declared, is a problem. */
export interface ObjectField<S extends Shape> extends Field<ObjectOf<S>> {
  readonly shape: S;
}

function object<const S extends Shape>(shape: S): ObjectField<S> {
  return {
    shape,
    check: (v, at, p) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return void p.push(`${at}: object expected, got ${show(v)}`);
      const o = v as Record<string, unknown>;
      for (const [k, f] of Object.entries(shape)) {
        if (k in o) f.check(o[k], `${at}.${k}`, p);
        else if (!f.optional) p.push(`${at}.${k}: missing`);
      }
      for (const k of Object.keys(o)) if (!(k in shape)) p.push(`${at}.${k}: not declared in admin/wire.ts`);
    },
  };
}

/** What in `value` departs from `field` ("$" is the answer itself); [] when nothing. */
export function wireProblems(field: Field<unknown>, value: unknown): string[] {
  const problems: string[] = [];
  field.check(value, '$', problems);
  return problems;
}

// ---- the answers

const ISO_TIME = str;

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
  last_check: nullable(object({ at: ISO_TIME, ok: bool, error: nullable(str) })),
  /** null when the service runs no agent check */
  agent: nullable(
    object({
      state: oneOf('up', 'down'),
      admin: nullable(oneOf('ready', 'drain', 'maint')),
      weight_percent: nullable(num),
      last: nullable(object({ at: ISO_TIME, reply: nullable(str), error: nullable(str) })),
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
  last_success: nullable(ISO_TIME),
  last_error: nullable(str),
  failures: num,
  next_lookup: nullable(ISO_TIME),
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
    last_reload: nullable(object({ at: ISO_TIME, result: oneOf('success', 'failure'), error: nullable(str) })),
  }),
  connections: object({ active: num, total: num, rejected: num }),
  backends: arrayOf(BACKEND_ROW),
  services: arrayOf(SERVICE_ROW),
  dns: arrayOf(DNS_ROW),
  /** only with more than one data-plane process */
  workers: optional(arrayOf(WORKER_ROW)),
});
export type StatusAnswer = Infer<typeof STATUS>;

/** GET /backends */
export const BACKENDS = arrayOf(BACKEND_ROW);
/** GET /services */
export const SERVICES = arrayOf(SERVICE_ROW);

/** GET /events, oldest first */
export const EVENTS = arrayOf(object({ at: ISO_TIME, kind: oneOf('health', 'reload', 'admin', 'lifecycle', 'dns'), message: str }));
export type EventRow = Infer<typeof EVENTS>[number];

/** GET /traffic: the status page's charts and recent connections that did not end cleanly */
export const TRAFFIC = object({
  interval_ms: num,
  /** per service, one point a second: [at (ms), connections/s, not clean/s, p50 ms, p99 ms] */
  services: arrayOf(object({ name: str, points: arrayOf(tuple(num, num, num, nullable(num), nullable(num))) })),
  /** newest first */
  terminations: arrayOf(object({ at: ISO_TIME, service: str, backend: nullable(str), client: nullable(str), termination: str, duration_ms: num })),
});
export type TrafficAnswer = Infer<typeof TRAFFIC>;

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
  | readonly BackendRow[]
  | readonly ServiceRow[]
  | readonly EventRow[]
  | TrafficAnswer
  | ActionAnswer
  | AmbiguousAnswer
  | ErrorAnswer
  | ReloadAnswer;
