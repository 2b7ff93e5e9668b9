// The one small interface through which the data plane reports what happens. Metrics and the
// debug log subscribe to it; the data plane imports neither.

import type { SnapshotBackend } from '../core/snapshot';

export type RejectReason = 'max_connections' | 'no_backend' | 'acl' | 'rate_limit';

export interface ProxyObserver {
  rejected(reason: RejectReason, remoteAddress: string | undefined, service: string): void;
  connectFailed(backend: SnapshotBackend, error: string, willRetry: boolean): void;
  connected(backend: SnapshotBackend, connectMs: number): void;
  /** both sockets of a proxied connection are closed */
  closed(backend: SnapshotBackend, durationMs: number, bytesIn: number, bytesOut: number): void;
  /** the listener could not accept (EMFILE and the like) */
  acceptError(error: Error): void;
}
