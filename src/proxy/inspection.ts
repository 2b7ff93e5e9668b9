// The first bytes of a connection on an address that reads before routing: a PROXY header first
// where the address accepts one (accept_proxy: core/proxy-protocol.ts parses it, bounded; a
// missing, malformed or late one refuses the connection), then, where it routes by TLS server name,
// the ClientHello: read until they are a whole one (./client-hello.ts), or not one, or 16 KiB, or the address's
// inspect_timeout passed (checked by the registry's sweep, as the connect timeout is: no timer of
// its own). Then reading stops and the listener routes the connection with the server name found
// (null: none) and the bytes read, which the session sends to the backend first. Each transport
// (./transport.ts) reads its own connection and hands the bytes to received(). A client
// that goes away first (or a drain's deadline) ends it here: it is a connection that ended like
// any other, so the inspection is its SessionEnd (no backend, no bytes relayed) for the counts
// and the access log.

import { MAX_V2_HEADER, parseProxyHeader, type AcceptProxy, type ProxyEndpoints } from '../core/proxy-protocol';
import type { SnapshotBackend } from '../core/snapshot';
import type { RejectReason, SessionEnd, Termination } from './events';
import type { ClientLimits } from './client-limits';
import { MAX_HELLO_BYTES, readClientHello, type HelloCursor } from './client-hello';

/** Where an inspection ends: the listener. */
export interface InspectionHost {
  /** read: route it with this server name (null: none), the bytes read first, and whether the client already sent its end of file */
  inspected(i: Inspection<unknown>, serverName: string | null, bytes: Buffer, clientEnded: boolean): void;
  /** the client went away before it was routed, or a drain cut it (its `termination` says which) */
  gone(i: Inspection<unknown>): void;
  /** its PROXY header was read (`client` set, or null: LOCAL): a reason to refuse it now, or null */
  proxied(i: Inspection<unknown>): RejectReason | null;
  /** refused before it was routed (its PROXY header, or proxied()'s reason): closed here, counted and logged there */
  refused(i: Inspection<unknown>, reason: RejectReason): void;
  readonly now: () => number;
}

const EMPTY = Buffer.alloc(0);
/** a first read this size or smaller gets a buffer this size: most ClientHellos fit */
const FIRST_SIZE = 2048;

/** The ClientHello's reading on a connection `C` of a transport. */
export abstract class Inspection<C> implements SessionEnd, HelloCursor {
  /** not attached to a backend (the registry's drain and cuts look at this) */
  readonly backendKey = null;
  private buf = EMPTY;
  private len = 0;
  // the reader's cursor over the records read so far
  walked = 0;
  counted = 0;
  /** routed, or the client went away: nothing more happens here */
  protected done = false;
  private readonly deadline: number;
  private cause: Termination = 'client_closed';
  /** the service its line and counts name if it ends here: the address's default route, else "" (set by the listener) */
  service = '';
  /** "ip:port" of the client when the access log wants this connection (set by the listener) */
  logClient: string | null = null;
  /** the client's address when the listener read it at accept, else "" */
  remote = '';
  /** the table counting this client's pending ClientHellos, when it was counted */
  limits: ClientLimits | null = null;
  /** a PROXY header to read first (accept_proxy), or null: none, or read */
  private header: AcceptProxy | null = null;
  /** then read the ClientHello too (the address routes by server name), else route once the header is read */
  private hello = true;
  /** the addresses the PROXY header gave (null: none, or LOCAL/UNKNOWN: the connection's own) */
  client: ProxyEndpoints | null = null;

  constructor(
    /** the client's connection */
    readonly conn: C,
    /** the listen address, as the config writes it */
    readonly address: string,
    /** when the connection was accepted (its duration runs from here, routed or not) */
    readonly acceptedAt: number,
    timeoutMs: number,
    private readonly host: InspectionHost,
  ) {
    this.deadline = acceptedAt + timeoutMs;
  }

  /** Read a PROXY header of `mode` first; `hello`: then the ClientHello. Before start(). */
  expectHeader(mode: AcceptProxy, hello: boolean): void {
    this.header = mode;
    this.hello = hello;
  }

  /** start reading; false: the connection would not read (the caller ends it as a reset) */
  abstract start(): boolean;
  protected abstract stopReading(): void;
  protected abstract close(): void;

  // SessionEnd, read by the observer when the connection ends here: never routed, nothing relayed
  get pickedBackend(): SnapshotBackend | null {
    return null;
  }
  get connected(): boolean {
    return false;
  }
  get connectMs(): number {
    return 0;
  }
  get bytesIn(): number {
    return 0;
  }
  get bytesOut(): number {
    return 0;
  }
  get retries(): number {
    return 0;
  }
  get latencyMs(): number {
    return -1;
  }
  get durationMs(): number {
    return this.host.now() - this.acceptedAt;
  }
  get termination(): Termination {
    return this.cause;
  }

  /** Close the client now, for this cause (it went away, or a drain's deadline); the listener counts and logs it. */
  destroy(cause: Termination = 'client_closed'): void {
    if (this.done) return;
    this.done = true;
    this.cause = cause;
    this.stopReading();
    this.close();
    this.host.gone(this);
  }

  /** The registry's cut (a shutdown's drain deadline). */
  cut(cause: Termination): void {
    this.destroy(cause);
  }

  /** The registry's sweep: past the deadline the connection is routed as having no server name (refused while its PROXY header is due). */
  sweep(now: number): void {
    if (this.done || now < this.deadline) return;
    if (this.header !== null) this.refuse('proxy_header');
    else this.finish(null, false);
  }

  /** Close it before it is routed, for `reason`; the listener counts and logs it. */
  private refuse(reason: RejectReason): void {
    this.done = true;
    this.stopReading();
    this.close();
    this.host.refused(this, reason);
  }

  /** Read the PROXY header from what came so far: false when it is not whole yet or was refused. */
  private readHeader(): boolean {
    const r = parseProxyHeader(this.buf, this.len, this.header!);
    if (r.kind === 'need-more') {
      if (this.len < MAX_V2_HEADER) return false;
      this.refuse('proxy_header');
      return false;
    }
    if (r.kind === 'invalid') {
      this.refuse('proxy_header');
      return false;
    }
    this.header = null;
    this.client = r.client;
    // what follows the header is the client's own first bytes
    this.buf.copy(this.buf, 0, r.length, this.len);
    this.len -= r.length;
    const refused = this.host.proxied(this);
    if (refused !== null) {
      this.refuse(refused);
      return false;
    }
    if (this.hello) return true;
    this.finish(null, false);
    return false;
  }

  /** `n` bytes arrived in `chunk`. */
  protected received(chunk: Uint8Array, n: number): void {
    if (this.done) return;
    if (this.len + n > this.buf.length) {
      // reading stops at 16 KiB: the buffer ends up at most that plus one read
      const grown = Buffer.allocUnsafe(Math.max(FIRST_SIZE, Math.min(2 * this.buf.length, MAX_HELLO_BYTES), this.len + n));
      this.buf.copy(grown, 0, 0, this.len);
      this.buf = grown;
    }
    this.buf.set(n === chunk.length ? chunk : chunk.subarray(0, n), this.len);
    this.len += n;
    if (this.header !== null && (!this.readHeader() || this.len === 0)) return;
    const r = readClientHello(this.buf, this.len, this);
    if (r.kind === 'need-more' && this.len < MAX_HELLO_BYTES) return;
    this.finish(r.kind === 'hello' ? r.serverName : null, false);
  }

  /** End of file from the client: route what was read (a client that sent nothing just goes: client_closed). */
  protected ended(): void {
    if (this.done) return;
    if (this.len === 0) this.destroy();
    else if (this.header !== null) this.refuse('proxy_header');
    else this.finish(null, true);
  }

  /** A whole ClientHello ends the reading as it arrives: at the end of file or the deadline there is none. */
  private finish(serverName: string | null, clientEnded: boolean): void {
    this.done = true;
    this.stopReading();
    this.host.inspected(this, serverName, this.buf.subarray(0, this.len), clientEnded);
  }
}
