// Repeated log lines, limited: the same line (by level and message template) is written at most
// linesPerWindowMax times per window; the rest are counted, and once the window ends the logger writes one
// line saying how many were held back. A database outage then costs a few lines a window per kind of
// failure, not one per failed request. Pure: the clock is injected, the logger owns the timer.

export type LogRateLimits = {
  /** Lines of one template written per window; past it they are only counted. */
  readonly linesPerWindowMax: number;
  readonly windowMs: number;
  /**
   * Templates tracked at once; past it, lines of further templates share one overflow entry (so a flood of
   * distinct messages is limited too, as one).
   */
  readonly templatesMax: number;
};

export const logRateLimitsDefault: LogRateLimits = { linesPerWindowMax: 10, windowMs: 10_000, templatesMax: 1000 };

/** What a window held back, for the line that reports it. */
export type SuppressedLines = {
  readonly level: string;
  /** The first line of the window, as written: what the suppressed ones looked like. */
  readonly sample: string;
  readonly suppressedLines: number;
  readonly windowMs: number;
};

type Window = { readonly level: string; readonly sample: string; readonly startMs: number; written: number; suppressed: number };

/** Digits vary between repeats of one line (counts, durations, ids with numbers); the rest names it. */
export function messageTemplate(message: string): string {
  return message.replace(/\d+/g, "#");
}

const overflowTemplate = "(other lines past the templates limit)";

export class LogRateLimiter {
  // Insertion order is window start order (a window that restarts is deleted and inserted again), so ended
  // windows are always at the front.
  private readonly windows = new Map<string, Window>();
  private readonly ended: SuppressedLines[] = [];

  constructor(
    private readonly limits: LogRateLimits,
    private readonly now: () => number,
  ) {}

  /** Whether a line of `level` with this message may be written now; a line refused is counted for the report. */
  admit(level: string, message: string): boolean {
    const nowMs = this.now();
    let key = `${level} ${messageTemplate(message)}`;
    let window = this.windows.get(key);
    if (window !== undefined && nowMs - window.startMs >= this.limits.windowMs) {
      this.close(key, window);
      window = undefined;
    }
    if (window === undefined) {
      if (this.windows.size >= this.limits.templatesMax) this.closeEnded(nowMs);
      if (this.windows.size >= this.limits.templatesMax) {
        key = `${level} ${overflowTemplate}`;
        window = this.windows.get(key);
        if (window === undefined) {
          // The overflow entry itself may exceed the bound by one per level: it is what keeps the bound.
          window = { level, sample: message, startMs: nowMs, written: 0, suppressed: 0 };
          this.windows.set(key, window);
        }
      } else {
        window = { level, sample: message, startMs: nowMs, written: 0, suppressed: 0 };
        this.windows.set(key, window);
      }
    }
    if (window.written < this.limits.linesPerWindowMax) {
      window.written++;
      return true;
    }
    window.suppressed++;
    return false;
  }

  /** The windows that have ended by now with lines held back, each once; forgets every ended window. */
  takeEnded(): SuppressedLines[] {
    this.closeEnded(this.now());
    return this.ended.splice(0);
  }

  /** When the earliest window holding back lines ends (undefined: none does), for the logger's timer. */
  nextReportAtMs(): number | undefined {
    if (this.ended.length > 0) return this.now();
    let earliestMs: number | undefined;
    for (const window of this.windows.values()) {
      if (window.suppressed === 0) continue;
      const endMs = window.startMs + this.limits.windowMs;
      if (earliestMs === undefined || endMs < earliestMs) earliestMs = endMs;
    }
    return earliestMs;
  }

  private closeEnded(nowMs: number): void {
    for (const [key, window] of this.windows) {
      if (nowMs - window.startMs < this.limits.windowMs) break;
      this.close(key, window);
    }
  }

  private close(key: string, window: Window): void {
    this.windows.delete(key);
    if (window.suppressed > 0)
      this.ended.push({ level: window.level, sample: window.sample, suppressedLines: window.suppressed, windowMs: this.limits.windowMs });
  }
}
