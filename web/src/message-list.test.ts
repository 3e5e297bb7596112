import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MessageList, formatMessageLine } from "./message-list.ts";

describe("MessageList", () => {
  it("appends live messages, places history before them, and ignores a seq already shown", () => {
    const list = new MessageList();
    expect(list.insert(5)).toEqual({ index: 0, evictedCount: 0 });
    expect(list.insert(6)).toEqual({ index: 1, evictedCount: 0 });
    expect(list.insert(2)).toEqual({ index: 0, evictedCount: 0 });
    expect(list.insert(5)).toBeNull();
    expect(list.size).toBe(3);
    expect(list.has(2)).toBe(true);
    expect(list.has(3)).toBe(false);
  });

  it("drops the oldest entries beyond its capacity", () => {
    const list = new MessageList(2);
    list.insert(1);
    list.insert(2);
    expect(list.insert(3)).toEqual({ index: 2, evictedCount: 1 });
    expect(list.has(1)).toBe(false);
    expect(list.size).toBe(2);
  });

  it("property: mirroring its insertions into an array yields the distinct seqs in order, capped", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 120 }), fc.integer({ min: 1, max: 40 }), (seqs, capacity) => {
        const list = new MessageList(capacity);
        const shown: number[] = [];
        for (const seq of seqs) {
          const insertion = list.insert(seq);
          if (insertion === null) continue;
          shown.splice(insertion.index, 0, seq);
          shown.splice(0, insertion.evictedCount);
        }
        expect(shown).toEqual([...shown].sort((left, right) => left - right));
        expect(new Set(shown).size).toBe(shown.length);
        expect(shown.length).toBeLessThanOrEqual(capacity);
        expect(shown.length).toBe(list.size);
        const distinct = [...new Set(seqs)].sort((left, right) => left - right);
        // The newest `capacity` distinct seqs are always shown.
        expect(shown.slice(-Math.min(capacity, distinct.length)).at(-1)).toBe(distinct.at(-1));
      }),
    );
  });
});

describe("formatMessageLine", () => {
  it("reads <sender>: <body>", () => {
    expect(formatMessageLine({ senderUserId: "bob", body: "hi <b>" })).toBe("bob: hi <b>");
  });
});
