import { describe, expect, it } from "vitest";
import { messageOf } from "@cellwire/protocol";
import { OutboxRelay, type OutboxRelayLimits } from "./outbox-relay.ts";
import { MemoryConversationStore } from "./store/memory-store.ts";
import { newGroupId, pageOf } from "./store/store-contract.ts";
import type { OutboxEntry, OutboxQuery } from "./store/store.ts";

const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

const defaultLimits: OutboxRelayLimits = {
  batchMax: 100,
  drainBatchesMax: 4,
  recipientsConcurrencyMax: 8,
  relaysInFlightMax: 64,
  pendingMax: 100,
  cleanConversationsMax: 100,
  retryAfterMs: 2000,
  sweepIntervalMs: 1000,
  sweepPagesMax: 10,
};

function setup(options: { limits?: Partial<OutboxRelayLimits>; owns?: (conversationId: string) => boolean } = {}) {
  const clock = { nowMs: 1_000_000 };
  const store = new MemoryConversationStore({}, () => clock.nowMs);
  const reads: OutboxQuery[] = [];
  const mailboxes = new MemoryConversationStore();
  const control = { failing: new Set<string>(), hold: false, gates: [] as (() => void)[], inFlight: 0, inFlightMax: 0, started: [] as string[] };
  const append = async (entry: OutboxEntry): Promise<number> => {
    control.inFlight += 1;
    control.inFlightMax = Math.max(control.inFlightMax, control.inFlight);
    control.started.push(`${entry.recipientUserId}:${messageOf(entry.event)?.body}`);
    try {
      if (control.hold) await new Promise<void>((resolve) => control.gates.push(resolve));
      if (control.failing.has(entry.recipientUserId)) throw new Error(`${entry.recipientUserId} is unreachable`);
      const appended = await mailboxes.appendMailbox({ userId: entry.recipientUserId, eventId: entry.eventId, event: entry.event, epoch: 1 });
      if (appended.outcome !== "appended") throw new Error(`mailbox of ${entry.recipientUserId} fenced`);
      return appended.seq;
    } finally {
      control.inFlight -= 1;
    }
  };
  const relay = new OutboxRelay({
    store: {
      pendingOutbox: (query) => {
        reads.push(query);
        return store.pendingOutbox(query);
      },
      deleteOutbox: (ids) => store.deleteOutbox(ids),
      markOutboxAttempt: (ids) => store.markOutboxAttempt(ids),
    },
    append,
    ownsConversation: options.owns ?? (() => true),
    logger: silentLogger,
    limits: { ...defaultLimits, ...options.limits },
  });
  async function group(members: string[]): Promise<string> {
    const conversationId = newGroupId();
    await store.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: members, epoch: 1 });
    return conversationId;
  }
  /** Stores a message; relays it as the request handler does unless told not to. */
  async function send(conversationId: string, body: string, relayIt = true): Promise<readonly OutboxEntry[]> {
    const result = await store.appendMessage({ conversationId, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: body, body, epoch: 1 });
    if (result.outcome !== "stored") throw new Error("not stored");
    if (relayIt) relay.relayStored(conversationId, result.outbox);
    return result.outbox;
  }
  async function mailbox(userId: string): Promise<string[]> {
    const page = pageOf(await mailboxes.mailboxPage({ userId, afterSeq: 0, limit: 100 }));
    return page.events.map((entry) => messageOf(entry.event)?.body ?? `(${entry.event.kind})`);
  }
  async function pending(conversationId: string): Promise<OutboxEntry[]> {
    return (await store.pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries;
  }
  async function releaseAll(): Promise<void> {
    control.hold = false;
    while (control.gates.length > 0) {
      for (const release of control.gates.splice(0)) release();
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return { clock, store, reads, relay, control, group, send, mailbox, pending, releaseAll };
}

describe("OutboxRelay", () => {
  it("applies every member's row, deletes it, and reads the outbox only for a conversation not known to be clean", async () => {
    const { relay, reads, group, send, mailbox, pending } = setup();
    const conversationId = await group(["bob", "carol"]);
    await send(conversationId, "m1");
    await relay.whenIdle();
    for (const userId of ["alice", "bob", "carol"]) expect(await mailbox(userId)).toEqual(["m1"]);
    expect(await pending(conversationId)).toEqual([]);
    expect(reads).toHaveLength(1);
    await send(conversationId, "m2");
    await relay.whenIdle();
    expect(reads).toHaveLength(1);
    expect(await mailbox("bob")).toEqual(["m1", "m2"]);
    relay.forgetCleanConversations();
    await send(conversationId, "m3");
    await relay.whenIdle();
    expect(reads).toHaveLength(2);
    expect(await mailbox("carol")).toEqual(["m1", "m2", "m3"]);
  });

  it("serves recipients concurrently within the bound, each recipient's messages in order", async () => {
    const { relay, control, group, send, mailbox, releaseAll } = setup({ limits: { recipientsConcurrencyMax: 2 } });
    const members = ["bob", "carol", "dave", "erin"];
    const conversationId = await group(members);
    control.hold = true;
    await send(conversationId, "m1");
    await send(conversationId, "m2");
    await expect.poll(() => control.gates.length).toBe(2);
    expect(relay.pending).toBe(2);
    await releaseAll();
    await relay.whenIdle();
    expect(control.inFlightMax).toBe(2);
    for (const userId of ["alice", ...members]) {
      expect(await mailbox(userId)).toEqual(["m1", "m2"]);
      expect(control.started.filter((started) => started.startsWith(`${userId}:`))).toEqual([`${userId}:m1`, `${userId}:m2`]);
    }
  });

  it("leaves a failed recipient's rows, counting the attempt, and never applies a later message before them", async () => {
    const { store, relay, control, group, send, mailbox, pending } = setup();
    const conversationId = await group(["bob", "carol"]);
    control.failing.add("bob");
    const [, bobFirst] = await send(conversationId, "m1");
    await relay.whenIdle();
    expect(await mailbox("carol")).toEqual(["m1"]);
    expect(await mailbox("bob")).toEqual([]);
    expect(store.outboxAttempts(bobFirst?.id ?? 0)).toBe(1);
    const [, bobSecond] = await send(conversationId, "m2");
    await relay.whenIdle();
    expect(await mailbox("carol")).toEqual(["m1", "m2"]);
    expect(await mailbox("bob")).toEqual([]);
    expect((await pending(conversationId)).map((entry) => entry.id)).toEqual([bobFirst?.id, bobSecond?.id]);
    // bob's older row was tried again (and failed first), the newer one waits behind it.
    expect(store.outboxAttempts(bobFirst?.id ?? 0)).toBe(2);
    expect(store.outboxAttempts(bobSecond?.id ?? 0)).toBe(0);
    control.failing.delete("bob");
    await send(conversationId, "m3");
    await relay.whenIdle();
    expect(await mailbox("bob")).toEqual(["m1", "m2", "m3"]);
    expect(await pending(conversationId)).toEqual([]);
  });

  it("sweeps rows older than the retry delay, only for conversations it owns, continuing page by page", async () => {
    const owned = new Set<string>();
    const { clock, relay, group, send, mailbox, pending } = setup({ owns: (id) => owned.has(id), limits: { batchMax: 2, sweepPagesMax: 1 } });
    const foreign = await group(["bob", "carol"]);
    const mine = await group(["dave", "erin"]);
    owned.add(mine);
    await send(foreign, "theirs", false);
    await send(mine, "ours", false);
    clock.nowMs += 1999;
    await relay.sweep();
    await relay.whenIdle();
    expect(await mailbox("dave")).toEqual([]);
    clock.nowMs += 1;
    // The first page holds only the other worker's rows; the next sweep goes on from there.
    await relay.sweep();
    await relay.whenIdle();
    expect(await mailbox("dave")).toEqual([]);
    await relay.sweep();
    await relay.whenIdle();
    for (const userId of ["alice", "dave", "erin"]) expect(await mailbox(userId)).toContain("ours");
    expect(await pending(mine)).toEqual([]);
    expect(await pending(foreign)).toHaveLength(3);
    expect(await mailbox("bob")).toEqual([]);
  });

  it("sweeps on its own once started, and stops sweeping when stopped", async () => {
    const { relay, group, send, mailbox } = setup({ limits: { sweepIntervalMs: 10, retryAfterMs: 0 } });
    const conversationId = await group(["bob"]);
    await send(conversationId, "left behind", false);
    relay.start();
    await expect.poll(() => mailbox("bob")).toEqual(["left behind"]);
    expect(await relay.stop(1000)).toBe(true);
    await send(conversationId, "after stop", false);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await mailbox("bob")).toEqual(["left behind"]);
  });

  it("waits for relays in flight when stopped, takes no new work, and reports a wait that ran out", async () => {
    const { relay, control, group, send, mailbox, pending, releaseAll } = setup();
    const conversationId = await group(["bob"]);
    control.hold = true;
    await send(conversationId, "m1");
    await expect.poll(() => control.gates.length).toBe(2);
    const stopped = relay.stop(5000);
    await send(conversationId, "m2");
    await releaseAll();
    expect(await stopped).toBe(true);
    expect(await mailbox("bob")).toEqual(["m1"]);
    expect((await pending(conversationId)).map((entry) => messageOf(entry.event)?.body)).toEqual(["m2", "m2"]);

    const stuck = setup();
    const other = await stuck.group(["bob"]);
    stuck.control.hold = true;
    await stuck.send(other, "m1");
    await expect.poll(() => stuck.control.gates.length).toBe(2);
    expect(await stuck.relay.stop(20)).toBe(false);
    await stuck.releaseAll();
  });

  it("merges work arriving while a conversation's relay runs into one waiting relay", async () => {
    const { relay, control, group, send, mailbox, releaseAll, reads } = setup();
    const conversationId = await group(["bob"]);
    await send(conversationId, "m0");
    await relay.whenIdle();
    control.hold = true;
    await send(conversationId, "m1");
    await expect.poll(() => control.gates.length).toBe(2);
    await send(conversationId, "m2");
    await send(conversationId, "m3");
    relay.drain(conversationId);
    expect(relay.pending).toBe(2);
    await releaseAll();
    await relay.whenIdle();
    expect(await mailbox("bob")).toEqual(["m0", "m1", "m2", "m3"]);
    // The first relay and the merged drain read the outbox; m1 went by the clean shortcut.
    expect(reads).toHaveLength(2);
  });
});
