// The publisher over a memory store's member lists (counted, and replaceable by a refusal), with its
// publishes recorded and decoded as an edge decodes them (deliveryBatch).
import { describe, expect, it } from "vitest";
import type { MsgHdrs } from "@nats-io/transport-node";
import {
  decodeJsonText,
  deliveryBatch,
  deliveryBatchItemsMax,
  messageBodyLengthMax,
  sendBatchBytesMax,
  type Delivery,
  type DeliveryBatch,
  type Message,
} from "@cellwire/protocol";
import { eventBatch, MessagePublisher, type StoredMessage } from "./message-publisher.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { joinedEvent, newGroupId } from "../test/store-contract.ts";
import type { AppendMessageInput, MembersResult } from "./store/store.ts";

/** Decodes a published payload as an edge does; a payload that does not decode fails the test. */
function decodeBatch(payload: string): DeliveryBatch {
  const decoded = decodeJsonText(deliveryBatch, payload);
  if (!decoded.ok) throw new Error(`payload does not decode: ${decoded.failure.path} ${decoded.failure.reason}`);
  return decoded.value;
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is missing`);
  return value;
}

/** A message made up for a conversation, as if stored at `seq` (for the bounds, where the store adds nothing). */
function madeUp(conversationId: string, seq: number, body: string): StoredMessage {
  const message: Message = {
    conversationId,
    messageId: `m${seq}`,
    seq,
    senderUserId: "alice",
    senderDeviceId: "phone",
    clientMessageId: `c${seq}`,
    body,
    sentAtMs: 1,
  };
  return { message, membersVersion: 1 };
}

function setup(conversationsMax = 100) {
  const store = new MemoryConversationStore();
  const reads: string[] = [];
  /** Conversations whose member reads answer this refusal instead (as while migrating). */
  const refusals = new Map<string, MembersResult>();
  const published: string[] = [];
  /** The headers of each publish, in order. */
  const publishedHeaders: (MsgHdrs | undefined)[] = [];
  const warnings: string[] = [];
  let clientMessageCount = 0;
  const publisher = new MessagePublisher({
    members: async (conversationId) => {
      reads.push(conversationId);
      return refusals.get(conversationId) ?? store.members(conversationId);
    },
    publish: (payload, headers) => {
      published.push(payload);
      publishedHeaders.push(headers);
    },
    logger: { info: () => undefined, warn: (line: string) => void warnings.push(line) },
    conversationsMax,
  });
  async function group(members: string[]): Promise<string> {
    const conversationId = newGroupId();
    await store.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: members, epoch: 1 });
    return conversationId;
  }
  /** Stores a message as the committer would, and returns what it hands to the publisher. */
  async function stored(conversationId: string, body: string, senderUserId = "alice"): Promise<StoredMessage> {
    clientMessageCount += 1;
    const input: AppendMessageInput = {
      conversationId,
      senderUserId,
      senderDeviceId: "phone",
      clientMessageId: `c${clientMessageCount}`,
      body,
      epoch: 1,
    };
    const [result] = await store.appendMessages([input]);
    if (result?.outcome !== "stored" || result.deduplicated) throw new Error(`expected a new message, got ${JSON.stringify(result)}`);
    return { message: result.message, membersVersion: result.membersVersion };
  }
  /** Every publish so far, decoded. */
  function batches(): DeliveryBatch[] {
    return published.map(decodeBatch);
  }
  /**
   * What was published, one line per message as `<recipients> <seq>:<body>`, across every batch in
   * publish order; each batch must carry messages only.
   */
  function deliveries(): string[] {
    return batches().flatMap((batch) => {
      expect(batch.events).toEqual([]);
      expect(batch.typing).toEqual([]);
      return batch.messages.map(({ recipientUserIds, message }) => `${recipientUserIds.join(",")} ${message.seq}:${message.body}`);
    });
  }
  return { store, reads, refusals, published, publishedHeaders, warnings, publisher, group, stored, batches, deliveries };
}

describe("MessagePublisher", () => {
  it("publishes a call's messages in one delivery.batch, each once with its conversation's members, in the order given", async () => {
    const { publisher, group, stored, batches, deliveries } = setup();
    const [first, second] = [await group(["bob"]), await group(["carol", "dave"])];
    const messages = [await stored(first, "one"), await stored(second, "two"), await stored(first, "three", "bob")];
    await publisher.publish(messages);
    // The message comes through whole, once, with every member (the sender included) as a recipient.
    expect(batches()).toEqual<DeliveryBatch[]>([
      {
        type: "delivery.batch",
        messages: [
          { recipientUserIds: ["alice", "bob"], message: required(messages[0]?.message, "first") },
          { recipientUserIds: ["alice", "carol", "dave"], message: required(messages[1]?.message, "second") },
          { recipientUserIds: ["alice", "bob"], message: required(messages[2]?.message, "third") },
        ],
        events: [],
        typing: [],
      },
    ]);
    expect(deliveries()).toEqual(["alice,bob 1:one", "alice,carol,dave 1:two", "alice,bob 2:three"]);
  });

  it("publishes nothing for no messages", async () => {
    const { publisher, published } = setup();
    await publisher.publish([]);
    expect(published).toEqual([]);
  });

  it("encodes any body so that it decodes back unchanged", async () => {
    const { publisher, group, stored, batches } = setup();
    const conversationId = await group(["bob"]);
    const body = 'quotes " and \\ backslashes, a newline\n, a tab\t, "}"], </script>, \u0001, emoji 👋 and 中文';
    const message = await stored(conversationId, body);
    await publisher.publish([message]);
    expect(batches().flatMap((batch) => batch.messages.map((item) => item.message))).toEqual<Message[]>([message.message]);
  });

  it(`splits a call into batches of at most deliveryBatchItemsMax (${deliveryBatchItemsMax}) messages, in order, and not before`, async () => {
    const { publisher, group, batches } = setup();
    const conversationId = await group(["bob"]);
    const exactly = Array.from({ length: deliveryBatchItemsMax }, (_, index) => madeUp(conversationId, index + 1, `b${index + 1}`));
    await publisher.publish(exactly);
    expect(batches().map((batch) => batch.messages.length)).toEqual([deliveryBatchItemsMax]);

    const { publisher: second, group: secondGroup, batches: secondBatches } = setup();
    const other = await secondGroup(["bob"]);
    const count = 2 * deliveryBatchItemsMax + 1;
    const messages = Array.from({ length: count }, (_, index) => madeUp(other, index + 1, `b${index + 1}`));
    await second.publish(messages);
    // Each batch decodes (the decoder refuses more items than the bound), and together they hold every message in order.
    const split = secondBatches();
    expect(split.map((batch) => batch.messages.length)).toEqual([deliveryBatchItemsMax, deliveryBatchItemsMax, 1]);
    expect(split.flatMap((batch) => batch.messages.map((item) => item.message.seq))).toEqual(messages.map((entry) => entry.message.seq));
    expect(split.every((batch) => batch.messages.every((item) => item.recipientUserIds.join(",") === "alice,bob"))).toBe(true);
  });

  it(`splits a call before a batch would pass sendBatchBytesMax (${sendBatchBytesMax}) bytes of UTF-8, and not before`, async () => {
    const { publisher, group, published, batches } = setup();
    const conversationId = await group(["bob", "carol"]);
    // Bodies at the length limit whose characters take three and four bytes of UTF-8 for one and two UTF-16
    // units: about 98 KB each, three times their string length. Counted as string length, a batch would
    // reach about 2.3 MB, past NATS's 1 MiB payload.
    const bodies = ["中".repeat(messageBodyLengthMax), "👋".repeat(messageBodyLengthMax / 2), `é${"文".repeat(messageBodyLengthMax - 1)}`];
    const messages = Array.from({ length: 24 }, (_, index) => madeUp(conversationId, index + 1, bodies[index % bodies.length] ?? ""));
    await publisher.publish(messages);
    const sizes = published.map((payload) => Buffer.byteLength(payload, "utf8"));
    expect(sizes.length).toBeGreaterThan(2);
    for (const size of sizes) expect(size).toBeLessThanOrEqual(sendBatchBytesMax);
    const split = batches();
    expect(split.flatMap((batch) => batch.messages.map((item) => item.message))).toEqual(messages.map((entry) => entry.message));
    // Every batch but the last is full: the next message (and its comma) would have taken it past the bound.
    split.slice(0, -1).forEach((batch, index) => {
      const next = required(split[index + 1]?.messages[0], `batch ${index + 1}`);
      expect((sizes[index] ?? 0) + Buffer.byteLength(`,${JSON.stringify(next)}`, "utf8")).toBeGreaterThan(sendBatchBytesMax);
      expect(batch.messages.length).toBeGreaterThan(1);
    });
  });

  it("reads a conversation's members once while their version holds", async () => {
    const { publisher, group, stored, reads, deliveries, published } = setup();
    const conversationId = await group(["bob"]);
    await publisher.publish([await stored(conversationId, "one"), await stored(conversationId, "two")]);
    await publisher.publish([await stored(conversationId, "three")]);
    expect(reads).toEqual([conversationId]);
    expect(published).toHaveLength(2);
    expect(deliveries()).toEqual(["alice,bob 1:one", "alice,bob 2:two", "alice,bob 3:three"]);
  });

  it("publishes at once, in the caller's turn, when every member list is cached, and only after reading otherwise", async () => {
    const { publisher, group, stored, published, reads } = setup();
    const [first, second] = [await group(["bob"]), await group(["carol"])];
    const one = await stored(first, "one");
    // A member list not cached: read first, so the publish is a promise and nothing has gone yet.
    const reading = publisher.publish([one]);
    expect(reading).toBeInstanceOf(Promise);
    expect(published).toHaveLength(0);
    await reading;
    expect(published).toHaveLength(1);
    // Cached: published before publish() returns, in the same turn as the caller's replies.
    expect(publisher.publish([await stored(first, "two")])).toBeUndefined();
    expect(published).toHaveLength(2);
    // One message of the batch not cached is enough to read first; the batch still goes as one.
    const mixed = publisher.publish([await stored(first, "three"), await stored(second, "four")]);
    expect(mixed).toBeInstanceOf(Promise);
    await mixed;
    expect(published).toHaveLength(3);
    expect(reads).toEqual([first, second]);
  });

  it("reloads the members for a message stored under a newer version (added by another worker), and not for an older one", async () => {
    const { publisher, store, group, stored, reads, deliveries } = setup();
    const conversationId = await group(["bob"]);
    const beforeAdd = await stored(conversationId, "before");
    await publisher.publish([beforeAdd]);
    // Another worker (no forget() here) added carol; the next message carries the new version.
    await store.addMembers({ conversationId, userId: "bob", userIds: ["carol"], epoch: 1 });
    const afterAdd = await stored(conversationId, "after");
    expect(afterAdd.membersVersion).toBeGreaterThan(beforeAdd.membersVersion);
    await publisher.publish([afterAdd]);
    expect(reads).toEqual([conversationId, conversationId]);
    expect(deliveries()).toEqual(["alice,bob 1:before", "alice,bob,carol 2:after"]);
    // A message stored under an older version needs no read: the newer list is at least as current.
    await publisher.publish([beforeAdd]);
    expect(reads).toHaveLength(2);
    expect(deliveries().at(-1)).toBe("alice,bob,carol 1:before");
  });

  it("reloads within one batch when a later message carries a newer version than the cached one", async () => {
    const { publisher, store, group, stored, reads, deliveries } = setup();
    const conversationId = await group(["bob"]);
    await publisher.publish([await stored(conversationId, "warm")]);
    const beforeAdd = await stored(conversationId, "before");
    await store.addMembers({ conversationId, userId: "bob", userIds: ["carol"], epoch: 1 });
    const afterAdd = await stored(conversationId, "after");
    await publisher.publish([beforeAdd, afterAdd]);
    expect(reads).toEqual([conversationId, conversationId]);
    expect(deliveries().slice(1)).toEqual(["alice,bob 2:before", "alice,bob,carol 3:after"]);
  });

  it("reloads after forget(), as this worker's own addMembers asks", async () => {
    const { publisher, group, stored, reads } = setup();
    const conversationId = await group(["bob"]);
    const message = await stored(conversationId, "one");
    await publisher.publish([message]);
    publisher.forget(conversationId);
    await publisher.publish([message]);
    expect(reads).toEqual([conversationId, conversationId]);
    publisher.forget(newGroupId());
    await publisher.publish([message]);
    expect(reads).toHaveLength(2);
  });

  it("skips, with a warning, the messages of a conversation whose members cannot be read (moving, moved), and publishes the others of the batch", async () => {
    const { publisher, group, stored, refusals, warnings, deliveries, reads, published } = setup();
    const [moving, moved, calm] = [await group(["bob"]), await group(["bob"]), await group(["carol"])];
    const messages = [await stored(moving, "frozen"), await stored(calm, "calm"), await stored(moved, "gone")];
    refusals.set(moving, { outcome: "moving" });
    refusals.set(moved, { outcome: "moved", cellId: "b", epoch: 7 });
    await publisher.publish(messages);
    expect(published).toHaveLength(1);
    expect(deliveries()).toEqual(["alice,carol 1:calm"]);
    expect(warnings).toEqual([
      expect.stringContaining(`${moving} could not be read (moving)`),
      expect.stringContaining(`${moved} could not be read (moved)`),
    ]);
    // A batch with nothing left to publish publishes nothing (no empty batch for every edge to read).
    await publisher.publish([required(messages[2], "gone")]);
    expect(published).toHaveLength(1);
    // Nothing was cached for them: once readable, they are read again.
    refusals.clear();
    await publisher.publish([required(messages[0], "frozen")]);
    expect(deliveries().slice(1)).toEqual(["alice,bob 1:frozen"]);
    expect(reads.filter((id) => id === moving)).toHaveLength(2);
  });

  it("passes on a failure to read the members, so its caller logs it", async () => {
    const published: string[] = [];
    const publisher = new MessagePublisher({
      members: () => Promise.reject(new Error("pool closed")),
      publish: (payload) => void published.push(payload),
      logger: { info: () => undefined, warn: () => undefined },
      conversationsMax: 10,
    });
    await expect(publisher.publish([madeUp(newGroupId(), 1, "b")])).rejects.toThrow("pool closed");
    expect(published).toEqual([]);
  });

  it("keeps at most conversationsMax member lists, forgetting the least recently used", async () => {
    const { publisher, group, stored, reads } = setup(2);
    const [first, second, third] = [await group(["bob"]), await group(["bob"]), await group(["bob"])];
    const messages = { first: await stored(first, "1"), second: await stored(second, "2"), third: await stored(third, "3") };
    await publisher.publish([messages.first, messages.second, messages.first, messages.third]);
    expect(reads).toEqual([first, second, third]);
    // second was the least recently used when third came in.
    await publisher.publish([messages.first, messages.third, messages.second]);
    expect(reads).toEqual([first, second, third, second]);
  });
});

describe("eventBatch", () => {
  it("wraps one mailbox event for its recipient, with its seq, in a delivery.batch that decodes", () => {
    const event = joinedEvent("team", 6);
    const delivery: Delivery = { type: "delivery.event", recipientUserId: "bob", seq: 4, event };
    expect(decodeBatch(eventBatch(delivery))).toEqual<DeliveryBatch>({
      type: "delivery.batch",
      messages: [],
      events: [{ recipientUserId: "bob", seq: 4, event }],
      typing: [],
    });
  });
});

describe("MessagePublisher with tracing off (docs/decisions/0037)", () => {
  it("publishes delivery batches without headers: recipients derive a message's trace id from its send", async () => {
    const { publisher, publishedHeaders, group, stored } = setup();
    const conversationId = await group(["alice", "bob"]);
    await publisher.publish([await stored(conversationId, "one"), await stored(conversationId, "two")]);
    expect(publishedHeaders).toEqual([undefined]);
  });
});
