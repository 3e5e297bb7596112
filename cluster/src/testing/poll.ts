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
