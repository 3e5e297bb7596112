// Pipelined sends keep their order on the real topology (issue 11, docs/decisions/0020). One session sends
// c0 while another transaction holds its conversation's row lock, so c0's batch waits; then c1 and c2,
// which queue behind it. c0's attempt times out at the edge (EDGE_CELL_REQUEST_TIMEOUT_MS) and the
// router sends c0 again: that copy queues behind c1 and c2. c0's first statement then fails (cancelled
// here, as a lock or statement timeout would), and the next batch takes c1, c2 and c0's copy; the lock is
// released while it waits. Without predecessors that batch stored c1, c2, c0. Now c1 and c2 are answered
// out_of_order, the SDK retries them after c0, and the log reads c0, c1, c2.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import pg from "pg";
import type { NatsConnection } from "@nats-io/transport-node";
import { ensureCellDatabase } from "@cellwire/cells";
import { CellwireClient, type Ack } from "@cellwire/client";
import { pollUntil } from "@cellwire/testkit";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
let nats: NatsConnection;
const clients: CellwireClient[] = [];
const databases: pg.Client[] = [];
/** One attempt of a cell request at the edge: c0 is sent again once it passes. */
const attemptTimeoutMs = 2000;
const waitMs = 20_000;

beforeAll(async () => {
  test = await startTestTopology({
    label: "sendorder",
    cells: [{ cellId: "a", workerCount: 1 }],
    edgeCount: 1,
    extraEnvironment: {
      EDGE_CELL_REQUEST_TIMEOUT_MS: String(attemptTimeoutMs),
      // c1 and c2 wait for c0's batch: not refused for that.
      WORKER_SEND_QUEUE_WAIT_MS_MAX: "10000",
    },
  });
  // As a worker's user: the only one that may read the workers' request subjects (docs/decisions/0015).
  nats = await test.connectNats("worker");
});

afterAll(async () => {
  for (const client of clients) client.close();
  for (const database of databases) await database.end().catch(() => undefined);
  await nats?.close();
  await test?.destroy();
});

async function connectedClient(userId: string): Promise<CellwireClient> {
  const edge = test.topology.edges[0];
  if (edge === undefined) throw new Error("no edge");
  const client = new CellwireClient({
    url: edge.webSocketUrl,
    deviceId: "phone",
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId: "phone" }),
  });
  clients.push(client);
  await client.connect();
  return client;
}

async function database(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: await ensureCellDatabase(testServices.postgresAdminUrl, test.namespace, "a") });
  databases.push(client);
  await client.connect();
  return client;
}

type LockWait = { readonly pid: number; readonly startedAt: Date; readonly waitedMs: number };

/** The newest statement of the cell's workers that waits for a lock, and how long it has waited (Postgres's clock). */
async function lockWait(observer: pg.Client): Promise<LockWait | undefined> {
  const result = await observer.query<{ pid: number; query_start: Date; waited_ms: number }>(
    `select pid, query_start, (extract(epoch from clock_timestamp() - query_start) * 1000)::float8 as waited_ms
     from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()
     order by query_start desc limit 1`,
  );
  const row = result.rows[0];
  return row === undefined ? undefined : { pid: row.pid, startedAt: row.query_start, waitedMs: row.waited_ms };
}

describe("pipelined sends", () => {
  it("are stored in the order they were sent when the first one is retried behind the others", { timeout: 60_000 }, async () => {
    // Every send the edge asks the worker for, in the order the worker receives them.
    const sentToWorker: string[] = [];
    const subscription = nats.subscribe(`${test.namespace}.cell.a.worker.*.edge`, {
      callback: (_error, message) => {
        const payload = JSON.parse(message.string()) as { sends?: { clientMessageId: string }[] };
        for (const send of payload.sends ?? []) sentToWorker.push(send.clientMessageId);
      },
    });
    await nats.flush();
    const timesSent = (clientMessageId: string) => sentToWorker.filter((id) => id === clientMessageId).length;

    const alice = await connectedClient("alice");
    const { conversationId } = await alice.createGroup("ordered", ["bob"]);
    const locker = await database();
    const observer = await database();
    await locker.query("begin");
    await locker.query("select id from conversations where id = $1 for update", [conversationId]);

    const acks: Promise<Ack>[] = [alice.send(conversationId, "c0", { clientMessageId: "c0" })];
    // c1 and c2 are sent once c0's batch has waited a while, so that they are still awaited (within their
    // own attempt's time) when c0's second attempt has arrived behind them.
    const firstWait = await pollUntil(
      "c0's statement waiting for the row lock",
      async () => {
        const wait = await lockWait(observer);
        return wait !== undefined && wait.waitedMs >= attemptTimeoutMs / 2 ? wait : undefined;
      },
      { deadlineMs: waitMs, intervalMs: 5 },
    );
    acks.push(alice.send(conversationId, "c1", { clientMessageId: "c1" }), alice.send(conversationId, "c2", { clientMessageId: "c2" }));
    await pollUntil("c0 sent again, behind c1 and c2", () => (timesSent("c0") >= 2 && timesSent("c2") >= 1 ? true : undefined), {
      deadlineMs: waitMs,
      intervalMs: 5,
    });
    expect(sentToWorker.slice(0, 4)).toEqual(["c0", "c1", "c2", "c0"]);
    // c0's first statement fails (as its lock timeout would); the next batch waits for the lock in its turn.
    await observer.query("select pg_cancel_backend($1)", [firstWait.pid]);
    await pollUntil(
      "the next batch waiting for the row lock",
      async () => {
        const wait = await lockWait(observer);
        return wait !== undefined && wait.startedAt > firstWait.startedAt ? true : undefined;
      },
      { deadlineMs: waitMs, intervalMs: 5 },
    );
    await locker.query("rollback");

    const settled = await Promise.allSettled(acks);
    subscription.unsubscribe();
    const stored = await observer.query<{ client_message_id: string }>(
      "select client_message_id from messages where conversation_id = $1 order by seq",
      [conversationId],
    );
    const order = stored.rows.map((row) => row.client_message_id);
    // Every stored send is in send order; a send that was not stored failed with a retryable code.
    expect(order).toEqual(["c0", "c1", "c2"].filter((id) => order.includes(id)));
    settled.forEach((outcome, index) => {
      if (outcome.status === "fulfilled") expect(order).toContain(`c${index}`);
      else expect(outcome.reason).toMatchObject({ retryable: true });
    });
    // With the SDK retrying in order, all three are stored.
    expect(order).toEqual(["c0", "c1", "c2"]);
  });
});
