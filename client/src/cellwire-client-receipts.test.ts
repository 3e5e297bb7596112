// Receipts in the SDK (client/BEHAVIOUR.md, "Receipts") against the in-memory edge and a manual clock.
import { afterEach, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientOptions, type Receipt } from "./cellwire-client.ts";
import { FakeEdge, directConversationId, flush, groupConversationId } from "../test/fake-edge.ts";
import { ManualClock } from "../test/manual-clock.ts";

const edges: FakeEdge[] = [];

afterEach(() => {
  for (const edge of edges.splice(0)) expect(edge.invalidTexts).toEqual([]);
});

async function setup(overrides: Partial<CellwireClientOptions> = {}) {
  const edge = new FakeEdge("alice");
  edges.push(edge);
  const clock = new ManualClock();
  const client = new CellwireClient({
    url: "ws://edge.test/ws",
    tokenProvider: async () => "token",
    deviceId: "laptop",
    WebSocket: edge.WebSocket,
    clock,
    random: () => 0,
    heartbeat: false,
    deliveredDelayMs: 1000,
    ...overrides,
  });
  const receipts: Receipt[] = [];
  client.on("receipt", (receipt) => receipts.push(receipt));
  await client.connect();
  await flush();
  return { edge, clock, client, receipts };
}

const delivered = (edge: FakeEdge) => edge.framesOfType("delivered").map(({ conversationId, seq }) => [conversationId, seq]);

describe("receipts", () => {
  it("reports the highest delivered seq per conversation once per delay, only for other users' messages", async () => {
    const { edge, clock } = await setup();
    edge.store(directConversationId, "m1", "one", "bob");
    edge.store(directConversationId, "m2", "two", "bob");
    edge.store(groupConversationId, "m3", "mine", "alice");
    await flush();
    expect(delivered(edge)).toEqual([]);
    clock.advanceBy(1000);
    await flush();
    expect(delivered(edge)).toEqual([[directConversationId, 2]]);
    // Nothing new: no second frame; a newer message: one more after the delay.
    clock.advanceBy(1000);
    edge.store(directConversationId, "m4", "four", "bob");
    await flush();
    clock.advanceBy(1000);
    await flush();
    expect(delivered(edge)).toEqual([
      [directConversationId, 2],
      [directConversationId, 3],
    ]);
  });

  it("keeps at most one delivered in flight per conversation and sends the newest after it", async () => {
    const { edge, clock } = await setup();
    const held: (() => void)[] = [];
    edge.onRequest = (frame) => {
      if (frame.type !== "delivered") return "default";
      held.push(() => edge.lastSocket.deliver(edge.defaultReply(frame)));
      return "ignore";
    };
    edge.store(directConversationId, "m1", "one", "bob");
    await flush();
    clock.advanceBy(1000);
    await flush();
    edge.store(directConversationId, "m2", "two", "bob");
    await flush();
    clock.advanceBy(1000);
    await flush();
    expect(delivered(edge)).toEqual([[directConversationId, 1]]);
    held.shift()?.();
    await flush();
    clock.advanceBy(1000);
    await flush();
    expect(delivered(edge)).toEqual([
      [directConversationId, 1],
      [directConversationId, 2],
    ]);
  });

  it("sends no delivered when deliveredDelayMs is 0", async () => {
    const { edge, clock } = await setup({ deliveredDelayMs: 0 });
    edge.store(directConversationId, "m1", "one", "bob");
    await flush();
    clock.advanceBy(5000);
    await flush();
    expect(delivered(edge)).toEqual([]);
  });

  it("marks read with a read frame, resolving with the positions, and emits receipt events", async () => {
    const { edge, client, receipts } = await setup();
    edge.store(directConversationId, "m1", "one", "bob");
    await flush();
    expect(await client.markRead(directConversationId, 1)).toEqual({ conversationId: directConversationId, readSeq: 1, deliveredSeq: 1 });
    expect(edge.framesOfType("read").map(({ conversationId, seq }) => [conversationId, seq])).toEqual([[directConversationId, 1]]);
    edge.append({ kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 });
    await flush();
    expect(receipts).toEqual([{ conversationId: directConversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 }]);
  });
});
