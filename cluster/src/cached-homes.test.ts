import { describe, expect, it } from "vitest";
import type { HomeKey } from "@cellwire/protocol";
import { CachedHomes } from "./cached-homes.ts";
import { DirectoryCache, type DirectoryCacheOptions } from "./directory-cache.ts";
import type { HomeLocation } from "./router.ts";

const bob: HomeKey = { kind: "user", id: "bob" };
const talk: HomeKey = { kind: "conversation", id: "talk" };

/** CachedHomes over a DirectoryCache, with a directory the test answers and the lookups it was asked. */
function setup(changesOfUncachedKeys: DirectoryCacheOptions["changesOfUncachedKeys"] = "ignore") {
  const directory = new Map<string, HomeLocation>([["user:bob", { cellId: "b", epoch: 1 }]]);
  const lookups: string[] = [];
  let answer: ((key: HomeKey) => Promise<HomeLocation | undefined>) | undefined;
  const cache = new DirectoryCache({ entriesMax: 10, ttlMs: 60_000, nowMs: () => 0, fetchesInFlightMax: 4, changesOfUncachedKeys });
  const homes = new CachedHomes(async (key) => {
    lookups.push(`${key.kind}:${key.id}`);
    if (answer !== undefined) return answer(key);
    return directory.get(`${key.kind}:${key.id}`);
  }, cache);
  return { homes, cache, directory, lookups, answerWith: (next: typeof answer) => (answer = next) };
}

describe("CachedHomes", () => {
  it("asks the directory for a key it does not hold, then serves it from the cache", async () => {
    const { homes, lookups } = setup();
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "b", epoch: 1 });
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "b", epoch: 1 });
    expect(lookups).toEqual(["user:bob"]);
  });

  it("resolves a key with no directory entry to undefined and asks again next time", async () => {
    const { homes, lookups } = setup();
    expect(await homes.resolve(talk)).toBeUndefined();
    expect(await homes.resolve(talk)).toBeUndefined();
    expect(lookups).toEqual(["conversation:talk", "conversation:talk"]);
  });

  it("moved keeps the newer epoch, whichever arrives last", async () => {
    const { homes, lookups } = setup();
    homes.moved(bob, { cellId: "c", epoch: 3 });
    homes.moved(bob, { cellId: "d", epoch: 2 });
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "c", epoch: 3 });
    homes.moved(bob, { cellId: "e", epoch: 4 });
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "e", epoch: 4 });
    expect(lookups).toEqual([]);
  });

  it("forget drops the held home up to the epoch given and keeps a newer one", async () => {
    const { homes, lookups } = setup();
    homes.moved(bob, { cellId: "c", epoch: 3 });
    homes.forget(bob, 2);
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "c", epoch: 3 });
    expect(lookups).toEqual([]);
    homes.forget(bob, 3);
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "b", epoch: 1 });
    expect(lookups).toEqual(["user:bob"]);
  });

  it("answers a lookup in flight with a newer home that a directory.changed brought meanwhile", async () => {
    const { homes, cache, answerWith } = setup();
    let answer: (location: HomeLocation) => void = () => {};
    answerWith(() => new Promise((resolve) => (answer = resolve)));
    const resolving = homes.resolve(bob);
    cache.changed({ kind: "user", id: "bob", cellId: "c", epoch: 2 });
    answer({ cellId: "b", epoch: 1 });
    expect(await resolving).toMatchObject({ cellId: "c", epoch: 2 });
  });

  it("with changesOfUncachedKeys ignore (the edge), a change for a key not held is not kept", async () => {
    const { homes, cache, lookups } = setup("ignore");
    cache.changed({ kind: "user", id: "bob", cellId: "c", epoch: 2 });
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "b", epoch: 1 });
    expect(lookups).toEqual(["user:bob"]);
  });

  it("with changesOfUncachedKeys keep (the worker), a change for a key not held is served without a lookup", async () => {
    const { homes, cache, lookups } = setup("keep");
    cache.changed({ kind: "user", id: "bob", cellId: "c", epoch: 2 });
    expect(await homes.resolve(bob)).toMatchObject({ cellId: "c", epoch: 2 });
    expect(lookups).toEqual([]);
  });
});
