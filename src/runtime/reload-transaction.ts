// One reload, as a transaction: read → validate → diff → check the socket-owned addresses →
// bind the new listen addresses → re-check for a stop → install the new addresses → publish (the
// snapshot in one assignment, through LiveState; its followers retire the removed backends) →
// follow the new config's DNS names → wait for every worker process to serve it (bounded) →
// log, metrics, events.
// Anything that fails before the swap leaves the running generation untouched. What starts a reload (watcher, poll, SIGHUP, POST /reload) is
// runtime/reload.ts.

import { DEFAULT_SERVICE, type Config } from '../config/schema';
import { hashWithFiles, loadFromText, readConfigText, tlsFiles, type Env, type Loaded } from '../config/load';
import { diff, summarize } from '../config/diff';
import type { DnsDiscovery } from '../discovery/dns';
import type { AdminListener, ReloadOutcome } from './control';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { Metrics } from '../obs/metrics';
import type { SummaryLog } from '../obs/summary';
import { BindError, ConfigInvalidError, LemonadeError, ShuttingDownError } from '../errors';
import type { LiveState } from './live-state';
import type { DataPlane, Pending } from './plane';
import type { SystemdNotifier } from './systemd';
import { RELOAD_ACK_MS, workerCount } from './workers';
import type { TicketKeys } from './ticket-keys';

export interface ReloadDeps {
  readonly state: LiveState;
  /** the file to re-read */
  readonly path: string;
  readonly env: Env;
  readonly now: () => number;
  readonly logger: Logger;
  readonly plane: DataPlane;
  readonly admin: AdminListener;
  /** follows the names the new config needs */
  readonly discovery: DnsDiscovery;
  readonly metrics: Metrics;
  readonly events: EventRing;
  readonly summary: SummaryLog;
  readonly systemd: SystemdNotifier;
  /** data-plane processes, fixed at start */
  readonly workers: number;
  /** the session ticket key: a reload's key_file replaces it */
  readonly tickets: TicketKeys;
}

export class ReloadTransaction {
  constructor(private readonly d: ReloadDeps) {}

  /** Never rejects: a failure is an outcome, and the running configuration stays. */
  async run(trigger: string): Promise<ReloadOutcome> {
    const s = this.d.state;
    if (s.stopping) return { result: 'failure', generation: s.generation, error: new ShuttingDownError().message };
    this.d.systemd.reloading();
    try {
      return await this.apply(trigger);
    } finally {
      this.d.systemd.ready(`generation ${s.generation}`);
    }
  }

  private async apply(trigger: string): Promise<ReloadOutcome> {
    const { state: s, plane, admin, logger } = this.d;
    let loaded: Loaded;
    try {
      // the file served from must still exist (the environment alone does not replace it)
      const text = readConfigText({ path: this.d.path, explicit: true }, this.d.env);
      // remember what was attempted, so the watcher does not retry the same bytes
      if (text !== null) s.attempted(hashWithFiles(text, tlsFiles(s.config)));
      loaded = loadFromText(this.d.path, text, this.d.env);
    } catch (e) {
      return this.failed(trigger, e);
    }
    const next = loaded.config;
    const changes = diff(s.config, next);
    const adminRemoved = next.admin.listenAddress === '' && s.config.admin.listenAddress !== '';
    const pending: Pending[] = [];
    /** the admin API's certificate or key file changed under the same paths (no setting says so) */
    let renewed = false;
    try {
      this.checkSocketOwner(next);
      // a new listen address is bound before anything switches; an address kept keeps its
      // socket, whichever services it serves (services may share one, told apart by sni)
      // (an address whose protocol changed is bound anew: a dgram socket for udp)
      const had = new Map(s.config.services.map((x) => [x.listenAddress, x.proxy.protocol]));
      for (const [address, x] of new Map(next.services.map((x) => [x.listenAddress, x] as const))) {
        if (had.get(address) !== x.proxy.protocol) pending.push(await plane.prepare(address, x.listen, x.proxy.protocol === 'udp'));
      }
      // the admin listener: a new address is bound beside the old one; a switch between HTTP and
      // HTTPS on the same one binds it again; the same kind takes new certificates in place
      const tls = loaded.adminTls;
      if (next.admin.listenAddress !== s.config.admin.listenAddress && next.admin.listen) {
        pending.push(await admin.prepare(next.admin.listen, tls));
      } else if (next.admin.listen && admin.address !== '') {
        if ((tls !== null) !== admin.secure) pending.push(await admin.prepareSwitch(tls));
        else if (tls !== null) {
          const r = admin.renew(tls);
          renewed = r.changed;
          pending.push(r);
        }
      }
    } catch (e) {
      for (const p of pending) p.abort();
      return this.failed(trigger, e);
    }
    if (s.stopping) {
      // a stop began while the new addresses were bound: installing them would reopen a listener
      // during the drain
      for (const p of pending) p.abort();
      return this.failed(trigger, new ShuttingDownError());
    }
    // ---- commit: from here on nothing can fail, and the swap is one assignment
    const oldSnap = s.snapshot;
    const previous = s.fileDigests;
    for (const p of pending) p.commit();
    // an address no service has any more stops accepting at once; its connections drain with their backends
    const kept = new Set(next.services.map((x) => x.listenAddress));
    for (const address of new Set(oldSnap.config.services.map((x) => x.listenAddress))) if (!kept.has(address)) plane.closeAddress(address);
    if (adminRemoved) void admin.close();
    // new handshakes use the new ticket key (the workers get it before the snapshot that follows)
    const rekeyed = this.d.tickets.reloaded(loaded.ticketKey);
    // the new snapshot; backends gone from it drain: no new connections, cut after drain_timeout
    s.reloaded(loaded, new Date(this.d.now()).toISOString());
    const generation = s.generation;
    this.d.discovery.sync(next);
    // answered once every worker process serves it; one that did not say so in time is named
    // (the reload is applied: the others have it, and it catches up when it runs again)
    const unacknowledged = await plane.acknowledged(generation);
    this.d.metrics.reloads.inc({ result: 'success' });
    // what changed: the settings, then files renewed under the same paths (the services'
    // certificates, keys and CAs; the admin API's; the ticket key), or "no changes"
    const own = new Set([next.admin.tlsCert, next.admin.tlsKey, next.tls_tickets.keyFile]);
    const renewedFiles = [...loaded.fileDigests].filter(([f, d]) => !own.has(f) && previous.has(f) && previous.get(f) !== d).map(([f]) => f);
    const parts = changes.length > 0 ? [summarize(changes)] : [];
    if (renewedFiles.length > 0) parts.push(`files renewed: ${renewedFiles.join(', ')}`);
    if (renewed) parts.push('admin certificate renewed');
    if (rekeyed) parts.push('tls ticket keys replaced');
    let summary = parts.length > 0 ? parts.join(', ') : summarize(changes);
    if (workerCount(next.runtime.workers) !== this.d.workers) {
      // the number of processes is set at start, as HAProxy's nbthread
      summary += `; runtime.workers stays ${this.d.workers} until a restart`;
      logger.warn({ running: this.d.workers, configured: next.runtime.workers }, 'runtime.workers changes only with a restart');
    }
    const late = unacknowledged.length > 0 ? `; not acknowledged within ${RELOAD_ACK_MS / 1000} s by worker ${unacknowledged.map((pid) => `pid ${pid}`).join(', ')}` : '';
    this.d.events.push('reload', `generation ${generation} (${trigger}): ${summary}${late}`);
    const fields = { generation, trigger, changes: summary, hash: loaded.shownHash.slice(0, 12), ...(late ? { unacknowledged } : {}) };
    if (late) logger.warn(fields, `config reloaded: ${summary}${late}`);
    else logger.info(fields, `config reloaded: ${summary}`);
    this.d.summary.schedule();
    return late ? { result: 'success', generation, changes: summary, unacknowledged } : { result: 'success', generation, changes: summary };
  }

  /** A listener served from a socket systemd passed keeps it: its address is the .socket unit's. */
  private checkSocketOwner(next: Config): void {
    const { state: s, plane, admin } = this.d;
    const owned = (what: string, serving: string, to: string): BindError =>
      new BindError(
        what,
        to || '""',
        `the ${what} listener serves the socket systemd passed (${serving}): the .socket unit owns that address, so change ListenStream= there and restart; the socket is kept`,
      );
    // a service on a passed socket may not move away from it, nor may the socket lose every service
    for (const address of s.passed.proxy) {
      const serving = plane.addresses();
      for (const from of s.config.services.filter((x) => x.listenAddress === address)) {
        const name = from.name;
        const to = next.services.find((x) => x.name === name);
        const label = name === DEFAULT_SERVICE ? 'proxy' : `service ${name}`;
        if (to !== undefined && to.listenAddress !== address) throw owned(label, serving.get(name) ?? address, to.listenAddress);
        if (to === undefined && !next.services.some((x) => x.listenAddress === address)) throw owned(label, serving.get(name) ?? address, `(service ${name} removed)`);
      }
    }
    if (s.passed.admin && next.admin.listenAddress !== s.config.admin.listenAddress) throw owned('admin', admin.address, next.admin.listenAddress);
    if (s.passed.admin && (next.admin.tlsCert !== '') !== admin.secure) {
      throw new BindError('admin', admin.address, 'the admin listener serves the socket systemd passed: switching it between HTTP and HTTPS needs a restart; the socket is kept');
    }
  }

  private failed(trigger: string, e: unknown): ReloadOutcome {
    const s = this.d.state;
    const err = e instanceof LemonadeError ? e.message : `unexpected error: ${String((e as Error)?.stack ?? e)}`;
    this.d.metrics.reloads.inc({ result: 'failure' });
    s.reloadFailed(new Date(this.d.now()).toISOString(), err);
    this.d.events.push('reload', `reload failed (${trigger}); still serving generation ${s.generation}: ${err.split('\n')[0]}`);
    this.d.logger.error({ trigger, generation: s.generation, error: err }, 'config reload failed; the running configuration is unchanged');
    const errors = e instanceof ConfigInvalidError ? e.issues.map((i) => ({ ...i })) : undefined;
    return errors ? { result: 'failure', generation: s.generation, error: err, errors } : { result: 'failure', generation: s.generation, error: err };
  }
}
