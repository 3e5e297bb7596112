import { describe, expect, it } from "vitest";
import { membersReply } from "./members-reply.ts";
import { MemoryConversationStore } from "./store/memory-store.ts";

const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";

describe("membersReply", () => {
  it("answers a member with every member, sorted, and writes nothing", async () => {
    const store = new MemoryConversationStore();
    await store.createGroup({ conversationId, creatorUserId: "carol", title: "t", memberUserIds: ["alice", "bob"], epoch: 1 });
    expect(await membersReply(store, { type: "cell.members", conversationId, userId: "bob" })).toEqual({
      type: "cell.members",
      conversationId,
      memberUserIds: ["alice", "bob", "carol"],
    });
  });

  it("answers not_a_member to a non-member and for a conversation that does not exist", async () => {
    const store = new MemoryConversationStore();
    await store.createGroup({ conversationId, creatorUserId: "carol", title: "t", memberUserIds: [], epoch: 1 });
    expect(await membersReply(store, { type: "cell.members", conversationId, userId: "mallory" })).toMatchObject({ type: "cell.error", code: "not_a_member" });
    expect(await membersReply(store, { type: "cell.members", conversationId: "g-ZZZZZZZZZZZZZZZZZZZZZZ", userId: "carol" })).toMatchObject({
      type: "cell.error",
      code: "not_a_member",
    });
  });
});
