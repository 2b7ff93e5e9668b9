// What the control plane's parts share and change: the current config and snapshot, the
// generation, the operator's choices, the DNS answers, the backends a reload or a DNS answer
// removed that still drain, and the lifecycle flags. One owner, handed to the reload transaction,
// the admin views and the lifecycle. The snapshot is published in one function (publish): a
// reload, a DNS answer and an agent's weight all go through it, and what follows a publication
// (the data plane, the health checker, the generation metric) is told there; outside this file
// the config, snapshot, generation, hashes and answers are read-only.

import type { BackendConfig, Config } from '../config/schema';
import type { Loaded } from '../config/load';
import type { AdminState } from '../core/backend';
import { withEndpoints, type Answers } from '../core/endpoints';
import { liveSnapshot, retire, type Snapshot, type SnapshotEnv } from '../core/snapshot';
import type { BackendLoad, LoadTable } from '../core/stats';
import { backendRef } from '../core/backend';

/** 48 bits of FNV-1a over the text (two 32-bit passes with other offsets), as an integer. */
function endpointHash(text: string): number {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193) >>> 0;
  }
  return a * 0x10000 + (b & 0xffff);
}

export interface LastReload {
  readonly at: string;
  readonly result: 'success' | 'failure';
  readonly error: string | null;
}

/** What must follow each publication: told once per new current snapshot. */
export interface Followers {
  /** `gone`: the load keys of the backends the new snapshot dropped with connections open (they drain) */
  readonly published: (snap: Snapshot, gone: ReadonlySet<string>) => void;
  /** the backends (service/name) whose figures went: their metric series go too */
  readonly forgot: (refs: readonly string[]) => void;
}

const NOBODY: Followers = { published: () => {}, forgot: () => {} };

export class LiveState {
  #config: Config;
  #snapshot: Snapshot;
  #generation = 1;
  #shownHash: string;
  #attemptedHash: string;
  #fileDigests: ReadonlyMap<string, string>;
  #lastReload: LastReload | null = null;
  #answers: Answers = new Map();
  #followers: Followers = NOBODY;
  /** started and not stopping */
  ready = false;
  stopping = false;
  /** operator drain/disable by backend reference, service/name (absent = enabled); survives reloads */
  readonly operator = new Map<string, AdminState>();
  /** backends removed by a reload whose connections still drain, by load key */
  readonly draining = new Map<string, { readonly service: string; readonly spec: BackendConfig }>();
  /** the ids of the endpoints live or draining, by service/name, and the other way round */
  private readonly endpointIds = new Map<string, number>();
  private readonly idOwners = new Map<number, string>();
  /** listeners served from sockets systemd passed (listen addresses as the config writes them; the admin API): their addresses belong to the .socket unit */
  readonly passed = { proxy: new Set<string>(), admin: false };

  constructor(
    loaded: Loaded,
    readonly loads: LoadTable,
    private readonly snapshotEnv: SnapshotEnv,
  ) {
    this.#config = loaded.config;
    this.#shownHash = loaded.shownHash;
    this.#attemptedHash = loaded.hash;
    this.#fileDigests = loaded.fileDigests;
    this.#snapshot = this.build(this.#config, 1);
  }

  /** the config file's config (without the endpoints DNS found: the snapshot's config has them) */
  get config(): Config {
    return this.#config;
  }
  /** the current snapshot: what the data plane reads at each accept */
  get snapshot(): Snapshot {
    return this.#snapshot;
  }
  get generation(): number {
    return this.#generation;
  }
  /** the config's hash as /status shows it (secrets blanked) */
  get shownHash(): string {
    return this.#shownHash;
  }
  /** hash of the content last applied or attempted (the watcher compares against it) */
  get attemptedHash(): string {
    return this.#attemptedHash;
  }
  get lastReload(): LastReload | null {
    return this.#lastReload;
  }
  /** the last good DNS answers the snapshots' endpoints are made of (discovery/dns.ts) */
  get answers(): Answers {
    return this.#answers;
  }

  /** Who follows each publication; set once, by the composition root, before anything publishes. */
  follow(f: Followers): void {
    this.#followers = f;
  }

  /** The tls files of the running configuration, as their digests were when it was loaded. */
  get fileDigests(): ReadonlyMap<string, string> {
    return this.#fileDigests;
  }

  /** A reload read these bytes (applied or not): the watcher does not try them again. */
  attempted(hash: string): void {
    this.#attemptedHash = hash;
  }

  /** A reload succeeded: its config is published as the next generation. */
  reloaded(loaded: Loaded, at: string): void {
    this.publish(loaded.config, this.#generation + 1);
    this.#shownHash = loaded.shownHash;
    this.#attemptedHash = loaded.hash;
    this.#fileDigests = loaded.fileDigests;
    this.#lastReload = { at, result: 'success', error: null };
  }

  /** A reload failed: the running generation stays. */
  reloadFailed(at: string, error: string): void {
    this.#lastReload = { at, result: 'failure', error };
  }

  /** New DNS answers: the same config and generation with the new endpoints (vanished ones drain). */
  answered(answers: Answers): void {
    this.#answers = answers;
    this.publish(this.#config, this.#generation);
  }

  /** An agent's weight changed (it lives in the snapshot): the same config and generation again. */
  republish(): void {
    this.publish(this.#config, this.#generation);
  }

  /**
   * The one writer of the current snapshot: a snapshot of `config` with the DNS answers as they
   * stand, carrying `prev`'s strategy state, made current in one assignment; the backends it no
   * longer has only drain. Then the followers hear of it.
   */
  private publish(config: Config, generation: number): void {
    const old = this.#snapshot;
    const next = this.build(config, generation, old);
    this.#snapshot = next;
    this.#config = config;
    this.#generation = generation;
    const gone = this.retire(old, next);
    this.#followers.published(next, gone);
  }

  /**
   * A snapshot of `config` with its DNS-found endpoints as the answers stand, carrying the load
   * figures, operator choices and `prev`'s strategy state.
   */
  private build(config: Config, generation: number, prev?: Snapshot): Snapshot {
    const expanded = withEndpoints(config, this.#answers, (service, name) => this.endpointId(`${service}/${name}`));
    return liveSnapshot(expanded, generation, this.loads, this.snapshotEnv, this.operator, prev);
  }

  /**
   * After `next` replaced `old`: the backends `next` no longer has only drain. Returns their load
   * keys (those with connections open), for the data plane's drain timers; frees what is neither
   * live nor draining.
   */
  private retire(old: Snapshot, next: Snapshot): Set<string> {
    const { live, draining } = retire(old, next);
    for (const [k, spec] of draining) this.draining.set(k, spec);
    for (const [k] of this.draining) if (live.has(k) || !(this.loads.peek(k)?.active ?? 0)) this.draining.delete(k);
    // what is neither live nor draining is freed: figures, counters, metric series, endpoint ids
    const gone = this.loads.sweep(new Set([...live, ...this.draining.keys()]));
    const kept = new Set(next.backends.map((b) => b.ref));
    for (const d of this.draining.values()) kept.add(backendRef(d.service, d.spec.name));
    for (const [ref, id] of this.endpointIds) {
      if (kept.has(ref)) continue;
      this.endpointIds.delete(ref);
      this.idOwners.delete(id);
    }
    if (gone.length > 0) this.#followers.forgot(gone);
    return new Set(draining.keys());
  }

  /**
   * An endpoint's id: made from its service/name, so the same endpoint has the same id whenever it
   * is there (gone and back, after a restart), and so the same place in consistent hashing. Above
   * every configured id (at most 2^31 - 1); another endpoint's id taken (a hash collision) moves on.
   */
  private endpointId(ref: string): number {
    let id = this.endpointIds.get(ref);
    if (id === undefined) {
      id = 2 ** 31 + endpointHash(ref);
      while (this.idOwners.has(id)) id = id + 1 < Number.MAX_SAFE_INTEGER ? id + 1 : 2 ** 31;
      this.endpointIds.set(ref, id);
      this.idOwners.set(id, ref);
    }
    return id;
  }

  /** Backends removed by a reload with connections still open; forgotten after their last one. */
  drainingBackends(): { service: string; spec: BackendConfig; load: BackendLoad }[] {
    const out: { service: string; spec: BackendConfig; load: BackendLoad }[] = [];
    for (const [key, d] of this.draining) {
      const load = this.loads.peek(key);
      if (load && load.active > 0) out.push({ service: d.service, spec: d.spec, load });
      else this.draining.delete(key);
    }
    return out;
  }
}
