import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { SequencedEvent } from "@cellwire/protocol";
import { HeldBytesBudget } from "./held-bytes.ts";
import { MailboxCursor } from "./mailbox-cursor.ts";

/** A budget that never refuses: these tests are about order and the count bound, not bytes. */
const unboundedHeldBytes = (): HeldBytesBudget => new HeldBytesBudget(Number.POSITIVE_INFINITY);

/** Mailbox events under protocol 2 are joined and receipt events; a receipt per seq keeps each one distinct. */
function event(seq: number): SequencedEvent {
  return { seq, event: { kind: "receipt", conversationId: "g-AAAAAAAAAAAAAAAAAAAAAA", userId: "alice", readSeq: seq, deliveredSeq: seq } };
}

function range(from: number, to: number): SequencedEvent[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, index) => event(from + index));
}

/** A mailbox of `head` events served in pages of `pageSize`, as the cell does. */
function pageOf(head: number, floor: number, afterSeq: number, limit: number, pageSize: number) {
  return { events: range(afterSeq + 1, Math.min(head, afterSeq + Math.min(limit, pageSize))), headSeq: head, floorSeq: floor };
}

describe("MailboxCursor", () => {
  it("starts live at the head when the device has no cursor", () => {
    const cursor = new MailboxCursor(undefined, 10, unboundedHeldBytes());
    expect(cursor.nextPageRequest(50)).toEqual({ afterSeq: 0, limit: 0 });
    expect(cursor.live(event(8), 1)).toBe("hold");
    expect(cursor.applyPage({ events: [], headSeq: 7, floorSeq: 0 })).toEqual({ kind: "events", events: [], done: true });
    expect(cursor.finishSync()).toEqual({ events: [event(8)], complete: true });
    expect(cursor.live(event(9), 1)).toBe("send");
    expect(cursor.live(event(9), 1)).toBe("drop");
  });

  it("replays the backlog in pages, then the held live events, each once", () => {
    const cursor = new MailboxCursor(2, 10, unboundedHeldBytes());
    expect(cursor.live(event(5), 1)).toBe("hold");
    expect(cursor.applyPage(pageOf(6, 0, 2, 2, 2))).toEqual({ kind: "events", events: [event(3), event(4)], done: false });
    expect(cursor.live(event(6), 1)).toBe("hold");
    expect(cursor.applyPage(pageOf(6, 0, 4, 2, 2))).toEqual({ kind: "events", events: [event(5), event(6)], done: true });
    expect(cursor.finishSync()).toEqual({ events: [], complete: true });
    expect(cursor.seq).toBe(6);
    expect(cursor.live(event(7), 1)).toBe("send");
  });

  it("asks for a resync when the events after its seq were cut", () => {
    const cursor = new MailboxCursor(3, 10, unboundedHeldBytes());
    expect(cursor.applyPage({ events: [], headSeq: 40, floorSeq: 10 })).toEqual({ kind: "resync", headSeq: 40, done: true });
    expect(cursor.seq).toBe(40);
  });

  it("answers a seq beyond the head with a resync at the head, and sends the live events after it", () => {
    // The device holds seq 12 of a mailbox whose head is 7 (a restored database): events 8..12 will be
    // appended again, and must reach the device rather than be dropped as seqs it already holds.
    const cursor = new MailboxCursor(12, 10, unboundedHeldBytes());
    expect(cursor.live(event(8), 1)).toBe("hold");
    expect(cursor.applyPage({ events: [], headSeq: 7, floorSeq: 0 })).toEqual({ kind: "resync", headSeq: 7, done: true });
    expect(cursor.seq).toBe(7);
    expect(cursor.finishSync()).toEqual({ events: [event(8)], complete: true });
    expect(cursor.live(event(9), 1)).toBe("send");
    expect(cursor.live(event(10), 1)).toBe("send");
    expect(cursor.seq).toBe(10);
  });

  it("answers another mailbox's incarnation with a resync at its floor and replays it, as for a new device", () => {
    const cursor = new MailboxCursor(3, 10, unboundedHeldBytes(), "incarnation-old");
    expect(cursor.live(event(6), 1)).toBe("hold");
    const page = { ...pageOf(5, 1, 3, 2, 2), incarnation: "incarnation-new" };
    expect(cursor.applyPage(page)).toEqual({ kind: "resync", headSeq: 1, done: false });
    expect(cursor.incarnation).toBe("incarnation-new");
    expect(cursor.nextPageRequest(2)).toEqual({ afterSeq: 1, limit: 2 });
    expect(cursor.applyPage({ ...pageOf(5, 1, 1, 2, 2), incarnation: "incarnation-new" })).toEqual({
      kind: "events",
      events: [event(2), event(3)],
      done: false,
    });
    expect(cursor.applyPage({ ...pageOf(5, 1, 3, 2, 2), incarnation: "incarnation-new" })).toEqual({
      kind: "events",
      events: [event(4), event(5)],
      done: true,
    });
    expect(cursor.finishSync()).toEqual({ events: [event(6)], complete: true });
    expect(cursor.live(event(7), 1)).toBe("send");
  });

  it("keeps its seq in the same incarnation, and in a mailbox whose page names none (a worker before decision 0021)", () => {
    const same = new MailboxCursor(3, 10, unboundedHeldBytes(), "incarnation-a");
    expect(same.applyPage({ ...pageOf(4, 0, 3, 50, 50), incarnation: "incarnation-a" })).toEqual({
      kind: "events",
      events: [event(4)],
      done: true,
    });
    const unnamed = new MailboxCursor(3, 10, unboundedHeldBytes(), "incarnation-a");
    expect(unnamed.applyPage(pageOf(4, 0, 3, 50, 50))).toEqual({ kind: "events", events: [event(4)], done: true });
    expect(unnamed.incarnation).toBeUndefined();
    // A device without one (an SDK before 0021) learns it from the first page.
    const older = new MailboxCursor(3, 10, unboundedHeldBytes());
    expect(older.applyPage({ ...pageOf(4, 0, 3, 50, 50), incarnation: "incarnation-a" }).kind).toBe("events");
    expect(older.incarnation).toBe("incarnation-a");
    // Once a page named it, a later page naming another one (the mailbox re-created) is another mailbox.
    older.finishSync();
    older.requestSync();
    expect(older.applyPage({ ...pageOf(2, 0, 4, 50, 50), incarnation: "incarnation-b" })).toEqual({
      kind: "resync",
      headSeq: 0,
      done: false,
    });
  });

  it("turns a live gap into a sync that fills it", () => {
    const cursor = new MailboxCursor(0, 10, unboundedHeldBytes());
    cursor.applyPage({ events: [], headSeq: 0, floorSeq: 0 });
    cursor.finishSync();
    expect(cursor.live(event(1), 1)).toBe("send");
    expect(cursor.live(event(3), 1)).toBe("start_sync");
    expect(cursor.live(event(4), 1)).toBe("hold");
    expect(cursor.applyPage(pageOf(4, 0, 1, 50, 50))).toEqual({ kind: "events", events: [event(2), event(3), event(4)], done: true });
    expect(cursor.finishSync()).toEqual({ events: [], complete: true });
  });

  it("reads the mailbox again when held events overflowed", () => {
    const cursor = new MailboxCursor(0, 1, unboundedHeldBytes());
    cursor.live(event(1), 1);
    cursor.live(event(2), 1);
    expect(cursor.applyPage({ events: [], headSeq: 0, floorSeq: 0 }).kind).toBe("events");
    const first = cursor.finishSync();
    expect(first.complete).toBe(false);
    expect(first.events).toEqual([event(1)]);
    cursor.applyPage(pageOf(2, 0, 1, 50, 50));
    expect(cursor.finishSync()).toEqual({ events: [], complete: true });
    expect(cursor.seq).toBe(2);
  });

  it("holds live events up to the session's byte budget, reads the rest from the mailbox and gives the bytes back", () => {
    const budget = new HeldBytesBudget(100);
    const cursor = new MailboxCursor(0, 1000, budget);
    expect(cursor.live(event(1), 60)).toBe("hold");
    expect(budget.heldBytes).toBe(60);
    // Under the count bound (1,000) but past the bytes: not held, read from the mailbox instead.
    expect(cursor.live(event(2), 60)).toBe("hold");
    expect(budget.heldBytes).toBe(60);
    cursor.applyPage({ events: [], headSeq: 2, floorSeq: 0 });
    const first = cursor.finishSync();
    expect(first).toEqual({ events: [event(1)], complete: false });
    expect(budget.heldBytes).toBe(0);
    cursor.applyPage(pageOf(2, 0, 1, 50, 50));
    expect(cursor.finishSync()).toEqual({ events: [], complete: true });
    expect(cursor.seq).toBe(2);
  });

  it("gives back the bytes of held events a page already brought", () => {
    const budget = new HeldBytesBudget(1000);
    const cursor = new MailboxCursor(0, 1000, budget);
    cursor.live(event(1), 100);
    cursor.live(event(2), 100);
    expect(budget.heldBytes).toBe(200);
    cursor.applyPage(pageOf(2, 0, 1, 50, 50));
    expect(cursor.finishSync()).toEqual({ events: [], complete: true });
    expect(budget.heldBytes).toBe(0);
  });

  it("reads again from its seq on request, but not while a sync is already due", () => {
    const cursor = new MailboxCursor(undefined, 10, unboundedHeldBytes());
    expect(cursor.requestSync()).toBe(false);
    cursor.applyPage({ events: [], headSeq: 2, floorSeq: 0 });
    cursor.finishSync();
    expect(cursor.requestSync()).toBe(true);
    expect(cursor.requestSync()).toBe(false);
    expect(cursor.live(event(3), 1)).toBe("hold");
    expect(cursor.nextPageRequest(50)).toEqual({ afterSeq: 2, limit: 50 });
    expect(cursor.applyPage(pageOf(3, 0, 2, 50, 50))).toEqual({ kind: "events", events: [event(3)], done: true });
    expect(cursor.finishSync()).toEqual({ events: [], complete: true });
  });

  it("delivers 1..head exactly once in order, however pages and live events interleave, within both bounds", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 0, max: 60 }),
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 0, max: 400 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 200 }),
        (resumeAfterSeq, extra, pageSize, heldMax, heldBytesMax, schedule) => {
          // The mailbox grows from `start` to `start + extra` while the session runs; each live event is
          // published once, after it is appended, and may arrive before or after the pages that hold it.
          const start = resumeAfterSeq + 5;
          let head = start;
          let published = start;
          const finalHead = start + extra;
          const budget = new HeldBytesBudget(heldBytesMax);
          const cursor = new MailboxCursor(resumeAfterSeq, heldMax, budget);
          // Events of different sizes, so the byte budget runs out at varying counts.
          const live = (seq: number): ReturnType<MailboxCursor["live"]> => {
            const decision = cursor.live(event(seq), 10 + ((seq * 37) % 90));
            expect(budget.heldBytes).toBeLessThanOrEqual(heldBytesMax);
            return decision;
          };
          const written: number[] = [];
          const write = (events: SequencedEvent[]): void => void written.push(...events.map((item) => item.seq));
          let step = 0;
          const nextAction = (): number => schedule[step++ % Math.max(1, schedule.length)] ?? 0;
          const runSync = (): void => {
            for (let guard = 0; guard < 1000; guard++) {
              for (;;) {
                if (nextAction() === 0 && head < finalHead) head++;
                const request = cursor.nextPageRequest(pageSize);
                const outcome = cursor.applyPage(pageOf(head, 0, request.afterSeq, request.limit, pageSize));
                if (outcome.kind === "resync") throw new Error("unexpected resync");
                write(outcome.events);
                if (nextAction() === 1 && published < head) live(++published);
                if (outcome.done) break;
              }
              const finished = cursor.finishSync();
              write(finished.events);
              if (finished.complete) return;
            }
            throw new Error("sync did not finish");
          };
          runSync();
          while (published < finalHead) {
            if (head <= published) head++;
            const decision = live(++published);
            if (decision === "send") written.push(published);
            if (decision === "start_sync") runSync();
          }
          while (published < head) {
            const decision = live(++published);
            if (decision === "send") written.push(published);
            if (decision === "start_sync") runSync();
          }
          const expected = range(resumeAfterSeq + 1, head).map((item) => item.seq);
          expect(written).toEqual(expected);
          // Every byte taken was given back once its event was written or dropped.
          expect(budget.heldBytes).toBe(0);
        },
      ),
    );
  });

  it("after a cursor it cannot honour (beyond the head, another incarnation), delivers the rest of the mailbox once in order, however live events interleave", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 1, max: 10 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 1, max: 7 }),
        fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 100 }),
        (start, beyond, otherMailbox, extra, pageSize, schedule) => {
          // The mailbox's head is `start` when the session opens; the device claims `start + beyond` of
          // this mailbox, or (otherMailbox) a seq of another one. Live events start right after `start`.
          const incarnation = "this";
          const claim = otherMailbox ? start : start + beyond;
          const cursor = new MailboxCursor(claim, 1000, unboundedHeldBytes(), otherMailbox ? "other" : incarnation);
          let head = start;
          let published = start;
          const finalHead = start + extra;
          const written: number[] = [];
          const resyncs: number[] = [];
          let step = 0;
          const nextAction = (): number => schedule[step++ % Math.max(1, schedule.length)] ?? 0;
          const publish = (): void => {
            const decision = cursor.live(event(++published), 1);
            if (decision === "send") written.push(published);
            if (decision === "start_sync") runSync();
          };
          const runSync = (): void => {
            for (let guard = 0; guard < 1000; guard++) {
              for (;;) {
                if (nextAction() === 0 && head < finalHead) head++;
                const request = cursor.nextPageRequest(pageSize);
                const outcome = cursor.applyPage({ ...pageOf(head, 0, request.afterSeq, request.limit, pageSize), incarnation });
                if (outcome.kind === "resync") resyncs.push(outcome.headSeq);
                else written.push(...outcome.events.map((item) => item.seq));
                // Live events during the read, at or below the device's claim included.
                if (nextAction() === 1 && published < head) {
                  const decision = cursor.live(event(++published), 1);
                  if (decision === "send") written.push(published);
                }
                if (outcome.done) break;
              }
              const finished = cursor.finishSync();
              written.push(...finished.events.map((item) => item.seq));
              if (finished.complete) return;
            }
            throw new Error("sync did not finish");
          };
          runSync();
          while (published < finalHead) {
            if (head <= published) head++;
            publish();
          }
          while (published < head) publish();
          // Another mailbox starts over from its floor (0); a claim beyond the head resyncs at the head the
          // first page had (at least `start`; none when the head had reached the claim by then). Then every
          // seq after it, once, in order.
          expect(resyncs.length).toBeLessThanOrEqual(1);
          if (otherMailbox) expect(resyncs).toEqual([0]);
          const from = resyncs[0] ?? claim;
          if (!otherMailbox) expect(from).toBeGreaterThanOrEqual(start);
          expect(written).toEqual(range(from + 1, head).map((item) => item.seq));
          expect(cursor.incarnation).toBe(incarnation);
        },
      ),
    );
  });
});
