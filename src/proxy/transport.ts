// The seam between the relay and what carries its bytes. A transport is one file implementing
// two things: Transport<C> below (the listener's side: accept, addresses, close, the ClientHello
// reader, the session) and the legs of a Relay (./relay.ts: open and connect a backend leg, send,
// pump both ways with backpressure and half-close, close). The relay core (pick, connect with
// retries, resolve, timeouts, accounting, passive health, the access log's facts) and the
// listener (routing, admission) know nothing else of it. Today: ./transport-raw.ts (libuv's TCP
// handles) and ./transport-net.ts (net.Socket); runtime/raw-self-test.ts chooses between them.
// A service that terminates TLS relays through ./transport-tls.ts, whichever accepted it; an
// address whose service has protocol = "udp" is ./transport-udp.ts's (its connections are flows).

import type { AddressInfo, ListenOptions } from 'node:net';
import type { ServiceSnapshot } from '../core/snapshot';
import type { Inspection, InspectionHost } from './inspection';
import type { Accepted, Relay, SessionHost } from './relay';

/**
 * A listening socket as the listener drives it (bind, a passed descriptor, close, the bound
 * address, a bind error): a net.Server is one; a transport without one (datagrams) wraps its
 * socket in these members.
 */
export interface Listening {
  listen(options: ListenOptions | { fd: number }): unknown;
  close(): unknown;
  address(): AddressInfo | string | null;
  once(event: 'error', listener: (err: NodeJS.ErrnoException) => void): unknown;
  once(event: 'listening', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  off(event: 'error', listener: (err: NodeJS.ErrnoException) => void): unknown;
}

/** A way to accept and relay client connections `C` (a net.Socket, a raw handle, ...). */
export interface Transport<C> {
  /** as the start log and relayPlan() name it */
  readonly name: string;
  /**
   * A listening server whose accepted connections go to `accept` (once it listens); `acceptError`
   * for an accept that failed (EMFILE and the like).
   */
  server(accept: (c: C) => void, acceptError: (err: Error) => void): Listening;
  /** the client's IP address (undefined or "" once the connection is gone) */
  remoteAddress(c: C): string | undefined;
  /** the client's "ip:port", as the access log writes it */
  remoteEndpoint(c: C): string;
  /** close a connection the listener refused */
  close(c: C): void;
  /** read the connection's ClientHello first (./inspection.ts) */
  inspection(c: C, address: string, acceptedAt: number, timeoutMs: number, host: InspectionHost): Inspection<C>;
  /** the session relaying `c` to a backend of `snap`, built complete (start() starts it) */
  session(c: C, snap: ServiceSnapshot, host: SessionHost, a: Readonly<Accepted>): Relay;
}
