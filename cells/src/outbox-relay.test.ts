// The relay over a memory store's outbox, applying rows to another memory store's mailboxes. The rows are
// what the outbox carries since messages left it (docs/decisions/0009): the joined events of new members
// and the receipt events of read positions.
import { describe, expect, it } from "vitest";
import type { MailboxEvent } from "@cellwire/protocol";
import { OutboxRelay, relayRetryDelayMs, type OutboxRelayLimits } from "./outbox-relay.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { newGroupId, pageOf } from "../test/store-contract.ts";
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
  retryDelayMsMin: 1000,
  retryDelayMsMax: 60_000,
  failuresMax: 4,
};

function setup(options: { limits?: Partial<OutboxRelayLimits>; owns?: (conversationId: string) => boolean } = {}) {
  const clock = { nowMs: 1_000_000 };
  const store = new MemoryConversationStore({}, () => clock.nowMs);
  const reads: OutboxQuery[] = [];
  const mailboxes = new MemoryConversationStore();
  let sends = 0;
  /** What the relay reported to its metrics. */
  const counts = { appended: 0, retried: 0, deadLettered: 0 };
  const control = {
    failing: new Set<string>(),
    hold: false,
    gates: [] as (() => void)[],
    inFlight: 0,
    inFlightMax: 0,
    started: [] as string[],
  };
  const append = async (entry: OutboxEntry): Promise<number> => {
    control.inFlight += 1;
    control.inFlightMax = Math.max(control.inFlightMax, control.inFlight);
    control.started.push(`${entry.recipientUserId}:${labelOf(entry.event)}`);
    try {
      if (control.hold) await new Promise<void>((resolve) => control.gates.push(resolve));
      if (control.failing.has(entry.recipientUserId)) throw new Error(`${entry.recipientUserId} is unreachable`);
      const appended = await mailboxes.appendMailbox({
        userId: entry.recipientUserId,
        eventId: entry.eventId,
        event: entry.event,
        epoch: 1,
      });
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
      markOutboxAttempt: (failures) => store.markOutboxAttempt(failures),
      deadLetterOutbox: (input) => store.deadLetterOutbox(input),
      deadLetteredRecipients: (conversationId) => store.deadLetteredRecipients(conversationId),
    },
    appender: { append },
    random: () => 0.5,
    ownership: { owns: options.owns ?? (() => true) },
    logger: silentLogger,
    limits: { ...defaultLimits, ...options.limits },
    metrics: {
      relayed: (appendedCount, retriedCount) => {
        counts.appended += appendedCount;
        counts.retried += retriedCount;
      },
      deadLettered: (rowCount) => void (counts.deadLettered += rowCount),
    },
  });
  /** Creates a group (its joined rows: one per member); relays them as the request handler does unless told not to. */
  async function group(members: string[], relayIt = true): Promise<{ conversationId: string; outbox: readonly OutboxEntry[] }> {
    const conversationId = newGroupId();
    const created = await store.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: members, epoch: 1 });
    if (created.outcome !== "conversation") throw new Error("not created");
    if (relayIt) relay.relayStored(conversationId, created.outbox);
    return { conversationId, outbox: created.outbox };
  }
  /**
   * bob reads one more message of the conversation: a receipt row for every member (`read <seq>` in their
   * mailboxes); relayed as the request handler does unless told not to.
   */
  async function read(conversationId: string, relayIt = true): Promise<readonly OutboxEntry[]> {
    const sent = await store.appendMessage({
      conversationId,
      senderUserId: "alice",
      senderDeviceId: "phone",
      clientMessageId: `c${++sends}`,
      body: "hi",
      epoch: 1,
    });
    if (sent.outcome !== "stored") throw new Error("not stored");
    const receipt = await store.markReceipt({
      conversationId,
      userId: "bob",
      position: "read",
      seq: sent.message.seq,
      fanOutMembersMax: 32,
      epoch: 1,
    });
    if (receipt.outcome !== "receipt" || receipt.outbox.length === 0) throw new Error("no receipt rows");
    if (relayIt) relay.relayStored(conversationId, receipt.outbox);
    return receipt.outbox;
  }
  async function mailbox(userId: string): Promise<string[]> {
    const page = pageOf(await mailboxes.mailboxPage({ userId, afterSeq: 0, limit: 100 }));
    return page.events.map((entry) => labelOf(entry.event));
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
  return { clock, store, reads, relay, control, counts, group, read, mailbox, pending, releaseAll };
}

/** A row's event in a word: `joined`, or `read <seq>` for bob's receipts. */
function labelOf(event: MailboxEvent): string {
  return event.kind === "joined" ? "joined" : `read ${event.readSeq}`;
}

describe("OutboxRelay", () => {
  it("applies every member's row, deletes it, and reads the outbox only for a conversation not known to be clean", async () => {
    const { relay, reads, group, read, mailbox, pending } = setup();
    const { conversationId } = await group(["bob", "carol"]);
    await relay.whenIdle();
    for (const userId of ["alice", "bob", "carol"]) expect(await mailbox(userId)).toEqual(["joined"]);
    expect(await pending(conversationId)).toEqual([]);
    expect(reads).toHaveLength(1);
    await read(conversationId);
    await relay.whenIdle();
    expect(reads).toHaveLength(1);
    expect(await mailbox("bob")).toEqual(["joined", "read 1"]);
    relay.forgetCleanConversations();
    await read(conversationId);
    await relay.whenIdle();
    expect(reads).toHaveLength(2);
    expect(await mailbox("carol")).toEqual(["joined", "read 1", "read 2"]);
  });

  it("serves recipients concurrently within the bound, each recipient's rows in order", async () => {
    const { relay, control, group, read, mailbox, releaseAll } = setup({ limits: { recipientsConcurrencyMax: 2 } });
    const members = ["bob", "carol", "dave", "erin"];
    control.hold = true;
    const { conversationId } = await group(members);
    await read(conversationId);
    await expect.poll(() => control.gates.length).toBe(2);
    expect(relay.pending).toBe(2);
    await releaseAll();
    await relay.whenIdle();
    expect(control.inFlightMax).toBe(2);
    for (const userId of ["alice", ...members]) {
      expect(await mailbox(userId)).toEqual(["joined", "read 1"]);
      expect(control.started.filter((started) => started.startsWith(`${userId}:`))).toEqual([`${userId}:joined`, `${userId}:read 1`]);
    }
  });

  it("leaves a failed recipient's rows, counting the attempt, backs off, and never applies a later row before them", async () => {
    const { clock, store, relay, control, group, read, mailbox, pending } = setup();
    control.failing.add("bob");
    const { conversationId, outbox } = await group(["bob", "carol"]);
    const bobJoined = outbox.find((entry) => entry.recipientUserId === "bob");
    await relay.whenIdle();
    expect(await mailbox("carol")).toEqual(["joined"]);
    expect(await mailbox("bob")).toEqual([]);
    expect(store.outboxAttempts(bobJoined?.id ?? 0)).toBe(1);
    const bobRead = (await read(conversationId)).find((entry) => entry.recipientUserId === "bob");
    await relay.whenIdle();
    expect(await mailbox("carol")).toEqual(["joined", "read 1"]);
    expect(await mailbox("bob")).toEqual([]);
    expect((await pending(conversationId)).map((entry) => entry.id)).toEqual([bobJoined?.id, bobRead?.id]);
    // bob's older row backs off (its first retry waits retryDelayMsMin): not tried again yet, and the newer one waits behind it.
    expect(control.started.filter((started) => started.startsWith("bob:"))).toEqual(["bob:joined"]);
    expect(store.outboxAttempts(bobJoined?.id ?? 0)).toBe(1);
    clock.nowMs += 1000;
    relay.drain(conversationId);
    await relay.whenIdle();
    expect(store.outboxAttempts(bobJoined?.id ?? 0)).toBe(2);
    expect(store.outboxAttempts(bobRead?.id ?? 0)).toBe(0);
    control.failing.delete("bob");
    // The second retry waits 1,000 to 2,000 ms (1,500 with this draw).
    clock.nowMs += 1500;
    await read(conversationId);
    await relay.whenIdle();
    expect(await mailbox("bob")).toEqual(["joined", "read 1", "read 2"]);
    expect(await pending(conversationId)).toEqual([]);
  });

  it("keeps relaying the others while one recipient always fails, backs that one off, and moves its rows to the dead letters after failuresMax", async () => {
    // Pages of two rows: bob's held rows on one page must not stop carol's and dave's on the next ones.
    const { clock, store, relay, control, counts, group, read, mailbox, pending } = setup({
      limits: { batchMax: 2, drainBatchesMax: 50, failuresMax: 3 },
    });
    control.failing.add("bob");
    const { conversationId } = await group(["bob", "carol", "dave"]);
    await relay.whenIdle();
    const bobAttempts = (): number => control.started.filter((started) => started.startsWith("bob:")).length;
    const reads: string[] = [];
    for (let round = 1; round <= 6; round++) {
      await read(conversationId);
      reads.push(`read ${round}`);
      await relay.whenIdle();
      // The others get every row at once, whatever bob does.
      for (const userId of ["alice", "carol", "dave"]) expect(await mailbox(userId)).toEqual(["joined", ...reads]);
    }
    // Six relays of the conversation in the same instant tried bob once: it backs off, no hot loop.
    expect(bobAttempts()).toBe(1);
    // What the worker's metrics count: 3 × 7 rows applied, bob's one failed row to retry, no dead letter yet.
    expect(counts).toEqual({ appended: 21, retried: 1, deadLettered: 0 });
    expect((await pending(conversationId)).every((entry) => entry.recipientUserId === "bob")).toBe(true);
    expect(await pending(conversationId)).toHaveLength(7);
    // Its retry time comes (the sweeper would drain now): one more attempt each time, on its oldest row.
    clock.nowMs += 1000;
    relay.drain(conversationId);
    await relay.whenIdle();
    expect(bobAttempts()).toBe(2);
    expect(await store.deadLetters({ afterId: 0, limit: 100 })).toEqual([]);
    clock.nowMs += 1500;
    relay.drain(conversationId);
    await relay.whenIdle();
    // The third failure is the bound: all seven rows of bob, in order, with the error that stopped them.
    expect(bobAttempts()).toBe(3);
    expect(await pending(conversationId)).toEqual([]);
    const deadLetters = await store.deadLetters({ afterId: 0, limit: 100 });
    expect(deadLetters.map((deadLetter) => deadLetter.recipientUserId)).toEqual(Array(7).fill("bob"));
    expect(counts).toMatchObject({ retried: 3, deadLettered: 7 });
    expect(deadLetters.map(({ attempts, lastError }) => [attempts, lastError])).toEqual([
      [3, "Error: bob is unreachable"],
      ...Array(6).fill([0, "Error: bob is unreachable"]),
    ]);
    // Newer rows of bob follow them there without an attempt (applying them first would break the order); the others flow.
    await read(conversationId);
    await relay.whenIdle();
    expect(bobAttempts()).toBe(3);
    expect((await store.deadLetters({ afterId: 0, limit: 100 })).at(-1)?.lastError).toBe(
      "older rows of this recipient went to the dead letters first",
    );
    expect(await store.deadLetters({ afterId: 0, limit: 100 })).toHaveLength(8);
    expect(await mailbox("carol")).toEqual(["joined", ...reads, "read 7"]);
    // Redriven once bob is reachable: every row, in order, and the conversation relays as before.
    control.failing.delete("bob");
    expect(await store.redriveDeadLetters({ ids: [deadLetters[3]?.id ?? 0] })).toHaveLength(8);
    relay.drain(conversationId);
    await relay.whenIdle();
    expect(await mailbox("bob")).toEqual(["joined", ...reads, "read 7"]);
    await read(conversationId);
    await relay.whenIdle();
    expect(await mailbox("bob")).toEqual(["joined", ...reads, "read 7", "read 8"]);
  });

  it("sweeps a backing-off recipient's conversation only once its retry time has come", async () => {
    const { clock, relay, control, group, reads } = setup({ limits: { retryAfterMs: 0 } });
    control.failing.add("bob");
    await group(["bob"]);
    await relay.whenIdle();
    const drainsBefore = reads.filter((query) => query.conversationId !== undefined).length;
    await relay.sweep();
    await relay.whenIdle();
    expect(reads.filter((query) => query.conversationId !== undefined).length).toBe(drainsBefore);
    clock.nowMs += 1000;
    await relay.sweep();
    await relay.whenIdle();
    expect(reads.filter((query) => query.conversationId !== undefined).length).toBe(drainsBefore + 1);
    expect(control.started.filter((started) => started.startsWith("bob:"))).toHaveLength(2);
  });

  it("sweeps rows older than the retry delay, only for conversations it owns, continuing page by page", async () => {
    const owned = new Set<string>();
    const { clock, relay, group, mailbox, pending } = setup({ owns: (id) => owned.has(id), limits: { batchMax: 2, sweepPagesMax: 1 } });
    // Created without relaying: their joined rows wait for the sweeper.
    const foreign = (await group(["bob", "carol"], false)).conversationId;
    const mine = (await group(["dave", "erin"], false)).conversationId;
    owned.add(mine);
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
    for (const userId of ["alice", "dave", "erin"]) expect(await mailbox(userId)).toEqual(["joined"]);
    expect(await pending(mine)).toEqual([]);
    expect(await pending(foreign)).toHaveLength(3);
    expect(await mailbox("bob")).toEqual([]);
  });

  it("sweeps on its own once started, and stops sweeping when stopped", async () => {
    const { relay, reads, group, read, mailbox } = setup({ limits: { sweepIntervalMs: 10, retryAfterMs: 0 } });
    const { conversationId } = await group(["bob"], false);
    relay.start();
    await expect.poll(() => mailbox("bob")).toEqual(["joined"]);
    expect(await relay.stop(1000)).toBe(true);
    const readsAtStop = reads.length;
    await read(conversationId, false);
    // A second relay sweeping at the same interval shows the time that passed: five of its sweeps, none of ours.
    let witnessSweeps = 0;
    const witness = new OutboxRelay({
      store: {
        pendingOutbox: async () => {
          witnessSweeps += 1;
          return { entries: [], malformed: [], lastId: undefined, retried: [] };
        },
        deleteOutbox: async () => undefined,
        markOutboxAttempt: async () => [],
        deadLetterOutbox: async () => 0,
        deadLetteredRecipients: async () => [],
      },
      appender: { append: async () => 0 },
      random: () => 0.5,
      ownership: { owns: () => true },
      logger: silentLogger,
      limits: { ...defaultLimits, sweepIntervalMs: 10, retryAfterMs: 0 },
    });
    witness.start();
    await expect.poll(() => witnessSweeps, { timeout: 5000 }).toBeGreaterThanOrEqual(5);
    await witness.stop(1000);
    expect(reads.length).toBe(readsAtStop);
    expect(await mailbox("bob")).toEqual(["joined"]);
  });

  it("waits for relays in flight when stopped, takes no new work, and reports a wait that ran out", async () => {
    const { relay, control, group, read, mailbox, pending, releaseAll } = setup();
    control.hold = true;
    const { conversationId } = await group(["bob"]);
    await expect.poll(() => control.gates.length).toBe(2);
    const stopped = relay.stop(5000);
    await read(conversationId);
    await releaseAll();
    expect(await stopped).toBe(true);
    expect(await mailbox("bob")).toEqual(["joined"]);
    expect((await pending(conversationId)).map((entry) => `${entry.recipientUserId}:${labelOf(entry.event)}`)).toEqual([
      "alice:read 1",
      "bob:read 1",
    ]);

    const stuck = setup();
    stuck.control.hold = true;
    await stuck.group(["bob"]);
    await expect.poll(() => stuck.control.gates.length).toBe(2);
    expect(await stuck.relay.stop(20)).toBe(false);
    await stuck.releaseAll();
  });

  it("merges work arriving while a conversation's relay runs into one waiting relay", async () => {
    const { relay, control, group, read, mailbox, releaseAll, reads } = setup();
    const { conversationId } = await group(["bob"]);
    await relay.whenIdle();
    control.hold = true;
    await read(conversationId);
    await expect.poll(() => control.gates.length).toBe(2);
    await read(conversationId);
    await read(conversationId);
    relay.drain(conversationId);
    expect(relay.pending).toBe(2);
    await releaseAll();
    await relay.whenIdle();
    expect(await mailbox("bob")).toEqual(["joined", "read 1", "read 2", "read 3"]);
    // The group's relay and the merged drain read the outbox; read 1 went by the clean shortcut.
    expect(reads).toHaveLength(2);
  });
});

describe("relayRetryDelayMs", () => {
  it("waits at least the minimum, doubles the ceiling per failure up to the maximum, and draws in its upper half", () => {
    const limits = { retryDelayMsMin: 1000, retryDelayMsMax: 10_000 };
    expect([1, 2, 3, 4, 5, 9].map((attempts) => relayRetryDelayMs(attempts, limits, () => 0))).toEqual([
      1000, 1000, 2000, 4000, 5000, 5000,
    ]);
    expect([1, 2, 3, 4, 5, 9].map((attempts) => relayRetryDelayMs(attempts, limits, () => 0.999999))).toEqual(
      [999, 1999, 3999, 7999, 9999, 9999].map((ms) => Math.max(1000, ms)),
    );
  });
});
