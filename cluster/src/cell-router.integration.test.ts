// The cell router against real NATS and KV: a request whose owner leaves the ring while it is in flight
// is re-routed to the successor at once, not after the attempt's timeout; sends travel in batches
// (cell.sendBatch), one per worker and turn, each caller getting its own reply; startRouter's Router
// (the one routing path) reaches a key's home through it.
import { randomBytes } from "node:crypto";
import { afterAll, expect, it } from "vitest";
import {
  cellReply,
  cellSendBatch,
  workerRequestSubject,
  workerSubject,
  type CellReply,
  type CellSendBatchReplies,
  type CellSendRequest,
  type WorkerLease,
} from "@cellwire/protocol";
import { CellRouter } from "./cell-router.ts";
import { LeaseHolder, type LeaseBucket } from "./lease-holder.ts";
import { MembershipWatcher, destroyMembershipBucket, openMembershipBucket, systemClock } from "./membership.ts";
import { decodeMessage, encodeJson } from "./nats-json.ts";
import { Ring } from "./ring.ts";
import { startRouter } from "./start-router.ts";
import { connectNats } from "./service-runtime.ts";
import type { ServiceLogger } from "./service-logger.ts";
import { anonymousNatsAccess } from "./nats-access.ts";
import { silentServiceLogger } from "@cellwire/testkit";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const cellId = "a";
const leaseMs = 600;
const requestTimeoutMs = 8000;
const logger: ServiceLogger = silentServiceLogger;
const cleanups: (() => Promise<void> | void)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The ring step's settings of the tests that need no particular ones. */
const ringOptions = {
  namespace,
  leaseMs,
  requestTimeoutMs,
  attemptsMax: 4,
  retryBackoff: { initialDelayMs: 10, maxDelayMs: 50, multiplier: 2 },
  watchedCellsMax: 4,
};

/** A request any answering worker refuses with not_a_member, which says who answered. */
const history = { type: "cell.history", userId: "alice", conversationId: "g-0000000000000000000001", beforeSeq: null, limit: 10 } as const;

/** A worker's lease in `bucket`, renewed every 100 ms until the tests' cleanup (or the test) stops it. */
async function holdLease(bucket: LeaseBucket, workerCellId: string, workerId: string): Promise<LeaseHolder> {
  const subject = workerSubject(namespace, workerCellId, workerId);
  const lease: WorkerLease = { workerId, cellId: workerCellId, subject, startedAtMs: Date.now(), leaseMs };
  const holder = new LeaseHolder(bucket, lease, 100, systemClock, logger);
  await holder.start();
  cleanups.push(() => holder.stop());
  return holder;
}

it("re-routes a request whose owner leaves the ring while it waits for the reply", async () => {
  const connection = await connectNats(["127.0.0.1:4222"], "cell-router-test", { ...logger }, anonymousNatsAccess("edge"));
  cleanups.push(() => connection.close());
  const bucket = await openMembershipBucket(connection, namespace, cellId, leaseMs);
  cleanups.push(() => destroyMembershipBucket(connection, namespace, cellId));

  // Two workers: "silent" takes requests and never answers (it hung, or died after receiving); "ok" answers.
  const holders = new Map<string, LeaseHolder>();
  for (const workerId of ["silent", "ok"]) {
    holders.set(workerId, await holdLease(bucket, cellId, workerId));
    const subscription = connection.subscribe(workerRequestSubject(namespace, cellId, workerId, "edge"), {
      callback: (_error, message) => {
        if (workerId === "silent") return;
        const reply: CellReply = { type: "cell.error", code: "not_a_member", message: `answered by ${workerId}` };
        message.respond(encodeJson(reply));
      },
    });
    cleanups.push(() => subscription.unsubscribe());
  }
  await connection.flush();

  const ring = new Ring(["silent", "ok"]);
  let conversationId = "";
  for (let index = 0; ring.ownerOf(conversationId) !== "silent"; index++) conversationId = `g-${String(index).padStart(22, "0")}`;

  const router = new CellRouter(
    connection,
    {
      namespace,
      leaseMs,
      requestTimeoutMs,
      attemptsMax: 10,
      deadlineMs: 20_000,
      retryBackoff: { initialDelayMs: 10, maxDelayMs: 50, multiplier: 2 },
      watchedCellsMax: 4,
    },
    systemClock,
    logger,
  );
  cleanups.push(() => router.stop());
  expect(await router.hasLiveWorkers(cellId)).toBe(true);

  const startedAt = performance.now();
  const pending = router.request(cellId, { type: "cell.history", userId: "alice", conversationId, beforeSeq: null, limit: 10 });
  // The silent owner stops renewing and deletes its lease, as a worker that stops does.
  await holders.get("silent")?.stop();
  const reply = await pending;
  const elapsedMs = performance.now() - startedAt;

  expect(decodeMessage(cellReply, encodeJson(reply)).ok).toBe(true);
  expect(reply).toEqual({ type: "cell.error", code: "not_a_member", message: "answered by ok" });
  expect(elapsedMs).toBeLessThan(requestTimeoutMs);
});

it("carries the sends of one turn to each owner in one cell.sendBatch, and routes each reply to its caller", async () => {
  const batchCellId = "b";
  const connection = await connectNats(["127.0.0.1:4222"], "cell-router-batch-test", { ...logger }, anonymousNatsAccess("edge"));
  cleanups.push(() => connection.close());
  const bucket = await openMembershipBucket(connection, namespace, batchCellId, leaseMs);
  cleanups.push(() => destroyMembershipBucket(connection, namespace, batchCellId));

  // Two workers that answer batches as a worker does: a reply per send, in order. Anything else they
  // receive is recorded as a failure of the test.
  const batchesByWorker = new Map<string, string[][]>();
  const unexpected: string[] = [];
  for (const workerId of ["w1", "w2"]) {
    await holdLease(bucket, batchCellId, workerId);
    batchesByWorker.set(workerId, []);
    const subscription = connection.subscribe(workerRequestSubject(namespace, batchCellId, workerId, "edge"), {
      callback: (_error, message) => {
        const decoded = decodeMessage(cellSendBatch, message.data);
        if (!decoded.ok) {
          unexpected.push(`${workerId}: ${decoded.reason}`);
          return;
        }
        batchesByWorker.get(workerId)?.push(decoded.value.sends.map((send) => send.clientMessageId));
        const replies: CellSendBatchReplies = {
          type: "cell.sendBatchReplies",
          replies: decoded.value.sends.map((send, index) => ({
            type: "cell.stored",
            message: {
              conversationId: send.conversationId,
              messageId: `m-${workerId}-${index}`,
              seq: index + 1,
              senderUserId: send.senderUserId,
              senderDeviceId: send.senderDeviceId,
              clientMessageId: send.clientMessageId,
              body: send.body,
              sentAtMs: 1,
            },
            deduplicated: false,
          })),
        };
        message.respond(encodeJson(replies));
      },
    });
    cleanups.push(() => subscription.unsubscribe());
  }
  await connection.flush();

  const router = new CellRouter(
    connection,
    {
      namespace,
      leaseMs,
      requestTimeoutMs,
      attemptsMax: 3,
      deadlineMs: 20_000,
      retryBackoff: { initialDelayMs: 10, maxDelayMs: 50, multiplier: 2 },
      watchedCellsMax: 4,
    },
    systemClock,
    logger,
  );
  cleanups.push(() => router.stop());
  expect(await router.hasLiveWorkers(batchCellId)).toBe(true);

  // Three conversations of each worker, two sends in each: twelve sends in one turn.
  const ring = new Ring(["w1", "w2"]);
  const owned = new Map<string, string[]>([
    ["w1", []],
    ["w2", []],
  ]);
  for (let index = 0; [...owned.values()].some((ids) => ids.length < 3); index++) {
    const conversationId = `g-${String(index).padStart(22, "0")}`;
    const ids = owned.get(ring.ownerOf(conversationId) ?? "");
    if (ids !== undefined && ids.length < 3) ids.push(conversationId);
  }
  const sends: CellSendRequest[] = [...owned.values()].flat().flatMap((conversationId) =>
    [1, 2].map(
      (copy) =>
        ({
          type: "cell.send",
          senderUserId: "alice",
          senderDeviceId: "phone",
          conversationId,
          clientMessageId: `${conversationId}-${copy}`,
          body: "hi",
        }) as const,
    ),
  );
  const replies = await Promise.all(sends.map((send) => router.request(batchCellId, send)));

  expect(unexpected).toEqual([]);
  // One batch per worker, holding exactly the sends of the conversations it owns.
  for (const [workerId, conversationIds] of owned) {
    const batches = batchesByWorker.get(workerId) ?? [];
    expect(batches).toHaveLength(1);
    expect([...(batches[0] ?? [])].sort()).toEqual(
      conversationIds.flatMap((conversationId) => [`${conversationId}-1`, `${conversationId}-2`]).sort(),
    );
  }
  // Each caller got the reply to its own send.
  for (const [index, reply] of replies.entries()) {
    expect(reply.type).toBe("cell.stored");
    if (reply.type === "cell.stored") expect(reply.message.clientMessageId).toBe(sends[index]?.clientMessageId);
  }
});

it("waits no longer than the caller's deadline, and tells the worker what is left of it (budgetMs)", async () => {
  const connection = await connectNats(["127.0.0.1:4222"], "cell-router-deadline-test", { ...logger }, anonymousNatsAccess("edge"));
  cleanups.push(() => connection.close());
  const deadlineCellId = "d";
  const bucket = await openMembershipBucket(connection, namespace, deadlineCellId, leaseMs);
  cleanups.push(() => destroyMembershipBucket(connection, namespace, deadlineCellId));
  // One worker that takes every request and never answers (a statement stuck on a lock).
  const workerId = "stuck";
  await holdLease(bucket, deadlineCellId, workerId);
  const payloads: unknown[] = [];
  const subscription = connection.subscribe(workerRequestSubject(namespace, deadlineCellId, workerId, "edge"), {
    callback: (_error, message) => void payloads.push(JSON.parse(message.string())),
  });
  cleanups.push(() => subscription.unsubscribe());
  await connection.flush();

  // Its own limits would wait 8 s per attempt and 20 s in all; the caller gives 300 ms.
  const router = new CellRouter(
    connection,
    {
      namespace,
      leaseMs,
      requestTimeoutMs,
      attemptsMax: 10,
      deadlineMs: 20_000,
      retryBackoff: { initialDelayMs: 10, maxDelayMs: 50, multiplier: 2 },
      watchedCellsMax: 4,
    },
    systemClock,
    logger,
  );
  cleanups.push(() => router.stop());
  expect(await router.hasLiveWorkers(deadlineCellId)).toBe(true);

  const callerBudgetMs = 300;
  const send: CellSendRequest = {
    type: "cell.send",
    senderUserId: "alice",
    senderDeviceId: "phone",
    conversationId: "g-0000000000000000000001",
    clientMessageId: "c-1",
    body: "hi",
  };
  for (const request of [history, send]) {
    payloads.length = 0;
    const startedAt = performance.now();
    await expect(router.request(deadlineCellId, request, systemClock.monotonicNowMs() + callerBudgetMs)).rejects.toMatchObject({
      name: "UnavailableError",
    });
    const elapsedMs = performance.now() - startedAt;
    expect(elapsedMs).toBeLessThan(callerBudgetMs + 1000);
    expect(payloads.length).toBeGreaterThanOrEqual(1);
    for (const payload of payloads) {
      const budgetMs = (payload as { budgetMs?: unknown }).budgetMs;
      expect(
        typeof budgetMs === "number" && budgetMs >= 0 && budgetMs <= callerBudgetMs,
        `budgetMs ${String(budgetMs)} of ${JSON.stringify(payload)}`,
      ).toBe(true);
    }
  }
});

it("startRouter's Router sends to a key's home over the ring step, and reports the ring's changes", async () => {
  const homeCellId = "e";
  const connection = await connectNats(["127.0.0.1:4222"], "start-router-test", { ...logger }, anonymousNatsAccess("edge"));
  cleanups.push(() => connection.close());
  const bucket = await openMembershipBucket(connection, namespace, homeCellId, leaseMs);
  cleanups.push(() => destroyMembershipBucket(connection, namespace, homeCellId));
  const answeredBy: string[] = [];
  const holders: LeaseHolder[] = [];
  for (const workerId of ["e-1", "e-2"]) {
    holders.push(await holdLease(bucket, homeCellId, workerId));
    const subscription = connection.subscribe(workerRequestSubject(namespace, homeCellId, workerId, "edge"), {
      callback: (_error, message) => {
        answeredBy.push(workerId);
        const reply: CellReply = { type: "cell.error", code: "not_a_member", message: `answered by ${workerId}` };
        message.respond(encodeJson(reply));
      },
    });
    cleanups.push(() => subscription.unsubscribe());
  }
  await connection.flush();

  const resolved: string[] = [];
  const router = startRouter(
    connection,
    {
      ring: { ...ringOptions, deletesExpiredLeases: false },
      homes: {
        resolve: async (key) => {
          resolved.push(`${key.kind} ${key.id}`);
          return { cellId: homeCellId, epoch: 1 };
        },
        moved: () => {},
        forget: () => {},
      },
    },
    { clock: systemClock, logger },
  );
  cleanups.push(() => router.stop());
  expect(await router.hasLiveWorkers(homeCellId)).toBe(true);
  const changed: string[] = [];
  router.onRingChange((changedCellId) => changed.push(changedCellId));

  const conversationId = "g-0000000000000000000001";
  const owner = new Ring(["e-1", "e-2"]).ownerOf(conversationId);
  const outcome = await router.toHome({ type: "cell.history", userId: "alice", conversationId, beforeSeq: null, limit: 10 });
  expect(resolved).toEqual([`conversation ${conversationId}`]);
  expect(outcome).toEqual({
    kind: "reply",
    reply: { type: "cell.error", code: "not_a_member", message: `answered by ${owner}` },
    home: { cellId: homeCellId, epoch: 1 },
  });
  expect(answeredBy).toEqual([owner]);

  await holders[0]?.stop();
  await expect.poll(() => changed.includes(homeCellId), { timeout: 5000, interval: 20 }).toBe(true);
});

it("routes to a cell through a watcher it is given, without a watch of its own, and stops watching a cell left idle", async () => {
  const sharedCellId = "f";
  const otherCellId = "g";
  const connection = await connectNats(["127.0.0.1:4222"], "cell-router-watch-test", { ...logger }, anonymousNatsAccess("worker"));
  cleanups.push(() => connection.close());
  const holders = new Map<string, LeaseHolder>();
  for (const [workerCellId, workerId] of [
    [sharedCellId, "f-1"],
    [otherCellId, "g-1"],
  ] as const) {
    const bucket = await openMembershipBucket(connection, namespace, workerCellId, leaseMs);
    cleanups.push(() => destroyMembershipBucket(connection, namespace, workerCellId));
    holders.set(workerId, await holdLease(bucket, workerCellId, workerId));
    const subscription = connection.subscribe(workerRequestSubject(namespace, workerCellId, workerId, "edge"), {
      callback: (_error, message) => {
        const reply: CellReply = { type: "cell.error", code: "not_a_member", message: `answered by ${workerId}` };
        message.respond(encodeJson(reply));
      },
    });
    cleanups.push(() => subscription.unsubscribe());
  }
  await connection.flush();
  // The caller's own watch of cell f, as a worker runs one of its own cell.
  const sharedWatcher = new MembershipWatcher(
    await openMembershipBucket(connection, namespace, sharedCellId, leaseMs),
    sharedCellId,
    50,
    systemClock,
    logger,
  );
  await sharedWatcher.start();
  await sharedWatcher.ready;
  cleanups.push(() => sharedWatcher.stop());

  const watchIdleMs = 300;
  const router = new CellRouter(
    connection,
    { ...ringOptions, sharedWatchers: new Map([[sharedCellId, sharedWatcher]]), watchIdleMs },
    systemClock,
    logger,
  );
  cleanups.push(() => router.stop());
  const changed: string[] = [];
  router.onRingChange((changedCellId) => changed.push(changedCellId));

  expect(await router.request(sharedCellId, history)).toEqual({ type: "cell.error", code: "not_a_member", message: "answered by f-1" });
  expect(router.watchedCellIds()).toEqual([]);
  expect(await router.request(otherCellId, history)).toEqual({ type: "cell.error", code: "not_a_member", message: "answered by g-1" });
  expect(router.watchedCellIds()).toEqual([otherCellId]);

  // Routed to no more, cell g stops being watched; the shared watcher goes on, and its changes still reach
  // the router's listeners.
  await expect.poll(() => router.watchedCellIds(), { timeout: 5000, interval: 20 }).toEqual([]);
  await holders.get("f-1")?.stop();
  await expect.poll(() => changed.includes(sharedCellId), { timeout: 5000, interval: 20 }).toBe(true);
  expect(sharedWatcher.snapshot.ring.size).toBe(0);

  // The next request to g watches it again.
  expect(await router.request(otherCellId, history)).toEqual({ type: "cell.error", code: "not_a_member", message: "answered by g-1" });
  expect(router.watchedCellIds()).toEqual([otherCellId]);
});
