// Each service's TLS to its backends, built from its backend_tls table: one client secure context
// (the CAs of `ca` or the system's trust store, the client certificate and key) and, per backend
// host, the options tls.connect() takes (the SNI name, the name verified, verify or not). Built
// when a snapshot is, and kept while the table and the files' bytes stay the same, so a snapshot
// rebuilt for a DNS answer or an agent's word reuses the context (and its TLS sessions). The files
// were checked by the load (config/load.ts); one unreadable now keeps the service's previous
// context, or, with none, fails every handshake: a service that originates never falls back to
// plaintext or to another trust.

import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import tls, { createSecureContext, type PeerCertificate, type SecureContext } from 'node:tls';
import { ipFamily } from '../core/cached-lookup';
import type { BackendTlsConfig, ServiceConfig } from '../config/schema';
import type { TlsOriginator } from '../core/tls';

interface Built {
  readonly key: string;
  readonly originator: TlsOriginator;
}

export class TlsOriginators {
  private readonly byService = new Map<string, Built>();

  /** `warn`: a file that could not be used now (its path and why; never its contents) */
  constructor(private readonly warn: (service: string, problem: string) => void) {}

  /** The service's originator (the SnapshotEnv's `backendTls`). */
  readonly build = (svc: ServiceConfig): TlsOriginator | null => {
    const o = svc.backendTls;
    if (o === null) return null;
    const prev = this.byService.get(svc.name);
    let files: Map<string, Buffer>;
    try {
      files = readAll(o);
    } catch (e) {
      this.warn(svc.name, (e as Error).message);
      return prev?.originator ?? refusing('its files could not be read');
    }
    const key = JSON.stringify(o) + [...files.values()].map((b) => createHash('sha256').update(b).digest('hex')).join(',');
    if (prev !== undefined && prev.key === key) return prev.originator;
    try {
      const originator = make(o, files);
      this.byService.set(svc.name, { key, originator });
      return originator;
    } catch (e) {
      // the parser's message names no secret, but it is not repeated: say which table
      this.warn(svc.name, `its backend_tls files could not be loaded (${(e as { code?: string }).code ?? 'invalid'}); the previous ones are kept`);
      return prev?.originator ?? refusing('its files could not be loaded');
    }
  };
}

function readAll(o: BackendTlsConfig): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const p of [o.ca, o.cert, o.key]) {
    if (p === '' || out.has(p)) continue;
    try {
      out.set(p, readFileSync(p));
    } catch (e) {
      throw new Error(`cannot read ${p}: ${(e as NodeJS.ErrnoException).code ?? 'error'}; the previous backend_tls files are kept`);
    }
  }
  return out;
}

function make(o: BackendTlsConfig, files: ReadonlyMap<string, Buffer>): TlsOriginator {
  const ca = o.ca !== '' ? files.get(o.ca) : systemCertificates();
  const context = createSecureContext({
    ...(ca !== undefined ? { ca } : {}),
    ...(o.cert !== '' ? { cert: files.get(o.cert)!, key: files.get(o.key)! } : {}),
  });
  const byHost = new Map<string, Readonly<Record<string, unknown>>>();
  return Object.freeze({
    optionsFor: (host: string) => {
      let opts = byHost.get(host);
      if (opts === undefined) {
        opts = options(o, context, host);
        if (byHost.size >= 4096) byHost.clear(); // hosts come from the config and its names' answers: a bound, never reached in practice
        byHost.set(host, opts);
      }
      return opts;
    },
  });
}

/**
 * tls.connect()'s options for one backend host. The name verified is server_name, else the host;
 * SNI carries it when it is a name (an IP address is never sent as SNI, RFC 6066), and an IP
 * address is verified against the certificate's IP addresses.
 */
function options(o: BackendTlsConfig, secureContext: SecureContext, host: string): Readonly<Record<string, unknown>> {
  const name = o.serverName !== '' ? o.serverName : host;
  const sni = ipFamily(name) === 0 ? { servername: name } : {};
  const checkServerIdentity = o.verify ? (_host: string, cert: PeerCertificate): Error | undefined => tls.checkServerIdentity(name, cert) : acceptAny;
  return Object.freeze({ secureContext, ...sni, rejectUnauthorized: o.verify, checkServerIdentity });
}

function acceptAny(): undefined {
  return undefined;
}

/** A service whose files could never be loaded: every handshake fails its verification. */
function refusing(why: string): TlsOriginator {
  const opts = Object.freeze({
    rejectUnauthorized: true,
    checkServerIdentity: () => Object.assign(new Error(`backend_tls: ${why}`), { code: 'ERR_TLS_NO_CONTEXT' }),
  });
  return Object.freeze({ optionsFor: () => opts });
}

/** Where distributions keep the trust store as one PEM file (as Go's crypto/x509 looks for it). */
const SYSTEM_CA_FILES = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu, Arch, Alpine
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL
  '/etc/ssl/ca-bundle.pem', // openSUSE
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem', // RHEL 7+
  '/etc/ssl/cert.pem', // Alpine, macOS
];

let system: string[] | undefined | null = null;

/**
 * The system's trust store, read once per process: Node's own reading of it where it has one
 * (tls.getCACertificates('system')), else the first of SYSTEM_CA_FILES; undefined
 * when none is found (then Node's bundled roots).
 */
function systemCertificates(): string[] | undefined {
  if (system !== null) return system;
  const get = (tls as unknown as { getCACertificates?: (type: string) => string[] }).getCACertificates;
  if (typeof get === 'function') {
    try {
      const list = get('system');
      if (list.length > 0) return (system = list);
    } catch {
      // an older shape of the API: read the files below
    }
  }
  for (const f of SYSTEM_CA_FILES) {
    try {
      const text = readFileSync(f, 'utf8');
      const list = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
      if (list !== null && list.length > 0) return (system = list);
    } catch {
      // not this distribution's place
    }
  }
  return (system = undefined);
}
