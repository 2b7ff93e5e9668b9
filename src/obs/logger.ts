// pino factory. JSON lines to stdout by default; LEMONADE_LOG_FORMAT=pretty writes readable lines
// through a plain destination stream (pino transports do not survive bundling, so none is used).

import pino, { type Logger, type DestinationStream } from 'pino';

export type { Logger };

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

export interface LoggerOptions {
  readonly level?: string;
  readonly format?: string;
  readonly destination?: DestinationStream;
}

function prettyDestination(out: NodeJS.WritableStream): DestinationStream {
  return {
    write(line: string): void {
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      const { time, level, msg, pid: _pid, hostname: _h, ...rest } = o;
      const t = new Date(typeof time === 'number' ? time : Date.now()).toISOString();
      const extra = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      out.write(`${t} ${(LEVEL_NAMES[level as number] ?? String(level)).padEnd(5)} ${String(msg ?? '')}${extra ? ' ' + extra : ''}\n`);
    },
  };
}

/**
 * An error nothing caught (a throw in a socket callback, a rejected promise nobody awaited) is
 * logged as one line at fatal, then the process exits 1: the state after it is unknown, and
 * systemd's Restart= (or the primary, for a worker) starts a fresh process.
 */
export function exitOnUncaught(logger: Logger): void {
  const die =
    (kind: string) =>
    (e: unknown): void => {
      try {
        logger.fatal({ err: e instanceof Error ? e : new Error(String(e)), kind }, `fatal: ${kind}, exiting`);
      } finally {
        process.exit(1);
      }
    };
  process.on('uncaughtException', die('uncaught exception'));
  process.on('unhandledRejection', die('unhandled promise rejection'));
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const envLevel = (opts.level ?? process.env['LEMONADE_LOG'] ?? 'info').toLowerCase();
  const level = (LEVELS as readonly string[]).includes(envLevel) ? envLevel : 'info';
  const format = opts.format ?? process.env['LEMONADE_LOG_FORMAT'] ?? 'json';
  const dest = opts.destination ?? (format === 'pretty' ? prettyDestination(process.stdout) : pino.destination({ dest: 1, sync: true }));
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.epochTime }, dest);
}
