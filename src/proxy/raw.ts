// libuv's TCP handles as Node's own net.js drives them (process.binding 'tcp_wrap' and
// 'stream_wrap'): a connection relayed on them costs about half of one relayed on two
// net.Socket objects, which add a Duplex stream, an event emitter and their bookkeeping to every
// connect, read, write and close (`npm run bench`, W2 and the node-raw reference). Everything
// the relay needs from them is typed here; rawAvailable() says whether the relay uses them
// (a tested Node major whose handles passed the self-test at start: runtime/raw-self-test.ts).

import { getSystemErrorName } from 'node:util';
import { PROCESS_ENV } from '../config/environment';

/** A uv_tcp_t handle (tcp_wrap.TCP); return values are 0 or a negative libuv error code. */
export interface TcpHandle {
  /** (a setter that aborts the process when given anything but a function) */
  onread: (this: TcpHandle, arrayBuffer: ArrayBuffer | undefined) => Uint8Array | undefined;
  onconnection?: (status: number, client: TcpHandle | undefined) => void;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, data: Uint8Array): number;
  shutdown(req: ShutdownReq): number;
  connect(req: ConnectReq, address: string, port: number): number;
  connect6(req: ConnectReq, address: string, port: number): number;
  close(callback?: (this: TcpHandle) => void): void;
  setNoDelay(on: boolean): number;
  /** SO_KEEPALIVE, with TCP_KEEPIDLE `delaySeconds` (> 0) when `enable`; kept for later (as 60 s) on a handle with no socket yet */
  setKeepAlive(enable: boolean, delaySeconds: number): number;
  getpeername(out: SockName): number;
  getsockname(out: SockName): number;
  useUserBuffer(buf: Uint8Array): void;
}

export interface SockName {
  address?: string;
  port?: number;
  family?: string;
}

export interface WriteReq {
  handle: TcpHandle;
  oncomplete: (this: WriteReq, status: number) => void;
  async: boolean;
  /** keeps the written bytes alive while libuv still sends from them */
  buffer: Uint8Array | null;
}
export interface ShutdownReq {
  handle: TcpHandle;
  oncomplete: (this: ShutdownReq, status: number) => void;
}
export interface ConnectReq {
  oncomplete: (this: ConnectReq, status: number, handle: TcpHandle) => void;
  address: string;
  port: number;
}

export interface RawBindings {
  readonly TCP: new (type: number) => TcpHandle;
  readonly TCPConnectWrap: new () => ConnectReq;
  readonly WriteWrap: new () => WriteReq;
  readonly ShutdownWrap: new () => ShutdownReq;
  readonly SOCKET: number;
  readonly state: Int32Array;
  readonly kReadBytesOrError: number;
  readonly kLastWriteWasAsync: number;
  /** libuv's end-of-file status */
  readonly UV_EOF: number;
}

function load(): RawBindings | null {
  try {
    const binding = (process as unknown as { binding(name: string): Record<string, unknown> }).binding;
    const tcp = binding('tcp_wrap') as { TCP?: RawBindings['TCP']; TCPConnectWrap?: RawBindings['TCPConnectWrap']; constants?: { SOCKET?: number } };
    const uv = binding('uv') as { UV_EOF?: number };
    const stream = binding('stream_wrap') as {
      WriteWrap?: RawBindings['WriteWrap'];
      ShutdownWrap?: RawBindings['ShutdownWrap'];
      streamBaseState?: Int32Array;
      kReadBytesOrError?: number;
      kLastWriteWasAsync?: number;
    };
    if (
      typeof tcp.TCP !== 'function' ||
      typeof tcp.TCPConnectWrap !== 'function' ||
      typeof tcp.constants?.SOCKET !== 'number' ||
      typeof stream.WriteWrap !== 'function' ||
      typeof stream.ShutdownWrap !== 'function' ||
      !(stream.streamBaseState instanceof Int32Array) ||
      typeof stream.kReadBytesOrError !== 'number' ||
      typeof stream.kLastWriteWasAsync !== 'number' ||
      typeof uv.UV_EOF !== 'number'
    ) {
      return null;
    }
    const probe = new tcp.TCP(tcp.constants.SOCKET);
    const methods = ['readStart', 'readStop', 'writeBuffer', 'shutdown', 'connect', 'connect6', 'close', 'setNoDelay', 'setKeepAlive', 'getpeername', 'getsockname', 'useUserBuffer'] as const;
    const complete = methods.every((m) => typeof probe[m] === 'function');
    probe.close();
    if (!complete) return null;
    return {
      TCP: tcp.TCP,
      TCPConnectWrap: tcp.TCPConnectWrap,
      WriteWrap: stream.WriteWrap,
      ShutdownWrap: stream.ShutdownWrap,
      SOCKET: tcp.constants.SOCKET,
      state: stream.streamBaseState,
      kReadBytesOrError: stream.kReadBytesOrError,
      kLastWriteWasAsync: stream.kLastWriteWasAsync,
      UV_EOF: uv.UV_EOF,
    };
  } catch {
    return null;
  }
}

let loaded: RawBindings | null | undefined;

/** The handles, or null when this Node does not offer them (the relay then uses net.Socket). */
export function raw(): RawBindings | null {
  if (loaded === undefined) loaded = load();
  return loaded;
}

/**
 * The Node.js majors whose internals the raw relay is known to match: those the test matrix
 * passes (.ci/node-matrix: 22, 24, 26; the machine's 20 runs the whole suite). On any other
 * major the relay uses net.Socket until the matrix has passed it and it is added here.
 */
export const RAW_RELAY_MAJORS: readonly number[] = [20, 22, 24, 26];

/** Which relay carries the bytes; with net.Socket, why not the raw one (for the start log). */
export type RelayChoice = { readonly relay: 'raw' } | { readonly relay: 'net.Socket'; readonly reason: string };

/**
 * The relay this Node may use before the self-test (runtime/raw-self-test.ts): net.Socket when
 * LEMONADE_LB_NET_SOCKETS=1 asks for it (slower; there to rule the raw relay in or out when
 * diagnosing), when the major is not in RAW_RELAY_MAJORS, or when the handles are missing.
 */
export function relayPlan(env: NodeJS.ProcessEnv = process.env, version: string = process.version, bindings: RawBindings | null = raw()): RelayChoice {
  if (env[PROCESS_ENV.netSockets.name] === '1') return { relay: 'net.Socket', reason: `${PROCESS_ENV.netSockets.name}=1` };
  const major = Number(/^v(\d+)\./.exec(version)?.[1]);
  if (!RAW_RELAY_MAJORS.includes(major)) {
    return { relay: 'net.Socket', reason: `Node.js ${version} (major ${major}) is not one the raw relay is tested on (${RAW_RELAY_MAJORS.join(', ')})` };
  }
  if (bindings === null) return { relay: 'net.Socket', reason: `Node.js ${version} lacks the libuv handles the raw relay uses (tcp_wrap, stream_wrap)` };
  return { relay: 'raw' };
}

/** The relay chosen at start (chooseRelay() in runtime/raw-self-test.ts); undefined before. */
let chosen: RelayChoice | undefined;

export function setRelay(choice: RelayChoice): void {
  chosen = choice;
}

/** Relay on raw handles? What the start chose, or before that what relayPlan() allows. */
export function rawAvailable(env: NodeJS.ProcessEnv = process.env): boolean {
  return (chosen ?? relayPlan(env)).relay === 'raw';
}

/** `tcp_keepalive` in the kernel's unit: whole seconds, rounded up (a value below 1 s is 1 s; 0 is off). */
export function keepAliveSeconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

/** An Error like the ones net.js makes from a libuv status: code "ECONNREFUSED", message "connect ECONNREFUSED 10.0.0.1:80". */
export function uvError(status: number, syscall: string, address?: string, port?: number): NodeJS.ErrnoException {
  let code: string;
  try {
    code = getSystemErrorName(status);
  } catch {
    code = `E${-status}`;
  }
  const where = address === undefined ? '' : ` ${address}${port === undefined ? '' : `:${port}`}`;
  const err = new Error(`${syscall} ${code}${where}`) as NodeJS.ErrnoException;
  err.code = code;
  err.errno = status;
  err.syscall = syscall;
  return err;
}
