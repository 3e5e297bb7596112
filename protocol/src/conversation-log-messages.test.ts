// The cell messages of conversation logs (docs/decisions/0009) decode as sent and refuse what does not fit:
// batches of sends and their replies, reads of a log from a cursor, and message deliveries.
import { describe, expect, it } from "vitest";
import {
  cellReply,
  cellRequest,
  cellSendBatch,
  cellSendBatchReplies,
  decodeJsonText,
  deliveryBatch,
  joinedEventId,
  mailboxEventId,
  type CellSendRequest,
} from "./cell-messages.ts";
import { conversationPageLimitMax, deliveryBatchItemsMax, sendBatchItemsMax } from "./limits.ts";

const conversationId = "d-AAAAAAAAAAAAAAAAAAAAAA";
const message = {
  conversationId,
  messageId: "m1",
  seq: 1,
  senderUserId: "alice",
  senderDeviceId: "phone",
  clientMessageId: "c1",
  body: "hi",
  sentAtMs: 1,
};
const send: CellSendRequest = {
  type: "cell.send",
  senderUserId: "alice",
  senderDeviceId: "phone",
  conversationId,
  clientMessageId: "c1",
  body: "hi",
};

describe("cell.sendBatch", () => {
  it("decodes a batch as sent, and its replies", () => {
    const batch = { type: "cell.sendBatch", budgetMs: 3000, sends: [send, { ...send, clientMessageId: "c2" }] };
    expect(decodeJsonText(cellSendBatch, JSON.stringify(batch))).toEqual({ ok: true, value: batch });
    const replies = {
      type: "cell.sendBatchReplies",
      replies: [
        { type: "cell.stored", message, deduplicated: false },
        { type: "cell.error", code: "overloaded", message: "too many sends pending on this worker", retryAfterMs: 120 },
      ],
    };
    expect(decodeJsonText(cellSendBatchReplies, JSON.stringify(replies))).toEqual({ ok: true, value: replies });
  });

  it("refuses an empty or an oversized batch, a foreign request in it, a negative budget", () => {
    const batchOf = (sends: unknown[], budgetMs = 1000) => JSON.stringify({ type: "cell.sendBatch", budgetMs, sends });
    expect(decodeJsonText(cellSendBatch, batchOf([])).ok).toBe(false);
    expect(decodeJsonText(cellSendBatch, batchOf(Array.from({ length: sendBatchItemsMax + 1 }, () => send))).ok).toBe(false);
    expect(
      decodeJsonText(cellSendBatch, batchOf([{ type: "cell.history", userId: "alice", conversationId, beforeSeq: null, limit: 1 }])).ok,
    ).toBe(false);
    expect(decodeJsonText(cellSendBatch, batchOf([send], -1)).ok).toBe(false);
    expect(decodeJsonText(cellSendBatch, batchOf([{ ...send, conversationId: "victim.>" }])).ok).toBe(false);
  });
});

describe("cell.messagesAfter", () => {
  it("decodes a read from a cursor or from the join point, and its page", () => {
    for (const afterSeq of [41, null]) {
      const request = { type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq, limit: conversationPageLimitMax };
      expect(decodeJsonText(cellRequest, JSON.stringify(request))).toEqual({ ok: true, value: request });
    }
    const page = { type: "cell.messages", conversationId, afterSeq: 0, messages: [message], headSeq: 1 };
    expect(decodeJsonText(cellReply, JSON.stringify(page))).toEqual({ ok: true, value: page });
  });

  it("refuses a limit of 0 or past the page limit, and a negative cursor", () => {
    const request = (fields: Record<string, unknown>) =>
      JSON.stringify({ type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq: 0, limit: 1, ...fields });
    expect(decodeJsonText(cellRequest, request({ limit: 0 })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, request({ limit: conversationPageLimitMax + 1 })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, request({ afterSeq: -1 })).ok).toBe(false);
  });
});

describe("delivery batches and joined events", () => {
  it("decodes a batch of messages for their recipients, and refuses one past the item bound", () => {
    const batch = { type: "delivery.batch", messages: [{ recipientUserIds: ["alice", "bob"], message }], events: [], typing: [] };
    expect(decodeJsonText(deliveryBatch, JSON.stringify(batch))).toEqual({ ok: true, value: batch });
    const tooMany = { ...batch, messages: Array.from({ length: deliveryBatchItemsMax + 1 }, () => batch.messages[0]) };
    expect(decodeJsonText(deliveryBatch, JSON.stringify(tooMany)).ok).toBe(false);
  });

  it("names a joined event after its conversation, so a member joins once", () => {
    const joined = {
      kind: "joined",
      conversationId,
      conversationKind: "direct",
      title: null,
      afterSeq: 0,
      addedByUserId: "alice",
    } as const;
    expect(joinedEventId(joined)).toBe(`joined-${conversationId}`);
    expect(mailboxEventId(joined)).toBe(joinedEventId(joined));
  });
});
