// The data plane as several worker processes (`[runtime] workers` > 1), seen by the control plane
// through the same DataPlane interface as the single process.
//
// Processes: node:cluster with SCHED_NONE. Where Node has listen({ reusePort }) (22.12+), each
// worker binds a listening socket of its own with SO_REUSEPORT and the kernel spreads new
// connections evenly over them; elsewhere the primary (this process) binds the socket and shares
// it, and every worker accepts from it. A socket systemd passed is always the shared one. A UDP
// service's address is bound by every worker with SO_REUSEPORT (the kernel hashes a client's
// address and port to one socket, so a flow stays on one worker), else by worker 0 alone (ipc.ts
// udpBinder). Either way the primary never touches a client byte. Each worker gets the validated
// Config, not the file; it rebuilds its own snapshot, so a reload is one assignment in each
// worker, as in one process. Caps are split (Snapshot's shareOf): the shares add up to each cap.
// A worker that exits unasked is replaced (with a backoff when it keeps failing); one that stops
// answering for WORKER_HUNG_MS is killed and replaced.

import cluster, { type Worker } from 'node:cluster';
import dgram from 'node:dgram';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import type { HostPort } from '../config/address';
import { formatHostPort } from '../config/address';
import type { AdminState } from '../core/backend';
import type { Snapshot } from '../core/snapshot';
import type { LoadTable } from '../core/stats';
import type { Config } from '../config/schema';
import type { Logger } from '../obs/logger';
import type { TrafficFigures } from '../obs/metrics';
import { BindError } from '../errors';
import { reusePort } from '../proxy/listener';
import { udpFigures } from '../proxy/udp-flows';
import type { DataPlane, Pending, WorkerProcess } from './plane';
import type { DrainResult } from '../proxy/registry';
import { EMPTY_REPORT, mergeReports, retiredPart, type FromWorker, type HealthView, type ListenSpec, type ToWorker, type WorkerReport } from './ipc';

/** How often the control plane pulls the workers' figures (status, metrics, /health, summary). */
export const REPORT_INTERVAL_MS = 1000;
/** A worker that answers nothing for this long is killed and replaced. */
export const WORKER_HUNG_MS = 10_000;
/** How long one pull waits for answers before using what it has. */
const ASK_TIMEOUT_MS = 2000;
/** How long a reload waits for each worker to say it serves the new snapshot. */
export const RELOAD_ACK_MS = 2000;
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5000;

/** `[runtime] workers`: 0 = one per CPU. */
export function workerCount(configured: number): number {
  return configured === 0 ? availableParallelism() : configured;
}

export interface PoolDeps {
  readonly count: number;
  readonly logger: Logger;
  /** the control plane's load table: its figures become the sum of the workers' */
  readonly loads: LoadTable;
  readonly traffic: TrafficFigures;
  /** what a new worker needs to start */
  readonly state: () => { config: Config; generation: number; operator: [string, AdminState][]; health: [string, HealthView][]; ticketKey: Buffer };
  readonly event: (kind: 'health' | 'lifecycle', message: string) => void;
}

interface Member {
  readonly index: number;
  worker: Worker | null;
  pid: number;
  /** its listener is up: from its 'listening' message to its exit */
  listening: boolean;
  report: WorkerReport | null;
  /** the generation it said it serves (a new worker: the one it was started with) */
  applied: number;
  startedAt: number;
  lastAnswer: number;
  /** exits in a row, each within 10 s of its start (the restart backoff) */
  failStreak: number;
  /** unasked exits so far */
  exits: number;
  restartTimer: NodeJS.Timeout | null;
  readonly asks: Map<number, (m: Extract<FromWorker, { t: 'answer' }> | null) => void>;
}

export class WorkerPool implements DataPlane {
  private readonly members: Member[];
  private specs: readonly ListenSpec[] = [];
  /** each socket's bound address, by listen address as the config writes it */
  private bound = new Map<string, string>();
  private retired: WorkerReport = EMPTY_REPORT;
  private merged: WorkerReport = EMPTY_REPORT;
  private stopping = false;
  private nextId = 1;
  private poll: NodeJS.Timeout | null = null;
  /** reloads waiting for acknowledgements: each looks again at every 'applied' and exit */
  private readonly waiting = new Set<() => void>();

  constructor(private readonly deps: PoolDeps) {
    this.members = Array.from({ length: deps.count }, (_, index) => ({
      index,
      worker: null,
      pid: 0,
      listening: false,
      report: null,
      applied: 0,
      startedAt: 0,
      lastAnswer: 0,
      failStreak: 0,
      exits: 0,
      restartTimer: null,
      asks: new Map(),
    }));
  }

  get address(): string {
    for (const a of this.bound.values()) return a;
    return '';
  }
  addresses(): ReadonlyMap<string, string> {
    const out = new Map<string, string>();
    for (const svc of this.deps.state().config.services) {
      const a = this.bound.get(svc.listenAddress);
      if (a !== undefined) out.set(svc.name, a);
    }
    return out;
  }
  openByService(): ReadonlyMap<string, number> {
    return new Map(this.merged.serviceOpen);
  }
  /** at least one worker accepts: a pool whose workers all died (or crash-loop) serves nobody */
  get listening(): boolean {
    return this.bound.size > 0 && !this.stopping && this.members.some((m) => m.listening);
  }
  get open(): number {
    return this.merged.open;
  }
  get accepted(): number {
    return this.merged.accepted;
  }

  /** Fork every worker on these listen specs; resolves once all listen, rejects on the first failure. */
  async listen(specs: readonly ListenSpec[]): Promise<void> {
    this.specs = specs;
    // the kernel spreads connections over the workers accepting from the shared socket; the
    // default (round robin) would make this process accept every connection and pass it on
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: process.argv[1], args: [], serialization: 'advanced', silent: false });
    try {
      for (const spec of specs) if ('addr' in spec) await addressFree(spec.addr, spec.udp === true);
      this.bound = new Map((await Promise.all(this.members.map((m) => this.fork(m))))[0] ?? []);
    } catch (e) {
      this.stopping = true;
      for (const m of this.members) m.worker?.process.kill('SIGKILL');
      throw e;
    }
    this.poll = setInterval(() => void this.refresh().then(() => this.checkHung()), REPORT_INTERVAL_MS);
    this.poll.unref();
  }

  private fork(m: Member): Promise<readonly (readonly [string, string])[]> {
    const w = cluster.fork();
    m.worker = w;
    m.pid = w.process.pid ?? 0;
    m.report = null;
    m.startedAt = Date.now();
    m.lastAnswer = m.startedAt;
    const s = this.deps.state();
    m.applied = s.generation;
    this.sendTo(m, { t: 'init', index: m.index, count: this.members.length, config: s.config, generation: s.generation, operator: s.operator, health: s.health, listen: this.specs, ticketKey: s.ticketKey });
    return new Promise<readonly (readonly [string, string])[]>((resolve, reject) => {
      let settled = false;
      w.on('message', (msg: FromWorker) => {
        m.lastAnswer = Date.now();
        switch (msg.t) {
          case 'listening':
            settled = true;
            m.listening = true;
            resolve(msg.addresses);
            return;
          case 'listen-failed':
            settled = true;
            reject(new BindError('proxy', msg.address, msg.reason));
            return;
          case 'answer': {
            const f = m.asks.get(msg.id);
            m.asks.delete(msg.id);
            if (msg.report) m.report = msg.report;
            f?.(msg);
            return;
          }
          case 'event':
            this.deps.event(msg.kind, msg.message);
            return;
          case 'applied':
            m.applied = Math.max(m.applied, msg.generation);
            this.wake();
            return;
        }
      });
      // a message sent while the worker is dying fails with EPIPE, emitted here: without a
      // listener it would throw in this process and take the control plane down with it; the
      // exit handler replaces the worker
      w.on('error', (e: NodeJS.ErrnoException) => this.deps.logger.debug({ worker: m.index, pid: m.pid, error: e.code ?? e.message }, 'cannot send to a data-plane worker'));
      w.on('exit', (code, signal) => {
        if (!settled) {
          settled = true;
          reject(new BindError('proxy', this.specs.map(specLabel).join(', ') || '?', `worker exited (${signal ?? code}) before listening`));
        }
        this.onExit(m, w, code, signal);
      });
    });
  }

  private onExit(m: Member, w: Worker, code: number | null, signal: string | null): void {
    if (m.worker !== w) return;
    m.worker = null;
    m.listening = false;
    for (const f of m.asks.values()) f(null);
    m.asks.clear();
    this.wake();
    // keep what it counted, so the sums (Prometheus counters) never go back
    if (m.report) this.retired = mergeReports([this.retired, retiredPart(m.report)]);
    m.report = null;
    if (this.stopping) return;
    m.exits++;
    const lived = Date.now() - m.startedAt;
    m.failStreak = lived > 10_000 ? 0 : m.failStreak + 1;
    const delay = m.failStreak === 0 ? 0 : Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** (m.failStreak - 1));
    const how = signal ?? `code ${code}`;
    this.deps.logger.error({ worker: m.index, pid: m.pid, exit: how, restartInMs: delay }, 'data-plane worker exited unexpectedly: starting a new one');
    this.deps.event('lifecycle', `worker ${m.index} (pid ${m.pid}) exited (${how}); restarting`);
    m.restartTimer = setTimeout(() => {
      m.restartTimer = null;
      if (this.stopping) return;
      this.fork(m).then(
        () => this.deps.logger.info({ worker: m.index, pid: m.pid }, 'data-plane worker restarted'),
        (e: unknown) => this.deps.logger.error({ worker: m.index, error: String((e as Error).message ?? e) }, 'data-plane worker failed to start'),
      );
    }, delay);
    m.restartTimer.unref();
  }

  private sendTo(m: Member, msg: ToWorker): void {
    const w = m.worker;
    if (!w || !w.isConnected()) return;
    try {
      w.send(msg);
    } catch {
      // the channel closed under us: the exit handler replaces the worker
    }
  }

  private broadcast(msg: ToWorker): void {
    for (const m of this.members) this.sendTo(m, msg);
  }

  /** Ask every live worker; resolves with the answers (null for a worker that did not answer). */
  private ask(make: (id: number, m: Member) => ToWorker, timeoutMs = ASK_TIMEOUT_MS): Promise<(Extract<FromWorker, { t: 'answer' }> | null)[]> {
    return Promise.all(
      this.members.map((m) => {
        if (!m.worker || !m.worker.isConnected()) return Promise.resolve(null);
        const id = this.nextId++;
        return new Promise<Extract<FromWorker, { t: 'answer' }> | null>((resolve) => {
          const t = setTimeout(() => {
            m.asks.delete(id);
            resolve(null);
          }, timeoutMs);
          t.unref();
          m.asks.set(id, (a) => {
            clearTimeout(t);
            resolve(a);
          });
          this.sendTo(m, make(id, m));
        });
      }),
    );
  }

  async prepare(address: string, addr: HostPort, udp = false): Promise<Pending> {
    await addressFree(addr, udp);
    // the id each worker holds its bound server under (a worker that is restarting gets none)
    const ids = new Map<Member, number>();
    const answers = await this.ask((id, m) => {
      ids.set(m, id);
      return { t: 'prepare', id, listen: { address, addr, udp } };
    });
    const failed = answers.find((a) => a === null || a.error !== undefined);
    const settle = (t: 'commit' | 'abort'): void => {
      for (const [m, id] of ids) this.sendTo(m, { t, id });
    };
    if (failed !== undefined) {
      settle('abort');
      throw new BindError('proxy', formatHostPort(addr), failed === null ? 'a worker did not answer' : failed.error!);
    }
    return {
      commit: () => {
        settle('commit');
        // a worker started from now on listens on the new address
        this.specs = [...this.specs.filter((s) => s.address !== address), { address, addr, udp }];
        this.bound.set(address, formatHostPort(addr));
      },
      abort: () => settle('abort'),
    };
  }

  closeAddress(address: string): void {
    this.specs = this.specs.filter((s) => s.address !== address);
    this.bound.delete(address);
    this.broadcast({ t: 'close-address', address });
  }

  applied(snap: Snapshot): void {
    // each worker works out for itself which of its connections drain (it knows which are open)
    this.broadcast({ t: 'snapshot', config: snap.config, generation: snap.generation, operator: this.deps.state().operator });
  }

  /**
   * Resolves once every worker serves `generation` or a later one (the addresses no service has
   * are closed before it), with the pids of those that did not say so within RELOAD_ACK_MS. A
   * worker that exits meanwhile is not waited for: its replacement starts from the current config.
   */
  acknowledged(generation: number): Promise<readonly number[]> {
    const owed = this.members.filter((m) => m.worker !== null && m.worker.isConnected() && m.applied < generation).map((m) => [m, m.worker] as const);
    const late = (): number[] => owed.filter(([m, w]) => m.worker === w && m.applied < generation).map(([m]) => m.pid);
    if (owed.length === 0) return Promise.resolve([]);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiting.delete(check);
        resolve(late());
      };
      const check = (): void => {
        if (late().length === 0) done();
      };
      const timer = setTimeout(done, RELOAD_ACK_MS);
      this.waiting.add(check);
    });
  }

  private wake(): void {
    for (const check of [...this.waiting]) check();
  }

  adminChanged(name: string, keys: readonly string[], state: AdminState, cut: boolean): void {
    this.broadcast({ t: 'admin', name, keys, state, cut });
  }

  checked(key: string, healthy: boolean, healthySince: number, ok: boolean): void {
    this.broadcast({ t: 'check', key, healthy, healthySince, ok });
  }

  agentChanged(key: string, down: boolean, weightPercent: number | null): void {
    this.broadcast({ t: 'agent', key, down, weightPercent });
  }

  async close(): Promise<void> {
    this.stopping = true;
    if (this.poll) clearInterval(this.poll);
    for (const m of this.members) if (m.restartTimer) clearTimeout(m.restartTimer);
    await this.ask((id) => ({ t: 'close', id }));
  }

  async drain(timeoutMs: number): Promise<DrainResult> {
    this.stopping = true;
    const answers = await this.ask((id) => ({ t: 'drain', id, timeoutMs }), timeoutMs + ASK_TIMEOUT_MS);
    let drained = 0;
    let cut = 0;
    for (const a of answers) {
      drained += a?.drained ?? 0;
      cut += a?.cut ?? 0;
    }
    this.absorb();
    // a worker that did not answer in time is not waited for
    for (const m of this.members) if (m.worker && !m.worker.isDead()) m.worker.process.kill('SIGKILL');
    return { drained, cut };
  }

  reopenLog(): void {
    this.broadcast({ t: 'reopen-log' });
  }

  setTicketKey(key: Buffer): void {
    // a worker forked from now on gets it in its init (state())
    this.broadcast({ t: 'ticket-key', key });
  }

  /** Pull every worker's figures and make them the control plane's. */
  async refresh(): Promise<void> {
    if (this.members.every((m) => !m.worker)) return;
    await this.ask((id) => ({ t: 'report', id }));
    this.absorb();
  }

  private absorb(): void {
    const reports = this.members.map((m) => m.report).filter((r): r is WorkerReport => r !== null);
    // what the ended workers counted stays only for the backends this process still has
    const loads = this.deps.loads;
    const r = this.retired;
    if (r.loads.some(([k]) => !loads.peek(k)) || r.counters.some(([n]) => !loads.peekCounters(n)) || r.traffic.connect.some(([n]) => !loads.peekCounters(n))) {
      this.retired = {
        ...r,
        loads: r.loads.filter(([k]) => loads.peek(k) !== undefined),
        counters: r.counters.filter(([n]) => loads.peekCounters(n) !== undefined),
        traffic: { ...r.traffic, connect: r.traffic.connect.filter(([n]) => loads.peekCounters(n) !== undefined) },
      };
    }
    this.merged = mergeReports([this.retired, ...reports]);
    for (const [key, l] of this.merged.loads) loads.peek(key)?.absorb(l);
    // a backend this process no longer has (gone while a report was on its way) makes no entry
    for (const [name, c] of this.merged.counters) {
      const mine = loads.peekCounters(name);
      if (mine) Object.assign(mine, c);
    }
    this.deps.traffic.absorb([this.merged.traffic]);
    // the UDP figures the metrics read are this process's own, which relays nothing: the sums
    for (const [service, f] of this.merged.udp) Object.assign(udpFigures(service), f);
  }

  private checkHung(): void {
    if (this.stopping) return;
    const now = Date.now();
    for (const m of this.members) {
      if (m.worker && !m.worker.isDead() && now - m.lastAnswer > WORKER_HUNG_MS) {
        this.deps.logger.error({ worker: m.index, pid: m.pid, silentMs: now - m.lastAnswer }, 'data-plane worker stopped answering: killing it');
        m.worker.process.kill('SIGKILL');
      }
    }
  }

  processes(): WorkerProcess[] {
    return this.members.map((m) => ({
      index: m.index,
      pid: m.worker ? m.pid : null,
      up: m.worker !== null && !m.worker.isDead(),
      open: m.report?.open ?? 0,
      accepted: m.report?.accepted ?? 0,
      restarts: m.exits,
    }));
  }

  workerFigures(): { up: number; restarts: number } {
    let up = 0;
    let restarts = 0;
    for (const m of this.members) {
      if (m.worker !== null && !m.worker.isDead()) up++;
      restarts += m.exits;
    }
    return { up, restarts };
  }

  /** Kill every worker now (the second signal). */
  kill(): void {
    this.stopping = true;
    for (const m of this.members) m.worker?.process.kill('SIGKILL');
  }
}

/**
 * With reusePort, a worker's bind succeeds beside another process's SO_REUSEPORT socket on the
 * same address (another balancer of the same user) and the two would split its traffic: the
 * primary first binds it plainly, as a single process would, and fails the same way.
 */
async function addressFree(addr: HostPort, udp: boolean): Promise<void> {
  if (!reusePort()) return;
  if (udp) {
    const probe = dgram.createSocket(net.isIPv6(addr.host) ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      probe.once('error', (e: NodeJS.ErrnoException) => {
        try {
          probe.close();
        } catch {
          // never bound: nothing to close
        }
        reject(new BindError('proxy', formatHostPort(addr), e.code ?? e.message));
      });
      probe.bind({ address: addr.host, port: addr.port, exclusive: true }, resolve);
    });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return;
  }
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (e: NodeJS.ErrnoException) => reject(new BindError('proxy', formatHostPort(addr), e.code ?? e.message)));
    probe.listen({ host: addr.host, port: addr.port, exclusive: true }, resolve);
  });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

function specLabel(spec: ListenSpec): string {
  return 'fd' in spec ? `fd ${spec.fd}` : formatHostPort(spec.addr);
}
