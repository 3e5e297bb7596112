import { describe, expect, it } from "vitest";
import { MemberCache } from "./member-cache.ts";

describe("MemberCache", () => {
  it("forgets the least recently used conversation past its bound", () => {
    const cache = new MemberCache(2);
    cache.set("a", ["u1"]);
    cache.set("b", ["u2"]);
    expect(cache.get("a")).toEqual(["u1"]);
    cache.set("c", ["u3"]);
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toEqual(["u1"]);
    expect(cache.get("c")).toEqual(["u3"]);
  });

  it("replaces an entry and keeps a copy, not the caller's array", () => {
    const cache = new MemberCache(4);
    const members = ["u1"];
    cache.set("a", members);
    members.push("intruder");
    expect(cache.get("a")).toEqual(["u1"]);
    cache.set("a", ["u1", "u2"]);
    expect(cache.get("a")).toEqual(["u1", "u2"]);
    cache.clear();
    expect(cache.get("a")).toBeUndefined();
  });
});
