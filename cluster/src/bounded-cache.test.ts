import { describe, expect, it } from "vitest";
import { BoundedCache } from "./bounded-cache.ts";

class ManualClock {
  nowMs = 1_000;
  readonly read = (): number => this.nowMs;
}

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
    expect(() => new BoundedCache(1, -1)).toThrow(RangeError);
  });
});

describe("BoundedCache with a clock", () => {
  it("evicts the least recently stored entry past entriesMax", () => {
    const clock = new ManualClock();
    const cache = new BoundedCache<string>(2, 60_000, clock.read);
    cache.set("a", "A");
    cache.set("b", "B");
    cache.set("c", "C");
    expect(cache.size).toBe(2);
    expect(cache.get("a")).toBeUndefined();
    expect(cache.get("b")).toBe("B");
    expect(cache.get("c")).toBe("C");
  });

  it("counts a read as a use: the entry read last survives the next eviction", () => {
    const clock = new ManualClock();
    const cache = new BoundedCache<string>(2, 60_000, clock.read);
    cache.set("a", "A");
    cache.set("b", "B");
    expect(cache.get("a")).toBe("A");
    cache.set("c", "C");
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toBe("A");
    expect(cache.get("c")).toBe("C");
  });

  it("replacing a key neither grows the cache nor evicts another key", () => {
    const clock = new ManualClock();
    const cache = new BoundedCache<string>(2, 60_000, clock.read);
    cache.set("a", "A");
    cache.set("b", "B");
    cache.set("a", "A2");
    expect(cache.size).toBe(2);
    expect(cache.get("a")).toBe("A2");
    expect(cache.get("b")).toBe("B");
  });

  it("serves an entry younger than ttlMs and drops it at ttlMs", () => {
    const clock = new ManualClock();
    const cache = new BoundedCache<string>(10, 500, clock.read);
    cache.set("a", "A");
    clock.nowMs += 499;
    expect(cache.get("a")).toBe("A");
    clock.nowMs += 1;
    expect(cache.get("a")).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("serves nothing again with a ttlMs of 0, and still bounds", () => {
    const clock = new ManualClock();
    const cache = new BoundedCache<string>(1, 0, clock.read);
    cache.set("a", "A");
    expect(cache.get("a")).toBeUndefined();
    cache.set("b", "B");
    cache.set("c", "C");
    expect(cache.size).toBe(1);
  });

  it("ages an entry from when it was stored, not from when it was last read", () => {
    const clock = new ManualClock();
    const cache = new BoundedCache<string>(10, 500, clock.read);
    cache.set("a", "A");
    clock.nowMs += 400;
    expect(cache.get("a")).toBe("A");
    clock.nowMs += 400;
    expect(cache.get("a")).toBeUndefined();
  });

  it("forgets a deleted key", () => {
    const cache = new BoundedCache<string>(10, 500, new ManualClock().read);
    cache.set("a", "A");
    cache.delete("a");
    expect(cache.get("a")).toBeUndefined();
  });
});
