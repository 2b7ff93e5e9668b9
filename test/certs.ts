// The TLS tests' certificates and client: a test CA and certificates it signs, made by openssl in a
// test's directory, and `openssl s_client` sending one line through a balancer.

import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Does `cmd args` run and exit 0? (a tool the test needs is there) */
export function have(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

export const OPENSSL = have('openssl', ['version']);

export function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** a P-256 key, unencrypted */
export const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A test CA in `dir`: `name`.pem and `name`.key. */
export function makeCa(dir: string, name = 'ca'): void {
  openssl(dir, ['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=lemonade test CA ${name}`]);
}

/**
 * `name`.pem and `name`.key signed by the CA `ca`, with this subject and subjectAltName (null:
 * none), and `ext` lines more in the certificate's extensions.
 */
export function makeCert(dir: string, name: string, subject: string, san: string | null, o: { ca?: string; ext?: string } = {}): void {
  const ca = o.ca ?? 'ca';
  writeFileSync(join(dir, `${name}.ext`), `${san === null ? 'basicConstraints=CA:FALSE' : `subjectAltName=${san}`}\n${o.ext ?? ''}`);
  openssl(dir, ['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
}

/** A self-signed certificate: `name`.pem and `name`.key. */
export function makeSelfSigned(dir: string, name: string, cn: string, san: string): void {
  openssl(dir, ['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`]);
}

export interface SClient {
  readonly out: string;
  readonly err: string;
  /** the line sent came back */
  readonly echoed: boolean;
  /** the peer certificate's subject CN as s_client prints it */
  readonly cn: string | null;
  /** "New" or "Reused", as s_client says of the session, once the line came back; else null */
  readonly session: 'New' | 'Reused' | null;
}

/** openssl s_client to the port with `args`; sends `line` and waits for it to come back (or the end). */
export function sClient(port: number, args: string[], line: string, timeoutMs = 8000): Promise<SClient> {
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-ign_eof', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      p.kill('SIGKILL');
      const cn = /subject=.*?CN ?= ?([^,\n/]+)/.exec(out);
      const session = /^(New|Reused), /m.exec(out);
      // s_client may print the data in the middle of its own lines (a session ticket read after it)
      const echoed = out.includes(line);
      resolve({ out, err, echoed, cn: cn ? cn[1]!.trim() : null, session: echoed && session ? (session[1] as 'New' | 'Reused') : null });
    };
    const t = setTimeout(finish, timeoutMs);
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(line)) finish();
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', finish);
    p.stdin.on('error', () => {});
    p.stdin.write(`${line}\n`);
  });
}
