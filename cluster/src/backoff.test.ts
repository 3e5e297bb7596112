import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { backoffDelayMs, type BackoffPolicy } from "./backoff.ts";

const policy: BackoffPolicy = { initialDelayMs: 100, maxDelayMs: 5000, multiplier: 2 };
/** The largest value Math.random can return. */
const randomMax = 1 - Number.EPSILON;

describe("backoffDelayMs", () => {
  it("is zero when the random draw is zero", () => {
    expect(backoffDelayMs(policy, 0, () => 0)).toBe(0);
    expect(backoffDelayMs(policy, 7, () => 0)).toBe(0);
  });

  it("grows its ceiling by the multiplier per attempt", () => {
    const ceilings = [0, 1, 2, 3, 4, 5].map((attempt) => backoffDelayMs(policy, attempt, () => randomMax) + 1);
    expect(ceilings).toEqual([100, 200, 400, 800, 1600, 3200]);
  });

  it("caps the ceiling at maxDelayMs", () => {
    expect(backoffDelayMs(policy, 6, () => randomMax)).toBe(4999);
    expect(backoffDelayMs(policy, 10_000, () => randomMax)).toBe(4999);
  });

  it("treats a negative attempt as the first", () => {
    expect(backoffDelayMs(policy, -3, () => 0.5)).toBe(50);
  });

  it("scales the ceiling by the random draw (full jitter)", () => {
    expect(backoffDelayMs(policy, 2, () => 0.25)).toBe(100);
  });

  it("always returns a whole number of milliseconds within [0, maxDelayMs)", () => {
    fc.assert(
      fc.property(
        fc.record({
          initialDelayMs: fc.integer({ min: 1, max: 10_000 }),
          maxDelayMs: fc.integer({ min: 1, max: 120_000 }),
          multiplier: fc.double({ min: 1, max: 4, noNaN: true }),
        }),
        fc.integer({ min: 0, max: 2000 }),
        fc.double({ min: 0, max: randomMax, noNaN: true }),
        (randomPolicy, attempt, draw) => {
          const delayMs = backoffDelayMs(randomPolicy, attempt, () => draw);
          expect(Number.isInteger(delayMs)).toBe(true);
          expect(delayMs).toBeGreaterThanOrEqual(0);
          expect(delayMs).toBeLessThan(Math.max(1, randomPolicy.maxDelayMs));
          expect(delayMs).toBeLessThan(Math.max(1, randomPolicy.initialDelayMs * randomPolicy.multiplier ** attempt));
        },
      ),
    );
  });
});
