import { describe, expect, it } from "vitest";
import { directConversationId } from "@cellwire/cluster";
import type { CellReply, CellRequest, Delivery } from "@cellwire/protocol";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { MemberCache } from "./member-cache.ts";
import { CellRequestHandler, type OwnershipView } from "./request-handler.ts";
import { MemoryConversationStore } from "./store/memory-store.ts";
import { newGroupId } from "./store/store-contract.ts";
import type { AppendMessageInput, AppendMessageResult, ConversationStore } from "./store/store.ts";

const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

type Harness = {
  readonly handler: CellRequestHandler;
  readonly deliveries: Delivery[];
  readonly queue: KeyedSerialQueue;
  /** Sends one request (or raw text) and returns its reply once handled. */
  readonly request: (request: CellRequest | string) => Promise<CellReply>;
};

function harness(
  options: { store?: ConversationStore; ownership?: Partial<OwnershipView>; pendingPerKeyMax?: number; workerId?: string } = {},
): Harness {
  const deliveries: Delivery[] = [];
  const queue = new KeyedSerialQueue({ pendingPerKeyMax: options.pendingPerKeyMax ?? 100, pendingTotalMax: 1000 });
  const handler = new CellRequestHandler({
    workerId: options.workerId ?? "a-1",
    store: options.store ?? new MemoryConversationStore(),
    ownership: { ownerOf: () => undefined, leaseHeld: () => true, ...options.ownership },
    queue,
    memberCache: new MemberCache(100),
    publishDelivery: (delivery) => deliveries.push(delivery),
    logger: silentLogger,
  });
  const request = async (input: CellRequest | string): Promise<CellReply> => {
    const replies: CellReply[] = [];
    await handler.handle(typeof input === "string" ? input : JSON.stringify(input), (reply) => replies.push(reply));
    expect(replies).toHaveLength(1);
    const [reply] = replies;
    if (reply === undefined) throw new Error("no reply");
    return reply;
  };
  return { handler, deliveries, queue, request };
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

/** A store whose appends wait for the test to release them, in any order it likes. */
class GatedStore extends MemoryConversationStore {
  readonly gates: (() => void)[] = [];
  override async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    await new Promise<void>((resolve) => this.gates.push(resolve));
    return super.appendMessage(input);
  }
}

describe("CellRequestHandler", () => {
  it("stores a send, replies cell.stored, then delivers it to every member, the sender included", async () => {
    const { request, deliveries } = harness();
    const conversationId = await createGroup(request);
    const reply = await request(sendRequest(conversationId, "m1", "hello"));
    if (reply.type !== "cell.stored") throw new Error(`unexpected ${reply.type}`);
    expect(reply).toMatchObject({ deduplicated: false, message: { conversationId, seq: 1, body: "hello", senderUserId: "alice" } });
    expect(deliveries.map((delivery) => delivery.recipientUserId)).toEqual(["alice", "bob", "carol"]);
    expect(deliveries.every((delivery) => delivery.type === "delivery.message" && delivery.message.messageId === reply.message.messageId)).toBe(true);
  });

  it("does not deliver a deduplicated send again", async () => {
    const { request, deliveries } = harness();
    const conversationId = await createGroup(request);
    const first = await request(sendRequest(conversationId, "m1"));
    const retry = await request(sendRequest(conversationId, "m1"));
    expect(retry).toEqual({ ...first, deduplicated: true });
    expect(deliveries).toHaveLength(3);
  });

  it("delivers to members added later (the cache follows addMembers)", async () => {
    const { request, deliveries } = harness();
    const conversationId = await createGroup(request, ["bob"]);
    await request(sendRequest(conversationId, "m1"));
    expect(await request({ type: "cell.addMembers", userId: "bob", conversationId, userIds: ["dave"] })).toMatchObject({
      type: "cell.conversation",
      conversation: { memberUserIds: ["alice", "bob", "dave"] },
    });
    await request(sendRequest(conversationId, "m2"));
    expect(deliveries.filter((delivery) => delivery.message.seq === 2).map((delivery) => delivery.recipientUserId)).toEqual(["alice", "bob", "dave"]);
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

  it("answers not_owner when another live worker owns the conversation, and serves when the ring is empty", async () => {
    const owned = harness({ ownership: { ownerOf: () => "a-2" } });
    const conversationId = newGroupId();
    expect(await owned.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_owner" });
    const alone = harness({ ownership: { ownerOf: () => undefined } });
    expect(await alone.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_a_member" });
    const self = harness({ ownership: { ownerOf: () => "a-1" } });
    expect(await self.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_a_member" });
    const lapsed = harness({ ownership: { leaseHeld: () => false } });
    expect(await lapsed.request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.error", code: "not_owner" });
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
    const store = new MemoryConversationStore();
    let failNext = false;
    const flaky: ConversationStore = {
      appendMessage: (input) => (failNext ? ((failNext = false), Promise.reject(new Error("disk on fire"))) : store.appendMessage(input)),
      openDirect: (input) => store.openDirect(input),
      createGroup: (input) => store.createGroup(input),
      addMembers: (input) => store.addMembers(input),
      history: (input) => store.history(input),
      members: (conversationId) => store.members(conversationId),
    };
    const { request, queue } = harness({ store: flaky });
    const conversationId = await createGroup(request);
    failNext = true;
    const failed = await request(sendRequest(conversationId, "m1"));
    expect(failed).toMatchObject({ type: "cell.error", code: "internal" });
    expect(JSON.stringify(failed)).not.toContain("disk on fire");
    expect(await request(sendRequest(conversationId, "m1"))).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
    expect(queue.pending).toBe(0);
  });
});
