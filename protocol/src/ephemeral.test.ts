// Typing and presence on the wire: the client frames, the server frames, the cell.members request and
// reply, delivery.typing and the presence messages between edges all decode when valid and refuse what
// breaks a limit or an allowlist.
import { describe, expect, it } from "vitest";
import {
  cellReply,
  cellRequest,
  decodeJsonText,
  deliveryBatch,
  presenceMessage,
  type CellMembersRequest,
  type DeliveryBatch,
  type PresenceMessage,
} from "./cell-messages.ts";
import { cellRequestKey } from "./request-keys.ts";
import { decodeClientFrame, decodeServerFrame, type ServerFrame } from "./frames.ts";
import { groupMembersMax, presenceHeartbeatUsersMax, presenceWatchUsersMax, typingExpiresInMsMax, typingFanOutMax } from "./limits.ts";
import { presenceSubject } from "./subjects.ts";

const conversationId = "g-abcdefghijklmnopqrstuv";
const userIds = (count: number): string[] => Array.from({ length: count }, (_, index) => `user${index}`);

function clientFailure(value: unknown): { code: string; message: string; requestId?: string } {
  const result = decodeClientFrame(JSON.stringify(value));
  if (result.ok) throw new Error(`decoded ${JSON.stringify(result.frame)}`);
  return result.failure;
}

describe("client frames", () => {
  it("decode typing and watchPresence, up to presenceWatchUsersMax users and none", () => {
    for (const frame of [
      { type: "typing", requestId: "t1", conversationId },
      { type: "watchPresence", requestId: "w1", userIds: ["bob", "carol"] },
      { type: "watchPresence", requestId: "w2", userIds: [] },
      { type: "watchPresence", requestId: "w3", userIds: userIds(presenceWatchUsersMax) },
    ]) {
      expect(decodeClientFrame(JSON.stringify(frame))).toEqual({ ok: true, frame });
    }
  });

  it("refuse what breaks a limit or an allowlist, echoing the requestId", () => {
    expect(clientFailure({ type: "typing", requestId: "t1", conversationId: "victim.>" })).toMatchObject({
      code: "invalid_field",
      requestId: "t1",
    });
    expect(clientFailure({ type: "typing", requestId: "t2" })).toMatchObject({ code: "invalid_field", requestId: "t2" });
    expect(clientFailure({ type: "typing", requestId: "t3", conversationId, userId: "mallory" }).message).toContain("$.userId");
    expect(clientFailure({ type: "watchPresence", requestId: "w1", userIds: userIds(presenceWatchUsersMax + 1) })).toMatchObject({
      code: "invalid_field",
      requestId: "w1",
    });
    expect(clientFailure({ type: "watchPresence", requestId: "w2", userIds: ["bob", "bob"] }).message).toContain("repeat");
    expect(clientFailure({ type: "watchPresence", requestId: "w3", userIds: ["victim.>"] }).code).toBe("invalid_field");
    expect(clientFailure({ type: "watchPresence", requestId: "w4" }).message).toContain("$.userIds");
  });
});

describe("server frames", () => {
  const frames: ServerFrame[] = [
    { type: "typingAck", requestId: "t1" },
    { type: "typing", conversationId, userId: "alice", deviceId: "phone", expiresInMs: 5000 },
    {
      type: "presenceSnapshot",
      requestId: "w1",
      users: [
        { userId: "bob", status: "online", changedAtMs: 1_730_000_000_000 },
        { userId: "carol", status: "offline", changedAtMs: null },
      ],
    },
    { type: "presence", userId: "bob", status: "offline", changedAtMs: 1_730_000_000_500 },
  ];

  it.each(frames.map((frame) => [frame.type, frame] as const))("round-trip %s", (_type, frame) => {
    expect(decodeServerFrame(JSON.stringify(frame))).toEqual({ ok: true, value: frame });
  });

  it("refuse an expiry past typingExpiresInMsMax, an unknown status and a presence frame without its time", () => {
    expect(
      decodeServerFrame(
        JSON.stringify({ type: "typing", conversationId, userId: "a", deviceId: "d", expiresInMs: typingExpiresInMsMax + 1 }),
      ).ok,
    ).toBe(false);
    expect(decodeServerFrame(JSON.stringify({ type: "typing", conversationId, userId: "a", deviceId: "d", expiresInMs: 0 })).ok).toBe(
      false,
    );
    expect(decodeServerFrame(JSON.stringify({ type: "presence", userId: "bob", status: "away", changedAtMs: 1 })).ok).toBe(false);
    expect(decodeServerFrame(JSON.stringify({ type: "presence", userId: "bob", status: "online", changedAtMs: null })).ok).toBe(false);
    const tooMany = userIds(presenceWatchUsersMax + 1).map((userId) => ({ userId, status: "offline", changedAtMs: null }));
    expect(decodeServerFrame(JSON.stringify({ type: "presenceSnapshot", requestId: "w", users: tooMany })).ok).toBe(false);
  });
});

describe("cell.members", () => {
  const request: CellMembersRequest = { type: "cell.members", conversationId, userId: "alice" };

  it("is routed by its conversation and decodes with its reply", () => {
    expect(decodeJsonText(cellRequest, JSON.stringify(request))).toEqual({ ok: true, value: request });
    expect(cellRequestKey(request)).toBe(conversationId);
    const reply = { type: "cell.members", conversationId, memberUserIds: ["alice", "bob"] };
    expect(decodeJsonText(cellReply, JSON.stringify(reply))).toEqual({ ok: true, value: reply });
  });

  it("refuses an empty member list, one past groupMembersMax, and a bad user id", () => {
    expect(decodeJsonText(cellReply, JSON.stringify({ type: "cell.members", conversationId, memberUserIds: [] })).ok).toBe(false);
    expect(
      decodeJsonText(cellReply, JSON.stringify({ type: "cell.members", conversationId, memberUserIds: userIds(groupMembersMax + 1) })).ok,
    ).toBe(false);
    expect(decodeJsonText(cellRequest, JSON.stringify({ ...request, userId: "victim.>" })).ok).toBe(false);
  });

  it("bounds the typing fan-out by the largest group", () => {
    expect(typingFanOutMax).toBe(groupMembersMax);
  });
});

describe("delivery batches on the deliveries subject", () => {
  it("decode messages, mailbox events and typing indicators", () => {
    const batch: DeliveryBatch = {
      type: "delivery.batch",
      messages: [
        {
          recipientUserIds: ["alice", "bob"],
          message: {
            conversationId,
            messageId: "m1",
            seq: 1,
            senderUserId: "alice",
            senderDeviceId: "phone",
            clientMessageId: "c1",
            body: "hi",
            sentAtMs: 1,
          },
        },
      ],
      events: [
        {
          recipientUserId: "bob",
          seq: 1,
          event: { kind: "joined", conversationId, conversationKind: "direct", title: null, afterSeq: 0, addedByUserId: "alice" },
        },
      ],
      typing: [{ recipientUserIds: ["alice", "bob"], conversationId, userId: "alice", deviceId: "phone", expiresInMs: 5000 }],
    };
    expect(decodeJsonText(deliveryBatch, JSON.stringify(batch))).toEqual({ ok: true, value: batch });
  });

  it("refuse a typing indicator without recipients or with a seq, and a message to nobody", () => {
    const typing = { conversationId, userId: "a", deviceId: "d", expiresInMs: 5000 };
    const batchOf = (fields: Record<string, unknown>) =>
      JSON.stringify({ type: "delivery.batch", messages: [], events: [], typing: [], ...fields });
    expect(decodeJsonText(deliveryBatch, batchOf({ typing: [typing] })).ok).toBe(false);
    expect(decodeJsonText(deliveryBatch, batchOf({ typing: [{ ...typing, recipientUserIds: ["b"], seq: 1 }] })).ok).toBe(false);
    expect(decodeJsonText(deliveryBatch, batchOf({ typing: [{ ...typing, recipientUserIds: ["victim.>"] }] })).ok).toBe(false);
    const message = {
      conversationId,
      messageId: "m1",
      seq: 1,
      senderUserId: "a",
      senderDeviceId: "d",
      clientMessageId: "c1",
      body: "hi",
      sentAtMs: 1,
    };
    expect(decodeJsonText(deliveryBatch, batchOf({ messages: [{ recipientUserIds: [], message }] })).ok).toBe(false);
  });
});

describe("presence messages between edges", () => {
  it("decode heartbeats up to presenceHeartbeatUsersMax users, changes and goodbyes", () => {
    const messages: PresenceMessage[] = [
      { type: "presence.heartbeat", edgeInstanceId: "2-9f8e7d6c5b4a", claimTtlMs: 15_000, userIds: userIds(presenceHeartbeatUsersMax) },
      { type: "presence.change", edgeInstanceId: "2-9f8e7d6c5b4a", claimTtlMs: 15_000, userId: "bob", status: "online" },
      { type: "presence.goodbye", edgeInstanceId: "2-9f8e7d6c5b4a" },
    ];
    for (const value of messages) expect(decodeJsonText(presenceMessage, JSON.stringify(value))).toEqual({ ok: true, value });
    expect(presenceSubject("cellwire")).toBe("cellwire.presence");
    expect(() => presenceSubject("bad.namespace")).toThrow(TypeError);
  });

  it("refuse an oversized or empty heartbeat, a bad instance id and an absurd TTL", () => {
    const base = { type: "presence.heartbeat", edgeInstanceId: "e1", claimTtlMs: 15_000 };
    expect(decodeJsonText(presenceMessage, JSON.stringify({ ...base, userIds: userIds(presenceHeartbeatUsersMax + 1) })).ok).toBe(false);
    expect(decodeJsonText(presenceMessage, JSON.stringify({ ...base, userIds: [] })).ok).toBe(false);
    expect(decodeJsonText(presenceMessage, JSON.stringify({ ...base, edgeInstanceId: "e.1", userIds: ["bob"] })).ok).toBe(false);
    expect(decodeJsonText(presenceMessage, JSON.stringify({ ...base, claimTtlMs: 0, userIds: ["bob"] })).ok).toBe(false);
  });
});
