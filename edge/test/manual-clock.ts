// Time and randomness a test controls, for the edge's pure schedulers (edge-drain.ts, catch-up-pacer.ts):
// timers fire only when the test moves time on, and random draws come from a seed.

/** Timers that fire only when the test moves time on, in due order. */
export class ManualClock {
  nowMs = 0;
  private timers: { dueMs: number; callback: () => void; cancelled: boolean }[] = [];
  constructor(private readonly draws: () => number = () => 0.5) {}

  readonly monotonicNowMs = (): number => this.nowMs;
  readonly random = (): number => this.draws();
  readonly setTimer = (callback: () => void, delayMs: number): (() => void) => {
    const timer = { dueMs: this.nowMs + Math.max(0, delayMs), callback, cancelled: false };
    this.timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  };

  get pendingTimers(): number {
    return this.timers.filter((timer) => !timer.cancelled).length;
  }

  /** Moves time to `targetMs`, firing every timer due on the way (timers they set included). */
  advanceTo(targetMs: number): void {
    for (;;) {
      const due = this.timers.filter((timer) => !timer.cancelled && timer.dueMs <= targetMs).sort((a, b) => a.dueMs - b.dueMs)[0];
      if (due === undefined) break;
      this.nowMs = Math.max(this.nowMs, due.dueMs);
      due.cancelled = true;
      due.callback();
    }
    this.nowMs = targetMs;
    this.timers = this.timers.filter((timer) => !timer.cancelled);
  }
}

/** xorshift32: the same draws for the same seed, so a failing case can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}
