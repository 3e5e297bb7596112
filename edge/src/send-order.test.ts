import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { SendOrder } from "./send-order.ts";

const conversation = "g-1";

describe("SendOrder", () => {
  it("names the send before each one while those are in flight, per conversation", () => {
    const order = new SendOrder({ entriesMax: 16, holdMs: 5000 });
    expect(order.begin(conversation, "c0", 0)).toBeUndefined();
    expect(order.begin(conversation, "c1", 0)).toBe("c0");
    expect(order.begin("g-2", "d0", 0)).toBeUndefined();
    expect(order.begin(conversation, "c2", 0)).toBe("c1");
    // c0 acked: c1 still in flight, so c3 follows c2.
    order.settle(conversation, "c0", "stored", 1);
    expect(order.begin(conversation, "c3", 1)).toBe("c2");
    // c3 acked: every send before it is stored too; the next send has nothing to follow.
    order.settle(conversation, "c3", "stored", 2);
    expect(order.size).toBe(1);
    expect(order.begin(conversation, "c4", 2)).toBeUndefined();
  });

  it("keeps a send that failed retryably ahead of later sends, and its retry follows the same predecessor", () => {
    const order = new SendOrder({ entriesMax: 16, holdMs: 5000 });
    order.begin(conversation, "c0", 0);
    order.begin(conversation, "c1", 0);
    order.begin(conversation, "c2", 0);
    // c0's cell was slow; c1 and c2 reached the cell first and were answered out_of_order.
    order.settle(conversation, "c0", "retryable", 100);
    order.settle(conversation, "c1", "retryable", 100);
    order.settle(conversation, "c2", "retryable", 100);
    // A new send made meanwhile still follows c2: it cannot overtake the retries.
    expect(order.begin(conversation, "c3", 200)).toBe("c2");
    // The retries, in order, name the same predecessors as before.
    expect(order.begin(conversation, "c0", 300)).toBeUndefined();
    expect(order.begin(conversation, "c1", 300)).toBe("c0");
    expect(order.begin(conversation, "c2", 300)).toBe("c1");
  });

  it("forgets a send that failed for good, and one not retried within holdMs: the next transmissions follow the one before", () => {
    const order = new SendOrder({ entriesMax: 16, holdMs: 5000 });
    order.begin(conversation, "c0", 0);
    order.begin(conversation, "c1", 0);
    order.begin(conversation, "c2", 0);
    order.settle(conversation, "c1", "final", 10);
    expect(order.begin(conversation, "c2", 20)).toBe("c0");
    order.settle(conversation, "c0", "retryable", 30);
    order.settle(conversation, "c2", "retryable", 30);
    expect(order.begin(conversation, "c3", 5029)).toBe("c2");
    order.settle(conversation, "c3", "retryable", 5029);
    // c0 and c2 were not retried within 5 s; c3's retry now has nothing before it.
    expect(order.begin(conversation, "c3", 5030)).toBeUndefined();
    expect(order.size).toBe(1);
  });

  it("holds at most entriesMax sends, forgetting the failed one that failed first", () => {
    const order = new SendOrder({ entriesMax: 2, holdMs: 5000 });
    order.begin(conversation, "c0", 0);
    order.settle(conversation, "c0", "retryable", 1);
    order.begin("g-2", "d0", 2);
    order.settle("g-2", "d0", "retryable", 3);
    expect(order.begin(conversation, "c1", 4)).toBeUndefined();
    expect(order.size).toBe(2);
  });

  it("never names a send that is stored, failed for good or forgotten, and stays within its bound (property)", () => {
    const step = fc.record({
      kind: fc.constantFrom("begin" as const, "stored" as const, "retryable" as const, "final" as const),
      conversation: fc.nat(1),
      id: fc.nat(5),
      advanceMs: fc.nat(3000),
    });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 80 }), (steps) => {
        const order = new SendOrder({ entriesMax: 6, holdMs: 5000 });
        let nowMs = 0;
        const gone = new Set<string>();
        for (const { kind, conversation: index, id, advanceMs } of steps) {
          nowMs += advanceMs;
          const conversationId = `g-${index}`;
          const clientMessageId = `c${id}`;
          if (kind === "begin") {
            gone.delete(`${conversationId}/${clientMessageId}`);
            const predecessor = order.begin(conversationId, clientMessageId, nowMs);
            expect(predecessor === undefined || !gone.has(`${conversationId}/${predecessor}`)).toBe(true);
            expect(predecessor).not.toBe(clientMessageId);
          } else {
            order.settle(conversationId, clientMessageId, kind, nowMs);
            if (kind !== "retryable") gone.add(`${conversationId}/${clientMessageId}`);
          }
          expect(order.size).toBeLessThanOrEqual(6);
        }
      }),
    );
  });
});
