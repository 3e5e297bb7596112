import { afterEach, describe, expect, it, vi } from "vitest";
import type { WorkerLease } from "@cellwire/protocol";
import { LeaseHolder, systemClock, type LeaseBucket } from "./membership.ts";

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
});
