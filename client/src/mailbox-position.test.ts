// Follows client/BEHAVIOUR.md ("Mailbox"): one test per row of its frame table, then properties over
// random frame sequences (fast-check prints the seed and the shrunk sequence on failure).
import fc from "fast-check";
import type { EventFrame } from "@cellwire/protocol";
import { describe, expect, it } from "vitest";
import { applyMailboxFrame, helloMailboxCursor, resumeAfterSeqFor, type MailboxFrame } from "./mailbox-position.ts";

const event = (seq: number): EventFrame => ({
  type: "event",
  seq,
  event: { kind: "receipt", conversationId: `d-${"A".repeat(22)}`, userId: "bob", readSeq: seq, deliveredSeq: seq },
});

describe("mailbox position: frame table", () => {
  it("event with lastSeq unknown → emit, lastSeq := seq", () => {
    expect(applyMailboxFrame(undefined, event(7))).toEqual({ kind: "emit", lastSeq: 7 });
  });

  it("an event of a kind this client does not know takes its seq like any other (decision 0010)", () => {
    const unknown = (seq: number): EventFrame => ({ type: "event", seq, event: { kind: "unknown", unknownKind: "pinned" } });
    expect(applyMailboxFrame(4, unknown(5))).toEqual({ kind: "emit", lastSeq: 5 });
    expect(applyMailboxFrame(5, unknown(5))).toEqual({ kind: "duplicate", lastSeq: 5 });
    expect(applyMailboxFrame(5, unknown(7))).toEqual({ kind: "gap", lastSeq: 5, expectedSeq: 6, receivedSeq: 7 });
  });

  it("event with seq = lastSeq + 1 → emit, lastSeq := seq", () => {
    expect(applyMailboxFrame(4, event(5))).toEqual({ kind: "emit", lastSeq: 5 });
    expect(applyMailboxFrame(0, event(1))).toEqual({ kind: "emit", lastSeq: 1 });
  });

  it.each([4, 3, 1])("event %i with lastSeq 4 → duplicate, lastSeq unchanged", (seq) => {
    expect(applyMailboxFrame(4, event(seq))).toEqual({ kind: "duplicate", lastSeq: 4 });
  });

  it("event with seq > lastSeq + 1 → gap, lastSeq unchanged, names the seq expected", () => {
    expect(applyMailboxFrame(4, event(6))).toEqual({ kind: "gap", lastSeq: 4, expectedSeq: 5, receivedSeq: 6 });
    expect(applyMailboxFrame(0, event(9))).toEqual({ kind: "gap", lastSeq: 0, expectedSeq: 1, receivedSeq: 9 });
  });

  it("synced → lastSeq := seq when unknown or lower, kept when higher", () => {
    expect(applyMailboxFrame(undefined, { type: "synced", seq: 0 })).toEqual({ kind: "synced", lastSeq: 0 });
    expect(applyMailboxFrame(3, { type: "synced", seq: 8 })).toEqual({ kind: "synced", lastSeq: 8 });
    expect(applyMailboxFrame(8, { type: "synced", seq: 8 })).toEqual({ kind: "synced", lastSeq: 8 });
    expect(applyMailboxFrame(9, { type: "synced", seq: 8 })).toEqual({ kind: "synced", lastSeq: 9 });
  });

  it("resync → lastSeq := headSeq, whatever it was", () => {
    expect(applyMailboxFrame(2, { type: "resync", headSeq: 40 })).toEqual({ kind: "resync", lastSeq: 40 });
    expect(applyMailboxFrame(undefined, { type: "resync", headSeq: 40 })).toEqual({ kind: "resync", lastSeq: 40 });
  });

  it("synced and resync → the mailbox incarnation is the frame's, absent included (decision 0021)", () => {
    expect(applyMailboxFrame(3, { type: "synced", seq: 3, mailboxIncarnation: "a" })).toEqual({
      kind: "synced",
      lastSeq: 3,
      mailboxIncarnation: "a",
    });
    expect(applyMailboxFrame(3, { type: "synced", seq: 3 })).toEqual({ kind: "synced", lastSeq: 3, mailboxIncarnation: undefined });
    expect(applyMailboxFrame(9, { type: "resync", headSeq: 0, mailboxIncarnation: "b" })).toEqual({
      kind: "resync",
      lastSeq: 0,
      mailboxIncarnation: "b",
    });
  });

  it("the hello's mailbox cursor: the incarnation goes only with a resumeAfterSeq", () => {
    expect(helloMailboxCursor(12, 3, "a")).toEqual({ resumeAfterSeq: 12, mailboxIncarnation: "a" });
    expect(helloMailboxCursor(undefined, 3, "a")).toEqual({ resumeAfterSeq: 3, mailboxIncarnation: "a" });
    expect(helloMailboxCursor(12, undefined, undefined)).toEqual({ resumeAfterSeq: 12 });
    expect(helloMailboxCursor(undefined, undefined, "a")).toEqual({});
  });

  it("the hello resumes from lastSeq, else from the stored cursor, else starts live", () => {
    expect(resumeAfterSeqFor(12, 3)).toBe(12);
    expect(resumeAfterSeqFor(0, 3)).toBe(0);
    expect(resumeAfterSeqFor(undefined, 3)).toBe(3);
    expect(resumeAfterSeqFor(undefined, 0)).toBe(0);
    expect(resumeAfterSeqFor(undefined, undefined)).toBeUndefined();
  });
});

describe("mailbox position: properties", () => {
  const frame: fc.Arbitrary<MailboxFrame> = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 1, max: 40 }).map(event) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }).map((seq): MailboxFrame => ({ type: "synced", seq })) },
  );

  it("emits each event right after the seq the device holds, never twice, whatever the edge sends", () => {
    fc.assert(
      fc.property(fc.option(fc.integer({ min: 0, max: 20 }), { nil: undefined }), fc.array(frame, { maxLength: 80 }), (start, frames) => {
        let lastSeq = start;
        const emitted: number[] = [];
        for (const next of frames) {
          const outcome = applyMailboxFrame(lastSeq, next);
          if (lastSeq !== undefined) expect(outcome.lastSeq).toBeGreaterThanOrEqual(lastSeq);
          if (outcome.kind === "emit" && next.type === "event") {
            // Next in order after what the device holds (a synced may have moved it past the last emitted).
            if (lastSeq !== undefined) expect(next.seq).toBe(lastSeq + 1);
            expect(next.seq).toBeGreaterThan(emitted.at(-1) ?? 0);
            emitted.push(next.seq);
          }
          if (outcome.kind !== "emit")
            expect(outcome.lastSeq).toBe(next.type === "synced" ? Math.max(lastSeq ?? next.seq, next.seq) : lastSeq);
          lastSeq = outcome.lastSeq;
        }
      }),
    );
  });

  it("resuming from lastSeq after each gap yields the whole mailbox once, however the edge overlaps", () => {
    // An edge that replays each session from up to `overlap` seqs before the resume point and sometimes
    // skips one: the device must still end with every seq exactly once.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.array(fc.record({ overlap: fc.nat({ max: 5 }), skipAt: fc.option(fc.nat({ max: 30 }), { nil: undefined }) }), {
          minLength: 1,
          maxLength: 20,
        }),
        (headSeq, sessions) => {
          let lastSeq: number | undefined = 0;
          const emitted: number[] = [];
          // The last session behaves: no skip, so the device must be complete after it.
          for (const [index, session] of sessions.entries()) {
            const resumeAfterSeq = resumeAfterSeqFor(lastSeq, 0) ?? 0;
            const skipAt = index === sessions.length - 1 ? undefined : session.skipAt;
            for (let seq = Math.max(1, resumeAfterSeq + 1 - session.overlap); seq <= headSeq; seq++) {
              if (seq === skipAt) continue;
              const outcome = applyMailboxFrame(lastSeq, event(seq));
              lastSeq = outcome.lastSeq;
              if (outcome.kind === "emit") emitted.push(seq);
              if (outcome.kind === "gap") break;
            }
          }
          expect(emitted).toEqual(Array.from({ length: headSeq }, (_, index) => index + 1));
          expect(lastSeq).toBe(headSeq);
        },
      ),
    );
  });
});
