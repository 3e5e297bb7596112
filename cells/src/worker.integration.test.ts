// Workers of two cells, in process, against the machine's real NATS and Postgres: cell a has two workers,
// cell b one. The directory is a stub responder in the test (it registers cells and resolves users to the
// home cells the test chose, or stays silent for users the test names), so only cells/ is under test.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MembershipWatcher,
  connectNats,
  decodeMessage,
  destroyMembershipBucket,
  encodeJson,
  openMembershipBucket,
  systemClock,
  anonymousNatsAccess,
  startRouter,
  type RunningRouter,
} from "@cellwire/cluster";
import {
  cellMailboxPageBatchReplies,
  cellReply,
  cellRequestKey,
  cellSendBatchReplies,
  deliveriesSubject,
  deliveryBatch,
  joinedEventId,
  mailboxEventId,
  workerRequestSubject,
  type CellMailboxPageBatchReplies,
  type CellMailboxPageRequest,
  type CellReply,
  type CellRequest,
  type CellSendBatchReplies,
  type CellSendRequest,
  type BatchedEvent,
  type BatchedMessage,
  type DeliveryBatch,
  type DirectoryRequest,
  type Message,
  type SequencedEvent,
  type WorkerChannel,
} from "@cellwire/protocol";
import type { WorkerConfig } from "./config.ts";
import { databaseUrl, defaultPostgresAdminUrl, dropCellDatabase } from "./store/database.ts";
import { joinedEvent, labelOf, newGroupId } from "../test/store-contract.ts";
import { startWorker, type RunningWorker } from "./worker.ts";
import { pollUntil } from "@cellwire/testkit";
import { recordingLogger, required } from "../test/worker-test-kit.ts";
import { serveDirectoryStub } from "../test/directory-stub.ts";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
/** A namespace with no directory at all. */
const lonelyNamespace = `${namespace}x`;
const cellIds = ["a", "b"] as const;
type CellId = (typeof cellIds)[number];
const natsServers = ["127.0.0.1:4222"];
const leaseMs = 2000;
const deadlineMs = 15_000;
const { warnings, logger } = recordingLogger();

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
let router: RunningRouter | undefined;
let watcher: MembershipWatcher | undefined;
const pools = new Map<CellId, pg.Pool>();
const workers = new Map<string, RunningWorker>();
const directoryRequests: DirectoryRequest[] = [];
/** The home cell the directory stub gives each user. */
const homes = new Map<string, CellId>();
/** Users the directory stub does not answer for (a relay to them fails until they are removed). */
const silentUsers = new Set<string>();

function config(cellId: CellId, workerId: string): WorkerConfig {
  return {
    namespace,
    natsServers,
    cellId,
    workerId,
    postgresAdminUrl: defaultPostgresAdminUrl,
    leaseMs,
    heartbeatIntervalMs: 400,
    cellWeight: 100,
    poolSize: 4,
    directoryWaitMs: 10_000,
    pendingPerConversationMax: 64,
    pendingTotalMax: 1000,
    outboxSweepIntervalMs: 200,
    outboxRetryAfterMs: 500,
    outboxBatchMax: 100,
    outboxSweepPagesMax: 4,
    relayRecipientsConcurrencyMax: 4,
    relaysInFlightMax: 32,
    relayPendingMax: 100,
    relayCleanConversationsMax: 100,
    relayRequestTimeoutMs: 1000,
    relayAttemptsMax: 3,
    relayWatchedCellsMax: 4,
    relayStopWaitMs: 1000,
    homeCellCacheUsersMax: 100,
    homeCellCacheTtlMs: 60_000,
  };
}

/** A fresh user homed in `cellId`, so every test starts from empty mailboxes. */
function user(name: string, cellId: CellId): string {
  const userId = `${name}-${randomBytes(4).toString("hex")}`;
  homes.set(userId, cellId);
  return userId;
}

/** Polls a condition until it holds or the deadline passes (no fixed sleeps). */
function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  return pollUntil(what, probe, { deadlineMs, intervalMs: 25 });
}

/**
 * Every delivery.batch published in the namespace, in arrival order, decoded as an edge decodes it (read
 * from the deliveries subject, subscribed before the workers start); and the reasons of those that did not
 * decode.
 */
const batches: DeliveryBatch[] = [];
const undecodableBatches: string[] = [];

function decodedBatches(): readonly DeliveryBatch[] {
  if (undecodableBatches.length > 0) throw new Error(`delivery batches that no edge would accept: ${undecodableBatches.join("; ")}`);
  return batches;
}

/** The messages an edge would hand to a user's sessions (those naming the user among their recipients), in arrival order. */
function messageItemsOf(userId: string): BatchedMessage[] {
  return decodedBatches().flatMap((batch) => batch.messages.filter((item) => item.recipientUserIds.includes(userId)));
}

function messagesOf(userId: string): Message[] {
  return messageItemsOf(userId).map((item) => item.message);
}

/** The mailbox events an edge would hand to a user's sessions, in arrival order. */
function eventsOf(userId: string): BatchedEvent[] {
  return decodedBatches().flatMap((batch) => batch.events.filter((event) => event.recipientUserId === userId));
}

/** Every message of a conversation published so far, whoever its recipients, in arrival order. */
function publishedMessagesOf(conversationId: string): BatchedMessage[] {
  return decodedBatches().flatMap((batch) => batch.messages.filter((item) => item.message.conversationId === conversationId));
}

async function route(request: CellRequest, cellId: CellId = "a"): Promise<CellReply> {
  return required(router, "router").toCell(cellId, request);
}

/** The whole mailbox of a user, read through its owner in its home cell. */
async function mailbox(userId: string): Promise<{ events: SequencedEvent[]; headSeq: number }> {
  const reply = await route({ type: "cell.mailboxPage", userId, afterSeq: 0, limit: 200 }, required(homes.get(userId), "home"));
  if (reply.type !== "cell.mailboxEvents") throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  return { events: reply.events, headSeq: reply.headSeq };
}

/** A mailbox's events in words: `joined <conversation> after <seq>`, or the label of a made-up event. */
function describeEvents(events: readonly SequencedEvent[]): string[] {
  return events.map(({ event }) =>
    event.kind === "joined" && event.title === "team" ? `joined ${event.conversationId} after ${event.afterSeq}` : labelOf(event),
  );
}

/** The bodies of a member's log from its join point, read through the conversation's owner. */
async function logOf(conversationId: string, userId: string): Promise<{ afterSeq: number; bodies: string[] }> {
  const reply = await route({ type: "cell.messagesAfter", userId, conversationId, afterSeq: null, limit: 100 });
  if (reply.type !== "cell.messages") throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  return { afterSeq: reply.afterSeq, bodies: reply.messages.map((message) => message.body) };
}

async function outboxRows(conversationId: string): Promise<{ recipient: string; attempts: number }[]> {
  const result = await required(pools.get("a"), "pool").query(
    "select recipient_user_id as recipient, attempts from outbox where conversation_id = $1 order by id",
    [conversationId],
  );
  return result.rows.map((row: { recipient: string; attempts: number }) => ({ recipient: row.recipient, attempts: row.attempts }));
}

async function createGroup(creatorUserId: string, memberUserIds: string[]): Promise<string> {
  const conversationId = newGroupId();
  const created = await route({ type: "cell.createGroup", creatorUserId, conversationId, title: "team", memberUserIds });
  expect(created.type).toBe("cell.conversation");
  return conversationId;
}

async function send(conversationId: string, senderUserId: string, clientMessageId: string, body = clientMessageId): Promise<Message> {
  const reply = await route({ type: "cell.send", senderUserId, senderDeviceId: "laptop", conversationId, clientMessageId, body });
  if (reply.type !== "cell.stored") throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  return reply.message;
}

/** Sends a cell.sendBatch straight to one worker of cell a, as an edge's send batcher does. */
async function directBatch(workerId: string, sends: CellSendRequest[], budgetMs = 5000): Promise<CellSendBatchReplies> {
  const reply = await required(connection, "nats").request(
    workerRequestSubject(namespace, "a", workerId, "edge"),
    encodeJson({ type: "cell.sendBatch", budgetMs, sends }),
    {
      timeout: 5000,
    },
  );
  const decoded = decodeMessage(cellSendBatchReplies, reply.data);
  if (!decoded.ok) throw new Error(`batch replies do not decode: ${decoded.reason}`);
  return decoded.value;
}

/** The worker of cell a that owns a key on the test's view of the ring. */
/** Sends a cell.mailboxPageBatch straight to one worker of cell a, as an edge's page batcher does (0042). */
async function directPageBatch(workerId: string, pages: CellMailboxPageRequest[]): Promise<CellMailboxPageBatchReplies> {
  const reply = await required(connection, "nats").request(
    workerRequestSubject(namespace, "a", workerId, "edge"),
    encodeJson({ type: "cell.mailboxPageBatch", budgetMs: 5000, pages }),
    { timeout: 5000 },
  );
  const decoded = decodeMessage(cellMailboxPageBatchReplies, reply.data);
  if (!decoded.ok) throw new Error(`page batch replies do not decode: ${decoded.reason}`);
  return decoded.value;
}

function ownerOf(key: string): string {
  return required(required(watcher, "watcher").snapshot.ring.ownerOf(key), "owner");
}

/** Sends raw bytes straight to one worker's subject for `channel`, bypassing the router. */
async function direct(workerId: string, payload: string, channel: WorkerChannel = "edge"): Promise<CellReply> {
  const reply = await required(connection, "nats").request(
    workerRequestSubject(namespace, "a", workerId, channel),
    new TextEncoder().encode(payload),
    {
      timeout: 5000,
    },
  );
  const decoded = decodeMessage(cellReply, reply.data);
  if (!decoded.ok) throw new Error(`reply does not decode: ${decoded.reason}`);
  return decoded.value;
}

beforeAll(async () => {
  connection = await connectNats(natsServers, "cells-worker-test", { ...logger }, anonymousNatsAccess("worker"));
  connection.subscribe(deliveriesSubject(namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(deliveryBatch, message.data);
      if (decoded.ok) batches.push(decoded.value);
      else undecodableBatches.push(decoded.reason);
    },
  });
  serveDirectoryStub(connection, namespace, {
    cellIds,
    homeOf: (userId) => homes.get(userId),
    silent: (userId) => silentUsers.has(userId),
    onRequest: (request) => directoryRequests.push(request),
  });
  await connection.flush();
  // Cell a's two workers at once, as a launcher starts them: the database bootstrap must tolerate its twin.
  const started = await Promise.all([
    startWorker(config("a", "a-1"), { ...logger }),
    startWorker(config("a", "a-2"), { ...logger }),
    startWorker(config("b", "b-1"), { ...logger }),
  ]);
  for (const worker of started) workers.set(worker.workerId, worker);
  router = startRouter(
    connection,
    {
      ring: {
        namespace,
        leaseMs,
        requestTimeoutMs: 5000,
        attemptsMax: 6,
        retryBackoff: { initialDelayMs: 50, maxDelayMs: 500, multiplier: 2 },
        watchedCellsMax: 4,
      },
      // Only toCell is used here: no request is routed to a key's home.
      homes: { resolve: async () => undefined, moved: () => {}, forget: () => {} },
    },
    { clock: systemClock, logger },
  );
  const bucket = await openMembershipBucket(connection, namespace, "a", leaseMs);
  watcher = new MembershipWatcher(bucket, "a", 100, systemClock, logger);
  await watcher.start();
  await waitFor("both leases of cell a", () => (watcher?.snapshot.ring.size === 2 ? true : undefined));
  for (const cellId of cellIds) {
    const pool = new pg.Pool({ connectionString: databaseUrl(defaultPostgresAdminUrl, `${namespace}_cell_${cellId}`), max: 2 });
    pool.on("error", () => undefined);
    pools.set(cellId, pool);
  }
});

afterAll(async () => {
  await Promise.all([...workers.values()].map((worker) => worker.stop()));
  router?.stop();
  watcher?.stop();
  await Promise.all([...pools.values()].map((pool) => pool.end()));
  if (connection !== undefined) {
    for (const cellId of cellIds) await destroyMembershipBucket(connection, namespace, cellId).catch(() => undefined);
    await connection.drain();
  }
  for (const cellId of cellIds) await dropCellDatabase(defaultPostgresAdminUrl, namespace, cellId);
  await dropCellDatabase(defaultPostgresAdminUrl, lonelyNamespace, "a");
});

describe("cell workers", () => {
  it("registered their cells with the directory", () => {
    const registrations = directoryRequests.filter((request) => request.type === "directory.registerCell");
    expect(registrations.map((request) => (request.type === "directory.registerCell" ? request.cellId : "")).sort()).toEqual([
      "a",
      "a",
      "b",
    ]);
  });

  it("publishes each send once, in seq order, with every member as a recipient, in both cells, and puts the joined events in their mailboxes", async () => {
    const [alice, bob, carol] = [user("alice", "a"), user("bob", "a"), user("carol", "b")];
    const conversationId = await createGroup(alice, [bob, carol]);

    const first = await send(conversationId, alice, "c-1", "hello team");
    expect(first).toMatchObject({ conversationId, seq: 1, body: "hello team", senderDeviceId: "laptop" });
    const stored = await required(pools.get("a"), "pool").query("select seq::int as seq, body from messages where message_id = $1", [
      first.messageId,
    ]);
    expect(stored.rows).toEqual([{ seq: 1, body: "hello team" }]);
    // Pipelined: the owner publishes them in the order it stored them.
    const rest = await Promise.all([send(conversationId, bob, "c-2", "second"), send(conversationId, carol, "c-3", "third")]);
    const messages = [first, ...rest];
    expect(messages.map((message) => message.seq)).toEqual([1, 2, 3]);

    const joined = { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq: 0, addedByUserId: alice };
    const members = [alice, bob, carol].sort();
    for (const userId of members) {
      await waitFor(`three messages and the joined event for ${userId}`, () =>
        messagesOf(userId).length >= 3 && eventsOf(userId).length >= 1 ? true : undefined,
      );
      expect(messagesOf(userId)).toEqual(messages);
      expect(messageItemsOf(userId).map((item) => [...item.recipientUserIds].sort())).toEqual([members, members, members]);
      // carol's joined event comes from her mailbox's owner in cell b, the messages from the conversation's owner in cell a.
      expect(eventsOf(userId)).toEqual([{ recipientUserId: userId, seq: 1, event: joined }]);
      // The mailbox holds the joined event only: messages are read from the conversation's log.
      const { events, headSeq } = await mailbox(userId);
      expect(events).toEqual([{ seq: 1, event: joined }]);
      expect(headSeq).toBe(1);
      expect(await logOf(conversationId, userId)).toEqual({ afterSeq: 0, bodies: ["hello team", "second", "third"] });
    }
    // carol's mailbox lives in cell b's database, under the joined event's id.
    const carolRows = await required(pools.get("b"), "pool").query(
      "select seq::int as seq, event_id from mailbox_events where user_id = $1 order by seq",
      [carol],
    );
    expect(carolRows.rows).toEqual([{ seq: 1, event_id: joinedEventId({ conversationId }) }]);
    // Each message travelled once for its three members, not once per member.
    expect(publishedMessagesOf(conversationId).map((item) => item.message)).toEqual(messages);
    await waitFor("the outbox to empty", async () => ((await outboxRows(conversationId)).length === 0 ? true : undefined));

    const history = await route({ type: "cell.history", userId: carol, conversationId, beforeSeq: null, limit: 10 });
    expect(history).toMatchObject({
      type: "cell.historyPage",
      conversationId,
      hasMore: false,
      messages: [{ seq: 1 }, { seq: 2 }, { seq: 3, body: "third" }],
    });
    const mallory = user("mallory", "a");
    for (const read of [
      { type: "cell.history", userId: mallory, conversationId, beforeSeq: null, limit: 10 },
      { type: "cell.messagesAfter", userId: mallory, conversationId, afterSeq: 0, limit: 10 },
    ] as const) {
      expect(await route(read)).toMatchObject({ type: "cell.error", code: "not_a_member" });
    }
  });

  it("publishes a repeated send only once", async () => {
    const [alice, bob] = [user("alice", "a"), user("bob", "b")];
    const conversationId = await createGroup(alice, [bob]);
    const request: CellRequest = {
      type: "cell.send",
      senderUserId: alice,
      senderDeviceId: "laptop",
      conversationId,
      clientMessageId: "once",
      body: "once",
    };
    const stored = await route(request);
    expect(await route(request)).toEqual({ ...(stored as object), deduplicated: true });
    await send(conversationId, alice, "next");
    // One owner publishes in commit order: had the repeat been published, it would have come before "next".
    await waitFor("bob's second message", () => messagesOf(bob)[1]);
    expect(messagesOf(bob).map((message) => [message.seq, message.body])).toEqual([
      [1, "once"],
      [2, "next"],
    ]);
    expect(publishedMessagesOf(conversationId)).toHaveLength(2);
    expect(await logOf(conversationId, bob)).toEqual({ afterSeq: 0, bodies: ["once", "next"] });
  });

  it("publishes to a member added later the messages after the join point, which its joined event names", async () => {
    const [alice, bob, dave] = [user("alice", "a"), user("bob", "a"), user("dave", "b")];
    const conversationId = await createGroup(alice, [bob]);
    await send(conversationId, alice, "before-1");
    await send(conversationId, bob, "before-2");
    // Published before the add (a publish still pending at the add could read the new member list).
    await waitFor("the messages before the add", () => (publishedMessagesOf(conversationId).length >= 2 ? true : undefined));
    const added = await route({ type: "cell.addMembers", userId: bob, conversationId, userIds: [dave] });
    expect(added).toMatchObject({ type: "cell.conversation", conversation: { memberUserIds: [alice, bob, dave].sort() } });
    await send(conversationId, alice, "after");
    await waitFor("dave's joined event and first message", () =>
      eventsOf(dave).length >= 1 && messagesOf(dave).length >= 1 ? true : undefined,
    );
    expect(eventsOf(dave).map((delivery) => delivery.event)).toEqual([
      { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq: 2, addedByUserId: bob },
    ]);
    expect(messagesOf(dave).map((message) => [message.seq, message.body])).toEqual([[3, "after"]]);
    // The messages before the join went to the members of their time, the one after it to all three.
    expect(publishedMessagesOf(conversationId).map((item) => [item.message.body, [...item.recipientUserIds].sort()])).toEqual([
      ["before-1", [alice, bob].sort()],
      ["before-2", [alice, bob].sort()],
      ["after", [alice, bob, dave].sort()],
    ]);
    expect(await logOf(conversationId, dave)).toEqual({ afterSeq: 2, bodies: ["after"] });
  });

  it("pages a mailbox and serialises concurrent appends of one user into gapless, ordered deliveries", async () => {
    const dave = user("dave", "b");
    const events = Array.from({ length: 12 }, (_, index) => joinedEvent(`e${index}`));
    const replies = await Promise.all(
      events.map((event) => route({ type: "cell.appendMailbox", userId: dave, eventId: mailboxEventId(event), event }, "b")),
    );
    expect(replies.map((reply) => (reply.type === "cell.appended" ? reply.seq : 0)).sort((a, b) => a - b)).toEqual(
      events.map((_, index) => index + 1),
    );
    await waitFor("twelve deliveries", () => (eventsOf(dave).length >= 12 ? true : undefined));
    expect(eventsOf(dave).map((received) => received.seq)).toEqual(events.map((_, index) => index + 1));
    // A repeat answers the seq the event already has and is not delivered again.
    const fourth = required(events[3], "event");
    const again = await route({ type: "cell.appendMailbox", userId: dave, eventId: mailboxEventId(fourth), event: fourth }, "b");
    const fourthSeq = replies[3]?.type === "cell.appended" ? replies[3].seq : -1;
    expect(again).toEqual({ type: "cell.appended", userId: dave, seq: fourthSeq, deduplicated: true });
    const pages: number[][] = [];
    for (let afterSeq = 0; ;) {
      const reply = await route({ type: "cell.mailboxPage", userId: dave, afterSeq, limit: 5 }, "b");
      if (reply.type !== "cell.mailboxEvents") throw new Error(`unexpected reply ${reply.type}`);
      expect(reply).toMatchObject({ headSeq: 12, floorSeq: 0 });
      if (reply.events.length === 0) break;
      pages.push(reply.events.map((entry) => entry.seq));
      afterSeq = reply.events.at(-1)?.seq ?? afterSeq;
    }
    expect(pages).toEqual([
      [1, 2, 3, 4, 5],
      [6, 7, 8, 9, 10],
      [11, 12],
    ]);
    expect(await route({ type: "cell.mailboxPage", userId: dave, afterSeq: 3, limit: 0 }, "b")).toEqual({
      type: "cell.mailboxEvents",
      userId: dave,
      events: [],
      headSeq: 12,
      floorSeq: 0,
      incarnation: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    // The repeat published nothing (its delivery would have arrived before the pages' replies).
    expect(eventsOf(dave)).toHaveLength(12);
    expect(messagesOf(dave)).toEqual([]);
  });

  it("leaves a joined event whose relay failed in the outbox, and its sweeper re-drives it once the recipient's home answers; messages reach her meanwhile", async () => {
    const [alice, erin] = [user("alice", "a"), user("erin", "b")];
    silentUsers.add(erin);
    const conversationId = await createGroup(alice, [erin]);
    const first = await send(conversationId, alice, "while-silent");
    await waitFor("alice's mailbox", async () => ((await mailbox(alice)).headSeq === 1 ? true : undefined));
    const left = await waitFor("a failed attempt on erin's row", async () => {
      const rows = await outboxRows(conversationId);
      return rows.length === 1 && (rows[0]?.attempts ?? 0) >= 1 ? rows : undefined;
    });
    expect(left[0]?.recipient).toBe(erin);
    // Publishing a message needs no directory: erin has it live while her joined event waits.
    await waitFor("erin's message", () => messagesOf(erin)[0]);
    expect(messagesOf(erin)).toEqual([first]);
    expect(eventsOf(erin)).toEqual([]);

    silentUsers.delete(erin);
    await waitFor("erin's joined event", () => eventsOf(erin)[0]);
    expect(eventsOf(erin)).toEqual([
      {
        recipientUserId: erin,
        seq: 1,
        event: { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq: 0, addedByUserId: alice },
      },
    ]);
    expect(describeEvents((await mailbox(erin)).events)).toEqual([`joined ${conversationId} after 0`]);
    await waitFor("the outbox to empty", async () => ((await outboxRows(conversationId)).length === 0 ? true : undefined));
  });

  it("stores pipelined sends of one conversation in the order they were sent, and publishes them in that order", async () => {
    const alice = user("alice", "a");
    const conversationId = await createGroup(alice, []);
    const count = 20;
    const replies = await Promise.all(
      Array.from({ length: count }, (_, index) =>
        route({
          type: "cell.send",
          senderUserId: alice,
          senderDeviceId: "phone",
          conversationId,
          clientMessageId: `p${index}`,
          body: `b${index}`,
        }),
      ),
    );
    expect(replies.map((reply) => (reply.type === "cell.stored" ? reply.message.body : reply.type))).toEqual(
      Array.from({ length: count }, (_, index) => `b${index}`),
    );
    expect(replies.map((reply) => (reply.type === "cell.stored" ? reply.message.seq : 0))).toEqual(
      Array.from({ length: count }, (_, index) => index + 1),
    );
    await waitFor("alice's messages", () => (messagesOf(alice).length >= count ? true : undefined));
    expect(messagesOf(alice).map((message) => message.seq)).toEqual(Array.from({ length: count }, (_, index) => index + 1));
    expect(publishedMessagesOf(conversationId)).toHaveLength(count);
    // Her mailbox holds her joined event only. The outbox relay appends it after the group's creation,
    // on its own schedule: waited for, not assumed done by the time the sends are (seen in a full run).
    await waitFor("alice's joined event in her mailbox", async () => ((await mailbox(alice)).headSeq >= 1 ? true : undefined));
    expect((await mailbox(alice)).headSeq).toBe(1);
  });

  it("answers a cell.sendBatch on the owner's subject with a reply per send, in order, and publishes the new messages in seq order", async () => {
    const [alice, bob] = [user("alice", "a"), user("bob", "a")];
    const conversationId = await createGroup(alice, [bob]);
    const owner = ownerOf(conversationId);
    const sendOf = (senderUserId: string, clientMessageId: string): CellSendRequest => ({
      type: "cell.send",
      senderUserId,
      senderDeviceId: "laptop",
      conversationId,
      clientMessageId,
      body: clientMessageId,
    });
    const first = await directBatch(owner, [
      sendOf(alice, "s1"),
      sendOf(bob, "s2"),
      sendOf(user("mallory", "a"), "s3"),
      sendOf(alice, "s4"),
    ]);
    expect(
      first.replies.map((reply) =>
        reply.type === "cell.stored" ? `${reply.message.seq}:${reply.message.body}` : reply.type === "cell.error" ? reply.code : reply.type,
      ),
    ).toEqual(["1:s1", "2:s2", "not_a_member", "3:s4"]);
    // Retried whole (as an edge does after a lost reply): the stored sends answer deduplicated, the new one is stored.
    const retried = await directBatch(owner, [sendOf(alice, "s1"), sendOf(bob, "s2"), sendOf(alice, "s5")]);
    expect(
      retried.replies.map((reply) =>
        reply.type === "cell.stored" ? `${reply.message.seq}${reply.deduplicated ? " again" : ""}` : reply.type,
      ),
    ).toEqual(["1 again", "2 again", "4"]);
    await waitFor("bob's four messages", () => (messagesOf(bob).length >= 4 ? true : undefined));
    expect(messagesOf(bob).map((message) => message.body)).toEqual(["s1", "s2", "s4", "s5"]);
    // Sent to a worker that does not own the conversation, every send of the batch is sent back.
    const other = owner === "a-1" ? "a-2" : "a-1";
    const misrouted = await waitFor("not_owner from the other worker", async () => {
      const answer = await directBatch(other, [sendOf(alice, "s6"), sendOf(bob, "s7")]);
      return answer.replies.every((reply) => reply.type === "cell.error" && reply.code === "not_owner") ? answer : undefined;
    });
    expect(misrouted.replies).toHaveLength(2);
  });

  it("answers a cell.mailboxPageBatch with each page as the single request would, in order, not_owner for another worker's user", async () => {
    const pageOf = (userId: string): CellMailboxPageRequest => ({ type: "cell.mailboxPage", userId, afterSeq: 0, limit: 10 });
    // A group gives its members a joined event each, so their pages are not all empty.
    const members = Array.from({ length: 12 }, (_, index) => user(`paged${index}`, "a"));
    const [creator = "", ...others] = members;
    await createGroup(creator, others);
    const worker = "a-1";
    const mine = members.filter((member) => ownerOf(cellRequestKey(pageOf(member))) === worker);
    const theirs = members.filter((member) => ownerOf(cellRequestKey(pageOf(member))) !== worker);
    // Twelve users all on one worker of two would be a 1 in 2,048 ring; the test needs both kinds.
    expect(mine.length).toBeGreaterThan(1);
    expect(theirs.length).toBeGreaterThan(0);
    const pages = [pageOf(mine[0] ?? ""), pageOf(theirs[0] ?? ""), pageOf(mine[1] ?? "")];
    await waitFor("each member's joined event in the mailbox", async () => {
      const single = await direct(worker, JSON.stringify(pages[2]));
      return single.type === "cell.mailboxEvents" && single.headSeq >= 1 ? true : undefined;
    });
    const batch = await waitFor("not_owner for the other worker's user", async () => {
      const answer = await directPageBatch(worker, pages);
      return answer.replies[1]?.type === "cell.error" ? answer : undefined;
    });
    expect(batch.replies).toHaveLength(3);
    expect(batch.replies[1]).toMatchObject({ type: "cell.error", code: "not_owner" });
    for (const index of [0, 2]) {
      expect(batch.replies[index]).toMatchObject({ type: "cell.mailboxEvents", userId: pages[index]?.userId });
      expect(batch.replies[index]).toEqual(await direct(worker, JSON.stringify(pages[index])));
    }
  });

  it("answers not_owner from the worker that does not own the conversation", async () => {
    const conversationId = newGroupId();
    const owner = ownerOf(conversationId);
    const other = owner === "a-1" ? "a-2" : "a-1";
    const request = JSON.stringify({ type: "cell.history", userId: "alice", conversationId, beforeSeq: null, limit: 5 });
    // The other worker disowns the key once its own watcher has seen both leases.
    const reply = await waitFor("not_owner", async () => {
      const answer = await direct(other, request);
      return answer.type === "cell.error" && answer.code === "not_owner" ? answer : undefined;
    });
    expect(reply.message).toContain(owner);
    expect(await direct(owner, request)).toMatchObject({ type: "cell.error", code: "not_a_member" });
  });

  it("answers cell.error internal to a malformed payload and keeps serving", async () => {
    for (const workerId of ["a-1", "a-2"]) {
      expect(await direct(workerId, "{this is not json")).toMatchObject({ type: "cell.error", code: "internal" });
      expect(await direct(workerId, JSON.stringify({ type: "cell.send", body: 42 }))).toMatchObject({
        type: "cell.error",
        code: "internal",
      });
      expect(await direct(workerId, JSON.stringify({ type: "cell.sendBatch", budgetMs: 1000, sends: [] }))).toMatchObject({
        type: "cell.error",
        code: "internal",
      });
    }
    const conversationId = newGroupId();
    const created = await route({
      type: "cell.createGroup",
      creatorUserId: "alice",
      conversationId,
      title: "still here",
      memberUserIds: [],
    });
    expect(created.type).toBe("cell.conversation");
  });

  it("serves each request kind on its own channel subject only: admin and peer kinds on the edge subject, an edge's on the admin subject, are refused", async () => {
    for (const workerId of ["a-1", "a-2"]) {
      const stats = JSON.stringify({ type: "cell.stats" });
      expect(await direct(workerId, stats, "admin")).toMatchObject({ type: "cell.stats", cellId: "a" });
      for (const [payload, channel] of [
        [stats, "edge"],
        [JSON.stringify({ type: "cell.migrate", kind: "user", id: "alice", toCellId: "b" }), "edge"],
        [JSON.stringify({ type: "cell.appendMailbox", userId: "alice", eventId: "e1", event: { kind: "joined" } }), "edge"],
        [JSON.stringify({ type: "cell.sendBatch", budgetMs: 1000, sends: [] }), "admin"],
        [JSON.stringify({ type: "cell.history", userId: "alice", conversationId: newGroupId(), beforeSeq: null, limit: 5 }), "peer"],
      ] as const) {
        const reply = await direct(workerId, payload, channel);
        expect(reply).toMatchObject({ type: "cell.error", code: "internal" });
        expect(reply.type === "cell.error" ? reply.message : "").toContain(`not on ${channel}`);
      }
    }
  });

  it("after its owner stops, the successor re-drives the rows it left, continues the sequence and publishes to the members", async () => {
    const [alice, frank] = [user("alice", "a"), user("frank", "b")];
    silentUsers.add(frank);
    const conversationId = await createGroup(alice, [frank]);
    await send(conversationId, alice, "h1");
    await waitFor("a failed attempt on frank's row", async () =>
      ((await outboxRows(conversationId))[0]?.attempts ?? 0) >= 1 ? true : undefined,
    );
    const owner = ownerOf(conversationId);
    await required(workers.get(owner), "owner worker").stop();
    workers.delete(owner);
    await waitFor("the stopped worker's lease to go", () => (watcher?.snapshot.ring.members.includes(owner) === false ? true : undefined));
    silentUsers.delete(frank);
    // Nothing is sent meanwhile: only the successor's sweeper can bring frank his joined event.
    await waitFor("frank's mailbox", async () => ((await mailbox(frank)).headSeq === 1 ? true : undefined));
    expect(describeEvents((await mailbox(frank)).events)).toEqual([`joined ${conversationId} after 0`]);
    expect(await send(conversationId, alice, "h2")).toMatchObject({ seq: 2 });
    // The successor reads the members itself and publishes h2 to frank.
    await waitFor("frank's second message", () => messagesOf(frank)[1]);
    expect(messagesOf(frank).map((message) => [message.seq, message.body])).toEqual([
      [1, "h1"],
      [2, "h2"],
    ]);
    expect(await logOf(conversationId, frank)).toEqual({ afterSeq: 0, bodies: ["h1", "h2"] });
  });

  it("gives up with a clear error when no directory answers within the directory wait", async () => {
    const lonely = { ...config("a", "a-9"), namespace: lonelyNamespace, directoryWaitMs: 300 };
    await expect(startWorker(lonely, { ...logger })).rejects.toThrow(
      /directory did not register cell a within WORKER_DIRECTORY_WAIT_MS=300 ms/,
    );
  });
});
