import { afterEach, describe, expect, it, vi } from "vitest";
import type { WorkerLease } from "@cellwire/protocol";
import { LeaseHolder, type LeaseBucket } from "./lease-holder.ts";
import { systemClock } from "./membership.ts";

const lease: WorkerLease = { workerId: "a-1", cellId: "a", subject: "cw.a.a-1", startedAtMs: 0, leaseMs: 1000 };
const logger = { info: () => undefined, warn: () => undefined };

/** A bucket whose puts land only when the test says so; `landed` records what reached it, in order. */
function heldBucket() {
  const landed: string[] = [];
  const pendingPuts: (() => void)[] = [];
  let holdPuts = false;
  const bucket: LeaseBucket = {
    put: (key) =>
      new Promise<number>((resolve) => {
        const land = (): void => {
          landed.push(`put ${key}`);
          resolve(landed.length);
        };
        if (holdPuts) pendingPuts.push(land);
        else land();
      }),
    delete: async (key) => void landed.push(`delete ${key}`),
  };
  return { bucket, landed, pendingPuts, hold: () => void (holdPuts = true), release: () => void (holdPuts = false) };
}

/** The fake timers' clock: Date.now() moves with vi.advanceTimersByTimeAsync. */
const fakeClock = { monotonicNowMs: () => Date.now(), wallNowMs: () => Date.now() };

/** The puts the bucket was asked for, each of which the test lands (or leaves unanswered) by hand. */
function manualBucket() {
  const puts: { readonly land: () => void }[] = [];
  const bucket: LeaseBucket = {
    put: () => new Promise<number>((resolve) => puts.push({ land: () => resolve(puts.length) })),
    delete: async () => 0 as never,
  };
  return { bucket, puts };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("LeaseHolder", () => {
  it("stops after a renewal in flight has landed, so the delete is the last write and it can start again", async () => {
    vi.useFakeTimers();
    const { bucket, landed, pendingPuts, hold, release } = heldBucket();
    const holder = new LeaseHolder(bucket, lease, 100, systemClock, logger);
    await holder.start();
    hold();
    await vi.advanceTimersByTimeAsync(100);
    expect(pendingPuts).toHaveLength(1);
    const stopped = holder.stop();
    await vi.advanceTimersByTimeAsync(0);
    pendingPuts.shift()?.();
    await stopped;
    expect(landed).toEqual(["put worker.a-1", "put worker.a-1", "delete worker.a-1"]);
    // Started again (a worker rejoining), it heartbeats again.
    release();
    await holder.start();
    await vi.advanceTimersByTimeAsync(250);
    expect(landed).toEqual(["put worker.a-1", "put worker.a-1", "delete worker.a-1", "put worker.a-1", "put worker.a-1", "put worker.a-1"]);
    expect(holder.holds()).toBe(true);
    await holder.stop();
  });

  it("stops waiting for a renewal that has not answered within half a lease: the next tick sends another, and its answer renews the lease", async () => {
    vi.useFakeTimers();
    const { bucket, puts } = manualBucket();
    const holder = new LeaseHolder(bucket, lease, 100, fakeClock, logger);
    const started = holder.start();
    puts[0]?.land();
    await started;
    // The renewal at 100 ms is lost (a request sent as NATS went away): it never answers.
    await vi.advanceTimersByTimeAsync(500);
    expect(puts).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(100);
    expect(puts).toHaveLength(3);
    puts[2]?.land();
    // Past the lease of the last renewal that answered before the lost one (at 0 ms), not of the new one.
    await vi.advanceTimersByTimeAsync(600);
    expect(holder.holds()).toBe(true);
    for (const put of puts) put.land();
    await holder.stop();
  });

  it("renews at once when the NATS connection is back, whatever renewal is still unanswered, and never keeps more than a few unanswered", async () => {
    vi.useFakeTimers();
    const { bucket, puts } = manualBucket();
    const holder = new LeaseHolder(bucket, lease, 100, fakeClock, logger);
    const started = holder.start();
    puts[0]?.land();
    await started;
    await vi.advanceTimersByTimeAsync(100);
    expect(puts).toHaveLength(2);
    holder.connectionRestored();
    expect(puts).toHaveLength(3);
    puts[2]?.land();
    await vi.advanceTimersByTimeAsync(0);
    // A reconnect storm: unanswered renewals pile up to a bound, not without end.
    for (let reconnect = 0; reconnect < 10; reconnect++) holder.connectionRestored();
    expect(puts.length).toBeLessThanOrEqual(3 + 4);
    expect(holder.holds()).toBe(true);
    for (const put of puts) put.land();
    await holder.stop();
  });
});

describe("LeaseHolder renewal outcomes", () => {
  it("tells each renewal's end, renewed or failed, for the worker's lease_renewals_total", async () => {
    const outcomes: string[] = [];
    let failNext = false;
    const bucket: LeaseBucket = {
      put: async () => {
        if (failNext) throw new Error("no responders");
        return 1;
      },
      delete: async () => undefined,
    };
    const holder = new LeaseHolder(bucket, lease, 60_000, systemClock, logger, (outcome) => outcomes.push(outcome));
    await holder.start();
    failNext = true;
    holder.connectionRestored();
    await vi.waitFor(() => expect(outcomes).toEqual(["renewed", "failed"]));
    await holder.stop();
  });
});
