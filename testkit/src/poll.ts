// For integration tests: wait for a condition by polling it, with a deadline, never with a fixed sleep.

export type PollOptions = {
  readonly deadlineMs: number;
  /** Pause between probes. */
  readonly intervalMs?: number;
  /** More to say when the deadline passes (a process's output, for example). */
  readonly detail?: () => string;
};

/** Resolves with the probe's first defined value; rejects naming `what` once the deadline passed. */
export async function pollUntil<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, options: PollOptions): Promise<T> {
  const giveUpAtMs = performance.now() + options.deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() > giveUpAtMs) {
      const detail = options.detail?.();
      throw new Error(`timed out after ${options.deadlineMs} ms waiting for ${what}${detail === undefined ? "" : `\n${detail}`}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 20));
  }
}

/**
 * For test doubles that learn of changes by events rather than by polling: each `until` is looked at again
 * on every `notify`, and fails naming `what` (and the `detail` of that moment) past its deadline.
 */
export class Waiters {
  private readonly checks = new Set<() => void>();

  constructor(private readonly defaultDeadlineMs = 5000) {}

  until(condition: () => boolean, what: string, deadlineMs = this.defaultDeadlineMs, detail?: () => string): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.checks.delete(check);
        const more = detail?.();
        reject(new Error(`waited ${deadlineMs} ms for ${what}${more === undefined ? "" : `; ${more}`}`));
      }, deadlineMs);
      const check = (): void => {
        if (!condition()) return;
        clearTimeout(timer);
        this.checks.delete(check);
        resolve();
      };
      this.checks.add(check);
    });
  }

  notify(): void {
    for (const check of [...this.checks]) check();
  }
}
