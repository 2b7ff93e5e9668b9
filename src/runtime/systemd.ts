// systemd integration: sd_notify (READY/RELOADING/STOPPING/WATCHDOG/STATUS) and socket activation
// (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES). Without NOTIFY_SOCKET every call is a no-op.
//
// Node has no unix datagram sockets. The optional native module `sd-notify` is used when it is
// installed; otherwise `systemd-notify` is spawned (the unit then needs NotifyAccess=all).

import { spawn } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { v6Text } from '../config/address';
import { createRequire } from 'node:module';

type Native = { sendState?: (s: string) => void; notify?: (s: string) => void; ready?: () => void };

function loadNative(): Native | null {
  try {
    const req = createRequire(__filename);
    return req('sd-notify') as Native;
  } catch {
    return null;
  }
}

/** Messages kept while systemd-notify runs; more are dropped (only a stuck spawn gets there). */
const MAX_QUEUED = 64;

export class SystemdNotifier {
  private readonly socket: string | undefined;
  private native: Native | null | undefined;
  private watchdog: NodeJS.Timeout | null = null;
  /** messages waiting for the systemd-notify before them to finish */
  private readonly queue: string[][] = [];
  private sending = false;

  /** `native: false` always spawns systemd-notify (the path without the optional module). */
  constructor(
    private readonly env: Readonly<Record<string, string | undefined>> = process.env,
    opts: { readonly native?: boolean } = {},
  ) {
    this.socket = env['NOTIFY_SOCKET'];
    if (opts.native === false) this.native = null;
  }

  get enabled(): boolean {
    return !!this.socket;
  }

  notify(...lines: string[]): void {
    if (!this.socket) return;
    if (this.native === undefined) this.native = loadNative();
    const text = lines.join('\n');
    if (this.native?.sendState) {
      try {
        this.native.sendState(text);
        return;
      } catch {
        /* fall back */
      }
    }
    // one systemd-notify at a time, in order: two spawned at once can deliver out of order, and
    // READY=1 overtaken by the RELOADING=1 before it leaves the unit "reloading" for good
    if (this.queue.length < MAX_QUEUED) this.queue.push(lines);
    if (!this.sending) this.sendNext();
  }

  private sendNext(): void {
    const lines = this.queue.shift();
    if (!lines) {
      this.sending = false;
      return;
    }
    this.sending = true;
    const child = spawn('systemd-notify', lines, { stdio: 'ignore', env: { ...process.env, NOTIFY_SOCKET: this.socket } });
    let done = false;
    const next = (): void => {
      if (done) return;
      done = true;
      this.sendNext();
    };
    child.on('error', next);
    child.on('exit', next);
    child.unref();
  }

  ready(status: string): void {
    this.notify('READY=1', `STATUS=${status}`, `MAINPID=${process.pid}`);
  }

  reloading(): void {
    const usec = process.hrtime.bigint() / 1000n;
    this.notify('RELOADING=1', `MONOTONIC_USEC=${usec}`);
  }

  stopping(): void {
    this.notify('STOPPING=1');
  }

  /** Send WATCHDOG=1 at half of WATCHDOG_USEC while the event loop runs. */
  startWatchdog(): void {
    const usec = Number(this.env['WATCHDOG_USEC'] ?? 0);
    const pid = this.env['WATCHDOG_PID'];
    if (!this.socket || !(usec > 0) || (pid && Number(pid) !== process.pid)) return;
    const ms = Math.max(100, Math.floor(usec / 2000));
    this.watchdog = setInterval(() => this.notify('WATCHDOG=1'), ms);
    this.watchdog.unref();
  }

  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }
}

/**
 * The address a passed listening socket is bound to, "host:port" as formatHostPort writes it, read
 * from /proc (the socket is left untouched); null where /proc does not say.
 */
export function passedAddress(fd: number): string | null {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
    if (!m) return null;
    for (const v6 of [false, true]) {
      for (const line of readFileSync(v6 ? '/proc/net/tcp6' : '/proc/net/tcp', 'utf8').split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        if (cols[9] !== m[1]) continue;
        const [hex, port] = cols[1]!.split(':') as [string, string];
        // each 32-bit word of the address is written in the host's (little-endian) byte order
        const bytes = new Uint8Array(hex.length / 2);
        for (let w = 0; w < hex.length / 8; w++) for (let b = 0; b < 4; b++) bytes[w * 4 + b] = parseInt(hex.slice(w * 8 + (3 - b) * 2, w * 8 + (3 - b) * 2 + 2), 16);
        const host = v6 ? `[${v6Text(bytes)}]` : bytes.join('.');
        return `${host}:${parseInt(port, 16)}`;
      }
    }
  } catch {
    // no /proc here: the caller names the descriptor instead
  }
  return null;
}

export interface PassedSockets {
  readonly proxy: number[];
  readonly admin: number[];
}

/** File descriptors passed by socket activation: those named "admin" serve the admin API. */
export function passedSockets(env: Readonly<Record<string, string | undefined>> = process.env): PassedSockets | null {
  const pid = Number(env['LISTEN_PID'] ?? 0);
  const n = Number(env['LISTEN_FDS'] ?? 0);
  if (!(n > 0) || pid !== process.pid) return null;
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':');
  const out: PassedSockets = { proxy: [], admin: [] };
  for (let i = 0; i < n; i++) {
    const fd = 3 + i;
    if (names[i] === 'admin') out.admin.push(fd);
    else out.proxy.push(fd);
  }
  return out;
}
