// The directory service against the machine's real NATS (127.0.0.1:4222) and Redis (127.0.0.1:6379),
// asked through the DirectoryClient every other service uses. Redis outages are played with a TCP proxy
// in front of the real Redis, so the shared Redis itself is never stopped.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, connect as connectTcp, type AddressInfo, type Server, type Socket } from "node:net";
import { Redis } from "ioredis";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  cellInventoryRequest,
  cellInventorySubject,
  decodeJsonText,
  directoryChange,
  directoryChangesSubject,
  directoryReply,
  directoryResolveUsersMax,
  directorySubject,
  type DirectoryChange,
  type CellInventoryReply,
  type DirectoryReply,
  type InventoryKey,
} from "@cellwire/protocol";
import {
  anonymousNatsAccess,
  connectNats,
  destroyMembershipBucket,
  DirectoryClient,
  openMembershipBucket,
  RemoteError,
  type ServiceLogger,
} from "@cellwire/cluster";
import type { DirectoryConfig } from "./config.ts";
import { startDirectory, type RunningDirectory } from "./directory-service.ts";
import { RedisDirectory } from "./redis-directory.ts";

const redisHost = "127.0.0.1";
const redisPort = 6379;
const natsServers = ["127.0.0.1:4222"];
const clientTimeoutMs = 5_000;
const recoveryDeadlineMs = 20_000;

type LogLine = { level: "info" | "warn" | "error"; message: string };

function collectingLogger(lines: LogLine[]): ServiceLogger {
  const logger: ServiceLogger = {
    debug: () => undefined,
    info: (message) => void lines.push({ level: "info", message }),
    warn: (message) => void lines.push({ level: "warn", message }),
    error: (message) => void lines.push({ level: "error", message }),
    child: () => logger,
  };
  return logger;
}

function uniqueNamespace(): string {
  return `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

function directoryConfig(namespace: string, overrides: Partial<DirectoryConfig> = {}): DirectoryConfig {
  return {
    namespace,
    natsServers,
    redisUrl: `redis://${redisHost}:${redisPort}`,
    requestsInFlightMax: 64,
    redisCommandTimeoutMs: 2_000,
    redisReplicaAcksMin: 0,
    redisReplicaWaitMs: 500,
    ...overrides,
  };
}

function conversationIdFor(index: number): string {
  return `g-${index.toString().padStart(22, "0")}`;
}

async function remoteErrorOf(promise: Promise<unknown>): Promise<RemoteError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof RemoteError) return error;
    throw new Error(`expected a RemoteError, got ${String(error)}`, { cause: error });
  }
  throw new Error("expected a RemoteError, got a result");
}

/** Retries `attempt` until it resolves, or fails with its last error once deadlineMs has passed. */
async function eventually<T>(attempt: () => Promise<T>, deadlineMs: number): Promise<T> {
  const startedAtMs = performance.now();
  let delayMs = 20;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (performance.now() - startedAtMs > deadlineMs) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 500);
  }
}

/** A TCP proxy to the real Redis that can hold back commands (pause) or refuse connections (cut). */
class RedisProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();
  private paused = false;
  port = 0;

  async listen(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connectTcp(redisPort, redisHost);
      const pair = { client, upstream };
      this.pairs.add(pair);
      const close = (): void => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
      if (!this.paused) client.pipe(upstream);
      upstream.pipe(client);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, redisHost, () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
  }

  /** Commands already sent and those to come wait in the proxy, unanswered, until resume. */
  pause(): void {
    this.paused = true;
    for (const { client, upstream } of this.pairs) client.unpipe(upstream);
  }

  resume(): void {
    this.paused = false;
    for (const { client, upstream } of this.pairs) client.pipe(upstream);
  }

  /** Drops every connection and refuses new ones, as a Redis that went away. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, redisHost, () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const namespaces: string[] = [];
const runningDirectories: RunningDirectory[] = [];
const logLines: LogLine[] = [];
let natsConnection: NatsConnection | undefined;
let cleanupRedis: Redis | undefined;

function redisForCleanup(): Redis {
  if (cleanupRedis === undefined) throw new Error("not connected to Redis");
  return cleanupRedis;
}

function nats(): NatsConnection {
  if (natsConnection === undefined) throw new Error("not connected to NATS");
  return natsConnection;
}

async function startTestDirectory(
  overrides: Partial<DirectoryConfig> = {},
): Promise<{ client: DirectoryClient; namespace: string; directory: RunningDirectory }> {
  const namespace = uniqueNamespace();
  namespaces.push(namespace);
  const directory = await startDirectory(directoryConfig(namespace, overrides), collectingLogger(logLines));
  runningDirectories.push(directory);
  return { client: new DirectoryClient(nats(), namespace, clientTimeoutMs), namespace, directory };
}

beforeAll(async () => {
  natsConnection = await connectNats(natsServers, "directory-service-test", collectingLogger(logLines), anonymousNatsAccess("directory"));
  cleanupRedis = new Redis(`redis://${redisHost}:${redisPort}`, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await cleanupRedis.connect();
});

afterAll(async () => {
  await Promise.all(runningDirectories.map((directory) => directory.stop()));
  if (cleanupRedis !== undefined) {
    for (const namespace of namespaces) await new RedisDirectory(cleanupRedis, namespace).destroyNamespace();
    await cleanupRedis.quit();
  }
  await natsConnection?.drain();
});

describe("directory service", () => {
  let client: DirectoryClient;
  let namespace: string;

  beforeAll(async () => {
    ({ client, namespace } = await startTestDirectory());
  });
  const subject = () => directorySubject(namespace);

  it("answers no_cell_available while no cell is registered", async () => {
    const error = await remoteErrorOf(client.resolveUser("early_user"));
    expect(error.code).toBe("no_cell_available");
    const conversationError = await remoteErrorOf(client.placeConversation(conversationIdFor(0), "a"));
    expect(conversationError.code).toBe("no_cell_available");
  });

  it("registers cells and lists them", async () => {
    expect(await client.registerCell("a", 1)).toEqual([{ cellId: "a", weight: 1, state: "active" }]);
    await client.registerCell("b", 3);
    expect(await client.listCells()).toEqual([
      { cellId: "a", weight: 1, state: "active" },
      { cellId: "b", weight: 3, state: "active" },
    ]);
  });

  it("places a new user once under 50 concurrent resolveUser calls", async () => {
    const results = await Promise.all(Array.from({ length: 50 }, () => client.resolveUser("raced_user")));
    expect(results.filter((result) => result.placed)).toHaveLength(1);
    expect(new Set(results.map((result) => result.entry.cellId)).size).toBe(1);
    for (const result of results) expect(result.entry).toMatchObject({ kind: "user", id: "raced_user", epoch: 1 });
  });

  it("places users roughly 1:3 on cells of weights 1 and 3", async () => {
    const userCount = 400;
    const batchSize = 50;
    let onHeavyCell = 0;
    for (let start = 0; start < userCount; start += batchSize) {
      const batch = await Promise.all(Array.from({ length: batchSize }, (_, offset) => client.resolveUser(`weighted_${start + offset}`)));
      for (const result of batch) {
        expect(result.placed).toBe(true);
        if (result.entry.cellId === "b") onHeavyCell++;
      }
    }
    // Expected 300 with a standard deviation near 8.7: ±50 holds by chance with p < 1e-8, and an even
    // split (about 200) fails it.
    expect(onHeavyCell).toBeGreaterThanOrEqual(250);
    expect(onHeavyCell).toBeLessThanOrEqual(350);
  });

  it("answers directory.resolveUsers with each user's reply in order: new users placed once, known ones as they are", async () => {
    const known = await client.resolveUser("batch_known");
    const userIds = ["batch_new_1", "batch_known", "batch_new_2", "batch_new_1"];
    const message = await nats().request(subject(), new TextEncoder().encode(JSON.stringify({ type: "directory.resolveUsers", userIds })), {
      timeout: clientTimeoutMs,
    });
    const decoded = decodeJsonText<DirectoryReply>(directoryReply, message.string());
    if (!decoded.ok || decoded.value.type !== "directory.entries") throw new Error(`not directory.entries: ${message.string()}`);
    const { replies } = decoded.value;
    expect(replies.map((reply) => (reply.type === "directory.entry" ? reply.entry.id : reply.code))).toEqual(userIds);
    expect(replies[1]).toEqual({ type: "directory.entry", entry: known.entry, placed: false });
    // The same new user twice in one request is placed once.
    expect(replies.filter((reply) => reply.type === "directory.entry" && reply.entry.id === "batch_new_1" && reply.placed)).toHaveLength(1);
    expect(replies[2]).toMatchObject({ type: "directory.entry", placed: true });
    for (const userId of ["batch_new_1", "batch_new_2"]) {
      const entry = await client.lookupUser(userId);
      expect(replies.find((reply) => reply.type === "directory.entry" && reply.entry.id === userId)).toMatchObject({ entry });
    }
  });

  it("honours the preferred cell of a new conversation and keeps an existing one", async () => {
    for (let index = 1; index <= 20; index++) {
      const result = await client.placeConversation(conversationIdFor(index), "a");
      expect(result).toMatchObject({ placed: true, entry: { kind: "conversation", cellId: "a", epoch: 1 } });
    }
    const again = await client.placeConversation(conversationIdFor(1), "b");
    expect(again).toMatchObject({ placed: false, entry: { cellId: "a" } });
    expect(await client.lookupConversation(conversationIdFor(1))).toEqual({
      kind: "conversation",
      id: conversationIdFor(1),
      cellId: "a",
      epoch: 1,
    });
  });

  it("looks up an unknown conversation as undefined", async () => {
    expect(await client.lookupConversation(conversationIdFor(999))).toBeUndefined();
  });

  it("refuses to assign a user to an unknown cell, and assigns to a known one", async () => {
    const error = await remoteErrorOf(client.assignUser("assigned_user", "zz"));
    expect(error.code).toBe("unknown_cell");
    expect(await client.assignUser("assigned_user", "a")).toEqual({
      placed: true,
      entry: { kind: "user", id: "assigned_user", cellId: "a", epoch: 1 },
    });
  });

  it("answers a malformed request with directory.error and keeps serving", async () => {
    const subject = directorySubject(namespace);
    const payloads = [
      "not json",
      JSON.stringify({ type: "directory.resolveUser", userId: "victim.>" }),
      JSON.stringify({ type: "directory.explode" }),
      JSON.stringify({ type: "directory.resolveUsers", userIds: [] }),
      JSON.stringify({
        type: "directory.resolveUsers",
        userIds: Array.from({ length: directoryResolveUsersMax + 1 }, (_, index) => `u${index}`),
      }),
    ];
    for (const payload of payloads) {
      const message = await nats().request(subject, new TextEncoder().encode(payload), { timeout: clientTimeoutMs });
      const decoded = decodeJsonText<DirectoryReply>(directoryReply, message.string());
      expect(decoded.ok && decoded.value).toMatchObject({ type: "directory.error", code: "internal" });
    }
    expect((await client.resolveUser("after_garbage")).entry.id).toBe("after_garbage");
  });
});

/** Collects directory.changed messages of a namespace; `next` waits for the next one with a deadline. */
class ChangeListener {
  private readonly received: DirectoryChange[] = [];
  private waiter: (() => void) | undefined;
  private readonly subscription: Subscription;

  constructor(namespace: string) {
    this.subscription = nats().subscribe(directoryChangesSubject(namespace), {
      callback: (error, message) => {
        if (error !== null) return;
        const decoded = decodeJsonText<DirectoryChange>(directoryChange, message.string());
        if (!decoded.ok) throw new Error(`undecodable directory.changed: ${message.string()}`);
        this.received.push(decoded.value);
        this.waiter?.();
      },
    });
  }

  async next(deadlineMs: number): Promise<DirectoryChange> {
    const startedAtMs = performance.now();
    for (;;) {
      const change = this.received.shift();
      if (change !== undefined) return change;
      const remainingMs = deadlineMs - (performance.now() - startedAtMs);
      if (remainingMs <= 0) throw new Error(`no directory.changed within ${deadlineMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remainingMs);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  unsubscribe(): void {
    this.subscription.unsubscribe();
  }
}

describe("directory service: migration requests", () => {
  let client: DirectoryClient;
  let namespace: string;
  let changes: ChangeListener;

  beforeAll(async () => {
    ({ client, namespace } = await startTestDirectory());
    changes = new ChangeListener(namespace);
    // The subscription must reach the server before the first move is published.
    await nats().flush();
    await client.registerCell("a", 1);
    await client.registerCell("b", 1);
  });

  afterAll(() => changes.unsubscribe());

  it("moves an entry with the next epoch, publishes directory.changed, and answers a repeat the same way", async () => {
    await client.assignUser("mover", "a");
    const move = { kind: "user", id: "mover", fromCellId: "a", toCellId: "b", expectedEpoch: 1 } as const;
    const moved = await client.moveEntry(move);
    expect(moved).toEqual({ kind: "user", id: "mover", cellId: "b", epoch: 2 });
    expect(await changes.next(clientTimeoutMs)).toEqual({ type: "directory.changed", entry: moved });
    expect(await client.lookupUser("mover")).toEqual(moved);
    // The repeat is announced again: the first announcement may be one a crashed attempt never saw answered.
    expect(await client.moveEntry(move)).toEqual(moved);
    expect(await changes.next(clientTimeoutMs)).toEqual({ type: "directory.changed", entry: moved });
  });

  it("answers refused moves with their codes and publishes nothing for them", async () => {
    await client.assignUser("stayer", "a");
    const move = { kind: "user", id: "stayer", fromCellId: "a", toCellId: "b", expectedEpoch: 1 } as const;
    expect((await remoteErrorOf(client.moveEntry({ ...move, expectedEpoch: 3 }))).code).toBe("entry_changed");
    expect((await remoteErrorOf(client.moveEntry({ ...move, fromCellId: "b", toCellId: "a" }))).code).toBe("entry_changed");
    expect((await remoteErrorOf(client.moveEntry({ ...move, id: "nobody" }))).code).toBe("not_found");
    expect((await remoteErrorOf(client.moveEntry({ ...move, toCellId: "zz" }))).code).toBe("unknown_cell");
    // Changes are published in order on one connection: were any refusal announced, it would come first.
    await client.placeConversation(conversationIdFor(1), "a");
    const moved = await client.moveEntry({
      kind: "conversation",
      id: conversationIdFor(1),
      fromCellId: "a",
      toCellId: "b",
      expectedEpoch: 1,
    });
    expect(await changes.next(clientTimeoutMs)).toEqual({ type: "directory.changed", entry: moved });
  });

  it("drains a cell: refuses moves onto it, places nothing on it, then takes entries again once active", async () => {
    await client.registerCell("c", 1_000_000);
    const drained = await client.setCellState("c", "draining");
    expect(drained).toContainEqual({ cellId: "c", weight: 1_000_000, state: "draining" });
    expect(await client.listCells()).toEqual(drained);
    for (let index = 0; index < 10; index++) expect((await client.resolveUser(`while_draining_${index}`)).entry.cellId).not.toBe("c");
    await client.assignUser("to_drained", "a");
    const refusal = await remoteErrorOf(
      client.moveEntry({ kind: "user", id: "to_drained", fromCellId: "a", toCellId: "c", expectedEpoch: 1 }),
    );
    expect(refusal.code).toBe("invalid_field");
    expect(refusal.message).toContain("cell c is draining");
    expect((await remoteErrorOf(client.setCellState("zz", "draining"))).code).toBe("unknown_cell");
    await client.setCellState("c", "active");
    // Weight 1,000,000 against 2: a user placed elsewhere now would be a one-in-500,000 chance.
    expect((await client.resolveUser("after_drain")).entry.cellId).toBe("c");
  });

  it("lists a cell's entries page by page, and answers unknown_cell for an unregistered cell", async () => {
    await client.registerCell("d", 1);
    const ids = Array.from({ length: 120 }, (_, index) => `listed_${index}`);
    // In batches below the service's in-flight limit (64 here).
    for (let start = 0; start < ids.length; start += 40)
      await Promise.all(ids.slice(start, start + 40).map((id) => client.assignUser(id, "d")));
    const seen = new Set<string>();
    let cursor = "0";
    for (let page = 0; page < 1_000; page++) {
      const result = await client.cellEntries("d", "user", cursor, 10);
      for (const id of result.ids) seen.add(id);
      cursor = result.cursor;
      if (cursor === "0") break;
    }
    expect(cursor).toBe("0");
    expect(seen).toEqual(new Set(ids));
    expect(await client.cellEntries("d", "conversation", "0", 10)).toEqual({ ids: [], cursor: "0" });
    expect((await remoteErrorOf(client.cellEntries("zz", "user", "0", 10))).code).toBe("unknown_cell");
  });
});

describe("directory service while Redis is unreachable", () => {
  const proxy = new RedisProxy();
  let client: DirectoryClient;
  const requestsInFlightMax = 2;
  const redisCommandTimeoutMs = 1_000;

  beforeAll(async () => {
    await proxy.listen();
    ({ client } = await startTestDirectory({
      redisUrl: `redis://${redisHost}:${proxy.port}`,
      requestsInFlightMax,
      redisCommandTimeoutMs,
    }));
    await client.registerCell("a", 1);
  });

  afterAll(async () => {
    await proxy.cut();
  });

  it("times slow commands out and answers past the in-flight limit at once, all directory_unavailable", async () => {
    proxy.pause();
    try {
      // Lookups, one request each (the resolves of one turn would share one request).
      const requestCount = 6;
      const errors = await Promise.all(
        Array.from({ length: requestCount }, (_, index) => remoteErrorOf(client.lookupUser(`slow_${index}`))),
      );
      for (const error of errors) expect(error.code).toBe("directory_unavailable");
      const overLimit = errors.filter((error) => error.message.includes("requests in flight"));
      expect(overLimit).toHaveLength(requestCount - requestsInFlightMax);
      // The resolves of one turn: one request, each user answered directory_unavailable.
      const resolves = await Promise.all(
        Array.from({ length: requestCount }, (_, index) => remoteErrorOf(client.resolveUser(`slow_${index}`))),
      );
      expect(resolves.map((error) => error.code)).toEqual(Array.from({ length: requestCount }, () => "directory_unavailable"));
    } finally {
      proxy.resume();
    }
  });

  it("answers directory_unavailable quickly while Redis is down, then recovers", async () => {
    await eventually(() => client.resolveUser("before_outage"), recoveryDeadlineMs);
    await proxy.cut();
    const startedAtMs = performance.now();
    const error = await remoteErrorOf(client.resolveUser("during_outage"));
    expect(error.code).toBe("directory_unavailable");
    // A reply from the service, not the client's own timeout, and well within one command timeout.
    expect(performance.now() - startedAtMs).toBeLessThan(redisCommandTimeoutMs);

    await proxy.listen();
    const recovered = await eventually(() => client.resolveUser("after_outage"), recoveryDeadlineMs);
    expect(recovered.entry).toMatchObject({ id: "after_outage", cellId: "a" });
  });
});

describe("a directory whose Redis forgot", () => {
  it("refuses placements retryably at once, keeps answering what it still has, and rebuilds from the cells without a restart", async () => {
    const { client, namespace } = await startTestDirectory();
    // A stand-in for cell a: its membership bucket (how a rebuild finds it) and an inventory that holds
    // alice and a conversation.
    await openMembershipBucket(nats(), namespace, "a", 60_000);
    let inventoryPages = 0;
    const inventory = nats().subscribe(cellInventorySubject(namespace, "a"), {
      callback: (error, message) => {
        if (error !== null) return;
        inventoryPages++;
        const decoded = decodeJsonText(cellInventoryRequest, message.string());
        if (!decoded.ok) throw new Error(`undecodable cell.inventory: ${message.string()}`);
        const keys: InventoryKey[] =
          decoded.value.kind === "user"
            ? [{ id: "alice", state: "active", movingToCellId: null, movedEpoch: null }]
            : [{ id: conversationIdFor(1), state: "active", movingToCellId: null, movedEpoch: null }];
        const page: CellInventoryReply = { type: "cell.inventoryPage", cellId: "a", weight: 2, kind: decoded.value.kind, keys, done: true };
        message.respond(new TextEncoder().encode(JSON.stringify(page)));
      },
    });
    try {
      // The start found no cell (the bucket came after it): a fresh deployment, complete and placing.
      await client.registerCell("a", 2);
      expect((await client.assignUser("bob", "a")).placed).toBe(true);
      expect(inventoryPages).toBe(0);
      expect(await new RedisDirectory(redisForCleanup(), namespace).destroyNamespace()).toBeGreaterThan(0);

      const refusal = await remoteErrorOf(client.resolveUser("carol"));
      expect(refusal.code).toBe("directory_unavailable");
      // The refusal woke the rebuild: cell a's keys and registration come back, then placements resume.
      const carol = await eventually(() => client.resolveUser("carol"), recoveryDeadlineMs);
      expect(carol).toMatchObject({ placed: true, entry: { cellId: "a" } });
      expect(inventoryPages).toBe(2);
      expect(await client.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "a", epoch: 1 });
      // What the cell does not hold is not known again: bob had no mailbox in the stand-in cell.
      expect(await client.lookupUser("bob")).toBeUndefined();
      expect(await client.lookupConversation(conversationIdFor(1))).toMatchObject({ cellId: "a" });
      expect(await client.listCells()).toEqual([{ cellId: "a", weight: 2, state: "active" }]);
      expect(logLines.filter((line) => line.message.includes("directory rebuilt from 1 cells"))).toHaveLength(1);
    } finally {
      inventory.unsubscribe();
      await destroyMembershipBucket(nats(), namespace, "a");
    }
  });
});

describe("directory start", () => {
  it("fails with a message naming Redis, its URL and how to start it", async () => {
    const port = await freePort();
    const lines: LogLine[] = [];
    const redisUrl = `redis://${redisHost}:${port}`;
    const start = startDirectory(directoryConfig(uniqueNamespace(), { redisUrl }), collectingLogger(lines));
    await expect(start).rejects.toThrow(/Redis is unreachable/);
    await expect(start).rejects.toThrow(redisUrl);
    await expect(start).rejects.toThrow(`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no`);
  });
});
