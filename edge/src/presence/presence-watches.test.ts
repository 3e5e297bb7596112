import { describe, expect, it } from "vitest";
import { PresenceWatches } from "./presence-watches.ts";

describe("PresenceWatches", () => {
  it("finds the watchers of a user and replaces a watcher's set whole", () => {
    const watches = new PresenceWatches<string>();
    watches.replace("s1", ["alice", "bob"]);
    watches.replace("s2", ["bob"]);
    expect(watches.watchersOf("bob").sort()).toEqual(["s1", "s2"]);
    expect(watches.watchersOf("alice")).toEqual(["s1"]);
    watches.replace("s1", ["carol"]);
    expect(watches.watchersOf("alice")).toEqual([]);
    expect(watches.watchersOf("bob")).toEqual(["s2"]);
    expect(watches.watchedBy("s1")).toEqual(["carol"]);
    expect(watches.watchedUserCount).toBe(2);
  });

  it("forgets a removed watcher and every user only it watched; an empty set stops watching", () => {
    const watches = new PresenceWatches<string>();
    watches.replace("s1", ["alice", "bob"]);
    watches.replace("s2", ["bob"]);
    watches.remove("s1");
    expect(watches.watchersOf("alice")).toEqual([]);
    expect(watches.watchedUserCount).toBe(1);
    watches.replace("s2", []);
    expect(watches.watchedUserCount).toBe(0);
    expect(watches.watchedBy("s2")).toEqual([]);
    watches.remove("never-watched");
  });

  it("returns a copy of the watchers, safe to change while iterating", () => {
    const watches = new PresenceWatches<string>();
    watches.replace("s1", ["alice"]);
    watches.replace("s2", ["alice"]);
    for (const watcher of watches.watchersOf("alice")) watches.remove(watcher);
    expect(watches.watchedUserCount).toBe(0);
  });
});
