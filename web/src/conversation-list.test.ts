import { describe, expect, it } from "vitest";
import { ConversationList, displayedConversationsMax, formatConversationLine } from "./conversation-list.ts";

describe("ConversationList", () => {
  it("lists each conversation once, newest first, and drops the oldest beyond its capacity", () => {
    const list = new ConversationList(2);
    expect(list.add("d-1")).toEqual({ evictedCount: 0 });
    expect(list.add("d-1")).toBeNull();
    expect(list.add("g-2")).toEqual({ evictedCount: 0 });
    expect(list.add("g-3")).toEqual({ evictedCount: 1 });
    expect(list.size).toBe(2);
    expect(list.has("d-1")).toBe(false);
    expect(list.has("g-3")).toBe(true);
    list.clear();
    expect(list.size).toBe(0);
    expect(displayedConversationsMax).toBe(20);
  });
});

describe("formatConversationLine", () => {
  it("names the kind, the title of a group and who added the user", () => {
    expect(formatConversationLine({ conversationKind: "direct", title: null, addedByUserId: "bob" }, "alice")).toBe(
      "direct conversation, opened by bob",
    );
    expect(formatConversationLine({ conversationKind: "direct", title: null, addedByUserId: "alice" }, "alice")).toBe(
      "direct conversation, opened by you",
    );
    expect(formatConversationLine({ conversationKind: "group", title: "team", addedByUserId: "carol" }, "alice")).toBe(
      'group "team", added by carol',
    );
    expect(formatConversationLine({ conversationKind: "group", title: null, addedByUserId: "alice" }, "alice")).toBe(
      'group "untitled", added by you',
    );
  });
});
