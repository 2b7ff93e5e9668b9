// Callers waiting for a writer's queue to empty, each bounded by its own timeout: how the writers
// of standard output and of the access log let the process flush its last lines before it exits.

export class IdleWaiters {
  private waiting: (() => void)[] = [];

  /** Resolves at once when `idle`, else at the next wake() or after `timeoutMs`, whichever is first. */
  wait(idle: boolean, timeoutMs: number): Promise<void> {
    if (idle) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      t.unref();
      this.waiting.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** The queue is empty: every waiter resolves. */
  wake(): void {
    const w = this.waiting;
    this.waiting = [];
    for (const f of w) f();
  }
}
