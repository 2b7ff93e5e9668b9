// The one small interface through which the data plane reports what happens. Metrics, the
// access log and the debug log subscribe to it; the data plane imports none of them.

import type { SnapshotBackend } from '../core/snapshot';

/**
 * Why the listener closed a connection at once (the reason label of the rejection counter);
 * no_route: an address routing by TLS server name has no service for it (no default route);
 * proxy_header: accept_proxy, and the peer is not trusted or its PROXY header is missing, malformed or late.
 */
export type RejectReason = 'max_connections' | 'no_backend' | 'acl' | 'rate_limit' | 'client_limit' | 'no_route' | 'proxy_header';

/** Why a client connection ended (the access log's `termination`), decided where it happened; the first cause seen wins. */
export const TERMINATIONS = [
  'client_closed',
  'backend_closed',
  'client_reset',
  'backend_reset',
  'idle_timeout',
  'connect_timeout',
  'connect_failed',
  'no_backend',
  'queue_timeout',
  'no_route',
  'rejected_max_connections',
  'rejected_acl',
  'rejected_rate_limit',
  'rejected_client_limit',
  'rejected_proxy_header',
  'drain_timeout',
  'disabled',
  'shutdown',
  'tls_handshake_failed',
  'tls_handshake_timeout',
  'udp_idle',
  'udp_responses',
] as const;
export type Termination = (typeof TERMINATIONS)[number];

/** Index of each termination in TERMINATIONS (counters are arrays indexed by it). */
export const TERMINATION_INDEX: Readonly<Record<Termination, number>> = Object.fromEntries(TERMINATIONS.map((t, i) => [t, i])) as Record<Termination, number>;

/** The ends that say nothing went wrong: either side closed its side first, or a UDP flow ended as it should (idle, or its replies all came). */
export const CLEAN_TERMINATIONS: ReadonlySet<Termination> = new Set<Termination>(['client_closed', 'backend_closed', 'udp_idle', 'udp_responses']);

/** The termination a rejection is logged and counted as. */
export function rejectionTermination(reason: RejectReason): Termination {
  switch (reason) {
    case 'no_backend':
    case 'no_route':
      return reason;
    default:
      return `rejected_${reason}`;
  }
}

/** A finished session as its observer reads it, during the closed() call only. */
export interface SessionEnd {
  readonly service: string;
  /** the backend it was connected to, or the last one tried; null when none was picked */
  readonly pickedBackend: SnapshotBackend | null;
  /** a connect completed */
  readonly connected: boolean;
  /** ms to connect the last backend (meaningful when connected) */
  readonly connectMs: number;
  /** accept to both sockets closed, ms */
  readonly durationMs: number;
  /** client to backend */
  readonly bytesIn: number;
  /** backend to client */
  readonly bytesOut: number;
  /** backends tried after the first */
  readonly retries: number;
  readonly termination: Termination;
  /** the latency sample (connect + time to first byte), ms; -1 when no byte came back */
  readonly latencyMs: number;
  /** "ip:port" of the client when this connection is to be logged, else null */
  readonly logClient: string | null;
  /** what the TLS handshake of a terminating service learned; absent or null for the others */
  readonly tls?: TlsFacts | null;
  /** the datagrams of a UDP flow; absent or null for a connection */
  readonly udp?: UdpFacts | null;
  /** how long it waited in its service's queue (queue_timeout), ms; absent or 0: it did not wait */
  readonly queueMs?: number;
}

/** A UDP flow's datagrams (bytesIn and bytesOut count their payloads). */
export interface UdpFacts {
  /** relayed client to backend */
  readonly datagramsIn: number;
  /** relayed backend to client */
  readonly datagramsOut: number;
  /** not relayed: a send queue was full, or the backend was not connected yet and the few held were enough */
  readonly datagramsDropped: number;
}

/** A terminated connection's handshake, as the access log and the metrics read it. */
export interface TlsFacts {
  /** the handshake completed (then the fields below are set) */
  readonly secure: boolean;
  /** as OpenSSL names it: "TLSv1.3" */
  readonly version: string | null;
  readonly cipher: string | null;
  /** the server name the client sent */
  readonly sni: string | null;
  /** the ALPN protocol agreed */
  readonly alpn: string | null;
  /** "CN=alice,O=example", null without a client certificate */
  readonly clientCertSubject: string | null;
  /** accept (or the end of the ClientHello's reading) to the handshake's end; -1 when it did not end */
  readonly handshakeMs: number;
  readonly resumed: boolean;
}

export interface ProxyObserver {
  /**
   * The fraction of connections the access log wants (0 = off): the listener reads the client's
   * "ip:port" for those only, and hands it over as `logClient`.
   */
  readonly logSample: number;
  /**
   * The listener closed a connection at once; `logClient` as above, else null. `service` is ""
   * for one refused with no route. `durationMs`: since accept, for one refused once its
   * ClientHello was read (else 0: refused at accept).
   */
  rejected(reason: RejectReason, remoteAddress: string | undefined, service: string, logClient: string | null, durationMs?: number): void;
  connectFailed(backend: SnapshotBackend, error: string, willRetry: boolean): void;
  connected(backend: SnapshotBackend, connectMs: number): void;
  /** both sockets of a client connection handed to a session are closed, whatever happened */
  closed(end: SessionEnd): void;
  /** the listener could not accept (EMFILE and the like) */
  acceptError(error: Error): void;
}
