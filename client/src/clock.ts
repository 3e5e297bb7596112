// Time as the client sees it. Injected so that tests drive timers by hand and never sleep.

/** Cancels a timer; calling it after the timer fired, or twice, does nothing. */
export type CancelTimer = () => void;

export interface Clock {
  nowMs(): number;
  /** Runs `callback` once after `delayMs`, unless cancelled first. */
  setTimer(callback: () => void, delayMs: number): CancelTimer;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(callback, delayMs) {
    const handle = setTimeout(callback, delayMs);
    return () => clearTimeout(handle);
  },
};
