// Reload triggers, all funnelled into one path: chokidar watching the config file's directory and
// where it and the tls files lead, link by link (rename-saves, Kubernetes-style `..data` swaps and
// certbot's re-pointed links are all seen), a poll comparing the file's
// content every config_watch_interval_millis, SIGHUP and POST /reload (through request()).
// File events are settled (no event for SETTLE_MS), a change the poll finds is settled by content
// (the same bytes read SETTLE_MS apart), so neither reads a file mid-write; reloads are coalesced:
// one running when another is requested is followed by exactly one more.

import { lstatSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import { hashWithFiles } from '../config/load';

export const SETTLE_MS = 100;
/** Most symlinks followed resolving one path (the kernel's own limit is 40). */
const MAX_LINKS = 40;

/**
 * Where a change can change what `path` reads: the directory and name of each symlink met
 * resolving it, and of the file it ends at. A link re-pointed (certbot's live/ links, a directory
 * link renamed over) is an event in the link's own directory, not in its target's. A missing
 * component ends the walk: its directory is where it will appear.
 */
export function watchPoints(path: string, cwd = process.cwd()): [dir: string, name: string][] {
  const out: [string, string][] = [];
  const parts = (p: string): string[] => p.split('/').filter((x) => x !== '' && x !== '.');
  let queue = parts(path.startsWith('/') ? path : `${cwd}/${path}`);
  let dir = '/';
  let links = 0;
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (name === '..') {
      dir = dirname(dir);
      continue;
    }
    const at = dir === '/' ? `/${name}` : `${dir}/${name}`;
    let link: string | null;
    try {
      link = lstatSync(at).isSymbolicLink() ? readlinkSync(at) : null;
    } catch {
      out.push([dir, name]);
      return out;
    }
    if (link === null) {
      if (queue.length === 0) out.push([dir, name]);
      dir = at;
      continue;
    }
    out.push([dir, name]);
    if (++links > MAX_LINKS) return out;
    if (link.startsWith('/')) dir = '/';
    queue = [...parts(link), ...queue];
  }
  return out;
}
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
  /** the other files whose change is a change of the configuration (the certificates and keys of the tls tables and [admin]) */
  readonly files?: () => readonly string[];
  readonly onWatchError?: (e: Error) => void;
}

export class ReloadTrigger {
  private watcher: FSWatcher | null = null;
  private settle: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private queued: { trigger: string; promise: Promise<unknown> } | null = null;
  private stopped = false;
  /**
   * the directories watched, and the names in them that matter: of the config file and the tls
   * files, and of each symlink on their way (a renamed-over file or link ends in an event for its name)
   */
  private readonly dirs = new Set<string>();
  private readonly names = new Set<string>();

  constructor(private readonly deps: ReloadTriggerDeps) {}

  /**
   * Start watching. Resolves once the watcher is ready (bounded by READY_WAIT_MS), after one
   * content check, so that a save made while the watcher was starting is not missed.
   */
  async start(): Promise<void> {
    const name = basename(this.deps.path);
    this.dirs.add(this.ownDir());
    const w = chokidar.watch(this.ownDir(), {
      depth: 0,
      // a link is an entry of its directory, reported when it is re-pointed (followed, chokidar
      // reports only its target's changes); watchFiles() watches the targets' directories itself
      followSymlinks: false,
      ignoreInitial: true,
      persistent: true,
      // only the file itself (a rename-save ends in an event for its name), the tls files and a
      // ConfigMap's `..data` links: any other file in the directory (an access log written beside
      // the config, an editor's swap file) is neither stat'ed nor a reason to read the config again
      ignored: (p: string) => !this.dirs.has(p) && basename(p) !== name && !this.names.has(basename(p)) && !basename(p).startsWith('..'),
    });
    this.watcher = w;
    // Any change in the directory (the file, a temp file renamed over it, a ConfigMap's ..data
    // link) leads to a content check once the directory has been still for SETTLE_MS.
    w.on('all', () => this.onFsEvent());
    this.watchFiles();
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

  /**
   * Watch where the file and the files the configuration names besides itself can change, links
   * followed (called after each check: a swap moves the targets); a directory no longer on any
   * file's way is let go, the config file's own directory never.
   */
  private watchFiles(): void {
    const w = this.watcher;
    if (w === null) return;
    const dirs = new Set<string>([this.ownDir()]);
    const names = new Set<string>();
    for (const f of [this.deps.path, ...(this.deps.files?.() ?? [])]) {
      for (const [d, n] of watchPoints(f)) {
        dirs.add(d);
        names.add(n);
      }
    }
    this.names.clear();
    for (const n of names) this.names.add(n);
    for (const d of this.dirs) {
      if (dirs.has(d)) continue;
      this.dirs.delete(d);
      w.unwatch(d);
    }
    for (const d of dirs) {
      if (this.dirs.has(d)) continue;
      this.dirs.add(d);
      w.add(d);
    }
  }

  /** The config file's directory, absolute as watchPoints() writes directories. */
  private ownDir(): string {
    return resolve(dirname(this.deps.path));
  }

  /** The hash the last applied or attempted content is compared with. */
  private hash(text: string): string {
    return hashWithFiles(text, this.deps.files?.() ?? []);
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
    let text = await this.read();
    this.watchFiles();
    if (text === null || this.hash(text) === this.deps.lastHash()) return;
    let hash = this.hash(text);
    for (;;) {
      await new Promise<void>((resolve) => setTimeout(resolve, SETTLE_MS).unref());
      if (this.stopped) return;
      const again = await this.read();
      if (again === null) return; // missing for a moment during a swap: the next event or poll sees it
      const h = this.hash(again);
      if (h === hash) break;
      text = again;
      hash = h;
    }
    if (hash !== this.deps.lastHash()) await this.request('poll');
  }

  /** Reload if the file's content differs from what was last applied or attempted. */
  private async ifChanged(trigger: string): Promise<void> {
    const text = await this.read();
    this.watchFiles();
    // missing for a moment during a swap: the next event or poll sees it
    if (text !== null && this.hash(text) !== this.deps.lastHash()) await this.request(trigger);
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
    const p = this.deps.reload(trigger).finally(() => {
      if (this.running === p) this.running = null;
    });
    this.running = p;
    return p;
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
