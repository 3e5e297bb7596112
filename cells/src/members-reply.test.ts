import { describe, expect, it } from "vitest";
import { membersReply } from "./members-reply.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";

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

  it("answers a conversation whose members changed with the new list (the version stays inside the cell)", async () => {
    const store = new MemoryConversationStore();
    await store.createGroup({ conversationId, creatorUserId: "carol", title: "t", memberUserIds: ["bob"], epoch: 1 });
    await store.addMembers({ conversationId, userId: "bob", userIds: ["dave"], epoch: 1 });
    expect(await store.members(conversationId)).toMatchObject({ membersVersion: 1 });
    expect(await membersReply(store, { type: "cell.members", conversationId, userId: "dave" })).toEqual({
      type: "cell.members",
      conversationId,
      memberUserIds: ["bob", "carol", "dave"],
    });
  });

  it("is served while the conversation is frozen, answers moving while it imports and cell.moved once it left", async () => {
    const store = new MemoryConversationStore();
    await store.createGroup({ conversationId, creatorUserId: "carol", title: "t", memberUserIds: ["bob"], epoch: 1 });
    const request = { type: "cell.members", conversationId, userId: "bob" } as const;
    await store.freeze({ kind: "conversation", id: conversationId, toCellId: "b", epoch: 1 });
    expect(await membersReply(store, request)).toMatchObject({ type: "cell.members", memberUserIds: ["bob", "carol"] });
    await store.tombstone({ kind: "conversation", id: conversationId, toCellId: "b", movedEpoch: 7, epoch: 1 });
    expect(await membersReply(store, request)).toEqual({
      type: "cell.moved",
      kind: "conversation",
      id: conversationId,
      cellId: "b",
      epoch: 7,
    });
    const importing = "g-IIIIIIIIIIIIIIIIIIIIII";
    await store.importPage({
      kind: "conversation",
      id: importing,
      epoch: 1,
      first: true,
      last: false,
      lastSeq: 0,
      conversation: { kind: "group", title: "t", createdByUserId: "carol", createdAtMs: 1 },
      members: [{ userId: "bob", joinedAtMs: 1, joinedAfterSeq: 0, readSeq: 0, deliveredSeq: 0 }],
      messages: [],
      outbox: [],
    });
    expect(await membersReply(store, { ...request, conversationId: importing })).toMatchObject({ type: "cell.error", code: "moving" });
  });

  it("answers not_a_member to a non-member and for a conversation that does not exist", async () => {
    const store = new MemoryConversationStore();
    await store.createGroup({ conversationId, creatorUserId: "carol", title: "t", memberUserIds: [], epoch: 1 });
    expect(await membersReply(store, { type: "cell.members", conversationId, userId: "mallory" })).toMatchObject({
      type: "cell.error",
      code: "not_a_member",
    });
    expect(await membersReply(store, { type: "cell.members", conversationId: "g-ZZZZZZZZZZZZZZZZZZZZZZ", userId: "carol" })).toMatchObject({
      type: "cell.error",
      code: "not_a_member",
    });
  });
});
