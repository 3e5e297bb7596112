import { describe, expect, it } from "vitest";
import { LogRateLimiter, messageTemplate, type LogRateLimits } from "./log-rate-limiter.ts";

const limits: LogRateLimits = { linesPerWindowMax: 3, windowMs: 10_000, templatesMax: 100 };

function limiterAt(startMs = 1_000_000, custom: LogRateLimits = limits): { limiter: LogRateLimiter; advance: (ms: number) => void } {
  let nowMs = startMs;
  return {
    limiter: new LogRateLimiter(custom, () => nowMs),
    advance: (ms) => {
      nowMs += ms;
    },
  };
}

describe("messageTemplate", () => {
  it("names a line by its words: the numbers in it vary between repeats", () => {
    expect(messageTemplate("storing a batch of 12 sends failed after 340 ms")).toBe("storing a batch of # sends failed after # ms");
    expect(messageTemplate("relay of c-1 failed")).toBe(messageTemplate("relay of c-22 failed"));
  });
});

describe("LogRateLimiter", () => {
  it("writes linesPerWindowMax lines of a template per window, counts the rest, and reports them once the window ends", () => {
    const { limiter, advance } = limiterAt();
    const admitted = Array.from({ length: 8 }, (_, index) => limiter.admit("error", `query failed after ${index} ms`));
    expect(admitted).toEqual([true, true, true, false, false, false, false, false]);
    advance(9_999);
    expect(limiter.takeEnded()).toEqual([]);
    expect(limiter.nextReportAtMs()).toBe(1_000_000 + 10_000);
    advance(1);
    expect(limiter.takeEnded()).toEqual([{ level: "error", sample: "query failed after 0 ms", suppressedLines: 5, windowMs: 10_000 }]);
    // Reported once; a new window writes again.
    expect(limiter.takeEnded()).toEqual([]);
    expect(limiter.nextReportAtMs()).toBeUndefined();
    expect(limiter.admit("error", "query failed after 9 ms")).toBe(true);
  });

  it("limits each level and template apart", () => {
    const { limiter } = limiterAt();
    for (let index = 0; index < 3; index++) limiter.admit("warn", "nats reconnect");
    expect(limiter.admit("warn", "nats reconnect")).toBe(false);
    expect(limiter.admit("error", "nats reconnect")).toBe(true);
    expect(limiter.admit("warn", "nats disconnect")).toBe(true);
  });

  it("keeps the count of a window that a new line closed before the report was taken", () => {
    const { limiter, advance } = limiterAt();
    for (let index = 0; index < 5; index++) limiter.admit("warn", "redis down");
    advance(10_000);
    expect(limiter.admit("warn", "redis down")).toBe(true);
    expect(limiter.nextReportAtMs()).toBe(1_000_000 + 10_000);
    expect(limiter.takeEnded()).toEqual([{ level: "warn", sample: "redis down", suppressedLines: 2, windowMs: 10_000 }]);
  });

  it("holds at most templatesMax templates: past it, new templates share one limited entry", () => {
    const { limiter, advance } = limiterAt(0, { linesPerWindowMax: 2, windowMs: 1000, templatesMax: 2 });
    expect(limiter.admit("warn", "first")).toBe(true);
    expect(limiter.admit("warn", "second")).toBe(true);
    // Distinct lines beyond the bound: two of them get through, the rest are counted together.
    const beyond = ["third", "fourth", "fifth", "sixth"].map((message) => limiter.admit("warn", message));
    expect(beyond).toEqual([true, true, false, false]);
    advance(1000);
    expect(limiter.takeEnded()).toEqual([{ level: "warn", sample: "third", suppressedLines: 2, windowMs: 1000 }]);
    // The ended windows are forgotten, so new templates are tracked on their own again.
    expect(limiter.admit("warn", "seventh")).toBe(true);
    expect(limiter.admit("warn", "seventh")).toBe(true);
    expect(limiter.admit("warn", "seventh")).toBe(false);
  });
});
