// `lemonade status` and `lemonade backend drain|enable|disable NAME`: clients of the admin API.

import { AdminRequestError, AdminUnreachableError } from '../errors';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9090';

export interface BackendRow {
  readonly id: number;
  readonly name: string;
  readonly address: string;
  readonly state: string;
  readonly weight: number;
  readonly active: number;
  readonly total: number;
  readonly latency_ms: number | null;
  readonly last_check: { at: string; ok: boolean; error: string | null } | null;
}

function base(url: string): string {
  const u = /^https?:\/\//.test(url) ? url : `http://${url}`;
  return u.replace(/\/+$/, '');
}

async function call(url: string, method: string, token: string | undefined): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { method, headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(5000) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new AdminUnreachableError(url, cause?.code ?? cause?.message ?? (e as Error).message);
  }
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try {
      msg = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {
      /* plain text */
    }
    throw new AdminRequestError(url, res.status, msg);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new AdminRequestError(url, res.status, 'the answer is not JSON: is this a lemonade admin API?');
  }
}

export function formatTable(rows: readonly BackendRow[], now = Date.now()): string {
  const head = ['NAME', 'ADDRESS', 'STATE', 'WEIGHT', 'ACTIVE', 'TOTAL', 'LATENCY', 'LAST CHECK'];
  const body = rows.map((b) => [
    b.name,
    b.address,
    b.state,
    String(b.weight),
    String(b.active),
    String(b.total),
    b.latency_ms === null ? '-' : `${b.latency_ms.toFixed(1)}ms`,
    b.last_check ? `${b.last_check.ok ? 'ok' : `failed (${b.last_check.error ?? ''})`} ${Math.max(0, Math.round((now - Date.parse(b.last_check.at)) / 1000))}s ago` : '-',
  ]);
  const all = [head, ...body];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const numeric = new Set([3, 4, 5, 6]);
  return all
    .map((r) =>
      r
        .map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export async function runStatus(admin: string, json: boolean, out: (s: string) => void): Promise<number> {
  const rows = (await call(`${base(admin)}/backends`, 'GET', undefined)) as BackendRow[];
  out(json ? JSON.stringify(rows, null, 2) : formatTable(rows));
  return 0;
}

export async function runBackendAction(admin: string, action: string, name: string, token: string | undefined, out: (s: string) => void): Promise<number> {
  const r = (await call(`${base(admin)}/backends/${encodeURIComponent(name)}/${action}`, 'POST', token)) as { state?: string };
  out(`${name}: ${r.state ?? action}`);
  return 0;
}
