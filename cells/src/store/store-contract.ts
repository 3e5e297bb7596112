// The contract of ConversationStore as tests, registered once per implementation (memory and Postgres),
// so both keep the same behaviour. Each test uses fresh conversation ids, so one store serves them all.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { ConversationStore } from "./store.ts";

export type StoreContractOptions = {
  /** A store on the same data as the first (another pool, as a second owner would have); enables the two-owner test. */
  readonly secondStore?: () => ConversationStore;
  /** The groupMembersMax the store was built with. */
  readonly groupMembersMax: number;
  /** Appends racing on one conversation in the concurrency test. */
  readonly concurrentAppends: number;
};

export function newGroupId(): string {
  return `g-${randomBytes(16).toString("base64url")}`;
}

export function newDirectId(): string {
  return `d-${randomBytes(16).toString("base64url")}`;
}

let clientMessageCounter = 0;
function nextClientMessageId(): string {
  clientMessageCounter += 1;
  return `c${clientMessageCounter}-${randomBytes(4).toString("hex")}`;
}

export function registerStoreContract(name: string, store: () => ConversationStore, options: StoreContractOptions): void {
  describe(`ConversationStore contract: ${name}`, () => {
    async function group(members: string[] = ["bob", "carol"], creatorUserId = "alice"): Promise<string> {
      const conversationId = newGroupId();
      const result = await store().createGroup({ conversationId, creatorUserId, title: "team", memberUserIds: members });
      expect(result.outcome).toBe("conversation");
      return conversationId;
    }

    function send(conversationId: string, body: string, senderUserId = "alice", clientMessageId = nextClientMessageId()) {
      return store().appendMessage({ conversationId, senderUserId, senderDeviceId: "phone", clientMessageId, body });
    }

    it("stores a message with seq 1, then 2, and returns it whole", async () => {
      const conversationId = await group();
      const first = await send(conversationId, "hello 👋");
      const second = await send(conversationId, "again", "bob");
      if (first.outcome !== "stored" || second.outcome !== "stored") throw new Error("expected stored");
      expect(first.deduplicated).toBe(false);
      expect(first.message).toMatchObject({ conversationId, seq: 1, senderUserId: "alice", senderDeviceId: "phone", body: "hello 👋" });
      expect(second.message.seq).toBe(2);
      expect(second.message.messageId).not.toBe(first.message.messageId);
      expect(Math.abs(first.message.sentAtMs - Date.now())).toBeLessThan(60_000);
    });

    it("dedupes a retried send: same messageId, seq and body, no second message", async () => {
      const conversationId = await group();
      const clientMessageId = nextClientMessageId();
      const first = await send(conversationId, "original", "alice", clientMessageId);
      const retry = await send(conversationId, "changed on retry", "alice", clientMessageId);
      if (first.outcome !== "stored" || retry.outcome !== "stored") throw new Error("expected stored");
      expect(retry.deduplicated).toBe(true);
      expect(retry.message).toEqual(first.message);
      // The same clientMessageId from another sender is another message.
      const other = await send(conversationId, "bob's", "bob", clientMessageId);
      if (other.outcome !== "stored") throw new Error("expected stored");
      expect(other.deduplicated).toBe(false);
      expect(other.message.seq).toBe(2);
      const page = await store().history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 });
      if (page.outcome !== "history") throw new Error("expected history");
      expect(page.messages.map((message) => message.body)).toEqual(["original", "bob's"]);
    });

    it("refuses a sender who is not a member, and a conversation that does not exist", async () => {
      const conversationId = await group();
      expect(await send(conversationId, "let me in", "mallory")).toEqual({ outcome: "not_a_member" });
      expect(await send(newGroupId(), "anyone?")).toEqual({ outcome: "not_a_member" });
      // The refusal did not consume a seq.
      const stored = await send(conversationId, "first");
      expect(stored.outcome === "stored" && stored.message.seq).toBe(1);
    });

    it(`assigns seqs 1..n without gap or repeat under ${options.concurrentAppends} concurrent appends`, async () => {
      const conversationId = await group();
      const results = await Promise.all(
        Array.from({ length: options.concurrentAppends }, (_, index) => send(conversationId, `m${index}`, index % 2 === 0 ? "alice" : "bob")),
      );
      const seqs = results.map((result) => (result.outcome === "stored" ? result.message.seq : -1)).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: options.concurrentAppends }, (_, index) => index + 1));
      const conversation = await store().createGroup({ conversationId, creatorUserId: "alice", title: "team", memberUserIds: [] });
      expect(conversation.outcome === "conversation" && conversation.conversation.lastSeq).toBe(options.concurrentAppends);
    });

    it("dedupes concurrent retries of one send into one message", async () => {
      const conversationId = await group();
      const clientMessageId = nextClientMessageId();
      const results = await Promise.all(Array.from({ length: 8 }, () => send(conversationId, "once", "alice", clientMessageId)));
      const stored = results.flatMap((result) => (result.outcome === "stored" ? [result] : []));
      expect(stored).toHaveLength(8);
      expect(new Set(stored.map((result) => result.message.messageId)).size).toBe(1);
      expect(stored.filter((result) => !result.deduplicated)).toHaveLength(1);
      const next = await send(conversationId, "next");
      expect(next.outcome === "stored" && next.message.seq).toBe(2);
    });

    if (options.secondStore !== undefined) {
      const secondStore = options.secondStore;
      it("keeps seqs gapless and unique when two owners append to one conversation at once", async () => {
        const conversationId = await group();
        const other = secondStore();
        const count = 60;
        const results = await Promise.all(
          Array.from({ length: count }, (_, index) =>
            (index % 2 === 0 ? store() : other).appendMessage({
              conversationId,
              senderUserId: index % 3 === 0 ? "bob" : "alice",
              senderDeviceId: "phone",
              clientMessageId: nextClientMessageId(),
              body: `m${index}`,
            }),
          ),
        );
        const seqs = results.map((result) => (result.outcome === "stored" ? result.message.seq : -1)).sort((a, b) => a - b);
        expect(seqs).toEqual(Array.from({ length: count }, (_, index) => index + 1));
        const page = await other.history({ conversationId, userId: "carol", beforeSeq: null, limit: 200 });
        if (page.outcome !== "history") throw new Error("expected history");
        expect(page.messages.map((message) => message.seq)).toEqual(seqs);
      });
    }

    it("pages history newest first by beforeSeq, each page oldest first", async () => {
      const conversationId = await group();
      for (let index = 1; index <= 5; index++) await send(conversationId, `m${index}`);
      const bodies = async (beforeSeq: number | null) => {
        const page = await store().history({ conversationId, userId: "carol", beforeSeq, limit: 2 });
        if (page.outcome !== "history") throw new Error("expected history");
        return { bodies: page.messages.map((message) => message.body), hasMore: page.hasMore, firstSeq: page.messages[0]?.seq ?? null };
      };
      const newest = await bodies(null);
      expect(newest).toEqual({ bodies: ["m4", "m5"], hasMore: true, firstSeq: 4 });
      const middle = await bodies(newest.firstSeq);
      expect(middle).toEqual({ bodies: ["m2", "m3"], hasMore: true, firstSeq: 2 });
      expect(await bodies(middle.firstSeq)).toEqual({ bodies: ["m1"], hasMore: false, firstSeq: 1 });
      expect(await bodies(1)).toEqual({ bodies: [], hasMore: false, firstSeq: null });
      const all = await store().history({ conversationId, userId: "alice", beforeSeq: null, limit: 5 });
      expect(all.outcome === "history" && all.hasMore).toBe(false);
      expect(await store().history({ conversationId, userId: "mallory", beforeSeq: null, limit: 2 })).toEqual({ outcome: "not_a_member" });
    });

    it("opens a direct conversation idempotently, for either user, and refuses a third", async () => {
      const conversationId = newDirectId();
      const opened = await store().openDirect({ conversationId, userId: "alice", peerUserId: "bob" });
      expect(opened).toEqual({
        outcome: "conversation",
        conversation: { conversationId, kind: "direct", title: null, memberUserIds: ["alice", "bob"], lastSeq: 0 },
      });
      await send(conversationId, "hi bob");
      const again = await store().openDirect({ conversationId, userId: "bob", peerUserId: "alice" });
      expect(again.outcome === "conversation" && again.conversation).toMatchObject({ memberUserIds: ["alice", "bob"], lastSeq: 1 });
      expect(await store().openDirect({ conversationId, userId: "mallory", peerUserId: "alice" })).toEqual({ outcome: "not_a_member" });
      expect(await store().openDirect({ conversationId: newDirectId(), userId: "alice", peerUserId: "alice" })).toEqual({ outcome: "invalid_peer" });
      expect(await store().members(conversationId)).toEqual(["alice", "bob"]);
    });

    it("creates a group of creator ∪ members, idempotently on retry, within the member limit", async () => {
      const conversationId = newGroupId();
      const input = { conversationId, creatorUserId: "zoe", title: "Plans", memberUserIds: ["bob", "zoe", "Adam"] };
      const created = await store().createGroup(input);
      const expected = { conversationId, kind: "group", title: "Plans", memberUserIds: ["Adam", "bob", "zoe"], lastSeq: 0 };
      expect(created).toEqual({ outcome: "conversation", conversation: expected });
      expect(await store().createGroup(input)).toEqual({ outcome: "conversation", conversation: expected });
      expect(await store().createGroup({ ...input, creatorUserId: "mallory" })).toEqual({ outcome: "not_a_member" });
      const tooMany = Array.from({ length: options.groupMembersMax }, (_, index) => `user${index}`);
      expect(await store().createGroup({ ...input, conversationId: newGroupId(), memberUserIds: tooMany })).toEqual({ outcome: "too_many_members" });
      const full = tooMany.slice(0, options.groupMembersMax - 1);
      const atLimit = await store().createGroup({ ...input, conversationId: newGroupId(), memberUserIds: full });
      expect(atLimit.outcome === "conversation" && atLimit.conversation.memberUserIds.length).toBe(options.groupMembersMax);
      expect(await store().members(newGroupId())).toEqual([]);
    });

    it("adds members to a group, refusing non-members, direct conversations and the member limit", async () => {
      const conversationId = await group(["bob"]);
      const added = await store().addMembers({ conversationId, userId: "bob", userIds: ["carol", "alice"] });
      expect(added.outcome === "conversation" && added.conversation.memberUserIds).toEqual(["alice", "bob", "carol"]);
      const carolSends = await send(conversationId, "hi all", "carol");
      expect(carolSends.outcome).toBe("stored");
      expect(await store().addMembers({ conversationId, userId: "mallory", userIds: ["mallory"] })).toEqual({ outcome: "not_a_member" });
      expect(await store().addMembers({ conversationId: newGroupId(), userId: "alice", userIds: ["bob"] })).toEqual({ outcome: "not_a_member" });
      const directId = newDirectId();
      await store().openDirect({ conversationId: directId, userId: "alice", peerUserId: "bob" });
      expect(await store().addMembers({ conversationId: directId, userId: "alice", userIds: ["carol"] })).toEqual({ outcome: "not_a_group" });
      const room = options.groupMembersMax - 3;
      const fill = Array.from({ length: room }, (_, index) => `fill${index}`);
      const filled = await store().addMembers({ conversationId, userId: "alice", userIds: fill });
      expect(filled.outcome === "conversation" && filled.conversation.memberUserIds.length).toBe(options.groupMembersMax);
      expect(await store().addMembers({ conversationId, userId: "alice", userIds: ["one-too-many"] })).toEqual({ outcome: "too_many_members" });
      // Users already in the group do not count against the limit.
      const repeat = await store().addMembers({ conversationId, userId: "alice", userIds: ["bob"] });
      expect(repeat.outcome).toBe("conversation");
    });
  });
}
