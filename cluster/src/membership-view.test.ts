// Lease bookkeeping with an injected clock: a lease is alive for leaseMs after the watcher last saw it
// written, by the watcher's own clock; stale revisions never refresh it; a delete removes it at once.
import { describe, expect, it } from "vitest";
import type { WorkerLease } from "@cellwire/protocol";
import { MembershipView } from "./membership-view.ts";

const leaseMs = 3000;

function lease(workerId: string, overrides: Partial<WorkerLease> = {}): WorkerLease {
  return { workerId, cellId: "a", subject: `t.cell.a.worker.${workerId}`, startedAtMs: 1_700_000_000_000, leaseMs, ...overrides };
}

function liveIds(view: MembershipView, nowMs: number): string[] {
  return view
    .live(nowMs)
    .map((member) => member.lease.workerId)
    .sort();
}

describe("MembershipView", () => {
  it("reports a first put as a change and counts the worker live", () => {
    const view = new MembershipView();
    expect(view.applyPut(lease("a-1"), 1, 1000)).toBe(true);
    expect(liveIds(view, 1000)).toEqual(["a-1"]);
  });

  it("does not report a renewal of a live lease as a change", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    expect(view.applyPut(lease("a-1"), 2, 2000)).toBe(false);
    expect(liveIds(view, 2000)).toEqual(["a-1"]);
  });

  it("keeps a lease alive up to leaseMs after it was last seen, and no longer", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    expect(liveIds(view, 1000 + leaseMs)).toEqual(["a-1"]);
    expect(liveIds(view, 1000 + leaseMs + 1)).toEqual([]);
  });

  it("expires a lease nobody renewed, by the injected clock, and says so once", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    view.applyPut(lease("a-2"), 2, 2500);
    expect(view.expire(1000 + leaseMs)).toBe(false);
    expect(view.expire(1000 + leaseMs + 1)).toBe(true);
    expect(liveIds(view, 1000 + leaseMs + 1)).toEqual(["a-2"]);
    expect(view.expire(1000 + leaseMs + 2)).toBe(false);
  });

  it("extends a lease on each renewal", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 0);
    view.applyPut(lease("a-1"), 2, 2000);
    view.applyPut(lease("a-1"), 3, 4000);
    expect(view.expire(4000 + leaseMs)).toBe(false);
    expect(liveIds(view, 4000 + leaseMs)).toEqual(["a-1"]);
  });

  it("reports a put that revives an expired but not yet forgotten lease as a change", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 0);
    expect(view.applyPut(lease("a-1"), 2, leaseMs + 500)).toBe(true);
    expect(liveIds(view, leaseMs + 500)).toEqual(["a-1"]);
  });

  it("ignores a put with an older revision than the one it holds", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1", { startedAtMs: 2 }), 5, 1000);
    expect(view.applyPut(lease("a-1", { startedAtMs: 1 }), 4, 3500)).toBe(false);
    const [member] = view.live(1000);
    expect(member?.revision).toBe(5);
    expect(member?.lease.startedAtMs).toBe(2);
    // The stale put did not renew the lease: it still expires leaseMs after revision 5 was seen.
    expect(liveIds(view, 1000 + leaseMs + 1)).toEqual([]);
  });

  it("removes a deleted lease at once and reports whether it knew it", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1"), 1, 1000);
    view.applyPut(lease("a-2"), 2, 1000);
    expect(view.applyDelete("a-1")).toBe(true);
    expect(liveIds(view, 1000)).toEqual(["a-2"]);
    expect(view.applyDelete("a-1")).toBe(false);
    expect(view.applyDelete("a-9")).toBe(false);
  });

  it("uses each lease's own leaseMs", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1", { leaseMs: 1000 }), 1, 0);
    view.applyPut(lease("a-2", { leaseMs: 5000 }), 2, 0);
    expect(liveIds(view, 2000)).toEqual(["a-2"]);
  });

  it("keeps the latest lease content for the live set", () => {
    const view = new MembershipView();
    view.applyPut(lease("a-1", { subject: "t.cell.a.worker.a-1" }), 1, 0);
    view.applyPut(lease("a-1", { subject: "u.cell.a.worker.a-1" }), 2, 10);
    expect(view.live(10).map((member) => member.lease.subject)).toEqual(["u.cell.a.worker.a-1"]);
  });
});
