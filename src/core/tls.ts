// What a service that terminates TLS hands the data plane: built by runtime/ (which reads the
// files and makes node:tls's secure contexts) once per configuration, kept in the snapshot. Opaque
// here: core/ stays free of I/O.

import type { CertificateFacts } from './certificate';

export interface TlsTerminator {
  /** the server-side TLSSocket's options: secureContext, SNICallback, ALPNProtocols, requestCert, rejectUnauthorized */
  readonly socketOptions: Readonly<Record<string, unknown>>;
  /** a client certificate that does not chain to client_ca fails the handshake */
  readonly requireClientCert: boolean;
  readonly handshakeTimeoutMs: number;
  /** what each certificate served is (file, names, expiry, fingerprint), in the table's order; none when none could be loaded */
  readonly certificates: readonly CertificateFacts[];
}

/**
 * What a service that speaks TLS to its backends hands the data plane and the health checks:
 * built by runtime/ (the client secure context: ca, cert and key) once per configuration, kept in
 * the snapshot. Opaque here as well.
 */
export interface TlsOriginator {
  /**
   * tls.connect()'s options for a backend whose configured host is `host` (secureContext,
   * servername, rejectUnauthorized, checkServerIdentity), the same object for the same host
   */
  readonly optionsFor: (host: string) => Readonly<Record<string, unknown>>;
}
