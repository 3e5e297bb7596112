import { describe, expect, it } from "vitest";
import type { MembershipSnapshot } from "@cellwire/cluster";
import { WorkerOwnership } from "./worker-ownership.ts";

/** A ring that gives every key to `ownerWorkerId` (none when undefined), at `epoch`. */
function ringOf(
  ownerWorkerId: string | undefined,
  epoch: number,
): { snapshot: MembershipSnapshot; suspectStale: (reason: string) => void; readonly suspicions: string[] } {
  const snapshot = { ring: { ownerOf: () => ownerWorkerId }, ringEpoch: epoch } as unknown as MembershipSnapshot;
  const suspicions: string[] = [];
  return { snapshot, suspectStale: (reason) => void suspicions.push(reason), suspicions };
}

describe("WorkerOwnership", () => {
  it("owns a key its ring gives it before the lease is taken, and none on an empty ring", () => {
    expect(new WorkerOwnership("w1", ringOf("w1", 3)).owns("k")).toBe(true);
    expect(new WorkerOwnership("w1", ringOf("w2", 3)).owns("k")).toBe(false);
    expect(new WorkerOwnership("w1", ringOf(undefined, 3)).owns("k")).toBe(false);
  });

  it("owns nothing once the lease lapses or the database watchdog stops serving", () => {
    const ownership = new WorkerOwnership("w1", ringOf("w1", 3));
    let holds = true;
    let serving = true;
    ownership.leaseTakenBy({ holds: () => holds });
    ownership.databaseWatchedBy({
      get serving() {
        return serving;
      },
    });
    expect(ownership.owns("k")).toBe(true);
    holds = false;
    expect(ownership.leaseHeld()).toBe(false);
    expect(ownership.owns("k")).toBe(false);
    holds = true;
    serving = false;
    expect(ownership.owns("k")).toBe(false);
  });

  it("reads the ring afresh at each check, and keeps its object when its functions are handed on", () => {
    const ring = ringOf("w1", 3);
    const { owns, snapshot } = new WorkerOwnership("w1", ring);
    expect(snapshot().ringEpoch).toBe(3);
    ring.snapshot = ringOf("w2", 4).snapshot;
    expect(snapshot().ringEpoch).toBe(4);
    expect(owns("k")).toBe(false);
  });

  it("asks its ring's watch to catch up when a write was fenced, naming the key and the epoch", () => {
    const ring = ringOf("w1", 3);
    const { fenced } = new WorkerOwnership("w1", ring);
    fenced("conversation-1", 3);
    expect(ring.suspicions).toEqual(["a write of conversation-1 under epoch 3 was fenced"]);
  });
});
