// Drain, enable or disable one backend: what an operator's POST and an agent's `drain`, `ready`
// and `maint` both do. The state is kept by service and name across reloads (LiveState.operator),
// told to the data plane (disable also cuts open connections), logged and listed in /events. A
// backend found by DNS (a parent) is acted on through all its endpoints; endpoints that appear
// later take the parent's state from LiveState.operator.

import { backendRef, shownName, type AdminState, type BackendState } from '../core/backend';
import type { SnapshotBackend } from '../core/snapshot';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { LiveState } from './live-state';
import type { DataPlane } from './plane';

/** What an operator (POST /backends/NAME/ACTION) or an agent asks of one backend. */
export type AdminAction = 'drain' | 'enable' | 'disable';

export interface BackendAdminDeps {
  readonly state: LiveState;
  readonly plane: DataPlane;
  readonly logger: Logger;
  readonly events: EventRing;
}

/** What an action is applied to: the backend `name` of `service`, and the snapshot backends it is. */
export interface AdminTarget {
  readonly service: string;
  readonly name: string;
  /** the backend itself, or a parent's endpoints (then `parent` is true) */
  readonly backends: readonly SnapshotBackend[];
  readonly parent: boolean;
}

/** Apply `action` to `t`; `by` names who asked in the log line and the event. Returns the state after. */
export function setBackendAdmin(d: BackendAdminDeps, t: AdminTarget, action: AdminAction, by: 'operator' | 'agent'): BackendState {
  const state: AdminState = action === 'enable' ? 'enabled' : action === 'drain' ? 'draining' : 'disabled';
  const ref = backendRef(t.service, t.name);
  if (state === 'enabled') d.state.operator.delete(ref);
  else d.state.operator.set(ref, state);
  for (const b of t.backends) {
    b.load.admin = state;
    // the parent's state is its endpoints' now, not one set on an endpoint before
    if (t.parent) d.state.operator.delete(b.ref);
  }
  const shown = shownName(t.service, t.name);
  const suffix = (t.parent ? ` (${t.backends.length} endpoints)` : '') + (by === 'agent' ? ' (agent)' : '');
  d.logger.info({ service: t.service, backend: t.name, action, by, ...(t.parent ? { endpoints: t.backends.length } : {}) }, `backend ${shown}: ${action}${suffix}`);
  d.events.push('admin', `${shown}: ${action}${suffix}`);
  // disable cuts the backend's connections at once; drain lets them finish
  d.plane.adminChanged(
    ref,
    t.backends.map((b) => b.load.key),
    state,
    action === 'disable',
  );
  return t.backends[0]?.load.state() ?? (state === 'enabled' ? 'healthy' : state);
}
