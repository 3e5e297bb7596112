import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TypingRateLimiter } from "./typing-rate-limiter.ts";

const first = "d-AAAAAAAAAAAAAAAAAAAAAA";
const second = "g-BBBBBBBBBBBBBBBBBBBBBB";
const third = "g-CCCCCCCCCCCCCCCCCCCCCC";

describe("TypingRateLimiter", () => {
  it("lets one typing per conversation through per interval, and the next one at the interval, not before", () => {
    const limiter = new TypingRateLimiter(1000, 4);
    expect(limiter.tryAccept(first, 10_000)).toBe(true);
    expect(limiter.tryAccept(first, 10_001)).toBe(false);
    expect(limiter.tryAccept(first, 10_999)).toBe(false);
    expect(limiter.tryAccept(first, 11_000)).toBe(true);
    expect(limiter.tryAccept(first, 11_500)).toBe(false);
  });

  it("does not let a refused frame push the next allowed time back", () => {
    const limiter = new TypingRateLimiter(1000, 4);
    expect(limiter.tryAccept(first, 0)).toBe(true);
    for (let nowMs = 100; nowMs < 1000; nowMs += 100) expect(limiter.tryAccept(first, nowMs)).toBe(false);
    expect(limiter.tryAccept(first, 1000)).toBe(true);
  });

  it("limits conversations independently", () => {
    const limiter = new TypingRateLimiter(1000, 4);
    expect(limiter.tryAccept(first, 0)).toBe(true);
    expect(limiter.tryAccept(second, 1)).toBe(true);
    expect(limiter.tryAccept(first, 2)).toBe(false);
    expect(limiter.tryAccept(second, 3)).toBe(false);
  });

  it("refuses a further conversation while conversationsMax are within their interval, and takes it once one lapsed", () => {
    const limiter = new TypingRateLimiter(1000, 2);
    expect(limiter.tryAccept(first, 0)).toBe(true);
    expect(limiter.tryAccept(second, 500)).toBe(true);
    expect(limiter.tryAccept(third, 999)).toBe(false);
    expect(limiter.tryAccept(third, 1000)).toBe(true);
    expect(limiter.size).toBe(2);
  });

  it("lets everything through with an interval of 0, still bounded in memory", () => {
    const limiter = new TypingRateLimiter(0, 1);
    expect(limiter.tryAccept(first, 5)).toBe(true);
    expect(limiter.tryAccept(first, 5)).toBe(true);
    expect(limiter.tryAccept(second, 5)).toBe(true);
    expect(limiter.size).toBe(1);
  });

  it("refuses nonsense settings", () => {
    expect(() => new TypingRateLimiter(-1, 1)).toThrow(RangeError);
    expect(() => new TypingRateLimiter(1000, 0)).toThrow(RangeError);
  });

  it("never lets two frames of one conversation through less than the interval apart, and holds at most conversationsMax entries", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.tuple(fc.constantFrom(first, second, third), fc.integer({ min: 0, max: 700 })), { maxLength: 60 }),
        (intervalMs, conversationsMax, steps) => {
          const limiter = new TypingRateLimiter(intervalMs, conversationsMax);
          const accepted = new Map<string, number>();
          let nowMs = 0;
          for (const [conversationId, advanceMs] of steps) {
            nowMs += advanceMs;
            const last = accepted.get(conversationId);
            const ok = limiter.tryAccept(conversationId, nowMs);
            if (ok) {
              if (last !== undefined) expect(nowMs - last).toBeGreaterThanOrEqual(intervalMs);
              accepted.set(conversationId, nowMs);
            } else if (last === undefined || nowMs - last >= intervalMs) {
              // Refused although this conversation is free: only because others fill every place.
              const busy = [...accepted.entries()].filter(([other, at]) => other !== conversationId && nowMs - at < intervalMs);
              expect(busy.length).toBeGreaterThanOrEqual(conversationsMax);
            }
            expect(limiter.size).toBeLessThanOrEqual(conversationsMax);
          }
        },
      ),
    );
  });

  it("names the wait after a refusal: the rest of the conversation's interval, or of the first other one's, rounded up", () => {
    const limiter = new TypingRateLimiter(1000, 2);
    expect(limiter.tryAccept(first, 0)).toBe(true);
    expect(limiter.tryAccept(first, 250.5)).toBe(false);
    expect(limiter.retryAfterMs(first, 250.5)).toBe(750);
    expect(limiter.tryAccept(second, 400)).toBe(true);
    expect(limiter.tryAccept(third, 600)).toBe(false);
    // first's interval ends at 1000, second's at 1400: a third conversation may go at 1000.
    expect(limiter.retryAfterMs(third, 600)).toBe(400);
    expect(limiter.tryAccept(third, 600 + 400)).toBe(true);
  });
});
