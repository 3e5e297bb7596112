// A clock that moves only when a test says so: timers fire in due order inside advanceBy().
import type { CancelTimer, Clock } from "../src/clock.ts";

type Timer = { readonly id: number; readonly dueMs: number; readonly callback: () => void };

export class ManualClock implements Clock {
  private currentMs: number;
  private nextTimerId = 1;
  private readonly timers = new Map<number, Timer>();

  constructor(startMs = 1_000_000) {
    this.currentMs = startMs;
  }

  nowMs(): number {
    return this.currentMs;
  }

  setTimer(callback: () => void, delayMs: number): CancelTimer {
    const id = this.nextTimerId++;
    this.timers.set(id, { id, dueMs: this.currentMs + Math.max(0, delayMs), callback });
    return () => {
      this.timers.delete(id);
    };
  }

  /** Moves time forward, firing every timer due by then (including ones set by earlier callbacks). */
  advanceBy(durationMs: number): void {
    const targetMs = this.currentMs + durationMs;
    for (let next = this.nextDue(); next !== undefined && next.dueMs <= targetMs; next = this.nextDue()) {
      this.timers.delete(next.id);
      this.currentMs = next.dueMs;
      next.callback();
    }
    this.currentMs = targetMs;
  }

  /** Milliseconds until the next timer, or undefined when none is set. */
  nextDueInMs(): number | undefined {
    const next = this.nextDue();
    return next === undefined ? undefined : next.dueMs - this.currentMs;
  }

  get timerCount(): number {
    return this.timers.size;
  }

  private nextDue(): Timer | undefined {
    let earliest: Timer | undefined;
    for (const timer of this.timers.values()) {
      if (earliest === undefined || timer.dueMs < earliest.dueMs || (timer.dueMs === earliest.dueMs && timer.id < earliest.id))
        earliest = timer;
    }
    return earliest;
  }
}
