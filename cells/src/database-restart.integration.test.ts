// A worker's Postgres crashes and starts again, about 2 s later, under paced sends (issue 11, item 9;
// docs/decisions/0025). The test's own Postgres (cells/test/private-postgres.harness.ts), never the machine's; the
// machine's NATS. The sends go through a Router whose ring step is set as an edge sets it (3 s per attempt,
// 8 s in all), so each reaches the worker with the budget an edge gives it. Every send is answered stored, none fails,
// and the conversation's log holds each once, in the order sent, without a gap.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { anonymousNatsAccess, connectNats, destroyMembershipBucket, systemClock, startRouter, type RunningRouter } from "@cellwire/cluster";
import { pollUntil } from "@cellwire/testkit";
import type { CellReply, CellSendRequest } from "@cellwire/protocol";
import { loadWorkerConfig } from "./config.ts";
import { PrivatePostgres } from "../test/private-postgres.harness.ts";
import { ensureCellDatabase } from "./store/database.ts";
import { newGroupId } from "../test/store-contract.ts";
import { startWorker, type RunningWorker } from "./worker.ts";
import { recordingLogger, required } from "../test/worker-test-kit.ts";
import { serveDirectoryStub } from "../test/directory-stub.ts";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const natsServers = ["127.0.0.1:4222"];
const cellId = "r";
const sendCount = 150;
const sendIntervalMs = 20;
/** The send after which Postgres crashes: a second of sends before it, the rest during and after. */
const crashAfterSends = 50;
const outageMs = 2000;
const { warnings, logger } = recordingLogger();

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
let postgres: PrivatePostgres | undefined;
let worker: RunningWorker | undefined;
let router: RunningRouter | undefined;

function describeReply(reply: CellReply | Error): string {
  if (reply instanceof Error) return `threw ${reply.message}`;
  return reply.type === "cell.stored" ? "stored" : reply.type === "cell.error" ? `${reply.code}: ${reply.message}` : reply.type;
}

beforeAll(async () => {
  postgres = await PrivatePostgres.start();
  connection = await connectNats(natsServers, "cells-database-restart-test", { ...logger }, anonymousNatsAccess("worker"));
  serveDirectoryStub(connection, namespace, { cellIds: [cellId], homeOf: () => cellId });
  await connection.flush();
}, 60_000);

afterAll(async () => {
  router?.stop();
  await worker?.stop().catch(() => undefined);
  if (connection !== undefined) {
    await destroyMembershipBucket(connection, namespace, cellId).catch(() => undefined);
    await connection.drain();
  }
  await postgres?.stop();
}, 60_000);

describe("a worker whose Postgres crashes and restarts", () => {
  it("answers every paced send stored across a ~2 s restart, and the log holds each once, in order", async () => {
    const server = required(postgres, "postgres");
    // Its defaults but for what a test on a shared machine needs: the database watchdog keeps its 10 s.
    const { config } = loadWorkerConfig({
      CELLWIRE_NAMESPACE: namespace,
      CELLWIRE_NATS_SERVERS: natsServers.join(","),
      WORKER_CELL_ID: cellId,
      WORKER_ID: "r-1",
      WORKER_POSTGRES_ADMIN_URL: server.adminUrl,
      WORKER_POOL_SIZE: "2",
    });
    worker = await startWorker(config, { ...logger });
    const connected = required(connection, "nats");
    router = startRouter(
      connected,
      {
        ring: {
          namespace,
          leaseMs: config.leaseMs,
          requestTimeoutMs: 3000,
          attemptsMax: 40,
          deadlineMs: 8000,
          retryBackoff: { initialDelayMs: 25, maxDelayMs: 500, multiplier: 2 },
          watchedCellsMax: 2,
        },
        // Only toCell is used here: no request is routed to a key's home.
        homes: { resolve: async () => undefined, moved: () => {}, forget: () => {} },
      },
      { clock: systemClock, logger },
    );
    const cellRouter = router;
    const conversationId = newGroupId();
    const created = await pollUntil(
      "the group to be created",
      async () => {
        const reply = await cellRouter
          .toCell(cellId, { type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "restart", memberUserIds: ["bob"] })
          .catch(() => undefined);
        return reply?.type === "cell.conversation" ? reply : undefined;
      },
      { deadlineMs: 20_000, intervalMs: 50 },
    );
    expect(created.type).toBe("cell.conversation");

    const send = (index: number): CellSendRequest => ({
      type: "cell.send",
      senderUserId: "alice",
      senderDeviceId: "laptop",
      conversationId,
      clientMessageId: `m${index}`,
      body: `m${index}`,
    });
    const replies: Promise<CellReply | Error>[] = [];
    const latenciesMs: number[] = [];
    let restarted: Promise<void> = Promise.resolve();
    const startedAtMs = performance.now();
    for (let index = 0; index < sendCount; index++) {
      // Paced on the clock, not on the replies: sends keep arriving while the database is away.
      const dueAtMs = startedAtMs + index * sendIntervalMs;
      const waitMs = dueAtMs - performance.now();
      if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
      const sentAtMs = performance.now();
      replies.push(
        cellRouter.toCell(cellId, send(index)).then(
          (reply) => {
            latenciesMs.push(performance.now() - sentAtMs);
            return reply;
          },
          (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
        ),
      );
      if (index === crashAfterSends) {
        await server.crash();
        restarted = new Promise<void>((resolve) => setTimeout(resolve, outageMs)).then(() => server.restart());
      }
    }
    await restarted;
    const answered = await Promise.all(replies);
    const failed = answered.map((reply, index) => ({ index, outcome: describeReply(reply) })).filter((entry) => entry.outcome !== "stored");
    expect(failed, `sends not stored; worker warnings:\n${warnings.slice(-20).join("\n")}`).toEqual([]);
    expect(warnings.some((line) => line.includes("cannot be reached"))).toBe(true);
    // Latency instead: the sends that met the outage waited for the database (seen: the longest 2.2 s).
    expect(Math.max(...latenciesMs)).toBeGreaterThan(outageMs / 2);

    // The log: every send once, in the order sent, seqs without a gap.
    // ensureCellDatabase only answers the cell database's URL once it exists, as it does by now.
    const pool = new pg.Pool({ connectionString: await ensureCellDatabase(server.adminUrl, namespace, cellId), max: 1 });
    try {
      const rows = await pool.query<{ seq: string; client_message_id: string }>(
        "select seq, client_message_id from messages where conversation_id = $1 order by seq",
        [conversationId],
      );
      expect(rows.rows.map((row) => row.client_message_id)).toEqual(Array.from({ length: sendCount }, (_, index) => `m${index}`));
      expect(rows.rows.map((row) => Number(row.seq))).toEqual(Array.from({ length: sendCount }, (_, index) => index + 1));
    } finally {
      await pool.end();
    }
  }, 120_000);
});
