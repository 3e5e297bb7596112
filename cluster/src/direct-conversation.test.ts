import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { conversationIdPattern } from "@cellwire/protocol";
import { devDirectConversationKey, directConversationId, keyedGroupConversationId } from "./direct-conversation.ts";

const key = "a deployment's own secret, 32 characters or more";

describe("directConversationId", () => {
  it("names one conversation per pair, whichever user opens it, as a valid direct id", () => {
    const id = directConversationId(key, "alice", "bob");
    expect(directConversationId(key, "bob", "alice")).toBe(id);
    expect(id).toMatch(conversationIdPattern);
    expect(id.startsWith("d-")).toBe(true);
    expect(directConversationId(key, "alice", "carol")).not.toBe(id);
  });

  it("cannot be computed from the pair without the deployment's key", () => {
    const digestOfPair = `d-${createHash("sha256").update("alice\nbob").digest("base64url").slice(0, 22)}`;
    expect(directConversationId(key, "alice", "bob")).not.toBe(digestOfPair);
    expect(directConversationId(devDirectConversationKey, "alice", "bob")).not.toBe(directConversationId(key, "alice", "bob"));
  });

  it("refuses a key too short to be a secret", () => {
    expect(() => directConversationId("short", "alice", "bob")).toThrow(RangeError);
  });
});

describe("keyedGroupConversationId", () => {
  it("names one group per creator and clientGroupId, as a valid group id no pair of users derives", () => {
    const id = keyedGroupConversationId(key, "alice", "k-1");
    expect(keyedGroupConversationId(key, "alice", "k-1")).toBe(id);
    expect(id).toMatch(conversationIdPattern);
    expect(id.startsWith("g-")).toBe(true);
    // Another creator, another key or another deployment's secret: another group.
    expect(
      new Set([
        id,
        keyedGroupConversationId(key, "bob", "k-1"),
        keyedGroupConversationId(key, "alice", "k-2"),
        keyedGroupConversationId(`${key}!`, "alice", "k-1"),
      ]).size,
    ).toBe(4);
    expect(id.slice(2)).not.toBe(directConversationId(key, "alice", "k-1").slice(2));
    expect(() => keyedGroupConversationId("short", "alice", "k-1")).toThrow(RangeError);
  });
});
