// The directory service against the machine's real NATS (127.0.0.1:4222) and Redis (127.0.0.1:6379),
// asked through the DirectoryClient every other service uses. Redis outages are played with a TCP proxy
// in front of the real Redis, so the shared Redis itself is never stopped.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, connect as connectTcp, type AddressInfo, type Server, type Socket } from "node:net";
import { Redis } from "ioredis";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeJsonText, directoryReply, directorySubject, type DirectoryReply } from "@cellwire/protocol";
import { connectNats, DirectoryClient, RemoteError, type ServiceLogger } from "@cellwire/cluster";
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
  return {
    info: (message) => void lines.push({ level: "info", message }),
    warn: (message) => void lines.push({ level: "warn", message }),
    error: (message) => void lines.push({ level: "error", message }),
  };
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

function nats(): NatsConnection {
  if (natsConnection === undefined) throw new Error("not connected to NATS");
  return natsConnection;
}

async function startTestDirectory(overrides: Partial<DirectoryConfig> = {}): Promise<{ client: DirectoryClient; namespace: string; directory: RunningDirectory }> {
  const namespace = uniqueNamespace();
  namespaces.push(namespace);
  const directory = await startDirectory(directoryConfig(namespace, overrides), collectingLogger(logLines));
  runningDirectories.push(directory);
  return { client: new DirectoryClient(nats(), namespace, clientTimeoutMs), namespace, directory };
}

beforeAll(async () => {
  natsConnection = await connectNats(natsServers, "directory-service-test", collectingLogger(logLines));
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

  it("honours the preferred cell of a new conversation and keeps an existing one", async () => {
    for (let index = 1; index <= 20; index++) {
      const result = await client.placeConversation(conversationIdFor(index), "a");
      expect(result).toMatchObject({ placed: true, entry: { kind: "conversation", cellId: "a", epoch: 1 } });
    }
    const again = await client.placeConversation(conversationIdFor(1), "b");
    expect(again).toMatchObject({ placed: false, entry: { cellId: "a" } });
    expect(await client.lookupConversation(conversationIdFor(1))).toEqual({ kind: "conversation", id: conversationIdFor(1), cellId: "a", epoch: 1 });
  });

  it("looks up an unknown conversation as undefined", async () => {
    expect(await client.lookupConversation(conversationIdFor(999))).toBeUndefined();
  });

  it("refuses to assign a user to an unknown cell, and assigns to a known one", async () => {
    const error = await remoteErrorOf(client.assignUser("assigned_user", "zz"));
    expect(error.code).toBe("unknown_cell");
    expect(await client.assignUser("assigned_user", "a")).toEqual({ placed: true, entry: { kind: "user", id: "assigned_user", cellId: "a", epoch: 1 } });
  });

  it("answers a malformed request with directory.error and keeps serving", async () => {
    const subject = directorySubject(namespace);
    const payloads = ["not json", JSON.stringify({ type: "directory.resolveUser", userId: "victim.>" }), JSON.stringify({ type: "directory.explode" })];
    for (const payload of payloads) {
      const message = await nats().request(subject, new TextEncoder().encode(payload), { timeout: clientTimeoutMs });
      const decoded = decodeJsonText<DirectoryReply>(directoryReply, message.string());
      expect(decoded.ok && decoded.value).toMatchObject({ type: "directory.error", code: "internal" });
    }
    expect((await client.resolveUser("after_garbage")).entry.id).toBe("after_garbage");
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
      const requestCount = 6;
      const errors = await Promise.all(Array.from({ length: requestCount }, (_, index) => remoteErrorOf(client.resolveUser(`slow_${index}`))));
      for (const error of errors) expect(error.code).toBe("directory_unavailable");
      const overLimit = errors.filter((error) => error.message.includes("requests in flight"));
      expect(overLimit).toHaveLength(requestCount - requestsInFlightMax);
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
