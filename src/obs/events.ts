// The admin API's /events list: the last [runtime] health_cap lines of what happened (health
// transitions, reloads, operator actions, lifecycle, DNS answers), oldest first.

export type EventKind = 'health' | 'reload' | 'admin' | 'lifecycle' | 'dns';

export interface EventEntry {
  readonly at: string;
  readonly kind: EventKind;
  readonly message: string;
}

export class EventRing {
  private readonly entries: EventEntry[] = [];

  /** `cap` is read at each push, so a reload can change it */
  constructor(
    private readonly now: () => number,
    private readonly cap: () => number,
  ) {}

  push(kind: EventKind, message: string): void {
    this.entries.push({ at: new Date(this.now()).toISOString(), kind, message });
    const cap = this.cap();
    if (this.entries.length > cap) this.entries.splice(0, this.entries.length - cap);
  }

  list(): readonly EventEntry[] {
    return this.entries;
  }
}
