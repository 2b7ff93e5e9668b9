// Agent checks, as HAProxy's agent-check: the backend's agent answers one line of
// words, and each word changes one thing. Pure: what a reply says and what it changes; the
// socket is health/checker.ts's, the effects runtime/agent-effects.ts's.
//
//   up                       operational state up (does not undo a drain: `ready` does)
//   down, fail, stopped      operational state down: no new connections until the agent says up
//   ready                    the operator's `enable`: ends a drain or maintenance, the agent's or an operator's
//   drain                    the operator's `drain`
//   maint                    the operator's `disable` (open connections are closed)
//   NN%                      weight = NN % of the configured weight (0 % takes no new connections)
//
// Words are separated by spaces, tabs or commas, case does not matter, and text after `#` is a
// description. A word not in this list is ignored and reported.

/** Bytes of an agent's answer read before giving up on its line. */
export const MAX_AGENT_REPLY = 1024;

export type AgentAdmin = 'ready' | 'drain' | 'maint';

export interface AgentReply {
  /** true: up, false: down, null: not said */
  readonly up: boolean | null;
  readonly admin: AgentAdmin | null;
  readonly weightPercent: number | null;
  /** words not understood */
  readonly ignored: readonly string[];
}

/** What the agent said last, as kept per backend. */
export interface AgentStatus {
  readonly down: boolean;
  readonly admin: AgentAdmin | null;
  readonly weightPercent: number | null;
}

export const INITIAL_AGENT: AgentStatus = Object.freeze({ down: false, admin: null, weightPercent: null });

/** An agent's answer: its line, or why there is none (then nothing changes, as HAProxy). */
export interface AgentAnswer {
  readonly reply: string | null;
  readonly error: string | null;
}

const escapeByte = (c: string): string => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;

/**
 * The agent's first line as read from its bytes (latin1 text: one character a byte): at most
 * MAX_AGENT_REPLY bytes are kept, whatever arrives, and the line is returned with a trailing
 * `\r` dropped and every byte other than printable ASCII and tab as `\xNN`, so that it is safe to
 * log and show (such a byte is no separator: the word holding it is ignored).
 */
export class AgentLine {
  private text = '';

  /** More of the answer: the answer once its line is complete (or too long), else null. */
  push(chunk: string): AgentAnswer | null {
    const from = this.text.length;
    if (from >= MAX_AGENT_REPLY) return null;
    this.text += chunk.length > MAX_AGENT_REPLY - from ? chunk.slice(0, MAX_AGENT_REPLY - from) : chunk;
    const nl = this.text.indexOf('\n', from);
    if (nl >= 0) return { reply: clean(this.text.slice(0, nl)), error: null };
    if (this.text.length >= MAX_AGENT_REPLY) return { reply: null, error: `no end of line in the first ${MAX_AGENT_REPLY} bytes` };
    return null;
  }

  /** The agent closed: what it sent is the line, if anything. */
  end(): AgentAnswer {
    return this.text.trim() === '' ? { reply: null, error: 'the agent closed without a reply' } : { reply: clean(this.text), error: null };
  }

  /** What came so far, for a timeout's message. */
  pending(): string {
    return this.text === '' ? '' : ` (got "${clean(this.text.slice(0, 60))}", no end of line)`;
  }
}

function clean(line: string): string {
  return line.replace(/\r$/, '').replace(/[^\t\x20-\x7e]/g, escapeByte);
}

/** The first line of `text`, its words read; later words win over earlier ones of the same kind. */
export function parseAgentReply(text: string): AgentReply {
  const nl = text.indexOf('\n');
  const first = nl >= 0 ? text.slice(0, Math.min(nl, MAX_AGENT_REPLY)) : text.slice(0, MAX_AGENT_REPLY);
  const line = first.split('#', 1)[0]!;
  let up: boolean | null = null;
  let admin: AgentAdmin | null = null;
  let weightPercent: number | null = null;
  const ignored: string[] = [];
  for (const raw of line.split(/[\s,]+/)) {
    const w = raw.toLowerCase();
    if (w === '') continue;
    if (w === 'up') up = true;
    else if (w === 'down' || w === 'fail' || w === 'stopped') up = false;
    else if (w === 'ready' || w === 'drain' || w === 'maint') admin = w;
    else if (/^\d{1,6}%$/.test(w)) weightPercent = Number(w.slice(0, -1));
    else ignored.push(raw);
  }
  return { up, admin, weightPercent, ignored };
}

/**
 * The status after a reply, and the operator action it asks for: an admin word is applied when
 * it differs from the agent's previous one, so an operator's later action is not overridden at
 * every check (the agent has to say something else first).
 */
export function nextAgent(prev: AgentStatus, r: AgentReply): { readonly next: AgentStatus; readonly action: AgentAdmin | null } {
  const next: AgentStatus = {
    down: r.up === null ? prev.down : !r.up,
    admin: r.admin ?? prev.admin,
    weightPercent: r.weightPercent ?? prev.weightPercent,
  };
  return { next, action: r.admin !== null && r.admin !== prev.admin ? r.admin : null };
}
