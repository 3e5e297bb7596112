// Two workers of one cell, in process, against the machine's real NATS and Postgres. The directory is a
// stub responder in the test, so only the cells workspace is under test.
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
  workerSubject,
  type CellReply,
  type CellRequest,
  type Delivery,
  type DirectoryRequest,
} from "@cellwire/protocol";
import type { WorkerConfig } from "./config.ts";
import { databaseUrl, defaultPostgresAdminUrl, dropCellDatabase } from "./store/database.ts";
import { newGroupId } from "./store/store-contract.ts";
import { startWorker, type RunningWorker } from "./worker.ts";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
/** A namespace with no directory at all. */
const lonelyNamespace = `${namespace}x`;
const cellId = "a";
const natsServers = ["127.0.0.1:4222"];
const leaseMs = 2000;
const deadlineMs = 10_000;
const warnings: string[] = [];
const logger = { info: () => undefined, warn: (line: string) => void warnings.push(line), error: (line: string) => void warnings.push(line) };

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
let router: CellRouter | undefined;
let watcher: MembershipWatcher | undefined;
let pool: pg.Pool | undefined;
const workers = new Map<string, RunningWorker>();
const directoryRequests: DirectoryRequest[] = [];

function config(workerId: string): WorkerConfig {
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
    memberCacheConversationsMax: 100,
  };
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not ready`);
  return value;
}

/** Polls a condition until it holds or the deadline passes (no fixed sleeps). */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const giveUpAt = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Collects the deliveries published on one user's subject. */
function collectDeliveries(userId: string): Delivery[] {
  const received: Delivery[] = [];
  required(connection, "nats").subscribe(deliverySubject(namespace, userId), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(deliveryDecoder, message.data);
      if (decoded.ok) received.push(decoded.value);
    },
  });
  return received;
}

async function route(request: CellRequest): Promise<CellReply> {
  return required(router, "router").request(cellId, request);
}

/** Sends raw bytes straight to one worker's subject, bypassing the router. */
async function direct(workerId: string, payload: string): Promise<CellReply> {
  const reply = await required(connection, "nats").request(workerSubject(namespace, cellId, workerId), new TextEncoder().encode(payload), {
    timeout: 5000,
  });
  const decoded = decodeMessage(cellReply, reply.data);
  if (!decoded.ok) throw new Error(`reply does not decode: ${decoded.reason}`);
  return decoded.value;
}

beforeAll(async () => {
  connection = await connectNats(natsServers, "cells-worker-test", { ...logger });
  // The directory stub: answers registerCell (and anything else) with the one cell.
  connection.subscribe(directorySubject(namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(directoryRequest, message.data);
      if (decoded.ok) directoryRequests.push(decoded.value);
      message.respond(encodeJson({ type: "directory.cells", cells: [{ cellId, weight: 100, state: "active" }] }));
    },
  });
  await connection.flush();
  // Both at once, as a launcher starts them: the database bootstrap must tolerate its twin.
  const started = await Promise.all(["a-1", "a-2"].map((workerId) => startWorker(config(workerId), { ...logger })));
  for (const worker of started) workers.set(worker.workerId, worker);
  router = new CellRouter(
    connection,
    { namespace, leaseMs, requestTimeoutMs: 5000, attemptsMax: 6, retryBackoff: { initialDelayMs: 50, maxDelayMs: 500, multiplier: 2 }, watchedCellsMax: 4 },
    systemClock,
    logger,
  );
  const bucket = await openMembershipBucket(connection, namespace, cellId, leaseMs);
  watcher = new MembershipWatcher(bucket, cellId, 100, systemClock, logger);
  await watcher.start();
  await waitFor("both leases", () => (watcher?.snapshot.ring.size === 2 ? true : undefined));
  pool = new pg.Pool({ connectionString: databaseUrl(defaultPostgresAdminUrl, `${namespace}_cell_${cellId}`), max: 2 });
  pool.on("error", () => undefined);
});

afterAll(async () => {
  await Promise.all([...workers.values()].map((worker) => worker.stop()));
  router?.stop();
  watcher?.stop();
  await pool?.end();
  if (connection !== undefined) {
    await destroyMembershipBucket(connection, namespace, cellId).catch(() => undefined);
    await connection.drain();
  }
  await dropCellDatabase(defaultPostgresAdminUrl, namespace, cellId);
  await dropCellDatabase(defaultPostgresAdminUrl, lonelyNamespace, cellId);
});

describe("cell workers", () => {
  it("registered their cell with the directory", () => {
    expect(directoryRequests.filter((request) => request.type === "directory.registerCell")).toEqual([
      { type: "directory.registerCell", cellId, weight: 100 },
      { type: "directory.registerCell", cellId, weight: 100 },
    ]);
  });

  it("creates a group, stores a send (committed before the reply), delivers it to every member, and serves history", async () => {
    const conversationId = newGroupId();
    const inboxes = { alice: collectDeliveries("alice"), bob: collectDeliveries("bob"), carol: collectDeliveries("carol") };
    await required(connection, "nats").flush();
    const created = await route({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: ["bob", "carol"] });
    expect(created).toEqual({
      type: "cell.conversation",
      conversation: { conversationId, kind: "group", title: "team", memberUserIds: ["alice", "bob", "carol"], lastSeq: 0 },
    });

    const send: CellRequest = { type: "cell.send", senderUserId: "alice", senderDeviceId: "laptop", conversationId, clientMessageId: "c-1", body: "hello team" };
    const stored = await route(send);
    if (stored.type !== "cell.stored") throw new Error(`unexpected reply ${JSON.stringify(stored)}`);
    expect(stored).toMatchObject({ deduplicated: false, message: { conversationId, seq: 1, body: "hello team", senderDeviceId: "laptop" } });
    const row = await required(pool, "pool").query("select seq::int as seq, body from messages where message_id = $1", [stored.message.messageId]);
    expect(row.rows).toEqual([{ seq: 1, body: "hello team" }]);

    for (const [userId, inbox] of Object.entries(inboxes)) {
      const received = await waitFor(`delivery to ${userId}`, () => inbox[0]);
      expect(received).toEqual({ type: "delivery.message", recipientUserId: userId, message: stored.message });
    }

    // A retry is deduplicated and not delivered again: bob's next delivery is the next message.
    const retried = await route(send);
    expect(retried).toEqual({ ...stored, deduplicated: true });
    const next = await route({ ...send, clientMessageId: "c-2", body: "second" });
    expect(next).toMatchObject({ type: "cell.stored", message: { seq: 2 } });
    await waitFor("second delivery to bob", () => inboxes.bob[1]);
    expect(inboxes.bob.map((received) => received.message.seq)).toEqual([1, 2]);

    const history = await route({ type: "cell.history", userId: "carol", conversationId, beforeSeq: null, limit: 10 });
    expect(history).toMatchObject({ type: "cell.historyPage", conversationId, hasMore: false, messages: [{ seq: 1 }, { seq: 2, body: "second" }] });
    expect(await route({ type: "cell.history", userId: "mallory", conversationId, beforeSeq: null, limit: 10 })).toMatchObject({
      type: "cell.error",
      code: "not_a_member",
    });
  });

  it("stores pipelined sends of one conversation in the order they were sent", async () => {
    const conversationId = newGroupId();
    await route({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "burst", memberUserIds: [] });
    const count = 20;
    const replies = await Promise.all(
      Array.from({ length: count }, (_, index) =>
        route({ type: "cell.send", senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: `p${index}`, body: `b${index}` }),
      ),
    );
    expect(replies.map((reply) => (reply.type === "cell.stored" ? reply.message.body : reply.type))).toEqual(
      Array.from({ length: count }, (_, index) => `b${index}`),
    );
    expect(replies.map((reply) => (reply.type === "cell.stored" ? reply.message.seq : 0))).toEqual(Array.from({ length: count }, (_, index) => index + 1));
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
    for (const workerId of workers.keys()) {
      expect(await direct(workerId, "{this is not json")).toMatchObject({ type: "cell.error", code: "internal" });
      expect(await direct(workerId, JSON.stringify({ type: "cell.send", body: 42 }))).toMatchObject({ type: "cell.error", code: "internal" });
    }
    const conversationId = newGroupId();
    const created = await route({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "still here", memberUserIds: [] });
    expect(created.type).toBe("cell.conversation");
  });

  it("keeps serving a conversation after its owner stops, continuing its sequence", async () => {
    const conversationId = newGroupId();
    await route({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "handover", memberUserIds: [] });
    const send = (index: number) =>
      route({ type: "cell.send", senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: `h${index}`, body: `h${index}` });
    expect(await send(1)).toMatchObject({ type: "cell.stored", message: { seq: 1 } });
    const owner = required(required(watcher, "watcher").snapshot.ring.ownerOf(conversationId), "owner");
    await required(workers.get(owner), "owner worker").stop();
    await waitFor("the stopped worker's lease to go", () => (watcher?.snapshot.ring.members.includes(owner) === false ? true : undefined));
    expect(await send(2)).toMatchObject({ type: "cell.stored", message: { seq: 2 } });
  });

  it("gives up with a clear error when no directory answers within the directory wait", async () => {
    const lonely = { ...config("a-9"), namespace: lonelyNamespace, directoryWaitMs: 300 };
    await expect(startWorker(lonely, { ...logger })).rejects.toThrow(/directory did not register cell a within WORKER_DIRECTORY_WAIT_MS=300 ms/);
  });
});
