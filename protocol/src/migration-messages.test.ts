// The migration messages decode as sent and refuse pages whose fields do not fit their kind.
import { describe, expect, it } from "vitest";
import { cellReply, cellRequest, decodeJsonText, directoryRequest, type CellImportRequest, type CellRequest } from "./cell-messages.ts";
import type { JoinedEvent } from "./frames.ts";
import { deadLettersPageLimitMax, redriveIdsMax } from "./limits.ts";

const message = {
  conversationId: "d-AAAAAAAAAAAAAAAAAAAAAA",
  messageId: "m1",
  seq: 1,
  senderUserId: "alice",
  senderDeviceId: "phone",
  clientMessageId: "c1",
  body: "hi",
  sentAtMs: 1,
};

const joined: JoinedEvent = {
  kind: "joined",
  conversationId: message.conversationId,
  conversationKind: "direct",
  title: null,
  afterSeq: 0,
  addedByUserId: "alice",
};

describe("migration messages", () => {
  const pages: CellImportRequest[] = [
    {
      type: "cell.import",
      kind: "user",
      id: "alice",
      fromCellId: "a",
      first: true,
      last: false,
      lastSeq: 1,
      floorSeq: 0,
      events: [{ seq: 1, eventId: `joined-${message.conversationId}`, event: joined }],
    },
    {
      type: "cell.import",
      kind: "conversation",
      id: message.conversationId,
      fromCellId: "a",
      first: true,
      last: false,
      lastSeq: 1,
      conversation: { kind: "direct", title: null, createdByUserId: "alice", createdAtMs: 1 },
      members: [{ userId: "alice", joinedAtMs: 1, joinedAfterSeq: 0, readSeq: 1, deliveredSeq: 1 }],
      messages: [message],
      outbox: [{ recipientUserId: "bob", eventId: `joined-${message.conversationId}`, event: joined }],
    },
  ];

  it.each(pages)("decodes a $kind import page as sent", (page) => {
    expect(decodeJsonText(cellRequest, JSON.stringify(page))).toEqual({ ok: true, value: page });
  });

  it("decodes a mailbox's last page with its incarnation, and a page of mailbox events naming one; refuses one that is no uuid", () => {
    const incarnation = "0b6f4f0e-4a4e-4c1c-9f57-5a1d2f3c4b5a";
    const last = { ...pages[0], first: false, last: true, events: [], incarnation };
    expect(decodeJsonText(cellRequest, JSON.stringify(last))).toEqual({ ok: true, value: last });
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...last, incarnation: "not-a-uuid" })).ok).toBe(false);
    const page = { type: "cell.mailboxEvents", userId: "alice", events: [], headSeq: 0, floorSeq: 0, incarnation };
    expect(decodeJsonText(cellReply, JSON.stringify(page))).toEqual({ ok: true, value: page });
    expect(decodeJsonText(cellReply, JSON.stringify({ ...page, incarnation: "'; drop table mailboxes" })).ok).toBe(false);
  });

  it("refuses an import page whose fields do not fit its kind, and ids that could widen a subject", () => {
    const [userPage, conversationPage] = pages;
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...userPage, kind: "conversation" })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...conversationPage, kind: "user" })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...userPage, id: "victim.>" })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...userPage, kind: "cell" })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, "[]").ok).toBe(false);
  });

  it("decodes cell.migrate, cell.stats and their replies, and the directory's move", () => {
    const requests: CellRequest[] = [{ type: "cell.migrate", kind: "user", id: "alice", toCellId: "b" }, { type: "cell.stats" }];
    for (const request of requests) expect(decodeJsonText(cellRequest, JSON.stringify(request)).ok).toBe(true);
    expect(decodeJsonText(cellRequest, JSON.stringify({ type: "cell.migrate", kind: "user", id: "a.b", toCellId: "b" })).ok).toBe(false);
    const moved = { type: "cell.moved", kind: "user", id: "alice", cellId: "b", epoch: 2 };
    expect(decodeJsonText(cellReply, JSON.stringify(moved))).toEqual({ ok: true, value: moved });
    const move = {
      type: "directory.moveEntry",
      kind: "conversation",
      id: message.conversationId,
      fromCellId: "a",
      toCellId: "b",
      expectedEpoch: 1,
    };
    expect(decodeJsonText(directoryRequest, JSON.stringify(move))).toEqual({ ok: true, value: move });
    expect(decodeJsonText(directoryRequest, JSON.stringify({ ...move, expectedEpoch: 0 })).ok).toBe(false);
  });

  it("decodes the dead-letter requests and replies within their limits", () => {
    const list = { type: "cell.deadLetters", afterId: 0, limit: deadLettersPageLimitMax };
    expect(decodeJsonText(cellRequest, JSON.stringify(list))).toEqual({ ok: true, value: list });
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...list, limit: deadLettersPageLimitMax + 1 })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...list, limit: 0 })).ok).toBe(false);
    const redrive = { type: "cell.redriveDeadLetters", ids: [3, 9] };
    expect(decodeJsonText(cellRequest, JSON.stringify(redrive))).toEqual({ ok: true, value: redrive });
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...redrive, ids: [] })).ok).toBe(false);
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...redrive, ids: [3, 3] })).ok).toBe(false);
    expect(
      decodeJsonText(cellRequest, JSON.stringify({ ...redrive, ids: Array.from({ length: redriveIdsMax + 1 }, (_, index) => index + 1) }))
        .ok,
    ).toBe(false);
    const deadLetter = {
      id: 7,
      conversationId: message.conversationId,
      recipientUserId: "bob",
      eventId: `joined-${message.conversationId}`,
      attempts: 16,
      lastError: "cell b is gone",
      createdAtMs: 1,
      deadLetteredAtMs: 2,
    };
    const page = { type: "cell.deadLetters", cellId: "a", deadLetters: [deadLetter] };
    expect(decodeJsonText(cellReply, JSON.stringify(page))).toEqual({ ok: true, value: page });
    expect(decodeJsonText(cellReply, JSON.stringify({ ...page, deadLetters: [{ ...deadLetter, recipientUserId: "b.>" }] })).ok).toBe(false);
    const redriven = { type: "cell.redriven", cellId: "a", rows: 2 };
    expect(decodeJsonText(cellReply, JSON.stringify(redriven))).toEqual({ ok: true, value: redriven });
  });
});
