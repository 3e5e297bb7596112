import { describe, expect, it } from "vitest";
import { OldestFirst } from "./oldest-first.ts";

describe("OldestFirst", () => {
  it("gives the keys oldest first, a re-inserted key as the newest, and undefined when empty", () => {
    const keys = new Set(["a", "b", "c"]);
    const oldest = new OldestFirst(keys);
    keys.delete("a");
    keys.add("a");
    const evicted: (string | undefined)[] = [];
    for (let round = 0; round < 4; round++) {
      const key = oldest.next();
      evicted.push(key);
      if (key !== undefined) keys.delete(key);
    }
    expect(evicted).toEqual(["b", "c", "a", undefined]);
  });

  it("finds the keys added after it had reached the end", () => {
    const entries = new Map([["a", 1]]);
    const oldest = new OldestFirst(entries);
    expect(oldest.next()).toBe("a");
    entries.delete("a");
    expect(oldest.next()).toBeUndefined();
    entries.set("b", 2);
    entries.set("c", 3);
    expect(oldest.next()).toBe("b");
  });

  it("evicts exactly what a least-recently-used list would, through many rehashes of a full table", () => {
    // The model: an array, oldest first. The table: a Set bounded as the services bound theirs, with
    // re-insertion on reuse. Thousands of evictions and reuses make V8 compact the table many times.
    const keysMax = 257;
    const model: number[] = [];
    const keys = new Set<number>();
    const oldest = new OldestFirst(keys);
    let next = 0;
    // A fixed pseudo-random sequence (a linear congruential generator), so a failure reproduces.
    let seed = 12_345;
    const random = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed / 2_147_483_648;
    };
    for (let step = 0; step < 20_000; step++) {
      const reuse = model.length > 0 && random() < 0.3;
      const key = reuse ? (model[Math.floor(random() * model.length)] ?? 0) : next++;
      const at = model.indexOf(key);
      if (at >= 0) model.splice(at, 1);
      model.push(key);
      keys.delete(key);
      keys.add(key);
      while (keys.size > keysMax) {
        const evicted = oldest.next();
        expect(evicted).toBe(model.shift());
        if (evicted !== undefined) keys.delete(evicted);
      }
    }
    expect([...keys]).toEqual(model);
  });
});
