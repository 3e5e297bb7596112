// RedisDirectory against the machine's real Redis (127.0.0.1:6379), each test in its own namespace.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { redisPrefix } from "@cellwire/protocol";
import { DirectoryStoreError } from "./errors.ts";
import { RedisDirectory, type MoveEntryInput, type RedisDirectoryOptions } from "./redis-directory.ts";

const redisUrl = "redis://127.0.0.1:6379";
const racingConnectionCount = 5;
const racingCallCount = 50;

const connections: Redis[] = [];
const directories: RedisDirectory[] = [];

function uniqueNamespace(): string {
  return `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * A directory over a fresh namespace, its data marked complete as a first start's rebuild leaves it (most
 * tests are about serving, not about forgetting); every one is destroyed in afterAll.
 */
async function freshDirectory(
  options: RedisDirectoryOptions & { readonly complete?: boolean } = {},
): Promise<{ directory: RedisDirectory; namespace: string }> {
  const namespace = uniqueNamespace();
  const directory = new RedisDirectory(firstConnection(), namespace, options);
  directories.push(directory);
  if (options.complete ?? true) await markComplete(directory);
  return { directory, namespace };
}

/** Writes the generation marker the way a rebuild does: under the lock, then releasing it. */
async function markComplete(directory: RedisDirectory): Promise<void> {
  const token = `test-${Math.random().toString(36).slice(2)}`;
  if (!(await directory.lockRebuild(token, 10_000))) throw new Error("the rebuild lock is taken");
  if (!(await directory.rebuildLock(token, 10_000, { kind: "complete", generation: "test" }))) throw new Error("the rebuild lock was lost");
}

function firstConnection(): Redis {
  const connection = connections[0];
  if (connection === undefined) throw new Error("no Redis connection");
  return connection;
}

/** The namespace's keys but its generation marker (which every fresh directory here has). */
async function keysOf(namespace: string): Promise<string[]> {
  return (await firstConnection().keys(`${redisPrefix(namespace)}*`)).filter((key) => key !== `${redisPrefix(namespace)}generation`);
}

/** The members of a cell's set, read straight from Redis, sorted. */
async function cellSet(namespace: string, cellId: string, kind: "users" | "conversations"): Promise<string[]> {
  return (await firstConnection().smembers(`${redisPrefix(namespace)}cell:${cellId}:${kind}`)).sort();
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
    const { directory, namespace } = await freshDirectory();
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
    const { directory, namespace } = await freshDirectory();
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
    await markComplete(first);
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
    const { directory } = await freshDirectory();
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
    const { directory, namespace } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1000);
    await firstConnection().hset(`${redisPrefix(namespace)}cells`, "b", JSON.stringify({ weight: 1000, state: "draining" }));
    for (const random of [0, 0.3, 0.6, 0.999]) {
      const result = await directory.resolveUser(`user_${String(random).replace(".", "_")}`, random);
      expect(result.ok && result.entry.cellId).toBe("a");
    }
  });

  it("returns an existing user unchanged", async () => {
    const { directory } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    const placed = await directory.resolveUser("alice", 0.9);
    expect(placed).toEqual({ ok: true, placed: true, entry: { kind: "user", id: "alice", cellId: "b", epoch: 1 } });
    const again = await directory.resolveUser("alice", 0.1);
    expect(again).toEqual({ ok: true, placed: false, entry: { kind: "user", id: "alice", cellId: "b", epoch: 1 } });
  });

  it("answers no_cell_available when no active cell is registered", async () => {
    const { directory, namespace } = await freshDirectory();
    expect(await directory.resolveUser("alice", 0.5)).toMatchObject({ ok: false, code: "no_cell_available" });
    expect(await keysOf(namespace)).toEqual([]);
  });

  it("assigns a user to a registered cell once, and refuses an unknown cell", async () => {
    const { directory, namespace } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    expect(await directory.assignUser("bob", "zz")).toMatchObject({ ok: false, code: "unknown_cell" });
    expect(await keysOf(namespace)).toEqual([`${redisPrefix(namespace)}cells`]);
    expect(await directory.assignUser("bob", "b")).toEqual({
      ok: true,
      placed: true,
      entry: { kind: "user", id: "bob", cellId: "b", epoch: 1 },
    });
    expect(await directory.assignUser("bob", "a")).toEqual({
      ok: true,
      placed: false,
      entry: { kind: "user", id: "bob", cellId: "b", epoch: 1 },
    });
  });
});

describe("user placements in one call (resolveUsers)", () => {
  it("answers as resolveUser one by one would: by weight, a user named twice placed once, existing users as they are", async () => {
    const together = await freshDirectory();
    const alone = await freshDirectory();
    for (const { directory } of [together, alone]) {
      await directory.registerCell("a", 1);
      await directory.registerCell("b", 3);
      await directory.registerCell("c", 2);
      await directory.setCellState("c", "draining");
      expect(await directory.resolveUser("known", 0.1)).toMatchObject({ ok: true, placed: true, entry: { cellId: "a" } });
    }
    const users = [
      ...Array.from({ length: 40 }, (_, index) => ({ userId: `user_${index}`, random: (index + 0.5) / 40 })),
      { userId: "known", random: 0.99 },
      { userId: "user_3", random: 0.99 },
    ];
    const batch = await together.directory.resolveUsers(users);
    const oneByOne = [];
    for (const { userId, random } of users) oneByOne.push(await alone.directory.resolveUser(userId, random));
    expect(batch).toEqual(oneByOne);
    const cells = batch.map((result) => (result.ok ? `${result.entry.cellId}${result.placed ? "" : " (existing)"}` : result.code));
    expect(cells.slice(0, 40).filter((cell) => cell === "a")).toHaveLength(10);
    expect(cells.slice(0, 40).filter((cell) => cell === "b")).toHaveLength(30);
    expect(cells.slice(40)).toEqual(["a (existing)", `${cells[3] ?? ""} (existing)`]);
    expect((await cellSet(together.namespace, "b", "users")).sort()).toEqual((await cellSet(alone.namespace, "b", "users")).sort());
    expect(await together.directory.resolveUsers([])).toEqual([]);
  });

  it("refuses new users alone when no cell is active or the store forgot, answering the users it holds", async () => {
    let forgotten = 0;
    const { directory, namespace } = await freshDirectory({ forgotten: () => forgotten++ });
    expect(await directory.resolveUsers([{ userId: "early", random: 0.5 }])).toEqual([
      { ok: false, code: "no_cell_available", message: "no active cell is registered to place user early" },
    ]);
    await directory.registerCell("a", 1);
    expect(await directory.assignUser("alice", "a")).toMatchObject({ ok: true, placed: true });
    await firstConnection().del(`${redisPrefix(namespace)}generation`);
    const results = await directory.resolveUsers([
      { userId: "bob", random: 0 },
      { userId: "alice", random: 0.5 },
    ]);
    expect(results).toEqual([
      expect.objectContaining({ ok: false, code: "directory_unavailable" }),
      { ok: true, placed: false, entry: { kind: "user", id: "alice", cellId: "a", epoch: 1 } },
    ]);
    expect(forgotten).toBe(1);
    expect(await directory.lookupUser("bob")).toBeUndefined();
    await expect(directory.resolveUsers([{ userId: "bad.id", random: 0 }])).rejects.toThrow(TypeError);
  });
});

describe("conversation placement", () => {
  it("looks up an unknown conversation as undefined, then finds it once placed", async () => {
    const { directory } = await freshDirectory();
    await directory.registerCell("a", 1);
    expect(await directory.lookupConversation(conversationIdFor(1))).toBeUndefined();
    await directory.placeConversation(conversationIdFor(1), "a", 0.5);
    expect(await directory.lookupConversation(conversationIdFor(1))).toEqual({
      kind: "conversation",
      id: conversationIdFor(1),
      cellId: "a",
      epoch: 1,
    });
  });

  it("honours an active preferred cell whatever the weights, and keeps an existing entry", async () => {
    const { directory } = await freshDirectory();
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
    const { directory, namespace } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    await firstConnection().hset(`${redisPrefix(namespace)}cells`, "b", JSON.stringify({ weight: 1, state: "draining" }));
    expect(await directory.placeConversation(conversationIdFor(1), "zz", 0.99)).toMatchObject({ ok: true, entry: { cellId: "a" } });
    expect(await directory.placeConversation(conversationIdFor(2), "b", 0.99)).toMatchObject({ ok: true, entry: { cellId: "a" } });
  });

  it("answers no_cell_available without cells, even with a preferred cell", async () => {
    const { directory } = await freshDirectory();
    expect(await directory.placeConversation(conversationIdFor(1), "a", 0.5)).toMatchObject({ ok: false, code: "no_cell_available" });
    expect(await directory.lookupConversation(conversationIdFor(1))).toBeUndefined();
  });

  it("reports an entry that does not decode as a DirectoryStoreError", async () => {
    const { directory, namespace } = await freshDirectory();
    await firstConnection().hset(`${redisPrefix(namespace)}conversation:${conversationIdFor(1)}`, "cellId", "a", "epoch", "soon");
    await expect(directory.lookupConversation(conversationIdFor(1))).rejects.toBeInstanceOf(DirectoryStoreError);
  });
});

describe("destroyNamespace", () => {
  it("unlinks every key of its namespace and none of another", async () => {
    const doomed = await freshDirectory();
    const kept = await freshDirectory();
    for (const { directory } of [doomed, kept]) {
      await directory.registerCell("a", 1);
      for (let index = 0; index < 30; index++) await directory.resolveUser(`user_${index}`, 0);
    }
    // 30 entries, the registry, cell a's set of users and the generation marker.
    expect(await doomed.directory.destroyNamespace()).toBe(33);
    expect(await keysOf(doomed.namespace)).toEqual([]);
    expect(await keysOf(kept.namespace)).toHaveLength(32);
  });
});

describe("a store that forgot (no generation marker)", () => {
  it("places nobody and moves nothing, retryably, and says so; lookups that hit and registrations still work", async () => {
    let forgotten = 0;
    const { directory, namespace } = await freshDirectory({ forgotten: () => forgotten++ });
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    expect(await directory.assignUser("alice", "a")).toMatchObject({ ok: true, placed: true });
    // What a Redis restarted without persistence does to the marker (the entries go with it in real life).
    await firstConnection().del(`${redisPrefix(namespace)}generation`);

    const refused = { ok: false, code: "directory_unavailable" };
    expect(await directory.resolveUser("bob", 0)).toMatchObject(refused);
    expect(await directory.assignUser("bob", "b")).toMatchObject(refused);
    expect(await directory.placeConversation("d-AAAAAAAAAAAAAAAAAAAAAA", "a", 0)).toMatchObject(refused);
    expect(await directory.moveEntry({ kind: "user", id: "alice", fromCellId: "a", toCellId: "b", expectedEpoch: 1 })).toMatchObject(
      refused,
    );
    expect(forgotten).toBe(4);
    expect(await directory.lookupUser("bob")).toBeUndefined();
    expect(await cellSet(namespace, "b", "users")).toEqual([]);
    // An entry still there is answered as it is, by lookups and placements alike: nothing new is written.
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "a", epoch: 1 });
    expect(await directory.resolveUser("alice", 0.99)).toMatchObject({ ok: true, placed: false, entry: { cellId: "a" } });
    expect((await directory.registerCell("c", 2)).ok).toBe(true);
    expect(forgotten).toBe(4);

    await markComplete(directory);
    expect(await directory.resolveUser("bob", 0.99)).toMatchObject({ ok: true, placed: true });
  });

  it("lets one rebuilder at a time hold the lock, writes only missing entries, and completes only with the lock", async () => {
    const { directory, namespace } = await freshDirectory({ complete: false });
    await directory.registerCell("a", 1);
    expect(await directory.generation()).toBeUndefined();
    expect(await directory.lockRebuild("first", 10_000)).toBe(true);
    expect(await directory.lockRebuild("second", 10_000)).toBe(false);
    expect(await directory.writeRebuiltEntries("second", 10_000, [{ kind: "user", id: "alice", cellId: "a", epoch: 1 }])).toBe(false);
    expect(await directory.lookupUser("alice")).toBeUndefined();

    expect(
      await directory.writeRebuiltEntries("first", 10_000, [
        { kind: "user", id: "alice", cellId: "a", epoch: 3 },
        { kind: "conversation", id: "d-AAAAAAAAAAAAAAAAAAAAAA", cellId: "a", epoch: 1 },
      ]),
    ).toBe(2);
    // A second write of an entry that exists keeps the one there.
    expect(await directory.writeRebuiltEntries("first", 10_000, [{ kind: "user", id: "alice", cellId: "b", epoch: 9 }])).toBe(0);
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "a", epoch: 3 });
    expect(await cellSet(namespace, "a", "users")).toEqual(["alice"]);
    expect(await cellSet(namespace, "a", "conversations")).toEqual(["d-AAAAAAAAAAAAAAAAAAAAAA"]);

    expect(await directory.rebuildLock("second", 10_000, { kind: "complete", generation: "g2" })).toBe(false);
    expect(await directory.generation()).toBeUndefined();
    expect(await directory.rebuildLock("first", 10_000, { kind: "complete", generation: "g1" })).toBe(true);
    expect(await directory.generation()).toBe("g1");
    // The lock went with the completion: the next rebuild (after another loss) can take it.
    expect(await directory.lockRebuild("second", 10_000)).toBe(true);
  });
});

describe("replica acknowledgements (WAIT)", () => {
  it("answers a placement or move that too few replicas hold directory_unavailable; the retry finds the entry", async () => {
    // The machine's Redis has no replicas: WAIT for one times out with 0.
    const { directory } = await freshDirectory({ replicaAcksMin: 1, replicaWaitMs: 50 });
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    const refused = await directory.assignUser("alice", "a");
    expect(refused).toMatchObject({
      ok: false,
      code: "directory_unavailable",
      message: expect.stringContaining("0 of the 1 Redis replicas"),
    });
    expect(await directory.assignUser("alice", "b")).toMatchObject({ ok: true, placed: false, entry: { cellId: "a" } });
    expect(await directory.moveEntry({ kind: "user", id: "alice", fromCellId: "a", toCellId: "b", expectedEpoch: 1 })).toMatchObject({
      ok: false,
      code: "directory_unavailable",
    });
    expect(await directory.lookupUser("alice")).toMatchObject({ cellId: "b", epoch: 2 });
  });
});

describe("per-cell sets", () => {
  it("every placement adds the id to its cell's set of its kind, and an existing entry changes no set", async () => {
    const { directory, namespace } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    await directory.resolveUser("alice", 0.1);
    await directory.resolveUser("bob", 0.9);
    await directory.assignUser("carol", "a");
    await directory.placeConversation(conversationIdFor(1), "b", 0.1);
    await directory.placeConversation(conversationIdFor(2), "zz", 0.1);
    // Repeats keep the first placement, so the sets must not grow on them.
    await directory.resolveUser("alice", 0.9);
    await directory.assignUser("bob", "a");
    expect(await cellSet(namespace, "a", "users")).toEqual(["alice", "carol"]);
    expect(await cellSet(namespace, "b", "users")).toEqual(["bob"]);
    expect(await cellSet(namespace, "a", "conversations")).toEqual([conversationIdFor(2)]);
    expect(await cellSet(namespace, "b", "conversations")).toEqual([conversationIdFor(1)]);
  });

  it("a refused placement adds to no set", async () => {
    const { directory, namespace } = await freshDirectory();
    expect(await directory.resolveUser("alice", 0.5)).toMatchObject({ ok: false });
    await directory.registerCell("a", 1);
    expect(await directory.assignUser("alice", "zz")).toMatchObject({ ok: false, code: "unknown_cell" });
    expect(await keysOf(namespace)).toEqual([`${redisPrefix(namespace)}cells`]);
  });
});

describe("moveEntry", () => {
  async function twoCellsWithAlice(): Promise<{ directory: RedisDirectory; namespace: string }> {
    const fresh = await freshDirectory();
    await fresh.directory.registerCell("a", 1);
    await fresh.directory.registerCell("b", 1);
    await fresh.directory.assignUser("alice", "a");
    return fresh;
  }
  const aliceToB: MoveEntryInput = { kind: "user", id: "alice", fromCellId: "a", toCellId: "b", expectedEpoch: 1 };

  it("flips the entry to the target with the next epoch and moves the id between the cells' sets", async () => {
    const { directory, namespace } = await twoCellsWithAlice();
    await directory.assignUser("bob", "a");
    expect(await directory.moveEntry(aliceToB)).toEqual({
      ok: true,
      moved: true,
      entry: { kind: "user", id: "alice", cellId: "b", epoch: 2 },
    });
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "b", epoch: 2 });
    expect(await cellSet(namespace, "a", "users")).toEqual(["bob"]);
    expect(await cellSet(namespace, "b", "users")).toEqual(["alice"]);
    // And back again, from the new epoch.
    const back = await directory.moveEntry({ ...aliceToB, fromCellId: "b", toCellId: "a", expectedEpoch: 2 });
    expect(back).toEqual({ ok: true, moved: true, entry: { kind: "user", id: "alice", cellId: "a", epoch: 3 } });
    expect(await cellSet(namespace, "a", "users")).toEqual(["alice", "bob"]);
    expect(await cellSet(namespace, "b", "users")).toEqual([]);
  });

  it("moves conversations between the conversation sets", async () => {
    const { directory, namespace } = await twoCellsWithAlice();
    await directory.placeConversation(conversationIdFor(7), "a", 0);
    const result = await directory.moveEntry({
      kind: "conversation",
      id: conversationIdFor(7),
      fromCellId: "a",
      toCellId: "b",
      expectedEpoch: 1,
    });
    expect(result).toMatchObject({ ok: true, moved: true, entry: { cellId: "b", epoch: 2 } });
    expect(await cellSet(namespace, "a", "conversations")).toEqual([]);
    expect(await cellSet(namespace, "b", "conversations")).toEqual([conversationIdFor(7)]);
    expect(await cellSet(namespace, "a", "users")).toEqual(["alice"]);
  });

  it("answers a repeated move with the entry unchanged, even after the target began draining", async () => {
    const { directory, namespace } = await twoCellsWithAlice();
    await directory.moveEntry(aliceToB);
    const repeat = await directory.moveEntry(aliceToB);
    expect(repeat).toEqual({ ok: true, moved: false, entry: { kind: "user", id: "alice", cellId: "b", epoch: 2 } });
    await directory.setCellState("b", "draining");
    expect(await directory.moveEntry(aliceToB)).toEqual(repeat);
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "b", epoch: 2 });
    expect(await cellSet(namespace, "b", "users")).toEqual(["alice"]);
  });

  it("answers entry_changed for a stale epoch or a wrong source cell, and changes nothing", async () => {
    const { directory, namespace } = await twoCellsWithAlice();
    await directory.registerCell("c", 1);
    await directory.moveEntry(aliceToB);
    // Epoch 1 is stale now: b to c must name epoch 2.
    expect(await directory.moveEntry({ ...aliceToB, fromCellId: "b", toCellId: "c", expectedEpoch: 1 })).toMatchObject({
      ok: false,
      code: "entry_changed",
    });
    // The entry is on b, not a.
    expect(await directory.moveEntry({ ...aliceToB, fromCellId: "a", toCellId: "c", expectedEpoch: 2 })).toMatchObject({
      ok: false,
      code: "entry_changed",
    });
    // On the target, but not at the epoch this move would have written: another move won.
    expect(await directory.moveEntry({ ...aliceToB, expectedEpoch: 5 })).toMatchObject({ ok: false, code: "entry_changed" });
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "b", epoch: 2 });
    expect(await cellSet(namespace, "b", "users")).toEqual(["alice"]);
    expect(await cellSet(namespace, "c", "users")).toEqual([]);
  });

  it("refuses an unknown entry, an unknown target and a draining target", async () => {
    const { directory, namespace } = await twoCellsWithAlice();
    expect(await directory.moveEntry({ ...aliceToB, id: "nobody" })).toMatchObject({ ok: false, code: "not_found" });
    expect(await directory.moveEntry({ ...aliceToB, toCellId: "zz" })).toMatchObject({ ok: false, code: "unknown_cell" });
    await directory.setCellState("b", "draining");
    expect(await directory.moveEntry(aliceToB)).toEqual({ ok: false, code: "invalid_field", message: "toCellId: cell b is draining" });
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "a", epoch: 1 });
    expect(await cellSet(namespace, "a", "users")).toEqual(["alice"]);
  });

  it("refuses a move onto the same cell and an id that does not fit its kind, before touching Redis", async () => {
    const { directory } = await twoCellsWithAlice();
    expect(await directory.moveEntry({ ...aliceToB, toCellId: "a" })).toMatchObject({ ok: false, code: "invalid_field" });
    expect(await directory.moveEntry({ ...aliceToB, kind: "conversation" })).toMatchObject({ ok: false, code: "invalid_field" });
    expect(await directory.lookupUser("alice")).toEqual({ kind: "user", id: "alice", cellId: "a", epoch: 1 });
  });

  it("puts an entry that predates the sets into the target's set", async () => {
    const { directory, namespace } = await twoCellsWithAlice();
    // Written as placement did before the per-cell sets existed: the entry alone.
    await firstConnection().hset(`${redisPrefix(namespace)}user:old_timer`, "cellId", "a", "epoch", "4");
    expect(await directory.moveEntry({ ...aliceToB, id: "old_timer", expectedEpoch: 4 })).toMatchObject({
      ok: true,
      entry: { cellId: "b", epoch: 5 },
    });
    expect(await cellSet(namespace, "b", "users")).toEqual(["old_timer"]);
  });
});

describe("setCellState", () => {
  it("sets and clears draining, keeps the weight, and answers the whole registry", async () => {
    const { directory } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 3);
    expect(await directory.setCellState("b", "draining")).toEqual({
      ok: true,
      cells: [
        { cellId: "a", weight: 1, state: "active" },
        { cellId: "b", weight: 3, state: "draining" },
      ],
    });
    expect(await directory.listCells()).toContainEqual({ cellId: "b", weight: 3, state: "draining" });
    const reactivated = await directory.setCellState("b", "active");
    expect(reactivated.ok && reactivated.cells).toContainEqual({ cellId: "b", weight: 3, state: "active" });
  });

  it("answers unknown_cell for a cell never registered and registers nothing", async () => {
    const { directory } = await freshDirectory();
    expect(await directory.setCellState("zz", "draining")).toMatchObject({ ok: false, code: "unknown_cell" });
    expect(await directory.listCells()).toEqual([]);
  });

  it("a drained cell gets no new entries until it is active again", async () => {
    const { directory } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1000);
    await directory.setCellState("b", "draining");
    for (const random of [0, 0.5, 0.999]) {
      const result = await directory.resolveUser(`user_${String(random).replace(".", "_")}`, random);
      expect(result.ok && result.entry.cellId).toBe("a");
    }
    expect(await directory.placeConversation(conversationIdFor(1), "b", 0.999)).toMatchObject({ ok: true, entry: { cellId: "a" } });
    await directory.setCellState("b", "active");
    expect(await directory.resolveUser("late_user", 0.999)).toMatchObject({ ok: true, entry: { cellId: "b" } });
  });
});

describe("cellEntries", () => {
  it("pages through 2,500 ids with small counts and sees each at least once, and only the cell's own", async () => {
    const { directory, namespace } = await freshDirectory();
    await directory.registerCell("a", 1);
    await directory.registerCell("b", 1);
    const userCount = 2_500;
    const expected = new Set<string>();
    // Sent together, so they share round trips on the one connection.
    const assignments: Promise<unknown>[] = [];
    for (let index = 0; index < userCount; index++) {
      expected.add(`user_${index}`);
      assignments.push(directory.assignUser(`user_${index}`, "a"));
    }
    await Promise.all(assignments);
    for (let index = 0; index < 10; index++) await directory.assignUser(`other_${index}`, "b");

    const seen = new Set<string>();
    let cursor = "0";
    let pageCount = 0;
    const pageCountMax = 10_000;
    do {
      const page = await directory.cellEntries("a", "user", cursor, 50);
      if (!page.ok) throw new Error(`unexpected refusal ${page.code}`);
      for (const id of page.ids) seen.add(id);
      cursor = page.cursor;
      pageCount++;
    } while (cursor !== "0" && pageCount < pageCountMax);
    expect(cursor).toBe("0");
    expect(pageCount).toBeGreaterThan(10);
    expect(seen).toEqual(expected);
    expect(await cellSet(namespace, "a", "users")).toHaveLength(userCount);
  });

  it("answers an empty last page for a registered cell without entries, and unknown_cell for an unregistered one", async () => {
    const { directory } = await freshDirectory();
    await directory.registerCell("a", 1);
    expect(await directory.cellEntries("a", "conversation", "0", 10)).toEqual({ ok: true, ids: [], cursor: "0" });
    expect(await directory.cellEntries("zz", "user", "0", 10)).toMatchObject({ ok: false, code: "unknown_cell" });
  });

  it("reports an id in a set that does not fit its kind as a DirectoryStoreError", async () => {
    const { directory, namespace } = await freshDirectory();
    await directory.registerCell("a", 1);
    await firstConnection().sadd(`${redisPrefix(namespace)}cell:a:conversations`, "not-a-conversation");
    await expect(directory.cellEntries("a", "conversation", "0", 10)).rejects.toBeInstanceOf(DirectoryStoreError);
  });
});
