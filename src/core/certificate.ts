// What an operator needs to know of a certificate a service (or the admin API) serves: the file it
// came from, the names it answers to, when it expires and its fingerprint. Read once from the PEM
// when the certificate is loaded, never per connection. Pure: the bytes are handed in.

import { createHash, X509Certificate } from 'node:crypto';

/** A certificate expiring within this many days (or expired) is warned about and highlighted. */
export const CERTIFICATE_WARN_DAYS = 14;

export interface CertificateFacts {
  /** the certificate file's path, as the configuration names it */
  readonly file: string;
  /** its DNS subject alternative names, else its CN; lower case */
  readonly names: readonly string[];
  /** not after, ms since the epoch */
  readonly notAfterMs: number;
  /** SHA-256 of the DER, lowercase hex */
  readonly sha256: string;
}

/** The facts of the first certificate in `pem` (the leaf of a chain). Throws when it does not parse. */
export function certificateFacts(file: string, pem: Buffer): CertificateFacts {
  const x = new X509Certificate(pem);
  const validToDate = (x as { validToDate?: Date }).validToDate;
  return Object.freeze({
    file,
    names: Object.freeze(namesOf(x)),
    notAfterMs: validToDate !== undefined ? validToDate.getTime() : Date.parse(x.validTo),
    sha256: createHash('sha256').update(x.raw).digest('hex'),
  });
}

/** The name a certificate goes by in one label: its first name, else its file. */
export function firstName(c: CertificateFacts): string {
  return c.names[0] ?? c.file;
}

/** Whole days from `now` to the certificate's end, rounded down (negative: expired). */
export function daysLeft(c: Pick<CertificateFacts, 'notAfterMs'>, now: number): number {
  return Math.floor((c.notAfterMs - now) / 86_400_000);
}

/** The DNS subject alternative names, else the CN, lower case: the names the SNI choice matches. */
export function namesOf(x: X509Certificate): string[] {
  const san = x.subjectAltName;
  if (san) {
    const dns = san
      .split(', ')
      .filter((e) => e.startsWith('DNS:'))
      .map((e) => e.slice(4).toLowerCase());
    if (dns.length > 0) return dns;
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(x.subject);
  return cn ? [cn[1]!.toLowerCase()] : [];
}
