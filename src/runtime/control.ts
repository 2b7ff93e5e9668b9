// What the control plane hands the admin API and takes from it, declared below admin/: the outcome
// of a reload (POST /reload answers it as it is), and the admin listener that the lifecycle binds
// or adopts and closes, and that a reload moves (admin/server.ts's AdminServer is one).

import type { HostPort } from '../config/address';
import type { AdminTls } from '../config/admin-tls';
import type { Pending } from './plane';

export interface ReloadOutcome {
  readonly result: 'success' | 'failure';
  readonly generation: number;
  readonly changes?: string;
  /** success: the worker processes (pids) that did not acknowledge the new snapshot in time */
  readonly unacknowledged?: readonly number[];
  readonly error?: string;
  readonly errors?: readonly { path: string; line?: number; message: string }[];
}

export interface AdminListener {
  /** the bound address ("host:port"), "" while not listening */
  readonly address: string;
  listen(addr: HostPort): Promise<void>;
  /** serve a socket systemd passed */
  adopt(fd: number): Promise<void>;
  /** bind a reload's new address: commit() serves it in place of the old one, abort() lets it go */
  prepare(addr: HostPort, tls: AdminTls | null): Promise<Pending>;
  /** the listener in use speaks HTTPS */
  readonly secure: boolean;
  /** between HTTP and HTTPS on the address in use: the old listener stops, the new one binds there */
  prepareSwitch(tls: AdminTls | null): Promise<Pending>;
  /** a new certificate and key for the next handshakes (throws on a bad pair, before commit) */
  renew(tls: AdminTls): Pending & { readonly changed: boolean };
  close(): Promise<void>;
}
