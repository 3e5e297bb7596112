// Lease bookkeeping with an injected clock: a lease expires leaseMs after the watcher last saw it written,
// by the watcher's own clock, but its member stays in the ring until the delete of its key is seen; stale
// revisions never refresh it; the epoch moves only when the member set changes.
import { describe, expect, it } from "vitest";
import type { WorkerLease } from "@cellwire/protocol";
import { MembershipView } from "./membership-view.ts";

const leaseMs = 3000;

function lease(workerId: string, overrides: Partial<WorkerLease> = {}): WorkerLease {
  return { workerId, cellId: "a", subject: `t.cell.a.worker.${workerId}`, startedAtMs: 1_700_000_000_000, leaseMs, ...overrides };
}

function memberIds(view: MembershipView): string[] {
  return view
    .members()
    .map((member) => member.lease.workerId)
    .sort();
}

function expiredIds(view: MembershipView, nowMs: number): string[] {
  return view
    .expired(nowMs)
    .map((member) => member.workerId)
    .sort();
}

describe("MembershipView", () => {
  it("reports a first put as a change, counts the worker a member and takes its revision as the epoch", () => {
    const view = new MembershipView();
    expect(view.epoch).toBe(0);
    expect(view.applyPut(lease("a-1"), 7, 1000)).toBe(true);
    expect(memberIds(view)).toEqual(["a-1"]);
    expect(view.epoch).toBe(7);
  });

  it("does not report a renewal as a change, nor move the epoch", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    view.applyPut(lease("a-2"), 2, 1000);
    expect(view.applyPut(lease("a-1"), 3, 2000)).toBe(false);
    expect(view.applyPut(lease("a-2"), 4, 2000)).toBe(false);
    expect(view.applyPut(lease("a-1"), 5, 3000)).toBe(false);
    expect(memberIds(view)).toEqual(["a-1", "a-2"]);
    expect(view.epoch).toBe(2);
  });

  it("moves the epoch to the revision of each join and each removal", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 0);
    view.applyPut(lease("a-1"), 2, 100);
    expect(view.applyPut(lease("a-2"), 3, 200)).toBe(true);
    expect(view.epoch).toBe(3);
    view.applyPut(lease("a-2"), 4, 300);
    expect(view.applyDelete("a-1", 5)).toBe(true);
    expect(view.epoch).toBe(5);
    expect(memberIds(view)).toEqual(["a-2"]);
    // The same worker coming back is a join again, at its new revision.
    expect(view.applyPut(lease("a-1"), 6, 400)).toBe(true);
    expect(view.epoch).toBe(6);
  });

  it("reports a lease as expired only once leaseMs passed since it was last seen, and keeps it a member", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    view.applyPut(lease("a-2"), 2, 2500);
    expect(expiredIds(view, 1000 + leaseMs)).toEqual([]);
    expect(view.expired(1000 + leaseMs + 1)).toEqual([{ workerId: "a-1", revision: 1 }]);
    // Expiry is a local judgement: the ring and its epoch change only when the delete is seen.
    expect(memberIds(view)).toEqual(["a-1", "a-2"]);
    expect(view.epoch).toBe(2);
    expect(view.applyDelete("a-1", 3)).toBe(true);
    expect(expiredIds(view, 1000 + leaseMs + 1)).toEqual([]);
    expect(view.epoch).toBe(3);
  });

  it("extends a lease on each renewal, and offers the latest revision for the delete", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 0);
    view.applyPut(lease("a-1"), 2, 2000);
    view.applyPut(lease("a-1"), 3, 4000);
    expect(expiredIds(view, 4000 + leaseMs)).toEqual([]);
    expect(view.expired(4000 + leaseMs + 1)).toEqual([{ workerId: "a-1", revision: 3 }]);
  });

  it("does not count a renewal that comes after expiry but before any delete as a change", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 0);
    expect(expiredIds(view, leaseMs + 500)).toEqual(["a-1"]);
    // The holder won the race against the watchers' delete: it never left the ring.
    expect(view.applyPut(lease("a-1"), 2, leaseMs + 500)).toBe(false);
    expect(expiredIds(view, leaseMs + 500)).toEqual([]);
    expect(view.epoch).toBe(1);
  });

  it("ignores a put with an older or equal revision than the one it holds", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1", { startedAtMs: 2 }), 5, 1000);
    expect(view.applyPut(lease("a-1", { startedAtMs: 1 }), 4, 3500)).toBe(false);
    expect(view.applyPut(lease("a-1", { startedAtMs: 1 }), 5, 3500)).toBe(false);
    const [member] = view.members();
    expect(member?.revision).toBe(5);
    expect(member?.lease.startedAtMs).toBe(2);
    // The stale puts did not renew the lease: it still expires leaseMs after revision 5 was seen.
    expect(expiredIds(view, 1000 + leaseMs + 1)).toEqual(["a-1"]);
  });

  it("removes a deleted lease at once and reports whether it knew it; a delete older than the lease is ignored", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    view.applyPut(lease("a-2"), 3, 1000);
    expect(view.applyDelete("a-2", 2)).toBe(false);
    expect(view.applyDelete("a-1", 4)).toBe(true);
    expect(memberIds(view)).toEqual(["a-2"]);
    expect(view.applyDelete("a-1", 5)).toBe(false);
    expect(view.applyDelete("a-9", 6)).toBe(false);
    expect(view.epoch).toBe(4);
  });

  it("raises the epoch for replayed entries, never lowers it", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 3, 0);
    view.raiseEpoch(9);
    expect(view.epoch).toBe(9);
    view.raiseEpoch(4);
    expect(view.epoch).toBe(9);
    // A join at a revision below the epoch (replayed out of order) does not lower it either.
    view.applyPut(lease("a-2"), 8, 0);
    expect(view.epoch).toBe(9);
  });

  it("uses each lease's own leaseMs", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1", { leaseMs: 1000 }), 1, 0);
    view.applyPut(lease("a-2", { leaseMs: 5000 }), 2, 0);
    expect(expiredIds(view, 2000)).toEqual(["a-1"]);
  });

  it("keeps the latest lease content for the members", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1", { subject: "t.cell.a.worker.a-1" }), 1, 0);
    view.applyPut(lease("a-1", { subject: "u.cell.a.worker.a-1" }), 2, 10);
    expect(view.members().map((member) => member.lease.subject)).toEqual(["u.cell.a.worker.a-1"]);
  });
});
