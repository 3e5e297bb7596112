import { describe, expect, it } from "vitest";
import { expectedReplyType, isIdempotent, isReplyOf } from "./request-kinds.ts";

describe("request kinds", () => {
  it.each([
    ["send", "ack", true],
    ["openDirect", "conversation", true],
    ["history", "historyPage", true],
    ["ping", "pong", true],
    ["createGroup", "conversation", true],
    ["addMembers", "conversation", false],
    ["watchPresence", "presenceSnapshot", true],
    ["typing", "typingAck", false],
  ] as const)("%s expects %s; idempotent: %s", (kind, replyType, idempotent) => {
    expect(expectedReplyType(kind)).toBe(replyType);
    expect(isIdempotent(kind)).toBe(idempotent);
  });

  it("matches a reply by its type", () => {
    expect(isReplyOf("ping", { type: "pong", requestId: "r1" })).toBe(true);
    expect(isReplyOf("send", { type: "pong", requestId: "r1" })).toBe(false);
  });
});
