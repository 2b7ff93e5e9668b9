// Agent checks (SPEC §11), as HAProxy's agent-check: the backend's agent answers one line of
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

/** The first line of `text`, its words read; later words win over earlier ones of the same kind. */
export function parseAgentReply(text: string): AgentReply {
  const line = text.split('\n', 1)[0]!.split('#', 1)[0]!;
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
