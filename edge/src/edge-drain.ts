// The edge drain: what a stopping edge does with the sessions it holds. Closing them all at once sends
// every client of the edge to the other edges in the same few milliseconds (a reconnect storm of hellos,
// directory lookups and backlog reads); instead each session gets its own moment within the drain
// window, and closes at it once the requests it is serving are answered, so a reply is never cut off.
// Sessions still serving when the grace period after the window runs out are closed regardless.
// Pure but for the injected clock and randomness: the core (edge-core.ts) owns the sessions.
import { spreadSchedule } from "./spread-schedule.ts";

/** A session as the drain sees it. */
export interface DrainTarget {
  /** Close with going_away as soon as no request of this session is being served (at once if none is). */
  closeWhenIdle(): void;
  /** Close with going_away now, whatever is in flight (the grace period ran out). */
  closeNow(): void;
}

export type DrainOptions = {
  /** The window the closes are spread over (EDGE_DRAIN_MS); 0 closes every session at once. */
  readonly drainMs: number;
  /** After the window, how long sessions still serving requests may take to answer them (EDGE_DRAIN_GRACE_MS). */
  readonly graceMs: number;
};

export type DrainClock = {
  readonly monotonicNowMs: () => number;
  /** Calls `callback` once after `delayMs`; the returned function cancels it. */
  readonly setTimer: (callback: () => void, delayMs: number) => () => void;
  /** Uniform in [0, 1), like Math.random. */
  readonly random: () => number;
};

export type DrainOutcome = {
  /** Sessions the drain started with. */
  readonly sessions: number;
  /** Sessions still open when the grace period ran out, closed with their requests unanswered. */
  readonly closedAtGrace: number;
  readonly durationMs: number;
};

/**
 * When each target closes, as offsets from the drain's start: spread evenly over the window, in a random
 * order (spreadSchedule), so the other edges take the sessions over the window rather than in one wave.
 */
export function drainSchedule<T>(
  targets: readonly T[],
  drainMs: number,
  random: () => number,
): { readonly target: T; readonly closeAtMs: number }[] {
  return spreadSchedule(targets, drainMs, random).map(({ target, atMs }) => ({ target, closeAtMs: atMs }));
}

/**
 * Drives one drain: closes each target at its moment (closeWhenIdle), then closes what is left when the
 * grace period ends. `closed` MUST be called for every target that closes, whatever closed it; the
 * promise of `run` resolves once every target has, or at the end of the grace period.
 */
export class EdgeDrain<T extends DrainTarget> {
  private readonly open = new Set<T>();
  private finish: (() => void) | undefined;
  private cancelTimer: () => void = () => undefined;
  private cancelGrace: () => void = () => undefined;
  private startedAtMs = 0;
  private closedAtGrace = 0;
  private finishedAtMs = 0;

  constructor(
    private readonly options: DrainOptions,
    private readonly clock: DrainClock,
  ) {}

  /** Drains `targets`. Call once. */
  async run(targets: readonly T[]): Promise<DrainOutcome> {
    this.startedAtMs = this.clock.monotonicNowMs();
    for (const target of targets) this.open.add(target);
    const done = new Promise<void>((resolve) => {
      this.finish = resolve;
    });
    this.cancelGrace = this.clock.setTimer(() => this.graceEnded(), this.options.drainMs + this.options.graceMs);
    this.closeDue(drainSchedule(targets, this.options.drainMs, this.clock.random), 0);
    this.settleIfEmpty();
    await done;
    return { sessions: targets.length, closedAtGrace: this.closedAtGrace, durationMs: this.finishedAtMs - this.startedAtMs };
  }

  /** A target closed (by the drain, its client, or anything else). */
  closed(target: T): void {
    if (this.open.delete(target)) this.settleIfEmpty();
  }

  /** Closes the scheduled targets that are due, then waits for the next one. */
  private closeDue(schedule: readonly { readonly target: T; readonly closeAtMs: number }[], from: number): void {
    const elapsedMs = this.clock.monotonicNowMs() - this.startedAtMs;
    let next = from;
    for (let entry = schedule[next]; entry !== undefined && entry.closeAtMs <= elapsedMs; entry = schedule[++next]) {
      if (this.open.has(entry.target)) entry.target.closeWhenIdle();
    }
    const upcoming = schedule[next];
    if (upcoming === undefined || this.finish === undefined) return;
    this.cancelTimer = this.clock.setTimer(() => this.closeDue(schedule, next), upcoming.closeAtMs - elapsedMs);
  }

  private graceEnded(): void {
    const left = [...this.open];
    this.closedAtGrace = left.length;
    for (const target of left) target.closeNow();
    this.open.clear();
    this.settleIfEmpty();
  }

  private settleIfEmpty(): void {
    if (this.open.size > 0 || this.finish === undefined) return;
    const finish = this.finish;
    this.finish = undefined;
    this.finishedAtMs = this.clock.monotonicNowMs();
    this.cancelTimer();
    this.cancelGrace();
    finish();
  }
}
