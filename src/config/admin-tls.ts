// [admin] tls_cert and tls_key: the two files checked at load (start, --validate, every reload),
// so a bad file fails the whole load and the server is handed bytes already checked. Pure: the
// reading is ./load.ts's. The key is a secret: no message here quotes the file's contents, only its path.

import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import type { ConfigIssue } from '../errors';
import type { Config } from './settings';

/** The certificate (chain) and key the admin API serves, as read at load. */
export interface AdminTls {
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** A file's bytes, or a thrown error with its `code` (ENOENT…). */
export type ReadFile = (path: string) => Buffer;

/** Read and check both files; null when the admin API is plain HTTP. Problems go to `issues`. */
export function readAdminTls(config: Config, issues: ConfigIssue[], read: ReadFile): AdminTls | null {
  const { tlsCert, tlsKey } = config.admin;
  if (tlsCert === '' || tlsKey === '') return null;
  const before = issues.length;
  const cert = readPem('admin.tls_cert', tlsCert, 'CERTIFICATE', issues, read);
  const key = readPem('admin.tls_key', tlsKey, 'PRIVATE KEY', issues, read);
  let x509: X509Certificate | null = null;
  if (cert) {
    try {
      x509 = new X509Certificate(cert);
    } catch {
      issues.push({ path: 'admin.tls_cert', message: `${tlsCert}: not a readable X.509 certificate in PEM form` });
    }
  }
  let keyObject: KeyObject | null = null;
  if (key) {
    try {
      keyObject = createPrivateKey(key);
    } catch {
      // the parser's own message is not passed on: nothing of the file's contents leaves here
      issues.push({ path: 'admin.tls_key', message: `${tlsKey}: not a readable private key in PEM form (an encrypted key is not supported)` });
    }
  }
  if (x509 && keyObject && !x509.checkPrivateKey(keyObject)) {
    issues.push({ path: 'admin.tls_key', message: `${tlsKey}: this private key does not match the certificate in ${tlsCert}` });
  }
  return issues.length === before && cert && key ? { cert, key } : null;
}

function readPem(path: string, file: string, label: string, issues: ConfigIssue[], read: ReadFile): Buffer | null {
  let bytes: Buffer;
  try {
    bytes = read(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    issues.push({ path, message: `${file}: ${code === 'ENOENT' ? 'no such file' : `cannot be read (${code ?? 'error'})`}` });
    return null;
  }
  // "-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----", "-----BEGIN CERTIFICATE-----"
  if (!new RegExp(`-----BEGIN [A-Z0-9 ]*${label}-----`).test(bytes.toString('latin1'))) {
    issues.push({ path, message: `${file}: not PEM (expected a "-----BEGIN ...${label}-----" block)` });
    return null;
  }
  return bytes;
}
