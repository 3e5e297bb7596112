import { describe, expect, it } from "vitest";
import { userIdPattern, type DirectoryEntry } from "@cellwire/protocol";
import { DirectoryCache, directoryCacheKey, directoryFetchesInFlightMax, type DirectoryCacheOptions } from "./directory-cache.ts";

class ManualClock {
  nowMs = 1_000;
  readonly read = (): number => this.nowMs;
}

const userKey = (id: string): string => directoryCacheKey("user", id);

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

describe("directoryCacheKey", () => {
  it("is a user's id itself and a conversation's id behind its kind, so neither collides with the other", () => {
    expect(directoryCacheKey("user", "alice")).toBe("alice");
    expect(directoryCacheKey("conversation", "g-AAAAAAAAAAAAAAAAAAAAAA")).toBe("conversation:g-AAAAAAAAAAAAAAAAAAAAAA");
    // A user id has no ':' (userIdPattern): no user's key can be a conversation's.
    expect(userIdPattern.test("conversation:g-AAAAAAAAAAAAAAAAAAAAAA")).toBe(false);
  });
});

describe("DirectoryCache", () => {
  it("makes one fetch for concurrent misses of one key and gives every caller its answer", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const answer = deferred<DirectoryEntry | undefined>();
    const fetched: string[] = [];
    const fetch = (key: string): Promise<DirectoryEntry | undefined> => {
      fetched.push(key);
      return answer.promise;
    };
    const callers = [cache.get(userKey("alice"), fetch), cache.get(userKey("alice"), fetch), cache.get(userKey("alice"), fetch)];
    expect(fetched).toEqual([userKey("alice")]);
    answer.resolve(userEntry("alice", "a", 1));
    for (const entry of await Promise.all(callers)) expect(entry).toEqual(userEntry("alice", "a", 1));
    // Now cached: no further fetch.
    expect(await cache.get(userKey("alice"), fetch)).toEqual(userEntry("alice", "a", 1));
    expect(fetched).toEqual([userKey("alice")]);
  });

  it("fetches different keys separately", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const fetched: string[] = [];
    const fetch = async (key: string): Promise<DirectoryEntry | undefined> => {
      fetched.push(key);
      return userEntry(key.slice("user:".length), "a", 1);
    };
    await Promise.all([cache.get(userKey("alice"), fetch), cache.get(userKey("bob"), fetch)]);
    expect(fetched.sort()).toEqual([userKey("alice"), userKey("bob")]);
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
    const keys = [userKey("u1"), userKey("u2"), userKey("u3"), userKey("u4"), userKey("u5")];
    const results = Promise.all(keys.map((key) => cache.get(key, fetch)));
    const settle = async (key: string): Promise<void> => {
      answers.get(key)?.resolve(userEntry(key, "a", 1));
      // Let the limiter hand the slot over.
      for (let turn = 0; turn < 5; turn++) await Promise.resolve();
    };
    await settle("none");
    expect(started).toEqual([userKey("u1"), userKey("u2")]);
    await settle(userKey("u2"));
    expect(started).toEqual([userKey("u1"), userKey("u2"), userKey("u3")]);
    await settle(userKey("u1"));
    await settle(userKey("u3"));
    expect(started).toEqual(keys);
    await settle(userKey("u4"));
    await settle(userKey("u5"));
    expect((await results).map((entry) => entry?.id)).toEqual(["u1", "u2", "u3", "u4", "u5"]);
    // A miss of a key being fetched joins that fetch, whatever the bound.
    await expect(cache.get(userKey("u1"), fetch)).resolves.toMatchObject({ id: "u1" });
  });

  it("does not cache a failed fetch: every concurrent caller sees the failure and the next call fetches again", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    let calls = 0;
    const failing = async (): Promise<DirectoryEntry | undefined> => {
      calls++;
      throw new Error("directory down");
    };
    const first = cache.get(userKey("alice"), failing);
    const second = cache.get(userKey("alice"), failing);
    await expect(first).rejects.toThrow("directory down");
    await expect(second).rejects.toThrow("directory down");
    expect(calls).toBe(1);
    expect(cache.size).toBe(0);

    const entry = await cache.get(userKey("alice"), async () => {
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
    cache.remember(userKey("alice"), userEntry("alice", "b", 5));
    cache.remember(userKey("alice"), userEntry("alice", "a", 4));
    return expect(cache.get(userKey("alice"), () => Promise.reject(new Error("must not fetch")))).resolves.toEqual(
      userEntry("alice", "b", 5),
    );
  });

  it("lets a newer epoch replace an older one", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember(userKey("alice"), userEntry("alice", "a", 4));
    cache.remember(userKey("alice"), userEntry("alice", "b", 5));
    expect(await cache.get(userKey("alice"), () => Promise.reject(new Error("must not fetch")))).toEqual(userEntry("alice", "b", 5));
  });

  it("keeps a newer entry learnt while a slower fetch of an older epoch was in flight", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const slow = deferred<DirectoryEntry | undefined>();
    const pending = cache.get(userKey("alice"), () => slow.promise);
    cache.remember(userKey("alice"), userEntry("alice", "b", 7));
    slow.resolve(userEntry("alice", "a", 6));
    await pending;
    expect(await cache.get(userKey("alice"), () => Promise.reject(new Error("must not fetch")))).toEqual(userEntry("alice", "b", 7));
  });

  it("fetches again once the cached entry is ttlMs old", async () => {
    const clock = new ManualClock();
    const cache = newCache(10, 1000, clock.read);
    let epoch = 0;
    const fetch = async (): Promise<DirectoryEntry | undefined> => userEntry("alice", "a", ++epoch);
    expect((await cache.get(userKey("alice"), fetch))?.epoch).toBe(1);
    clock.nowMs += 999;
    expect((await cache.get(userKey("alice"), fetch))?.epoch).toBe(1);
    clock.nowMs += 1;
    expect((await cache.get(userKey("alice"), fetch))?.epoch).toBe(2);
  });

  it("fetches a forgotten key again", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    let calls = 0;
    const fetch = async (): Promise<DirectoryEntry | undefined> => userEntry("alice", "a", ++calls);
    await cache.get(userKey("alice"), fetch);
    cache.forget(userKey("alice"));
    expect((await cache.get(userKey("alice"), fetch))?.epoch).toBe(2);
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
    const first = cache.get(userKey("alice"), fetch);
    const joined = cache.get(userKey("alice"), fetch);
    answer.resolve(userEntry("alice", "a", 1));
    await Promise.all([first, joined]);
    await cache.get(userKey("alice"), fetch);
    clock.nowMs += 1000;
    await cache.get(userKey("alice"), () => Promise.resolve(userEntry("alice", "a", 1)));
    expect(results).toEqual(["miss", "miss", "hit", "miss"]);
  });
});

describe("DirectoryCache and moves", () => {
  const mustNotFetch = (): Promise<DirectoryEntry | undefined> => Promise.reject(new Error("must not fetch"));

  it("takes a published change that is newer than the held entry", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember(userKey("alice"), userEntry("alice", "a", 1));
    cache.changed(userEntry("alice", "b", 2));
    expect(await cache.get(userKey("alice"), mustNotFetch)).toEqual(userEntry("alice", "b", 2));
  });

  it("ignores a published change older than the held entry", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember(userKey("alice"), userEntry("alice", "c", 3));
    cache.changed(userEntry("alice", "b", 2));
    expect(await cache.get(userKey("alice"), mustNotFetch)).toEqual(userEntry("alice", "c", 3));
  });

  it("does not add a changed key it does not hold, so moves elsewhere evict nothing", async () => {
    const cache = newCache(2, 60_000, new ManualClock().read);
    cache.remember(userKey("alice"), userEntry("alice", "a", 1));
    cache.remember(userKey("bob"), userEntry("bob", "a", 1));
    for (let index = 0; index < 5; index++) cache.changed(userEntry(`u${index}`, "b", 2));
    expect(cache.size).toBe(2);
    expect(await cache.get(userKey("alice"), mustNotFetch)).toEqual(userEntry("alice", "a", 1));
    expect(await cache.get(userKey("bob"), mustNotFetch)).toEqual(userEntry("bob", "a", 1));
  });

  it("adds a changed key it does not hold with changesOfUncachedKeys keep, an older one still losing", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read, 1, "keep");
    cache.changed(userEntry("alice", "b", 2));
    cache.changed(userEntry("alice", "a", 1));
    expect(await cache.get(userKey("alice"), mustNotFetch)).toEqual(userEntry("alice", "b", 2));
  });

  it("keeps a change published while a fetch of the older entry was in flight", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    const slow = deferred<DirectoryEntry | undefined>();
    const pending = cache.get(userKey("alice"), () => slow.promise);
    cache.changed(userEntry("alice", "b", 2));
    slow.resolve(userEntry("alice", "a", 1));
    // The caller whose lookup was in flight gets the newer home too, not the one the lookup found.
    expect(await pending).toEqual(userEntry("alice", "b", 2));
    expect(await cache.get(userKey("alice"), mustNotFetch)).toEqual(userEntry("alice", "b", 2));
  });

  it("forgetUpTo drops an entry at or below the epoch and keeps a newer one", async () => {
    const cache = newCache(10, 60_000, new ManualClock().read);
    cache.remember(userKey("alice"), userEntry("alice", "a", 2));
    cache.forgetUpTo(userKey("alice"), 1);
    expect(await cache.get(userKey("alice"), mustNotFetch)).toEqual(userEntry("alice", "a", 2));
    cache.forgetUpTo(userKey("alice"), 2);
    expect(await cache.get(userKey("alice"), async () => userEntry("alice", "b", 3))).toEqual(userEntry("alice", "b", 3));
  });
});
