// UDP as a transport of the relay seam (./transport.ts). The listening socket is one dgram
// socket per listen address; what it "accepts" is a flow: the first datagram of a client address
// and port it has no flow for goes through the listener's one accept path (route, admission:
// max_connections, allow/deny, the per-client limits), and the flow is then a session of the
// relay core (./relay.ts: the pick with the service's algorithm, the connect, passive health,
// accounting, one termination). A flow's backend leg is a dgram socket connected to the backend:
// each datagram is relayed unchanged, one for one, both ways, and replies leave by the listening
// socket, so that they come from the address the client sent to. A flow ends when idle for
// udp_idle_timeout, after udp_responses replies, at a drain's deadline or at shutdown; an ICMP
// error from the backend (ECONNREFUSED) is a passive health failure and ends it. Nothing is
// buffered without bound: a datagram a full send queue cannot take is dropped and counted.
// With udp_affinity = "quic" the socket also routes by QUIC connection ID (./quic-header.ts): it
// learns the Source Connection ID of each backend's long-header packets, and a client's packet
// whose Destination Connection ID is one of them goes to that flow from whatever address it
// comes, the flow moving there (NAT rebinding, migration).

import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net, { type AddressInfo, type ListenOptions } from 'node:net';
import { formatHostPort } from '../config/address';
import type { ProxyEndpoints } from '../core/proxy-protocol';
import type { ServiceSnapshot, Snapshot } from '../core/snapshot';
import type { Lease } from '../core/stats';
import type { UdpFacts } from './events';
import type { Inspection } from './inspection';
import { Relay, type Accepted, type SessionHost } from './relay';
import type { Listening, Transport } from './transport';
import { emptyQuicHeader, QuicForm, readQuicHeader, shortDcidFits } from './quic-header';
import { ConnectionIds, FlowTable, udpFigures, type UdpFigures } from './udp-flows';

/** Datagrams a flow holds while its backend socket connects; more are dropped. */
export const MAX_PENDING = 8;
/** Datagrams a flow's backend socket may have queued that the kernel did not take yet; more are dropped. */
export const MAX_SEND_QUEUE = 64;
/** The same for the replies queued on a listening socket (all its flows'). */
export const MAX_REPLY_QUEUE = 1024;

/** A client's first datagram on a listening socket: what the listener routes and admits. */
export interface UdpPeer {
  readonly owner: UdpSocket;
  /** "ip:port" as the flow table keys it (a QUIC flow's changes when its client moves) */
  key: string;
  address: string;
  port: number;
  readonly first: Buffer;
}

const FLOW = Symbol('lemonade.udp-flow');
type BackendSocket = dgram.Socket & { [FLOW]?: UdpFlow };

/** One listening dgram socket and its flows, as the listener drives it (bind, close, address). */
export class UdpSocket extends EventEmitter implements Listening {
  readonly table = new FlowTable<UdpFlow>();
  /** the QUIC connection IDs its backends chose, made at the first flow of a "quic" service */
  private ids: ConnectionIds<UdpFlow> | null = null;
  private readonly header = emptyQuicHeader();
  private sock: dgram.Socket | null = null;
  private accepting = true;
  private closed = false;

  constructor(
    private readonly accept: (p: UdpPeer) => void,
    /** how long a refused client's datagrams are dropped unlogged */
    private readonly refuseMs: () => number,
    private readonly now: () => number,
  ) {
    super();
  }

  listen(options: ListenOptions | { fd: number }): void {
    const host = 'host' in options ? (options.host ?? '') : '';
    // several workers each bind the address (SO_REUSEPORT): the kernel hashes a client to one socket
    const reuse = 'reusePort' in options && options.reusePort === true;
    const s = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', ...(reuse ? { reusePort: true } : {}) });
    this.sock = s;
    s.on('error', (err) => this.emit('error', err));
    s.on('listening', () => this.emit('listening'));
    s.on('message', this.onMessage);
    if ('fd' in options && options.fd !== undefined) s.bind({ fd: options.fd });
    else s.bind({ address: host, port: (options as ListenOptions).port ?? 0, exclusive: true });
  }

  address(): AddressInfo | null {
    try {
      return this.sock?.address() ?? null;
    } catch {
      return null;
    }
  }

  /** Take no new flow; the socket closes once its flows have ended (their replies still leave by it). */
  close(): void {
    if (!this.accepting) return;
    this.accepting = false;
    for (const f of [...this.table.values()]) f.stop();
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.accepting || this.closed || this.table.size > 0) return;
    this.closed = true;
    this.sock?.close();
  }

  private readonly onMessage = (msg: Buffer, r: dgram.RemoteInfo): void => {
    const key = r.family === 'IPv6' ? `[${r.address}]:${r.port}` : `${r.address}:${r.port}`;
    if (this.ids !== null && this.ids.size > 0) {
      const q = this.byConnectionId(msg, this.ids);
      if (q !== undefined) {
        if (q.peer.key === key || q.moveTo(key, r.address, r.port)) q.fromClient(msg);
        return;
      }
    }
    const f = this.table.get(key);
    if (f !== undefined) {
      f.fromClient(msg);
      return;
    }
    if (!this.accepting) return;
    if (this.table.isRefused(key, this.now())) {
      // refused while it keeps sending: dropped unlogged until it has been quiet for a while
      this.refuseKey(key);
      return;
    }
    this.accept({ owner: this, key, address: r.address, port: r.port, first: msg });
  };

  /** The flow whose backend chose the packet's Destination Connection ID, if it is known. */
  private byConnectionId(msg: Buffer, ids: ConnectionIds<UdpFlow>): UdpFlow | undefined {
    const h = this.header;
    const form = readQuicHeader(msg, h);
    if (form === QuicForm.Long) return h.dcidLength > 0 ? ids.get(msg.toString('latin1', h.dcidOffset, h.dcidOffset + h.dcidLength)) : undefined;
    if (form !== QuicForm.Short) return undefined;
    // a short header does not say its ID's length: each length the backends chose is tried
    const lengths = ids.lengths;
    for (let i = 0; i < lengths.length; i++) {
      const len = lengths[i]!;
      if (!shortDcidFits(msg, len)) continue;
      const f = ids.get(msg.toString('latin1', 1, 1 + len));
      if (f !== undefined) return f;
    }
    return undefined;
  }

  /** The IDs of a "quic" service's flows (made at its first). */
  quicIds(): ConnectionIds<UdpFlow> {
    return (this.ids ??= new ConnectionIds<UdpFlow>());
  }

  /** A datagram from `f`'s backend: a long header's Source Connection ID is an ID the backend chose. */
  learn(msg: Buffer, f: UdpFlow): void {
    const h = this.header;
    if (readQuicHeader(msg, h) !== QuicForm.Long || h.scidLength === 0) return;
    this.quicIds().learn(msg.toString('latin1', h.scidOffset, h.scidOffset + h.scidLength), f);
  }

  /** `f`'s client sent from a new address: the table keys the flow by it from now on. */
  moved(f: UdpFlow, from: string): void {
    this.table.delete(from, f);
    this.table.add(f.peer.key, f);
  }

  /** The listener refused this client's flow: its next datagrams are dropped unlogged while it keeps sending. */
  refuse(p: UdpPeer): void {
    this.refuseKey(p.key);
  }

  private refuseKey(key: string): void {
    const now = this.now();
    this.table.refuse(key, now + this.refuseMs(), now);
  }

  /** A reply to the client; false when it cannot be sent now (dropped). */
  reply(msg: Buffer, port: number, address: string): boolean {
    const s = this.sock;
    if (s === null || this.closed || s.getSendQueueCount() >= MAX_REPLY_QUEUE) return false;
    s.send(msg, port, address);
    return true;
  }

  gone(f: UdpFlow): void {
    this.table.delete(f.peer.key, f);
    this.ids?.forget(f);
    this.maybeClose();
  }

  /** The bound address, for the PROXY protocol's endpoints. */
  local(): AddressInfo {
    return this.address() ?? { address: '', family: 'IPv4', port: 0 };
  }
}

function onBackendConnect(this: BackendSocket): void {
  this[FLOW]?.backendConnected(this);
}
function onBackendMessage(this: BackendSocket, msg: Buffer): void {
  this[FLOW]?.fromBackend(this, msg);
}
function onBackendError(this: BackendSocket, err: Error): void {
  this[FLOW]?.backendError(this, err);
}

/** A flow: the relay core's session over datagrams. */
export class UdpFlow extends Relay implements UdpFacts {
  private sock: BackendSocket | null = null;
  private lease: Lease | null = null;
  /** datagrams from the client while the backend socket connects (at most MAX_PENDING) */
  private pending: Buffer[] | null = null;
  datagramsIn = 0;
  datagramsOut = 0;
  datagramsDropped = 0;
  /** a datagram moved since the last sweep */
  private active = false;
  private lastActive = 0;
  /** the listening socket closes: end once every datagram sent has had its reply */
  private stopping = false;
  private over = false;
  private readonly figures: UdpFigures;
  private readonly responses: number;
  /** udp_affinity = "quic": learn the connection IDs the backend chooses */
  private readonly quic: boolean;

  constructor(
    readonly peer: UdpPeer,
    snap: ServiceSnapshot,
    private readonly host: SessionHost,
    a: Readonly<Accepted>,
  ) {
    super(snap, host, a);
    this.responses = snap.proxy.udpResponses;
    this.figures = udpFigures(snap.name);
    this.figures.flows++;
    this.quic = snap.proxy.udpAffinity === 'quic';
    if (this.quic) peer.owner.quicIds();
    peer.owner.table.add(peer.key, this);
  }

  get udp(): UdpFacts {
    return this;
  }

  // ---- the legs

  destroy(): void {
    this.closeBackend(true);
    this.clientClosed = true;
    this.maybeFinish();
  }

  protected closeClient(): void {
    this.clientClosed = true;
    this.maybeFinish();
  }

  protected openBackend(lease: Lease): void {
    this.lease = lease;
  }

  protected dial(address: string, family: number, port: number): void {
    const s: BackendSocket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    s[FLOW] = this;
    s.on('connect', onBackendConnect);
    s.on('message', onBackendMessage);
    s.on('error', onBackendError);
    this.sock = s;
    s.connect(port, address);
  }

  protected replaceBackend(): void {
    this.closeBackend(false);
  }

  protected dropBackend(): void {
    this.closeBackend(true);
  }

  protected awaitingDial(): boolean {
    return this.lease !== null && this.sock === null;
  }

  /** The first datagram (sendFirst(), once connected). */
  protected send(bytes: Buffer): void {
    this.toBackend(bytes, false);
  }

  protected endpoints(): ProxyEndpoints {
    const l = this.peer.owner.local();
    return { srcAddress: this.peer.address, srcPort: this.peer.port, dstAddress: l.address, dstPort: l.port };
  }

  protected peerAddress(): string {
    return this.peer.address;
  }

  /** Close the backend socket; `release`: its lease too (else a replacement takes it over). */
  private closeBackend(release: boolean): void {
    const s = this.sock;
    if (s !== null) {
      this.sock = null;
      s[FLOW] = undefined;
      s.close();
    }
    if (release && this.lease !== null) {
      this.lease.release();
      this.lease = null;
    }
    if (release) this.backendClosed = true;
  }

  // ---- the datagrams

  backendConnected(s: BackendSocket): void {
    if (s !== this.sock) return;
    this.markConnected(false);
    this.lastActive = this.host.now();
    this.sendFirst();
    const held = this.pending;
    if (held !== null) {
      this.pending = null;
      for (const d of held) this.toBackend(d, true);
    }
  }

  fromClient(msg: Buffer): void {
    if (this.over) return;
    if (this.sock === null || !this.connected) {
      const held = (this.pending ??= []);
      if (held.length < MAX_PENDING) held.push(msg);
      else this.dropped();
      return;
    }
    this.toBackend(msg, true);
  }

  /** `count`: the bytes are counted here (sendFirst() counts the first datagram's itself). */
  private toBackend(msg: Buffer, count: boolean): void {
    const s = this.sock;
    if (s === null || s.getSendQueueCount() >= MAX_SEND_QUEUE) {
      this.dropped();
      return;
    }
    s.send(msg);
    if (count) this.countIn(msg.length);
    this.datagramsIn++;
    this.figures.in++;
    this.active = true;
  }

  fromBackend(s: BackendSocket, msg: Buffer): void {
    if (s !== this.sock || this.over) return;
    if (this.datagramsOut === 0) this.target!.load.recordSuccess();
    if (this.quic && (msg[0]! & 0x80) !== 0) this.peer.owner.learn(msg, this);
    if (!this.peer.owner.reply(msg, this.peer.port, this.peer.address)) {
      this.dropped();
      return;
    }
    this.countOut(msg.length);
    this.datagramsOut++;
    this.figures.out++;
    this.active = true;
    // udp_responses per datagram in (nginx's proxy_responses): a client that sent its next query
    // before this answer came keeps its flow until that one's answer too
    if (this.responses > 0 && this.datagramsOut >= this.responses * this.datagramsIn) this.cut('udp_responses');
    else if (this.stopping && this.datagramsOut >= this.datagramsIn) this.cut('shutdown');
  }

  backendError(s: BackendSocket, err: Error): void {
    if (s !== this.sock || this.over) return;
    if (!this.connected) {
      this.backendFailed(err);
      return;
    }
    // an ICMP error (port unreachable): the backend is not serving; the client's next datagram
    // is a new flow, picked again
    const t = this.target!;
    t.counters.connectErrors++;
    this.passiveFailure(t.load);
    this.host.observer.connectFailed(t, err.message, false);
    this.cut('backend_reset');
  }

  /**
   * The client sent a packet of this QUIC connection from another address (a NAT rebinding, a
   * migration): the flow moves there, replies with it. False (dropped) when the service's
   * allow/deny refuses the new address.
   */
  moveTo(key: string, address: string, port: number): boolean {
    if (this.over) return false;
    if (!this.snap.allows(address)) {
      this.dropped();
      return false;
    }
    const p = this.peer;
    const from = p.key;
    p.key = key;
    p.address = address;
    p.port = port;
    p.owner.moved(this, from);
    return true;
  }

  private dropped(): void {
    this.datagramsDropped++;
    this.figures.dropped++;
  }

  /** The listening socket closes: end now unless a reply is still owed. */
  stop(): void {
    if (this.over) return;
    if (!this.connected || this.datagramsOut >= this.datagramsIn) this.cut('shutdown');
    else this.stopping = true;
  }

  /** The registry's sweep: the connect deadline (the relay core's), then udp_idle_timeout. */
  sweep(now: number): void {
    if (this.over) return;
    if (!this.connected) {
      super.sweep(now);
      return;
    }
    if (this.active) {
      this.active = false;
      this.lastActive = now;
    } else if (now - this.lastActive >= this.snap.proxy.udpIdleTimeoutMs) {
      this.cut('udp_idle');
    }
  }

  protected maybeFinish(): void {
    if (!this.over && this.clientClosed && this.backendClosed) {
      this.over = true;
      this.pending = null;
      this.figures.flows--;
      this.peer.owner.gone(this);
      // no backend took it (none usable, or every connect failed): logged once, as a refusal is
      if (!this.connected) this.peer.owner.refuse(this.peer);
    }
    super.maybeFinish();
  }
}

/**
 * The UDP transport of one listen address (`key`, as the config writes it): a refused client is
 * remembered for its service's udp_idle_timeout.
 */
export function udpTransport(key: string, current: () => Snapshot, now: () => number): Transport<UdpPeer> {
  return {
    name: 'udp',
    server: (accept) => new UdpSocket(accept, () => current().routes(key)?.fallback?.proxy.udpIdleTimeoutMs ?? 30_000, now),
    remoteAddress: (p) => p.address,
    remoteEndpoint: (p) => formatHostPort({ host: p.address, port: p.port }),
    close: (p) => p.owner.refuse(p),
    inspection: (): Inspection<UdpPeer> => {
      throw new Error('a UDP address reads no ClientHello');
    },
    session: (p, snap, host, a) => new UdpFlow(p, snap, host, { ...a, initial: p.first }),
  };
}
