// The flow table of one UDP listening socket: the open flows by the client's "ip:port", and the
// clients whose flow was refused (remembered until their refusal would have idled out, so that
// a refused client is one access log line, not one per datagram). Both are bounded: the flows by
// admission (max_connections, the service's cap), the refused by REFUSED_CAP, oldest first out.
// And each UDP service's datagram counts, read by the metrics at scrape time. Pure.

/** Refused clients remembered per socket; past it the oldest is forgotten (its next datagram is refused and logged again). */
export const REFUSED_CAP = 4096;

export class FlowTable<F> {
  private readonly flows = new Map<string, F>();
  /** refused client → until when its datagrams are dropped unlogged (insertion order is expiry order) */
  private readonly refused = new Map<string, number>();

  constructor(private readonly refusedCap: number = REFUSED_CAP) {}

  get size(): number {
    return this.flows.size;
  }
  get refusedSize(): number {
    return this.refused.size;
  }

  get(key: string): F | undefined {
    return this.flows.get(key);
  }

  add(key: string, flow: F): void {
    this.flows.set(key, flow);
  }

  /** Forget the flow of `key`, if it is this one (a new flow of the same client may have replaced it). */
  delete(key: string, flow: F): void {
    if (this.flows.get(key) === flow) this.flows.delete(key);
  }

  values(): IterableIterator<F> {
    return this.flows.values();
  }

  /** The client's datagrams are dropped unlogged until `until`. */
  refuse(key: string, until: number, now: number): void {
    this.expire(now);
    this.refused.delete(key);
    this.refused.set(key, until);
    if (this.refused.size > this.refusedCap) this.refused.delete(this.refused.keys().next().value!);
  }

  /** Is this client's flow refused still? (an expired refusal is forgotten) */
  isRefused(key: string, now: number): boolean {
    if (this.refused.size === 0) return false;
    const until = this.refused.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.refused.delete(key);
    return false;
  }

  /** Forget the refusals that expired, oldest first. */
  private expire(now: number): void {
    for (const [k, until] of this.refused) {
      if (until > now) return;
      this.refused.delete(k);
    }
  }
}

/** One UDP service's datagrams since the start (lemonade_udp_datagrams_total) and flows open now. */
export interface UdpFigures {
  in: number;
  out: number;
  dropped: number;
  flows: number;
}

const FIGURES = new Map<string, UdpFigures>();

/** The figures of a UDP service (made at its first flow, kept: a counter never goes back). */
export function udpFigures(service: string): UdpFigures {
  let f = FIGURES.get(service);
  if (!f) FIGURES.set(service, (f = { in: 0, out: 0, dropped: 0, flows: 0 }));
  return f;
}

/** Every UDP service's figures that this process counted. */
export function allUdpFigures(): ReadonlyMap<string, Readonly<UdpFigures>> {
  return FIGURES;
}

/** Connection IDs one flow may own at once (a backend's SCID, a Retry's); past it its oldest is forgotten. */
export const MAX_IDS_PER_FLOW = 4;
/** Distinct ID lengths a socket tries on a short header; an ID of another length is not learned. */
export const MAX_ID_LENGTHS = 4;

/**
 * The QUIC connection IDs the backends chose (udp_affinity = "quic"), by their bytes (a latin1
 * string, one char per byte), each to the flow whose backend chose it; and the distinct lengths
 * learned, which a short header's ID is tried at. Bounded: MAX_IDS_PER_FLOW per flow, and flows
 * are bounded by admission; an ID leaves with its flow.
 */
export class ConnectionIds<F> {
  private readonly byId = new Map<string, F>();
  private readonly owned = new Map<F, string[]>();
  /** how many IDs of each length are known (index: the length) */
  private readonly perLength = new Array<number>(21).fill(0);
  /** the lengths with an ID, in the order learned (at most MAX_ID_LENGTHS) */
  readonly lengths: number[] = [];

  get size(): number {
    return this.byId.size;
  }

  get(id: string): F | undefined {
    return this.byId.get(id);
  }

  /** `flow`'s backend chose `id`; false when it is not kept (an empty ID, or one more distinct length than allowed). */
  learn(id: string, flow: F): boolean {
    const len = id.length;
    if (len === 0 || len >= this.perLength.length) return false;
    const had = this.byId.get(id);
    if (had === flow) return true;
    if (this.perLength[len] === 0 && this.lengths.length >= MAX_ID_LENGTHS) return false;
    if (had !== undefined) this.drop(id, had);
    let mine = this.owned.get(flow);
    if (mine === undefined) this.owned.set(flow, (mine = []));
    if (mine.length >= MAX_IDS_PER_FLOW) this.drop(mine[0]!, flow);
    mine.push(id);
    this.byId.set(id, flow);
    if (this.perLength[len]++ === 0) this.lengths.push(len);
    return true;
  }

  /** Forget every ID of `flow` (it ended). */
  forget(flow: F): void {
    const mine = this.owned.get(flow);
    if (mine === undefined) return;
    this.owned.delete(flow);
    for (const id of mine) this.unindex(id);
  }

  /** The IDs `flow` owns now, oldest first. */
  of(flow: F): readonly string[] {
    return this.owned.get(flow) ?? [];
  }

  private drop(id: string, flow: F): void {
    const mine = this.owned.get(flow);
    if (mine !== undefined) {
      const i = mine.indexOf(id);
      if (i >= 0) mine.splice(i, 1);
      if (mine.length === 0) this.owned.delete(flow);
    }
    this.unindex(id);
  }

  private unindex(id: string): void {
    if (!this.byId.delete(id)) return;
    const len = id.length;
    if (--this.perLength[len]! === 0) this.lengths.splice(this.lengths.indexOf(len), 1);
  }
}
