// The watcher's decisions without NATS: the replay publishes one ring once caught up, with an epoch no
// lower than any revision read; afterwards only member changes publish; malformed leases are flagged;
// replayed leases are dated by the server's clock; an expired lease is handed out for deletion once at a
// time, and none while the watcher's connection is down (each counted from the reconnect); a lease term
// runs from the start of its last acknowledged renewal.
import { describe, expect, it } from "vitest";
import type { WorkerLease } from "@cellwire/protocol";
import {
  LeaseTerm,
  MembershipCore,
  leaseExpiryCheckIntervalMs,
  watchQuiet,
  watchStalled,
  type MembershipWatchEntry,
} from "./membership-core.ts";
import { encodeJson } from "./nats-json.ts";

const leaseMs = 3000;

function lease(workerId: string, cellId = "a"): WorkerLease {
  return { workerId, cellId, subject: `t.cell.${cellId}.worker.${workerId}`, startedAtMs: 1_700_000_000_000, leaseMs };
}

function put(workerId: string, revision: number, overrides: Partial<MembershipWatchEntry> = {}): MembershipWatchEntry {
  return {
    key: `worker.${workerId}`,
    operation: "PUT",
    value: encodeJson(lease(workerId)),
    revision,
    delta: 0,
    isUpdate: true,
    createdAtWallMs: 1_000_000,
    ...overrides,
  };
}

function deleted(workerId: string, revision: number, delta = 0): MembershipWatchEntry {
  return {
    key: `worker.${workerId}`,
    operation: "DEL",
    value: new Uint8Array(0),
    revision,
    delta,
    isUpdate: true,
    createdAtWallMs: 1_000_000,
  };
}

function members(core: MembershipCore): string {
  return core.snapshot.ring.members.join(",");
}

describe("MembershipCore", () => {
  it("publishes nothing until the replay has caught up, then one ring whose epoch is the last revision read", () => {
    const core = new MembershipCore("a");
    expect(core.applyEntry(put("a-2", 4, { delta: 2, isUpdate: false }), 0, 0)).toEqual({ malformed: false, change: "none" });
    expect(core.applyEntry(deleted("a-3", 6, 1), 0, 0).change).toBe("none");
    expect(core.snapshot.ringEpoch).toBe(0);
    expect(members(core)).toBe("");
    expect(core.replaying).toBe(true);
    // The delete marker of a-3 may hide that a-3 was a member at revision 4: the epoch counts it too.
    expect(core.applyEntry(put("a-1", 9, { delta: 0 }), 0, 0).change).toBe("replay-ended");
    expect(core.replaying).toBe(false);
    expect(members(core)).toBe("a-1,a-2");
    expect(core.snapshot.ringEpoch).toBe(9);
    expect(core.endReplay()).toBe(false);
  });

  it("after the replay, publishes joins and removals with their revision as the epoch, and not renewals", () => {
    const core = new MembershipCore("a");
    expect(core.endReplay()).toBe(true);
    expect(core.applyEntry(put("a-1", 1), 0, 0).change).toBe("published");
    expect(core.applyEntry(put("a-1", 2), 100, 100).change).toBe("none");
    expect(core.applyEntry(put("a-2", 3), 100, 100).change).toBe("published");
    expect(core.snapshot.ringEpoch).toBe(3);
    expect(core.applyEntry(deleted("a-1", 4), 100, 100).change).toBe("published");
    expect(members(core)).toBe("a-2");
    expect(core.snapshot.ringEpoch).toBe(4);
    expect(core.snapshot.subjects.get("a-2")).toBe("t.cell.a.worker.a-2");
    expect(core.snapshot.requestSubjects.get("a-2")).toEqual({
      edge: "t.cell.a.worker.a-2.edge",
      peer: "t.cell.a.worker.a-2.peer",
      admin: "t.cell.a.worker.a-2.admin",
    });
  });

  it("flags a lease of another cell, one under another worker's key, and one that does not decode", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    expect(core.applyEntry(put("a-1", 1, { value: encodeJson(lease("a-1", "b")) }), 0, 0)).toEqual({ malformed: true, change: "none" });
    expect(core.applyEntry(put("a-1", 2, { value: encodeJson(lease("a-9")) }), 0, 0)).toEqual({ malformed: true, change: "none" });
    expect(core.applyEntry(put("a-1", 3, { value: new TextEncoder().encode("{") }), 0, 0)).toEqual({ malformed: true, change: "none" });
    expect(members(core)).toBe("");
  });

  it("dates a replayed lease by the server's timestamp, so a lease last written long ago is expired at once", () => {
    const core = new MembershipCore("a");
    const nowMs = 50_000;
    const wallNowMs = 2_000_000;
    core.applyEntry(put("a-1", 1, { delta: 1, isUpdate: false, createdAtWallMs: wallNowMs - 10_000 }), nowMs, wallNowMs);
    core.applyEntry(put("a-2", 2, { delta: 0, isUpdate: true, createdAtWallMs: wallNowMs - 10_000 }), nowMs, wallNowMs);
    // a-2 came as the last entry of the replay, which the NATS client marks as an update: dated now.
    expect(core.beginExpiredDeletes(nowMs).map((expired) => expired.workerId)).toEqual(["a-1"]);
  });

  it("hands out an expired lease for deletion once until that delete settles", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    core.applyEntry(put("a-1", 7), 0, 0);
    expect(core.beginExpiredDeletes(leaseMs)).toEqual([]);
    expect(core.beginExpiredDeletes(leaseMs + 1)).toEqual([{ workerId: "a-1", revision: 7 }]);
    expect(core.beginExpiredDeletes(leaseMs + 2)).toEqual([]);
    core.endDelete("a-1");
    expect(core.beginExpiredDeletes(leaseMs + 3)).toEqual([{ workerId: "a-1", revision: 7 }]);
  });

  it("judges no lease expired while its connection is down, and counts every lease from the reconnect", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    core.applyEntry(put("a-1", 7), 0, 0);
    core.applyEntry(put("a-2", 8), 1000, 0);
    core.connectionLost();
    expect(core.beginExpiredDeletes(5 * leaseMs)).toEqual([]);
    const reconnectedAtMs = 5 * leaseMs + 100;
    core.connectionRestored(reconnectedAtMs);
    expect(core.beginExpiredDeletes(reconnectedAtMs + leaseMs)).toEqual([]);
    // a-2 renewed after the reconnect: its lease counts from the renewal, a-1's from the reconnect.
    core.applyEntry(put("a-2", 9), reconnectedAtMs + 500, 0);
    expect(core.beginExpiredDeletes(reconnectedAtMs + leaseMs + 1)).toEqual([{ workerId: "a-1", revision: 7 }]);
    expect(core.beginExpiredDeletes(reconnectedAtMs + 500 + leaseMs + 1)).toEqual([{ workerId: "a-2", revision: 9 }]);
  });

  it("never dates a lease earlier at a reconnect: one renewed later than it counts from its renewal", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    core.applyEntry(put("a-1", 7), 2000, 0);
    core.connectionLost();
    core.connectionRestored(1000);
    expect(core.beginExpiredDeletes(2000 + leaseMs)).toEqual([]);
    expect(core.beginExpiredDeletes(2000 + leaseMs + 1)).toEqual([{ workerId: "a-1", revision: 7 }]);
  });
});

describe("LeaseTerm", () => {
  it("holds from the start of the last acknowledged renewal for less than leaseMs, never before one", () => {
    const term = new LeaseTerm(leaseMs);
    expect(term.holds(0)).toBe(false);
    term.renewed(1000);
    expect(term.holds(1000 + leaseMs - 1)).toBe(true);
    expect(term.holds(1000 + leaseMs)).toBe(false);
  });
});

describe("MembershipCore catch-up after a resumed watch", () => {
  it("raises the epoch to every revision read and publishes once, when caught up, never a partial ring", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    core.applyEntry(put("a-1", 3), 0, 0);
    expect(core.snapshot.ringEpoch).toBe(3);
    core.beginCatchUp();
    // a-2 joined at some revision the bucket no longer holds; its latest renewal is at 9, a-1's at 11.
    expect(core.applyEntry(put("a-2", 9, { delta: 1 }), 10, 10)).toEqual({ malformed: false, change: "none" });
    expect(members(core)).toBe("a-1");
    expect(core.applyEntry(put("a-1", 11, { delta: 0 }), 10, 10)).toEqual({ malformed: false, change: "published" });
    expect(core.snapshot).toMatchObject({ ringEpoch: 11 });
    expect(members(core)).toBe("a-1,a-2");
    // Afterwards renewals are updates again: they leave the epoch alone.
    expect(core.applyEntry(put("a-2", 12), 20, 20)).toEqual({ malformed: false, change: "none" });
    expect(core.snapshot.ringEpoch).toBe(11);
    expect(core.replaying).toBe(false);
  });

  it("dates a catch-up entry handed over as an update as seen now, and publishes nothing when the epoch did not move", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    core.applyEntry(put("a-1", 3), 0, 0);
    core.beginCatchUp();
    core.applyEntry(put("a-1", 4, { createdAtWallMs: 0 }), 100, 50_000);
    expect(core.beginExpiredDeletes(100 + leaseMs)).toEqual([]);
    core.beginCatchUp();
    expect(core.endCatchUp()).toBe(false);
  });

  it("leaves the replay to itself: a catch-up begun during the replay is no catch-up", () => {
    const core = new MembershipCore("a");
    core.beginCatchUp();
    expect(core.endCatchUp()).toBe(false);
    expect(core.applyEntry(put("a-1", 5, { delta: 0, isUpdate: false }), 0, 0)).toEqual({ malformed: false, change: "replay-ended" });
  });
});

describe("watchStalled", () => {
  const progress = {
    monotonicNowMs: 10_000,
    lastEntryAtMs: 10_000 - leaseMs - 1,
    quietLimitMs: leaseMs,
    lastAppliedRevision: 41,
    bucketLastRevision: 42,
  };

  it("calls a watch stalled when it was quiet for longer than a lease while the bucket moved past it", () => {
    expect(watchStalled(progress)).toBe(true);
  });

  it("gives a watch the whole lease, and a quiet bucket forever", () => {
    expect(watchStalled({ ...progress, lastEntryAtMs: 10_000 - leaseMs })).toBe(false);
    expect(watchStalled({ ...progress, bucketLastRevision: 41 })).toBe(false);
    expect(watchStalled({ ...progress, lastEntryAtMs: 0, bucketLastRevision: 0, lastAppliedRevision: 0 })).toBe(false);
  });

  it("is asked of the bucket only for a quiet watch: watchQuiet is its first half", () => {
    expect(watchQuiet(progress)).toBe(true);
    expect(watchQuiet({ ...progress, lastEntryAtMs: 10_000 - leaseMs })).toBe(false);
  });
});

describe("MembershipCore.longestLeaseMs", () => {
  it("is the longest lease among the members, and undefined without any", () => {
    const core = new MembershipCore("a");
    core.endReplay();
    expect(core.longestLeaseMs).toBeUndefined();
    core.applyEntry(put("a-1", 1, { value: encodeJson({ ...lease("a-1"), leaseMs: 5000 }) }), 0, 0);
    core.applyEntry(put("a-2", 2), 0, 0);
    expect(core.longestLeaseMs).toBe(5000);
  });
});

describe("leaseExpiryCheckIntervalMs", () => {
  it("is a quarter of the lease, and never under 50 ms", () => {
    expect(leaseExpiryCheckIntervalMs(3000)).toBe(750);
    expect(leaseExpiryCheckIntervalMs(1001)).toBe(250);
    expect(leaseExpiryCheckIntervalMs(100)).toBe(50);
  });
});
