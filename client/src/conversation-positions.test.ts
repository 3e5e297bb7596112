// Follows client/BEHAVIOUR.md ("Conversations"): one test per row of its message-frame table, the cursor
// order and limits, then properties over random frame sequences (fast-check prints the seed and the
// shrunk sequence on failure).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConversationPositions, applyMessageSeq, conversationCursorsMax } from "./conversation-positions.ts";

const conversation = (letter: string) => `d-${letter.repeat(22)}`;
const [first, second, third] = [conversation("A"), conversation("B"), conversation("C")];

describe("conversation positions: message table", () => {
  it("a message of a conversation without a cursor → emit, cursor := seq (the first one seen)", () => {
    expect(applyMessageSeq(undefined, 7)).toEqual({ kind: "emit", cursor: 7 });
  });

  it("seq = cursor + 1 → emit, cursor := seq", () => {
    expect(applyMessageSeq(4, 5)).toEqual({ kind: "emit", cursor: 5 });
    expect(applyMessageSeq(0, 1)).toEqual({ kind: "emit", cursor: 1 });
  });

  it.each([4, 3, 1])("seq %i with cursor 4 → duplicate, cursor unchanged", (seq) => {
    expect(applyMessageSeq(4, seq)).toEqual({ kind: "duplicate", cursor: 4 });
  });

  it("seq > cursor + 1 → gap, cursor unchanged, names the seq expected", () => {
    expect(applyMessageSeq(4, 6)).toEqual({ kind: "gap", cursor: 4, expectedSeq: 5, receivedSeq: 6 });
    expect(applyMessageSeq(0, 9)).toEqual({ kind: "gap", cursor: 0, expectedSeq: 1, receivedSeq: 9 });
  });
});

describe("conversation positions: cursors", () => {
  it("keeps one cursor per conversation, each advanced only by its own messages", () => {
    const positions = new ConversationPositions();
    expect(positions.receive(first, 3)).toEqual({ kind: "emit", cursor: 3 });
    expect(positions.receive(second, 1)).toEqual({ kind: "emit", cursor: 1 });
    expect(positions.receive(first, 4)).toEqual({ kind: "emit", cursor: 4 });
    expect(positions.receive(second, 3)).toEqual({ kind: "gap", cursor: 1, expectedSeq: 2, receivedSeq: 3 });
    expect(positions.receive(first, 2)).toEqual({ kind: "duplicate", cursor: 4 });
    expect(positions.toRecord()).toEqual({ [first]: 4, [second]: 1 });
  });

  it("starts from the cursors the app stored, in their order", () => {
    const positions = new ConversationPositions({ [second]: 9, [first]: 2 });
    expect(positions.receive(second, 9)).toEqual({ kind: "duplicate", cursor: 9 });
    expect(positions.receive(first, 3)).toEqual({ kind: "emit", cursor: 3 });
    expect(Object.keys(positions.toRecord())).toEqual([second, first]);
  });

  it("a joined event starts a cursor at the join point, and never moves an existing one", () => {
    const positions = new ConversationPositions({ [first]: 8 });
    positions.joined(second, 40);
    positions.joined(first, 2);
    positions.joined(first, 12);
    expect(positions.toRecord()).toEqual({ [first]: 8, [second]: 40 });
    expect(positions.receive(second, 42)).toEqual({ kind: "gap", cursor: 40, expectedSeq: 41, receivedSeq: 42 });
    expect(positions.receive(second, 41)).toEqual({ kind: "emit", cursor: 41 });
  });

  it("lists the most recently updated first for a hello, at most the limit; a duplicate does not count as an update", () => {
    const positions = new ConversationPositions();
    positions.receive(first, 1);
    positions.receive(second, 1);
    positions.receive(third, 1);
    positions.receive(first, 2);
    positions.receive(second, 1);
    expect(positions.resumeCursors(10)).toEqual([
      { conversationId: first, afterSeq: 2 },
      { conversationId: third, afterSeq: 1 },
      { conversationId: second, afterSeq: 1 },
    ]);
    expect(positions.resumeCursors(2).map((cursor) => cursor.conversationId)).toEqual([first, third]);
    expect(positions.resumeCursors(0)).toEqual([]);
    expect(Object.keys(positions.toRecord())).toEqual([second, third, first]);
  });

  it("a gap makes its conversation the most recently updated, so the resuming hello lists it first", () => {
    const positions = new ConversationPositions({ [first]: 5, [second]: 1 });
    expect(positions.resumeCursors(1)).toEqual([{ conversationId: second, afterSeq: 1 }]);
    positions.receive(first, 9);
    expect(positions.resumeCursors(1)).toEqual([{ conversationId: first, afterSeq: 5 }]);
  });

  it("forgets the least recently updated cursor past its limit", () => {
    expect(conversationCursorsMax).toBe(10_000);
    const positions = new ConversationPositions({}, 2);
    positions.receive(first, 1);
    positions.receive(second, 1);
    positions.receive(first, 2);
    positions.joined(third, 0);
    expect(positions.size).toBe(2);
    expect(positions.toRecord()).toEqual({ [first]: 2, [third]: 0 });
    // Forgotten: its next message is taken as the first one seen.
    expect(positions.receive(second, 7)).toEqual({ kind: "emit", cursor: 7 });
    expect(new ConversationPositions({ [first]: 1, [second]: 2, [third]: 3 }, 2).toRecord()).toEqual({ [second]: 2, [third]: 3 });
  });
});

describe("conversation positions: properties", () => {
  const conversations = [first, second, third];

  it("emits each conversation's messages right after its cursor, never twice, whatever the edge sends", () => {
    const frame = fc.record({ conversation: fc.constantFrom(...conversations), seq: fc.integer({ min: 1, max: 30 }) });
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 100 }), (frames) => {
        const positions = new ConversationPositions();
        const emitted = new Map<string, number[]>();
        for (const { conversation: conversationId, seq } of frames) {
          const before = positions.cursorOf(conversationId);
          const outcome = positions.receive(conversationId, seq);
          expect(positions.cursorOf(conversationId)).toBe(outcome.cursor);
          if (before !== undefined) expect(outcome.cursor).toBeGreaterThanOrEqual(before);
          if (outcome.kind !== "emit") {
            expect(outcome.cursor).toBe(before);
            continue;
          }
          if (before !== undefined) expect(seq).toBe(before + 1);
          const list = emitted.get(conversationId) ?? [];
          expect(seq).toBeGreaterThan(list.at(-1) ?? 0);
          list.push(seq);
          emitted.set(conversationId, list);
        }
      }),
    );
  });

  it("resuming from the cursors after each gap yields every conversation's log once, however the edge overlaps", () => {
    // Each session replays every conversation from up to `overlap` seqs before its cursor (as an edge that
    // reads from the member's join point does) and sometimes skips one; the last session behaves.
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 3, maxLength: 3 }),
        fc.array(
          fc.record({
            overlap: fc.nat({ max: 4 }),
            skip: fc.option(fc.record({ conversation: fc.nat({ max: 2 }), seq: fc.nat({ max: 12 }) }), { nil: undefined }),
          }),
          { minLength: 1, maxLength: 12 },
        ),
        (headSeqs, sessions) => {
          // Each conversation's joined event started its cursor at the join point (0), so even a skipped
          // first message is noticed: a conversation without a cursor would take what comes first.
          const positions = new ConversationPositions();
          for (const conversationId of conversations) positions.joined(conversationId, 0);
          const emitted = new Map<string, number[]>();
          for (const [index, session] of sessions.entries()) {
            const cursors = new Map(
              positions.resumeCursors(conversations.length).map((cursor) => [cursor.conversationId, cursor.afterSeq]),
            );
            const skip = index === sessions.length - 1 ? undefined : session.skip;
            sessionLoop: for (const [conversationIndex, conversationId] of conversations.entries()) {
              const headSeq = headSeqs[conversationIndex] ?? 0;
              for (let seq = Math.max(1, (cursors.get(conversationId) ?? 0) + 1 - session.overlap); seq <= headSeq; seq++) {
                if (skip !== undefined && skip.conversation === conversationIndex && skip.seq === seq) continue;
                const outcome = positions.receive(conversationId, seq);
                if (outcome.kind === "emit") emitted.set(conversationId, [...(emitted.get(conversationId) ?? []), seq]);
                // The client closes the socket at a gap: nothing more of this session is read.
                if (outcome.kind === "gap") break sessionLoop;
              }
            }
          }
          for (const [conversationIndex, conversationId] of conversations.entries()) {
            const headSeq = headSeqs[conversationIndex] ?? 0;
            expect(emitted.get(conversationId) ?? []).toEqual(Array.from({ length: headSeq }, (_, seqIndex) => seqIndex + 1));
          }
        },
      ),
    );
  });
});
