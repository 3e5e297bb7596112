// The cell router against real NATS and KV: a request whose owner leaves the ring while it is in flight
// is re-routed to the successor at once, not after the attempt's timeout.
import { randomBytes } from "node:crypto";
import { afterAll, expect, it } from "vitest";
import { cellReply, workerSubject, type CellReply, type WorkerLease } from "@cellwire/protocol";
import { CellRouter } from "./cell-router.ts";
import { LeaseHolder, destroyMembershipBucket, openMembershipBucket, systemClock } from "./membership.ts";
import { decodeMessage, encodeJson } from "./nats-json.ts";
import { Ring } from "./ring.ts";
import { connectNats } from "./service-runtime.ts";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const cellId = "a";
const leaseMs = 600;
const requestTimeoutMs = 8000;
const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
const cleanups: (() => Promise<void> | void)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

it("re-routes a request whose owner leaves the ring while it waits for the reply", async () => {
  const connection = await connectNats(["127.0.0.1:4222"], "cell-router-test", { ...logger });
  cleanups.push(() => connection.close());
  const bucket = await openMembershipBucket(connection, namespace, cellId, leaseMs);
  cleanups.push(() => destroyMembershipBucket(connection, namespace, cellId));

  // Two workers: "silent" takes requests and never answers (it hung, or died after receiving); "ok" answers.
  const holders = new Map<string, LeaseHolder>();
  for (const workerId of ["silent", "ok"]) {
    const subject = workerSubject(namespace, cellId, workerId);
    const lease: WorkerLease = { workerId, cellId, subject, startedAtMs: Date.now(), leaseMs };
    const holder = new LeaseHolder(bucket, lease, 100, systemClock, logger);
    await holder.start();
    holders.set(workerId, holder);
    cleanups.push(() => holder.stop());
    const subscription = connection.subscribe(subject, {
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
    { namespace, leaseMs, requestTimeoutMs, attemptsMax: 10, deadlineMs: 20_000, retryBackoff: { initialDelayMs: 10, maxDelayMs: 50, multiplier: 2 }, watchedCellsMax: 4 },
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
