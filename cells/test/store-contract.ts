// The contract of ConversationStore as tests, registered once per implementation (memory and Postgres),
// so both keep the same behaviour. Each test uses fresh conversation ids, so one store serves them all.
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  groupTitleLengthMax,
  historyPageBytesMax,
  joinedEventId,
  type InventoryKey,
  type JoinedEvent,
  type MailboxEvent,
} from "@cellwire/protocol";
import { postgresErrorCode, uniqueViolation } from "../src/store/errors.ts";
import type {
  AppendMailboxResult,
  AppendMessageInput,
  AppendMessageResult,
  ConversationResult,
  ConversationStore,
  FrozenKey,
  MailboxPage,
  MailboxPageResult,
  MessagesAfterResult,
  MigrationKey,
  OutboxEntry,
  StoreRefusal,
} from "../src/store/store.ts";
import { sendKey } from "../src/store/store.ts";

export type StoreContractOptions = {
  /** A store on the same data as the first (another pool, as a second owner would have); enables the two-owner tests. */
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

/**
 * A mailbox event of its own conversation (mailboxes do not check that it exists), so each has its own
 * event id; `label` is its title, which tests read back to tell events apart.
 */
export function joinedEvent(label = "hi", afterSeq = 0): JoinedEvent {
  return { kind: "joined", conversationId: newGroupId(), conversationKind: "group", title: label, afterSeq, addedByUserId: "alice" };
}

/** The label (title) of a mailbox event made by joinedEvent, or its kind for any other event. */
export function labelOf(event: MailboxEvent): string {
  return event.kind === "joined" ? (event.title ?? "(untitled)") : `(${event.kind})`;
}

/** The epoch of the tests that are not about fencing: every write is made under it. */
const baseEpoch = 1;

/** The seq of an append that was expected to succeed. */
function seqOf(result: AppendMailboxResult): number {
  if (result.outcome !== "appended") throw new Error(`expected an append, got ${result.outcome}`);
  return result.seq;
}

/** The page of a mailbox that is not migrating, without its incarnation (see incarnationOf). */
export function pageOf(result: MailboxPageResult): Omit<MailboxPage, "incarnation"> {
  if (result.outcome !== "page") throw new Error(`expected a mailbox page, got ${result.outcome}`);
  const { events, headSeq, floorSeq } = result;
  return { events, headSeq, floorSeq };
}

/** The incarnation a mailbox page names (null for a user without a mailbox). */
function incarnationOf(result: MailboxPageResult): string | null {
  if (result.outcome !== "page") throw new Error(`expected a mailbox page, got ${result.outcome}`);
  return result.incarnation;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** One word per send of a batch: `seq:body` when stored (`=` first when deduplicated), else the outcome. */
export function outcomes(results: readonly AppendMessageResult[]): string[] {
  return results.map((result) =>
    result.outcome === "stored" ? `${result.deduplicated ? "=" : ""}${result.message.seq}:${result.message.body}` : result.outcome,
  );
}

/** The outbox rows a conversation write returned (it must have succeeded). */
function outboxOf(result: ConversationResult<StoreRefusal>): readonly OutboxEntry[] {
  if (result.outcome !== "conversation") throw new Error(`expected a conversation, got ${result.outcome}`);
  return result.outbox;
}

/** Postgres's code for a transaction it aborted to break a deadlock. */
const deadlockDetected = "40P01";
let clientMessageCounter = 0;
function nextClientMessageId(): string {
  clientMessageCounter += 1;
  return `c${clientMessageCounter}-${randomBytes(4).toString("hex")}`;
}

export function registerStoreContract(name: string, store: () => ConversationStore, options: StoreContractOptions): void {
  describe(`ConversationStore contract: ${name}`, () => {
    async function group(members: string[] = ["bob", "carol"], creatorUserId = "alice"): Promise<string> {
      const conversationId = newGroupId();
      const result = await store().createGroup({ epoch: baseEpoch, conversationId, creatorUserId, title: "team", memberUserIds: members });
      expect(result.outcome).toBe("conversation");
      return conversationId;
    }

    function send(
      conversationId: string,
      body: string,
      senderUserId = "alice",
      clientMessageId = nextClientMessageId(),
      epoch = baseEpoch,
    ) {
      return store().appendMessage({ epoch, conversationId, senderUserId, senderDeviceId: "phone", clientMessageId, body });
    }

    function input(
      conversationId: string,
      body: string,
      senderUserId = "alice",
      clientMessageId = nextClientMessageId(),
      epoch = baseEpoch,
    ): AppendMessageInput {
      return { epoch, conversationId, senderUserId, senderDeviceId: "phone", clientMessageId, body };
    }

    /** The bodies of a conversation's log, oldest first, read by a member. */
    async function logOf(conversationId: string, userId = "alice"): Promise<string[]> {
      const page = await store().history({ conversationId, userId, beforeSeq: null, limit: 200 });
      if (page.outcome === "not_a_member") return [];
      if (page.outcome !== "history") throw new Error(`expected history, got ${page.outcome}`);
      return page.messages.map((message) => message.body);
    }

    /**
     * A batch, run again when Postgres gave up on it (a deadlock, or a concurrent duplicate twice in a row):
     * as the edge retries a failed batch, with the same client message ids.
     */
    async function appendRetrying(
      target: ConversationStore,
      inputs: readonly AppendMessageInput[],
      attemptsMax = 10,
    ): Promise<AppendMessageResult[]> {
      for (let attempt = 1; ; attempt++) {
        try {
          return await target.appendMessages(inputs);
        } catch (error) {
          const code = postgresErrorCode(error);
          if (attempt >= attemptsMax || (code !== deadlockDetected && code !== uniqueViolation)) throw error;
        }
      }
    }

    async function memberIds(conversationId: string): Promise<string[]> {
      const result = await store().members(conversationId);
      if (result.outcome !== "members") throw new Error(`expected members, got ${result.outcome}`);
      return result.memberUserIds;
    }

    function appendMailbox(userId: string, eventId: string, event: MailboxEvent, epoch = baseEpoch, target = store()) {
      return target.appendMailbox({ userId, eventId, event, epoch });
    }

    describe("receipts", () => {
      function mark(
        conversationId: string,
        userId: string,
        position: "read" | "delivered",
        seq: number,
        epoch = baseEpoch,
        fanOutMembersMax = 32,
      ) {
        return store().markReceipt({ epoch, conversationId, userId, position, seq, fanOutMembersMax });
      }

      it("raises read and delivered monotonically, read implying delivered, and refuses a seq beyond the last", async () => {
        const conversationId = await group(["bob"]);
        await send(conversationId, "one");
        await send(conversationId, "two");
        const delivered = await mark(conversationId, "bob", "delivered", 1);
        expect(delivered.outcome === "receipt" && [delivered.readSeq, delivered.deliveredSeq]).toEqual([0, 1]);
        const read = await mark(conversationId, "bob", "read", 2);
        expect(read.outcome === "receipt" && [read.readSeq, read.deliveredSeq]).toEqual([2, 2]);
        const lower = await mark(conversationId, "bob", "read", 1);
        expect(lower).toEqual({ outcome: "receipt", readSeq: 2, deliveredSeq: 2, outbox: [] });
        expect(await mark(conversationId, "bob", "read", 3)).toEqual({ outcome: "seq_beyond_last", lastSeq: 2 });
      });

      it("refuses a non-member and a conversation that does not exist", async () => {
        const conversationId = await group(["bob"]);
        await send(conversationId, "one");
        expect(await mark(conversationId, "mallory", "read", 1)).toEqual({ outcome: "not_a_member" });
        expect(await mark(newGroupId(), "bob", "read", 1)).toEqual({ outcome: "not_a_member" });
      });

      it("writes receipt outbox rows only when a position advances: read to every member, delivered to the others", async () => {
        const conversationId = await group(["bob", "carol"]);
        await send(conversationId, "one");
        await send(conversationId, "two");
        const read = await mark(conversationId, "bob", "read", 1);
        const event = { kind: "receipt", conversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 };
        expect(read.outcome === "receipt" && read.outbox.map((entry) => [entry.recipientUserId, entry.eventId, entry.event])).toEqual(
          ["alice", "bob", "carol"].map((userId) => [userId, `receipt-${conversationId}-bob-1-1`, event]),
        );
        const again = await mark(conversationId, "bob", "read", 1);
        expect(again.outcome === "receipt" && again.outbox).toEqual([]);
        const delivered = await mark(conversationId, "bob", "delivered", 2);
        expect(delivered.outcome === "receipt" && delivered.outbox.map((entry) => entry.recipientUserId)).toEqual(["alice", "carol"]);
        const pending = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
        expect(pending.entries.filter((entry) => entry.event.kind === "receipt")).toHaveLength(5);
      });

      it("sends the receipts of a group above the fan-out limit only to the reader's own mailbox", async () => {
        const conversationId = await group(["bob", "carol"]);
        await send(conversationId, "one");
        const read = await mark(conversationId, "bob", "read", 1, baseEpoch, 2);
        expect(read.outcome === "receipt" && read.outbox.map((entry) => entry.recipientUserId)).toEqual(["bob"]);
        const delivered = await mark(conversationId, "carol", "delivered", 1, baseEpoch, 2);
        expect(delivered.outcome === "receipt" && [delivered.deliveredSeq, delivered.outbox.length]).toEqual([1, 0]);
      });

      it("fences a receipt under a lower epoch without writing", async () => {
        const conversationId = newGroupId();
        await store().createGroup({ epoch: 5, conversationId, creatorUserId: "alice", title: "team", memberUserIds: ["bob"] });
        await send(conversationId, "one", "alice", nextClientMessageId(), 5);
        expect(await mark(conversationId, "bob", "read", 1, 4)).toEqual({ outcome: "fenced" });
        const after = await mark(conversationId, "bob", "delivered", 1, 5);
        // The fenced read wrote nothing: delivered moves now, and read is still 0.
        expect(after.outcome === "receipt" && [after.readSeq, after.deliveredSeq, after.outbox.length]).toEqual([0, 1, 1]);
      });
    });

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
      const retry = await send(conversationId, "original", "alice", clientMessageId);
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

    it("refuses a reused clientMessageId with another body (client_message_id_reused), storing nothing and keeping the original", async () => {
      const conversationId = await group();
      const clientMessageId = nextClientMessageId();
      const first = await send(conversationId, "original", "alice", clientMessageId);
      expect(await send(conversationId, "another message", "alice", clientMessageId)).toEqual({ outcome: "client_message_id_reused" });
      // A true retry is still answered with the original, after the refusal as before it.
      expect(await send(conversationId, "original", "alice", clientMessageId)).toEqual(
        first.outcome === "stored" ? { outcome: "stored", message: first.message, deduplicated: true } : undefined,
      );
      const page = await store().history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 });
      if (page.outcome !== "history") throw new Error("expected history");
      expect(page.messages.map((message) => message.body)).toEqual(["original"]);
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
        Array.from({ length: options.concurrentAppends }, (_, index) =>
          send(conversationId, `m${index}`, index % 2 === 0 ? "alice" : "bob"),
        ),
      );
      const seqs = results.map((result) => (result.outcome === "stored" ? result.message.seq : -1)).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: options.concurrentAppends }, (_, index) => index + 1));
      const conversation = await store().createGroup({
        epoch: baseEpoch,
        conversationId,
        creatorUserId: "alice",
        title: "team",
        memberUserIds: [],
      });
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

    it("writes no outbox row for a message: its members read it from the conversation's log", async () => {
      const conversationId = await group(["carol", "bob"]);
      const before = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
      const clientMessageId = nextClientMessageId();
      await send(conversationId, "logged once", "alice", clientMessageId);
      await send(conversationId, "logged once", "alice", clientMessageId);
      await send(conversationId, "not me", "mallory");
      await store().appendMessages([input(conversationId, "batched"), input(conversationId, "batched too", "bob")]);
      expect(await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).toEqual(before);
      expect(before.entries.map((entry) => entry.event.kind)).toEqual(["joined", "joined", "joined"]);
    });

    describe("joined outbox rows", () => {
      /** The joined event every row of `entries` must carry, and the recipients in row order. */
      function joinedRows(entries: readonly OutboxEntry[]): { recipients: string[]; events: MailboxEvent[]; eventIds: string[] } {
        const ids = entries.map((entry) => entry.id);
        expect([...ids].sort((a, b) => a - b)).toEqual(ids);
        return {
          recipients: entries.map((entry) => entry.recipientUserId),
          events: entries.map((entry) => entry.event),
          eventIds: entries.map((entry) => entry.eventId),
        };
      }

      async function pendingOf(conversationId: string): Promise<OutboxEntry[]> {
        return (await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries;
      }

      it("writes one for each of a direct conversation's two users, joined after seq 0, and none when it is opened again", async () => {
        const conversationId = newDirectId();
        const opened = await store().openDirect({ epoch: baseEpoch, conversationId, userId: "bob", peerUserId: "alice" });
        const event: JoinedEvent = {
          kind: "joined",
          conversationId,
          conversationKind: "direct",
          title: null,
          afterSeq: 0,
          addedByUserId: "bob",
        };
        expect(joinedRows(outboxOf(opened))).toEqual({
          recipients: ["alice", "bob"],
          events: [event, event],
          eventIds: [joinedEventId(event), joinedEventId(event)],
        });
        expect(joinedEventId(event)).toBe(`joined-${conversationId}`);
        expect(outboxOf(opened).every((entry) => entry.conversationId === conversationId)).toBe(true);
        await send(conversationId, "hi");
        expect(outboxOf(await store().openDirect({ epoch: baseEpoch, conversationId, userId: "alice", peerUserId: "bob" }))).toEqual([]);
        expect(await pendingOf(conversationId)).toEqual(outboxOf(opened));
      });

      it("writes one per member of a new group, its creator included, and nothing new on a retried create", async () => {
        const conversationId = newGroupId();
        const create = { epoch: baseEpoch, conversationId, creatorUserId: "zoe", title: "Plans", memberUserIds: ["bob", "Adam"] };
        const created = await store().createGroup(create);
        const event: JoinedEvent = {
          kind: "joined",
          conversationId,
          conversationKind: "group",
          title: "Plans",
          afterSeq: 0,
          addedByUserId: "zoe",
        };
        expect(joinedRows(outboxOf(created))).toEqual({
          recipients: ["Adam", "bob", "zoe"],
          events: [event, event, event],
          eventIds: Array(3).fill(`joined-${conversationId}`),
        });
        const retried = await store().createGroup(create);
        expect(retried).toMatchObject({ outcome: "conversation", outbox: [] });
        expect(await pendingOf(conversationId)).toEqual(outboxOf(created));
      });

      it("writes one per new member of addMembers, joined after the conversation's last seq, and none for members already in", async () => {
        const conversationId = await group(["bob"]);
        const createdRows = await pendingOf(conversationId);
        for (let index = 1; index <= 3; index++) await send(conversationId, `m${index}`);
        const added = await store().addMembers({
          epoch: baseEpoch,
          conversationId,
          userId: "bob",
          userIds: ["dave", "alice", "carol", "dave"],
        });
        const event: JoinedEvent = {
          kind: "joined",
          conversationId,
          conversationKind: "group",
          title: "team",
          afterSeq: 3,
          addedByUserId: "bob",
        };
        expect(joinedRows(outboxOf(added))).toEqual({
          recipients: ["carol", "dave"],
          events: [event, event],
          eventIds: Array(2).fill(`joined-${conversationId}`),
        });
        await send(conversationId, "m4", "dave");
        // Nobody new: no row.
        expect(await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["bob", "dave"] })).toMatchObject({
          outcome: "conversation",
          outbox: [],
        });
        const erin = await store().addMembers({ epoch: baseEpoch, conversationId, userId: "dave", userIds: ["erin"] });
        expect(outboxOf(erin).map((entry) => [entry.recipientUserId, entry.event])).toEqual([
          ["erin", { ...event, afterSeq: 4, addedByUserId: "dave" }],
        ]);
        expect(await pendingOf(conversationId)).toEqual([...createdRows, ...outboxOf(added), ...outboxOf(erin)]);
      });
    });

    it("pages a conversation's outbox (joined and receipt rows) in id order by cursor, by age, and deletes applied rows", async () => {
      const conversationId = await group(["bob", "carol"]);
      await send(conversationId, "m1");
      expect(
        await store().markReceipt({ epoch: baseEpoch, conversationId, userId: "bob", position: "read", seq: 1, fanOutMembersMax: 32 }),
      ).toMatchObject({ outcome: "receipt" });
      const all = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
      expect(all.entries.map((entry) => `${entry.event.kind}:${entry.recipientUserId}`)).toEqual([
        "joined:alice",
        "joined:bob",
        "joined:carol",
        "receipt:alice",
        "receipt:bob",
        "receipt:carol",
      ]);
      const firstPage = await store().pendingOutbox({ olderThanMs: 0, limit: 4, afterId: 0, conversationId });
      expect(firstPage.entries).toEqual(all.entries.slice(0, 4));
      const secondPage = await store().pendingOutbox({ olderThanMs: 0, limit: 4, afterId: firstPage.lastId ?? 0, conversationId });
      expect(secondPage.entries).toEqual(all.entries.slice(4));
      expect(await store().pendingOutbox({ olderThanMs: 3_600_000, limit: 100, afterId: 0, conversationId })).toEqual({
        entries: [],
        malformed: [],
        lastId: undefined,
        retried: [],
      });
      // Oldest first across conversations too: this conversation's rows follow every earlier row.
      const anywhere = await store().pendingOutbox({ olderThanMs: 0, limit: 3, afterId: (all.entries[0]?.id ?? 1) - 1 });
      expect(anywhere.entries).toEqual(all.entries.slice(0, 3));
      await store().markOutboxAttempt(all.entries.slice(0, 2).map((entry) => ({ id: entry.id, retryAfterMs: 0, error: "unreachable" })));
      await store().deleteOutbox([...all.entries.slice(0, 2).map((entry) => entry.id), Number.MAX_SAFE_INTEGER]);
      const left = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
      expect(left.entries).toEqual(all.entries.slice(2));
      await store().deleteOutbox([]);
    });

    describe("relay retries and dead letters", () => {
      /** A group of alice, bob and carol with a receipt of bob's: joined rows then receipt rows, three each. */
      async function conversationWithRows(): Promise<{ conversationId: string; rows: OutboxEntry[]; bobRows: OutboxEntry[] }> {
        const conversationId = await group(["bob", "carol"]);
        await send(conversationId, "m1");
        expect(
          await store().markReceipt({ epoch: baseEpoch, conversationId, userId: "bob", position: "read", seq: 1, fanOutMembersMax: 32 }),
        ).toMatchObject({ outcome: "receipt" });
        const rows = (await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries;
        expect(rows).toHaveLength(6);
        return { conversationId, rows, bobRows: rows.filter((entry) => entry.recipientUserId === "bob") };
      }

      function ids(entries: readonly OutboxEntry[]): number[] {
        return entries.map((entry) => entry.id);
      }

      it("counts a failed relay, backs the row off, and keeps the recipient's newer rows out of a due-only read until its retry time", async () => {
        const { conversationId, rows, bobRows } = await conversationWithRows();
        const [bobJoined, bobReceipt] = bobRows;
        if (bobJoined === undefined || bobReceipt === undefined) throw new Error("bob has two rows");
        const query = { olderThanMs: 0, limit: 100, afterId: 0, conversationId };
        expect(
          await store().markOutboxAttempt([
            { id: bobJoined.id, retryAfterMs: 3_600_000, error: "cell b is gone" },
            { id: Number.MAX_SAFE_INTEGER, retryAfterMs: 0, error: "none" },
          ]),
        ).toEqual([{ id: bobJoined.id, attempts: 1 }]);
        // Every row is still read (a drain decides what waits), with the failed one marked.
        const page = await store().pendingOutbox(query);
        expect(page.entries).toEqual(rows);
        expect(page.retried).toEqual([{ id: bobJoined.id, attempts: 1, backingOff: true }]);
        // The sweeper's read leaves out bob's rows: the failed one and the newer one behind it.
        expect(ids((await store().pendingOutbox({ ...query, dueOnly: true })).entries)).toEqual(
          ids(rows.filter((entry) => entry.recipientUserId !== "bob")),
        );
        expect(await store().markOutboxAttempt([{ id: bobJoined.id, retryAfterMs: 0, error: "cell b is still gone" }])).toEqual([
          { id: bobJoined.id, attempts: 2 },
        ]);
        expect((await store().pendingOutbox(query)).retried).toEqual([{ id: bobJoined.id, attempts: 2, backingOff: false }]);
        expect(ids((await store().pendingOutbox({ ...query, dueOnly: true })).entries)).toEqual(ids(rows));
        await store().deleteOutbox(ids(rows));
      });

      it("moves a recipient's rows of a conversation to the dead letters whole, lists them by cursor, and redrives them whole with their ids", async () => {
        const { conversationId, rows, bobRows } = await conversationWithRows();
        const [bobJoined, bobReceipt] = bobRows;
        if (bobJoined === undefined || bobReceipt === undefined) throw new Error("bob has two rows");
        const other = await conversationWithRows();
        await store().markOutboxAttempt([{ id: bobJoined.id, retryAfterMs: 3_600_000, error: "cell b is gone" }]);
        expect(await store().deadLetterOutbox({ conversationId, recipientUserId: "bob", reason: "behind a failed row" })).toBe(2);
        expect(await store().deadLetterOutbox({ conversationId, recipientUserId: "nobody", reason: "none" })).toBe(0);
        expect(ids((await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries)).toEqual(
          ids(rows.filter((entry) => entry.recipientUserId !== "bob")),
        );
        expect(await store().deadLetteredRecipients(conversationId)).toEqual(["bob"]);
        expect(await store().deadLetteredRecipients(other.conversationId)).toEqual([]);
        const listed = (await store().deadLetters({ afterId: 0, limit: 1000 })).filter(
          (deadLetter) => deadLetter.conversationId === conversationId,
        );
        expect(listed).toEqual([
          {
            id: bobJoined.id,
            conversationId,
            recipientUserId: "bob",
            eventId: bobJoined.eventId,
            attempts: 1,
            lastError: "cell b is gone",
            createdAtMs: expect.any(Number),
            deadLetteredAtMs: expect.any(Number),
          },
          {
            id: bobReceipt.id,
            conversationId,
            recipientUserId: "bob",
            eventId: bobReceipt.eventId,
            attempts: 0,
            lastError: "behind a failed row",
            createdAtMs: expect.any(Number),
            deadLetteredAtMs: expect.any(Number),
          },
        ]);
        expect(listed[0]?.deadLetteredAtMs).toBeGreaterThanOrEqual(listed[0]?.createdAtMs ?? Infinity);
        expect(await store().deadLetters({ afterId: bobJoined.id, limit: 1 })).toEqual([listed[1]]);
        // Naming the newer row redrives the older one too: the recipient's rows go back together, in order, due, with no attempts.
        expect(await store().redriveDeadLetters({ ids: [bobReceipt.id] })).toEqual([bobJoined.id, bobReceipt.id]);
        const back = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId, dueOnly: true });
        expect(back.entries).toEqual(rows);
        expect(back.retried).toEqual([]);
        expect(await store().deadLetteredRecipients(conversationId)).toEqual([]);
        expect(await store().redriveDeadLetters({ ids: [bobReceipt.id] })).toEqual([]);
        // By count: the first dead letters by id, whole groups again.
        await store().deadLetterOutbox({ conversationId, recipientUserId: "bob", reason: "again" });
        await store().deadLetterOutbox({ conversationId: other.conversationId, recipientUserId: "carol", reason: "again" });
        expect(await store().redriveDeadLetters({ limit: 1 })).toEqual([bobJoined.id, bobReceipt.id]);
        expect(await store().deadLetteredRecipients(other.conversationId)).toEqual(["carol"]);
        expect(await store().redriveDeadLetters({ limit: 1 })).toEqual(
          ids(other.bobRows.length === 2 ? other.rows.filter((entry) => entry.recipientUserId === "carol") : []),
        );
        expect(await store().deadLetters({ afterId: 0, limit: 1000 })).toEqual([]);
        // By conversation (a live migration takes them along): that conversation's only.
        await store().deadLetterOutbox({ conversationId, recipientUserId: "bob", reason: "again" });
        expect(await store().redriveDeadLetters({ conversationId: other.conversationId })).toEqual([]);
        expect(await store().redriveDeadLetters({ conversationId })).toEqual([bobJoined.id, bobReceipt.id]);
        expect(await store().deadLetters({ afterId: 0, limit: 1000 })).toEqual([]);
        await store().deleteOutbox([...ids(rows), ...ids(other.rows)]);
      });
    });

    it("tells which sends are stored, by conversation, sender and clientMessageId, or can never be: their sender is no member (settledSends)", async () => {
      const [first, second] = [await group(["bob"]), await group(["bob"])];
      const prefix = nextClientMessageId();
      await store().appendMessages([input(first, "one", "alice", `${prefix}-1`), input(first, "two", "bob", `${prefix}-2`)]);
      const asked = [
        { conversationId: first, senderUserId: "alice", clientMessageId: `${prefix}-1` },
        { conversationId: first, senderUserId: "bob", clientMessageId: `${prefix}-1` },
        { conversationId: second, senderUserId: "alice", clientMessageId: `${prefix}-1` },
        { conversationId: first, senderUserId: "bob", clientMessageId: `${prefix}-2` },
        { conversationId: "g-nosuchconversation000", senderUserId: "bob", clientMessageId: `${prefix}-2` },
        { conversationId: first, senderUserId: "carol", clientMessageId: `${prefix}-3` },
      ];
      const expected = [asked[0], asked[3], asked[4], asked[5]].flatMap((key) => (key === undefined ? [] : [sendKey(key)]));
      expect([...(await store().settledSends(asked))].sort()).toEqual(expected.sort());
      expect((await store().settledSends([])).size).toBe(0);
    });

    describe("appendMessages (group commit)", () => {
      it("answers random batches as a model of the log does: each new key the next seq of its conversation, a known key its message, a non-member refused (property)", async () => {
        // Three conversations of alice and bob; carol is in none. Keys repeat across batches, never within one.
        const sendArbitrary = fc.record({ conversation: fc.nat(2), sender: fc.constantFrom("alice", "bob", "carol"), key: fc.nat(5) });
        const batchArbitrary = fc.uniqueArray(sendArbitrary, {
          minLength: 1,
          maxLength: 6,
          selector: (send) => `${send.conversation}/${send.sender}/${send.key}`,
        });
        await fc.assert(
          fc.asyncProperty(fc.array(batchArbitrary, { minLength: 1, maxLength: 5 }), async (batches) => {
            const conversations = [await group(["bob"]), await group(["bob"]), await group(["bob"])];
            const model = conversations.map(() => ({ seqByKey: new Map<string, number>(), lastSeq: 0 }));
            const prefix = nextClientMessageId();
            for (const batch of batches) {
              const inputs = batch.map((send) =>
                input(conversations[send.conversation] ?? "", `${send.sender}:${send.key}`, send.sender, `${prefix}-${send.key}`),
              );
              const expected = batch.map((send) => {
                const log = model[send.conversation];
                if (log === undefined) throw new Error("no model");
                const key = `${send.sender}/${send.key}`;
                const known = log.seqByKey.get(key);
                if (known !== undefined) return `=${known}:${send.sender}:${send.key}`;
                if (send.sender === "carol") return "not_a_member";
                log.lastSeq += 1;
                log.seqByKey.set(key, log.lastSeq);
                return `${log.lastSeq}:${send.sender}:${send.key}`;
              });
              expect(outcomes(await store().appendMessages(inputs))).toEqual(expected);
            }
            for (const [index, conversationId] of conversations.entries()) {
              expect((await logOf(conversationId)).length).toBe(model[index]?.lastSeq);
            }
          }),
          { numRuns: 25 },
        );
      });

      it("stores a batch across conversations in input order: consecutive seqs per conversation, results in input order", async () => {
        const [first, second] = [await group(["bob"]), await group(["carol"])];
        await send(first, "earlier 1");
        await send(first, "earlier 2");
        const results = await store().appendMessages([
          input(first, "a3"),
          input(second, "b1", "carol"),
          input(first, "a4", "bob"),
          input(second, "b2"),
          input(first, "a5"),
        ]);
        expect(outcomes(results)).toEqual(["3:a3", "1:b1", "4:a4", "2:b2", "5:a5"]);
        expect(results.map((result) => (result.outcome === "stored" ? result.message.conversationId : ""))).toEqual([
          first,
          second,
          first,
          second,
          first,
        ]);
        expect(new Set(results.map((result) => (result.outcome === "stored" ? result.message.messageId : ""))).size).toBe(5);
        expect(await logOf(first)).toEqual(["earlier 1", "earlier 2", "a3", "a4", "a5"]);
        expect(await logOf(second)).toEqual(["b1", "b2"]);
        expect(await store().appendMessages([])).toEqual([]);
      });

      it("answers each send of one batch on its own: stored, deduplicated, reused, not_a_member and fenced side by side", async () => {
        const [open, repeated, closed, ahead, reused] = [
          await group(["bob"]),
          await group(["bob"]),
          await group(["bob"]),
          newGroupId(),
          await group(),
        ];
        const repeatedId = nextClientMessageId();
        const original = await send(repeated, "original", "bob", repeatedId);
        const reusedId = nextClientMessageId();
        await send(reused, "kept", "alice", reusedId);
        await store().createGroup({ epoch: 9, conversationId: ahead, creatorUserId: "alice", title: "ahead", memberUserIds: [] });
        const results = await store().appendMessages(
          [
            input(open, "o1"),
            input(repeated, "original", "bob", repeatedId),
            input(closed, "let me in", "mallory"),
            input(ahead, "behind", "alice", nextClientMessageId(), 5),
            input(newGroupId(), "nowhere"),
            input(open, "o2", "bob"),
            input(repeated, "r2"),
            input(reused, "not the same", "alice", reusedId),
          ].map((send) => ({ ...send, epoch: 5 })),
        );
        expect(outcomes(results)).toEqual([
          "1:o1",
          "=1:original",
          "not_a_member",
          "fenced",
          "not_a_member",
          "2:o2",
          "2:r2",
          "client_message_id_reused",
        ]);
        expect(await logOf(reused)).toEqual(["kept"]);
        expect(results[1]).toEqual(
          original.outcome === "stored" ? { outcome: "stored", message: original.message, deduplicated: true } : undefined,
        );
        // The refusals wrote nothing and consumed no seq.
        expect(await logOf(closed)).toEqual([]);
        expect(await logOf(ahead)).toEqual([]);
        expect(outcomes([await send(closed, "first", "alice", nextClientMessageId(), 5)])).toEqual(["1:first"]);
        expect(outcomes([await send(ahead, "at 9", "alice", nextClientMessageId(), 9)])).toEqual(["1:at 9"]);
      });

      it("fences a batch under a stale epoch for a conversation written under a later one, and raises the epoch of the others", async () => {
        const [later, earlier] = [newGroupId(), newGroupId()];
        await store().createGroup({ epoch: 4, conversationId: later, creatorUserId: "alice", title: "t", memberUserIds: ["bob"] });
        await store().createGroup({ epoch: 2, conversationId: earlier, creatorUserId: "alice", title: "t", memberUserIds: ["bob"] });
        const batch = (epoch: number, label: string) =>
          store().appendMessages(
            [input(later, `${label} later`), input(earlier, `${label} earlier`), input(later, `${label} later again`, "bob")].map(
              (send) => ({ ...send, epoch }),
            ),
          );
        expect(outcomes(await batch(3, "at 3"))).toEqual(["fenced", "1:at 3 earlier", "fenced"]);
        // The batch raised `earlier` to epoch 3: a batch of epoch 2 is now stale there too.
        expect(outcomes(await batch(2, "at 2"))).toEqual(["fenced", "fenced", "fenced"]);
        expect(outcomes(await batch(4, "at 4"))).toEqual(["1:at 4 later", "2:at 4 earlier", "2:at 4 later again"]);
        expect(await logOf(later)).toEqual(["at 4 later", "at 4 later again"]);
        expect(await logOf(earlier)).toEqual(["at 3 earlier", "at 4 earlier"]);
      });

      it("answers moving for a frozen conversation (a repeat is still answered) and moved for a tombstone, storing the rest of the batch", async () => {
        const [frozen, tombstoned, open] = [await group(), await group(), await group()];
        const repeatedId = nextClientMessageId();
        const original = await send(frozen, "before the freeze", "alice", repeatedId);
        await store().freeze({ kind: "conversation", id: frozen, toCellId: "b", epoch: baseEpoch });
        await store().freeze({ kind: "conversation", id: tombstoned, toCellId: "b", epoch: baseEpoch });
        await store().tombstone({ kind: "conversation", id: tombstoned, toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        const results = await store().appendMessages([
          input(frozen, "during"),
          input(tombstoned, "late"),
          input(open, "fine"),
          input(frozen, "before the freeze", "alice", repeatedId),
        ]);
        expect(results).toEqual([
          { outcome: "moving" },
          { outcome: "moved", cellId: "b", epoch: 7 },
          expect.objectContaining({ outcome: "stored", deduplicated: false, message: expect.objectContaining({ seq: 1, body: "fine" }) }),
          original.outcome === "stored" ? { outcome: "stored", message: original.message, deduplicated: true } : undefined,
        ]);
        expect(await logOf(frozen)).toEqual(["before the freeze"]);
      });

      it("gives each new message the members version it was stored under, which only an addMembers that adds someone raises", async () => {
        const conversationId = await group(["bob"]);
        const versionOf = async (): Promise<number> => {
          const result = await store().members(conversationId);
          if (result.outcome !== "members") throw new Error(`expected members, got ${result.outcome}`);
          return result.membersVersion;
        };
        const storedVersion = (result: AppendMessageResult | undefined): number | undefined =>
          result?.outcome === "stored" && !result.deduplicated ? result.membersVersion : undefined;
        const initial = await versionOf();
        const [first] = await store().appendMessages([input(conversationId, "m1")]);
        expect(storedVersion(first)).toBe(initial);
        await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["dave"] });
        const grown = await versionOf();
        expect(grown).toBeGreaterThan(initial);
        const [second, third] = await store().appendMessages([input(conversationId, "m2", "dave"), input(conversationId, "m3")]);
        expect([storedVersion(second), storedVersion(third)]).toEqual([grown, grown]);
        // Nobody new, or refused: the version stays.
        await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["bob", "dave"] });
        await store().addMembers({ epoch: baseEpoch, conversationId, userId: "mallory", userIds: ["eve"] });
        expect(await versionOf()).toBe(grown);
        // A deduplicated answer carries no version: its message was published when it was stored.
        const repeat = await send(conversationId, "m1", "alice", first?.outcome === "stored" ? first.message.clientMessageId : "");
        expect(repeat).toEqual({ outcome: "stored", deduplicated: true, message: first?.outcome === "stored" ? first.message : undefined });
        expect(await store().members(newGroupId())).toEqual({ outcome: "members", memberUserIds: [], membersVersion: 0 });
      });
    });

    describe("messagesAfter", () => {
      function messagesAfter(conversationId: string, userId: string, afterSeq: number | null, limit = 10) {
        return store().messagesAfter({ conversationId, userId, afterSeq, limit });
      }

      /** afterSeq, the page's `seq:body`s and the head. */
      function pageSummary(result: MessagesAfterResult): { afterSeq: number; messages: string[]; headSeq: number } | MessagesAfterResult {
        if (result.outcome !== "messages") return result;
        return {
          afterSeq: result.afterSeq,
          messages: result.messages.map((message) => `${message.seq}:${message.body}`),
          headSeq: result.headSeq,
        };
      }

      it("pages a member's log after a cursor, within the limit, with the conversation's head", async () => {
        const conversationId = await group(["bob"]);
        for (let index = 1; index <= 5; index++) await send(conversationId, `m${index}`, index % 2 === 0 ? "bob" : "alice");
        expect(pageSummary(await messagesAfter(conversationId, "bob", 1, 2))).toEqual({
          afterSeq: 1,
          messages: ["2:m2", "3:m3"],
          headSeq: 5,
        });
        expect(pageSummary(await messagesAfter(conversationId, "bob", 3, 10))).toEqual({
          afterSeq: 3,
          messages: ["4:m4", "5:m5"],
          headSeq: 5,
        });
        expect(pageSummary(await messagesAfter(conversationId, "alice", 5, 10))).toEqual({ afterSeq: 5, messages: [], headSeq: 5 });
        expect(pageSummary(await messagesAfter(conversationId, "alice", 9, 10))).toEqual({ afterSeq: 9, messages: [], headSeq: 5 });
        // Whole messages, as stored.
        const history = await store().history({ conversationId, userId: "bob", beforeSeq: null, limit: 10 });
        const page = await messagesAfter(conversationId, "alice", 0, 10);
        expect(page.outcome === "messages" && page.messages).toEqual(history.outcome === "history" ? history.messages : undefined);
      });

      it("reads from the member's join point without a cursor: 0 for a creator, the last seq at the time for a member added later", async () => {
        const conversationId = await group(["bob"]);
        for (let index = 1; index <= 3; index++) await send(conversationId, `m${index}`);
        await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["dave"] });
        expect(pageSummary(await messagesAfter(conversationId, "dave", null))).toEqual({ afterSeq: 3, messages: [], headSeq: 3 });
        await send(conversationId, "m4", "dave");
        await send(conversationId, "m5");
        expect(pageSummary(await messagesAfter(conversationId, "dave", null))).toEqual({
          afterSeq: 3,
          messages: ["4:m4", "5:m5"],
          headSeq: 5,
        });
        expect(pageSummary(await messagesAfter(conversationId, "bob", null, 2))).toEqual({
          afterSeq: 0,
          messages: ["1:m1", "2:m2"],
          headSeq: 5,
        });
        // A cursor is followed as given, before the join point too (a member may read the whole log, as history).
        expect(pageSummary(await messagesAfter(conversationId, "dave", 1, 1))).toEqual({ afterSeq: 1, messages: ["2:m2"], headSeq: 5 });
      });

      it("cuts a page at the page byte budget, keeping at least one message", async () => {
        const conversationId = await group(["bob"]);
        // JSON escapes each control character in six bytes: ~192 KiB per message, so two fit and three do not.
        const bodies = ["\u0001".repeat(32 * 1024), "\u0002".repeat(32 * 1024), "\u0003".repeat(32 * 1024)];
        expect(3 * 6 * 32 * 1024).toBeGreaterThan(historyPageBytesMax);
        for (const body of bodies) await send(conversationId, body);
        const first = await messagesAfter(conversationId, "bob", 0);
        expect(first.outcome === "messages" && first.messages.map((message) => [message.seq, message.body])).toEqual([
          [1, bodies[0]],
          [2, bodies[1]],
        ]);
        expect(first.outcome === "messages" && first.headSeq).toBe(3);
        const rest = await messagesAfter(conversationId, "bob", 2);
        expect(rest.outcome === "messages" && rest.messages.map((message) => message.seq)).toEqual([3]);
      });

      it("answers not_a_member to a non-member, whatever the cursor, and for a conversation that does not exist", async () => {
        const conversationId = await group(["bob"]);
        await send(conversationId, "secret");
        expect(await messagesAfter(conversationId, "mallory", null)).toEqual({ outcome: "not_a_member" });
        expect(await messagesAfter(conversationId, "mallory", 0)).toEqual({ outcome: "not_a_member" });
        expect(await messagesAfter(newGroupId(), "bob", 0)).toEqual({ outcome: "not_a_member" });
        expect(await messagesAfter(newDirectId(), "bob", null)).toEqual({ outcome: "not_a_member" });
      });
    });

    it("appends mailbox events with seq 1, 2, … per user, idempotently per event id", async () => {
      const [user, other] = [newUserId(), newUserId()];
      const [first, second] = [joinedEvent("one"), joinedEvent("two")];
      expect(await appendMailbox(user, "e-1", first)).toEqual({ outcome: "appended", seq: 1, deduplicated: false });
      expect(await appendMailbox(user, "e-2", second)).toEqual({ outcome: "appended", seq: 2, deduplicated: false });
      expect(await appendMailbox(user, "e-1", second)).toEqual({ outcome: "appended", seq: 1, deduplicated: true });
      expect(await appendMailbox(other, "e-2", second)).toEqual({ outcome: "appended", seq: 1, deduplicated: false });
      expect(pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 }))).toEqual({
        events: [
          { seq: 1, event: first },
          { seq: 2, event: second },
        ],
        headSeq: 2,
        floorSeq: 0,
      });
    });

    it("names a mailbox by an incarnation made with its row: null before, then stable across appends, pages and trims, another for each user", async () => {
      const [user, other] = [newUserId(), newUserId()];
      const incarnation = async (userId: string, afterSeq = 0, limit = 10) =>
        incarnationOf(await store().mailboxPage({ userId, afterSeq, limit }));
      expect(await incarnation(user)).toBeNull();
      await appendMailbox(user, "e-1", joinedEvent("one"));
      const first = await incarnation(user);
      expect(first).toMatch(uuidPattern);
      await appendMailbox(user, "e-2", joinedEvent("two"));
      await appendMailbox(user, "e-1", joinedEvent("one"));
      await store().trimMailbox(user, 1);
      expect([await incarnation(user), await incarnation(user, 2, 10), await incarnation(user, 1, 0)]).toEqual([first, first, first]);
      await appendMailbox(other, "e-1", joinedEvent("one"));
      expect(await incarnation(other)).toMatch(uuidPattern);
      expect(await incarnation(other)).not.toBe(first);
    });

    it("pages a mailbox after a seq, within the limit, and answers head and floor alone for limit 0", async () => {
      const user = newUserId();
      const events = Array.from({ length: 5 }, (_, index) => joinedEvent(`m${index + 1}`));
      for (const [index, event] of events.entries()) await appendMailbox(user, `e-${index}`, event);
      const page = async (afterSeq: number, limit: number) => {
        const result = pageOf(await store().mailboxPage({ userId: user, afterSeq, limit }));
        return { seqs: result.events.map((entry) => entry.seq), headSeq: result.headSeq, floorSeq: result.floorSeq };
      };
      expect(await page(0, 2)).toEqual({ seqs: [1, 2], headSeq: 5, floorSeq: 0 });
      expect(await page(2, 2)).toEqual({ seqs: [3, 4], headSeq: 5, floorSeq: 0 });
      expect(await page(4, 2)).toEqual({ seqs: [5], headSeq: 5, floorSeq: 0 });
      expect(await page(5, 2)).toEqual({ seqs: [], headSeq: 5, floorSeq: 0 });
      expect(await page(1, 0)).toEqual({ seqs: [], headSeq: 5, floorSeq: 0 });
      const third = pageOf(await store().mailboxPage({ userId: user, afterSeq: 2, limit: 1 }));
      expect(third.events).toEqual([{ seq: 3, event: events[2] }]);
      expect(pageOf(await store().mailboxPage({ userId: newUserId(), afterSeq: 0, limit: 10 }))).toEqual({
        events: [],
        headSeq: 0,
        floorSeq: 0,
      });
    });

    it("cuts a mailbox page at the page byte budget, keeping at least one event", async () => {
      const user = newUserId();
      // JSON escapes each control character in six bytes: a title at its limit makes an event of about
      // 1.3 KiB, so 400 of them do not fit one page.
      const title = "\u0001".repeat(groupTitleLengthMax);
      const count = 400;
      const encodedBytes = (events: readonly unknown[]) =>
        events.reduce<number>((sum, event) => sum + new TextEncoder().encode(JSON.stringify(event)).length, 0);
      await Promise.all(Array.from({ length: count }, (_, index) => appendMailbox(user, `big-${index}`, joinedEvent(title))));
      const first = pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: count }));
      const kept = first.events.length;
      expect(kept).toBeGreaterThan(1);
      expect(kept).toBeLessThan(count);
      expect(first.events.map((entry) => entry.seq)).toEqual(Array.from({ length: kept }, (_, index) => index + 1));
      expect(encodedBytes(first.events)).toBeLessThanOrEqual(historyPageBytesMax);
      const rest = pageOf(await store().mailboxPage({ userId: user, afterSeq: kept, limit: count }));
      expect(rest.events.map((entry) => entry.seq)).toEqual(Array.from({ length: count - kept }, (_, index) => kept + index + 1));
      // The cut is at the budget: one more event would have passed it.
      expect(encodedBytes([...first.events, rest.events[0]])).toBeGreaterThan(historyPageBytesMax);
      expect(first.events[0] === undefined ? undefined : labelOf(first.events[0].event)).toBe(title);
    });

    it("trims a mailbox up to a floor that only rises and never passes the head", async () => {
      const user = newUserId();
      for (let index = 1; index <= 4; index++) await appendMailbox(user, `e-${index}`, joinedEvent(`m${index}`));
      expect(await store().trimMailbox(user, 2)).toBe(2);
      expect(await store().trimMailbox(user, 1)).toBe(2);
      const page = pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 }));
      expect({ seqs: page.events.map((entry) => entry.seq), headSeq: page.headSeq, floorSeq: page.floorSeq }).toEqual({
        seqs: [3, 4],
        headSeq: 4,
        floorSeq: 2,
      });
      expect(await appendMailbox(user, "e-5", joinedEvent("m5"))).toEqual({ outcome: "appended", seq: 5, deduplicated: false });
      expect(await appendMailbox(user, "e-3", joinedEvent("again"))).toEqual({ outcome: "appended", seq: 3, deduplicated: true });
      expect(await store().trimMailbox(user, 99)).toBe(5);
      expect(pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 }))).toEqual({ events: [], headSeq: 5, floorSeq: 5 });
      expect(await appendMailbox(user, "e-6", joinedEvent("m6"))).toEqual({ outcome: "appended", seq: 6, deduplicated: false });
      expect(await store().trimMailbox(newUserId(), 3)).toBe(0);
    });

    it(`keeps a mailbox gapless under ${options.concurrentAppends} concurrent appends, and dedupes concurrent duplicates`, async () => {
      const user = newUserId();
      const results = await Promise.all(
        Array.from({ length: options.concurrentAppends }, (_, index) => appendMailbox(user, `c-${index}`, joinedEvent(`m${index}`))),
      );
      const seqs = results.map(seqOf).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: options.concurrentAppends }, (_, index) => index + 1));
      const event = joinedEvent("once");
      const duplicates = await Promise.all(Array.from({ length: 8 }, () => appendMailbox(user, "dup", event)));
      expect(new Set(duplicates.map(seqOf))).toEqual(new Set([options.concurrentAppends + 1]));
      expect(duplicates.filter((result) => result.outcome === "appended" && !result.deduplicated)).toHaveLength(1);
      const head = pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 0 }));
      expect(head.headSeq).toBe(options.concurrentAppends + 1);
    });
    describe("live migration", () => {
      const moved = { outcome: "moved", cellId: "b", epoch: 7 } as const;
      const moving = { outcome: "moving" } as const;

      async function groupWithMessages(count: number, members: string[] = ["bob", "carol"]): Promise<string> {
        const conversationId = await group(members);
        for (let index = 1; index <= count; index++) await send(conversationId, `m${index}`, index % 2 === 0 ? "bob" : "alice");
        return conversationId;
      }

      it("refuses every write to a frozen conversation with moving, still serves reads, and takes writes again once unfrozen", async () => {
        const conversationId = await groupWithMessages(1);
        const clientMessageId = nextClientMessageId();
        const first = await send(conversationId, "before", "alice", clientMessageId);
        expect(await store().freeze({ kind: "conversation", id: conversationId, toCellId: "b", epoch: baseEpoch })).toEqual({
          outcome: "frozen",
          lastSeq: 2,
          floorSeq: 0,
          placeholder: false,
          incarnation: null,
        });
        expect(await send(conversationId, "during")).toEqual(moving);
        // A repeated send writes nothing: it is answered from the frozen conversation.
        expect(await send(conversationId, "before", "alice", clientMessageId)).toEqual(
          first.outcome === "stored" ? { outcome: "stored", message: first.message, deduplicated: true } : first,
        );
        expect(
          await store().createGroup({ epoch: baseEpoch, conversationId, creatorUserId: "alice", title: "team", memberUserIds: [] }),
        ).toEqual(moving);
        expect(await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["dave"] })).toEqual(moving);
        expect(
          await store().markReceipt({ epoch: baseEpoch, conversationId, userId: "bob", position: "read", seq: 1, fanOutMembersMax: 32 }),
        ).toEqual(moving);
        const history = await store().history({ conversationId, userId: "carol", beforeSeq: null, limit: 10 });
        expect(history.outcome === "history" && history.messages.map((message) => message.body)).toEqual(["m1", "before"]);
        expect(await memberIds(conversationId)).toEqual(["alice", "bob", "carol"]);
        // The log is served too: a device catching up on it is a read.
        expect(await store().messagesAfter({ conversationId, userId: "bob", afterSeq: 1, limit: 10 })).toMatchObject({
          outcome: "messages",
          afterSeq: 1,
          headSeq: 2,
          messages: [{ seq: 2, body: "before" }],
        });
        expect(await store().migrationState({ kind: "conversation", id: conversationId })).toEqual({
          state: "frozen",
          movingToCellId: "b",
          movedEpoch: null,
          lastSeq: 2,
          floorSeq: 0,
          placeholder: false,
          incarnation: null,
        });
        expect(await store().unfreeze({ kind: "conversation", id: conversationId, epoch: baseEpoch })).toEqual({ outcome: "active" });
        expect(await send(conversationId, "after")).toMatchObject({ outcome: "stored", message: { seq: 3 } });
      });

      it("answers a frozen conversation's non-member not_a_member, as for a conversation that does not exist, and its members moving", async () => {
        const conversationId = await groupWithMessages(1);
        const unknownId = newGroupId();
        expect(await store().freeze({ kind: "conversation", id: conversationId, toCellId: "b", epoch: baseEpoch })).toMatchObject({
          outcome: "frozen",
        });
        const notAMember = { outcome: "not_a_member" } as const;
        for (const id of [conversationId, unknownId]) {
          expect(await send(id, "let me in", "mallory")).toEqual(notAMember);
          expect(await store().appendMessages([input(id, "batched", "mallory"), input(id, "batched", "mallory")])).toEqual([
            notAMember,
            notAMember,
          ]);
          expect(await store().addMembers({ epoch: baseEpoch, conversationId: id, userId: "mallory", userIds: ["mallory"] })).toEqual(
            notAMember,
          );
          expect(
            await store().markReceipt({
              epoch: baseEpoch,
              conversationId: id,
              userId: "mallory",
              position: "read",
              seq: 1,
              fanOutMembersMax: 32,
            }),
          ).toEqual(notAMember);
          expect(await store().history({ conversationId: id, userId: "mallory", beforeSeq: null, limit: 10 })).toEqual(notAMember);
          expect(await store().messagesAfter({ conversationId: id, userId: "mallory", afterSeq: null, limit: 10 })).toEqual(notAMember);
        }
        // Members still wait out the move.
        expect(await send(conversationId, "during", "bob")).toEqual(moving);
        expect(
          await store().appendMessages([input(conversationId, "during", "carol"), input(conversationId, "during", "mallory")]),
        ).toEqual([moving, notAMember]);
        expect(await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["dave"] })).toEqual(moving);
        expect(
          await store().markReceipt({ epoch: baseEpoch, conversationId, userId: "bob", position: "read", seq: 1, fanOutMembersMax: 32 }),
        ).toEqual(moving);
      });

      it("freezes a conversation with no row as a placeholder: never exported, creation answers moving, a tombstone then moved", async () => {
        for (const conversationId of [newDirectId(), newGroupId()]) {
          const key = { kind: "conversation", id: conversationId } as const;
          expect(await store().freeze({ ...key, toCellId: "b", epoch: baseEpoch })).toEqual({
            outcome: "frozen",
            lastSeq: 0,
            floorSeq: 0,
            placeholder: true,
            incarnation: null,
          });
          // Frozen again (a retried move): still a placeholder.
          expect(await store().freeze({ ...key, toCellId: "c", epoch: baseEpoch })).toEqual({
            outcome: "frozen",
            lastSeq: 0,
            floorSeq: 0,
            placeholder: true,
            incarnation: null,
          });
          expect(await store().migrationState(key)).toEqual({
            state: "frozen",
            movingToCellId: "c",
            movedEpoch: null,
            lastSeq: 0,
            floorSeq: 0,
            placeholder: true,
            incarnation: null,
          });
          expect(await store().exportConversation(conversationId)).toBeUndefined();
          expect(await store().openDirect({ epoch: baseEpoch, conversationId, userId: "alice", peerUserId: "bob" })).toEqual(moving);
          expect(
            await store().createGroup({ epoch: baseEpoch, conversationId, creatorUserId: "alice", title: "t", memberUserIds: [] }),
          ).toEqual(moving);
          expect(await memberIds(conversationId)).toEqual([]);
          expect(await store().messagesAfter({ conversationId, userId: "alice", afterSeq: null, limit: 10 })).toEqual({
            outcome: "not_a_member",
          });
          // Nobody is a member of a conversation never created: a send is refused as for an unknown id.
          expect(await store().appendMessages([input(conversationId, "too soon")])).toEqual([{ outcome: "not_a_member" }]);
          expect(await store().tombstone({ ...key, toCellId: "c", movedEpoch: 7, epoch: baseEpoch })).toEqual({
            outcome: "moved",
            deletedRows: 0,
          });
          const movedToC = { outcome: "moved", cellId: "c", epoch: 7 } as const;
          expect(await store().openDirect({ epoch: baseEpoch, conversationId, userId: "alice", peerUserId: "bob" })).toEqual(movedToC);
          expect(
            await store().createGroup({ epoch: baseEpoch, conversationId, creatorUserId: "alice", title: "t", memberUserIds: [] }),
          ).toEqual(movedToC);
          expect(await store().migrationState(key)).toMatchObject({ state: "moved", placeholder: true });
        }
        // A placeholder's kind follows the id's prefix: a direct one takes no group title once real.
        const direct = newDirectId();
        await store().freeze({ kind: "conversation", id: direct, toCellId: "b", epoch: baseEpoch });
        // Unfrozen (a failed move), the placeholder goes: the conversation is created as a new one.
        expect(await store().unfreeze({ kind: "conversation", id: direct, epoch: baseEpoch })).toEqual({ outcome: "active" });
        expect(await store().migrationState({ kind: "conversation", id: direct })).toBeUndefined();
        expect(await store().openDirect({ epoch: baseEpoch, conversationId: direct, userId: "alice", peerUserId: "bob" })).toMatchObject({
          outcome: "conversation",
          conversation: { kind: "direct", memberUserIds: ["alice", "bob"] },
        });
        expect(await store().exportConversation(direct)).toMatchObject({ conversation: { kind: "direct", createdByUserId: "alice" } });
      });

      it("lists frozen keys, conversations first and each kind in id order, within the limit, with their targets", async () => {
        const conversationIds = [await groupWithMessages(1), newGroupId()].sort();
        const userIds = [newUserId(), newUserId()].sort();
        const active = newUserId();
        await appendMailbox(active, "e-1", joinedEvent());
        for (const id of conversationIds) await store().freeze({ kind: "conversation", id, toCellId: "b", epoch: baseEpoch });
        for (const id of userIds) await store().freeze({ kind: "user", id, toCellId: "c", epoch: baseEpoch });
        // Other tests of this store leave frozen keys too: only ours are looked at, in the order listed.
        const ours = new Set([...conversationIds, ...userIds, active]);
        const all = await store().frozenKeys(10_000);
        expect(all.filter((key) => ours.has(key.id))).toEqual([
          ...conversationIds.map((id) => ({ kind: "conversation", id, movingToCellId: "b" })),
          ...userIds.map((id) => ({ kind: "user", id, movingToCellId: "c" })),
        ]);
        const kinds = all.map((key) => key.kind);
        expect(kinds.lastIndexOf("conversation")).toBeLessThan(
          kinds.indexOf("user") === -1 ? Number.POSITIVE_INFINITY : kinds.indexOf("user"),
        );
        expect(await store().frozenKeys(2)).toEqual(all.slice(0, 2));
        // Unfrozen or tombstoned, a key is no longer listed.
        await store().unfreeze({ kind: "user", id: userIds[0] ?? "", epoch: baseEpoch });
        await store().tombstone({ kind: "conversation", id: conversationIds[0] ?? "", toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        const after = new Set((await store().frozenKeys(10_000)).map((key) => key.id));
        expect([...ours].filter((id) => after.has(id)).sort()).toEqual([conversationIds[1], userIds[1]].sort());
      });

      it("lists every mailbox and conversation in id order with its state, page by page after a cursor (a directory's rebuild)", async () => {
        const active = newUserId();
        const frozen = newUserId();
        const moved = newUserId();
        for (const id of [active, frozen, moved]) await appendMailbox(id, "e-1", joinedEvent());
        await store().freeze({ kind: "user", id: frozen, toCellId: "c", epoch: baseEpoch });
        await store().freeze({ kind: "user", id: moved, toCellId: "b", epoch: baseEpoch });
        await store().tombstone({ kind: "user", id: moved, toCellId: "b", movedEpoch: 5, epoch: baseEpoch });
        const group = await groupWithMessages(1);
        // Walking a page of two at a time lists each row once, in the order of one whole listing.
        const all = await store().inventory("user", "", 10_000);
        const walked: InventoryKey[] = [];
        let afterId = "";
        for (let pages = 0; pages <= all.length; pages += 1) {
          const page = await store().inventory("user", afterId, 2);
          walked.push(...page);
          const last = page.at(-1);
          if (page.length < 2 || last === undefined) break;
          afterId = last.id;
        }
        expect(walked).toEqual(all);
        const ids = all.map((key) => key.id);
        expect(ids).toEqual([...ids].sort((left, right) => (left < right ? -1 : left > right ? 1 : 0)));
        const ours = all.filter((key) => [active, frozen, moved].includes(key.id));
        expect(ours).toEqual(
          [
            { id: active, state: "active", movingToCellId: null, movedEpoch: null },
            { id: frozen, state: "frozen", movingToCellId: "c", movedEpoch: null },
            { id: moved, state: "moved", movingToCellId: "b", movedEpoch: 5 },
          ].sort((left, right) => (left.id < right.id ? -1 : 1)),
        );
        // Conversations are their own listing; a user is not one.
        const conversations = await store().inventory("conversation", "", 10_000);
        expect(conversations).toContainEqual({ id: group, state: "active", movingToCellId: null, movedEpoch: null });
        expect(conversations.map((key) => key.id)).not.toContain(active);
      });

      it("lists the frozen keys after a cursor, in the same order, across the two kinds", async () => {
        const conversationIds = [newGroupId(), newGroupId()].sort();
        const userIds = [newUserId(), newUserId()].sort();
        for (const id of conversationIds) await store().freeze({ kind: "conversation", id, toCellId: "b", epoch: baseEpoch });
        for (const id of userIds) await store().freeze({ kind: "user", id, toCellId: "c", epoch: baseEpoch });
        const all = await store().frozenKeys(10_000);
        // Walking with the cursor, a page at a time, lists every key once, in the order of one whole listing.
        const walked: FrozenKey[] = [];
        let after: MigrationKey | undefined;
        // Bounded, so that a store ignoring the cursor fails here instead of looping.
        for (let pages = 0; pages <= all.length; pages += 1) {
          const page = await store().frozenKeys(3, after);
          walked.push(...page);
          const last = page.at(-1);
          if (page.length < 3 || last === undefined) break;
          after = { kind: last.kind, id: last.id };
        }
        expect(walked).toEqual(all);
        const ours = all.filter((key) => conversationIds.includes(key.id) || userIds.includes(key.id));
        expect(ours.map((key) => key.id)).toEqual([...conversationIds, ...userIds]);
        // After the last conversation come the users; after the last user, nothing.
        const lastConversation = all.filter((key) => key.kind === "conversation").at(-1);
        expect((await store().frozenKeys(1, { kind: "conversation", id: lastConversation?.id ?? "" }))[0]?.kind).toBe("user");
        expect(await store().frozenKeys(10, { kind: "user", id: all.at(-1)?.id ?? "" })).toEqual([]);
      });

      it("freezes a mailbox (an empty frozen one for a user with none): appends answer moving, repeats and pages are served", async () => {
        const user = newUserId();
        const event = joinedEvent("one");
        await appendMailbox(user, "e-1", event);
        await appendMailbox(user, "e-2", joinedEvent("two"));
        await store().trimMailbox(user, 1);
        expect(await store().freeze({ kind: "user", id: user, toCellId: "b", epoch: baseEpoch })).toEqual({
          outcome: "frozen",
          lastSeq: 2,
          floorSeq: 1,
          placeholder: false,
          incarnation: expect.stringMatching(uuidPattern),
        });
        expect(await appendMailbox(user, "e-3", joinedEvent("three"))).toEqual(moving);
        expect(await appendMailbox(user, "e-2", joinedEvent("two"))).toEqual({ outcome: "appended", seq: 2, deduplicated: true });
        expect(pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).events.map((entry) => entry.seq)).toEqual([2]);
        const fresh = newUserId();
        expect(await store().freeze({ kind: "user", id: fresh, toCellId: "b", epoch: baseEpoch })).toEqual({
          outcome: "frozen",
          lastSeq: 0,
          floorSeq: 0,
          placeholder: false,
          incarnation: expect.stringMatching(uuidPattern),
        });
        expect(await store().migrationState({ kind: "user", id: fresh })).toEqual({
          state: "frozen",
          movingToCellId: "b",
          movedEpoch: null,
          lastSeq: 0,
          floorSeq: 0,
          placeholder: false,
          incarnation: expect.stringMatching(uuidPattern),
        });
        expect(await appendMailbox(fresh, "e-1", event)).toEqual(moving);
        expect(await store().unfreeze({ kind: "user", id: fresh, epoch: baseEpoch })).toEqual({ outcome: "active" });
        expect(await appendMailbox(fresh, "e-1", event)).toEqual({ outcome: "appended", seq: 1, deduplicated: false });
      });

      it("fences freeze, unfreeze and tombstone under a lower epoch, changing nothing", async () => {
        const conversationId = newGroupId();
        await store().createGroup({ epoch: 5, conversationId, creatorUserId: "alice", title: "t", memberUserIds: ["bob"] });
        const key = { kind: "conversation", id: conversationId } as const;
        expect(await store().freeze({ ...key, toCellId: "b", epoch: 4 })).toEqual({ outcome: "fenced" });
        expect(await store().migrationState(key)).toMatchObject({ state: "active" });
        expect(await store().freeze({ ...key, toCellId: "b", epoch: 5 })).toMatchObject({ outcome: "frozen" });
        expect(await store().unfreeze({ ...key, epoch: 4 })).toEqual({ outcome: "fenced" });
        expect(await store().tombstone({ ...key, toCellId: "b", movedEpoch: 7, epoch: 4 })).toEqual({ outcome: "fenced" });
        expect(await store().migrationState(key)).toMatchObject({ state: "frozen" });
        const user = newUserId();
        await appendMailbox(user, "e-1", joinedEvent(), 6);
        expect(await store().freeze({ kind: "user", id: user, toCellId: "b", epoch: 5 })).toEqual({ outcome: "fenced" });
        expect(await appendMailbox(user, "e-2", joinedEvent(), 6)).toMatchObject({ outcome: "appended", seq: 2 });
      });

      it("tombstones a conversation in batches: every request then answers moved, and a direct conversation is never re-created", async () => {
        const directId = newDirectId();
        await store().openDirect({ epoch: baseEpoch, conversationId: directId, userId: "alice", peerUserId: "bob" });
        for (let index = 1; index <= 5; index++) await send(directId, `m${index}`);
        await store().markReceipt({
          epoch: baseEpoch,
          conversationId: directId,
          userId: "bob",
          position: "read",
          seq: 2,
          fanOutMembersMax: 32,
        });
        const outboxRows = (await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId: directId })).entries
          .length;
        const key = { kind: "conversation", id: directId } as const;
        await store().freeze({ ...key, toCellId: "b", epoch: baseEpoch });
        // 5 messages, 2 members, 1 read position and the outbox rows.
        expect(await store().tombstone({ ...key, toCellId: "b", movedEpoch: 7, epoch: baseEpoch })).toEqual({
          outcome: "moved",
          deletedRows: 8 + outboxRows,
        });
        expect(await store().openDirect({ epoch: baseEpoch, conversationId: directId, userId: "alice", peerUserId: "bob" })).toEqual(moved);
        expect(await store().openDirect({ epoch: baseEpoch + 1, conversationId: directId, userId: "bob", peerUserId: "alice" })).toEqual(
          moved,
        );
        expect(await send(directId, "late")).toEqual(moved);
        expect(await store().history({ conversationId: directId, userId: "alice", beforeSeq: null, limit: 10 })).toEqual(moved);
        expect(await store().messagesAfter({ conversationId: directId, userId: "alice", afterSeq: 0, limit: 10 })).toEqual(moved);
        expect(await store().messagesAfter({ conversationId: directId, userId: "mallory", afterSeq: null, limit: 10 })).toEqual(moved);
        expect(await store().members(directId)).toEqual(moved);
        expect(
          await store().markReceipt({
            epoch: baseEpoch,
            conversationId: directId,
            userId: "bob",
            position: "read",
            seq: 1,
            fanOutMembersMax: 32,
          }),
        ).toEqual(moved);
        expect(await store().addMembers({ epoch: baseEpoch, conversationId: directId, userId: "alice", userIds: ["carol"] })).toEqual(
          moved,
        );
        expect(await store().freeze({ ...key, toCellId: "c", epoch: baseEpoch })).toEqual(moved);
        expect((await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId: directId })).entries).toEqual([]);
        expect(await store().migrationState(key)).toEqual({
          state: "moved",
          movingToCellId: "b",
          movedEpoch: 7,
          lastSeq: expect.any(Number),
          floorSeq: 0,
          placeholder: false,
          incarnation: null,
        });
        // Idempotent: a second tombstone finds nothing left to delete.
        expect(await store().tombstone({ ...key, toCellId: "b", movedEpoch: 7, epoch: baseEpoch })).toEqual({
          outcome: "moved",
          deletedRows: 0,
        });
        expect(await store().tombstone({ kind: "conversation", id: newGroupId(), toCellId: "b", movedEpoch: 7, epoch: baseEpoch })).toEqual(
          { outcome: "not_found" },
        );
      });

      it("answers mailbox pages asked for together as it answers each alone: events, empty, missing, frozen, moved, one user twice", async () => {
        const withEvents = [newUserId(), newUserId(), newUserId()];
        for (const [index, user] of withEvents.entries())
          for (let seq = 1; seq <= index + 2; seq++) await appendMailbox(user, `e-${seq}`, joinedEvent(`${user}-${seq}`));
        const frozen = newUserId();
        await appendMailbox(frozen, "e-1", joinedEvent("frozen"));
        await store().freeze({ kind: "user", id: frozen, toCellId: "b", epoch: baseEpoch });
        const gone = newUserId();
        await appendMailbox(gone, "e-1", joinedEvent("gone"));
        await store().freeze({ kind: "user", id: gone, toCellId: "b", epoch: baseEpoch });
        await store().tombstone({ kind: "user", id: gone, toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        const [first, second, third] = withEvents;
        if (first === undefined || second === undefined || third === undefined) throw new Error("three users expected");
        // More readers than one statement of the Postgres store reads, so the turn is split.
        const missing = Array.from({ length: 40 }, () => newUserId());
        const inputs = [
          { userId: first, afterSeq: 0, limit: 10 },
          { userId: second, afterSeq: 1, limit: 1 },
          { userId: first, afterSeq: 1, limit: 0 },
          { userId: third, afterSeq: 4, limit: 10 },
          { userId: frozen, afterSeq: 0, limit: 10 },
          { userId: gone, afterSeq: 0, limit: 10 },
          ...missing.map((userId) => ({ userId, afterSeq: 0, limit: 10 })),
          { userId: third, afterSeq: 0, limit: 3 },
        ];
        const together = await Promise.all(inputs.map((input) => store().mailboxPage(input)));
        const alone = [];
        for (const input of inputs) alone.push(await store().mailboxPage(input));
        expect(together).toEqual(alone);
        // And what each answer is, so that equal answers cannot both be wrong.
        const seqs = (result: MailboxPageResult) => pageOf(result).events.map((entry) => entry.seq);
        expect(together.slice(0, 5).map(seqs)).toEqual([[1, 2], [2], [], [], [1]]);
        expect(together.slice(0, 5).map((result) => pageOf(result).headSeq)).toEqual([2, 3, 2, 4, 1]);
        expect(together[5]).toEqual(moved);
        expect(together.slice(6, -1).map((result) => pageOf(result))).toEqual(missing.map(() => ({ events: [], headSeq: 0, floorSeq: 0 })));
        expect(seqs(together[together.length - 1] ?? moved)).toEqual([1, 2, 3]);
      });

      it("tombstones a mailbox: appends and pages answer moved", async () => {
        const user = newUserId();
        for (let index = 1; index <= 4; index++) await appendMailbox(user, `e-${index}`, joinedEvent(`m${index}`));
        await store().freeze({ kind: "user", id: user, toCellId: "b", epoch: baseEpoch });
        expect(await store().tombstone({ kind: "user", id: user, toCellId: "b", movedEpoch: 7, epoch: baseEpoch })).toEqual({
          outcome: "moved",
          deletedRows: 4,
        });
        expect(await appendMailbox(user, "e-1", joinedEvent("m1"))).toEqual(moved);
        expect(await appendMailbox(user, "e-9", joinedEvent("m9"))).toEqual(moved);
        expect(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).toEqual(moved);
      });

      it("round-trips a conversation through export and import: history, members with their join points, positions, outbox and send dedupe come back", async () => {
        const conversationId = await groupWithMessages(5);
        await store().addMembers({ epoch: baseEpoch, conversationId, userId: "bob", userIds: ["dave"] });
        const clientMessageId = nextClientMessageId();
        await send(conversationId, "sixth", "carol", clientMessageId);
        await store().markReceipt({ epoch: baseEpoch, conversationId, userId: "bob", position: "read", seq: 3, fanOutMembersMax: 32 });
        const key = { kind: "conversation", id: conversationId } as const;
        const membersBefore = await store().members(conversationId);
        if (membersBefore.outcome !== "members") throw new Error(`expected members, got ${membersBefore.outcome}`);
        const frozen = await store().freeze({ ...key, toCellId: "b", epoch: baseEpoch });
        if (frozen.outcome !== "frozen") throw new Error("expected frozen");
        const exported = await store().exportConversation(conversationId);
        if (exported === undefined) throw new Error("expected an export");
        expect(exported.conversation).toMatchObject({ kind: "group", title: "team", createdByUserId: "alice" });
        expect(exported.members.map((member) => [member.userId, member.joinedAfterSeq, member.readSeq, member.deliveredSeq])).toEqual([
          ["alice", 0, 0, 0],
          ["bob", 0, 3, 3],
          ["carol", 0, 0, 0],
          ["dave", 5, 0, 0],
        ]);
        const pages = [
          await store().exportMessages({ conversationId, afterSeq: 0, limit: 4 }),
          await store().exportMessages({ conversationId, afterSeq: 4, limit: 4 }),
        ];
        expect(pages.map((page) => page.map((message) => message.seq))).toEqual([
          [1, 2, 3, 4],
          [5, 6],
        ]);
        const outbox = (await store().pendingOutbox({ olderThanMs: 0, limit: 1000, afterId: 0, conversationId })).entries;
        expect(outbox.map((entry) => `${entry.event.kind}:${entry.recipientUserId}`)).toEqual([
          ...["alice", "bob", "carol", "dave"].map((userId) => `joined:${userId}`),
          ...["alice", "bob", "carol", "dave"].map((userId) => `receipt:${userId}`),
        ]);
        const historyBefore = await store().history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 });
        // The key leaves (tombstone), then comes back into the same store: the first page replaces the tombstone.
        await store().tombstone({ ...key, toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        const base = {
          kind: "conversation",
          id: conversationId,
          epoch: baseEpoch,
          lastSeq: frozen.lastSeq,
          conversation: null,
          members: [],
          messages: [],
          outbox: [],
        } as const;
        expect(
          await store().importPage({ ...base, first: true, last: false, conversation: exported.conversation, members: exported.members }),
        ).toEqual({ outcome: "importing" });
        expect(await send(conversationId, "too early")).toEqual(moving);
        expect(await store().history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 })).toEqual(moving);
        expect(await store().members(conversationId)).toEqual(moving);
        expect(await store().messagesAfter({ conversationId, userId: "dave", afterSeq: null, limit: 10 })).toEqual(moving);
        for (const messages of pages)
          expect(await store().importPage({ ...base, first: false, last: false, messages })).toEqual({ outcome: "importing" });
        // A retried page changes nothing.
        expect(await store().importPage({ ...base, first: false, last: false, messages: pages[1] ?? [] })).toEqual({
          outcome: "importing",
        });
        const importedOutbox = outbox.map(({ recipientUserId, eventId, event }) => ({ recipientUserId, eventId, event }));
        expect(await store().importPage({ ...base, first: false, last: false, outbox: importedOutbox })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, first: false, last: true })).toEqual({ outcome: "active" });
        expect(await store().history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 })).toEqual(historyBefore);
        expect(await memberIds(conversationId)).toEqual(["alice", "bob", "carol", "dave"]);
        // Back with a newer members version than it left with: members may have been added in the other
        // cell, so a member list a worker here cached before the move must not pass for current.
        const membersAfter = await store().members(conversationId);
        expect(membersAfter.outcome === "members" && membersAfter.membersVersion).toBeGreaterThan(membersBefore.membersVersion);
        // dave's join point came along: without a cursor his devices read after it.
        expect(await store().messagesAfter({ conversationId, userId: "dave", afterSeq: null, limit: 10 })).toMatchObject({
          outcome: "messages",
          afterSeq: 5,
          messages: [{ seq: 6, body: "sixth" }],
          headSeq: 6,
        });
        const pending = (await store().pendingOutbox({ olderThanMs: 0, limit: 1000, afterId: 0, conversationId })).entries;
        expect(pending.map(({ recipientUserId, eventId, event }) => ({ recipientUserId, eventId, event }))).toEqual(importedOutbox);
        expect(await send(conversationId, "sixth", "carol", clientMessageId)).toMatchObject({
          outcome: "stored",
          deduplicated: true,
          message: { seq: 6, body: "sixth" },
        });
        expect(await send(conversationId, "seventh")).toMatchObject({ outcome: "stored", message: { seq: 7 } });
        // bob's read position came along: a lower read changes nothing.
        expect(
          await store().markReceipt({ epoch: baseEpoch, conversationId, userId: "bob", position: "read", seq: 2, fanOutMembersMax: 32 }),
        ).toMatchObject({ readSeq: 3, deliveredSeq: 3, outbox: [] });
        // Active now: a page of an old attempt changes nothing.
        expect(await store().importPage({ ...base, first: true, last: false, conversation: exported.conversation })).toEqual({
          outcome: "active",
        });
        expect(await store().migrationState(key)).toMatchObject({ state: "active", lastSeq: 7 });
      });

      it("round-trips a trimmed mailbox through export and import, keeping seqs, floor and event-id dedupe", async () => {
        const user = newUserId();
        const events = Array.from({ length: 5 }, (_, index) => joinedEvent(`m${index + 1}`));
        for (const [index, event] of events.entries()) await appendMailbox(user, `e-${index + 1}`, event);
        await store().trimMailbox(user, 2);
        const key = { kind: "user", id: user } as const;
        const frozen = await store().freeze({ ...key, toCellId: "b", epoch: baseEpoch });
        expect(frozen).toEqual({
          outcome: "frozen",
          lastSeq: 5,
          floorSeq: 2,
          placeholder: false,
          incarnation: expect.stringMatching(uuidPattern),
        });
        const exported = [
          await store().exportMailbox({ userId: user, afterSeq: 2, limit: 2 }),
          await store().exportMailbox({ userId: user, afterSeq: 4, limit: 2 }),
        ];
        expect(exported.map((page) => page.map((entry) => [entry.seq, entry.eventId]))).toEqual([
          [
            [3, "e-3"],
            [4, "e-4"],
          ],
          [[5, "e-5"]],
        ]);
        await store().tombstone({ ...key, toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        const base = { kind: "user", id: user, epoch: baseEpoch, lastSeq: 5, floorSeq: 2, events: [] } as const;
        // A later page with no import in progress is refused: the copy must start with its first page.
        expect(await store().importPage({ ...base, first: false, last: false, events: exported[0] ?? [] })).toEqual({
          outcome: "not_importing",
        });
        expect(await store().importPage({ ...base, first: true, last: false })).toEqual({ outcome: "importing" });
        expect(await appendMailbox(user, "e-3", events[2] ?? joinedEvent())).toEqual(moving);
        expect(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).toEqual(moving);
        for (const page of exported)
          expect(await store().importPage({ ...base, first: false, last: false, events: page })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, first: false, last: true })).toEqual({ outcome: "active" });
        expect(pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 }))).toEqual({
          events: [3, 4, 5].map((seq) => ({ seq, event: events[seq - 1] })),
          headSeq: 5,
          floorSeq: 2,
        });
        expect(await appendMailbox(user, "e-4", joinedEvent("again"))).toEqual({ outcome: "appended", seq: 4, deduplicated: true });
        expect(await appendMailbox(user, "e-6", joinedEvent("m6"))).toEqual({ outcome: "appended", seq: 6, deduplicated: false });
      });

      it("moves a mailbox's incarnation with it: the freeze reports it and the last import page gives it to the copy", async () => {
        const source = newUserId();
        await appendMailbox(source, "e-1", joinedEvent("one"));
        const frozen = await store().freeze({ kind: "user", id: source, toCellId: "b", epoch: baseEpoch });
        if (frozen.outcome !== "frozen") throw new Error(`expected frozen, got ${frozen.outcome}`);
        const { incarnation } = frozen;
        expect(incarnation).toEqual(incarnationOf(await store().mailboxPage({ userId: source, afterSeq: 0, limit: 0 })));
        expect(await store().migrationState({ kind: "user", id: source })).toMatchObject({ incarnation });
        if (incarnation === null) throw new Error("a frozen mailbox has an incarnation");
        // The copy, as the target cell holds it: another user id stands for the same user in another cell.
        const copy = newUserId();
        const events = await store().exportMailbox({ userId: source, afterSeq: 0, limit: 10 });
        const base = { kind: "user", id: copy, epoch: baseEpoch, lastSeq: 1, floorSeq: 0, events: [] } as const;
        expect(await store().importPage({ ...base, first: true, last: false, events })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, first: false, last: true, incarnation })).toEqual({ outcome: "active" });
        expect(incarnationOf(await store().mailboxPage({ userId: copy, afterSeq: 0, limit: 10 }))).toBe(incarnation);
        await appendMailbox(copy, "e-2", joinedEvent("two"));
        expect(incarnationOf(await store().mailboxPage({ userId: copy, afterSeq: 0, limit: 10 }))).toBe(incarnation);
        // A last page without one (from a worker before decision 0021) leaves the copy with an incarnation of its own.
        const unnamed = newUserId();
        const unnamedBase = { ...base, id: unnamed };
        expect(await store().importPage({ ...unnamedBase, first: true, last: false, events })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...unnamedBase, first: false, last: true })).toEqual({ outcome: "active" });
        expect(incarnationOf(await store().mailboxPage({ userId: unnamed, afterSeq: 0, limit: 10 }))).toMatch(uuidPattern);
      });

      it("resets an earlier attempt's copy on a new first page, refuses an import into a frozen key and fences an older importer", async () => {
        const user = newUserId();
        const base = { kind: "user", id: user, lastSeq: 2, floorSeq: 0, events: [] } as const;
        const stale = [{ seq: 1, eventId: "stale-1", event: joinedEvent("stale") }];
        expect(await store().importPage({ ...base, epoch: 3, first: true, last: false })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, epoch: 3, first: false, last: false, events: stale })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, epoch: 2, first: false, last: false, events: stale })).toEqual({ outcome: "fenced" });
        // A new attempt: its first page drops the stale copy.
        const fresh = [1, 2].map((seq) => ({ seq, eventId: `e-${seq}`, event: joinedEvent(`m${seq}`) }));
        expect(await store().importPage({ ...base, epoch: 3, first: true, last: false })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, epoch: 3, first: false, last: false, events: fresh })).toEqual({ outcome: "importing" });
        expect(await store().importPage({ ...base, epoch: 3, first: false, last: true })).toEqual({ outcome: "active" });
        expect(pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).events).toEqual(
          fresh.map(({ seq, event }) => ({ seq, event })),
        );
        await store().freeze({ kind: "user", id: user, toCellId: "c", epoch: 3 });
        expect(await store().importPage({ ...base, epoch: 3, first: true, last: false })).toEqual(moving);
      });

      it("counts active users and conversations, outbox rows and frozen keys for cell.stats", async () => {
        const before = await store().stats();
        const conversationId = await groupWithMessages(1, ["bob"]);
        await appendMailbox(newUserId(), "e-1", joinedEvent());
        const frozenUser = newUserId();
        await store().freeze({ kind: "user", id: frozenUser, toCellId: "b", epoch: baseEpoch });
        const after = await store().stats();
        expect({
          users: after.users - before.users,
          conversations: after.conversations - before.conversations,
          outboxRows: after.outboxRows - before.outboxRows,
          frozen: after.frozen - before.frozen,
        }).toEqual({ users: 1, conversations: 1, outboxRows: 2, frozen: 1 }); // the joined rows of alice and bob
        await store().freeze({ kind: "conversation", id: conversationId, toCellId: "b", epoch: baseEpoch });
        await store().tombstone({ kind: "conversation", id: conversationId, toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        await store().tombstone({ kind: "user", id: frozenUser, toCellId: "b", movedEpoch: 7, epoch: baseEpoch });
        expect(await store().stats()).toEqual({
          ...after,
          conversations: after.conversations - 1,
          outboxRows: after.outboxRows - 2,
          frozen: after.frozen - 1,
        });
      });
    });

    describe("fencing by ring epoch", () => {
      function bodiesOf(page: Awaited<ReturnType<ConversationStore["history"]>>): string[] {
        if (page.outcome !== "history") throw new Error(`expected history, got ${page.outcome}`);
        return page.messages.map((message) => message.body);
      }

      it("stores a message under an epoch equal to or above the conversation's, and fences a lower one without writing", async () => {
        const conversationId = await group();
        const firstClientMessageId = nextClientMessageId();
        expect(await send(conversationId, "at 1", "alice", firstClientMessageId, 1)).toMatchObject({
          outcome: "stored",
          message: { seq: 1 },
        });
        expect(await send(conversationId, "at 5", "bob", nextClientMessageId(), 5)).toMatchObject({
          outcome: "stored",
          message: { seq: 2 },
        });
        const outboxBefore = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
        expect(await send(conversationId, "at 4", "carol", nextClientMessageId(), 4)).toEqual({ outcome: "fenced" });
        // Nothing of the fenced send was written: no seq consumed, no outbox row.
        expect(await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).toEqual(outboxBefore);
        expect(await send(conversationId, "at 5 again", "carol", nextClientMessageId(), 5)).toMatchObject({
          outcome: "stored",
          message: { seq: 3 },
        });
        // A repeated send writes nothing, so it answers its stored message whatever the epoch.
        expect(await send(conversationId, "at 1", "alice", firstClientMessageId, 2)).toMatchObject({
          outcome: "stored",
          deduplicated: true,
          message: { seq: 1 },
        });
        expect(bodiesOf(await store().history({ conversationId, userId: "bob", beforeSeq: null, limit: 10 }))).toEqual([
          "at 1",
          "at 5",
          "at 5 again",
        ]);
      });

      it("fences creating, re-opening and growing a conversation under a lower epoch", async () => {
        const conversationId = newGroupId();
        const create = { conversationId, creatorUserId: "alice", title: "fenced", memberUserIds: ["bob"], epoch: 10 };
        expect(await store().createGroup(create)).toMatchObject({ outcome: "conversation" });
        expect(await store().createGroup({ ...create, epoch: 9 })).toEqual({ outcome: "fenced" });
        expect(await store().addMembers({ conversationId, userId: "alice", userIds: ["dave"], epoch: 9 })).toEqual({ outcome: "fenced" });
        expect(await memberIds(conversationId)).toEqual(["alice", "bob"]);
        // Nor a joined row for dave.
        const rows = await store().pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId });
        expect(rows.entries.map((entry) => entry.recipientUserId)).toEqual(["alice", "bob"]);
        expect(await store().addMembers({ conversationId, userId: "alice", userIds: ["dave"], epoch: 10 })).toMatchObject({
          outcome: "conversation",
          conversation: { memberUserIds: ["alice", "bob", "dave"] },
        });
        expect(await store().addMembers({ conversationId, userId: "bob", userIds: ["erin"], epoch: 12 })).toMatchObject({
          outcome: "conversation",
        });
        // addMembers raised the conversation's epoch to 12: 11 is now stale for every write.
        expect(await store().createGroup({ ...create, epoch: 11 })).toEqual({ outcome: "fenced" });
        expect(await send(conversationId, "at 11", "alice", nextClientMessageId(), 11)).toEqual({ outcome: "fenced" });
        expect(await send(conversationId, "at 12", "alice", nextClientMessageId(), 12)).toMatchObject({
          outcome: "stored",
          message: { seq: 1 },
        });
        expect(await memberIds(conversationId)).toEqual(["alice", "bob", "dave", "erin"]);

        const directId = newDirectId();
        expect(await store().openDirect({ conversationId: directId, userId: "alice", peerUserId: "bob", epoch: 20 })).toMatchObject({
          outcome: "conversation",
        });
        expect(await store().openDirect({ conversationId: directId, userId: "bob", peerUserId: "alice", epoch: 19 })).toEqual({
          outcome: "fenced",
        });
        expect(await store().openDirect({ conversationId: directId, userId: "bob", peerUserId: "alice", epoch: 21 })).toMatchObject({
          outcome: "conversation",
          conversation: { memberUserIds: ["alice", "bob"], lastSeq: 0 },
        });
        expect(await send(directId, "at 20", "alice", nextClientMessageId(), 20)).toEqual({ outcome: "fenced" });
        expect(await send(directId, "at 21", "alice", nextClientMessageId(), 21)).toMatchObject({ outcome: "stored", message: { seq: 1 } });
      });

      it("fences a mailbox append under a lower epoch, and answers a repeated event whatever the epoch", async () => {
        const user = newUserId();
        const events = Array.from({ length: 4 }, (_, index) => joinedEvent(`m${index}`));
        const [first, second, third, fourth] = events;
        if (first === undefined || second === undefined || third === undefined || fourth === undefined) throw new Error("events missing");
        expect(await appendMailbox(user, "e-1", first, 3)).toEqual({ outcome: "appended", seq: 1, deduplicated: false });
        expect(await appendMailbox(user, "e-2", second, 2)).toEqual({ outcome: "fenced" });
        expect(await appendMailbox(user, "e-2", second, 3)).toEqual({ outcome: "appended", seq: 2, deduplicated: false });
        expect(await appendMailbox(user, "e-3", third, 7)).toEqual({ outcome: "appended", seq: 3, deduplicated: false });
        expect(await appendMailbox(user, "e-4", fourth, 6)).toEqual({ outcome: "fenced" });
        expect(await appendMailbox(user, "e-1", first, 1)).toEqual({ outcome: "appended", seq: 1, deduplicated: true });
        const page = pageOf(await store().mailboxPage({ userId: user, afterSeq: 0, limit: 10 }));
        expect({ seqs: page.events.map((entry) => entry.seq), headSeq: page.headSeq }).toEqual({ seqs: [1, 2, 3], headSeq: 3 });
      });

      it("lets no write of an older epoch follow one of a newer epoch when two owners race with batches, and leaves no gap", async () => {
        const conversations = [await group(), await group()];
        const [first, second] = conversations;
        if (first === undefined || second === undefined) throw new Error("groups missing");
        const user = newUserId();
        const stale = store();
        const current = options.secondStore?.() ?? store();
        const count = 40;
        const epochOf = (index: number) => (index % 2 === 0 ? 2 : 3);
        // Each batch sends to both conversations, one of them twice: [first, second, first].
        const batches = Array.from({ length: count }, (_, index) =>
          [first, second, first].map((conversationId, position) =>
            input(conversationId, `${epochOf(index)}:${index}:${position}`, "alice", nextClientMessageId(), epochOf(index)),
          ),
        );
        const [sent, appends] = await Promise.all([
          Promise.all(batches.map((batch, index) => appendRetrying(epochOf(index) === 2 ? stale : current, batch))),
          Promise.all(
            Array.from({ length: count }, (_, index) =>
              appendMailbox(
                user,
                `race-${index}`,
                joinedEvent(`${epochOf(index)}:${index}`),
                epochOf(index),
                epochOf(index) === 2 ? stale : current,
              ),
            ),
          ),
        ]);
        // Every write of the newer owner went in; the older one's only when it came first.
        expect(sent.filter((results, index) => epochOf(index) === 3 && results.some((result) => result.outcome !== "stored"))).toEqual([]);
        expect(appends.filter((result, index) => epochOf(index) === 3 && result.outcome !== "appended")).toEqual([]);
        expect(sent.flat().filter((result) => result.outcome !== "stored" && result.outcome !== "fenced")).toEqual([]);
        for (const results of sent) {
          // One conversation's sends of one batch share their fate, and take consecutive seqs in input order.
          const [firstA, , secondA] = results;
          expect(firstA?.outcome).toBe(secondA?.outcome);
          if (firstA?.outcome === "stored" && secondA?.outcome === "stored") expect(secondA.message.seq).toBe(firstA.message.seq + 1);
        }
        for (const conversationId of conversations) {
          const history = await current.history({ conversationId, userId: "alice", beforeSeq: null, limit: 200 });
          if (history.outcome !== "history") throw new Error("expected history");
          const stored = sent
            .flat()
            .filter((result) => result.outcome === "stored" && result.message.conversationId === conversationId).length;
          expect(history.messages.map((message) => message.seq)).toEqual(Array.from({ length: stored }, (_, index) => index + 1));
          const historyEpochs = history.messages.map((message) => Number(message.body.split(":")[0]));
          expect(historyEpochs).toEqual([...historyEpochs].sort((a, b) => a - b));
        }
        const mailbox = pageOf(await current.mailboxPage({ userId: user, afterSeq: 0, limit: 200 }));
        const appended = appends.filter((result) => result.outcome === "appended").length;
        expect(mailbox.events.map((entry) => entry.seq)).toEqual(Array.from({ length: appended }, (_, index) => index + 1));
        const mailboxEpochs = mailbox.events.map((entry) => Number(labelOf(entry.event).split(":")[0]));
        expect(mailboxEpochs).toEqual([...mailboxEpochs].sort((a, b) => a - b));
      });
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
              epoch: baseEpoch,
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

      it("keeps seqs gapless and unique when two owners store batches to the same conversations at once, a send of both included", async () => {
        const conversations = [await group(), await group(), await group()];
        const [x, y, z] = conversations;
        if (x === undefined || y === undefined || z === undefined) throw new Error("groups missing");
        const other = secondStore();
        const rounds = 30;
        // Per round, a batch for each owner: the same conversations in opposite orders (their row locks are
        // taken in opposite orders if Postgres follows the input), and one send both carry, as a client's
        // retry that reached both owners during a handover. The shared sends race: the loser's statement
        // fails on the unique key (all of it rolls back) and its retry finds the message stored.
        const shared = (round: number) => input(y, `shared ${round}`, "bob", `shared-${round}-${randomBytes(4).toString("hex")}`);
        const batchesOf = (round: number) => {
          const both = shared(round);
          return [
            {
              target: store(),
              inputs: [input(x, `a${round}x`), input(y, `a${round}y`), input(z, `a${round}z`), input(x, `a${round}x2`), both],
            },
            {
              target: other,
              inputs: [
                input(z, `b${round}z`, "carol"),
                both,
                input(y, `b${round}y`, "carol"),
                input(x, `b${round}x`, "carol"),
                input(z, `b${round}z2`, "carol"),
              ],
            },
          ];
        };
        const batches = Array.from({ length: rounds }, (_, round) => batchesOf(round)).flat();
        const results = await Promise.all(batches.map((batch) => appendRetrying(batch.target, batch.inputs)));
        const all = results.flat();
        expect(all.filter((result) => result.outcome !== "stored")).toEqual([]);
        const stored = all.flatMap((result) => (result.outcome === "stored" ? [result] : []));
        for (const conversationId of conversations) {
          const page = await other.history({ conversationId, userId: "alice", beforeSeq: null, limit: 200 });
          if (page.outcome !== "history") throw new Error("expected history");
          const fresh = stored.filter((result) => !result.deduplicated && result.message.conversationId === conversationId);
          // Every new message has its own seq, and together they are 1..n: no gap, no repeat.
          expect(fresh.map((result) => result.message.seq).sort((a, b) => a - b)).toEqual(
            Array.from({ length: fresh.length }, (_, index) => index + 1),
          );
          expect(page.messages.map((message) => message.messageId)).toEqual(
            [...fresh].sort((a, b) => a.message.seq - b.message.seq).map((result) => result.message.messageId),
          );
        }
        // x and z take 3 sends per round, y 2 plus the shared one, stored once.
        expect(stored.filter((result) => !result.deduplicated).length).toBe(rounds * 9);
        for (let round = 0; round < rounds; round++) {
          const pair = [results[2 * round]?.[4], results[2 * round + 1]?.[1]];
          const [fromFirst, fromSecond] = pair;
          if (fromFirst?.outcome !== "stored" || fromSecond?.outcome !== "stored") throw new Error("shared send not stored");
          // Stored by one owner; the other's answer is that same message.
          expect(fromFirst.message).toEqual(fromSecond.message);
          expect([fromFirst.deduplicated, fromSecond.deduplicated].sort()).toEqual([false, true]);
        }
        // Within each batch, one conversation's new messages are consecutive, in input order.
        for (const batchResults of results) {
          for (const conversationId of conversations) {
            const seqs = batchResults.flatMap((result) =>
              result.outcome === "stored" && !result.deduplicated && result.message.conversationId === conversationId
                ? [result.message.seq]
                : [],
            );
            expect(seqs).toEqual(seqs.map((_, index) => (seqs[0] ?? 0) + index));
          }
        }
      });

      it("keeps a mailbox gapless and unique when two owners append to it at once", async () => {
        const user = newUserId();
        const other = secondStore();
        const count = 60;
        const results = await Promise.all(
          Array.from({ length: count }, (_, index) =>
            appendMailbox(user, `two-${index % 40}`, joinedEvent(`m${index}`), baseEpoch, index % 2 === 0 ? store() : other),
          ),
        );
        // 60 appends of 40 distinct events: 40 seqs, each duplicate answered with its event's seq.
        const bySeq = new Map<number, number>();
        for (const seq of results.map(seqOf)) bySeq.set(seq, (bySeq.get(seq) ?? 0) + 1);
        expect([...bySeq.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, index) => index + 1));
        expect(results.filter((result) => result.outcome === "appended" && !result.deduplicated)).toHaveLength(40);
        const page = pageOf(await other.mailboxPage({ userId: user, afterSeq: 0, limit: 200 }));
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
      const opened = await store().openDirect({ epoch: baseEpoch, conversationId, userId: "alice", peerUserId: "bob" });
      expect(opened).toEqual({
        outcome: "conversation",
        conversation: { conversationId, kind: "direct", title: null, memberUserIds: ["alice", "bob"], lastSeq: 0 },
        outbox: expect.any(Array),
      });
      expect(outboxOf(opened)).toHaveLength(2);
      await send(conversationId, "hi bob");
      const again = await store().openDirect({ epoch: baseEpoch, conversationId, userId: "bob", peerUserId: "alice" });
      expect(again.outcome === "conversation" && again.conversation).toMatchObject({ memberUserIds: ["alice", "bob"], lastSeq: 1 });
      expect(await store().openDirect({ epoch: baseEpoch, conversationId, userId: "mallory", peerUserId: "alice" })).toEqual({
        outcome: "not_a_member",
      });
      expect(await store().openDirect({ epoch: baseEpoch, conversationId: newDirectId(), userId: "alice", peerUserId: "alice" })).toEqual({
        outcome: "invalid_peer",
      });
      expect(await memberIds(conversationId)).toEqual(["alice", "bob"]);
    });

    it("creates a group of creator ∪ members, idempotently on retry, within the member limit", async () => {
      const conversationId = newGroupId();
      const create = { conversationId, creatorUserId: "zoe", title: "Plans", memberUserIds: ["bob", "zoe", "Adam"], epoch: baseEpoch };
      const created = await store().createGroup(create);
      const expected = { conversationId, kind: "group", title: "Plans", memberUserIds: ["Adam", "bob", "zoe"], lastSeq: 0 };
      expect(created).toEqual({ outcome: "conversation", conversation: expected, outbox: expect.any(Array) });
      expect(outboxOf(created)).toHaveLength(3);
      expect(await store().createGroup(create)).toEqual({ outcome: "conversation", conversation: expected, outbox: [] });
      expect(await store().createGroup({ ...create, creatorUserId: "mallory" })).toEqual({ outcome: "not_a_member" });
      const tooMany = Array.from({ length: options.groupMembersMax }, (_, index) => `user${index}`);
      expect(await store().createGroup({ ...create, conversationId: newGroupId(), memberUserIds: tooMany })).toEqual({
        outcome: "too_many_members",
      });
      const full = tooMany.slice(0, options.groupMembersMax - 1);
      const atLimit = await store().createGroup({ ...create, conversationId: newGroupId(), memberUserIds: full });
      expect(atLimit.outcome === "conversation" && atLimit.conversation.memberUserIds.length).toBe(options.groupMembersMax);
      expect(await memberIds(newGroupId())).toEqual([]);
    });

    it("adds members to a group, refusing non-members, direct conversations and the member limit", async () => {
      const conversationId = await group(["bob"]);
      const added = await store().addMembers({ epoch: baseEpoch, conversationId, userId: "bob", userIds: ["carol", "alice"] });
      expect(added.outcome === "conversation" && added.conversation.memberUserIds).toEqual(["alice", "bob", "carol"]);
      const carolSends = await send(conversationId, "hi all", "carol");
      expect(carolSends.outcome).toBe("stored");
      expect(await store().addMembers({ epoch: baseEpoch, conversationId, userId: "mallory", userIds: ["mallory"] })).toEqual({
        outcome: "not_a_member",
      });
      expect(await store().addMembers({ epoch: baseEpoch, conversationId: newGroupId(), userId: "alice", userIds: ["bob"] })).toEqual({
        outcome: "not_a_member",
      });
      const directId = newDirectId();
      await store().openDirect({ epoch: baseEpoch, conversationId: directId, userId: "alice", peerUserId: "bob" });
      expect(await store().addMembers({ epoch: baseEpoch, conversationId: directId, userId: "alice", userIds: ["carol"] })).toEqual({
        outcome: "not_a_group",
      });
      const room = options.groupMembersMax - 3;
      const fill = Array.from({ length: room }, (_, index) => `fill${index}`);
      const filled = await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: fill });
      expect(filled.outcome === "conversation" && filled.conversation.memberUserIds.length).toBe(options.groupMembersMax);
      expect(await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["one-too-many"] })).toEqual({
        outcome: "too_many_members",
      });
      // Users already in the group do not count against the limit.
      const repeat = await store().addMembers({ epoch: baseEpoch, conversationId, userId: "alice", userIds: ["bob"] });
      expect(repeat.outcome).toBe("conversation");
    });

    it("tells which peers share a conversation with a user, through direct and group conversations, and no one else", async () => {
      const [watcher, directPeer, groupPeer, addedPeer, stranger, strangersFriend] = Array.from({ length: 6 }, newUserId);
      if (
        watcher === undefined ||
        directPeer === undefined ||
        groupPeer === undefined ||
        addedPeer === undefined ||
        stranger === undefined ||
        strangersFriend === undefined
      ) {
        throw new Error("six users were made");
      }
      expect(await store().sharedPeers(watcher, [directPeer, groupPeer])).toEqual([]);
      await store().openDirect({ epoch: baseEpoch, conversationId: newDirectId(), userId: watcher, peerUserId: directPeer });
      const groupId = newGroupId();
      await store().createGroup({
        conversationId: groupId,
        creatorUserId: groupPeer,
        title: "g",
        memberUserIds: [watcher],
        epoch: baseEpoch,
      });
      await store().addMembers({ epoch: baseEpoch, conversationId: groupId, userId: groupPeer, userIds: [addedPeer] });
      // A conversation the user is not in says nothing about the user.
      await store().openDirect({ epoch: baseEpoch, conversationId: newDirectId(), userId: stranger, peerUserId: strangersFriend });
      const asked = [stranger, addedPeer, directPeer, strangersFriend, groupPeer];
      expect(await store().sharedPeers(watcher, asked)).toEqual([addedPeer, directPeer, groupPeer].sort());
      expect(await store().sharedPeers(stranger, [watcher, strangersFriend])).toEqual([strangersFriend]);
      expect(await store().sharedPeers(newUserId(), asked)).toEqual([]);
      expect(await store().sharedPeers(watcher, [])).toEqual([]);
    });
  });
}
