// Drain, enable or disable one backend: what an operator's POST and an agent's `drain`, `ready`
// and `maint` both do. The state is kept by service and name across reloads (LiveState.operator),
// told to the data plane (disable also cuts open connections), logged and listed in /events.

import { backendRef, shownName, type AdminState, type BackendState } from '../core/backend';
import type { SnapshotBackend } from '../core/snapshot';
import type { AdminAction } from '../admin/server';
import type { EventRing } from '../obs/events';
import type { Logger } from '../obs/logger';
import type { LiveState } from './live-state';
import type { DataPlane } from './plane';

export interface BackendAdminDeps {
  readonly state: LiveState;
  readonly plane: DataPlane;
  readonly logger: Logger;
  readonly events: EventRing;
}

/** Apply `action` to `b`; `by` names who asked in the log line and the event. Returns the state after. */
export function setBackendAdmin(d: BackendAdminDeps, b: SnapshotBackend, action: AdminAction, by: 'operator' | 'agent'): BackendState {
  const state: AdminState = action === 'enable' ? 'enabled' : action === 'drain' ? 'draining' : 'disabled';
  const ref = backendRef(b.service, b.name);
  if (state === 'enabled') d.state.operator.delete(ref);
  else d.state.operator.set(ref, state);
  b.load.admin = state;
  const shown = shownName(b.service, b.name);
  const suffix = by === 'agent' ? ' (agent)' : '';
  d.logger.info({ service: b.service, backend: b.name, action, by }, `backend ${shown}: ${action}${suffix}`);
  d.events.push('admin', `${shown}: ${action}${suffix}`);
  // disable cuts the backend's connections at once; drain lets them finish
  d.plane.adminChanged(ref, b.load.key, state, action === 'disable');
  return b.load.state();
}
