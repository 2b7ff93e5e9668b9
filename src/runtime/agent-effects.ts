// What an agent check's answer does (the words are read in health/agent.ts). `drain`, `ready` and
// `maint` are operator actions (runtime/backend-admin.ts), applied when the agent's word changes;
// `down`/`up` set the backend's agent-down flag; `NN%` scales its weight, which reaches the
// strategies through a new snapshot (same config and generation, published by LiveState), never
// on the pick path. What the agent said is reported to the backend's figures, the owner of its
// health. The data plane hears of both as it hears of operator actions: in one process it reads
// the same figures and snapshot; worker processes get the figures in a message first, then the
// publication's snapshot.
// An agent that cannot be reached or answers nothing changes nothing (as HAProxy): connectivity
// is the active check's business.

import { shownName } from '../core/backend';
import type { SnapshotBackend } from '../core/snapshot';
import type { AgentEvent } from '../health/checker';
import { nextAgent, parseAgentReply, type AgentAdmin } from '../health/agent';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { Metrics } from '../obs/metrics';
import { setBackendAdmin } from './backend-admin';
import type { LiveState } from './live-state';
import type { DataPlane } from './plane';

export interface AgentEffectsDeps {
  readonly state: LiveState;
  readonly plane: DataPlane;
  readonly logger: Logger;
  readonly events: EventRing;
  readonly metrics: Metrics;
}

const ACTION: Readonly<Record<AgentAdmin, 'enable' | 'drain' | 'disable'>> = { ready: 'enable', drain: 'drain', maint: 'disable' };

export function applyAgentAnswer(d: AgentEffectsDeps, e: AgentEvent): void {
  const s = d.state;
  d.metrics.agentChecks.inc({ service: e.service, backend: e.backend, result: e.error === null ? 'success' : 'failure' });
  const b: SnapshotBackend | undefined = s.snapshot.backends.find((x) => x.load.key === e.key);
  if (!b) return; // removed by a reload meanwhile
  const load = b.load;
  const shown = shownName(e.service, e.backend);
  if (e.error !== null || e.reply === null) {
    load.noteAgent({ at: e.at, reply: e.reply, error: e.error });
    if (d.logger.isLevelEnabled('debug')) d.logger.debug({ service: e.service, backend: e.backend, error: e.error }, 'agent check: no answer');
    return;
  }
  const reply = parseAgentReply(e.reply);
  const { next, action } = nextAgent({ down: load.agentDown, admin: load.agentAdmin, weightPercent: load.agentWeightPercent }, reply);
  load.noteAgent({ at: e.at, reply: e.reply, error: reply.ignored.length > 0 ? `ignored: ${reply.ignored.join(' ')}` : null }, next.admin);
  if (action !== null) setBackendAdmin(d, { service: b.service, name: b.name, backends: [b], parent: false }, ACTION[action], 'agent');
  const downChanged = next.down !== load.agentDown;
  const weightChanged = next.weightPercent !== load.agentWeightPercent;
  if (!downChanged && !weightChanged) return;
  load.applyAgent(next.down, next.weightPercent);
  // worker processes take the figures before the snapshot published below is rebuilt from them
  d.plane.agentChanged(e.key, next.down, next.weightPercent);
  if (downChanged) {
    if (next.down) d.logger.warn({ service: e.service, backend: e.backend, reply: e.reply }, 'backend is down (agent)');
    else d.logger.info({ service: e.service, backend: e.backend, reply: e.reply }, 'backend is up (agent)');
    d.events.push('health', `${shown} is ${next.down ? 'down' : 'up'} (agent: ${e.reply})`);
  }
  if (weightChanged) {
    // the weight lives in the snapshot: a new one, same config and generation
    s.republish();
    d.logger.info({ service: e.service, backend: e.backend, weightPercent: next.weightPercent, weight: b.spec.weight }, `backend ${shown}: weight ${next.weightPercent}% (agent)`);
    d.events.push('admin', `${shown}: weight ${next.weightPercent}% of ${b.spec.weight} (agent)`);
  }
}
