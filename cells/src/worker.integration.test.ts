// Workers of two cells, in process, against the machine's real NATS and Postgres: cell a has two workers,
// cell b one. The directory is a stub responder in the test (it registers cells and resolves users to the
// home cells the test chose, or stays silent for users the test names), so only cells/ is under test.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CellRouter,
  MembershipWatcher,
  connectNats,
  decodeMessage,
  destroyMembershipBucket,
  encodeJson,
  openMembershipBucket,
  systemClock,
} from "@cellwire/cluster";
import {
  cellReply,
  delivery as deliveryDecoder,
  deliverySubject,
  directoryRequest,
  directorySubject,
  mailboxEventId,
  messageEventId,
  messageOf,
  workerSubject,
  type CellReply,
  type CellRequest,
  type Delivery,
  type DirectoryReply,
  type DirectoryRequest,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import type { WorkerConfig } from "./config.ts";
import { databaseUrl, defaultPostgresAdminUrl, dropCellDatabase } from "./store/database.ts";
import { messageEvent, newGroupId } from "./store/store-contract.ts";
import { startWorker, type RunningWorker } from "./worker.ts";
import { pollUntil } from "@cellwire/cluster/testing";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
/** A namespace with no directory at all. */
const lonelyNamespace = `${namespace}x`;
const cellIds = ["a", "b"] as const;
type CellId = (typeof cellIds)[number];
const natsServers = ["127.0.0.1:4222"];
const leaseMs = 2000;
const deadlineMs = 15_000;
const warnings: string[] = [];
const logger = { info: () => undefined, warn: (line: string) => void warnings.push(line), error: (line: string) => void warnings.push(line) };

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
let router: CellRouter | undefined;
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

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not ready`);
  return value;
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

/** Collects the deliveries published on one user's subject. */
async function collectDeliveries(userId: string): Promise<Delivery[]> {
  const received: Delivery[] = [];
  const nats = required(connection, "nats");
  nats.subscribe(deliverySubject(namespace, userId), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(deliveryDecoder, message.data);
      if (decoded.ok) received.push(decoded.value);
    },
  });
  await nats.flush();
  return received;
}

async function route(request: CellRequest, cellId: CellId = "a"): Promise<CellReply> {
  return required(router, "router").request(cellId, request);
}

/** The whole mailbox of a user, read through its owner in its home cell. */
async function mailbox(userId: string): Promise<{ events: SequencedEvent[]; headSeq: number }> {
  const reply = await route({ type: "cell.mailboxPage", userId, afterSeq: 0, limit: 200 }, required(homes.get(userId), "home"));
  if (reply.type !== "cell.mailboxEvents") throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
  return { events: reply.events, headSeq: reply.headSeq };
}

function bodies(events: readonly SequencedEvent[]): string[] {
  return events.map((entry) => messageOf(entry.event)?.body ?? `(${entry.event.kind})`);
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

/** Sends raw bytes straight to one worker's subject, bypassing the router. */
async function direct(workerId: string, payload: string): Promise<CellReply> {
  const reply = await required(connection, "nats").request(workerSubject(namespace, "a", workerId), new TextEncoder().encode(payload), {
    timeout: 5000,
  });
  const decoded = decodeMessage(cellReply, reply.data);
  if (!decoded.ok) throw new Error(`reply does not decode: ${decoded.reason}`);
  return decoded.value;
}

function directoryAnswer(request: DirectoryRequest): DirectoryReply | undefined {
  if (request.type === "directory.resolveUser") {
    if (silentUsers.has(request.userId)) return undefined;
    const cellId = homes.get(request.userId);
    if (cellId === undefined) return { type: "directory.error", code: "not_found", message: "unknown user in the test" };
    return { type: "directory.entry", entry: { kind: "user", id: request.userId, cellId, epoch: 1 }, placed: false };
  }
  return { type: "directory.cells", cells: cellIds.map((cellId) => ({ cellId, weight: 100, state: "active" as const })) };
}

beforeAll(async () => {
  connection = await connectNats(natsServers, "cells-worker-test", { ...logger });
  connection.subscribe(directorySubject(namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(directoryRequest, message.data);
      if (!decoded.ok) return;
      directoryRequests.push(decoded.value);
      const answer = directoryAnswer(decoded.value);
      if (answer !== undefined) message.respond(encodeJson(answer));
    },
  });
  await connection.flush();
  // Cell a's two workers at once, as a launcher starts them: the database bootstrap must tolerate its twin.
  const started = await Promise.all([
    startWorker(config("a", "a-1"), { ...logger }),
    startWorker(config("a", "a-2"), { ...logger }),
    startWorker(config("b", "b-1"), { ...logger }),
  ]);
  for (const worker of started) workers.set(worker.workerId, worker);
  router = new CellRouter(
    connection,
    { namespace, leaseMs, requestTimeoutMs: 5000, attemptsMax: 6, retryBackoff: { initialDelayMs: 50, maxDelayMs: 500, multiplier: 2 }, watchedCellsMax: 4 },
    systemClock,
    logger,
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
    expect(registrations.map((request) => (request.type === "directory.registerCell" ? request.cellId : "")).sort()).toEqual(["a", "a", "b"]);
  });

  it("appends a send to every member's mailbox, in both cells, with seqs 1..n, and delivers them in seq order", async () => {
    const [alice, bob, carol] = [user("alice", "a"), user("bob", "a"), user("carol", "b")];
    const inboxes = new Map([alice, bob, carol].map((userId) => [userId, [] as Delivery[]]));
    for (const userId of inboxes.keys()) inboxes.set(userId, await collectDeliveries(userId));
    const conversationId = await createGroup(alice, [bob, carol]);

    const first = await send(conversationId, alice, "c-1", "hello team");
    expect(first).toMatchObject({ conversationId, seq: 1, body: "hello team", senderDeviceId: "laptop" });
    const stored = await required(pools.get("a"), "pool").query("select seq::int as seq, body from messages where message_id = $1", [first.messageId]);
    expect(stored.rows).toEqual([{ seq: 1, body: "hello team" }]);
    // Pipelined: the relays of one conversation keep its order at every recipient.
    const rest = await Promise.all([send(conversationId, bob, "c-2", "second"), send(conversationId, carol, "c-3", "third")]);
    const messages = [first, ...rest];
    expect(messages.map((message) => message.seq)).toEqual([1, 2, 3]);

    for (const [userId, inbox] of inboxes) {
      await waitFor(`three deliveries to ${userId}`, () => (inbox.length >= 3 ? true : undefined));
      expect(inbox).toEqual(messages.map((message, index) => ({ type: "delivery.event", recipientUserId: userId, seq: index + 1, event: { kind: "message", message } })));
      const { events, headSeq } = await mailbox(userId);
      expect(events).toEqual(messages.map((message, index) => ({ seq: index + 1, event: { kind: "message", message } })));
      expect(headSeq).toBe(3);
    }
    // carol's mailbox lives in cell b's database, under the message's event id.
    const carolRows = await required(pools.get("b"), "pool").query("select seq::int as seq, event_id from mailbox_events where user_id = $1 order by seq", [carol]);
    expect(carolRows.rows).toEqual(messages.map((message, index) => ({ seq: index + 1, event_id: messageEventId(message.messageId) })));
    await waitFor("the outbox to empty", async () => ((await outboxRows(conversationId)).length === 0 ? true : undefined));

    const history = await route({ type: "cell.history", userId: carol, conversationId, beforeSeq: null, limit: 10 });
    expect(history).toMatchObject({ type: "cell.historyPage", conversationId, hasMore: false, messages: [{ seq: 1 }, { seq: 2 }, { seq: 3, body: "third" }] });
    expect(await route({ type: "cell.history", userId: user("mallory", "a"), conversationId, beforeSeq: null, limit: 10 })).toMatchObject({
      type: "cell.error",
      code: "not_a_member",
    });
  });

  it("adds nothing to any mailbox for a repeated send", async () => {
    const [alice, bob] = [user("alice", "a"), user("bob", "b")];
    const bobInbox = await collectDeliveries(bob);
    const conversationId = await createGroup(alice, [bob]);
    const request: CellRequest = { type: "cell.send", senderUserId: alice, senderDeviceId: "laptop", conversationId, clientMessageId: "once", body: "once" };
    const stored = await route(request);
    expect(await route(request)).toEqual({ ...(stored as object), deduplicated: true });
    await send(conversationId, alice, "next");
    // The relays of one conversation run in order: had the repeat added an event, it would come before "next".
    await waitFor("bob's second delivery", () => bobInbox[1]);
    expect(bodies((await mailbox(bob)).events)).toEqual(["once", "next"]);
    expect(bodies((await mailbox(alice)).events)).toEqual(["once", "next"]);
    expect(bobInbox.map((received) => received.seq)).toEqual([1, 2]);
  });

  it("pages a mailbox and serialises concurrent appends of one user into gapless, ordered deliveries", async () => {
    const dave = user("dave", "b");
    const inbox = await collectDeliveries(dave);
    const events = Array.from({ length: 12 }, (_, index) => messageEvent(`e${index}`, index + 1));
    const replies = await Promise.all(
      events.map((event) => route({ type: "cell.appendMailbox", userId: dave, eventId: mailboxEventId(event), event }, "b")),
    );
    expect(replies.map((reply) => (reply.type === "cell.appended" ? reply.seq : 0)).sort((a, b) => a - b)).toEqual(events.map((_, index) => index + 1));
    await waitFor("twelve deliveries", () => (inbox.length >= 12 ? true : undefined));
    expect(inbox.map((received) => received.seq)).toEqual(events.map((_, index) => index + 1));
    // A repeat answers the seq the event already has and is not delivered again.
    const fourth = required(events[3], "event");
    const again = await route({ type: "cell.appendMailbox", userId: dave, eventId: mailboxEventId(fourth), event: fourth }, "b");
    expect(again).toEqual({ type: "cell.appended", userId: dave, seq: 4, deduplicated: true });
    const pages: number[][] = [];
    for (let afterSeq = 0; ; ) {
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
    });
    // The repeat published nothing (its delivery would have arrived before the pages' replies).
    expect(inbox).toHaveLength(12);
  });

  it("leaves a relay that failed in the outbox, and its sweeper re-drives it once the recipient's home answers", async () => {
    const [alice, erin] = [user("alice", "a"), user("erin", "b")];
    silentUsers.add(erin);
    const erinInbox = await collectDeliveries(erin);
    const conversationId = await createGroup(alice, [erin]);
    const first = await send(conversationId, alice, "while-silent");
    await waitFor("alice's mailbox", async () => ((await mailbox(alice)).headSeq === 1 ? true : undefined));
    const left = await waitFor("a failed attempt on erin's row", async () => {
      const rows = await outboxRows(conversationId);
      return rows.length === 1 && (rows[0]?.attempts ?? 0) >= 1 ? rows : undefined;
    });
    expect(left[0]?.recipient).toBe(erin);
    expect(erinInbox).toEqual([]);

    silentUsers.delete(erin);
    await waitFor("erin's delivery", () => erinInbox[0]);
    expect(erinInbox).toEqual([{ type: "delivery.event", recipientUserId: erin, seq: 1, event: { kind: "message", message: first } }]);
    expect(bodies((await mailbox(erin)).events)).toEqual(["while-silent"]);
    await waitFor("the outbox to empty", async () => ((await outboxRows(conversationId)).length === 0 ? true : undefined));
  });

  it("stores pipelined sends of one conversation in the order they were sent", async () => {
    const alice = user("alice", "a");
    const conversationId = await createGroup(alice, []);
    const count = 20;
    const replies = await Promise.all(
      Array.from({ length: count }, (_, index) =>
        route({ type: "cell.send", senderUserId: alice, senderDeviceId: "phone", conversationId, clientMessageId: `p${index}`, body: `b${index}` }),
      ),
    );
    expect(replies.map((reply) => (reply.type === "cell.stored" ? reply.message.body : reply.type))).toEqual(
      Array.from({ length: count }, (_, index) => `b${index}`),
    );
    expect(replies.map((reply) => (reply.type === "cell.stored" ? reply.message.seq : 0))).toEqual(Array.from({ length: count }, (_, index) => index + 1));
    await waitFor("alice's mailbox to hold all of them", async () => ((await mailbox(alice)).headSeq === count ? true : undefined));
    expect(bodies((await mailbox(alice)).events)).toEqual(Array.from({ length: count }, (_, index) => `b${index}`));
  });

  it("answers not_owner from the worker that does not own the conversation", async () => {
    const conversationId = newGroupId();
    const owner = required(required(watcher, "watcher").snapshot.ring.ownerOf(conversationId), "owner");
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
      expect(await direct(workerId, JSON.stringify({ type: "cell.send", body: 42 }))).toMatchObject({ type: "cell.error", code: "internal" });
    }
    const conversationId = newGroupId();
    const created = await route({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "still here", memberUserIds: [] });
    expect(created.type).toBe("cell.conversation");
  });

  it("after its owner stops, the successor re-drives the rows it left and continues the sequence", async () => {
    const [alice, frank] = [user("alice", "a"), user("frank", "b")];
    const conversationId = await createGroup(alice, [frank]);
    silentUsers.add(frank);
    await send(conversationId, alice, "h1");
    await waitFor("a failed attempt on frank's row", async () => ((await outboxRows(conversationId))[0]?.attempts ?? 0) >= 1 ? true : undefined);
    const owner = required(required(watcher, "watcher").snapshot.ring.ownerOf(conversationId), "owner");
    await required(workers.get(owner), "owner worker").stop();
    workers.delete(owner);
    await waitFor("the stopped worker's lease to go", () => (watcher?.snapshot.ring.members.includes(owner) === false ? true : undefined));
    silentUsers.delete(frank);
    // Nothing is sent meanwhile: only the successor's sweeper can bring h1 to frank.
    await waitFor("frank's mailbox", async () => ((await mailbox(frank)).headSeq === 1 ? true : undefined));
    expect(await send(conversationId, alice, "h2")).toMatchObject({ seq: 2 });
    await waitFor("frank's second event", async () => ((await mailbox(frank)).headSeq === 2 ? true : undefined));
    expect(bodies((await mailbox(frank)).events)).toEqual(["h1", "h2"]);
    expect(bodies((await mailbox(alice)).events)).toEqual(["h1", "h2"]);
  });

  it("gives up with a clear error when no directory answers within the directory wait", async () => {
    const lonely = { ...config("a", "a-9"), namespace: lonelyNamespace, directoryWaitMs: 300 };
    await expect(startWorker(lonely, { ...logger })).rejects.toThrow(/directory did not register cell a within WORKER_DIRECTORY_WAIT_MS=300 ms/);
  });
});
