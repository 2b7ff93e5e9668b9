// pino factory. JSON lines to stdout by default; LEMONADE_LOG_FORMAT=pretty writes readable lines
// through a plain destination stream (pino transports do not survive bundling, so none is used).
// Both go through the process's stdout sink (obs/stdout.ts): a stopped reader never stalls the
// process; lines that do not fit its bounded queue are dropped and counted.

import pino, { type Logger, type DestinationStream } from 'pino';
import { processStdout } from './stdout';
import { PROCESS_ENV } from '../config/environment';

export type { Logger };

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

export interface LoggerOptions {
  readonly level?: string;
  readonly format?: string;
  readonly destination?: DestinationStream;
}

/** How long an exit waits for the last lines to be written (standard output may be stopped). */
export const EXIT_FLUSH_MS = 1000;

/**
 * Exit with `code` once the last lines are written, or EXIT_FLUSH_MS later. The wait holds
 * nothing: should the event loop end first, the process still ends with `code`.
 */
export function exitWhenFlushed(code: number): void {
  process.exitCode = code;
  void processStdout()
    .flushed(EXIT_FLUSH_MS)
    .then(() => process.exit(code));
}

function prettyDestination(out: (line: string) => void): DestinationStream {
  return {
    write(line: string): void {
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out(line);
        return;
      }
      const { time, level, msg, pid: _pid, hostname: _h, ...rest } = o;
      const t = new Date(typeof time === 'number' ? time : Date.now()).toISOString();
      const extra = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      out(`${t} ${(LEVEL_NAMES[level as number] ?? String(level)).padEnd(5)} ${String(msg ?? '')}${extra ? ' ' + extra : ''}\n`);
    },
  };
}

/**
 * An error nothing caught (a throw in a socket callback, a rejected promise nobody awaited) is
 * logged as one line at fatal, then the process exits 1 once that line (and those before it) is
 * written, or EXIT_FLUSH_MS later: the state after it is unknown, and systemd's Restart= (or the
 * primary, for a worker) starts a fresh process. A second one meanwhile exits at once.
 */
export function exitOnUncaught(logger: Logger, flushed: (timeoutMs: number) => Promise<void> = (ms) => processStdout().flushed(ms)): void {
  let dying = false;
  const die =
    (kind: string) =>
    (e: unknown): void => {
      if (dying) process.exit(1);
      dying = true;
      // the wait below holds nothing: should the event loop end first, it still ends with 1
      process.exitCode = 1;
      try {
        logger.fatal({ err: e instanceof Error ? e : new Error(String(e)), kind }, `fatal: ${kind}, exiting`);
      } finally {
        void flushed(EXIT_FLUSH_MS).then(() => process.exit(1));
      }
    };
  process.on('uncaughtException', die('uncaught exception'));
  process.on('unhandledRejection', die('unhandled promise rejection'));
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const envLevel = (opts.level ?? process.env[PROCESS_ENV.log.name] ?? PROCESS_ENV.log.def).toLowerCase();
  const level = (LEVELS as readonly string[]).includes(envLevel) ? envLevel : 'info';
  const format = opts.format ?? process.env[PROCESS_ENV.logFormat.name] ?? PROCESS_ENV.logFormat.def;
  const dest = opts.destination ?? (format === 'pretty' ? prettyDestination(processStdout().write) : processStdout());
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.epochTime }, dest);
}
