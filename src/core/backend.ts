// A backend's identity and states. Pure.

import type { BackendConfig } from '../config/schema';

/** What the operator asked for: independent of health. */
export type AdminState = 'enabled' | 'disabled' | 'draining';

/** What /backends shows. */
export type BackendState = 'healthy' | 'unhealthy' | 'draining' | 'disabled';

/**
 * The key of a backend's load figures: its id and address. Figures survive a reload while both
 * stay the same; a changed address is a new endpoint (the old one drains).
 */
export function backendKey(b: Pick<BackendConfig, 'id' | 'address'>): string {
  return `${b.id}@${b.address}`;
}
