// A backend's identity and states. Pure.

import type { BackendConfig } from '../config/schema';

/** What the operator asked for: independent of health. */
export type AdminState = 'enabled' | 'disabled' | 'draining';

/** What /backends shows. */
export type BackendState = 'healthy' | 'unhealthy' | 'draining' | 'disabled';

/**
 * The key of a backend's load figures: its service, id and address. Figures survive a reload
 * while all three stay the same; a changed address is a new endpoint (the old one drains).
 */
export function backendKey(service: string, b: Pick<BackendConfig, 'id' | 'address'>): string {
  return `${service}/${b.id}@${b.address}`;
}

/**
 * A backend by its service and name, as counters, operator state and metrics know it. A service
 * name has no "/", so the first one splits the two.
 */
export function backendRef(service: string, name: string): string {
  return `${service}/${name}`;
}

/** A backend as logs and events name it: plain in the default service, else "service/name". */
export function shownName(service: string, name: string): string {
  return service === 'default' ? name : `${service}/${name}`;
}

export function splitRef(ref: string): { service: string; name: string } {
  const i = ref.indexOf('/');
  return { service: ref.slice(0, i), name: ref.slice(i + 1) };
}
