// RedisDirectory against the machine's real Redis (127.0.0.1:6379), each test in its own namespace.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { redisPrefix } from "@cellwire/protocol";
import { DirectoryStoreError } from "./errors.ts";
import { RedisDirectory } from "./redis-directory.ts";

const redisUrl = "redis://127.0.0.1:6379";
const racingConnectionCount = 5;
const racingCallCount = 50;

const connections: Redis[] = [];
const directories: RedisDirectory[] = [];

function uniqueNamespace(): string {
  return `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

/** A directory over a fresh namespace; every one is destroyed in afterAll. */
function freshDirectory(connection?: Redis): { directory: RedisDirectory; namespace: string } {
  const namespace = uniqueNamespace();
  const directory = new RedisDirectory(connection ?? firstConnection(), namespace);
  directories.push(directory);
  return { directory, namespace };
}

function firstConnection(): Redis {
  const connection = connections[0];
  if (connection === undefined) throw new Error("no Redis connection");
  return connection;
}

async function keysOf(namespace: string): Promise<string[]> {
  return firstConnection().keys(`${redisPrefix(namespace)}*`);
}

/** Conversation ids are `g-` and 22 base64url characters. */
function conversationIdFor(index: number): string {
  return `g-${index.toString().padStart(22, "0")}`;
}

beforeAll(async () => {
  for (let index = 0; index < racingConnectionCount; index++) {
    const connection = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await connection.connect();
    connections.push(connection);
  }
});

afterAll(async () => {
  for (const directory of directories) await directory.destroyNamespace();
  await Promise.all(connections.map((connection) => connection.quit()));
});

describe("cell registry", () => {
  it("registers cells as active, lists them sorted, and keeps the state on re-registration", async () => {
    const { directory, namespace } = freshDirectory();
    expect(await directory.listCells()).toEqual([]);
    const registered = await directory.registerCell("b", 3);
    expect(registered).toEqual({ ok: true, cells: [{ cellId: "b", weight: 3, state: "active" }] });
    await directory.registerCell("a", 1);
    expect(await directory.listCells()).toEqual([
      { cellId: "a", weight: 1, state: "active" },
      { cellId: "b", weight: 3, state: "active" },
    ]);
    // An operator drains cell b by hand; registering it again changes its weight, not its state.
    await firstConnection().hset(`${redisPrefix(namespace)}cells`, "b", JSON.stringify({ weight: 3, state: "draining" }));
    const refreshed = await directory.registerCell("b", 7);
    expect(refreshed.ok && refreshed.cells).toEqual([
      { cellId: "a", weight: 1, state: "active" },
      { cellId: "b", weight: 7, state: "draining" },
    ]);
  });

  it("reports a registry value that does not decode as a DirectoryStoreError", async () => {
    const { directory, namespace } = freshDirectory();
    await firstConnection().hset(`${redisPrefix(namespace)}cells`, "a", "{not json");
    await expect(directory.listCells()).rejects.toBeInstanceOf(DirectoryStoreError);
  });
});

describe("user placement", () => {
  it("places a new user once when many callers race on several connections", async () => {
    const namespace = uniqueNamespace();
    const racers = connections.map((connection) => new RedisDirectory(connection, namespace));
    const [first] = racers;
    if (first === undefined) throw new Error("no racer");
    directories.push(first);
    for (const cellId of ["a", "b", "c", "d"]) await first.registerCell(cellId, 1);

    // Spread randoms over [0, 1): were placement not atomic, the callers would pick different cells.
    const results = await Promise.all(
      Array.from({ length: racingCallCount }, (_, index) => {
        const racer = racers[index % racers.length];
        if (racer === undefined) throw new Error("no racer");
        return racer.resolveUser("racer_1", index / racingCallCount);
      }),
    );
    const entries = results.map((result) => {
      if (!result.ok) throw new Error(`unexpected refusal ${result.code}`);
      return result;
    });
    expect(entries.filter((result) => result.placed)).toHaveLength(1);
    const cellIds = new Set(entries.map((result) => result.entry.cellId));
    expect(cellIds.size).toBe(1);
    for (const result of entries) expect(result.entry).toMatchObject({ kind: "user", id: "racer_1", epoch: 1 });
  });

  it("splits users by weight, as a function of the random number alone", async () => {
    const { directory } = freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 3);
    const userCount = 400;
    const counts = new Map<string, number>();
    for (let index = 0; index < userCount; index++) {
      const result = await directory.resolveUser(`user_${index}`, (index + 0.5) / userCount);
      if (!result.ok) throw new Error(`unexpected refusal ${result.code}`);
      expect(result.placed).toBe(true);
      counts.set(result.entry.cellId, (counts.get(result.entry.cellId) ?? 0) + 1);
    }
    // Evenly spread randoms make the split exact: a takes [0, 1/4) of the range, b the rest.
    expect(Object.fromEntries(counts)).toEqual({ a: 100, b: 300 });
  });

  it("never places on a draining cell", async () => {
    const { directory, namespace } = freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1000);
    await firstConnection().hset(`${redisPrefix(namespace)}cells`, "b", JSON.stringify({ weight: 1000, state: "draining" }));
    for (const random of [0, 0.3, 0.6, 0.999]) {
      const result = await directory.resolveUser(`user_${String(random).replace(".", "_")}`, random);
      expect(result.ok && result.entry.cellId).toBe("a");
    }
  });

  it("returns an existing user unchanged", async () => {
    const { directory } = freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    const placed = await directory.resolveUser("alice", 0.9);
    expect(placed).toEqual({ ok: true, placed: true, entry: { kind: "user", id: "alice", cellId: "b", epoch: 1 } });
    const again = await directory.resolveUser("alice", 0.1);
    expect(again).toEqual({ ok: true, placed: false, entry: { kind: "user", id: "alice", cellId: "b", epoch: 1 } });
  });

  it("answers no_cell_available when no active cell is registered", async () => {
    const { directory, namespace } = freshDirectory();
    expect(await directory.resolveUser("alice", 0.5)).toMatchObject({ ok: false, code: "no_cell_available" });
    expect(await keysOf(namespace)).toEqual([]);
  });

  it("assigns a user to a registered cell once, and refuses an unknown cell", async () => {
    const { directory, namespace } = freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    expect(await directory.assignUser("bob", "zz")).toMatchObject({ ok: false, code: "unknown_cell" });
    expect(await keysOf(namespace)).toEqual([`${redisPrefix(namespace)}cells`]);
    expect(await directory.assignUser("bob", "b")).toEqual({ ok: true, placed: true, entry: { kind: "user", id: "bob", cellId: "b", epoch: 1 } });
    expect(await directory.assignUser("bob", "a")).toEqual({ ok: true, placed: false, entry: { kind: "user", id: "bob", cellId: "b", epoch: 1 } });
  });
});

describe("conversation placement", () => {
  it("looks up an unknown conversation as undefined, then finds it once placed", async () => {
    const { directory } = freshDirectory();
    await directory.registerCell("a", 1);
    expect(await directory.lookupConversation(conversationIdFor(1))).toBeUndefined();
    await directory.placeConversation(conversationIdFor(1), "a", 0.5);
    expect(await directory.lookupConversation(conversationIdFor(1))).toEqual({ kind: "conversation", id: conversationIdFor(1), cellId: "a", epoch: 1 });
  });

  it("honours an active preferred cell whatever the weights, and keeps an existing entry", async () => {
    const { directory } = freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1000);
    for (let index = 0; index < 20; index++) {
      const result = await directory.placeConversation(conversationIdFor(index), "a", index / 20);
      expect(result).toMatchObject({ ok: true, placed: true, entry: { cellId: "a" } });
    }
    const again = await directory.placeConversation(conversationIdFor(0), "b", 0.5);
    expect(again).toMatchObject({ ok: true, placed: false, entry: { cellId: "a", epoch: 1 } });
  });

  it("falls back to a weighted pick when the preferred cell is unknown or draining", async () => {
    const { directory, namespace } = freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    await firstConnection().hset(`${redisPrefix(namespace)}cells`, "b", JSON.stringify({ weight: 1, state: "draining" }));
    expect(await directory.placeConversation(conversationIdFor(1), "zz", 0.99)).toMatchObject({ ok: true, entry: { cellId: "a" } });
    expect(await directory.placeConversation(conversationIdFor(2), "b", 0.99)).toMatchObject({ ok: true, entry: { cellId: "a" } });
  });

  it("answers no_cell_available without cells, even with a preferred cell", async () => {
    const { directory } = freshDirectory();
    expect(await directory.placeConversation(conversationIdFor(1), "a", 0.5)).toMatchObject({ ok: false, code: "no_cell_available" });
    expect(await directory.lookupConversation(conversationIdFor(1))).toBeUndefined();
  });

  it("reports an entry that does not decode as a DirectoryStoreError", async () => {
    const { directory, namespace } = freshDirectory();
    await firstConnection().hset(`${redisPrefix(namespace)}conversation:${conversationIdFor(1)}`, "cellId", "a", "epoch", "soon");
    await expect(directory.lookupConversation(conversationIdFor(1))).rejects.toBeInstanceOf(DirectoryStoreError);
  });
});

describe("destroyNamespace", () => {
  it("unlinks every key of its namespace and none of another", async () => {
    const doomed = freshDirectory();
    const kept = freshDirectory();
    for (const { directory } of [doomed, kept]) {
      await directory.registerCell("a", 1);
      for (let index = 0; index < 30; index++) await directory.resolveUser(`user_${index}`, 0);
    }
    expect(await doomed.directory.destroyNamespace()).toBe(31);
    expect(await keysOf(doomed.namespace)).toEqual([]);
    expect(await keysOf(kept.namespace)).toHaveLength(31);
  });
});
