import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { assertTokenRate, TokenBucket } from "./token-bucket.ts";

describe("TokenBucket", () => {
  it("starts full: a burst goes at once, the next token waits 1000 / perSecond ms", () => {
    const bucket = new TokenBucket({ perSecond: 20, burst: 40 }, 1000);
    for (let request = 0; request < 40; request++) {
      expect(bucket.waitMs(1, 1000)).toBe(0);
      bucket.take(1);
    }
    expect(bucket.waitMs(1, 1000)).toBe(50);
    expect(bucket.waitMs(1, 1049)).toBe(1);
    expect(bucket.waitMs(1, 1050)).toBe(0);
  });

  it("refills at perSecond up to the burst, never beyond", () => {
    const bucket = new TokenBucket({ perSecond: 10, burst: 5 }, 0);
    for (let request = 0; request < 5; request++) bucket.take(1);
    expect(bucket.waitMs(1, 0)).toBe(100);
    // An hour later it holds 5 again, not 36,000.
    expect(bucket.waitMs(5, 3_600_000)).toBe(0);
    expect(bucket.waitMs(6, 3_600_000)).toBe(100);
  });

  it("a refused request takes nothing: asking again and again does not push the next token back", () => {
    const bucket = new TokenBucket({ perSecond: 1, burst: 1 }, 0);
    bucket.take(1);
    for (let nowMs = 0; nowMs < 1000; nowMs += 10) expect(bucket.waitMs(1, nowMs)).toBe(1000 - nowMs);
    expect(bucket.waitMs(1, 1000)).toBe(0);
  });

  it("a clock that goes back adds nothing", () => {
    const bucket = new TokenBucket({ perSecond: 1, burst: 2 }, 5000);
    bucket.take(2);
    expect(bucket.waitMs(1, 4000)).toBe(1000);
    expect(bucket.waitMs(1, 6000)).toBe(0);
  });

  it("charge runs into a debt of at most one burst, paid off by the refill", () => {
    const bucket = new TokenBucket({ perSecond: 100, burst: 200 }, 0);
    bucket.charge(150, 0);
    expect(bucket.waitMs(0, 0)).toBe(0);
    bucket.charge(1000, 0);
    // 50 - 1000 is floored at -200: 2 s of refill, not 9.5.
    expect(bucket.waitMs(0, 0)).toBe(2000);
    expect(bucket.waitMs(0, 1999)).toBe(1);
    expect(bucket.waitMs(0, 2000)).toBe(0);
  });

  it("never lets more than burst + perSecond × elapsed through (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1, max: 100 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 300 }),
        (perSecond, burst, gapsMs) => {
          const bucket = new TokenBucket({ perSecond, burst }, 0);
          let nowMs = 0;
          let admitted = 0;
          for (const gapMs of gapsMs) {
            nowMs += gapMs;
            if (bucket.waitMs(1, nowMs) === 0) {
              bucket.take(1);
              admitted++;
            }
          }
          expect(admitted).toBeLessThanOrEqual(burst + (perSecond * nowMs) / 1000);
        },
      ),
    );
  });

  it("refuses rates that cannot work", () => {
    expect(() => assertTokenRate({ perSecond: 0, burst: 1 }, "send")).toThrow(/send: perSecond/);
    expect(() => assertTokenRate({ perSecond: 1, burst: 0 }, "send")).toThrow(/send: burst/);
    expect(() => assertTokenRate({ perSecond: 1, burst: 1.5 }, "send")).toThrow(/burst/);
    expect(() => assertTokenRate({ perSecond: 0.5, burst: 1 }, "send")).not.toThrow();
  });
});
