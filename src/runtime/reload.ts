// Reload triggers, all funnelled into one path: chokidar watching the config file's directory
// (rename-saves and Kubernetes-style symlink swaps are both seen), a poll comparing the file's
// content every config_watch_interval_millis, SIGHUP and POST /reload (through request()).
// File events are settled (no event for SETTLE_MS), a change the poll finds is settled by content
// (the same bytes read SETTLE_MS apart), so neither reads a file mid-write; reloads are coalesced:
// one running when another is requested is followed by exactly one more. Files the configuration
// names (the admin API's certificate and key) are watched the same way: their directories, by
// event and by poll; a change of their bytes reloads.

import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import { sha256 } from '../config/load';

export const SETTLE_MS = 100;
/** Longest wait for the watcher's initial scan at start. */
export const READY_WAIT_MS = 3000;

export interface ReloadTriggerDeps {
  readonly path: string;
  /** current poll period, ms (re-read after every poll so a reload can change it) */
  readonly pollMs: () => number;
  /** the reload itself; never rejects */
  readonly reload: (trigger: string) => Promise<unknown>;
  /** hash of the content last applied or attempted */
  readonly lastHash: () => string;
  readonly onWatchError?: (e: Error) => void;
  /** other files the running configuration names, whose change is a reload too (re-read after each reload) */
  readonly files?: () => readonly string[];
}

export class ReloadTrigger {
  private watcher: FSWatcher | null = null;
  private settle: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private queued: { trigger: string; promise: Promise<unknown> } | null = null;
  private stopped = false;
  /** the named files watched, and the hash of their bytes as read before the last reload began */
  private watched: readonly string[] = [];
  private filesHash = '';

  constructor(private readonly deps: ReloadTriggerDeps) {}

  /**
   * Start watching. Resolves once the watcher is ready (bounded by READY_WAIT_MS), after one
   * content check, so that a save made while the watcher was starting is not missed.
   */
  async start(): Promise<void> {
    const name = basename(this.deps.path);
    this.watched = this.deps.files?.() ?? [];
    this.filesHash = await this.hashFiles(this.watched);
    const w = chokidar.watch([dirname(this.deps.path), ...this.watched.map((f) => dirname(f))], {
      depth: 0,
      ignoreInitial: true,
      persistent: true,
      // only the file itself (a rename-save ends in an event for its name) and a ConfigMap's
      // `..data` links: any other file in the directory (an access log written beside the
      // config, an editor's swap file) is neither stat'ed nor a reason to read the config again
      ignored: (p: string) =>
        p !== dirname(this.deps.path) &&
        basename(p) !== name &&
        !basename(p).startsWith('..') &&
        !this.watched.some((f) => p === dirname(f) || basename(p) === basename(f)),
    });
    this.watcher = w;
    // Any change in the directory (the file, a temp file renamed over it, a ConfigMap's ..data
    // link) leads to a content check once the directory has been still for SETTLE_MS.
    w.on('all', () => this.onFsEvent());
    w.on('error', (e: unknown) => this.deps.onWatchError?.(e as Error));
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, READY_WAIT_MS);
      t.unref();
      w.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
    });
    this.schedulePoll();
    this.onFsEvent();
  }

  private onFsEvent(): void {
    if (this.stopped) return;
    if (this.settle) clearTimeout(this.settle);
    this.settle = setTimeout(() => {
      this.settle = null;
      void this.ifChanged('file');
    }, SETTLE_MS);
    this.settle.unref();
  }

  private schedulePoll(): void {
    if (this.stopped) return;
    this.poll = setTimeout(() => {
      void this.pollOnce().finally(() => this.schedulePoll());
    }, this.deps.pollMs());
    this.poll.unref();
  }

  /**
   * No event says when a writer is done with a file the poll finds changed (the poll is there for
   * the events that are missed): the change is reloaded once the same bytes are read SETTLE_MS apart.
   */
  private async pollOnce(): Promise<void> {
    await this.ifFilesChanged('poll');
    let text = await this.read();
    if (text === null || sha256(text) === this.deps.lastHash()) return;
    for (;;) {
      await new Promise<void>((resolve) => setTimeout(resolve, SETTLE_MS).unref());
      if (this.stopped) return;
      const again = await this.read();
      if (again === null) return; // missing for a moment during a swap: the next event or poll sees it
      if (again === text) break;
      text = again;
    }
    if (sha256(text) !== this.deps.lastHash()) await this.request('poll');
  }

  /** Reload if the file's content differs from what was last applied or attempted. */
  private async ifChanged(trigger: string): Promise<void> {
    await this.ifFilesChanged(trigger);
    const text = await this.read();
    // missing for a moment during a swap: the next event or poll sees it
    if (text !== null && sha256(text) !== this.deps.lastHash()) await this.request(trigger);
  }

  /** A named file whose bytes differ from those read before the last reload: reload. */
  private async ifFilesChanged(trigger: string): Promise<void> {
    if (this.watched.length === 0) return;
    let hash = await this.hashFiles(this.watched);
    if (hash === this.filesHash) return;
    // settled like the poll's: the same bytes read SETTLE_MS apart (a key written after its certificate)
    for (;;) {
      await new Promise<void>((resolve) => setTimeout(resolve, SETTLE_MS).unref());
      if (this.stopped) return;
      const again = await this.hashFiles(this.watched);
      if (again === hash) break;
      hash = again;
    }
    if (hash !== this.filesHash) await this.request(trigger);
  }

  /** One hash of the files' paths and bytes (a missing file counts as such, and is a change). */
  private async hashFiles(files: readonly string[]): Promise<string> {
    if (files.length === 0) return '';
    const parts = await Promise.all(files.map((f) => readFile(f, 'latin1').catch(() => '\u0000missing')));
    return sha256(files.map((f, i) => `${f}\u0000${parts[i]!}`).join('\u0000'));
  }

  private async read(): Promise<string | null> {
    try {
      return await readFile(this.deps.path, 'utf8');
    } catch {
      return null;
    }
  }

  /** Reload now (coalesced): resolves with the result of a reload that started after this call. */
  request(trigger: string): Promise<unknown> {
    if (this.running) {
      if (!this.queued) {
        const after = this.running.then(() => {
          const q = this.queued!;
          this.queued = null;
          return this.runOne(q.trigger);
        });
        this.queued = { trigger, promise: after };
      }
      return this.queued.promise;
    }
    return this.runOne(trigger);
  }

  private runOne(trigger: string): Promise<unknown> {
    // the named files' bytes before the reload reads them: a change during it is a change after
    const before = this.deps.files === undefined ? Promise.resolve() : this.hashFiles(this.watched).then((h) => void (this.filesHash = h));
    const p = before
      .then(() => this.deps.reload(trigger))
      .finally(() => {
        if (this.running === p) this.running = null;
        this.follow();
      });
    this.running = p;
    return p;
  }

  /** After a reload: the files the configuration names now, their directories watched. */
  private follow(): void {
    if (this.stopped || this.deps.files === undefined) return;
    const now = this.deps.files();
    if (now.length === this.watched.length && now.every((f, i) => f === this.watched[i])) return;
    const added = now.filter((f) => !this.watched.includes(f));
    this.watched = now;
    void this.hashFiles(now).then((h) => void (this.filesHash = h));
    if (added.length > 0) this.watcher?.add(added.map((f) => dirname(f)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.settle) clearTimeout(this.settle);
    if (this.poll) clearTimeout(this.poll);
    const w = this.watcher;
    this.watcher = null;
    if (w) await w.close();
  }
}
