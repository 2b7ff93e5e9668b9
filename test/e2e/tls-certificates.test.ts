// Certificates and their expiry, seen from outside, with certificates made by openssl at test time
// (one expiring in 5 days, one in 60, one that expired in 2025, the admin API's in 3 days), and
// each fact checked against what openssl itself reads from the file: `--validate` warns about
// those within 14 days or expired, naming the key, the service, the file and the date (exit 0);
// GET /certificates lists every certificate served (the admin API's as "(admin)") and matches the
// declaration in src/admin/wire.ts; lemonade_tls_certificate_expiry_timestamp_seconds holds each
// not-after once with two worker processes (not added up); a renewal by write-then-rename
// changes not_after and sha256 in both, and the certificate served is the one listed; a service
// removed by a reload loses its rows and series.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CERTIFICATES, checkWire, declaredKeys, type CertificateRow } from '../../src/admin/wire';
import { requireTool, runCli, startBalancer, startEcho, tempDir, waitFor, type Balancer } from '../helpers';

const OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
const DAY_MS = 86_400_000;

function openssl(dir: string, args: string[], input?: string): string {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A self-signed `name`.pem valid for `days` from now, with these DNS names; its key `name`.key (made, or `key` reused). */
function makeCert(dir: string, name: string, days: number, dns: readonly string[], key?: string): { cert: string; key: string } {
  const keyArgs = key === undefined ? [...EC, '-keyout', `${name}.key`] : ['-key', key];
  openssl(dir, ['req', '-x509', ...keyArgs, '-out', `${name}.pem`, '-days', String(days), '-subj', `/CN=${dns[0]}`, '-addext', `subjectAltName=${dns.map((d) => `DNS:${d}`).join(',')}`]);
  return { cert: join(dir, `${name}.pem`), key: key ?? join(dir, `${name}.key`) };
}

/** A certificate that ended on 2025-02-01 (openssl ca takes explicit dates; req -x509 only -days), with only a CN. */
function makeExpired(dir: string, cn: string): { cert: string; key: string } {
  writeFileSync(join(dir, 'ca.cnf'), '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n');
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '01\n');
  openssl(dir, ['req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=lemonade test CA']);
  openssl(dir, ['req', ...EC, '-keyout', 'expired.key', '-out', 'expired.csr', '-subj', `/CN=${cn}`]);
  openssl(dir, ['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-in', 'expired.csr', '-out', 'expired.pem', '-notext', '-startdate', '20250101000000Z', '-enddate', '20250201000000Z']);
  return { cert: join(dir, 'expired.pem'), key: join(dir, 'expired.key') };
}

/** What openssl reads from a certificate file: its end (ms) and the SHA-256 of its DER, lowercase hex. */
function opensslFacts(dir: string, file: string): { notAfter: number; sha256: string } {
  const end = /notAfter=(.*)/.exec(openssl(dir, ['x509', '-in', file, '-noout', '-enddate']))![1]!;
  const fp = /Fingerprint=([0-9A-F:]+)/i.exec(openssl(dir, ['x509', '-in', file, '-noout', '-fingerprint', '-sha256']))![1]!;
  return { notAfter: Date.parse(end), sha256: fp.replace(/:/g, '').toLowerCase() };
}

/** The SHA-256 of the certificate a TLS server on `port` serves for `servername`, as openssl s_client receives it. */
function servedSha256(dir: string, port: number, servername: string): string | null {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername], { cwd: dir, encoding: 'utf8', input: '', timeout: 5000 });
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(r.stdout ?? '');
  if (!pem) return null;
  const fp = /Fingerprint=([0-9A-F:]+)/i.exec(openssl(dir, ['x509', '-noout', '-fingerprint', '-sha256'], `${pem[0]}\n`));
  return fp ? fp[1]!.replace(/:/g, '').toLowerCase() : null;
}

function config(o: { soon: { cert: string; key: string }; later: { cert: string; key: string }; expired?: { cert: string; key: string }; admin: { cert: string; key: string }; backend: string; workers?: number }): string {
  const lines = [
    '[runtime]',
    'config_watch_interval_millis = 200',
    `workers = ${o.workers ?? 1}`,
    '[proxy]',
    'listen_address = "127.0.0.1:0"',
    '[admin]',
    'listen_address = "127.0.0.1:0"',
    `tls_cert = "${o.admin.cert}"`,
    `tls_key = "${o.admin.key}"`,
    '[tls]',
    `certificates = [{ cert = "${o.soon.cert}", key = "${o.soon.key}" }, { cert = "${o.later.cert}", key = "${o.later.key}" }]`,
    '[[backends]]',
    `address = "${o.backend}"`,
  ];
  if (o.expired) {
    lines.push('[[services]]', 'name = "old"', 'listen_address = "127.0.0.1:0"', '[services.tls]', `certificates = [{ cert = "${o.expired.cert}", key = "${o.expired.key}" }]`, '[[services.backends]]', `address = "${o.backend}"`);
  }
  return `${lines.join('\n')}\n`;
}

/** The file as --validate reads it: each listen address its own port (nothing is bound). */
function forValidate(text: string): string {
  let port = 1;
  return text.replace(/127\.0\.0\.1:0/g, () => `127.0.0.1:${port++}`);
}

/** GET on the HTTPS admin API (its certificate is self-signed: not verified here, curl -k). */
function adminGet(b: Balancer, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: b.adminPort, path, rejectUnauthorized: false, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer`)));
    req.on('error', reject);
  });
}

async function certificates(b: Balancer): Promise<CertificateRow[]> {
  const r = await adminGet(b, '/certificates');
  assert.equal(r.status, 200, r.body);
  const rows = JSON.parse(r.body) as CertificateRow[];
  assert.deepEqual(checkWire(CERTIFICATES, rows).problems, [], 'what /certificates serves departs from src/admin/wire.ts');
  return rows;
}

/** Each series of the expiry metric, "service/certificate" → value. */
async function expiryMetric(b: Balancer): Promise<Map<string, number>> {
  const r = await adminGet(b, '/metrics');
  const out = new Map<string, number>();
  for (const m of r.body.matchAll(/^lemonade_tls_certificate_expiry_timestamp_seconds\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    out.set(`${labels['service']}/${labels['certificate']}`, Number(m[2]));
  }
  return out;
}

test('--validate warns about each certificate that has expired or expires within 14 days, naming the key, the service, the file and the date; exit 0', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir('lemonade-certs-');
  const soon = makeCert(dir, 'soon', 5, ['soon.test', 'www.soon.test']);
  const later = makeCert(dir, 'later', 60, ['later.test']);
  const admin = makeCert(dir, 'admin', 3, ['lb.test']);
  const expired = makeExpired(dir, 'old.test');
  const file = join(dir, 'config.toml');
  writeFileSync(file, forValidate(config({ soon, later, expired, admin, backend: '127.0.0.1:1' })));
  const iso = (f: string): string => new Date(opensslFacts(dir, f).notAfter).toISOString();

  const r = await runCli(['lb', '--config', file, '--validate']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const warnings = r.stdout.split('\n').filter((l) => l.startsWith('warning: '));
  assert.deepEqual(warnings, [
    // made 5 days from now, a moment ago: 4 whole days left
    `warning: tls.certificates[0].cert: service "default": the certificate in ${soon.cert} expires on ${iso(soon.cert)} (in 4 days)`,
    `warning: services[0].tls.certificates[0].cert: service "old": the certificate in ${expired.cert} expired on 2025-02-01T00:00:00.000Z (${Math.ceil((Date.now() - Date.parse('2025-02-01T00:00:00Z')) / DAY_MS)} days ago)`,
    `warning: admin.tls_cert: the admin API: the certificate in ${admin.cert} expires on ${iso(admin.cert)} (in 2 days)`,
  ]);
  assert.ok(!r.stdout.includes(later.cert), 'the certificate with 60 days left is not warned about');

  const j = await runCli(['lb', '--config', file, '--validate', '--json']);
  assert.equal(j.code, 0);
  const body = JSON.parse(j.stdout) as { valid: boolean; warnings: { path: string; message: string }[] };
  assert.equal(body.valid, true);
  assert.deepEqual(
    body.warnings.map((w) => w.path),
    ['tls.certificates[0].cert', 'services[0].tls.certificates[0].cert', 'admin.tls_cert'],
  );
  assert.ok(body.warnings[0]!.message.includes(iso(soon.cert)), body.warnings[0]!.message);

  // nothing within 14 days: no warning, no "warnings" key
  writeFileSync(file, forValidate(config({ soon: later, later, admin: later, backend: '127.0.0.1:1' })));
  const quiet = await runCli(['lb', '--config', file, '--validate']);
  assert.equal(quiet.code, 0);
  assert.doesNotMatch(quiet.stdout, /warning/);
  assert.equal('warnings' in (JSON.parse((await runCli(['lb', '--config', file, '--validate', '--json'])).stdout) as object), false);
});

test('GET /certificates and the expiry metric show every certificate served (two workers, not added up); a renewal changes both; a removed service loses its rows and series', { timeout: 60_000 }, async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir('lemonade-certs-');
  const live = tempDir('lemonade-certs-live-');
  const soonMade = makeCert(dir, 'soon', 5, ['soon.test', 'www.soon.test']);
  const later = makeCert(dir, 'later', 60, ['later.test']);
  const adminMade = makeCert(dir, 'admin', 3, ['lb.test']);
  const expired = makeExpired(dir, 'old.test');
  // the live files a renewal replaces (write beside, then rename over)
  const install = (from: string, to: string): void => {
    writeFileSync(`${to}.tmp`, readFileSync(from));
    renameSync(`${to}.tmp`, to);
  };
  const soon = { cert: join(live, 'soon.pem'), key: soonMade.key };
  const admin = { cert: join(live, 'admin.pem'), key: adminMade.key };
  install(soonMade.cert, soon.cert);
  install(adminMade.cert, admin.cert);
  const echo = await startEcho(t);
  const cfg = (withOld: boolean): string => config({ soon, later, admin, backend: echo.address, workers: 2, ...(withOld ? { expired } : {}) });
  const b = await startBalancer(t, cfg(true));

  const want = (service: string, file: string, from: string, names: string[]): CertificateRow => {
    const f = opensslFacts(dir, from);
    return { service, names, not_after: new Date(f.notAfter).toISOString(), sha256: f.sha256, file };
  };
  const expected = [
    want('default', soon.cert, soonMade.cert, ['soon.test', 'www.soon.test']),
    want('default', later.cert, later.cert, ['later.test']),
    // only a CN: its names are the CN
    want('old', expired.cert, expired.cert, ['old.test']),
    want('(admin)', admin.cert, adminMade.cert, ['lb.test']),
  ];
  const rows = await certificates(b);
  assert.deepEqual(rows, expected);
  const unseen = declaredKeys(CERTIFICATES).filter((k) => !checkWire(CERTIFICATES, rows).seen.has(k));
  assert.deepEqual(unseen, [], 'declared in src/admin/wire.ts, never served');

  // the metric: the not-after in Unix seconds, once (two workers serve the same certificates)
  const seconds = (r: CertificateRow): number => Date.parse(r.not_after) / 1000;
  assert.deepEqual(
    await expiryMetric(b),
    new Map([
      ['default/soon.test', seconds(expected[0]!)],
      ['default/later.test', seconds(expected[1]!)],
      ['old/old.test', seconds(expected[2]!)],
      ['(admin)/lb.test', seconds(expected[3]!)],
    ]),
  );
  assert.equal(servedSha256(dir, b.port, 'soon.test'), expected[0]!.sha256, 'the certificate listed is the one served');

  // renewal: a new certificate for the same key, 90 days, renamed over the live file
  const renewed = makeCert(dir, 'soon-renewed', 90, ['soon.test', 'www.soon.test'], soonMade.key);
  const fresh = want('default', soon.cert, renewed.cert, ['soon.test', 'www.soon.test']);
  assert.notEqual(fresh.sha256, expected[0]!.sha256);
  install(renewed.cert, soon.cert);
  await waitFor(async () => (await certificates(b))[0]!.sha256 === fresh.sha256, 15_000, 'the renewed certificate in /certificates');
  assert.deepEqual((await certificates(b))[0], fresh);
  assert.ok(Date.parse(fresh.not_after) - Date.now() > 80 * DAY_MS, fresh.not_after);
  assert.equal((await expiryMetric(b)).get('default/soon.test'), seconds(fresh));
  // every worker serves it once it has the new snapshot
  await waitFor(() => [0, 1, 2, 3].every(() => servedSha256(dir, b.port, 'soon.test') === fresh.sha256), 15_000, 'the renewed certificate served');

  // the admin API's own, renewed the same way
  const adminRenewed = makeCert(dir, 'admin-renewed', 30, ['lb.test'], adminMade.key);
  install(adminRenewed.cert, admin.cert);
  const adminFresh = want('(admin)', admin.cert, adminRenewed.cert, ['lb.test']);
  await waitFor(async () => (await certificates(b)).at(-1)!.sha256 === adminFresh.sha256, 15_000, 'the renewed admin certificate in /certificates');
  assert.deepEqual((await certificates(b)).at(-1), adminFresh);
  assert.equal((await expiryMetric(b)).get('(admin)/lb.test'), seconds(adminFresh));

  // a reload that removes service "old": its rows and its series are gone
  b.replaceConfig(cfg(false));
  await waitFor(async () => !(await certificates(b)).some((r) => r.service === 'old'), 15_000, 'service old gone from /certificates');
  assert.deepEqual(
    [...(await expiryMetric(b)).keys()].sort(),
    ['(admin)/lb.test', 'default/later.test', 'default/soon.test'],
  );
});
