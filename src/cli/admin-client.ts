// `lemonade status` and `lemonade backend drain|enable|disable NAME [--service SVC]`: clients of
// the admin API (/backends and the per-service action paths).

import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { shownName } from '../core/backend';
import { AdminRequestError, AdminTlsError, AdminUnreachableError } from '../errors';
import { printableText } from '../config/step-text';
import { PROCESS_ENV } from '../config/environment';
import type { ActionAnswer, AdminAction, AmbiguousAnswer, BackendRow, ErrorAnswer } from '../admin/wire';

export const DEFAULT_ADMIN_URL = PROCESS_ENV.adminUrl.def;

/** The fields of a /backends row the table shows; `service` is absent on a balancer older than services. */
export type ShownRow = Pick<BackendRow, 'id' | 'name' | 'address' | 'state' | 'weight' | 'active' | 'total' | 'latency_ms' | 'last_check'> & Partial<Pick<BackendRow, 'service'>>;

function base(url: string): string {
  const u = /^https?:\/\//.test(url) ? url : `http://${url}`;
  return u.replace(/\/+$/, '');
}

/** An error answer: its message, and the services a 409 names (read loosely: any server may answer). */
type ErrorBody = Partial<ErrorAnswer & AmbiguousAnswer>;

/** How the CLI reaches the admin API: its token, and for https:// the CA file to verify it against. */
export interface AdminClientOptions {
  readonly token?: string | undefined;
  /** a PEM file of CAs; unset = Node's bundled roots (plus NODE_EXTRA_CA_CERTS) */
  readonly cacert?: string | undefined;
}

const TIMEOUT_MS = 5000;

/** OpenSSL's codes for a certificate the client could not verify (Node passes them on as `code`). */
const VERIFY_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** One request: the status and the body's text, or AdminUnreachableError / AdminTlsError. */
function request(url: string, method: string, opts: AdminClientOptions): Promise<{ status: number; text: string }> {
  const u = new URL(url);
  let ca: Buffer | undefined;
  if (opts.cacert !== undefined && opts.cacert !== '') {
    if (u.protocol !== 'https:') return Promise.reject(new AdminTlsError(url, `--cacert ${opts.cacert} is given, but the URL is not https://`));
    try {
      ca = readFileSync(opts.cacert);
    } catch (e) {
      return Promise.reject(new AdminTlsError(url, `cannot read the CA file ${opts.cacert} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`));
    }
  }
  const headers: Record<string, string> = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
  return new Promise((resolve, reject) => {
    const done = (res: http.IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => reject(new AdminUnreachableError(url, e.message)));
    };
    const req =
      u.protocol === 'https:'
        ? https.request(u, { method, headers, timeout: TIMEOUT_MS, ...(ca ? { ca } : {}), agent: false }, done)
        : http.request(u, { method, headers, timeout: TIMEOUT_MS, agent: false }, done);
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${TIMEOUT_MS} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? '';
      if (VERIFY_CODES.has(code)) {
        const hint = ca ? `is it signed by the CA in ${opts.cacert}?` : 'pass --cacert FILE (or set $LEMONADE_ADMIN_CACERT) with the CA that signed it';
        reject(new AdminTlsError(url, `the server's certificate was not verified (${code}: ${e.message}); ${hint}`));
      } else reject(new AdminUnreachableError(url, code || e.message));
    });
    req.end();
  });
}

/**
 * Request and parse JSON, read as the answer `T` the admin API declares (admin/wire.ts);
 * `onError` may turn an error answer into a clearer error than the default.
 */
async function call<T>(
  url: string,
  method: string,
  opts: AdminClientOptions,
  onError?: (status: number, body: ErrorBody | null) => Error | undefined,
): Promise<T> {
  const res = await request(url, method, opts);
  const text = res.text;
  if (res.status < 200 || res.status > 299) {
    let body: ErrorBody | null = null;
    try {
      body = JSON.parse(text) as ErrorBody;
    } catch {
      /* plain text */
    }
    const special = onError?.(res.status, body);
    if (special) throw special;
    const msg: unknown = body?.error;
    throw new AdminRequestError(url, res.status, typeof msg === 'string' ? msg : text);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new AdminRequestError(url, res.status, 'the answer is not JSON: is this a lemonade admin API?');
  }
}

/**
 * Rows grouped by service: services in the order of their first row, rows in API order within
 * each. Rows without a service (an older balancer) stay as they are.
 */
export function groupByService<T extends { readonly service?: string }>(rows: readonly T[]): T[] {
  const groups = new Map<string | undefined, T[]>();
  for (const r of rows) {
    const g = groups.get(r.service);
    if (g) g.push(r);
    else groups.set(r.service, [r]);
  }
  return [...groups.values()].flat();
}

export function formatTable(rows: readonly ShownRow[], now = Date.now()): string {
  // the SERVICE column only when the balancer names services (every balancer since [[services]] came)
  const withService = rows.some((b) => typeof b.service === 'string');
  const head = [...(withService ? ['SERVICE'] : []), 'NAME', 'ADDRESS', 'STATE', 'WEIGHT', 'ACTIVE', 'TOTAL', 'LATENCY', 'LAST CHECK'];
  // every cell is the balancer's text: its control characters are escaped, not sent to the terminal
  const body = (withService ? groupByService(rows) : rows).map((b) => cells(b, withService, now).map((c) => printableText(c)));
  return layout(head, body);
}

function cells(b: ShownRow, withService: boolean, now: number): string[] {
  return [
    ...(withService ? [b.service ?? '-'] : []),
    b.name,
    b.address,
    b.state,
    String(b.weight),
    String(b.active),
    String(b.total),
    b.latency_ms === null ? '-' : `${b.latency_ms.toFixed(1)}ms`,
    b.last_check ? `${b.last_check.ok ? 'ok' : `failed (${b.last_check.error ?? ''})`} ${Math.max(0, Math.round((now - Date.parse(b.last_check.at)) / 1000))}s ago` : '-',
  ];
}

function layout(head: readonly string[], body: readonly string[][]): string {
  const numeric = new Set(['WEIGHT', 'ACTIVE', 'TOTAL', 'LATENCY'].map((h) => head.indexOf(h)));
  const all = [head, ...body];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all
    .map((r) =>
      r
        .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export async function runStatus(admin: string, json: boolean, out: (s: string) => void, client: AdminClientOptions = {}): Promise<number> {
  const rows = await call<ShownRow[]>(`${base(admin)}/backends`, 'GET', { cacert: client.cacert });
  out(json ? JSON.stringify(rows, null, 2) : formatTable(rows));
  return 0;
}

/**
 * With a service: POST /services/SVC/backends/NAME/ACTION. Without: the old POST
 * /backends/NAME/ACTION, which the balancer refuses with 409 when NAME is in several services.
 */
export async function runBackendAction(
  admin: string,
  action: AdminAction,
  name: string,
  opts: { service?: string | undefined } & AdminClientOptions,
  out: (s: string) => void,
): Promise<number> {
  const { service } = opts;
  const path =
    service === undefined
      ? `/backends/${encodeURIComponent(name)}/${action}`
      : `/services/${encodeURIComponent(service)}/backends/${encodeURIComponent(name)}/${action}`;
  const url = `${base(admin)}${path}`;
  const ambiguous = (status: number, body: ErrorBody | null): Error | undefined => {
    if (status !== 409 || service !== undefined) return undefined;
    const services: unknown = body?.services;
    const list = Array.isArray(services) ? services.map(String) : [];
    return new AdminRequestError(
      url,
      status,
      `backend "${name}" is in ${list.length > 0 ? `${list.length} services (${list.join(', ')})` : 'more than one service'}: ` +
        `pass --service ${list.length > 0 ? list.join(' or --service ') : 'SVC'} to say which`,
    );
  };
  const r = await call<Partial<ActionAnswer>>(url, 'POST', { token: opts.token, cacert: opts.cacert }, ambiguous);
  // the answer names the service the old path found (a balancer older than services does not)
  const svc = service ?? (typeof r.service === 'string' ? r.service : undefined);
  out(`${svc === undefined ? name : shownName(svc, name)}: ${r.state ?? action}`);
  return 0;
}
