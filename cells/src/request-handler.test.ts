import { describe, expect, it } from "vitest";
import { directConversationId } from "@cellwire/cluster";
import { mailboxEventId, messageEventId, messageOf, userRingKey, type CellAppendMailboxRequest, type CellReply, type CellRequest, type Delivery, type MailboxEvent } from "@cellwire/protocol";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { CellRequestHandler } from "./request-handler.ts";
import { MemoryConversationStore } from "./store/memory-store.ts";
import { messageEvent, newGroupId } from "./store/store-contract.ts";
import type { AppendMailboxInput, AppendMailboxResult, AppendMessageInput, AppendMessageResult, ConversationStore, OutboxEntry } from "./store/store.ts";

const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** The worker's view of the ring in a test: read at each check, so a test can change it between two. */
type Ring = {
  /** The owner of a key; by default the harness's own worker owns every key. */
  ownerOf?: (key: string) => string | undefined;
  epoch?: () => number;
  leaseHeld?: () => boolean;
};

type Harness = {
  readonly handler: CellRequestHandler;
  readonly deliveries: Delivery[];
  /** What the handler handed to the relay, one list per stored message. */
  readonly relayed: { conversationId: string; entries: readonly OutboxEntry[] }[];
  readonly queue: KeyedSerialQueue;
  /** Sends one request (or raw text) and returns its reply once handled. */
  readonly request: (request: CellRequest | string) => Promise<CellReply>;
};

function harness(
  options: { store?: ConversationStore; ring?: Ring; pendingPerKeyMax?: number; workerId?: string; warnings?: string[] } = {},
): Harness {
  const deliveries: Delivery[] = [];
  const relayed: Harness["relayed"] = [];
  const queue = new KeyedSerialQueue({ pendingPerKeyMax: options.pendingPerKeyMax ?? 100, pendingTotalMax: 1000 });
  const workerId = options.workerId ?? "a-1";
  const ring = options.ring ?? {};
  const { warnings } = options;
  const handler = new CellRequestHandler({
    workerId,
    cellId: "a",
    store: options.store ?? new MemoryConversationStore(),
    ownership: {
      snapshot: () => ({ ring: { ownerOf: ring.ownerOf ?? (() => workerId) }, epoch: ring.epoch?.() ?? 1 }),
      leaseHeld: ring.leaseHeld ?? (() => true),
    },
    queue,
    relayOutbox: (conversationId, entries) => relayed.push({ conversationId, entries }),
    publishDelivery: (delivery) => deliveries.push(delivery),
    logger: warnings === undefined ? silentLogger : { ...silentLogger, warn: (line: string) => void warnings.push(line) },
  });
  const request = async (input: CellRequest | string): Promise<CellReply> => {
    const replies: CellReply[] = [];
    await handler.handle(typeof input === "string" ? input : JSON.stringify(input), (reply) => replies.push(reply));
    expect(replies).toHaveLength(1);
    const [reply] = replies;
    if (reply === undefined) throw new Error("no reply");
    return reply;
  };
  return { handler, deliveries, relayed, queue, request };
}

function sendRequest(conversationId: string, clientMessageId: string, body = "hi", senderUserId = "alice"): CellRequest {
  return { type: "cell.send", senderUserId, senderDeviceId: "phone", conversationId, clientMessageId, body };
}

async function createGroup(run: Harness["request"], members = ["bob", "carol"]): Promise<string> {
  const conversationId = newGroupId();
  const reply = await run({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: members });
  expect(reply.type).toBe("cell.conversation");
  return conversationId;
}

function appendRequest(userId: string, event: MailboxEvent): CellAppendMailboxRequest {
  return { type: "cell.appendMailbox", userId, eventId: mailboxEventId(event), event };
}

/**
 * A store whose appends (messages and mailbox events) wait for the test to release them, in any order it
 * likes, as a worker paused between taking its epoch and running the statement would; it records the
 * epoch each append was given.
 */
class GatedStore extends MemoryConversationStore {
  readonly gates: (() => void)[] = [];
  readonly epochs: number[] = [];
  override async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    this.epochs.push(input.epoch);
    await new Promise<void>((resolve) => this.gates.push(resolve));
    return super.appendMessage(input);
  }
  override async appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    this.epochs.push(input.epoch);
    await new Promise<void>((resolve) => this.gates.push(resolve));
    return super.appendMailbox(input);
  }
}

/** A store whose next message append fails. */
class FlakyStore extends MemoryConversationStore {
  failNext = false;
  override async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error("disk on fire");
    }
    return super.appendMessage(input);
  }
}

describe("CellRequestHandler", () => {
  it("stores a send, replies cell.stored, then hands its outbox rows (every member, the sender included) to the relay", async () => {
    const { request, deliveries, relayed } = harness();
    const conversationId = await createGroup(request);
    const reply = await request(sendRequest(conversationId, "m1", "hello"));
    if (reply.type !== "cell.stored") throw new Error(`unexpected ${reply.type}`);
    expect(reply).toMatchObject({ deduplicated: false, message: { conversationId, seq: 1, body: "hello", senderUserId: "alice" } });
    expect(relayed).toHaveLength(1);
    expect(relayed[0]?.conversationId).toBe(conversationId);
    expect(relayed[0]?.entries.map((entry) => [entry.recipientUserId, entry.eventId, entry.event])).toEqual(
      ["alice", "bob", "carol"].map((userId) => [userId, messageEventId(reply.message.messageId), { kind: "message", message: reply.message }]),
    );
    // Deliveries come from mailbox owners only.
    expect(deliveries).toEqual([]);
  });

  it("hands nothing to the relay for a deduplicated send", async () => {
    const { request, relayed } = harness();
    const conversationId = await createGroup(request);
    const first = await request(sendRequest(conversationId, "m1"));
    const retry = await request(sendRequest(conversationId, "m1"));
    expect(retry).toEqual({ ...first, deduplicated: true });
    expect(relayed).toHaveLength(1);
  });

  it("relays to members added later", async () => {
    const { request, relayed } = harness();
    const conversationId = await createGroup(request, ["bob"]);
    await request(sendRequest(conversationId, "m1"));
    expect(await request({ type: "cell.addMembers", userId: "bob", conversationId, userIds: ["dave"] })).toMatchObject({
      type: "cell.conversation",
      conversation: { memberUserIds: ["alice", "bob", "dave"] },
    });
    await request(sendRequest(conversationId, "m2"));
    expect(relayed[1]?.entries.map((entry) => `${messageOf(entry.event)?.seq}:${entry.recipientUserId}`)).toEqual(["2:alice", "2:bob", "2:dave"]);
  });

  it("appends to a mailbox, replies cell.appended and publishes the event once, a repeat being deduplicated", async () => {
    const { request, deliveries } = harness();
    const event = messageEvent("for bob");
    expect(await request(appendRequest("bob", event))).toEqual({ type: "cell.appended", userId: "bob", seq: 1, deduplicated: false });
    expect(await request(appendRequest("bob", event))).toEqual({ type: "cell.appended", userId: "bob", seq: 1, deduplicated: true });
    const second = messageEvent("again");
    expect(await request(appendRequest("bob", second))).toMatchObject({ seq: 2, deduplicated: false });
    expect(deliveries).toEqual([
      { type: "delivery.event", recipientUserId: "bob", seq: 1, event },
      { type: "delivery.event", recipientUserId: "bob", seq: 2, event: second },
    ]);
    expect(await request({ ...appendRequest("bob", event), eventId: "message-someone-else" })).toMatchObject({ type: "cell.error", code: "invalid_field" });
  });

  it("serialises a user's appends in arrival order, so deliveries leave in seq order, even when the store finishes them out of order", async () => {
    const store = new GatedStore();
    const { handler, deliveries } = harness({ store });
    const events = Array.from({ length: 4 }, (_, index) => messageEvent(`e${index}`));
    const replies: CellReply[] = [];
    const done = events.map((event) => handler.handle(JSON.stringify(appendRequest("bob", event)), (reply) => replies.push(reply)));
    for (let step = 0; step < events.length; step++) {
      await expect.poll(() => store.gates.length).toBe(1);
      store.gates.pop()?.();
    }
    await Promise.all(done);
    expect(replies.map((reply) => (reply.type === "cell.appended" ? reply.seq : 0))).toEqual([1, 2, 3, 4]);
    expect(deliveries.map((delivery) => [delivery.seq, messageOf(delivery.event)?.body])).toEqual(events.map((event, index) => [index + 1, messageOf(event)?.body]));
  });

  it("pages a mailbox", async () => {
    const { request } = harness();
    const events = Array.from({ length: 3 }, (_, index) => messageEvent(`e${index}`));
    for (const event of events) await request(appendRequest("carol", event));
    expect(await request({ type: "cell.mailboxPage", userId: "carol", afterSeq: 1, limit: 1 })).toEqual({
      type: "cell.mailboxEvents",
      userId: "carol",
      events: [{ seq: 2, event: events[1] }],
      headSeq: 3,
      floorSeq: 0,
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
    const { request } = harness({ ring: { ownerOf: (key) => (keys.push(key), key === userRingKey("bob") ? "a-2" : "a-1") } });
    expect(await request(appendRequest("bob", messageEvent()))).toMatchObject({ type: "cell.error", code: "not_owner" });
    expect(await request({ type: "cell.mailboxPage", userId: "bob", afterSeq: 0, limit: 5 })).toMatchObject({ code: "not_owner" });
    expect(await request({ type: "cell.mailboxPage", userId: "carol", afterSeq: 0, limit: 5 })).toMatchObject({ type: "cell.mailboxEvents" });
    // carol's page is a read: her key is looked up once, on arrival.
    expect(keys).toEqual(["user:bob", "user:bob", "user:carol"]);
  });

  it("stores pipelined sends of one conversation in arrival order, even when the store finishes them out of order", async () => {
    const store = new GatedStore();
    const { handler, request } = harness({ store });
    const conversationId = await createGroup(request);
    const replies: CellReply[] = [];
    const done = Array.from({ length: 5 }, (_, index) =>
      handler.handle(JSON.stringify(sendRequest(conversationId, `m${index}`, `body ${index}`)), (reply) => replies.push(reply)),
    );
    // Only the first append runs; the others wait their turn in the queue, not in the store.
    for (let step = 0; step < 5; step++) {
      await expect.poll(() => store.gates.length).toBe(1);
      store.gates.pop()?.();
    }
    await Promise.all(done);
    expect(replies.map((reply) => (reply.type === "cell.stored" ? `${reply.message.seq}:${reply.message.body}` : reply.type))).toEqual([
      "1:body 0",
      "2:body 1",
      "3:body 2",
      "4:body 3",
      "5:body 4",
    ]);
  });

  it("replies cell_unavailable past the pending bound of one conversation, and serves other conversations", async () => {
    const store = new GatedStore();
    const { handler, request } = harness({ store, pendingPerKeyMax: 2 });
    const busy = await createGroup(request);
    const calm = await createGroup(request);
    const replies: CellReply[] = [];
    const first = handler.handle(JSON.stringify(sendRequest(busy, "m1")), (reply) => replies.push(reply));
    const second = handler.handle(JSON.stringify(sendRequest(busy, "m2")), (reply) => replies.push(reply));
    expect(await request(sendRequest(busy, "m3"))).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
    const other = request(sendRequest(calm, "m1"));
    await expect.poll(() => store.gates.length).toBe(2);
    for (const release of store.gates.splice(0)) release();
    expect(await other).toMatchObject({ type: "cell.stored" });
    await expect.poll(() => store.gates.length).toBe(1);
    store.gates.pop()?.();
    await Promise.all([first, second]);
    expect(replies.map((reply) => reply.type)).toEqual(["cell.stored", "cell.stored"]);
  });

  it("answers not_owner when another live worker owns the conversation, or when its lease lapsed", async () => {
    const owned = harness({ ring: { ownerOf: () => "a-2" } });
    const conversationId = newGroupId();
    expect(await owned.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("a-2") });
    const self = harness({ ring: { ownerOf: () => "a-1" } });
    expect(await self.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_a_member" });
    const lapsed = harness({ ring: { leaseHeld: () => false } });
    expect(await lapsed.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_owner" });
  });

  it("serves reads on an empty ring (its own lease not seen yet) but writes nothing until its ring gives it the key", async () => {
    let owner: string | undefined;
    const { request } = harness({ ring: { ownerOf: () => owner } });
    const conversationId = newGroupId();
    expect(await request({ type: "cell.history", userId: "alice", conversationId, beforeSeq: null, limit: 5 })).toMatchObject({ code: "not_a_member" });
    expect(await request({ type: "cell.mailboxPage", userId: "bob", afterSeq: 0, limit: 5 })).toMatchObject({ type: "cell.mailboxEvents" });
    const create: CellRequest = { type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "t", memberUserIds: [] };
    expect(await request(create)).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("no owner") });
    expect(await request(appendRequest("bob", messageEvent()))).toMatchObject({ type: "cell.error", code: "not_owner" });
    owner = "a-1";
    expect(await request(create)).toMatchObject({ type: "cell.conversation" });
  });

  it("writes under the epoch of the ring when the write runs, not when it arrived", async () => {
    const store = new GatedStore();
    let epoch = 3;
    const { handler, request } = harness({ store, ring: { epoch: () => epoch } });
    const conversationId = await createGroup(request);
    const replies: CellReply[] = [];
    const done = ["m1", "m2"].map((id) => handler.handle(JSON.stringify(sendRequest(conversationId, id)), (reply) => replies.push(reply)));
    await expect.poll(() => store.gates.length).toBe(1);
    // m2 arrived under epoch 3 and waits in the queue; the ring changes (the key stays here) before its turn.
    epoch = 8;
    store.gates.pop()?.();
    await expect.poll(() => store.gates.length).toBe(1);
    store.gates.pop()?.();
    await Promise.all(done);
    expect(store.epochs).toEqual([3, 8]);
    expect(replies.map((reply) => reply.type)).toEqual(["cell.stored", "cell.stored"]);
  });

  it("refuses a queued write whose key moved to another worker, or whose lease lapsed, before its turn", async () => {
    const store = new GatedStore();
    let owner = "a-1";
    let leaseHeld = true;
    const { handler, request } = harness({ store, ring: { ownerOf: () => owner, leaseHeld: () => leaseHeld } });
    const conversationId = await createGroup(request);
    for (const [round, change] of [() => (owner = "a-2"), () => (leaseHeld = false)].entries()) {
      owner = "a-1";
      leaseHeld = true;
      const replies: CellReply[] = [];
      const done = ["first", "second"].map((id) => handler.handle(JSON.stringify(sendRequest(conversationId, `${id}-${round}`)), (reply) => replies.push(reply)));
      await expect.poll(() => store.gates.length).toBe(1);
      change();
      store.gates.pop()?.();
      await Promise.all(done);
      // The first had taken its epoch before the change; the second never reached the store.
      expect(replies.map((reply) => (reply.type === "cell.error" ? reply.code : reply.type))).toEqual(["cell.stored", "not_owner"]);
    }
    expect(store.epochs).toHaveLength(2);
    const history = await store.history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 });
    expect(history.outcome === "history" && history.messages.map((message) => message.seq)).toEqual([1, 2]);
  });

  it("answers not_owner to a write the store fenced, writes nothing, relays and publishes nothing, and says so in the log", async () => {
    const store = new MemoryConversationStore();
    let epoch = 5;
    const warnings: string[] = [];
    const { request, relayed, deliveries } = harness({ store, ring: { epoch: () => epoch }, warnings });
    const conversationId = await createGroup(request, ["bob"]);
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
    expect(await request(appendRequest("bob", messageEvent("first")))).toMatchObject({ type: "cell.appended", seq: 1 });
    // This worker's view falls behind another owner that wrote under epoch 5: it now writes under 4.
    epoch = 4;
    const stale: CellRequest[] = [
      sendRequest(conversationId, "m2"),
      { type: "cell.addMembers", userId: "alice", conversationId, userIds: ["carol"] },
      { type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: ["bob"] },
      appendRequest("bob", messageEvent("second")),
    ];
    for (const staleRequest of stale) {
      expect(await request(staleRequest)).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("epoch after 4") });
    }
    expect(warnings.filter((line) => line.includes("fenced"))).toHaveLength(stale.length);
    expect(relayed).toHaveLength(1);
    expect(deliveries.map((delivery) => delivery.seq)).toEqual([1]);
    expect(await store.members(conversationId)).toEqual({ outcome: "members", memberUserIds: ["alice", "bob"] });
    expect(await store.mailboxPage({ userId: "bob", afterSeq: 0, limit: 10 })).toMatchObject({ headSeq: 1 });
    // Reads are not fenced.
    expect(await request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: null, limit: 10 })).toMatchObject({ messages: [{ seq: 1 }] });
    epoch = 5;
    expect(await request(sendRequest(conversationId, "m2"))).toMatchObject({ type: "cell.stored", message: { seq: 2 } });
  });

  it("answers cell.error internal to payloads that do not decode, and keeps serving", async () => {
    const { request } = harness();
    for (const payload of ["{not json", "[]", JSON.stringify({ type: "cell.send" }), JSON.stringify({ type: "cell.nope" })]) {
      expect(await request(payload)).toMatchObject({ type: "cell.error", code: "internal" });
    }
    const conversationId = await createGroup(request);
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored" });
  });

  it("maps store refusals and checks derived ids", async () => {
    const { request } = harness();
    const conversationId = await createGroup(request);
    expect(await request(sendRequest(conversationId, "m1", "x", "mallory"))).toMatchObject({ code: "not_a_member" });
    expect(await request({ type: "cell.history", userId: "mallory", conversationId, beforeSeq: null, limit: 10 })).toMatchObject({
      code: "not_a_member",
    });
    expect(await request({ type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId: newGroupId() })).toMatchObject({
      code: "invalid_field",
    });
    expect(await request({ type: "cell.openDirect", userId: "alice", peerUserId: "alice", conversationId: directConversationId("alice", "alice") })).toMatchObject({
      code: "invalid_peer",
    });
    const directId = directConversationId("alice", "bob");
    expect(await request({ type: "cell.createGroup", creatorUserId: "alice", conversationId: directId, title: "t", memberUserIds: [] })).toMatchObject({
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
    const { request } = harness();
    const conversationId = await createGroup(request);
    for (let index = 1; index <= 3; index++) await request(sendRequest(conversationId, `m${index}`, `b${index}`));
    const page = await request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: 3, limit: 1 });
    expect(page).toMatchObject({ type: "cell.historyPage", conversationId, hasMore: true, messages: [{ seq: 2, body: "b2" }] });
  });

  it("answers internal (without details) when the store throws, and the conversation's queue moves on", async () => {
    const flaky = new FlakyStore();
    const { request, queue } = harness({ store: flaky });
    const conversationId = await createGroup(request);
    flaky.failNext = true;
    const failed = await request(sendRequest(conversationId, "m1"));
    expect(failed).toMatchObject({ type: "cell.error", code: "internal" });
    expect(JSON.stringify(failed)).not.toContain("disk on fire");
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
    expect(queue.pending).toBe(0);
  });
});
