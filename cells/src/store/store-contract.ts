// The contract of ConversationStore as tests, registered once per implementation (memory and Postgres),
// so both keep the same behaviour. Each test uses fresh conversation ids, so one store serves them all.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { historyPageBytesMax, messageEventId, type MailboxEvent, type Message } from "@cellwire/protocol";
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

export function newUserId(): string {
  return `u${randomBytes(8).toString("hex")}`;
}

/** A mailbox event whose message is made up (mailboxes do not check that it exists). */
export function messageEvent(body = "hi", seq = 1): MailboxEvent {
  const message: Message = {
    conversationId: newGroupId(),
    messageId: randomBytes(12).toString("hex"),
    seq,
    senderUserId: "alice",
    senderDeviceId: "phone",
    clientMessageId: randomBytes(6).toString("hex"),
    body,
    sentAtMs: 1_700_000_000_123,
  };
  return { kind: "message", message };
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


    it("writes one outbox row per member with a new message, and none on a retry or a refusal", async () => {
      const conversationId = await group(["carol", "bob"]);
      const clientMessageId = nextClientMessageId();
      const first = await send(conversationId, "fan me out", "alice", clientMessageId);
      if (first.outcome !== "stored") throw new Error("expected stored");
      const eventId = messageEventId(first.message.messageId);
      const event: MailboxEvent = { kind: "message", message: first.message };
      expect(first.outbox.map((entry) => ({ ...entry, id: 0 }))).toEqual(
        ["alice", "bob", "carol"].map((recipientUserId) => ({ id: 0, conversationId, recipientUserId, eventId, event })),
      );
      const ids = first.outbox.map((entry) => entry.id);
      expect([...ids].sort((a, b) => a - b)).toEqual(ids);
      const retry = await send(conversationId, "fan me out", "alice", clientMessageId);
      expect(retry.outcome === "stored" && retry.outbox).toEqual([]);
      await send(conversationId, "not me", "mallory");
      const pending = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
      expect(pending).toEqual({ entries: first.outbox, malformed: [], lastId: ids.at(-1) });
    });

    it("pages a conversation's outbox in id order by cursor, by age, and deletes applied rows", async () => {
      const conversationId = await group(["bob"]);
      for (let index = 1; index <= 3; index++) await send(conversationId, `m${index}`);
      const all = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
      expect(all.entries.map((entry) => `${(entry.event.message.seq)}:${entry.recipientUserId}`)).toEqual([
        "1:alice",
        "1:bob",
        "2:alice",
        "2:bob",
        "3:alice",
        "3:bob",
      ]);
      const firstPage = await store().pendingOutbox({ olderThanMs: 0, limit: 4, afterId: 0, conversationId });
      expect(firstPage.entries).toEqual(all.entries.slice(0, 4));
      const secondPage = await store().pendingOutbox({ olderThanMs: 0, limit: 4, afterId: firstPage.lastId ?? 0, conversationId });
      expect(secondPage.entries).toEqual(all.entries.slice(4));
      expect(await store().pendingOutbox({ olderThanMs: 3_600_000, limit: 100, afterId: 0, conversationId })).toEqual({
        entries: [],
        malformed: [],
        lastId: undefined,
      });
      // Oldest first across conversations too: this conversation's rows follow every earlier row.
      const anywhere = await store().pendingOutbox({ olderThanMs: 0, limit: 3, afterId: (all.entries[0]?.id ?? 1) - 1 });
      expect(anywhere.entries).toEqual(all.entries.slice(0, 3));
      await store().markOutboxAttempt(all.entries.slice(0, 2).map((entry) => entry.id));
      await store().deleteOutbox([...all.entries.slice(0, 2).map((entry) => entry.id), Number.MAX_SAFE_INTEGER]);
      const left = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
      expect(left.entries).toEqual(all.entries.slice(2));
      await store().deleteOutbox([]);
    });

    it("appends mailbox events with seq 1, 2, … per user, idempotently per event id", async () => {
      const [user, other] = [newUserId(), newUserId()];
      const [first, second] = [messageEvent("one"), messageEvent("two")];
      expect(await store().appendMailbox(user, "e-1", first)).toEqual({ seq: 1, deduplicated: false });
      expect(await store().appendMailbox(user, "e-2", second)).toEqual({ seq: 2, deduplicated: false });
      expect(await store().appendMailbox(user, "e-1", second)).toEqual({ seq: 1, deduplicated: true });
      expect(await store().appendMailbox(other, "e-2", second)).toEqual({ seq: 1, deduplicated: false });
      expect(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).toEqual({
        events: [
          { seq: 1, event: first },
          { seq: 2, event: second },
        ],
        headSeq: 2,
        floorSeq: 0,
      });
    });

    it("pages a mailbox after a seq, within the limit, and answers head and floor alone for limit 0", async () => {
      const user = newUserId();
      const events = Array.from({ length: 5 }, (_, index) => messageEvent(`m${index + 1}`));
      for (const [index, event] of events.entries()) await store().appendMailbox(user, `e-${index}`, event);
      const page = async (afterSeq: number, limit: number) => {
        const result = await store().mailboxPage({ userId: user, afterSeq, limit });
        return { seqs: result.events.map((entry) => entry.seq), headSeq: result.headSeq, floorSeq: result.floorSeq };
      };
      expect(await page(0, 2)).toEqual({ seqs: [1, 2], headSeq: 5, floorSeq: 0 });
      expect(await page(2, 2)).toEqual({ seqs: [3, 4], headSeq: 5, floorSeq: 0 });
      expect(await page(4, 2)).toEqual({ seqs: [5], headSeq: 5, floorSeq: 0 });
      expect(await page(5, 2)).toEqual({ seqs: [], headSeq: 5, floorSeq: 0 });
      expect(await page(1, 0)).toEqual({ seqs: [], headSeq: 5, floorSeq: 0 });
      const third = await store().mailboxPage({ userId: user, afterSeq: 2, limit: 1 });
      expect(third.events).toEqual([{ seq: 3, event: events[2] }]);
      expect(await store().mailboxPage({ userId: newUserId(), afterSeq: 0, limit: 10 })).toEqual({ events: [], headSeq: 0, floorSeq: 0 });
    });

    it("cuts a mailbox page at the page byte budget, keeping at least one event", async () => {
      const user = newUserId();
      // JSON escapes each control character in six bytes: ~192 KiB per event, so two fit and three do not.
      const bodies = ["\u0001".repeat(32 * 1024), "\u0002".repeat(32 * 1024), "\u0003".repeat(32 * 1024)];
      expect(3 * 6 * 32 * 1024).toBeGreaterThan(historyPageBytesMax);
      for (const [index, body] of bodies.entries()) await store().appendMailbox(user, `big-${index}`, messageEvent(body));
      const first = await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 });
      expect(first.events.map((entry) => entry.seq)).toEqual([1, 2]);
      expect(first.events[1]?.event.message.body).toBe(bodies[1]);
      const rest = await store().mailboxPage({ userId: user, afterSeq: 2, limit: 10 });
      expect(rest.events.map((entry) => entry.seq)).toEqual([3]);
    });

    it("trims a mailbox up to a floor that only rises and never passes the head", async () => {
      const user = newUserId();
      for (let index = 1; index <= 4; index++) await store().appendMailbox(user, `e-${index}`, messageEvent(`m${index}`));
      expect(await store().trimMailbox(user, 2)).toBe(2);
      expect(await store().trimMailbox(user, 1)).toBe(2);
      const page = await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 });
      expect({ seqs: page.events.map((entry) => entry.seq), headSeq: page.headSeq, floorSeq: page.floorSeq }).toEqual({
        seqs: [3, 4],
        headSeq: 4,
        floorSeq: 2,
      });
      expect(await store().appendMailbox(user, "e-5", messageEvent("m5"))).toEqual({ seq: 5, deduplicated: false });
      expect(await store().appendMailbox(user, "e-3", messageEvent("again"))).toEqual({ seq: 3, deduplicated: true });
      expect(await store().trimMailbox(user, 99)).toBe(5);
      expect(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).toEqual({ events: [], headSeq: 5, floorSeq: 5 });
      expect(await store().appendMailbox(user, "e-6", messageEvent("m6"))).toEqual({ seq: 6, deduplicated: false });
      expect(await store().trimMailbox(newUserId(), 3)).toBe(0);
    });

    it(`keeps a mailbox gapless under ${options.concurrentAppends} concurrent appends, and dedupes concurrent duplicates`, async () => {
      const user = newUserId();
      const results = await Promise.all(
        Array.from({ length: options.concurrentAppends }, (_, index) => store().appendMailbox(user, `c-${index}`, messageEvent(`m${index}`))),
      );
      const seqs = results.map((result) => result.seq).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: options.concurrentAppends }, (_, index) => index + 1));
      const event = messageEvent("once");
      const duplicates = await Promise.all(Array.from({ length: 8 }, () => store().appendMailbox(user, "dup", event)));
      expect(new Set(duplicates.map((result) => result.seq))).toEqual(new Set([options.concurrentAppends + 1]));
      expect(duplicates.filter((result) => !result.deduplicated)).toHaveLength(1);
      const head = await store().mailboxPage({ userId: user, afterSeq: 0, limit: 0 });
      expect(head.headSeq).toBe(options.concurrentAppends + 1);
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

      it("keeps a mailbox gapless and unique when two owners append to it at once", async () => {
        const user = newUserId();
        const other = secondStore();
        const count = 60;
        const results = await Promise.all(
          Array.from({ length: count }, (_, index) => (index % 2 === 0 ? store() : other).appendMailbox(user, `two-${index % 40}`, messageEvent(`m${index}`))),
        );
        // 60 appends of 40 distinct events: 40 seqs, each duplicate answered with its event's seq.
        const bySeq = new Map<number, number>();
        for (const result of results) bySeq.set(result.seq, (bySeq.get(result.seq) ?? 0) + 1);
        expect([...bySeq.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, index) => index + 1));
        expect(results.filter((result) => !result.deduplicated)).toHaveLength(40);
        const page = await other.mailboxPage({ userId: user, afterSeq: 0, limit: 200 });
        expect(page.events.map((entry) => entry.seq)).toEqual(Array.from({ length: 40 }, (_, index) => index + 1));
        expect(page.headSeq).toBe(40);
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
