// Catch-ups without a herd. After a cell's ring changes, every session homed there must read its mailbox
// again (a delivery published by a worker that died may never come), and after the edge's NATS connection
// comes back every session must read everything it follows. Done in the same turn, 10,000 sessions send
// 10,000 mailbox reads to one cell at the moment it is least able to take them (a worker just died or
// joined). Instead each session gets its own moment of a window (EDGE_CATCH_UP_SPREAD_MS, spread evenly
// in random order, spread-schedule.ts), and the reads that are due run at most
// EDGE_CATCH_UP_READS_IN_FLIGHT_MAX at once across the edge; the rest wait their turn in arrival order.
// While a session waits, its live events go out as before: one that leaves a gap starts a read at once,
// so nothing is lost, and the cursor holds live events during the read itself (docs/decisions/0024).
// Pure but for the injected clock and randomness: the core (edge-core.ts) owns the sessions.
import { ConcurrencyLimiter } from "@cellwire/cluster";
import { spreadSchedule } from "./spread-schedule.ts";

/** What a session reads again: everything it follows, or what lives in the cells whose ring changed. */
export type CatchUpScope = { readonly everything: boolean; readonly cellIds: ReadonlySet<string> };

/** A session as the pacer sees it. */
export interface CatchUpTarget {
  /**
   * Reads again what `scope` names, now. Resolves once its mailbox read is done (conversation log reads
   * are bounded by the edge's own limiter). MUST NOT reject: a failed read is the session's to report.
   */
  catchUpNow(scope: CatchUpScope): Promise<void>;
}

export type CatchUpOptions = {
  /** The window the catch-ups of one wave are spread over (EDGE_CATCH_UP_SPREAD_MS); 0 runs them at once. */
  readonly spreadMs: number;
  /** Catch-ups reading at once across the edge (EDGE_CATCH_UP_READS_IN_FLIGHT_MAX); the others queue. */
  readonly readsInFlightMax: number;
};

export type CatchUpClock = {
  readonly monotonicNowMs: () => number;
  /** Calls `callback` once after `delayMs`; the returned function cancels it. */
  readonly setTimer: (callback: () => void, delayMs: number) => () => void;
  /** Uniform in [0, 1), like Math.random. */
  readonly random: () => number;
};

/** A session's catch-up waiting for its moment; merged when another wave names the session again. */
type Owed = { everything: boolean; readonly cellIds: Set<string> };

type Wave<T> = {
  readonly startedAtMs: number;
  readonly schedule: readonly { readonly target: T; readonly atMs: number }[];
  next: number;
  cancel: () => void;
};

export class CatchUpPacer<T extends CatchUpTarget> {
  /** Sessions waiting for their moment, with what they owe. At most one entry per session. */
  private readonly owed = new Map<T, Owed>();
  /** Waves with moments still to come: each holds only sessions not already waiting, so all hold at most one entry per session. */
  private readonly waves = new Set<Wave<T>>();
  private readonly limiter: ConcurrencyLimiter;
  private queued = 0;

  constructor(
    private readonly options: CatchUpOptions,
    private readonly clock: CatchUpClock,
    private readonly warn: (message: string) => void,
  ) {
    if (!(options.spreadMs >= 0)) throw new RangeError("CatchUpPacer needs spreadMs >= 0");
    this.limiter = new ConcurrencyLimiter(options.readsInFlightMax);
  }

  /** Sessions waiting for their moment. */
  get waitingCount(): number {
    return this.owed.size;
  }

  /** Catch-ups whose moment came, waiting for a slot under readsInFlightMax. */
  get queuedCount(): number {
    return this.queued;
  }

  /** Catch-ups reading now. */
  get readingCount(): number {
    return this.limiter.active;
  }

  /**
   * `targets` read again what lives in `cellId` (its ring changed), or everything they follow when
   * `cellId` is undefined (the NATS connection came back). A target already waiting keeps its moment and
   * owes the union; the others get moments spread over the window from now.
   */
  request(targets: Iterable<T>, cellId: string | undefined): void {
    const fresh: T[] = [];
    for (const target of targets) {
      let owed = this.owed.get(target);
      if (owed === undefined) {
        owed = { everything: false, cellIds: new Set() };
        this.owed.set(target, owed);
        fresh.push(target);
      }
      if (cellId === undefined) owed.everything = true;
      else owed.cellIds.add(cellId);
    }
    if (fresh.length === 0) return;
    const wave: Wave<T> = {
      startedAtMs: this.clock.monotonicNowMs(),
      schedule: spreadSchedule(fresh, this.options.spreadMs, this.clock.random),
      next: 0,
      cancel: () => undefined,
    };
    this.waves.add(wave);
    this.startDue(wave);
  }

  /** The target closed: its moment, if still to come, is dropped. */
  forget(target: T): void {
    this.owed.delete(target);
  }

  /** The edge stops: no further catch-up starts (those reading finish on their own). */
  stop(): void {
    for (const wave of this.waves) wave.cancel();
    this.waves.clear();
    this.owed.clear();
  }

  /** Starts the catch-ups of the wave that are due, then waits for the next moment. */
  private startDue(wave: Wave<T>): void {
    const elapsedMs = this.clock.monotonicNowMs() - wave.startedAtMs;
    for (let entry = wave.schedule[wave.next]; entry !== undefined && entry.atMs <= elapsedMs; entry = wave.schedule[++wave.next]) {
      const owed = this.owed.get(entry.target);
      // Forgotten (closed) since it was scheduled.
      if (owed === undefined) continue;
      this.owed.delete(entry.target);
      this.start(entry.target, owed);
    }
    const upcoming = wave.schedule[wave.next];
    if (upcoming === undefined) {
      this.waves.delete(wave);
      return;
    }
    wave.cancel = this.clock.setTimer(() => this.startDue(wave), upcoming.atMs - elapsedMs);
  }

  private start(target: T, scope: CatchUpScope): void {
    this.queued++;
    this.limiter
      .run(() => {
        this.queued--;
        return target.catchUpNow(scope);
      })
      .catch((error: unknown) => this.warn(`a catch-up failed: ${String(error)}`));
  }
}
