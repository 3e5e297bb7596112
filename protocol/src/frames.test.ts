// The client frame decoder is the edge's first line of defence: every frame type decodes, every kind of
// bad input gets the documented error code (with the requestId echoed when the frame carried a usable
// one), and no id that could widen a NATS subject or split a Redis key gets through.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeClientFrame, decodeServerFrame, type ClientFrame, type Message, type ServerFrame } from "./frames.ts";
import {
  addMembersBatchMax,
  frameBytesMax,
  groupMembersMax,
  groupTitleLengthMax,
  historyPageLimitMax,
  messageBodyLengthMax,
  protocolVersion,
  requestIdLengthMax,
  tokenLengthMax,
  resumeConversationsMax,
} from "./limits.ts";
import { errorCodeList } from "./codes.ts";

const conversationId = "d-AAAAAAAAAAAAAAAAAAAAAA";
const groupConversationId = "g-abcdefghijklmnopqrstuv";

function decodeValue(value: unknown): ReturnType<typeof decodeClientFrame> {
  return decodeClientFrame(JSON.stringify(value));
}

function expectFailure(value: unknown, code: string, requestId?: string): string {
  const result = typeof value === "string" ? decodeClientFrame(value) : decodeValue(value);
  if (result.ok) throw new Error(`expected ${code}, got the frame ${JSON.stringify(result.frame)}`);
  expect(result.failure.code).toBe(code);
  expect(result.failure.requestId).toBe(requestId);
  return result.failure.message;
}

const validFrames: ClientFrame[] = [
  { type: "hello", protocolVersion, token: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln" },
  { type: "hello", protocolVersion, token: "t", deviceId: "phone_1" },
  { type: "send", requestId: "r-1", conversationId, clientMessageId: "6f1c2d9e-0b7a-4a53-9a57-2d1e8f1b0c11", body: "hello" },
  { type: "openDirect", requestId: "r:2", peerUserId: "bob" },
  { type: "createGroup", requestId: "r.3", title: "Team", memberUserIds: ["bob", "carol"] },
  { type: "createGroup", requestId: "r4", title: "Just me", memberUserIds: [] },
  { type: "createGroup", requestId: "r4b", title: "Keyed", memberUserIds: ["bob"], clientGroupId: "6f1c2d9e-0b7a-4a53-9a57-2d1e8f1b0c11" },
  { type: "addMembers", requestId: "r5", conversationId: groupConversationId, userIds: ["dave"] },
  { type: "history", requestId: "r6", conversationId },
  { type: "history", requestId: "r7", conversationId, beforeSeq: 40, limit: 20 },
  { type: "ping", requestId: "r8" },
  { type: "refresh", requestId: "k-1", token: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln" },
];

describe("decodeClientFrame: valid frames", () => {
  it.each(validFrames.map((frame) => [`${frame.type} ${JSON.stringify(frame).length}`, frame] as const))("decodes %s", (_name, frame) => {
    expect(decodeValue(frame)).toEqual({ ok: true, frame });
  });

  it("accepts the largest body, title, group, batch, page and token", () => {
    const frames: ClientFrame[] = [
      { type: "send", requestId: "r", conversationId, clientMessageId: "c", body: "x".repeat(messageBodyLengthMax) },
      { type: "createGroup", requestId: "r", title: "t".repeat(groupTitleLengthMax), memberUserIds: userIds(groupMembersMax - 1) },
      { type: "addMembers", requestId: "r", conversationId: groupConversationId, userIds: userIds(addMembersBatchMax) },
      { type: "history", requestId: "r", conversationId, beforeSeq: Number.MAX_SAFE_INTEGER, limit: historyPageLimitMax },
      { type: "hello", protocolVersion, token: "t".repeat(tokenLengthMax) },
      { type: "ping", requestId: "r".repeat(requestIdLengthMax) },
    ];
    for (const frame of frames) expect(decodeValue(frame).ok, frame.type).toBe(true);
  });

  it("fits a send with the largest ASCII body in one frame", () => {
    const frame = {
      type: "send",
      requestId: "r".repeat(requestIdLengthMax),
      conversationId,
      clientMessageId: "c".repeat(64),
      body: "x".repeat(messageBodyLengthMax),
    };
    expect(new TextEncoder().encode(JSON.stringify(frame)).length).toBeLessThanOrEqual(frameBytesMax);
  });

  it("decodes any well-formed send frame to itself", () => {
    const idCharacters = fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-".split(""));
    const sendFrame = fc.record({
      type: fc.constant("send" as const),
      requestId: fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/),
      conversationId: fc
        .string({ unit: idCharacters, minLength: 22, maxLength: 22 })
        .chain((tail) => fc.constantFrom(`d-${tail}`, `g-${tail}`)),
      clientMessageId: fc.string({ unit: idCharacters, minLength: 1, maxLength: 64 }),
      body: fc.string({ unit: "grapheme", minLength: 1, maxLength: 200 }).filter((body) => body.length <= messageBodyLengthMax),
    });
    fc.assert(
      fc.property(sendFrame, (frame) => {
        expect(decodeValue(frame)).toEqual({ ok: true, frame });
      }),
      { numRuns: 200 },
    );
  });
});

describe("decodeClientFrame: failures", () => {
  it.each(["", "{", "not json", "[]", "[1,2]", "null", "42", '"ping"', "true"])("refuses %j as malformed_frame", (text) => {
    expectFailure(text, "malformed_frame");
  });

  it("answers unknown_frame_type for a type this version does not know, echoing the requestId", () => {
    expectFailure({ type: "subscribe", requestId: "r1", channel: "x" }, "unknown_frame_type", "r1");
    expectFailure({ type: "welcome", requestId: "r2" }, "unknown_frame_type", "r2");
  });

  it.each(["constructor", "__proto__", "toString", "hasOwnProperty", ""])("does not mistake the type %j for a known one", (type) => {
    expectFailure({ type, requestId: "r" }, "unknown_frame_type", "r");
  });

  it("answers invalid_field for a missing or non-string type", () => {
    expect(expectFailure({ requestId: "r1" }, "invalid_field", "r1")).toContain("$.type");
    expectFailure({ type: 3, requestId: "r2" }, "invalid_field", "r2");
    expectFailure({ type: null }, "invalid_field");
  });

  it("refuses unknown fields, naming them", () => {
    expect(expectFailure({ type: "ping", requestId: "r1", extra: 1 }, "invalid_field", "r1")).toContain("$.extra");
    expect(expectFailure({ type: "hello", protocolVersion, token: "t", requestId: "r2" }, "invalid_field", "r2")).toContain("$.requestId");
    expect(
      expectFailure({ type: "send", requestId: "r3", conversationId, clientMessageId: "c", body: "b", seq: 1 }, "invalid_field", "r3"),
    ).toContain("$.seq");
  });

  it("refuses a __proto__ field rather than letting it through", () => {
    expect(expectFailure('{"type":"ping","requestId":"r1","__proto__":{"admin":true}}', "invalid_field", "r1")).toContain("__proto__");
  });

  it("refuses missing fields, naming them", () => {
    expect(expectFailure({ type: "send", requestId: "r1", conversationId, clientMessageId: "c" }, "invalid_field", "r1")).toContain(
      "$.body",
    );
    expect(expectFailure({ type: "hello", protocolVersion }, "invalid_field")).toContain("$.token");
    expect(expectFailure({ type: "openDirect" }, "invalid_field")).toContain("$.requestId");
  });

  it("does not echo a requestId that is itself invalid", () => {
    expectFailure({ type: "ping", requestId: "has space" }, "invalid_field");
    expectFailure({ type: "ping", requestId: "r".repeat(requestIdLengthMax + 1) }, "invalid_field");
    expectFailure({ type: "ping", requestId: 7 }, "invalid_field");
    expectFailure({ type: "nope", requestId: "victim.>*" }, "unknown_frame_type");
  });

  const dangerousIds = ["victim.>", "a b", "*", ">", "a.b", "a\tb", "a\nb", "", "x".repeat(65), "ünïcode", "a/b", "a:b"];

  it.each(dangerousIds)("refuses the user id %j in openDirect, createGroup and addMembers", (id) => {
    expectFailure({ type: "openDirect", requestId: "r1", peerUserId: id }, "invalid_field", "r1");
    expectFailure({ type: "createGroup", requestId: "r2", title: "t", memberUserIds: ["bob", id] }, "invalid_field", "r2");
    expectFailure({ type: "createGroup", requestId: "r2", title: "t", memberUserIds: [], clientGroupId: id }, "invalid_field", "r2");
    expectFailure({ type: "addMembers", requestId: "r3", conversationId: groupConversationId, userIds: [id] }, "invalid_field", "r3");
  });

  it.each(dangerousIds)("refuses the device id %j in hello", (id) => {
    expect(expectFailure({ type: "hello", protocolVersion, token: "t", deviceId: id }, "invalid_field")).toContain("$.deviceId");
  });

  it.each(dangerousIds)("refuses the client message id %j", (id) => {
    expectFailure({ type: "send", requestId: "r", conversationId, clientMessageId: id, body: "b" }, "invalid_field", "r");
  });

  it.each([
    "x-AAAAAAAAAAAAAAAAAAAAAA",
    "d-AAAAAAAAAAAAAAAAAAAAA",
    "d-AAAAAAAAAAAAAAAAAAAAAAA",
    "d-AAAAAAAAAAAAAAAAAAAA.>",
    "d-AAAAAAAAAAAAAAAAAAAA A",
    "D-AAAAAAAAAAAAAAAAAAAAAA",
    "victim.>",
  ])("refuses the conversation id %j", (id) => {
    expectFailure({ type: "send", requestId: "r", conversationId: id, clientMessageId: "c", body: "b" }, "invalid_field", "r");
    expectFailure({ type: "history", requestId: "r", conversationId: id }, "invalid_field", "r");
  });

  it("refuses an oversized or empty body", () => {
    const oversized = { type: "send", requestId: "r1", conversationId, clientMessageId: "c", body: "x".repeat(messageBodyLengthMax + 1) };
    expect(expectFailure(oversized, "invalid_field", "r1")).toContain("$.body");
    expectFailure({ type: "send", requestId: "r2", conversationId, clientMessageId: "c", body: "" }, "invalid_field", "r2");
    expectFailure({ type: "send", requestId: "r3", conversationId, clientMessageId: "c", body: 5 }, "invalid_field", "r3");
  });

  it("refuses groups past their limits", () => {
    expectFailure({ type: "createGroup", requestId: "r1", title: "", memberUserIds: [] }, "invalid_field", "r1");
    expectFailure(
      { type: "createGroup", requestId: "r2", title: "t".repeat(groupTitleLengthMax + 1), memberUserIds: [] },
      "invalid_field",
      "r2",
    );
    expectFailure({ type: "createGroup", requestId: "r3", title: "t", memberUserIds: userIds(groupMembersMax) }, "invalid_field", "r3");
    expectFailure({ type: "createGroup", requestId: "r4", title: "t", memberUserIds: ["bob", "bob"] }, "invalid_field", "r4");
    expectFailure({ type: "addMembers", requestId: "r5", conversationId: groupConversationId, userIds: [] }, "invalid_field", "r5");
    expectFailure(
      { type: "addMembers", requestId: "r6", conversationId: groupConversationId, userIds: userIds(addMembersBatchMax + 1) },
      "invalid_field",
      "r6",
    );
    expectFailure({ type: "addMembers", requestId: "r7", conversationId: groupConversationId, userIds: "bob" }, "invalid_field", "r7");
  });

  it.each([
    { beforeSeq: 0 },
    { beforeSeq: -1 },
    { beforeSeq: 1.5 },
    { beforeSeq: "3" },
    { beforeSeq: null },
    { limit: 0 },
    { limit: historyPageLimitMax + 1 },
    { limit: 2 ** 60 },
  ])("refuses the history page %j", (page) => {
    expectFailure({ type: "history", requestId: "r", conversationId, ...page }, "invalid_field", "r");
  });

  it("reads JSON's -0 in a numeric field as 0, so no -0 travels on (the fuzzer found it)", () => {
    const decoded = decodeClientFrame(
      '{"type":"hello","protocolVersion":2,"token":"t","resumeAfterSeq":-0,"conversations":[{"conversationId":"' +
        conversationId +
        '","afterSeq":-0}]}',
    );
    expect(decoded.ok).toBe(true);
    if (!decoded.ok || decoded.frame.type !== "hello") return;
    expect(Object.is(decoded.frame.resumeAfterSeq, 0)).toBe(true);
    expect(Object.is(decoded.frame.conversations?.[0]?.afterSeq, 0)).toBe(true);
  });

  it("decodes a hello with conversation cursors, and refuses a repeated or a malformed one", () => {
    const conversations = [
      { conversationId, afterSeq: 41 },
      { conversationId: groupConversationId, afterSeq: 0 },
    ];
    expect(decodeValue({ type: "hello", protocolVersion, token: "t", resumeAfterSeq: 3, conversations })).toEqual({
      ok: true,
      frame: { type: "hello", protocolVersion, token: "t", resumeAfterSeq: 3, conversations },
    });
    expectFailure({ type: "hello", protocolVersion, token: "t", conversations: [conversations[0], conversations[0]] }, "invalid_field");
    expectFailure({ type: "hello", protocolVersion, token: "t", conversations: [{ conversationId, afterSeq: -1 }] }, "invalid_field");
    expectFailure(
      { type: "hello", protocolVersion, token: "t", conversations: [{ conversationId: "victim.>", afterSeq: 1 }] },
      "invalid_field",
    );
    const tooMany = Array.from({ length: resumeConversationsMax + 1 }, (_, index) => ({
      conversationId: `g-${String(index).padStart(22, "0")}`,
      afterSeq: 0,
    }));
    expectFailure({ type: "hello", protocolVersion, token: "t", conversations: tooMany }, "invalid_field");
  });

  it("decodes a hello with a mailbox incarnation, and a synced and resync naming one (decision 0021)", () => {
    const mailboxIncarnation = "0b6f4f0e-4a4e-4c1c-9f57-5a1d2f3c4b5a";
    const hello = { type: "hello", protocolVersion, token: "t", resumeAfterSeq: 3, mailboxIncarnation };
    expect(decodeValue(hello)).toEqual({ ok: true, frame: hello });
    expect(expectFailure({ ...hello, mailboxIncarnation: "victim.>" }, "invalid_field")).toContain("$.mailboxIncarnation");
    expect(expectFailure({ ...hello, mailboxIncarnation: "" }, "invalid_field")).toContain("$.mailboxIncarnation");
    for (const frame of [
      { type: "synced", seq: 3, mailboxIncarnation },
      { type: "resync", headSeq: 0, mailboxIncarnation },
      { type: "synced", seq: 3 },
    ]) {
      expect(decodeServerFrame(JSON.stringify(frame))).toEqual({ ok: true, value: frame });
    }
  });

  it("refuses a hello with a bad version or token", () => {
    expectFailure({ type: "hello", protocolVersion: "1", token: "t" }, "invalid_field");
    expectFailure({ type: "hello", protocolVersion: -1, token: "t" }, "invalid_field");
    expectFailure({ type: "hello", protocolVersion, token: "" }, "invalid_field");
    expectFailure({ type: "hello", protocolVersion, token: "t".repeat(tokenLengthMax + 1) }, "invalid_field");
  });

  it("refuses a refresh without a requestId, with an empty or too long token, or with another field", () => {
    expectFailure({ type: "refresh", token: "t" }, "invalid_field");
    expectFailure({ type: "refresh", requestId: "k-1", token: "" }, "invalid_field", "k-1");
    expectFailure({ type: "refresh", requestId: "k-1", token: "t".repeat(tokenLengthMax + 1) }, "invalid_field", "k-1");
    expectFailure({ type: "refresh", requestId: "k-1", token: "t", userId: "bob" }, "invalid_field", "k-1");
  });

  it("never throws, whatever JSON arrives", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const result = decodeValue(value);
        if (!result.ok) expect(["malformed_frame", "unknown_frame_type", "invalid_field"]).toContain(result.failure.code);
      }),
      { numRuns: 300 },
    );
  });
});

describe("decodeServerFrame", () => {
  const message: Message = {
    conversationId,
    messageId: "01JBX3K6QZ8M2V4W9T7YH5R1CD",
    seq: 42,
    senderUserId: "alice",
    senderDeviceId: "laptop",
    clientMessageId: "6f1c2d9e-0b7a-4a53-9a57-2d1e8f1b0c11",
    body: "hello, Bob",
    sentAtMs: 1_730_000_000_000,
  };
  const serverFrames: ServerFrame[] = [
    { type: "welcome", protocolVersion, sessionId: "s-1", userId: "alice", deviceId: "laptop", cellId: "a", heartbeatIntervalMs: 25_000 },
    {
      type: "welcome",
      protocolVersion,
      sessionId: "s-2",
      userId: "alice",
      deviceId: "laptop",
      cellId: "a",
      heartbeatIntervalMs: 25_000,
      tokenExpiresAtMs: 1_730_003_600_000,
    },
    { type: "refreshed", requestId: "k-1", tokenExpiresAtMs: 1_730_007_200_000 },
    { type: "ack", requestId: "r1", conversationId, messageId: message.messageId, seq: 42, sentAtMs: message.sentAtMs },
    {
      type: "conversation",
      requestId: "r2",
      conversation: { conversationId: groupConversationId, kind: "group", title: "Team", memberUserIds: ["alice", "bob"], lastSeq: 0 },
    },
    {
      type: "conversation",
      requestId: "r3",
      conversation: { conversationId, kind: "direct", title: null, memberUserIds: ["alice", "bob"], lastSeq: 7 },
    },
    { type: "historyPage", requestId: "r4", conversationId, messages: [message], hasMore: true },
    { type: "historyPage", requestId: "r5", conversationId, messages: [], hasMore: false },
    {
      type: "event",
      seq: 3,
      event: {
        kind: "joined",
        conversationId: groupConversationId,
        conversationKind: "group",
        title: "Team",
        afterSeq: 0,
        addedByUserId: "alice",
      },
    },
    { type: "event", seq: 4, event: { kind: "receipt", conversationId, userId: "bob", readSeq: 42, deliveredSeq: 42 } },
    { type: "message", message },
    { type: "error", requestId: "r8", code: "overloaded", message: "too many sends pending", retryable: true, retryAfterMs: 120 },
    { type: "synced", seq: 3 },
    { type: "synced", seq: 0 },
    { type: "resync", headSeq: 12 },
    { type: "pong", requestId: "r6" },
    { type: "error", requestId: "r7", code: "not_a_member", message: "not a member of the conversation", retryable: false },
    { type: "error", code: "malformed_frame", message: "a frame must be one JSON object", retryable: false },
  ];

  it.each(serverFrames.map((frame) => [frame.type, frame] as const))("round-trips %s", (_type, frame) => {
    expect(decodeServerFrame(JSON.stringify(frame))).toEqual({ ok: true, value: frame });
  });

  it("round-trips an error frame for every error code", () => {
    for (const code of errorCodeList) {
      const frame: ServerFrame = { type: "error", requestId: "r", code, message: code, retryable: true };
      expect(decodeServerFrame(JSON.stringify(frame))).toEqual({ ok: true, value: frame });
    }
  });

  // docs/decisions/0010: what a newer edge may add must not break this client.
  it("ignores unknown fields, at every level", () => {
    expect(decodeServerFrame(JSON.stringify({ type: "pong", requestId: "r", extra: true }))).toEqual({
      ok: true,
      value: { type: "pong", requestId: "r" },
    });
    expect(decodeServerFrame(JSON.stringify({ type: "message", message: { ...message, reactions: [] }, shard: 3 }))).toEqual({
      ok: true,
      value: { type: "message", message },
    });
  });

  it("answers null for a frame of an unknown type, to be ignored", () => {
    expect(decodeServerFrame(JSON.stringify({ type: "inboxUpdate", unread: 3 }))).toEqual({ ok: true, value: null });
    expect(decodeServerFrame(JSON.stringify({ type: "not_owner", message: "" }))).toEqual({ ok: true, value: null });
  });

  it("keeps an unknown error code's retryable and retry-after, as internal", () => {
    expect(decodeServerFrame(JSON.stringify({ type: "error", code: "teapot", message: "", retryable: true, retryAfterMs: 50 }))).toEqual({
      ok: true,
      value: { type: "error", code: "internal", message: "", retryable: true, retryAfterMs: 50 },
    });
  });

  it("decodes a mailbox event of an unknown kind as unknown, so its seq still counts", () => {
    expect(decodeServerFrame(JSON.stringify({ type: "event", seq: 9, event: { kind: "left", conversationId } }))).toEqual({
      ok: true,
      value: { type: "event", seq: 9, event: { kind: "unknown", unknownKind: "left" } },
    });
  });

  it("refuses what a client relies on being well formed, and bad JSON", () => {
    expect(decodeServerFrame(JSON.stringify({ type: "message", message: { ...message, seq: 0 } })).ok).toBe(false);
    expect(
      decodeServerFrame(
        JSON.stringify({ type: "event", seq: 0, event: { kind: "receipt", conversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 } }),
      ).ok,
    ).toBe(false);
    expect(decodeServerFrame(JSON.stringify({ type: "event", seq: 1, event: { kind: "joined", conversationId } })).ok).toBe(false);
    expect(decodeServerFrame(JSON.stringify({ type: "event", seq: 1, event: { kind: 7 } })).ok).toBe(false);
    expect(decodeServerFrame(JSON.stringify({ type: "error", code: "teapot", message: "", retryable: "yes" })).ok).toBe(false);
    expect(
      decodeServerFrame(JSON.stringify({ type: "error", code: "overloaded", message: "", retryable: true, retryAfterMs: -1 })).ok,
    ).toBe(false);
    expect(decodeServerFrame(JSON.stringify({ type: 7 })).ok).toBe(false);
    expect(decodeServerFrame("{").ok).toBe(false);
  });
});

function userIds(count: number): string[] {
  return Array.from({ length: count }, (_, index) => `user${index}`);
}
