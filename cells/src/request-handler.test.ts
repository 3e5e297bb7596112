import { describe, expect, it } from "vitest";
import { devDirectConversationKey, directConversationId, type LogFields } from "@cellwire/cluster";
import {
  cellReply,
  cellSendBatchReplies,
  decode,
  mailboxEventId,
  userRingKey,
  type CellAppendMailboxRequest,
  type CellReply,
  type CellRequest,
  type CellSendRequest,
  type JoinedEvent,
  type MailboxEvent,
} from "@cellwire/protocol";
import { handlerHarness, silentLogger, type HandlerHarness } from "../test/request-handler.harness.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { joinedEvent, labelOf, newGroupId } from "../test/store-contract.ts";
import type { AddMembersInput, AppendMailboxInput, AppendMailboxResult, AppendMessageInput, AppendMessageResult } from "./store/store.ts";

function sendRequest(conversationId: string, clientMessageId: string, body = "hi", senderUserId = "alice"): CellSendRequest {
  return { type: "cell.send", senderUserId, senderDeviceId: "phone", conversationId, clientMessageId, body };
}

async function createGroup(run: HandlerHarness["request"], members = ["bob", "carol"]): Promise<string> {
  const conversationId = newGroupId();
  const reply = await run({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: members });
  expect(reply.type).toBe("cell.conversation");
  return conversationId;
}

function appendRequest(userId: string, event: MailboxEvent): CellAppendMailboxRequest {
  return { type: "cell.appendMailbox", userId, eventId: mailboxEventId(event), event };
}

/** A reply in a word: `stored <seq>` (with `again` when deduplicated), or the error code, or the type. */
function outcomeOf(reply: CellReply | undefined): string {
  if (reply === undefined) return "none";
  if (reply.type === "cell.stored") return `stored ${reply.message.seq}${reply.deduplicated ? " again" : ""}`;
  if (reply.type === "cell.error") return reply.code;
  return reply.type;
}

/**
 * A store whose writes (message batches, mailbox appends, addMembers) wait for the test to release them,
 * as a worker paused between taking its epoch and running the statement would; it records the epoch each
 * was given.
 */
class GatedStore extends MemoryConversationStore {
  readonly gates: (() => void)[] = [];
  readonly epochs: number[] = [];
  constructor(
    private readonly gatedWrites: ReadonlySet<"messages" | "mailbox" | "addMembers"> = new Set(["messages", "mailbox", "addMembers"]),
  ) {
    super();
  }
  private gated<T>(write: "messages" | "mailbox" | "addMembers", epoch: number, run: () => Promise<T>): Promise<T> {
    if (!this.gatedWrites.has(write)) return run();
    this.epochs.push(epoch);
    return new Promise<void>((resolve) => this.gates.push(resolve)).then(run);
  }
  override appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    return this.gated("messages", inputs[0]?.epoch ?? -1, () => super.appendMessages(inputs));
  }
  override appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    return this.gated("mailbox", input.epoch, () => super.appendMailbox(input));
  }
  override addMembers(input: AddMembersInput): ReturnType<MemoryConversationStore["addMembers"]> {
    return this.gated("addMembers", input.epoch, () => super.addMembers(input));
  }
  /** Releases the one write waiting now. */
  async releaseOne(): Promise<void> {
    await expect.poll(() => this.gates.length).toBe(1);
    this.gates.pop()?.();
  }
}

/** A store whose next batch of messages (or read of a log) fails. */
class FlakyStore extends MemoryConversationStore {
  failNext = false;
  private fail(): void {
    if (!this.failNext) return;
    this.failNext = false;
    throw new Error("disk on fire");
  }
  override async appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    this.fail();
    return super.appendMessages(inputs);
  }
  override async messagesAfter(
    input: Parameters<MemoryConversationStore["messagesAfter"]>[0],
  ): ReturnType<MemoryConversationStore["messagesAfter"]> {
    this.fail();
    return super.messagesAfter(input);
  }
}

describe("CellRequestHandler", () => {
  describe("sends", () => {
    it("stores a send through the committer, replies cell.stored, then hands the message (with its members version) to the publisher, no outbox rows", async () => {
      const { request, deliveries, relayed, published, store } = handlerHarness();
      const conversationId = await createGroup(request);
      relayed.length = 0;
      const reply = await request(sendRequest(conversationId, "m1", "hello"));
      if (reply.type !== "cell.stored") throw new Error(`unexpected ${reply.type}`);
      expect(reply).toMatchObject({ deduplicated: false, message: { conversationId, seq: 1, body: "hello", senderUserId: "alice" } });
      const members = await store.members(conversationId);
      expect(published).toEqual([{ message: reply.message, membersVersion: members.outcome === "members" ? members.membersVersion : -1 }]);
      // A message is read from its conversation's log: nothing for the relay, no mailbox delivery.
      expect(relayed).toEqual([]);
      expect(deliveries).toEqual([]);
    });

    it("publishes a send once: its retry is answered deduplicated and not published again", async () => {
      const { request, published } = handlerHarness();
      const conversationId = await createGroup(request);
      const first = await request(sendRequest(conversationId, "m1"));
      const retry = await request(sendRequest(conversationId, "m1"));
      expect(retry).toEqual({ ...first, deduplicated: true });
      expect(published).toHaveLength(1);
    });

    it("stores pipelined sends of one conversation in arrival order: those arriving during a commit go together in the next batch", async () => {
      const store = new GatedStore();
      const { handler, request, published } = handlerHarness({ store });
      const conversationId = await createGroup(request);
      const replies: CellReply[] = [];
      for (let index = 0; index < 5; index++)
        void handler.handle(JSON.stringify(sendRequest(conversationId, `m${index}`, `body ${index}`)), (reply) => replies.push(reply));
      // m0 went alone; m1..m4 wait for its commit, then go in one batch.
      await store.releaseOne();
      await store.releaseOne();
      await expect.poll(() => replies.length).toBe(5);
      expect(replies.map((reply) => (reply.type === "cell.stored" ? `${reply.message.seq}:${reply.message.body}` : reply.type))).toEqual([
        "1:body 0",
        "2:body 1",
        "3:body 2",
        "4:body 3",
        "5:body 4",
      ]);
      expect(store.epochs).toHaveLength(2);
      await expect.poll(() => published.map((stored) => stored.message.seq)).toEqual([1, 2, 3, 4, 5]);
    });

    it("answers not_owner on arrival when another live worker owns the conversation, or when its lease lapsed", async () => {
      const owned = handlerHarness({ ring: { ownerOf: () => "a-2" } });
      const conversationId = newGroupId();
      expect(await owned.request(sendRequest(conversationId, "m1"))).toMatchObject({
        type: "cell.error",
        code: "not_owner",
        message: expect.stringContaining("a-2"),
      });
      const self = handlerHarness({ ring: { ownerOf: () => "a-1" } });
      expect(await self.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_a_member" });
      const lapsed = handlerHarness({ ring: { leaseHeld: () => false } });
      expect(await lapsed.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_owner" });
    });

    it("writes a batch under the epoch of the ring when the batch starts, not when its sends arrived", async () => {
      const store = new GatedStore();
      let epoch = 3;
      const { handler, request } = handlerHarness({ store, ring: { epoch: () => epoch } });
      const conversationId = await createGroup(request);
      const replies: CellReply[] = [];
      for (const id of ["m1", "m2"]) void handler.handle(JSON.stringify(sendRequest(conversationId, id)), (reply) => replies.push(reply));
      await expect.poll(() => store.gates.length).toBe(1);
      // m2 arrived under epoch 3 and waits for the next batch; the ring changes (the key stays here) before it starts.
      epoch = 8;
      await store.releaseOne();
      await store.releaseOne();
      await expect.poll(() => replies.length).toBe(2);
      expect(store.epochs).toEqual([3, 8]);
      expect(replies.map((reply) => reply.type)).toEqual(["cell.stored", "cell.stored"]);
    });

    it("refuses a waiting send whose key moved to another worker, or whose lease lapsed, before its batch", async () => {
      const store = new GatedStore();
      let owner = "a-1";
      let leaseHeld = true;
      const { handler, request } = handlerHarness({ store, ring: { ownerOf: () => owner, leaseHeld: () => leaseHeld } });
      const conversationId = await createGroup(request);
      for (const [round, change] of [() => (owner = "a-2"), () => (leaseHeld = false)].entries()) {
        owner = "a-1";
        leaseHeld = true;
        const replies: CellReply[] = [];
        for (const id of ["first", "second"])
          void handler.handle(JSON.stringify(sendRequest(conversationId, `${id}-${round}`)), (reply) => replies.push(reply));
        await expect.poll(() => store.gates.length).toBe(1);
        change();
        store.gates.pop()?.();
        await expect.poll(() => replies.length).toBe(2);
        // The first had taken its epoch before the change; the second never reached the store.
        expect(replies.map(outcomeOf)).toEqual([`stored ${round + 1}`, "not_owner"]);
      }
      expect(store.epochs).toHaveLength(2);
      const history = await store.history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 });
      expect(history.outcome === "history" && history.messages.map((message) => message.seq)).toEqual([1, 2]);
    });

    it("answers internal (without details) to every send of a batch the store failed, and stores the next", async () => {
      const flaky = new FlakyStore();
      const { request, queue, published } = handlerHarness({ store: flaky });
      const conversationId = await createGroup(request);
      flaky.failNext = true;
      const failed = await request(sendRequest(conversationId, "m1"));
      expect(failed).toMatchObject({ type: "cell.error", code: "internal" });
      expect(JSON.stringify(failed)).not.toContain("disk on fire");
      expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
      expect(published).toHaveLength(1);
      expect(queue.pending).toBe(0);
    });
  });

  describe("cell.sendBatch", () => {
    it("answers a batch with one reply per send, in order, once every send has its answer, as replies that decode", async () => {
      const store = new MemoryConversationStore();
      let owner = "a-1";
      const { request, sendBatch, published } = handlerHarness({ store, ring: { ownerOf: (key) => (key === "g-theirs" ? owner : "a-1") } });
      const [first, second] = [await createGroup(request, ["bob"]), await createGroup(request, ["carol"])];
      expect(outcomeOf(await request(sendRequest(first, "earlier")))).toBe("stored 1");
      owner = "a-2";
      const replies = await sendBatch({
        type: "cell.sendBatch",
        budgetMs: 5000,
        sends: [
          sendRequest(first, "b1", "one"),
          sendRequest(second, "b2", "two", "carol"),
          sendRequest(first, "earlier"),
          sendRequest(first, "b3", "not yours", "mallory"),
          sendRequest("g-theirs", "b4"),
          sendRequest(first, "b5", "three", "bob"),
        ],
      });
      expect(decode(cellSendBatchReplies, replies).ok).toBe(true);
      expect(replies.replies.map(outcomeOf)).toEqual(["stored 2", "stored 1", "stored 1 again", "not_a_member", "not_owner", "stored 3"]);
      expect(published.map((stored) => stored.message.body)).toEqual(["hi", "one", "two", "three"]);
      // One statement stored the whole batch.
      const history = await store.history({ conversationId: first, userId: "alice", beforeSeq: null, limit: 10 });
      expect(history.outcome === "history" && history.messages.map((message) => message.body)).toEqual(["hi", "one", "three"]);
    });

    it("answers every send deadline_exceeded, storing none, when the batch's budget ran out before its turn", async () => {
      const { request, sendBatch, published } = handlerHarness();
      const conversationId = await createGroup(request);
      const replies = await sendBatch({
        type: "cell.sendBatch",
        budgetMs: 0,
        sends: [sendRequest(conversationId, "x1"), sendRequest(conversationId, "x2")],
      });
      expect(replies.replies).toEqual([
        expect.objectContaining({ type: "cell.error", code: "deadline_exceeded" }),
        expect.objectContaining({ type: "cell.error", code: "deadline_exceeded" }),
      ]);
      expect(published).toEqual([]);
      expect(await request(sendRequest(conversationId, "x1"))).toMatchObject({
        type: "cell.stored",
        deduplicated: false,
        message: { seq: 1 },
      });
    });

    it("answers once its last send is answered: sends split over several commits leave together", async () => {
      const store = new GatedStore();
      const { request, handler } = handlerHarness({ store, sendLimits: { batchSendsMax: 1 } });
      const conversationId = await createGroup(request);
      const answers: CellReply[][] = [];
      handler.handleSendBatch(
        { type: "cell.sendBatch", budgetMs: 5000, sends: ["s1", "s2", "s3"].map((id) => sendRequest(conversationId, id, id)) },
        (replies) => void answers.push(replies.replies),
      );
      for (let commit = 1; commit <= 2; commit++) {
        await store.releaseOne();
        // s1 (then s2) is stored; the answer waits for s3's commit.
        await expect.poll(() => store.gates.length).toBe(1);
        expect(answers).toEqual([]);
      }
      await store.releaseOne();
      await expect.poll(() => answers.length).toBe(1);
      expect(answers[0]?.map(outcomeOf)).toEqual(["stored 1", "stored 2", "stored 3"]);
      expect(store.epochs).toHaveLength(3);
    });
  });

  describe("cell.sharedPeers", () => {
    it("is answered by any worker of the cell, owner of the watcher's key or not, from the store's memberships", async () => {
      const store = new MemoryConversationStore();
      const notTheOwner = handlerHarness({ store, ring: { ownerOf: () => "a-2" } });
      expect(
        await notTheOwner.request({
          type: "cell.openDirect",
          userId: "alice",
          peerUserId: "bob",
          conversationId: directConversationId(devDirectConversationKey, "alice", "bob"),
        }),
      ).toMatchObject({
        type: "cell.error",
        code: "not_owner",
      });
      await store.openDirect({
        epoch: 1,
        conversationId: directConversationId(devDirectConversationKey, "alice", "bob"),
        userId: "alice",
        peerUserId: "bob",
      });
      expect(await notTheOwner.request({ type: "cell.sharedPeers", userId: "alice", peerUserIds: ["carol", "bob"] })).toEqual({
        type: "cell.sharedPeers",
        userId: "alice",
        peerUserIds: ["bob"],
      });
      expect(notTheOwner.events).toEqual(["reply cell.error", "reply cell.sharedPeers"]);
    });
  });

  describe("cell.messagesAfter", () => {
    it("answers a member's page of the log as cell.messages, from a cursor or the join point", async () => {
      const { request } = handlerHarness();
      const conversationId = await createGroup(request, ["bob"]);
      for (let index = 1; index <= 3; index++) await request(sendRequest(conversationId, `m${index}`, `b${index}`));
      await request({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["dave"] });
      await request(sendRequest(conversationId, "m4", "b4", "dave"));
      const page = await request({ type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq: 1, limit: 2 });
      expect(decode(cellReply, page).ok).toBe(true);
      expect(page).toMatchObject({
        type: "cell.messages",
        conversationId,
        afterSeq: 1,
        headSeq: 4,
        messages: [
          { seq: 2, body: "b2" },
          { seq: 3, body: "b3" },
        ],
      });
      expect(await request({ type: "cell.messagesAfter", userId: "dave", conversationId, afterSeq: null, limit: 10 })).toMatchObject({
        type: "cell.messages",
        afterSeq: 3,
        messages: [{ seq: 4, body: "b4" }],
        headSeq: 4,
      });
      expect(await request({ type: "cell.messagesAfter", userId: "mallory", conversationId, afterSeq: null, limit: 10 })).toMatchObject({
        type: "cell.error",
        code: "not_a_member",
      });
    });

    it("is a read: served without waiting for the conversation's turn, and on an empty ring, but not for a key another worker owns", async () => {
      const store = new GatedStore();
      let owner: string | undefined = "a-1";
      const { handler, request } = handlerHarness({ store, ring: { ownerOf: () => owner } });
      const conversationId = await createGroup(request, ["bob"]);
      // An addMembers holds the conversation's turn.
      const held = new Promise<CellReply>(
        (resolve) =>
          void handler.handle(JSON.stringify({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["dave"] }), resolve),
      );
      await expect.poll(() => store.gates.length).toBe(1);
      expect(await request({ type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq: null, limit: 10 })).toMatchObject({
        type: "cell.messages",
        headSeq: 0,
      });
      owner = undefined;
      expect(await request({ type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq: 0, limit: 10 })).toMatchObject({
        type: "cell.messages",
      });
      owner = "a-2";
      expect(await request({ type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq: 0, limit: 10 })).toMatchObject({
        type: "cell.error",
        code: "not_owner",
      });
      store.gates.pop()?.();
      expect(await held).toMatchObject({ type: "cell.conversation" });
    });

    it("answers moving while the conversation imports, cell.moved once it left, and internal when the store fails", async () => {
      const flaky = new FlakyStore();
      const { request } = handlerHarness({ store: flaky });
      const [importing, moved, failing] = [newGroupId(), await createGroup(request), await createGroup(request)];
      await flaky.importPage({
        kind: "conversation",
        id: importing,
        epoch: 1,
        first: true,
        last: false,
        lastSeq: 0,
        conversation: { kind: "group", title: "t", createdByUserId: "alice", createdAtMs: 1 },
        members: [],
        messages: [],
        outbox: [],
      });
      await flaky.freeze({ kind: "conversation", id: moved, toCellId: "b", epoch: 1 });
      await flaky.tombstone({ kind: "conversation", id: moved, toCellId: "b", movedEpoch: 7, epoch: 1 });
      const read = (conversationId: string) =>
        request({ type: "cell.messagesAfter", userId: "alice", conversationId, afterSeq: null, limit: 10 });
      expect(await read(importing)).toMatchObject({ type: "cell.error", code: "moving" });
      expect(await read(moved)).toEqual({ type: "cell.moved", kind: "conversation", id: moved, cellId: "b", epoch: 7 });
      flaky.failNext = true;
      const failed = await read(failing);
      expect(failed).toMatchObject({ type: "cell.error", code: "internal" });
      expect(JSON.stringify(failed)).not.toContain("disk on fire");
    });

    it("names the request's trace id from its traceparent (tracing off) in the line about its failure, and none for a malformed one", async () => {
      const flaky = new FlakyStore();
      const errors: { readonly line: string; readonly fields: LogFields | undefined }[] = [];
      const logger = { ...silentLogger, error: (line: string, fields?: LogFields) => void errors.push({ line, fields }) };
      const { request, handler } = handlerHarness({ store: flaky, logger });
      const conversationId = await createGroup(request);
      const read = (traceparent: string): Promise<CellReply> => {
        flaky.failNext = true;
        return new Promise((resolve) => {
          const input = { type: "cell.messagesAfter", userId: "alice", conversationId, afterSeq: null, limit: 10 };
          void handler.handleParsed(input, resolve, () => traceparent);
        });
      };
      expect(await read(`00-${"5".repeat(32)}-${"6".repeat(16)}-00`)).toMatchObject({ type: "cell.error", code: "internal" });
      expect(await read("00-garbage-00")).toMatchObject({ type: "cell.error", code: "internal" });
      expect(errors).toEqual([
        { line: expect.stringContaining("disk on fire"), fields: { traceId: "5".repeat(32) } },
        { line: expect.stringContaining("disk on fire"), fields: { traceId: undefined } },
      ]);
      // Read only for a line: a request that writes none never asks (nats decodes headers when asked).
      let asked = 0;
      const served = await new Promise<CellReply>((resolve) => {
        const input = { type: "cell.messagesAfter", userId: "alice", conversationId, afterSeq: null, limit: 10 };
        void handler.handleParsed(input, resolve, () => {
          asked += 1;
          return `00-${"5".repeat(32)}-${"6".repeat(16)}-00`;
        });
      });
      expect(served).toMatchObject({ type: "cell.messages" });
      expect(asked).toBe(0);
    });
  });

  describe("conversation writes", () => {
    it("relays the joined rows of a new conversation after its reply, and nothing for a retried create", async () => {
      const { request, relayed, events } = handlerHarness();
      const conversationId = newGroupId();
      const create: CellRequest = {
        type: "cell.createGroup",
        creatorUserId: "alice",
        conversationId,
        title: "team",
        memberUserIds: ["bob", "carol"],
      };
      expect(await request(create)).toMatchObject({ type: "cell.conversation" });
      const event: JoinedEvent = {
        kind: "joined",
        conversationId,
        conversationKind: "group",
        title: "team",
        afterSeq: 0,
        addedByUserId: "alice",
      };
      expect(relayed.map(({ conversationId: id, entries }) => [id, entries.map((entry) => [entry.recipientUserId, entry.event])])).toEqual([
        [conversationId, ["alice", "bob", "carol"].map((userId) => [userId, event])],
      ]);
      expect(events).toEqual(["reply cell.conversation", `relay ${conversationId}`]);
      await request(create);
      const directId = directConversationId(devDirectConversationKey, "alice", "bob");
      await request({ type: "cell.openDirect", userId: "bob", peerUserId: "alice", conversationId: directId });
      await request({ type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId: directId });
      expect(relayed.map(({ conversationId: id, entries }) => [id, entries.length])).toEqual([
        [conversationId, 3],
        [directId, 2],
      ]);
    });

    it("relays a joined row per new member of addMembers, joined after the last seq, and tells the publisher the members changed", async () => {
      const { request, relayed, membersChanged, events } = handlerHarness();
      const conversationId = await createGroup(request, ["bob"]);
      for (let index = 1; index <= 2; index++) await request(sendRequest(conversationId, `m${index}`));
      relayed.length = 0;
      events.length = 0;
      expect(await request({ type: "cell.addMembers", userId: "bob", conversationId, userIds: ["dave", "bob"] })).toMatchObject({
        type: "cell.conversation",
        conversation: { memberUserIds: ["alice", "bob", "dave"] },
      });
      expect(relayed.map(({ entries }) => entries.map((entry) => [entry.recipientUserId, entry.event]))).toEqual([
        [["dave", { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq: 2, addedByUserId: "bob" }]],
      ]);
      // The cached member list is dropped before the reply: a send acked after it reaches dave.
      expect(events).toEqual([`members changed ${conversationId}`, "reply cell.conversation", `relay ${conversationId}`]);
      // Refused or adding nobody: nothing to relay, and a reload costs one read.
      await request({ type: "cell.addMembers", userId: "mallory", conversationId, userIds: ["eve"] });
      await request({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["dave"] });
      expect(relayed).toHaveLength(1);
      expect(membersChanged).toEqual([conversationId, conversationId, conversationId]);
    });
  });

  it("appends to a mailbox, replies cell.appended and publishes the event once, a repeat being deduplicated", async () => {
    const { request, deliveries } = handlerHarness();
    const event = joinedEvent("for bob");
    expect(await request(appendRequest("bob", event))).toEqual({ type: "cell.appended", userId: "bob", seq: 1, deduplicated: false });
    expect(await request(appendRequest("bob", event))).toEqual({ type: "cell.appended", userId: "bob", seq: 1, deduplicated: true });
    const second = joinedEvent("again");
    expect(await request(appendRequest("bob", second))).toMatchObject({ seq: 2, deduplicated: false });
    expect(deliveries).toEqual([
      { type: "delivery.event", recipientUserId: "bob", seq: 1, event },
      { type: "delivery.event", recipientUserId: "bob", seq: 2, event: second },
    ]);
    expect(await request({ ...appendRequest("bob", event), eventId: "joined-someone-else" })).toMatchObject({
      type: "cell.error",
      code: "invalid_field",
    });
  });

  it("serialises a user's appends in arrival order, so deliveries leave in seq order, even when the store finishes them out of order", async () => {
    const store = new GatedStore();
    const { handler, deliveries } = handlerHarness({ store });
    const events = Array.from({ length: 4 }, (_, index) => joinedEvent(`e${index}`));
    const replies: CellReply[] = [];
    const done = events.map((event) => handler.handle(JSON.stringify(appendRequest("bob", event)), (reply) => replies.push(reply)));
    for (let step = 0; step < events.length; step++) await store.releaseOne();
    await Promise.all(done);
    expect(replies.map((reply) => (reply.type === "cell.appended" ? reply.seq : 0))).toEqual([1, 2, 3, 4]);
    expect(deliveries.map((delivery) => [delivery.seq, labelOf(delivery.event)])).toEqual(
      events.map((event, index) => [index + 1, labelOf(event)]),
    );
  });

  it("pages a mailbox, naming its incarnation (none for a user without a mailbox)", async () => {
    const { request } = handlerHarness();
    const events = Array.from({ length: 3 }, (_, index) => joinedEvent(`e${index}`));
    for (const event of events) await request(appendRequest("carol", event));
    expect(await request({ type: "cell.mailboxPage", userId: "carol", afterSeq: 1, limit: 1 })).toEqual({
      type: "cell.mailboxEvents",
      userId: "carol",
      events: [{ seq: 2, event: events[1] }],
      headSeq: 3,
      floorSeq: 0,
      incarnation: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(await request({ type: "cell.mailboxPage", userId: "nobody", afterSeq: 0, limit: 0 })).toEqual({
      type: "cell.mailboxEvents",
      userId: "nobody",
      events: [],
      headSeq: 0,
      floorSeq: 0,
    });
  });

  it("routes mailbox requests by the user's ring key", async () => {
    const keys: string[] = [];
    const { request } = handlerHarness({ ring: { ownerOf: (key) => (keys.push(key), key === userRingKey("bob") ? "a-2" : "a-1") } });
    expect(await request(appendRequest("bob", joinedEvent()))).toMatchObject({ type: "cell.error", code: "not_owner" });
    expect(await request({ type: "cell.mailboxPage", userId: "bob", afterSeq: 0, limit: 5 })).toMatchObject({ code: "not_owner" });
    expect(await request({ type: "cell.mailboxPage", userId: "carol", afterSeq: 0, limit: 5 })).toMatchObject({
      type: "cell.mailboxEvents",
    });
    // carol's page is a read: her key is looked up once, on arrival.
    expect(keys).toEqual(["user:bob", "user:bob", "user:carol"]);
  });

  it("answers overloaded past the pending bound of one key, serves other keys, and keeps sends to that key out of its queue", async () => {
    const store = new GatedStore(new Set(["addMembers"]));
    const { handler, request } = handlerHarness({ store, pendingPerKeyMax: 2 });
    const conversationId = await createGroup(request);
    const replies: CellReply[] = [];
    const add = (userId: string) =>
      handler.handle(JSON.stringify({ type: "cell.addMembers", userId: "alice", conversationId, userIds: [userId] }), (reply) =>
        replies.push(reply),
      );
    // dave's addMembers holds the conversation's turn; erin's waits behind it: the key is full.
    const queued = [add("dave"), add("erin")];
    await expect.poll(() => store.gates.length).toBe(1);
    const refused = await request({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["frank"] });
    expect(refused).toMatchObject({ type: "cell.error", code: "overloaded", retryAfterMs: expect.any(Number) });
    expect(decode(cellReply, refused).ok).toBe(true);
    expect(await request(appendRequest("carol", joinedEvent("c")))).toMatchObject({ type: "cell.appended" });
    // Sends go to the committer, not to the keyed queue: stored while the key's turn is held.
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
    await store.releaseOne();
    await store.releaseOne();
    await Promise.all(queued);
    expect(replies.map((reply) => reply.type)).toEqual(["cell.conversation", "cell.conversation"]);
    expect(await store.members(conversationId)).toMatchObject({ memberUserIds: ["alice", "bob", "carol", "dave", "erin"] });
  });

  it("serves reads on an empty ring (its own lease not seen yet) but writes nothing until its ring gives it the key", async () => {
    let owner: string | undefined;
    const { request } = handlerHarness({ ring: { ownerOf: () => owner } });
    const conversationId = newGroupId();
    expect(await request({ type: "cell.history", userId: "alice", conversationId, beforeSeq: null, limit: 5 })).toMatchObject({
      code: "not_a_member",
    });
    expect(await request({ type: "cell.mailboxPage", userId: "bob", afterSeq: 0, limit: 5 })).toMatchObject({ type: "cell.mailboxEvents" });
    const create: CellRequest = { type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "t", memberUserIds: [] };
    expect(await request(create)).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("no owner") });
    expect(await request(appendRequest("bob", joinedEvent()))).toMatchObject({ type: "cell.error", code: "not_owner" });
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_owner" });
    owner = "a-1";
    expect(await request(create)).toMatchObject({ type: "cell.conversation" });
  });

  it("answers not_owner to writes the store fenced, writes, relays and publishes nothing for them, and says so in the log", async () => {
    const store = new MemoryConversationStore();
    let epoch = 5;
    const warnings: string[] = [];
    const { request, relayed, deliveries, published, fenced } = handlerHarness({ store, ring: { epoch: () => epoch }, warnings });
    const conversationId = await createGroup(request, ["bob"]);
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
    expect(await request(appendRequest("bob", joinedEvent("first")))).toMatchObject({ type: "cell.appended", seq: 1 });
    // This worker's view falls behind another owner that wrote under epoch 5: it now writes under 4.
    epoch = 4;
    const stale: CellRequest[] = [
      sendRequest(conversationId, "m2"),
      { type: "cell.addMembers", userId: "alice", conversationId, userIds: ["carol"] },
      { type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: ["bob"] },
      appendRequest("bob", joinedEvent("second")),
    ];
    for (const staleRequest of stale) {
      expect(await request(staleRequest)).toMatchObject({
        type: "cell.error",
        code: "not_owner",
        message: expect.stringContaining("epoch after 4"),
      });
    }
    expect(warnings.filter((line) => line.includes("was fenced"))).toHaveLength(stale.length);
    // Each told the ownership view, whose watch then catches up with the later ring.
    expect(fenced).toEqual([conversationId, conversationId, conversationId, "user:bob"].map((key) => `${key} under 4`));
    // Only the group's creation relayed rows, only m1 was published, only the first event delivered.
    expect(relayed).toHaveLength(1);
    expect(published.map((stored) => stored.message.body)).toEqual(["hi"]);
    expect(deliveries.map((delivery) => delivery.seq)).toEqual([1]);
    expect(await store.members(conversationId)).toEqual({ outcome: "members", memberUserIds: ["alice", "bob"], membersVersion: 0 });
    expect(await store.mailboxPage({ userId: "bob", afterSeq: 0, limit: 10 })).toMatchObject({ headSeq: 1 });
    // Reads are not fenced.
    expect(await request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: null, limit: 10 })).toMatchObject({
      messages: [{ seq: 1 }],
    });
    expect(await request({ type: "cell.messagesAfter", userId: "bob", conversationId, afterSeq: null, limit: 10 })).toMatchObject({
      messages: [{ seq: 1 }],
    });
    epoch = 5;
    expect(await request(sendRequest(conversationId, "m2"))).toMatchObject({ type: "cell.stored", message: { seq: 2 } });
  });

  it("answers cell.error internal to payloads that do not decode, and keeps serving", async () => {
    const { request } = handlerHarness();
    for (const payload of [
      "{not json",
      "[]",
      JSON.stringify({ type: "cell.send" }),
      JSON.stringify({ type: "cell.nope" }),
      JSON.stringify({ type: "cell.sendBatch", budgetMs: 1, sends: [] }),
    ]) {
      expect(await request(payload)).toMatchObject({ type: "cell.error", code: "internal" });
    }
    const conversationId = await createGroup(request);
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored" });
  });

  it("maps store refusals and checks derived ids", async () => {
    const { request } = handlerHarness();
    const conversationId = await createGroup(request);
    expect(await request(sendRequest(conversationId, "m1", "x", "mallory"))).toMatchObject({ code: "not_a_member" });
    expect(await request({ type: "cell.history", userId: "mallory", conversationId, beforeSeq: null, limit: 10 })).toMatchObject({
      code: "not_a_member",
    });
    expect(await request({ type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId: newGroupId() })).toMatchObject({
      code: "invalid_field",
    });
    expect(
      await request({
        type: "cell.openDirect",
        userId: "alice",
        peerUserId: "alice",
        conversationId: directConversationId(devDirectConversationKey, "alice", "alice"),
      }),
    ).toMatchObject({
      code: "invalid_peer",
    });
    const directId = directConversationId(devDirectConversationKey, "alice", "bob");
    expect(
      await request({ type: "cell.createGroup", creatorUserId: "alice", conversationId: directId, title: "t", memberUserIds: [] }),
    ).toMatchObject({
      code: "invalid_field",
    });
    expect(await request({ type: "cell.openDirect", userId: "bob", peerUserId: "alice", conversationId: directId })).toMatchObject({
      type: "cell.conversation",
      conversation: { kind: "direct", memberUserIds: ["alice", "bob"] },
    });
    expect(await request({ type: "cell.addMembers", userId: "bob", conversationId: directId, userIds: ["carol"] })).toMatchObject({
      code: "not_a_group",
    });
  });

  it("returns history pages", async () => {
    const { request } = handlerHarness();
    const conversationId = await createGroup(request);
    for (let index = 1; index <= 3; index++) await request(sendRequest(conversationId, `m${index}`, `b${index}`));
    const page = await request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: 3, limit: 1 });
    expect(page).toMatchObject({ type: "cell.historyPage", conversationId, hasMore: true, messages: [{ seq: 2, body: "b2" }] });
  });

  it("lists and redrives the cell's dead letters on any worker, whoever owns their key", async () => {
    const store = new MemoryConversationStore();
    const conversationId = newGroupId();
    const created = await store.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: ["bob"], epoch: 1 });
    if (created.outcome !== "conversation") throw new Error("not created");
    await store.deadLetterOutbox({ conversationId, recipientUserId: "bob", reason: "cell b is gone" });
    const bobRow = created.outbox.find((entry) => entry.recipientUserId === "bob");
    const { request } = handlerHarness({ store, pendingPerKeyMax: 1, ring: { ownerOf: () => "a-2", leaseHeld: () => false } });
    expect(await request({ type: "cell.deadLetters", afterId: 0, limit: 10 })).toEqual({
      type: "cell.deadLetters",
      cellId: "a",
      deadLetters: [
        {
          id: bobRow?.id,
          conversationId,
          recipientUserId: "bob",
          eventId: bobRow?.eventId,
          attempts: 0,
          lastError: "cell b is gone",
          createdAtMs: expect.any(Number),
          deadLetteredAtMs: expect.any(Number),
        },
      ],
    });
    expect(await request({ type: "cell.redriveDeadLetters", ids: [bobRow?.id ?? 0] })).toEqual({
      type: "cell.redriven",
      cellId: "a",
      rows: 1,
    });
    expect(await request({ type: "cell.deadLetters", afterId: 0, limit: 10 })).toMatchObject({ deadLetters: [] });
    expect(
      (await store.pendingOutbox({ olderThanMs: 0, limit: 10, afterId: 0, conversationId })).entries.map((entry) => entry.recipientUserId),
    ).toEqual(["alice", "bob"]);
  });
});

describe("CellRequestHandler: one deadline per request (docs/decisions/0020)", () => {
  it("does not start a request whose caller's budget ran out while it waited for its key's turn", async () => {
    const store = new GatedStore(new Set(["addMembers"]));
    const clock = { nowMs: 1000 };
    const { handler, request } = handlerHarness({ store, monotonicNowMs: () => clock.nowMs });
    const conversationId = await createGroup(request);
    const replies: string[] = [];
    // The first holds the conversation's turn (its statement waits on a lock); the second, whose caller
    // waits 500 ms, queues behind it.
    const first = handler.handle(
      JSON.stringify({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["dave"], budgetMs: 5000 }),
      (reply) => replies.push(`first ${outcomeOf(reply)}`),
    );
    const second = handler.handle(
      JSON.stringify({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["erin"], budgetMs: 500 }),
      (reply) => replies.push(`second ${outcomeOf(reply)}`),
    );
    await expect.poll(() => store.gates.length).toBe(1);
    clock.nowMs += 600;
    await store.releaseOne();
    await Promise.all([first, second]);
    expect(replies).toEqual(["first cell.conversation", "second deadline_exceeded"]);
    // The second was never run: erin is not a member.
    const members = await store.members(conversationId);
    expect(members.outcome === "members" && members.memberUserIds).toEqual(["alice", "bob", "carol", "dave"]);
    expect(store.gates).toHaveLength(0);
  });

  it("runs a request that carries no budget (an older sender) whenever its turn comes", async () => {
    const clock = { nowMs: 1000 };
    const { handler, request } = handlerHarness({ monotonicNowMs: () => clock.nowMs });
    const conversationId = await createGroup(request);
    const reply = await new Promise<CellReply>(
      (resolve) =>
        void handler.handle(JSON.stringify({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["dave"] }), resolve),
    );
    expect(reply.type).toBe("cell.conversation");
  });

  it("refuses a budget that is not a whole number of milliseconds within bounds", async () => {
    const { request } = handlerHarness();
    for (const budgetMs of [-1, 1.5, "100", 600_001]) {
      const reply = await request(JSON.stringify({ type: "cell.members", conversationId: newGroupId(), userId: "alice", budgetMs }));
      expect(reply).toMatchObject({ type: "cell.error", code: "internal", message: expect.stringMatching(/budgetMs/) });
    }
  });
});
