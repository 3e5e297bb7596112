import { describe, expect, it } from "vitest";
import { BoundedCache } from "./bounded-cache.ts";

describe("BoundedCache", () => {
  it("forgets the least recently used entry past its bound", () => {
    const cache = new BoundedCache<string>(2);
    cache.set("a", "1");
    cache.set("b", "2");
    expect(cache.get("a")).toBe("1");
    cache.set("c", "3");
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toBe("1");
    expect(cache.has("c")).toBe(true);
    cache.delete("c");
    expect(cache.has("c")).toBe(false);
    cache.clear();
    expect(cache.size).toBe(0);
  });

  it("expires entries after their time to live, and a set renews it", () => {
    let nowMs = 0;
    const cache = new BoundedCache<string>(10, 100, () => nowMs);
    cache.set("a", "1");
    nowMs = 99;
    expect(cache.get("a")).toBe("1");
    cache.set("b", "2");
    nowMs = 100;
    expect(cache.get("a")).toBeUndefined();
    expect(cache.size).toBe(1);
    expect(cache.get("b")).toBe("2");
    cache.set("b", "3");
    nowMs = 150;
    expect(cache.get("b")).toBe("3");
  });

  it("refuses bounds that cannot hold anything", () => {
    expect(() => new BoundedCache(0)).toThrow(RangeError);
    expect(() => new BoundedCache(1, 0)).toThrow(RangeError);
  });
});
