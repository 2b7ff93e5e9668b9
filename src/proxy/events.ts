// The one small interface through which the data plane reports what happens. Metrics and the
// debug log subscribe to it; the data plane imports neither.

import type { SnapshotBackend } from '../core/snapshot';

/** no_route: an address routing by TLS server name has no service for the connection (no default route) */
export type RejectReason = 'max_connections' | 'no_backend' | 'acl' | 'rate_limit' | 'no_route';

export interface ProxyObserver {
  /** `service` is "" for a connection refused before it had one (no_route, or the global cap while its ClientHello was read) */
  rejected(reason: RejectReason, remoteAddress: string | undefined, service: string): void;
  connectFailed(backend: SnapshotBackend, error: string, willRetry: boolean): void;
  connected(backend: SnapshotBackend, connectMs: number): void;
  /** both sockets of a proxied connection are closed */
  closed(backend: SnapshotBackend, durationMs: number, bytesIn: number, bytesOut: number): void;
  /** the listener could not accept (EMFILE and the like) */
  acceptError(error: Error): void;
}
