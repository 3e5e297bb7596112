import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  backoffBoundMs,
  backoffDelayMs,
  defaultBackoffOptions,
  failoverDelayMs,
  normaliseBackoffOptions,
  retryDelayMs,
  type BackoffOptions,
} from "./backoff.ts";

const options: BackoffOptions = { initialDelayMs: 100, delayMsMax: 1000, multiplier: 2, jitterRatio: 0.5 };

describe("backoff", () => {
  it.each([
    [0, 100],
    [1, 200],
    [3, 800],
    [4, 1000],
    [1_000_000, 1000],
  ])("bounds attempt %i at %i ms", (attempt, boundMs) => {
    expect(backoffBoundMs(attempt, options)).toBe(boundMs);
  });

  it("draws the delay from [bound × (1 − jitter), bound] with the injected random source", () => {
    expect(backoffDelayMs(2, options, () => 0)).toBe(400);
    expect(backoffDelayMs(2, options, () => 0.5)).toBe(300);
    expect(backoffDelayMs(2, options, () => 0.999999)).toBe(200);
  });

  it("keeps a misbehaving random source inside the bounds", () => {
    expect(backoffDelayMs(0, options, () => -3)).toBe(100);
    expect(backoffDelayMs(0, options, () => 7)).toBe(50);
    expect(backoffDelayMs(0, options, () => Number.NaN)).toBe(100);
  });

  it("draws a failover delay from [0, initialDelayMs × jitter]: near immediate, still spread", () => {
    expect(failoverDelayMs(options, () => 0)).toBe(50);
    expect(failoverDelayMs(options, () => 0.5)).toBe(25);
    expect(failoverDelayMs(options, () => 0.999999)).toBe(0);
    expect(failoverDelayMs(options, () => 7)).toBe(0);
    expect(failoverDelayMs(options, () => Number.NaN)).toBe(50);
    // Without jitter the failover is immediate.
    expect(failoverDelayMs({ ...options, jitterRatio: 0 }, () => 0)).toBe(0);
    expect(failoverDelayMs(defaultBackoffOptions, () => 0)).toBe(250);
  });

  it("property: every delay is an integer within its jitter window and never above delayMsMax", () => {
    const backoffOptions = fc
      .record({
        initialDelayMs: fc.integer({ min: 0, max: 10_000 }),
        extraMs: fc.integer({ min: 0, max: 100_000 }),
        multiplier: fc.double({ min: 1, max: 10, noNaN: true }),
        jitterRatio: fc.double({ min: 0, max: 1, noNaN: true }),
      })
      .map(({ initialDelayMs, extraMs, multiplier, jitterRatio }) => ({
        initialDelayMs,
        delayMsMax: initialDelayMs + extraMs,
        multiplier,
        jitterRatio,
      }));
    fc.assert(
      fc.property(
        backoffOptions,
        fc.nat({ max: 10_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (chosen, attempt, sample) => {
          const bound = backoffBoundMs(attempt, chosen);
          const delay = backoffDelayMs(attempt, chosen, () => sample);
          expect(Number.isInteger(delay)).toBe(true);
          expect(delay).toBeLessThanOrEqual(chosen.delayMsMax);
          expect(delay).toBeLessThanOrEqual(bound);
          expect(delay).toBeGreaterThanOrEqual(Math.floor(bound * (1 - chosen.jitterRatio)));
          // The bound never shrinks as attempts grow.
          expect(backoffBoundMs(attempt + 1, chosen)).toBeGreaterThanOrEqual(bound);
        },
      ),
    );
  });

  it("retries after the backoff delay when the error names no retryAfterMs", () => {
    expect(retryDelayMs(2, options, () => 0)).toBe(400);
    expect(retryDelayMs(2, options, () => 0.5)).toBe(300);
  });

  it("retries no sooner than retryAfterMs, spread above it by the jitter, never below", () => {
    expect(retryDelayMs(0, options, () => 0, 5000)).toBe(5000);
    expect(retryDelayMs(0, options, () => 0.5, 5000)).toBe(6250);
    expect(retryDelayMs(0, options, () => 0.999999, 5000)).toBe(7499);
    // A misbehaving source stays inside the window.
    expect(retryDelayMs(0, options, () => 9, 5000)).toBe(7500);
    expect(retryDelayMs(0, options, () => -1, 5000)).toBe(5000);
    // A hint shorter than the backoff does not shorten it; 0 is no hint.
    expect(retryDelayMs(3, options, () => 0, 10)).toBe(800);
    expect(retryDelayMs(3, options, () => 0, 0)).toBe(800);
    expect(retryDelayMs(0, { ...options, jitterRatio: 0 }, () => 0.7, 1234)).toBe(1234);
  });

  it("never retries before retryAfterMs, nor before the backoff delay (property)", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 20 }),
        fc.integer({ min: 1, max: 60_000 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (retry, retryAfterMs, jitterRatio, sample) => {
          const chosen = { ...options, jitterRatio };
          const delay = retryDelayMs(retry, chosen, () => sample, retryAfterMs);
          expect(Number.isInteger(delay)).toBe(true);
          expect(delay).toBeGreaterThanOrEqual(retryAfterMs);
          expect(delay).toBeGreaterThanOrEqual(backoffDelayMs(retry, chosen, () => sample));
          expect(delay).toBeLessThanOrEqual(Math.max(backoffBoundMs(retry, chosen), Math.floor(retryAfterMs * (1 + jitterRatio))));
        },
      ),
    );
  });

  it("normalises partial options onto the defaults and refuses nonsense", () => {
    expect(normaliseBackoffOptions({ initialDelayMs: 10, delayMsMax: undefined })).toEqual({
      ...defaultBackoffOptions,
      initialDelayMs: 10,
    });
    expect(() => normaliseBackoffOptions({ jitterRatio: 1.5 })).toThrow(RangeError);
    expect(() => normaliseBackoffOptions({ initialDelayMs: 100, delayMsMax: 50 })).toThrow(RangeError);
    expect(() => normaliseBackoffOptions({ multiplier: 0.5 })).toThrow(RangeError);
  });
});
