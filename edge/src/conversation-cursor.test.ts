// ConversationCursor, pure: examples of each way a cursor starts (a device's cursor, the member's join
// point, a live message), gaps, overflow of held messages and catch-up requests, then a property over
// random interleavings of page reads and live deliveries (lost and duplicated ones included) against a
// model log. fast-check prints the seed and the shrunk schedule on failure.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { Message } from "@cellwire/protocol";
import { ConversationCursor, type ConversationPage } from "./conversation-cursor.ts";
import { HeldBytesBudget } from "./held-bytes.ts";

/** A budget that never refuses: these tests are about order and the count bound, not bytes. */
const unboundedHeldBytes = (): HeldBytesBudget => new HeldBytesBudget(Number.POSITIVE_INFINITY);

const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";

function message(seq: number): Message {
  return {
    conversationId,
    messageId: `m${seq}`,
    seq,
    senderUserId: "alice",
    senderDeviceId: "phone",
    clientMessageId: `c${seq}`,
    body: `body ${seq}`,
    sentAtMs: seq,
  };
}

function range(from: number, to: number): Message[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, index) => message(from + index));
}

/**
 * A page of a log of `head` messages as the cell serves it: the messages after `afterSeq` (the join point
 * when null), at most `limit` and at most `pageSize` of them.
 */
function pageOf(head: number, joinSeq: number, afterSeq: number | null, limit: number, pageSize = limit): ConversationPage {
  const from = afterSeq ?? joinSeq;
  return { afterSeq: from, messages: range(from + 1, Math.min(head, from + Math.min(limit, pageSize))), headSeq: head };
}

describe("ConversationCursor", () => {
  it("starts from a device's cursor: reads the log after it, then the live messages held meanwhile, each once", () => {
    const cursor = ConversationCursor.reading(2, 10, unboundedHeldBytes());
    expect(cursor.isSyncing).toBe(true);
    expect(cursor.seq).toBe(2);
    expect(cursor.nextPageRequest(2)).toEqual({ afterSeq: 2, limit: 2 });
    // Committed and published while the first page is read.
    expect(cursor.live(message(6), 1)).toBe("hold");
    expect(cursor.applyPage(pageOf(6, 0, 2, 2))).toEqual({ messages: [message(3), message(4)], done: false });
    expect(cursor.nextPageRequest(2)).toEqual({ afterSeq: 4, limit: 2 });
    expect(cursor.live(message(7), 1)).toBe("hold");
    expect(cursor.applyPage(pageOf(6, 0, 4, 2))).toEqual({ messages: [message(5), message(6)], done: true });
    expect(cursor.finishSync()).toEqual({ messages: [message(7)], complete: true });
    expect(cursor.isSyncing).toBe(false);
    expect(cursor.seq).toBe(7);
    expect(cursor.live(message(7), 1)).toBe("drop");
    expect(cursor.live(message(8), 1)).toBe("send");
    expect(cursor.seq).toBe(8);
  });

  it("starts at the member's join point when the device holds nothing: asks with afterSeq null and takes the page's start", () => {
    const cursor = ConversationCursor.reading(undefined, 10, unboundedHeldBytes());
    expect(cursor.seq).toBeUndefined();
    expect(cursor.nextPageRequest(50)).toEqual({ afterSeq: null, limit: 50 });
    // Before the join point is known every live message waits, whatever its seq.
    expect(cursor.live(message(12), 1)).toBe("hold");
    expect(cursor.live(message(12), 1)).toBe("hold");
    // The member joined when the log's head was 10.
    expect(cursor.applyPage(pageOf(11, 10, null, 50))).toEqual({ messages: [message(11)], done: true });
    expect(cursor.seq).toBe(11);
    expect(cursor.finishSync()).toEqual({ messages: [message(12)], complete: true });
    expect(cursor.live(message(13), 1)).toBe("send");
  });

  it("writes nothing from before the join point, even held live messages", () => {
    const cursor = ConversationCursor.reading(undefined, 10, unboundedHeldBytes());
    expect(cursor.live(message(3), 1)).toBe("hold");
    expect(cursor.applyPage(pageOf(5, 5, null, 50))).toEqual({ messages: [], done: true });
    expect(cursor.seq).toBe(5);
    expect(cursor.finishSync()).toEqual({ messages: [], complete: true });
    expect(cursor.live(message(6), 1)).toBe("send");
  });

  it("starts live at a message in a live session: it and what follows are sent, nothing is read", () => {
    const cursor = ConversationCursor.liveFrom(message(40), 10, unboundedHeldBytes());
    expect(cursor.isSyncing).toBe(false);
    expect(cursor.seq).toBe(39);
    expect(cursor.live(message(40), 1)).toBe("send");
    expect(cursor.live(message(41), 1)).toBe("send");
    expect(cursor.live(message(40), 1)).toBe("drop");
    expect(cursor.seq).toBe(41);
  });

  it("turns a live gap into a read from the cursor that fills it, then writes the held messages after it", () => {
    const cursor = ConversationCursor.liveFrom(message(1), 10, unboundedHeldBytes());
    expect(cursor.live(message(1), 1)).toBe("send");
    expect(cursor.live(message(4), 1)).toBe("start_sync");
    expect(cursor.isSyncing).toBe(true);
    expect(cursor.live(message(5), 1)).toBe("hold");
    expect(cursor.nextPageRequest(50)).toEqual({ afterSeq: 1, limit: 50 });
    // The cell read the page when the log ended at 3: 4 and 5 come from the held messages.
    expect(cursor.applyPage(pageOf(3, 0, 1, 50))).toEqual({ messages: [message(2), message(3)], done: true });
    expect(cursor.finishSync()).toEqual({ messages: [message(4), message(5)], complete: true });
    expect(cursor.live(message(6), 1)).toBe("send");
  });

  it("skips what a page repeats, stops at a hole in a page, and reports no progress as done", () => {
    const cursor = ConversationCursor.reading(3, 10, unboundedHeldBytes());
    // A page that overlaps the cursor (1..5) and then jumps (7): only 4 and 5 are new and consecutive.
    const page: ConversationPage = { afterSeq: 0, messages: [...range(1, 5), message(7)], headSeq: 7 };
    expect(cursor.applyPage(page)).toEqual({ messages: [message(4), message(5)], done: false });
    expect(cursor.seq).toBe(5);
    // Nothing new: done, so a read never loops on a page that cannot move it.
    expect(cursor.applyPage({ afterSeq: 5, messages: [message(7)], headSeq: 7 })).toEqual({ messages: [], done: true });
    expect(cursor.seq).toBe(5);
  });

  it("reads the log again when a gap remains among the held messages after the pages", () => {
    const cursor = ConversationCursor.reading(0, 10, unboundedHeldBytes());
    expect(cursor.live(message(3), 1)).toBe("hold");
    // A page read before 1..3 were committed.
    expect(cursor.applyPage(pageOf(0, 0, 0, 50))).toEqual({ messages: [], done: true });
    expect(cursor.finishSync()).toEqual({ messages: [], complete: false });
    expect(cursor.isSyncing).toBe(true);
    expect(cursor.applyPage(pageOf(3, 0, 0, 50))).toEqual({ messages: range(1, 3), done: true });
    expect(cursor.finishSync()).toEqual({ messages: [], complete: true });
    expect(cursor.isSyncing).toBe(false);
  });

  it("keeps at most heldMessagesMax live messages while reading; past it the log is read again", () => {
    const cursor = ConversationCursor.reading(0, 2, unboundedHeldBytes());
    for (const seq of [1, 2, 3, 4]) expect(cursor.live(message(seq), 1)).toBe("hold");
    // A page that saw nothing yet: 1 and 2 were held, 3 and 4 were not kept.
    cursor.applyPage(pageOf(0, 0, 0, 50));
    const first = cursor.finishSync();
    expect(first).toEqual({ messages: [message(1), message(2)], complete: false });
    expect(cursor.isSyncing).toBe(true);
    expect(cursor.nextPageRequest(50)).toEqual({ afterSeq: 2, limit: 50 });
    expect(cursor.applyPage(pageOf(4, 0, 2, 50))).toEqual({ messages: [message(3), message(4)], done: true });
    expect(cursor.finishSync()).toEqual({ messages: [], complete: true });
    expect(cursor.live(message(5), 1)).toBe("send");
  });

  it("shares the session's byte budget with the other cursors: past it messages are read from the log, and a forgotten cursor gives its bytes back", () => {
    const budget = new HeldBytesBudget(100);
    const first = ConversationCursor.reading(0, 1000, budget);
    const second = ConversationCursor.reading(0, 1000, budget);
    expect(first.live(message(1), 70)).toBe("hold");
    // The other cursor finds the budget spent: its message is not held (under the count bound).
    expect(second.live(message(1), 70)).toBe("hold");
    expect(budget.heldBytes).toBe(70);
    second.applyPage(pageOf(0, 0, 0, 50));
    expect(second.finishSync()).toEqual({ messages: [], complete: false });
    expect(second.applyPage(pageOf(1, 0, 0, 50))).toEqual({ messages: [message(1)], done: true });
    expect(second.finishSync()).toEqual({ messages: [], complete: true });
    first.release();
    expect(budget.heldBytes).toBe(0);
    expect(second.live(message(2), 1)).toBe("send");
  });

  it("reads again on request from its seq, but not while a read is already due", () => {
    const cursor = ConversationCursor.reading(4, 10, unboundedHeldBytes());
    expect(cursor.requestSync()).toBe(false);
    cursor.applyPage(pageOf(4, 0, 4, 50));
    cursor.finishSync();
    expect(cursor.requestSync()).toBe(true);
    expect(cursor.requestSync()).toBe(false);
    expect(cursor.live(message(6), 1)).toBe("hold");
    expect(cursor.nextPageRequest(50)).toEqual({ afterSeq: 4, limit: 50 });
    expect(cursor.applyPage(pageOf(6, 0, 4, 50))).toEqual({ messages: [message(5), message(6)], done: true });
    expect(cursor.finishSync()).toEqual({ messages: [], complete: true });
    expect(cursor.requestSync()).toBe(true);
  });

  type Start =
    | { readonly kind: "cursor"; readonly afterSeq: number }
    | { readonly kind: "join"; readonly joinSeq: number }
    | { readonly kind: "live" };

  /**
   * One action of the world per entry: 0 commits a message (and queues its live delivery), 1 delivers the
   * next queued delivery, 2 loses it, 3 delivers again a message already delivered (a duplicate), 4 moves
   * the read in progress on (the cell reads the page now), 5 hands the read page to the cursor. The
   * second number picks which delivered message a duplicate repeats.
   */
  const action = fc.tuple(fc.integer({ min: 0, max: 5 }), fc.nat());

  it("delivers the log from its start point to the head exactly once and in order, however pages and live messages interleave, within both bounds", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.record({ kind: fc.constant("cursor" as const), afterSeq: fc.integer({ min: 0, max: 20 }) }),
          fc.record({ kind: fc.constant("join" as const), joinSeq: fc.integer({ min: 0, max: 20 }) }),
          fc.constant({ kind: "live" as const }),
        ),
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 400 }),
        fc.array(action, { maxLength: 300 }),
        (start: Start, backlog, growth, pageSize, heldMax, heldBytesMax, schedule) => {
          const budget = new HeldBytesBudget(heldBytesMax);
          // The log holds `head` messages; the session starts with `initialHead` of them committed.
          const startSeq = start.kind === "cursor" ? start.afterSeq : start.kind === "join" ? start.joinSeq : 0;
          const joinSeq = start.kind === "join" ? start.joinSeq : 0;
          const initialHead = startSeq + backlog;
          const finalHead = initialHead + growth + (start.kind === "live" ? 1 : 0);
          let head = initialHead;
          // Live deliveries in flight, in publish order (the owner publishes in seq order after each commit).
          const queued: number[] = [];
          const delivered: number[] = [];
          const written: number[] = [];
          let cursor =
            start.kind === "live"
              ? undefined
              : ConversationCursor.reading(start.kind === "cursor" ? start.afterSeq : undefined, heldMax, budget);
          // What the device holds before anything is written: undefined until the live start is known.
          let expectedFrom: number | undefined = start.kind === "live" ? undefined : startSeq + 1;
          // The read in progress, as Session.readConversation runs it: a request, the cell reading the
          // page (at some moment while live messages keep coming), then the page applied.
          let read: { readonly afterSeq: number | null; readonly limit: number; page?: ConversationPage } | undefined;
          let readsStarted = 0;

          const write = (messages: readonly Message[]): void => {
            for (const item of messages) {
              const previous = written.at(-1) ?? (expectedFrom ?? item.seq) - 1;
              if (item.seq !== previous + 1) throw new Error(`wrote ${item.seq} after ${previous}; written ${written.join(",")}`);
              written.push(item.seq);
            }
          };
          const startRead = (): void => {
            if (cursor === undefined || read !== undefined || !cursor.isSyncing) return;
            readsStarted++;
            if (readsStarted > 10_000) throw new Error("reads do not settle");
            read = cursor.nextPageRequest(pageSize);
            if (read.afterSeq === null && cursor.seq !== undefined) throw new Error("asked for the join point with a known seq");
          };
          const readPage = (): void => {
            if (read === undefined || read.page !== undefined) return;
            read.page = pageOf(head, joinSeq, read.afterSeq, read.limit, pageSize);
          };
          const applyRead = (): void => {
            if (cursor === undefined || read?.page === undefined) return;
            const outcome = cursor.applyPage(read.page);
            write(outcome.messages);
            read = undefined;
            if (!outcome.done) return startRead();
            const finished = cursor.finishSync();
            write(finished.messages);
            // Incomplete: the session reads another round from the new seq.
            if (!finished.complete) startRead();
          };
          const onLive = (seq: number): void => {
            delivered.push(seq);
            if (cursor === undefined) {
              cursor = ConversationCursor.liveFrom(message(seq), heldMax, budget);
              expectedFrom = seq;
            }
            // Messages of different sizes, so the byte budget runs out at varying counts.
            const decision = cursor.live(message(seq), 10 + ((seq * 37) % 90));
            expect(budget.heldBytes).toBeLessThanOrEqual(heldBytesMax);
            if (decision === "send") write([message(seq)]);
            else if (decision === "start_sync" || decision === "hold") startRead();
          };
          const commit = (): void => {
            if (head >= finalHead) return;
            head++;
            queued.push(head);
          };

          startRead();
          for (const [step, pick] of schedule) {
            if (step === 0) commit();
            else if (step === 1 && queued.length > 0) onLive(queued.shift() ?? 0);
            else if (step === 2) queued.shift();
            else if (step === 3 && delivered.length > 0) onLive(delivered[pick % delivered.length] ?? 0);
            else if (step === 4) readPage();
            else if (step === 5) applyRead();
          }
          // Healing: every remaining message is committed and delivered, the read in progress finishes, and
          // the session catches up once (as a change of the cell's workers or a NATS reconnect makes it),
          // since a lost last message shows no gap.
          while (head < finalHead) commit();
          while (queued.length > 0) onLive(queued.shift() ?? 0);
          for (let guard = 0; read !== undefined; guard++) {
            if (guard > 10_000) throw new Error("the read does not finish");
            readPage();
            applyRead();
          }
          // Liveness without help: once no read is running, every message delivered live is on the device.
          expect(cursor?.isSyncing ?? false).toBe(false);
          const deliveredMax = Math.max(0, ...delivered);
          if (deliveredMax > 0) expect(written.at(-1) ?? 0).toBeGreaterThanOrEqual(deliveredMax);
          if (cursor?.requestSync() === true) startRead();
          for (let guard = 0; read !== undefined; guard++) {
            if (guard > 10_000) throw new Error("the catch-up read does not finish");
            readPage();
            applyRead();
          }
          expect(cursor?.isSyncing ?? false).toBe(false);
          const from = expectedFrom ?? finalHead + 1;
          expect(written).toEqual(range(from, finalHead).map((item) => item.seq));
          // Every byte taken was given back once its message was written or dropped.
          expect(budget.heldBytes).toBe(0);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
