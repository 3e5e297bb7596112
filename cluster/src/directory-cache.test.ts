import { describe, expect, it } from "vitest";
import type { DirectoryEntry } from "@cellwire/protocol";
import { DirectoryCache, directoryFetchesInFlightMax, type DirectoryCacheOptions } from "./directory-cache.ts";

class ManualClock {
  nowMs = 1_000;
  readonly read = (): number => this.nowMs;
}

function userEntry(id: string, cellId: string, epoch: number): DirectoryEntry {
  return { kind: "user", id, cellId, epoch };
}

/** A promise with its settlers, so a test decides when a fetch answers. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((resolvePromise, rejectPromise) => {
    resolve = resolvePromise;
    reject = rejectPromise;
  });
  return { promise, resolve, reject };
}

/** A cache with the edge's options unless told otherwise. */
function newCache(
  entriesMax: number,
  ttlMs: number,
  nowMs: () => number,
  fetchesInFlightMax = directoryFetchesInFlightMax,
  changesOfUncachedKeys: DirectoryCacheOptions["changesOfUncachedKeys"] = "ignore",
): DirectoryCache {
  return new DirectoryCache({ entriesMax, ttlMs, nowMs, fetchesInFlightMax, changesOfUncachedKeys });
}

describe("DirectoryCache", () => {
  it("makes one fetch for concurrent misses of one key and gives every caller its answer", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const answer = deferred<DirectoryEntry | undefined>();
    const fetched: string[] = [];
    const fetch = (key: string): Promise<DirectoryEntry | undefined> => {
      fetched.push(key);
      return answer.promise;
    };
    const callers = [cache.get("user:alice", fetch), cache.get("user:alice", fetch), cache.get("user:alice", fetch)];
    expect(fetched).toEqual(["user:alice"]);
    answer.resolve(userEntry("alice", "a", 1));
    for (const entry of await Promise.all(callers)) expect(entry).toEqual(userEntry("alice", "a", 1));
    // Now cached: no further fetch.
    expect(await cache.get("user:alice", fetch)).toEqual(userEntry("alice", "a", 1));
    expect(fetched).toEqual(["user:alice"]);
  });

  it("fetches different keys separately", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const fetched: string[] = [];
    const fetch = async (key: string): Promise<DirectoryEntry | undefined> => {
      fetched.push(key);
      return userEntry(key.slice("user:".length), "a", 1);
    };
    await Promise.all([cache.get("user:alice", fetch), cache.get("user:bob", fetch)]);
    expect(fetched.sort()).toEqual(["user:alice", "user:bob"]);
  });

  it("has at most fetchesInFlightMax fetches in flight; further misses wait their turn, in order, and all are answered", async () => {
    const cache = newCache(100, 60_000, new ManualClock().read, 2);
    const answers = new Map<string, ReturnType<typeof deferred<DirectoryEntry | undefined>>>();
    const started: string[] = [];
    const fetch = (key: string): Promise<DirectoryEntry | undefined> => {
      started.push(key);
      const answer = deferred<DirectoryEntry | undefined>();
      answers.set(key, answer);
      return answer.promise;
    };
    const keys = ["user:u1", "user:u2", "user:u3", "user:u4", "user:u5"];
    const results = Promise.all(keys.map((key) => cache.get(key, fetch)));
    const settle = async (key: string): Promise<void> => {
      answers.get(key)?.resolve(userEntry(key.slice("user:".length), "a", 1));
      // Let the limiter hand the slot over.
      for (let turn = 0; turn < 5; turn++) await Promise.resolve();
    };
    await settle("none");
    expect(started).toEqual(["user:u1", "user:u2"]);
    await settle("user:u2");
    expect(started).toEqual(["user:u1", "user:u2", "user:u3"]);
    await settle("user:u1");
    await settle("user:u3");
    expect(started).toEqual(keys);
    await settle("user:u4");
    await settle("user:u5");
    expect((await results).map((entry) => entry?.id)).toEqual(["u1", "u2", "u3", "u4", "u5"]);
    // A miss of a key being fetched joins that fetch, whatever the bound.
    await expect(cache.get("user:u1", fetch)).resolves.toMatchObject({ id: "u1" });
  });

  it("does not cache a failed fetch: every concurrent caller sees the failure and the next call fetches again", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    let calls = 0;
    const failing = async (): Promise<DirectoryEntry | undefined> => {
      calls++;
      throw new Error("directory down");
    };
    const first = cache.get("user:alice", failing);
    const second = cache.get("user:alice", failing);
    await expect(first).rejects.toThrow("directory down");
    await expect(second).rejects.toThrow("directory down");
    expect(calls).toBe(1);
    expect(cache.size).toBe(0);

    const entry = await cache.get("user:alice", async () => {
      calls++;
      return userEntry("alice", "b", 1);
    });
    expect(entry?.cellId).toBe("b");
    expect(calls).toBe(2);
  });

  it("does not cache an absent entry: a conversation created later is found", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    let exists = false;
    let calls = 0;
    const fetch = async (): Promise<DirectoryEntry | undefined> => {
      calls++;
      return exists ? { kind: "conversation", id: "g-AAAAAAAAAAAAAAAAAAAAAA", cellId: "a", epoch: 1 } : undefined;
    };
    expect(await cache.get("conversation:g-AAAAAAAAAAAAAAAAAAAAAA", fetch)).toBeUndefined();
    exists = true;
    expect((await cache.get("conversation:g-AAAAAAAAAAAAAAAAAAAAAA", fetch))?.cellId).toBe("a");
    expect(calls).toBe(2);
  });

  it("never lets an older epoch replace a newer cached entry", () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember("user:alice", userEntry("alice", "b", 5));
    cache.remember("user:alice", userEntry("alice", "a", 4));
    return expect(cache.get("user:alice", () => Promise.reject(new Error("must not fetch")))).resolves.toEqual(userEntry("alice", "b", 5));
  });

  it("lets a newer epoch replace an older one", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember("user:alice", userEntry("alice", "a", 4));
    cache.remember("user:alice", userEntry("alice", "b", 5));
    expect(await cache.get("user:alice", () => Promise.reject(new Error("must not fetch")))).toEqual(userEntry("alice", "b", 5));
  });

  it("keeps a newer entry learnt while a slower fetch of an older epoch was in flight", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const slow = deferred<DirectoryEntry | undefined>();
    const pending = cache.get("user:alice", () => slow.promise);
    cache.remember("user:alice", userEntry("alice", "b", 7));
    slow.resolve(userEntry("alice", "a", 6));
    await pending;
    expect(await cache.get("user:alice", () => Promise.reject(new Error("must not fetch")))).toEqual(userEntry("alice", "b", 7));
  });

  it("fetches again once the cached entry is ttlMs old", async () => {
    const clock = new ManualClock();
    const cache = newCache(10, 1000, clock.read);
    let epoch = 0;
    const fetch = async (): Promise<DirectoryEntry | undefined> => userEntry("alice", "a", ++epoch);
    expect((await cache.get("user:alice", fetch))?.epoch).toBe(1);
    clock.nowMs += 999;
    expect((await cache.get("user:alice", fetch))?.epoch).toBe(1);
    clock.nowMs += 1;
    expect((await cache.get("user:alice", fetch))?.epoch).toBe(2);
  });

  it("fetches a forgotten key again", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    let calls = 0;
    const fetch = async (): Promise<DirectoryEntry | undefined> => userEntry("alice", "a", ++calls);
    await cache.get("user:alice", fetch);
    cache.forget("user:alice");
    expect((await cache.get("user:alice", fetch))?.epoch).toBe(2);
  });

  it("stays within entriesMax", async () => {
    const cache = newCache(3, 60_000, new ManualClock().read);
    for (let index = 0; index < 10; index++) {
      await cache.get(`user:u${index}`, async (key) => userEntry(key.slice("user:".length), "a", 1));
    }
    expect(cache.size).toBe(3);
  });
});

describe("DirectoryCache lookups", () => {
  it("tells each lookup's result: a fresh entry is a hit; a fetch, a joined fetch and an aged entry are misses", async () => {
    const clock = new ManualClock();
    const results: string[] = [];
    const cache = new DirectoryCache({
      entriesMax: 10,
      ttlMs: 1000,
      nowMs: clock.read,
      fetchesInFlightMax: directoryFetchesInFlightMax,
      changesOfUncachedKeys: "ignore",
      onLookup: (result) => results.push(result),
    });
    const answer = deferred<DirectoryEntry | undefined>();
    const fetch = (): Promise<DirectoryEntry | undefined> => answer.promise;
    const first = cache.get("user:alice", fetch);
    const joined = cache.get("user:alice", fetch);
    answer.resolve(userEntry("alice", "a", 1));
    await Promise.all([first, joined]);
    await cache.get("user:alice", fetch);
    clock.nowMs += 1000;
    await cache.get("user:alice", () => Promise.resolve(userEntry("alice", "a", 1)));
    expect(results).toEqual(["miss", "miss", "hit", "miss"]);
  });
});

describe("DirectoryCache and moves", () => {
  const mustNotFetch = (): Promise<DirectoryEntry | undefined> => Promise.reject(new Error("must not fetch"));

  it("takes a published change that is newer than the held entry", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember("user:alice", userEntry("alice", "a", 1));
    cache.changed(userEntry("alice", "b", 2));
    expect(await cache.get("user:alice", mustNotFetch)).toEqual(userEntry("alice", "b", 2));
  });

  it("ignores a published change older than the held entry", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember("user:alice", userEntry("alice", "c", 3));
    cache.changed(userEntry("alice", "b", 2));
    expect(await cache.get("user:alice", mustNotFetch)).toEqual(userEntry("alice", "c", 3));
  });

  it("does not add a changed key it does not hold, so moves elsewhere evict nothing", async () => {
    const cache = newCache(2, 60_000, new ManualClock().read);
    cache.remember("user:alice", userEntry("alice", "a", 1));
    cache.remember("user:bob", userEntry("bob", "a", 1));
    for (let index = 0; index < 5; index++) cache.changed(userEntry(`u${index}`, "b", 2));
    expect(cache.size).toBe(2);
    expect(await cache.get("user:alice", mustNotFetch)).toEqual(userEntry("alice", "a", 1));
    expect(await cache.get("user:bob", mustNotFetch)).toEqual(userEntry("bob", "a", 1));
  });

  it("adds a changed key it does not hold with changesOfUncachedKeys keep, an older one still losing", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read, 1, "keep");
    cache.changed(userEntry("alice", "b", 2));
    cache.changed(userEntry("alice", "a", 1));
    expect(await cache.get("user:alice", mustNotFetch)).toEqual(userEntry("alice", "b", 2));
  });

  it("keeps a change published while a fetch of the older entry was in flight", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const slow = deferred<DirectoryEntry | undefined>();
    const pending = cache.get("user:alice", () => slow.promise);
    cache.changed(userEntry("alice", "b", 2));
    slow.resolve(userEntry("alice", "a", 1));
    // The caller whose lookup was in flight gets the newer home too, not the one the lookup found.
    expect(await pending).toEqual(userEntry("alice", "b", 2));
    expect(await cache.get("user:alice", mustNotFetch)).toEqual(userEntry("alice", "b", 2));
  });

  it("forgetUpTo drops an entry at or below the epoch and keeps a newer one", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember("user:alice", userEntry("alice", "a", 2));
    cache.forgetUpTo("user:alice", 1);
    expect(await cache.get("user:alice", mustNotFetch)).toEqual(userEntry("alice", "a", 2));
    cache.forgetUpTo("user:alice", 2);
    expect(await cache.get("user:alice", async () => userEntry("alice", "b", 3))).toEqual(userEntry("alice", "b", 3));
  });
});
