// TLS session resumption across worker processes and across balancers, with openssl s_client's
// -sess_out / -sess_in against the real balancer (the bundle): with `workers = 2` a ticket issued
// by one worker resumes on the other (the per-worker figures of /status say which worker took each
// connection, and the resumptions are sent in concurrent bursts until the other worker took some),
// TLS 1.3 and TLS 1.2, each counted once as resumed; two balancers given the same key by
// [tls_tickets] key_file (HAProxy's base64 lines on one, nginx's 48 raw bytes on the other) resume
// each other's sessions, a balancer with another key does a full handshake; a reload that replaces
// the key makes old tickets do a full handshake and new ones resume on every worker; a bad key file
// fails --validate and the reload naming tls_tickets.key_file and the file, never its contents,
// and the old key keeps serving.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminJson, requireTool, runCli, startBalancer, startEcho, tempDir, waitFor, type Balancer } from '../helpers';
import { sClient } from '../certs';
import { metric } from '../services-helpers';

const OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

type Version = 'TLSv1.3' | 'TLSv1.2';
const versionArgs = (v: Version): string[] => (v === 'TLSv1.2' ? ['-tls1_2'] : []);

/** A self-signed certificate for a.test in `dir` (a.pem, a.key). */
function makeCert(dir: string): void {
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'a.key', '-out', 'a.pem', '-days', '2', '-subj', '/CN=a.test', '-addext', 'subjectAltName=DNS:a.test'],
    { cwd: dir, encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl req: ${r.stderr}`);
}

/**
 * openssl s_client to the port: sends a line, waits for the echo (a TLS 1.3 ticket comes after the
 * handshake, so the session file is complete by then), and says whether the session was "New" or
 * "Reused".
 */
async function resumeOrNew(port: number, args: string[], timeoutMs = 8000): Promise<{ how: 'New' | 'Reused' | null; out: string }> {
  const r = await sClient(port, ['-servername', 'a.test', ...args], `line-${randomBytes(6).toString('hex')}`, timeoutMs);
  return { how: r.session, out: r.out + r.err };
}

async function newSession(port: number, file: string, v: Version): Promise<void> {
  const r = await resumeOrNew(port, ['-sess_out', file, ...versionArgs(v)]);
  assert.equal(r.how, 'New', r.out);
  assert.match(r.out, new RegExp(`^New, ${v.replace('.', '\\.')}`, 'm'));
  await waitFor(() => readFileSync(file, 'utf8').includes('SSL SESSION'), 5000, 's_client to write the session');
}

async function resume(port: number, file: string, v: Version): Promise<'New' | 'Reused'> {
  const r = await resumeOrNew(port, ['-sess_in', file, ...versionArgs(v)]);
  assert.ok(r.how !== null, `the line came back: ${r.out}`);
  return r.how!;
}

interface Status {
  workers?: { index: number; accepted: number }[];
}

async function acceptedPerWorker(b: Balancer): Promise<number[]> {
  const s = await adminJson<Status>(b, '/status');
  return s.workers!.map((w) => w.accepted);
}

const keyLine = (): string => randomBytes(48).toString('base64');

function config(o: { cert: string; key: string; backend: string; workers?: number; keyFile?: string }): string {
  return `[runtime]
config_watch_interval_millis = 300
workers = ${o.workers ?? 1}
[proxy]
listen_address = "127.0.0.1:0"
connect_timeout = "1s"
[admin]
listen_address = "127.0.0.1:0"
[tls]
certificates = [{ cert = "${o.cert}", key = "${o.key}" }]
${o.keyFile !== undefined ? `[tls_tickets]\nkey_file = "${o.keyFile}"\n` : ''}
[[backends]]
address = "${o.backend}"
`;
}

/**
 * Resumptions of the session in `file` in concurrent bursts (so that the kernel spreads them over
 * the workers), every one of which must be Reused, until the worker `other` took some (at most 10
 * bursts): resumptions served by a worker that did not issue the ticket. Returns how many were made.
 */
async function resumeOnOtherWorker(b: Balancer, file: string, v: Version, other: number): Promise<number> {
  const start = await acceptedPerWorker(b);
  let made = 0;
  for (let burst = 0; burst < 10; burst++) {
    const results = await Promise.all(Array.from({ length: 8 }, () => resume(b.port, file, v)));
    made += results.length;
    assert.deepEqual(results, results.map(() => 'Reused'), `${v}: every resumption is Reused (burst ${burst})`);
    const now = await acceptedPerWorker(b);
    if (now[other]! > start[other]!) return made;
  }
  assert.fail(`${v}: worker ${other} took none of ${made} resumptions (accepted per worker: ${(await acceptedPerWorker(b)).join('/')})`);
}

test('workers = 2 without key_file: a ticket one worker issued resumes on the other (TLS 1.3 and 1.2), each counted resumed once', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeCert(dir);
  const echo = await startEcho(t);
  const b = await startBalancer(t, config({ cert: `${dir}/a.pem`, key: `${dir}/a.key`, backend: `127.0.0.1:${echo.port}`, workers: 2 }));
  let resumed = 0;
  for (const v of ['TLSv1.3', 'TLSv1.2'] as const) {
    const before = await acceptedPerWorker(b);
    const file = join(dir, `${v}.sess`);
    await newSession(b.port, file, v);
    const after = await acceptedPerWorker(b);
    const issuer = after.findIndex((n, i) => n === before[i]! + 1);
    assert.ok(issuer >= 0 && after.reduce((a, n) => a + n, 0) === before.reduce((a, n) => a + n, 0) + 1, `one worker took the first connection: ${before} -> ${after}`);
    resumed += await resumeOnOtherWorker(b, file, v, 1 - issuer);
    t.diagnostic(`${v}: worker ${issuer} issued the ticket; accepted per worker now ${(await acceptedPerWorker(b)).join('/')}`);
  }
  // the workers' counts, summed by the control plane: two full handshakes, every resumption once
  const m = await waitFor(async () => {
    const text = (await b.admin('/metrics')).body;
    return metric(text, 'lemonade_tls_handshakes_total', ['result="resumed"']) >= resumed ? text : null;
  });
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['result="resumed"']), resumed);
  assert.equal(metric(m, 'lemonade_tls_handshakes_total', ['result="ok"']), 2);
});

test('two balancers with the same key_file resume each other\'s sessions; another key does a full handshake; a reload that replaces the key; a bad key file', async (t) => {
  if (!requireTool(t, 'openssl', OPENSSL)) return;
  const dir = tempDir();
  makeCert(dir);
  const echo = await startEcho(t);
  const shared = randomBytes(48);
  // A: HAProxy's file (base64 lines; the next-to-last encrypts), B: nginx's (48 raw bytes), C: another key
  const fileA = join(dir, 'a.keys');
  const decoy = [keyLine(), keyLine()];
  writeFileSync(fileA, `# ticket keys\n${decoy[0]}\n${shared.toString('base64')}\n${decoy[1]}\n`);
  const fileB = join(dir, 'b.key');
  writeFileSync(fileB, shared);
  const fileC = join(dir, 'c.keys');
  const keyC = keyLine();
  writeFileSync(fileC, `${keyC}\n`);
  const common = { cert: `${dir}/a.pem`, key: `${dir}/a.key`, backend: `127.0.0.1:${echo.port}` };
  const a = await startBalancer(t, config({ ...common, keyFile: fileA, workers: 2 }));
  const b = await startBalancer(t, config({ ...common, keyFile: fileB }));
  const c = await startBalancer(t, config({ ...common, keyFile: fileC }));
  for (const v of ['TLSv1.3', 'TLSv1.2'] as const) {
    const sess = join(dir, `from-a-${v}.sess`);
    await newSession(a.port, sess, v);
    assert.equal(await resume(b.port, sess, v), 'Reused', `${v}: a session from balancer A resumes on balancer B`);
    assert.equal(await resume(c.port, sess, v), 'New', `${v}: balancer C, with another key, does a full handshake`);
    assert.equal(await resume(a.port, sess, v), 'Reused', `${v}: and on A again`);
  }
  const fromB = join(dir, 'from-b.sess');
  await newSession(b.port, fromB, 'TLSv1.3');
  assert.equal(await resume(a.port, fromB, 'TLSv1.3'), 'Reused', 'and from B on A');

  // a reload that replaces A's key file (a new file renamed over it): old tickets do a full handshake, new ones resume on both workers
  const old = join(dir, 'old.sess');
  await newSession(a.port, old, 'TLSv1.3');
  const renewed = keyLine();
  writeFileSync(`${fileA}.tmp`, `${renewed}\n`);
  renameSync(`${fileA}.tmp`, fileA);
  const reloaded = await a.waitForLog((l) => l['msg'] === 'config reloaded: tls ticket keys replaced', 10_000, 'the reload of the new key');
  assert.ok(!JSON.stringify(reloaded).includes(renewed));
  assert.equal(await resume(a.port, old, 'TLSv1.3'), 'New', 'a ticket of the old key: a full handshake');
  const fresh = join(dir, 'fresh.sess');
  await newSession(a.port, fresh, 'TLSv1.3');
  const before = await acceptedPerWorker(a);
  for (let i = 0; i < 2; i++) await resumeOnOtherWorker(a, fresh, 'TLSv1.3', i);
  const after = await acceptedPerWorker(a);
  assert.ok(after.every((n, i) => n > before[i]!), `both workers resumed tickets of the new key: ${before} -> ${after}`);
  assert.equal(await resume(b.port, fresh, 'TLSv1.3'), 'New', 'B keeps the old key');

  // bad key files: --validate fails naming the key and the file, never the contents
  const wrongLength = join(dir, 'short.keys');
  const shortKey = randomBytes(32).toString('base64');
  writeFileSync(wrongLength, `${shortKey}\n`);
  const notBase64 = join(dir, 'text.keys');
  const junk = 'this-is-not-a-ticket-key!!';
  writeFileSync(notBase64, `${junk}\n`);
  for (const [file, secret] of [
    [wrongLength, shortKey],
    [notBase64, junk],
  ] as const) {
    const cfg = join(dir, `validate-${file.endsWith('short.keys') ? 'short' : 'text'}.toml`);
    writeFileSync(cfg, config({ ...common, keyFile: file }).replace(/"127\.0\.0\.1:0"/g, '"127.0.0.1:1"'));
    const r = await runCli(['lb', '--config', cfg, '--validate']);
    assert.notEqual(r.code, 0, r.stdout);
    const said = r.stdout + r.stderr;
    assert.match(said, /tls_tickets\.key_file/);
    assert.ok(said.includes(file), said);
    assert.ok(!said.includes(secret), said);
  }
  // a reload to a bad file fails whole, naming them; the old key keeps serving
  writeFileSync(`${fileA}.tmp`, `${shortKey}\n`);
  renameSync(`${fileA}.tmp`, fileA);
  const failed = await a.waitForLog((l) => l['msg'] === 'config reload failed; the running configuration is unchanged', 10_000, 'the failed reload');
  const error = String(failed['error']);
  assert.match(error, /tls_tickets\.key_file/);
  assert.ok(error.includes(fileA), error);
  assert.ok(!error.includes(shortKey), error);
  assert.equal(await resume(a.port, fresh, 'TLSv1.3'), 'Reused', 'the key in use before the failed reload still resumes');
  // no key appears in the logs or /status
  const shown = JSON.stringify(a.logs) + a.stderr() + (await a.admin('/status')).body;
  for (const k of [shared.toString('base64'), renewed, shortKey, ...decoy]) assert.ok(!shown.includes(k), 'a key was shown');
  assert.ok(shown.includes(fileA), 'the path may be shown');
});
