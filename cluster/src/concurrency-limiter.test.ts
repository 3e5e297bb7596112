import { describe, expect, it } from "vitest";
import { ConcurrencyLimiter } from "./concurrency-limiter.ts";

describe("ConcurrencyLimiter", () => {
  it("runs at most max tasks at once, the rest in arrival order, and survives failing tasks", async () => {
    const limiter = new ConcurrencyLimiter(2);
    const releases: (() => void)[] = [];
    const started: number[] = [];
    let running = 0;
    let runningMax = 0;
    const results = Array.from({ length: 5 }, (_, index) =>
      limiter
        .run(async () => {
          started.push(index);
          running += 1;
          runningMax = Math.max(runningMax, running);
          await new Promise<void>((resolve) => releases.push(resolve));
          running -= 1;
          if (index === 1) throw new Error("task 1 fails");
          return index;
        })
        .then(
          () => "fulfilled",
          () => "rejected",
        ),
    );
    for (let released = 0; released < 5; released++) {
      await expect.poll(() => releases.length).toBe(released + 1 + Math.min(1, 4 - released));
      releases[released]?.();
    }
    expect(await Promise.all(results)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"]);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(runningMax).toBe(2);
    expect(limiter.active).toBe(0);
  });
});
