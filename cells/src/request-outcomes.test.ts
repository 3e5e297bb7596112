import { describe, expect, it } from "vitest";
import type { CellImportRequest } from "@cellwire/protocol";
import type { OutboxEntry } from "./store/store.ts";
import { conversationOutcome, importedOutcome, mailboxPageOutcome, receiptOutcome } from "./request-outcomes.ts";

const conversationId = "g-ZZZZZZZZZZZZZZZZZZZZZZ";
const joined: OutboxEntry = {
  id: 1,
  conversationId,
  recipientUserId: "bob",
  eventId: "joined-1",
  event: { kind: "joined", conversationId, conversationKind: "group", title: null, afterSeq: 0, addedByUserId: "alice" },
};

describe("request outcomes", () => {
  it("answers a conversation at once and relays its joined events only after the reply", async () => {
    const relayed: OutboxEntry[][] = [];
    const conversation = { conversationId, kind: "group" as const, title: null, memberUserIds: ["alice", "bob"], lastSeq: 0 };
    const outcome = conversationOutcome(conversationId, { outcome: "conversation", conversation, outbox: [joined] }, (_id, entries) =>
      relayed.push([...entries]),
    );
    expect(outcome.reply).toEqual({ type: "cell.conversation", conversation });
    expect(relayed).toEqual([]);
    await outcome.afterReply?.();
    expect(relayed).toEqual([[joined]]);
  });

  it("answers a conversation moved away with cell.moved and a refusal with its code", () => {
    const relayOutbox = (): void => undefined;
    expect(conversationOutcome(conversationId, { outcome: "moved", cellId: "cell-b", epoch: 3 }, relayOutbox).reply).toMatchObject({
      type: "cell.moved",
    });
    expect(conversationOutcome(conversationId, { outcome: "not_a_member" }, relayOutbox).reply).toMatchObject({
      type: "cell.error",
      code: "not_a_member",
    });
  });

  it("answers a receipt beyond the conversation's last seq as an invalid field, naming the last seq", () => {
    const request = { type: "cell.receipt" as const, conversationId, userId: "alice", position: "read" as const, seq: 9 };
    const outcome = receiptOutcome(request, conversationId, { outcome: "seq_beyond_last", lastSeq: 4 }, () => undefined);
    expect(outcome.reply).toMatchObject({ type: "cell.error", code: "invalid_field" });
    expect(JSON.stringify(outcome.reply)).toContain("last seq 4");
  });

  it("leaves an absent incarnation out of a mailbox page", () => {
    const request = { type: "cell.mailboxPage" as const, userId: "alice", afterSeq: 0, limit: 10 };
    const page = { outcome: "page" as const, events: [], headSeq: 0, floorSeq: 0, incarnation: null };
    expect(mailboxPageOutcome(request, "alice", page).reply).toEqual({
      type: "cell.mailboxEvents",
      userId: "alice",
      events: [],
      headSeq: 0,
      floorSeq: 0,
    });
  });

  it("warns of an import page with no import in progress, and drains a conversation's outbox once it is active", async () => {
    const warnings: string[] = [];
    const drained: string[] = [];
    const effects = { warn: (message: string) => warnings.push(message), drainOutbox: (id: string) => drained.push(id) };
    const request = { type: "cell.import", kind: "conversation", id: conversationId, fromCellId: "cell-a" } as const;
    const page = request as unknown as CellImportRequest;
    expect(importedOutcome(page, conversationId, { outcome: "not_importing" }, effects).reply).toMatchObject({ code: "internal" });
    expect(warnings).toHaveLength(1);
    const active = importedOutcome(page, conversationId, { outcome: "active" }, effects);
    expect(active.reply).toEqual({ type: "cell.imported", kind: "conversation", id: conversationId, state: "active" });
    await active.afterReply?.();
    expect(drained).toEqual([conversationId]);
  });
});
