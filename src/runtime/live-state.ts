// What the control plane's parts share and change: the current config and snapshot, the
// generation, the operator's choices, the backends a reload removed that still drain, and the
// lifecycle flags. One owner, handed to the reload transaction, the admin views and the lifecycle;
// the snapshot is replaced in one assignment, never edited.

import type { BackendConfig, Config } from '../config/schema';
import type { Loaded } from '../config/load';
import type { AdminState } from '../core/backend';
import { liveSnapshot, type Snapshot, type SnapshotEnv } from '../core/snapshot';
import type { BackendLoad, LoadTable } from '../core/stats';

export interface LastReload {
  readonly at: string;
  readonly result: 'success' | 'failure';
  readonly error: string | null;
}

export class LiveState {
  config: Config;
  snapshot: Snapshot;
  generation = 1;
  /** the config's hash as /status shows it (secrets blanked) */
  shownHash: string;
  /** hash of the content last applied or attempted (the watcher compares against it) */
  attemptedHash: string;
  lastReload: LastReload | null = null;
  /** started and not stopping */
  ready = false;
  stopping = false;
  /** operator drain/disable by backend reference, service/name (absent = enabled); survives reloads */
  readonly operator = new Map<string, AdminState>();
  /** backends removed by a reload whose connections still drain, by load key */
  readonly draining = new Map<string, { readonly service: string; readonly spec: BackendConfig }>();
  /** listeners served from sockets systemd passed (listen addresses as the config writes them; the admin API): their addresses belong to the .socket unit */
  readonly passed = { proxy: new Set<string>(), admin: false };

  constructor(
    loaded: Loaded,
    readonly loads: LoadTable,
    private readonly snapshotEnv: SnapshotEnv,
  ) {
    this.config = loaded.config;
    this.shownHash = loaded.shownHash;
    this.attemptedHash = loaded.hash;
    this.snapshot = this.build(this.config, 1);
  }

  /** A snapshot of `config`, carrying the load figures, operator choices and `prev`'s strategy state. */
  build(config: Config, generation: number, prev?: Snapshot): Snapshot {
    return liveSnapshot(config, generation, this.loads, this.snapshotEnv, this.operator, prev);
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
