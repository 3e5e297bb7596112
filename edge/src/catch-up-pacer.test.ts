// The catch-up pacer with an injected clock: a wave of catch-ups is spread over the window rather than
// started in one turn, at most readsInFlightMax read at once, and a session named by several waves reads
// once what they all asked for.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CatchUpPacer, type CatchUpScope, type CatchUpTarget } from "./catch-up-pacer.ts";
import { deferred, type Deferred } from "../test/edge-fakes.ts";
import { ManualClock, seededRandom } from "../test/manual-clock.ts";

/** A session stand-in: records when each catch-up started and with what; `hold` keeps them reading. */
class Target implements CatchUpTarget {
  readonly startedAtMs: number[] = [];
  readonly scopes: { everything: boolean; cellIds: string[] }[] = [];
  reading: Deferred<void> | undefined;
  constructor(
    private readonly clock: ManualClock,
    private readonly hold = false,
  ) {}

  catchUpNow(scope: CatchUpScope): Promise<void> {
    this.startedAtMs.push(this.clock.nowMs);
    this.scopes.push({ everything: scope.everything, cellIds: [...scope.cellIds].sort() });
    if (!this.hold) return Promise.resolve();
    this.reading = deferred<void>();
    return this.reading.promise;
  }
}

function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function pacerOf(spreadMs: number, readsInFlightMax: number, clock: ManualClock): { pacer: CatchUpPacer<Target>; warnings: string[] } {
  const warnings: string[] = [];
  return { pacer: new CatchUpPacer<Target>({ spreadMs, readsInFlightMax }, clock, (message) => warnings.push(message)), warnings };
}

describe("CatchUpPacer", () => {
  it("spreads a wave over the window: at most one catch-up in the turn that asks, then an even share of each slice", async () => {
    const clock = new ManualClock(seededRandom(11));
    const { pacer } = pacerOf(1000, 1000, clock);
    const targets = Array.from({ length: 100 }, () => new Target(clock));
    pacer.request(targets, "a");
    const started = (): number => targets.filter((target) => target.startedAtMs.length > 0).length;
    // Only the first of 100 moments (in [0, 10) ms) can fall at 0: the others wait.
    expect(started()).toBeLessThanOrEqual(1);
    expect(pacer.waitingCount).toBeGreaterThanOrEqual(99);
    for (let sliceEndMs = 100; sliceEndMs <= 1000; sliceEndMs += 100) {
      clock.advanceTo(sliceEndMs - 1);
      // Each tenth of the window started its tenth of the sessions, no more: no slice is a herd.
      expect(started()).toBe(sliceEndMs / 10);
    }
    await flush();
    expect(targets.every((target) => target.startedAtMs.length === 1)).toBe(true);
    expect(new Set(targets.map((target) => target.startedAtMs[0])).size).toBeGreaterThan(90);
    expect(pacer.waitingCount).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it("starts every catch-up of a wave once, within the window, whatever the count, window and seed", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 200 }),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer(),
        async (count, spreadMs, seed) => {
          const clock = new ManualClock(seededRandom(seed));
          const { pacer, warnings } = pacerOf(spreadMs, 1000, clock);
          const targets = Array.from({ length: count }, () => new Target(clock));
          pacer.request(targets, undefined);
          clock.advanceTo(spreadMs);
          await flush();
          for (const target of targets) {
            expect(target.startedAtMs).toHaveLength(1);
            expect(target.startedAtMs[0]).toBeLessThan(Math.max(1, spreadMs));
          }
          expect(warnings).toEqual([]);
        },
      ),
    );
  });

  it("reads at most readsInFlightMax catch-ups at once; the others start in turn as reads finish", async () => {
    const clock = new ManualClock();
    const { pacer } = pacerOf(0, 3, clock);
    const targets = Array.from({ length: 10 }, () => new Target(clock, true));
    pacer.request(targets, "a");
    await flush();
    expect(pacer.readingCount).toBe(3);
    expect(pacer.queuedCount).toBe(7);
    const started = (): Target[] => targets.filter((target) => target.startedAtMs.length > 0);
    expect(started()).toHaveLength(3);
    for (let finished = 1; finished <= 10; finished++) {
      const reading = started().find((target) => target.reading !== undefined);
      reading?.reading?.resolve();
      if (reading !== undefined) reading.reading = undefined;
      await flush();
      expect(pacer.readingCount).toBe(Math.min(3, 10 - finished));
      expect(started()).toHaveLength(Math.min(10, finished + 3));
    }
    expect(pacer.queuedCount).toBe(0);
  });

  it("a session named again while it waits keeps its moment and reads once what every wave asked; a closed one is dropped", async () => {
    const clock = new ManualClock(seededRandom(3));
    const { pacer } = pacerOf(1000, 10, clock);
    const [first, second, third] = [new Target(clock), new Target(clock), new Target(clock)];
    pacer.request([first, second, third], "a");
    pacer.request([first, second], "b");
    pacer.request([first], undefined);
    pacer.forget(third);
    expect(pacer.waitingCount).toBe(2);
    clock.advanceTo(1000);
    await flush();
    expect(first.scopes).toEqual([{ everything: true, cellIds: ["a", "b"] }]);
    expect(second.scopes).toEqual([{ everything: false, cellIds: ["a", "b"] }]);
    expect(third.scopes).toEqual([]);
    // Once read, a session is named afresh by the next wave.
    pacer.request([second], "c");
    clock.advanceTo(2000);
    await flush();
    expect(second.scopes).toEqual([
      { everything: false, cellIds: ["a", "b"] },
      { everything: false, cellIds: ["c"] },
    ]);
  });

  it("stop drops the moments still to come", () => {
    const clock = new ManualClock(seededRandom(5));
    const { pacer } = pacerOf(1000, 10, clock);
    const targets = Array.from({ length: 10 }, () => new Target(clock));
    pacer.request(targets, "a");
    pacer.stop();
    expect(clock.pendingTimers).toBe(0);
    clock.advanceTo(1000);
    expect(targets.filter((target) => target.startedAtMs.length > 0).length).toBeLessThanOrEqual(1);
    expect(pacer.waitingCount).toBe(0);
  });

  it("reports a catch-up that rejects instead of leaving it unhandled", async () => {
    const clock = new ManualClock();
    const { pacer, warnings } = pacerOf(0, 1, clock);
    const failing: CatchUpTarget = { catchUpNow: () => Promise.reject(new Error("broken session")) };
    const next = new Target(clock);
    new CatchUpPacer<CatchUpTarget>({ spreadMs: 0, readsInFlightMax: 1 }, clock, (message) => warnings.push(message)).request(
      [failing, next],
      "a",
    );
    await flush();
    expect(warnings).toEqual(["a catch-up failed: Error: broken session"]);
    expect(next.startedAtMs).toEqual([0]);
    expect(pacer.waitingCount).toBe(0);
  });
});
