// The publisher over a memory store's member lists (counted, and replaceable by a refusal), with its
// publishes recorded and decoded as an edge decodes them.
import { describe, expect, it } from "vitest";
import { decodeJsonText, deliveryMessage, deliverySubject, type Message } from "@cellwire/protocol";
import { MessagePublisher, type StoredMessage } from "./message-publisher.ts";
import { MemoryConversationStore } from "./store/memory-store.ts";
import { newGroupId } from "./store/store-contract.ts";
import type { AppendMessageInput, MembersResult } from "./store/store.ts";

const namespace = "t1";

function setup(conversationsMax = 100) {
  const store = new MemoryConversationStore();
  const reads: string[] = [];
  /** Conversations whose member reads answer this refusal instead (as while migrating). */
  const refusals = new Map<string, MembersResult>();
  const published: { subject: string; payload: string }[] = [];
  const warnings: string[] = [];
  let clientMessageCount = 0;
  const publisher = new MessagePublisher({
    members: async (conversationId) => {
      reads.push(conversationId);
      return refusals.get(conversationId) ?? store.members(conversationId);
    },
    subjectOf: (userId) => deliverySubject(namespace, userId),
    publish: (subject, payload) => void published.push({ subject, payload }),
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
    const input: AppendMessageInput = { conversationId, senderUserId, senderDeviceId: "phone", clientMessageId: `c${clientMessageCount}`, body, epoch: 1 };
    const [result] = await store.appendMessages([input]);
    if (result?.outcome !== "stored" || result.deduplicated) throw new Error(`expected a new message, got ${JSON.stringify(result)}`);
    return { message: result.message, membersVersion: result.membersVersion };
  }
  /** What was published, as `<recipient> <seq>:<body>`, each payload decoded as an edge decodes it. */
  function deliveries(): string[] {
    return published.map(({ subject, payload }) => {
      const decoded = decodeJsonText(deliveryMessage, payload);
      if (!decoded.ok) throw new Error(`payload does not decode: ${decoded.failure.path} ${decoded.failure.reason}`);
      const delivery = decoded.value;
      if (delivery.type !== "delivery.message") throw new Error(`expected delivery.message, got ${delivery.type}`);
      expect(subject).toBe(deliverySubject(namespace, delivery.recipientUserId));
      return `${delivery.recipientUserId} ${delivery.message.seq}:${delivery.message.body}`;
    });
  }
  return { store, reads, refusals, published, warnings, publisher, group, stored, deliveries };
}

describe("MessagePublisher", () => {
  it("publishes each message to each member's delivery subject, in the order given, as delivery.message payloads that decode", async () => {
    const { publisher, group, stored, deliveries, published } = setup();
    const [first, second] = [await group(["bob"]), await group(["carol", "dave"])];
    const messages = [await stored(first, "one"), await stored(second, "two"), await stored(first, "three", "bob")];
    await publisher.publish(messages);
    expect(deliveries()).toEqual(["alice 1:one", "bob 1:one", "alice 1:two", "carol 1:two", "dave 1:two", "alice 2:three", "bob 2:three"]);
    // The message comes through whole.
    const decoded = decodeJsonText(deliveryMessage, published[0]?.payload ?? "");
    expect(decoded.ok && decoded.value).toEqual({ type: "delivery.message", recipientUserId: "alice", message: messages[0]?.message });
  });

  it("encodes any body so that it decodes back unchanged", async () => {
    const { publisher, group, stored, published } = setup();
    const conversationId = await group(["bob"]);
    const body = 'quotes " and \\ backslashes, a newline\n, a tab\t, "}"], </script>, \u0001, emoji 👋 and 中文';
    const message = await stored(conversationId, body);
    await publisher.publish([message]);
    const bodies = published.map(({ payload }) => {
      const decoded = decodeJsonText(deliveryMessage, payload);
      return decoded.ok && decoded.value.type === "delivery.message" ? decoded.value.message : undefined;
    });
    expect(bodies).toEqual<(Message | undefined)[]>([message.message, message.message]);
  });

  it("reads a conversation's members once while their version holds", async () => {
    const { publisher, group, stored, reads, deliveries } = setup();
    const conversationId = await group(["bob"]);
    await publisher.publish([await stored(conversationId, "one"), await stored(conversationId, "two")]);
    await publisher.publish([await stored(conversationId, "three")]);
    expect(reads).toEqual([conversationId]);
    expect(deliveries()).toHaveLength(6);
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
    expect(deliveries()).toEqual(["alice 1:before", "bob 1:before", "alice 2:after", "bob 2:after", "carol 2:after"]);
    // A message stored under an older version needs no read: the newer list is at least as current.
    await publisher.publish([beforeAdd]);
    expect(reads).toHaveLength(2);
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

  it("skips, with a warning, the messages of a conversation whose members cannot be read (moving, moved), and publishes the others", async () => {
    const { publisher, group, stored, refusals, warnings, deliveries, reads } = setup();
    const [moving, moved, calm] = [await group(["bob"]), await group(["bob"]), await group(["carol"])];
    const messages = [await stored(moving, "frozen"), await stored(calm, "calm"), await stored(moved, "gone")];
    refusals.set(moving, { outcome: "moving" });
    refusals.set(moved, { outcome: "moved", cellId: "b", epoch: 7 });
    await publisher.publish(messages);
    expect(deliveries()).toEqual(["alice 1:calm", "carol 1:calm"]);
    expect(warnings).toEqual([expect.stringContaining(`${moving} could not be read (moving)`), expect.stringContaining(`${moved} could not be read (moved)`)]);
    // Nothing was cached for them: once readable, they are read again.
    refusals.clear();
    await publisher.publish([messages[0] ?? (await stored(moving, "x"))]);
    expect(deliveries().slice(2)).toEqual(["alice 1:frozen", "bob 1:frozen"]);
    expect(reads.filter((id) => id === moving)).toHaveLength(2);
  });

  it("passes on a failure to read the members, so its caller logs it", async () => {
    const published: string[] = [];
    const publisher = new MessagePublisher({
      members: () => Promise.reject(new Error("pool closed")),
      subjectOf: (userId) => deliverySubject(namespace, userId),
      publish: (subject) => void published.push(subject),
      logger: { info: () => undefined, warn: () => undefined },
      conversationsMax: 10,
    });
    const message: Message = { conversationId: newGroupId(), messageId: "m", seq: 1, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: "c", body: "b", sentAtMs: 1 };
    await expect(publisher.publish([{ message, membersVersion: 0 }])).rejects.toThrow("pool closed");
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
