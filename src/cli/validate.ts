// `lemonade load-balancer --validate [--json] [--check-backends]`

import net from 'node:net';
import { readFileSync } from 'node:fs';
import { loadConfig, tlsTablePath, type Env } from '../config/load';
import { backendTlsWarnings, type Config } from '../config/schema';
import { shownName } from '../core/backend';
import { CERTIFICATE_WARN_DAYS, certificateFacts, daysLeft } from '../core/certificate';
import { adminExposureWarnings } from '../config/admin-exposure';
import { ConfigInvalidError, LemonadeError, formatIssue, type ConfigIssue } from '../errors';

export interface ValidateOptions {
  readonly path: string;
  /** named by --config or $LEMONADE_LB_CONFIG: then it must exist */
  readonly explicit: boolean;
  readonly json: boolean;
  readonly checkBackends: boolean;
  readonly env: Env;
  readonly out: (s: string) => void;
  /** ms since the epoch (certificates' expiry is judged against it) */
  readonly now?: () => number;
}

export interface BackendWarning {
  readonly backend: string;
  readonly address: string;
  readonly message: string;
}

export async function runValidate(o: ValidateOptions): Promise<number> {
  let config: Config | null = null;
  let issues: ConfigIssue[] = [];
  let shown = o.path;
  try {
    const loaded = loadConfig({ path: o.path, explicit: o.explicit }, o.env);
    config = loaded.config;
    shown = loaded.path;
  } catch (e) {
    if (e instanceof ConfigInvalidError) {
      issues = [...e.issues];
      shown = e.file;
    } else if (e instanceof LemonadeError) issues = [{ path: '(file)', message: e.message }];
    else throw e;
  }
  const warnings = config && o.checkBackends ? await checkBackends(config) : [];
  // the same text the start log carries; the file stays valid (exit 0)
  const exposure = config ? [...adminExposureWarnings(config).map((message) => ({ path: 'admin.listen_address', message })), ...backendTlsWarnings(config)] : [];
  // the load read and parsed every certificate: a file that changes meanwhile is not warned about
  const expiring = config ? certificateWarnings(config, (o.now ?? Date.now)()) : [];
  if (o.json) {
    const body: Record<string, unknown> = { valid: config !== null, file: shown, errors: issues };
    if (o.checkBackends || exposure.length > 0 || expiring.length > 0) body['warnings'] = [...exposure, ...expiring, ...warnings];
    o.out(JSON.stringify(body, null, 2));
  } else if (config) {
    const n = (k: number, what: string): string => `${k} ${what}${k === 1 ? '' : 's'}`;
    const only = config.services.length === 1 ? config.services[0]! : null;
    o.out(
      only
        ? `${shown}: valid (listen ${only.listenAddress}, ${n(only.backends.length, 'backend')}, strategy ${only.algorithm})`
        : `${shown}: valid (${n(config.services.length, 'service')}: ${config.services.map((s) => `${s.name} on ${s.listenAddress} with ${n(s.backends.length, 'backend')}`).join('; ')})`,
    );
    for (const w of exposure) o.out(`warning: ${w.message}`);
    for (const w of expiring) o.out(`warning: ${w.path}: ${w.message}`);
    for (const w of warnings) o.out(`warning: backends: ${w.backend} (${w.address}) is unreachable: ${w.message}`);
  } else {
    o.out(`${shown}: invalid, ${issues.length} error${issues.length === 1 ? '' : 's'}:`);
    for (const i of issues) o.out(`  ${formatIssue(i)}`);
  }
  return config ? 0 : 1;
}

/**
 * A certificate a service or the admin API serves that has expired or expires within
 * CERTIFICATE_WARN_DAYS days: its key path, and a message naming the service, the file and the date.
 */
export function certificateWarnings(config: Config, now: number, read: (file: string) => Buffer = readFileSync): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const check = (path: string, who: string, file: string): void => {
    let notAfter: number;
    try {
      notAfter = certificateFacts(file, read(file)).notAfterMs;
    } catch {
      return;
    }
    const left = notAfter - now;
    if (left > CERTIFICATE_WARN_DAYS * 86_400_000) return;
    const days = daysLeft({ notAfterMs: notAfter }, now);
    const date = new Date(notAfter).toISOString();
    const when = left <= 0 ? `expired on ${date} (${-days} day${days === -1 ? '' : 's'} ago)` : `expires on ${date} (in ${days} day${days === 1 ? '' : 's'})`;
    out.push({ path, message: `${who}: the certificate in ${file} ${when}` });
  };
  config.services.forEach((svc, i) => svc.tls?.certificates.forEach((c, j) => check(`${tlsTablePath(config, i)}.certificates[${j}].cert`, `service "${svc.name}"`, c.cert)));
  if (config.admin.tlsCert !== '' && config.admin.tlsKey !== '') check('admin.tls_cert', 'the admin API', config.admin.tlsCert);
  return out;
}

export async function checkBackends(config: Config, timeoutMs = 2000): Promise<BackendWarning[]> {
  const results = await Promise.all(
    config.services.flatMap((svc) => svc.backends.map((b) => ({ ...b, name: shownName(svc.name, b.name) }))).map(
      (b) =>
        new Promise<BackendWarning | null>((resolve) => {
          // an SRV backend has no address of its own to try
          if (b.srv !== '') return resolve({ backend: b.name, address: b.address, message: 'not checked: its addresses and ports come from SRV records at run time' });
          const s = net.connect({ host: b.host, port: b.port });
          const done = (msg: string | null): void => {
            clearTimeout(t);
            s.destroy();
            resolve(msg === null ? null : { backend: b.name, address: b.address, message: msg });
          };
          const t = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
          s.once('connect', () => done(null));
          s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
        }),
    ),
  );
  return results.filter((r): r is BackendWarning => r !== null);
}
