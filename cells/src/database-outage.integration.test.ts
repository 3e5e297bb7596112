// A worker whose network to Postgres goes silent, against the machine's real NATS and Postgres. Worker
// x-1 reaches Postgres through a TCP proxy written here (node:net) that can stop forwarding without
// closing anything, as a partitioned network does: bytes wait, nobody is told. Worker x-2 reaches Postgres
// directly. With the proxy silent, x-1's queries end within its query timeout instead of hanging for
// minutes, x-1 gives up its lease within WORKER_DATABASE_UNREACHABLE_MS, x-2 takes over its conversation
// and sends succeed again; once the proxy forwards again, x-1 rejoins the ring.
import { randomBytes } from "node:crypto";
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MembershipWatcher,
  anonymousNatsAccess,
  connectNats,
  decodeMessage,
  destroyMembershipBucket,
  encodeJson,
  openMembershipBucket,
  systemClock,
  startRouter,
  type RunningRouter,
} from "@cellwire/cluster";
import { pollUntil } from "@cellwire/testkit";
import {
  cellReply,
  cellRequestChannel,
  workerRequestSubject,
  type CellReply,
  type CellRequest,
  type CellSendRequest,
} from "@cellwire/protocol";
import { loadWorkerConfig, type WorkerConfig } from "./config.ts";
import pg from "pg";
import { cellPoolConfig, defaultPostgresAdminUrl, dropCellDatabase, ensureCellDatabase } from "./store/database.ts";
import { postgresErrorCode } from "./store/errors.ts";
import { newGroupId } from "../test/store-contract.ts";
import { startWorker, type RunningWorker } from "./worker.ts";
import { recordingLogger, required } from "../test/worker-test-kit.ts";
import { serveDirectoryStub } from "../test/directory-stub.ts";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const natsServers = ["127.0.0.1:4222"];
const cellId = "x";
const deadlineMs = 30_000;
const leaseMs = 1500;
const heartbeatIntervalMs = 300;
const queryTimeoutMs = 1500;
const databaseUnreachableMs = 3000;
const postgresProbeIntervalMs = 250;
/** Room for a machine shared with other tests: timers fire late, NATS and Postgres answer late. */
const slackMs = 3000;
const { warnings, logger } = recordingLogger();

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
let proxy: SilenceableProxy | undefined;
const workers: RunningWorker[] = [];
let watcher: MembershipWatcher | undefined;
let router: RunningRouter | undefined;
const pools: pg.Pool[] = [];

function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  return pollUntil(what, probe, { deadlineMs, intervalMs: 25, detail: () => `worker warnings:\n${warnings.join("\n")}` });
}

/**
 * A TCP proxy to Postgres that can go silent: its sockets stop being read (so nothing is forwarded either
 * way and the kernel's buffers fill) while every connection stays open, and new connections are accepted
 * but not served. recover() reads on, delivering what waited, as a network that comes back does.
 */
class SilenceableProxy {
  private readonly sockets = new Set<Socket>();
  private silent = false;
  private constructor(private readonly server: Server) {}

  static async start(targetPort: number): Promise<SilenceableProxy> {
    const server = createServer();
    const proxy = new SilenceableProxy(server);
    server.on("connection", (client) => proxy.accept(client, targetPort));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  silence(): void {
    this.silent = true;
    for (const socket of this.sockets) socket.pause();
  }

  recover(): void {
    this.silent = false;
    for (const socket of this.sockets) socket.resume();
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, targetPort: number): void {
    const upstream = createConnection({ host: "127.0.0.1", port: targetPort });
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(from);
      from.on("data", (chunk) => to.write(chunk));
      from.on("end", () => to.end());
      from.on("error", () => to.destroy());
      from.on("close", () => {
        this.sockets.delete(from);
        to.destroy();
      });
      if (this.silent) from.pause();
    }
  }
}

/** A worker configured as an operator would, through its environment: the defaults but for what this test bounds. */
function workerConfig(workerId: string, postgresAdminUrl: string): WorkerConfig {
  return loadWorkerConfig({
    CELLWIRE_NAMESPACE: namespace,
    CELLWIRE_NATS_SERVERS: natsServers.join(","),
    WORKER_CELL_ID: cellId,
    WORKER_ID: workerId,
    WORKER_POSTGRES_ADMIN_URL: postgresAdminUrl,
    WORKER_LEASE_MS: String(leaseMs),
    WORKER_HEARTBEAT_INTERVAL_MS: String(heartbeatIntervalMs),
    WORKER_POOL_SIZE: "2",
    WORKER_DIRECTORY_WAIT_MS: "10000",
    WORKER_POSTGRES_CONNECT_TIMEOUT_MS: "1000",
    WORKER_POSTGRES_STATEMENT_TIMEOUT_MS: "1000",
    WORKER_POSTGRES_LOCK_TIMEOUT_MS: "500",
    WORKER_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_MS: "2000",
    WORKER_POSTGRES_QUERY_TIMEOUT_MS: String(queryTimeoutMs),
    WORKER_POSTGRES_KEEPALIVE_INITIAL_DELAY_MS: "1000",
    WORKER_DATABASE_UNREACHABLE_MS: String(databaseUnreachableMs),
    WORKER_POSTGRES_PROBE_INTERVAL_MS: String(postgresProbeIntervalMs),
  }).config;
}

function sendRequest(conversationId: string, clientMessageId: string): CellSendRequest {
  return { type: "cell.send", senderUserId: "alice", senderDeviceId: "laptop", conversationId, clientMessageId, body: clientMessageId };
}

/** Sends a request straight to one worker's subject (no router, so no retry elsewhere). */
async function direct(workerId: string, request: CellRequest, timeoutMs = 5000): Promise<CellReply> {
  const reply = await required(connection, "nats").request(
    workerRequestSubject(namespace, cellId, workerId, cellRequestChannel(request.type)),
    encodeJson(request),
    { timeout: timeoutMs },
  );
  const decoded = decodeMessage(cellReply, reply.data);
  if (!decoded.ok) throw new Error(`reply does not decode: ${decoded.reason}`);
  return decoded.value;
}

function describeReply(reply: CellReply): string {
  return reply.type === "cell.stored" ? `stored ${reply.message.body}` : reply.type === "cell.error" ? reply.code : reply.type;
}

function members(): string {
  return [...required(watcher, "watcher").snapshot.ring.members].join(",");
}

beforeAll(async () => {
  connection = await connectNats(natsServers, "cells-database-outage-test", { ...logger }, anonymousNatsAccess("worker"));
  serveDirectoryStub(connection, namespace, { cellIds: [cellId], homeOf: () => cellId });
  await connection.flush();
  proxy = await SilenceableProxy.start(Number(new URL(defaultPostgresAdminUrl).port));
});

afterAll(async () => {
  proxy?.recover();
  router?.stop();
  for (const worker of workers) await worker.stop().catch(() => undefined);
  watcher?.stop();
  await Promise.all(pools.map((pool) => pool.end()));
  await proxy?.close();
  if (connection !== undefined) {
    await destroyMembershipBucket(connection, namespace, cellId).catch(() => undefined);
    await connection.drain();
  }
  await dropCellDatabase(defaultPostgresAdminUrl, namespace, cellId);
});

describe("a worker whose network to Postgres goes silent", () => {
  it("times its queries out, gives up its lease within the bound so the other worker takes its conversation, and rejoins once the network is back", async () => {
    const proxyUrl = new URL(defaultPostgresAdminUrl);
    proxyUrl.port = String(required(proxy, "proxy").port);
    workers.push(await startWorker(workerConfig("x-1", proxyUrl.toString()), { ...logger }));
    workers.push(await startWorker(workerConfig("x-2", defaultPostgresAdminUrl), { ...logger }));
    const connected = required(connection, "nats");
    watcher = new MembershipWatcher(
      await openMembershipBucket(connected, namespace, cellId, leaseMs),
      cellId,
      50,
      systemClock,
      logger,
      2000,
      200,
      false,
    );
    await watcher.start();
    await waitFor("the ring of x-1,x-2", () => (members() === "x-1,x-2" ? true : undefined));
    let conversationId = newGroupId();
    while (watcher.snapshot.ring.ownerOf(conversationId) !== "x-1") conversationId = newGroupId();
    const create: CellRequest = {
      type: "cell.createGroup",
      creatorUserId: "alice",
      conversationId,
      title: "outage",
      memberUserIds: ["bob"],
    };
    await waitFor("x-1 to create the group", async () => ((await direct("x-1", create)).type === "cell.conversation" ? true : undefined));
    expect(describeReply(await direct("x-1", sendRequest(conversationId, "m1")))).toBe("stored m1");

    required(proxy, "proxy").silence();
    const silencedAtMs = performance.now();
    // Sent to x-1 itself while its lease still stands: its statement waits on a silent socket, and the
    // query timeout ends the wait (before, the reply never came: the request timed out here).
    const hung = await direct("x-1", sendRequest(conversationId, "m2"), deadlineMs);
    const answeredAfterMs = performance.now() - silencedAtMs;
    expect(describeReply(hung)).toBe("cell_unavailable");
    expect(answeredAfterMs).toBeLessThan(queryTimeoutMs + slackMs);

    await waitFor("the ring without x-1", () => (members() === "x-2" ? true : undefined));
    const leftAfterMs = performance.now() - silencedAtMs;
    // The bound, one probe period for the check, and the time for the deleted lease to reach a watcher.
    expect(leftAfterMs).toBeLessThan(databaseUnreachableMs + postgresProbeIntervalMs + slackMs);
    // Not at the first slow answer: the bound counts from the last probe answered before the silence.
    expect(leftAfterMs).toBeGreaterThan(databaseUnreachableMs / 2);

    router = startRouter(
      connected,
      {
        ring: {
          namespace,
          leaseMs,
          requestTimeoutMs: 3000,
          attemptsMax: 10,
          retryBackoff: { initialDelayMs: 50, maxDelayMs: 300, multiplier: 2 },
          watchedCellsMax: 2,
        },
        // Only toCell is used here: no request is routed to a key's home.
        homes: { resolve: async () => undefined, moved: () => {}, forget: () => {} },
      },
      { clock: systemClock, logger },
    );
    expect(describeReply(await router.toCell(cellId, sendRequest(conversationId, "m3")))).toBe("stored m3");

    required(proxy, "proxy").recover();
    await waitFor("x-1 back in the ring", () => (members() === "x-1,x-2" ? true : undefined));
    expect(warnings.some((line) => line.includes("giving up the lease"))).toBe(true);
    // x-1 owns the conversation again and serves it.
    await waitFor("a send to the conversation stored by x-1", async () => {
      const reply = await direct("x-1", sendRequest(conversationId, "m4"));
      return reply.type === "cell.stored" ? reply : undefined;
    });
  });
});

describe("the worker's pool settings", () => {
  it("give every connection the lock and idle-in-transaction timeouts: a lock wait and a forgotten transaction end at them", async () => {
    const url = await ensureCellDatabase(defaultPostgresAdminUrl, namespace, cellId);
    const lockTimeoutMs = 300;
    const idleInTransactionTimeoutMs = 500;
    const timeouts = {
      connectTimeoutMs: 2000,
      statementTimeoutMs: 4000,
      lockTimeoutMs,
      idleInTransactionTimeoutMs,
      queryTimeoutMs: 5000,
      keepAliveInitialDelayMs: 1000,
    };
    const pool = new pg.Pool(cellPoolConfig(url, 2, timeouts));
    pool.on("error", () => undefined);
    pools.push(pool);
    const plain = new pg.Pool({ connectionString: url, max: 1 });
    plain.on("error", () => undefined);
    pools.push(plain);
    const settings = await pool.query(
      "select current_setting('lock_timeout') as lock, current_setting('idle_in_transaction_session_timeout') as idle, current_setting('statement_timeout') as statement",
    );
    expect(settings.rows[0]).toEqual({ lock: "300ms", idle: "500ms", statement: "4s" });

    // A lock held by another session: the wait ends at lock_timeout with 55P03.
    const holder = await plain.connect();
    try {
      await holder.query("begin");
      await holder.query("select pg_advisory_xact_lock(4242)");
      const startedAtMs = performance.now();
      const error: unknown = await pool.query("select pg_advisory_xact_lock(4242)").then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(postgresErrorCode(error)).toBe("55P03");
      expect(performance.now() - startedAtMs).toBeLessThan(lockTimeoutMs + slackMs);
      await holder.query("rollback");
    } finally {
      holder.release();
    }

    // A transaction left open: Postgres ends its session after idle_in_transaction_session_timeout.
    const forgetful = await pool.connect();
    let forgottenPid = 0;
    try {
      forgetful.on("error", () => undefined);
      await forgetful.query("begin");
      const pid = await forgetful.query("select pg_backend_pid() as pid");
      forgottenPid = Number((pid.rows[0] as { pid: number }).pid);
      await waitFor("the idle transaction's session to be ended", async () => {
        const found = await plain.query("select 1 from pg_stat_activity where pid = $1", [forgottenPid]);
        return found.rowCount === 0 ? true : undefined;
      });
    } finally {
      forgetful.release(true);
    }
  });
});
