// Each terminating service's TLS, built from the files its tls table names: one secure context per
// certificate (its key, min_version, client_ca), the names each answers to (its DNS SANs, else its
// CN), and the server-side socket options (SNI choice, ALPN, client certificates). Built when a
// snapshot is, and kept while the table and the files' bytes stay the same, so a snapshot rebuilt
// for a DNS answer or an agent's word reuses the contexts (and their session tickets). The files
// were checked by the load (config/load.ts); one unreadable now keeps the service's previous
// contexts (or refuses handshakes): a service that terminates never relays plaintext instead.
// Every context holds the one session ticket key the control plane hands out (./ticket-keys.ts),
// so a ticket resumes in any worker process; a new key is set on the kept contexts in place and
// applies to the next handshakes (node:tls keeps no older key: their tickets get a full handshake).

import { readFileSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { ServiceConfig, TlsConfig } from '../config/schema';
import type { TlsTerminator } from '../core/tls';
import { certificateFacts, namesOf } from '../core/certificate';

interface Built {
  readonly key: string;
  readonly terminator: TlsTerminator;
  readonly contexts: readonly SecureContext[];
}

export class TlsTerminators {
  private readonly byService = new Map<string, Built>();
  /** the session ticket key of every context; null: each context's own random one (until set) */
  private ticketKey: Buffer | null = null;

  /** `warn`: a file that could not be used now (its path and why; never its contents) */
  constructor(private readonly warn: (service: string, problem: string) => void) {}

  /** The session ticket key (48 bytes, a secret) of every context, built or to be built: new handshakes use it. */
  setTicketKey(key: Buffer): void {
    this.ticketKey = key;
    for (const b of this.byService.values()) for (const ctx of b.contexts) setTicketKeys(ctx, key);
  }

  /** The service's terminator (the SnapshotEnv's `tls`). */
  readonly build = (svc: ServiceConfig): TlsTerminator | null => {
    const tls = svc.tls;
    if (tls === null) return null;
    const prev = this.byService.get(svc.name);
    let files: Map<string, Buffer>;
    try {
      files = readAll(tls);
    } catch (e) {
      this.warn(svc.name, (e as Error).message);
      return prev?.terminator ?? refusing(tls);
    }
    const key = JSON.stringify(tls) + [...files.values()].map((b) => createHash('sha256').update(b).digest('hex')).join(',');
    if (prev !== undefined && prev.key === key) return prev.terminator;
    try {
      const { terminator, contexts } = make(svc.name, tls, files, this.ticketKey);
      this.byService.set(svc.name, { key, terminator, contexts });
      return terminator;
    } catch (e) {
      // the parser's message names no secret, but it is not repeated: say which table
      this.warn(svc.name, `its certificates could not be loaded (${(e as { code?: string }).code ?? 'invalid'}); the previous ones are kept`);
      return prev?.terminator ?? refusing(tls);
    }
  };
}

function readAll(tls: TlsConfig): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const read = (p: string): void => {
    if (out.has(p)) return;
    try {
      out.set(p, readFileSync(p));
    } catch (e) {
      throw new Error(`cannot read ${p}: ${(e as NodeJS.ErrnoException).code ?? 'error'}; the previous certificates are kept`);
    }
  };
  for (const c of tls.certificates) {
    read(c.cert);
    read(c.key);
  }
  if (tls.clientCa !== '') read(tls.clientCa);
  return out;
}

function setTicketKeys(ctx: SecureContext, key: Buffer): void {
  (ctx as unknown as { context: { setTicketKeys(k: Buffer): void } }).context.setTicketKeys(key);
}

function make(service: string, tls: TlsConfig, files: ReadonlyMap<string, Buffer>, ticketKey: Buffer | null): { terminator: TlsTerminator; contexts: SecureContext[] } {
  const ca = tls.clientCa !== '' ? files.get(tls.clientCa) : undefined;
  // a session resumes only in the service that issued it (and a client certificate needs it set)
  const sessionIdContext = createHash('sha256').update(service).digest('hex').slice(0, 32);
  const exact = new Map<string, SecureContext>();
  const wildcard = new Map<string, SecureContext>();
  const contexts = tls.certificates.map((c) => {
    const cert = files.get(c.cert)!;
    const ctx = createSecureContext({ cert, key: files.get(c.key)!, minVersion: tls.minVersion, ...(ca !== undefined ? { ca } : {}), ...(ticketKey !== null ? { ticketKeys: ticketKey } : {}), sessionIdContext });
    // the first certificate naming a name answers for it
    for (const n of namesOf(new X509Certificate(cert))) {
      if (n.startsWith('*.')) {
        if (!wildcard.has(n.slice(2))) wildcard.set(n.slice(2), ctx);
      } else if (!exact.has(n)) exact.set(n, ctx);
    }
    return ctx;
  });
  const fallback = contexts[0]!;
  const choose = (name: string): SecureContext => {
    const n = name.toLowerCase();
    const dot = n.indexOf('.');
    return exact.get(n) ?? (dot > 0 ? wildcard.get(n.slice(dot + 1)) : undefined) ?? fallback;
  };
  const terminator = Object.freeze({
    socketOptions: Object.freeze({
      isServer: true,
      secureContext: fallback,
      SNICallback: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => cb(null, choose(name)),
      ...(tls.alpn.length > 0 ? { ALPNProtocols: [...tls.alpn] } : {}),
      requestCert: tls.clientAuth !== 'none' || ca !== undefined,
      rejectUnauthorized: tls.clientAuth === 'required',
    }),
    requireClientCert: tls.clientAuth === 'required',
    handshakeTimeoutMs: tls.handshakeTimeoutMs,
    certificates: Object.freeze(tls.certificates.map((c) => certificateFacts(c.cert, files.get(c.cert)!))),
  });
  return { terminator, contexts };
}

/** A service whose certificates could never be loaded: every handshake fails. */
function refusing(tls: TlsConfig): TlsTerminator {
  return Object.freeze({
    socketOptions: Object.freeze({
      isServer: true,
      secureContext: createSecureContext({ minVersion: tls.minVersion }),
      SNICallback: (_name: string, cb: (err: Error | null) => void) => cb(new Error('no certificate loaded')),
    }),
    requireClientCert: true,
    handshakeTimeoutMs: tls.handshakeTimeoutMs,
    certificates: [],
  });
}
