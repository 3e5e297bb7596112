// Fencing a stale owner in the database, against the machine's real NATS and Postgres. Two scenarios, each
// in its own cell of a unique namespace:
//   - in process: two workers' request handlers (sends through each one's SendCommitter, as worker.ts wires
//     them), each with its own membership watcher, lease and pool. The owner of a conversation takes a
//     send into its store call and is held there (as a process paused between reading its ring epoch at
//     its batch's start and running the statement) while its heartbeats stop; the watchers delete its
//     expired lease, the other worker takes over and writes under the new epoch; released, the held
//     statement is refused by the database (fenced -> not_owner), the send queued behind it is refused
//     for the lapsed lease, and the seqs stay 1..n.
//   - a real worker process (`node --import tsx cells/src/main.ts`) is SIGSTOPped past its lease with a
//     send and a batch of sends waiting on its own subject; the second worker serves meanwhile; after
//     SIGCONT it cannot commit them.
import { fork, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  LeaseHolder,
  MembershipWatcher,
  connectNats,
  decodeMessage,
  destroyMembershipBucket,
  encodeJson,
  openMembershipBucket,
  systemClock,
  devDirectConversationKey,
  anonymousNatsAccess,
  startRouter,
  type RunningRouter,
} from "@cellwire/cluster";
import {
  cellReply,
  cellSendBatchReplies,
  workerRequestSubject,
  workerSubject,
  cellRequestChannel,
  type CellReply,
  type CellRequest,
  type CellSendBatchReplies,
  type CellSendRequest,
  type WorkerLease,
} from "@cellwire/protocol";
import type { WorkerConfig } from "./config.ts";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { CellRequestHandler } from "./request-handler.ts";
import { testSendCommitter } from "../test/request-handler.harness.ts";
import { defaultPostgresAdminUrl, dropCellDatabase, ensureCellDatabase } from "./store/database.ts";
import { PostgresConversationStore } from "./store/postgres-store.ts";
import { newGroupId } from "../test/store-contract.ts";
import type { AppendMessageInput, AppendMessageResult } from "./store/store.ts";
import type { SendCommitter } from "./send-committer.ts";
import { startWorker, type RunningWorker } from "./worker.ts";
import { pollUntil } from "@cellwire/testkit";
import { recordingLogger, required } from "../test/worker-test-kit.ts";
import { serveDirectoryStub } from "../test/directory-stub.ts";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const natsServers = ["127.0.0.1:4222"];
const deadlineMs = 20_000;
const repositoryRoot = fileURLToPath(new URL("../../", import.meta.url));
const workerMain = fileURLToPath(new URL("./main.ts", import.meta.url));
/** Lines of the worker process's output kept for the failure message. */
const childOutputLinesMax = 200;
const { warnings, logger } = recordingLogger();

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
const extraConnections: Connection[] = [];
const pools: pg.Pool[] = [];
const watchers: MembershipWatcher[] = [];
const holders: LeaseHolder[] = [];
const cellsUsed = new Set<string>();
let child: ChildProcess | undefined;
let childExited: Promise<void> | undefined;
const childOutput: string[] = [];
let inProcessWorker: RunningWorker | undefined;
let router: RunningRouter | undefined;

/** Polls a condition until it holds or the deadline passes (no fixed sleeps). */
function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  return pollUntil(what, probe, { deadlineMs, intervalMs: 25, detail: () => `worker output:\n${childOutput.join("\n")}` });
}

/** Resolves with `promise`, or rejects once the deadline passes. */
async function withinDeadline<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; worker output:\n${childOutput.join("\n")}`)), deadlineMs);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

function members(watcher: MembershipWatcher): string {
  return [...watcher.snapshot.ring.members].join(",");
}

/** A fresh group id that the ring of `watcher` gives to `workerId`. */
function conversationOwnedBy(watcher: MembershipWatcher, workerId: string): string {
  for (;;) {
    const conversationId = newGroupId();
    if (watcher.snapshot.ring.ownerOf(conversationId) === workerId) return conversationId;
  }
}

async function cellPool(cellId: string): Promise<pg.Pool> {
  cellsUsed.add(cellId);
  const url = await ensureCellDatabase(defaultPostgresAdminUrl, namespace, cellId);
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  pool.on("error", () => undefined);
  pools.push(pool);
  return pool;
}

async function storedMessages(pool: pg.Pool, conversationId: string): Promise<string[]> {
  const result = await pool.query("select seq::int as seq, body from messages where conversation_id = $1 order by seq", [conversationId]);
  return result.rows.map((row: { seq: number; body: string }) => `${row.seq}:${row.body}`);
}

async function lastSeq(pool: pg.Pool, conversationId: string): Promise<number> {
  const result = await pool.query("select last_seq::int as seq from conversations where id = $1", [conversationId]);
  const row: unknown = result.rows[0];
  if (typeof row !== "object" || row === null || !("seq" in row) || typeof row.seq !== "number") throw new Error("no conversation row");
  return row.seq;
}

async function ownerEpoch(pool: pg.Pool, conversationId: string): Promise<number> {
  const result = await pool.query("select owner_epoch::text as epoch from conversations where id = $1", [conversationId]);
  const row: unknown = result.rows[0];
  if (typeof row !== "object" || row === null || !("epoch" in row) || typeof row.epoch !== "string") throw new Error("no conversation row");
  return Number(row.epoch);
}

function sendRequest(conversationId: string, clientMessageId: string): CellSendRequest {
  return { type: "cell.send", senderUserId: "alice", senderDeviceId: "laptop", conversationId, clientMessageId, body: clientMessageId };
}

/** Sends a request straight to one worker's subject (no router, so no retry elsewhere). */
async function direct(cellId: string, workerId: string, request: CellRequest, timeoutMs = 5000): Promise<CellReply> {
  const reply = await required(connection, "nats").request(
    workerRequestSubject(namespace, cellId, workerId, cellRequestChannel(request.type)),
    encodeJson(request),
    { timeout: timeoutMs },
  );
  const decoded = decodeMessage(cellReply, reply.data);
  if (!decoded.ok) throw new Error(`reply does not decode: ${decoded.reason}`);
  return decoded.value;
}

/** Sends a batch of sends straight to one worker's subject, as an edge's send batcher does. */
async function directBatch(cellId: string, workerId: string, sends: CellSendRequest[], timeoutMs: number): Promise<CellSendBatchReplies> {
  const batch = { type: "cell.sendBatch", budgetMs: timeoutMs, sends };
  const reply = await required(connection, "nats").request(workerRequestSubject(namespace, cellId, workerId, "edge"), encodeJson(batch), {
    timeout: timeoutMs,
  });
  const decoded = decodeMessage(cellSendBatchReplies, reply.data);
  if (!decoded.ok) throw new Error(`batch replies do not decode: ${decoded.reason}`);
  return decoded.value;
}

function describeReply(reply: CellReply): string {
  return reply.type === "cell.stored" ? `stored ${reply.message.seq}` : reply.type === "cell.error" ? reply.code : reply.type;
}

/** The store of a worker that can be held inside appendMessages, after its batch's epoch was taken. */
class PausableStore extends PostgresConversationStore {
  private gate: Promise<void> | undefined;
  private openGate: () => void = () => undefined;
  /** Epochs of the batches that reached the store while it was held. */
  readonly heldEpochs: number[] = [];

  hold(): void {
    this.gate = new Promise((resolve) => {
      this.openGate = resolve;
    });
  }

  release(): void {
    this.gate = undefined;
    this.openGate();
  }

  override async appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    const gate = this.gate;
    if (gate !== undefined) {
      this.heldEpochs.push(inputs[0]?.epoch ?? -1);
      await gate;
    }
    return super.appendMessages(inputs);
  }
}

type InProcessWorker = {
  readonly handler: CellRequestHandler;
  readonly sends: SendCommitter;
  readonly watcher: MembershipWatcher;
  readonly holder: LeaseHolder;
};

/** One worker's request path as worker.ts wires it: its own watcher, lease (on `bucketConnection`) and store. */
async function inProcessWorkerOf(
  cellId: string,
  workerId: string,
  store: PostgresConversationStore,
  leaseMs: number,
  bucketConnection: Connection,
): Promise<InProcessWorker> {
  const watchBucket = await openMembershipBucket(required(connection, "nats"), namespace, cellId, leaseMs);
  const watcher = new MembershipWatcher(watchBucket, cellId, 50, systemClock, logger);
  watchers.push(watcher);
  await watcher.start();
  await watcher.ready;
  const lease: WorkerLease = { workerId, cellId, subject: workerSubject(namespace, cellId, workerId), startedAtMs: Date.now(), leaseMs };
  const holder = new LeaseHolder(
    await openMembershipBucket(bucketConnection, namespace, cellId, leaseMs),
    lease,
    Math.floor(leaseMs / 4),
    systemClock,
    logger,
  );
  holders.push(holder);
  await holder.start();
  const ownership = { snapshot: () => watcher.snapshot, leaseHeld: () => holder.holds() };
  const sends = testSendCommitter({ workerId, store, ownership, logger });
  const handler = new CellRequestHandler({
    workerId,
    cellId,
    store,
    ownership,
    queue: new KeyedSerialQueue({ pendingPerKeyMax: 16, pendingTotalMax: 64 }),
    sends,
    sendBudgetMs: deadlineMs,
    monotonicNowMs: () => systemClock.monotonicNowMs(),
    relayOutbox: () => undefined,
    membersChanged: () => undefined,
    publishDelivery: () => undefined,
    logger,
    directConversationKey: devDirectConversationKey,
  });
  return { handler, sends, watcher, holder };
}

function handle(worker: InProcessWorker, request: CellRequest): Promise<CellReply> {
  return new Promise((resolve) => void worker.handler.handle(JSON.stringify(request), resolve));
}

function handleBatch(worker: InProcessWorker, sends: CellSendRequest[]): Promise<CellSendBatchReplies> {
  return new Promise((resolve) => worker.handler.handleSendBatch({ type: "cell.sendBatch", budgetMs: deadlineMs, sends }, resolve));
}

/** The state letter of a process (R, S, T for stopped…), from /proc. */
async function processState(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
}

beforeAll(async () => {
  connection = await connectNats(natsServers, "cells-fencing-test", { ...logger }, anonymousNatsAccess("worker"));
  serveDirectoryStub(connection, namespace, { cellIds: ["p"], homeOf: () => "p" });
  await connection.flush();
});

afterAll(async () => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
    await childExited;
  }
  await inProcessWorker?.stop();
  router?.stop();
  for (const holder of holders) await holder.stop();
  for (const watcher of watchers) watcher.stop();
  await Promise.all(pools.map((pool) => pool.end()));
  for (const extra of extraConnections) await extra.close().catch(() => undefined);
  if (connection !== undefined) {
    for (const cellId of cellsUsed) await destroyMembershipBucket(connection, namespace, cellId).catch(() => undefined);
    await connection.drain();
  }
  for (const cellId of cellsUsed) await dropCellDatabase(defaultPostgresAdminUrl, namespace, cellId);
});

describe("fencing a stale owner in the database", () => {
  it("refuses the commit of a worker held with a batch of sends in hand once the next owner wrote under a later epoch", async () => {
    const cellId = "f";
    const leaseMs = 800;
    cellsUsed.add(cellId);
    // The first worker renews its lease over a connection of its own, which the test closes to stop its heartbeats.
    const heartbeatConnection = await connectNats(natsServers, "cells-fencing-heartbeats", { ...logger }, anonymousNatsAccess("worker"));
    extraConnections.push(heartbeatConnection);
    const pool = await cellPool(cellId);
    const pausedStore = new PausableStore(pool);
    const first = await inProcessWorkerOf(cellId, "f-1", pausedStore, leaseMs, heartbeatConnection);
    const second = await inProcessWorkerOf(
      cellId,
      "f-2",
      new PostgresConversationStore(await cellPool(cellId)),
      leaseMs,
      required(connection, "nats"),
    );
    const joinedEpoch = await waitFor("both rings of f-1,f-2 at one epoch", () =>
      members(first.watcher) === "f-1,f-2" &&
      members(second.watcher) === "f-1,f-2" &&
      first.watcher.snapshot.ringEpoch === second.watcher.snapshot.ringEpoch
        ? first.watcher.snapshot.ringEpoch
        : undefined,
    );
    const conversationId = conversationOwnedBy(first.watcher, "f-1");
    const created = await handle(first, {
      type: "cell.createGroup",
      creatorUserId: "alice",
      conversationId,
      title: "fenced",
      memberUserIds: ["bob"],
    });
    expect(created.type).toBe("cell.conversation");
    for (const id of ["m1", "m2"])
      expect(describeReply(await handle(first, sendRequest(conversationId, id)))).toBe(`stored ${id.slice(1)}`);
    expect(await ownerEpoch(pool, conversationId)).toBe(joinedEpoch);

    // A batch (m3, m3b) reaches f-1: its committer, idle, takes m3 into a store call at once under the epoch
    // it owns the key at, and is held there; m3b waits for the next batch.
    pausedStore.hold();
    const staleReplies = handleBatch(first, [sendRequest(conversationId, "m3"), sendRequest(conversationId, "m3b")]);
    await waitFor("m3 to reach f-1's store", () => (pausedStore.heldEpochs.length === 1 ? true : undefined));
    expect(pausedStore.heldEpochs).toEqual([joinedEpoch]);

    // Its heartbeats stop; the watchers delete its expired lease and the ring moves on without it.
    await heartbeatConnection.close();
    const takeoverEpoch = await waitFor("f-2's ring without f-1", () =>
      members(second.watcher) === "f-2" ? second.watcher.snapshot.ringEpoch : undefined,
    );
    expect(takeoverEpoch).toBeGreaterThan(joinedEpoch);
    expect(describeReply(await handle(second, sendRequest(conversationId, "m4")))).toBe("stored 3");
    expect(await ownerEpoch(pool, conversationId)).toBe(takeoverEpoch);

    // Released, the held statement still carries the old epoch: the database refuses it. m3b's batch then
    // finds the lease lapsed and never reaches the store.
    pausedStore.release();
    const refused = await staleReplies;
    expect(refused.replies).toEqual([
      expect.objectContaining({ type: "cell.error", code: "not_owner", message: expect.stringContaining(`epoch after ${joinedEpoch}`) }),
      expect.objectContaining({ type: "cell.error", code: "not_owner", message: expect.stringContaining("lease lapsed") }),
    ]);
    expect(pausedStore.heldEpochs).toEqual([joinedEpoch]);
    expect(warnings.some((line) => line.includes("f-1 was fenced"))).toBe(true);
    expect(await storedMessages(pool, conversationId)).toEqual(["1:m1", "2:m2", "3:m4"]);
    // No seq was taken by the refused statement, and the conversation keeps the newer epoch.
    expect(await lastSeq(pool, conversationId)).toBe(3);
    expect(await ownerEpoch(pool, conversationId)).toBe(takeoverEpoch);
    // Its lease lapsed too, so it now turns new requests away before they reach the store.
    expect(first.holder.holds()).toBe(false);
    expect(await handle(first, sendRequest(conversationId, "m5"))).toMatchObject({ type: "cell.error", code: "not_owner" });
    expect(await storedMessages(pool, conversationId)).toEqual(["1:m1", "2:m2", "3:m4"]);
  });

  it("a worker process stopped (SIGSTOP) past its lease cannot commit a send or a batch of sends waiting on its own subject once resumed", async () => {
    const cellId = "p";
    const leaseMs = 1500;
    const heartbeatIntervalMs = 300;
    cellsUsed.add(cellId);
    const pool = await cellPool(cellId);
    const environment: Record<string, string> = {
      ...Object.fromEntries(
        Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined && !entry[0].startsWith("WORKER_")),
      ),
      CELLWIRE_NAMESPACE: namespace,
      CELLWIRE_NATS_SERVERS: natsServers.join(","),
      WORKER_CELL_ID: cellId,
      WORKER_ID: "p-1",
      WORKER_LEASE_MS: String(leaseMs),
      WORKER_HEARTBEAT_INTERVAL_MS: String(heartbeatIntervalMs),
      WORKER_POOL_SIZE: "2",
      WORKER_DIRECTORY_WAIT_MS: "10000",
    };
    const started = fork(workerMain, [], {
      cwd: repositoryRoot,
      execArgv: ["--import", "tsx"],
      env: environment,
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    child = started;
    childExited = new Promise((resolve) => started.once("exit", () => resolve()));
    for (const stream of [started.stdout, started.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream }).on("line", (line) => {
        childOutput.push(line);
        if (childOutput.length > childOutputLinesMax) childOutput.shift();
      });
    }
    const ready = new Promise<void>((resolve, reject) => {
      started.on("message", (message: unknown) => {
        if (typeof message === "object" && message !== null && "type" in message && message.type === "ready") resolve();
      });
      void childExited?.then(() => reject(new Error(`worker p-1 exited before it was ready:\n${childOutput.join("\n")}`)));
    });
    await withinDeadline("worker p-1 to be ready", ready);
    const pid = required(started.pid, "pid");

    const secondConfig: WorkerConfig = {
      namespace,
      natsServers,
      cellId,
      workerId: "p-2",
      postgresAdminUrl: defaultPostgresAdminUrl,
      leaseMs,
      heartbeatIntervalMs,
      cellWeight: 100,
      poolSize: 2,
      directoryWaitMs: 10_000,
      pendingPerConversationMax: 16,
      pendingTotalMax: 64,
      outboxSweepIntervalMs: 500,
      outboxRetryAfterMs: 1000,
      outboxBatchMax: 100,
      outboxSweepPagesMax: 2,
      relayRecipientsConcurrencyMax: 4,
      relaysInFlightMax: 16,
      relayPendingMax: 64,
      relayCleanConversationsMax: 64,
      relayRequestTimeoutMs: 1000,
      relayAttemptsMax: 2,
      relayWatchedCellsMax: 2,
      relayStopWaitMs: 1000,
      homeCellCacheUsersMax: 16,
      homeCellCacheTtlMs: 60_000,
    };
    inProcessWorker = await startWorker(secondConfig, { ...logger });
    const watcher = new MembershipWatcher(
      await openMembershipBucket(required(connection, "nats"), namespace, cellId, leaseMs),
      cellId,
      50,
      systemClock,
      logger,
    );
    watchers.push(watcher);
    await watcher.start();
    await waitFor("the ring of p-1,p-2", () => (members(watcher) === "p-1,p-2" ? true : undefined));
    const conversationId = conversationOwnedBy(watcher, "p-1");
    // p-1 serves the conversation before the stop (its own view may lag a moment: not_owner is retried).
    const create: CellRequest = {
      type: "cell.createGroup",
      creatorUserId: "alice",
      conversationId,
      title: "stopped",
      memberUserIds: ["bob"],
    };
    await waitFor("p-1 to create the group", async () =>
      (await direct(cellId, "p-1", create)).type === "cell.conversation" ? true : undefined,
    );
    for (const id of ["m1", "m2"])
      expect(describeReply(await direct(cellId, "p-1", sendRequest(conversationId, id)))).toBe(`stored ${id.slice(1)}`);

    started.kill("SIGSTOP");
    await waitFor("p-1 to be stopped", async () => ((await processState(pid)) === "T" ? true : undefined));
    // Sent to p-1's own subject while it is stopped: the requests wait in its socket until SIGCONT.
    const waiting = direct(cellId, "p-1", sendRequest(conversationId, "m3"), deadlineMs);
    waiting.catch(() => undefined);
    const waitingBatch = directBatch(cellId, "p-1", [sendRequest(conversationId, "m3b"), sendRequest(conversationId, "m3c")], deadlineMs);
    waitingBatch.catch(() => undefined);
    await waitFor("the ring without p-1", () => (members(watcher) === "p-2" ? true : undefined));
    router = startRouter(
      required(connection, "nats"),
      {
        ring: {
          namespace,
          leaseMs,
          requestTimeoutMs: 2000,
          attemptsMax: 10,
          retryBackoff: { initialDelayMs: 50, maxDelayMs: 300, multiplier: 2 },
          watchedCellsMax: 2,
        },
        // Only toCell is used here: no request is routed to a key's home.
        homes: { resolve: async () => undefined, moved: () => {}, forget: () => {} },
      },
      { clock: systemClock, logger },
    );
    expect(describeReply(await router.toCell(cellId, sendRequest(conversationId, "m4")))).toBe("stored 3");
    const takeoverEpoch = await ownerEpoch(pool, conversationId);

    started.kill("SIGCONT");
    expect(await waiting).toMatchObject({ type: "cell.error", code: "not_owner" });
    expect((await waitingBatch).replies.map((reply) => (reply.type === "cell.error" ? reply.code : reply.type))).toEqual([
      "not_owner",
      "not_owner",
    ]);
    expect(await storedMessages(pool, conversationId)).toEqual(["1:m1", "2:m2", "3:m4"]);
    expect(await lastSeq(pool, conversationId)).toBe(3);
    expect(await ownerEpoch(pool, conversationId)).toBe(takeoverEpoch);

    started.kill("SIGKILL");
    await childExited;
    expect(started.signalCode).toBe("SIGKILL");
  });
});
