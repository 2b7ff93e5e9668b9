// A send_expect conversation (./send-expect.ts) played on a connection, TCP or UDP: what each turn
// says is written, a reply waiting for its regex is tested again when due, and the last turn's
// result goes to `end`. The timers are here so that send-expect.ts stays pure.

import { performance } from 'node:perf_hooks';
import type { Conversation, Turn } from './send-expect';

export interface Player {
  /** feed it each turn the conversation gives (start, receive, ended) */
  readonly act: (turn: Turn) => void;
  /** clear a pending retest (the check ended) */
  readonly stop: () => void;
}

/** `over`: the check ended meanwhile (its timeout, an error): the turn is dropped. */
export function play(conv: Conversation, write: (bytes: Buffer) => void, end: (error: string | null) => void, over: () => boolean): Player {
  let recheck: NodeJS.Timeout | null = null;
  const stop = (): void => {
    if (recheck !== null) clearTimeout(recheck);
    recheck = null;
  };
  const act = (turn: Turn): void => {
    if (over()) return;
    if (turn.write) write(turn.write);
    if (turn.recheckInMs !== undefined && recheck === null) {
      recheck = setTimeout(() => {
        recheck = null;
        act(conv.recheck(performance.now()));
      }, turn.recheckInMs);
      recheck.unref();
    }
    if (turn.done === null) return;
    stop();
    end(turn.done.error);
  };
  return { act, stop };
}
